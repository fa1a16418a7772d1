# ruff: noqa
# bench_finetune.py with the head's smoothing sigma set by SMOOTH (scratch probe)
import os, runpy, sys
import napari_topo.training.head as H
H.HEAD_SMOOTH = float(os.environ["SMOOTH"])
sys.argv = ["bench_finetune.py"] + sys.argv[1:]
sys.path.insert(0, "/work/main/benchmarks")
runpy.run_path("/work/main/benchmarks/bench_finetune.py", run_name="__main__")
