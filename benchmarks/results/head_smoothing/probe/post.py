# ruff: noqa
# Offline post-processing rules on saved raw stage-2 probabilities (save.py), paired by seed.
import os, sys, types, json, itertools
import numpy as np
from scipy import ndimage as ndi
probe = "/work/main/benchmarks/results/voxel_head_context/probe"
src = open(os.path.join(probe, "exp.py")).read().replace('C = "/work/scratch/s46/cache"', 'C = os.environ["CACHE"]')
src = "import os\n" + src.split('if __name__ == "__main__":')[0]
E = types.ModuleType("exp"); exec(compile(src, "exp.py", "exec"), E.__dict__)
from napari_topo.models.voxel_head import TRUNCATE, _sigmas
from napari_topo.training.finetune import _scores
from napari_topo.training.head import _grown_box
from napari_topo import _cc3d as cc3d
vbox = _grown_box(E.va, (0, 0, 0)); valid = E.va[vbox]; truth = E.ves[vbox] & valid
TH = [0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6]
def sm(p, s): return ndi.gaussian_filter(p, _sigmas(s, E.sp), truncate=TRUNCATE) if s else p
def cut(p, th, ms):
    m = p > th
    return cc3d.dust(np.ascontiguousarray(m), threshold=int(ms), connectivity=26) if ms else m
def held(pb, th, ms):
    return _scores(cut(pb, th, ms)[vbox].astype(np.float32), truth, valid, None)
seeds = [int(a) for a in sys.argv[1:]]
out = {}
for seed in seeds:
    rb = np.load(f"raw2b_{seed}.npy"); rl = np.load(f"raw2l_{seed}.npy")
    rows = []
    for s in (1.0, 1.5, 2.0):
        pb, pl = sm(rb, s), sm(rl, s)
        for th in TH:
            for ms in (100, 1000, 3000):
                h = held(pb, th, ms)
                low = E.low_score(pl, th, ms)
                rows.append(dict(s=s, th=th, ms=ms, hD=h["Dice"], hC=h["clDice"], hS=h["score"], **{"l" + k: v for k, v in low.items()}))
        print(seed, s, flush=True)
    out[seed] = rows
    json.dump(rows, open(f"post_{seed}.json", "w"))
