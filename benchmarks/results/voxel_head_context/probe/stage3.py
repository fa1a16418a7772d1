# ruff: noqa
# Probe: a third auto-context stage on the probe's saved raw stage-2 probabilities (s50 raw2b/raw2l).
# Usage: CACHE=/work/scratch/s47/cache_tta1 RAW=<save.py's OUT> OUT=DIR SKEL=1 SKEL2=0 python stage3.py SEED
import os, sys, time
import numpy as np
src = open("/work/main/benchmarks/results/head_smoothing/probe/save.py").read()
pre = src.split("seed = int(sys.argv[1])")[0]
g = {"__name__": "pre", "__file__": "save.py"}
sys.argv = [sys.argv[0]] + sys.argv[1:]
exec(compile(pre, "save.py", "exec"), g)
E, ctx, STAGE = g["E"], g["ctx"], g["STAGE"]
seed = int(sys.argv[1])
t = time.time()
R = os.environ.get("RAW", "/work/scratch/s50")  # save.py's OUT
p2b_raw, p2l_raw = np.load(f"{R}/raw2b_{seed}.npy"), np.load(f"{R}/raw2l_{seed}.npy")
th, ms, at, _ = E.choose(E.smooth(p2b_raw))
s2 = E.low_score(E.smooth(p2l_raw), th, ms)
print("stage2", seed, th, ms, {k: round(at[k], 4) for k in ("Dice", "clDice")}, s2, flush=True)
Ft0, Fl0 = np.asarray(E.Ft), np.asarray(E.Fl)
Cb, Cl = ctx(p2b_raw), ctx(p2l_raw)
Ft3 = np.concatenate([Ft0, Cb], -1)
Fl3 = np.concatenate([Fl0, Cl], -1)
del Cb, Cl
from napari_topo.models import voxel_head as V
V.FEATURE_NAMES = tuple(list(V.FEATURE_NAMES) + [f"c{i}" for i in range(9)])
E.FEATURE_NAMES = V.FEATURE_NAMES
g["FEATURE_NAMES"] = V.FEATURE_NAMES
E.Ft = Ft3
g["Ft"] = Ft3
STAGE[0] = 2
head3, bs3 = E.train(seed + 200)
p3b, p3l = E.head_prob(head3, Ft3), E.head_prob(head3, Fl3)
np.save(os.environ["OUT"] + f"/raw3b_{seed}.npy", p3b.astype(np.float32)); np.save(os.environ["OUT"] + f"/raw3l_{seed}.npy", p3l.astype(np.float32))
p3b, p3l = E.smooth(p3b), E.smooth(p3l)
th3, ms3, at3, _ = E.choose(p3b)
print("stage3", seed, th3, ms3, {k: round(at3[k], 4) for k in ("Dice", "clDice")}, E.low_score(p3l, th3, ms3),
      {t2: E.low_score(p3l, t2, ms3)["clDice"] for t2 in (0.3, 0.4, 0.5)}, round(time.time() - t), flush=True)
