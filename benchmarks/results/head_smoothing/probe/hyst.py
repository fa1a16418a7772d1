# ruff: noqa
# Run in the folder of save.py's raw2b_SEED.npy / raw2l_SEED.npy (CACHE as for post.py): python hyst.py 0 1 ... 9
# Hysteresis thresholds on the probe's saved raw stage-2 probabilities (s50), seeds given.
import json, os, sys, types, itertools
import numpy as np
from scipy import ndimage as ndi
os.environ.setdefault("CACHE", "/work/scratch/s47/cache_tta1")
probe = "/work/main/benchmarks/results/voxel_head_context/probe"
src = open(os.path.join(probe, "exp.py")).read().replace('C = "/work/scratch/s46/cache"', 'C = os.environ["CACHE"]')
src = "import os\n" + src.split('if __name__ == "__main__":')[0]
E = types.ModuleType("exp"); exec(compile(src, "exp.py", "exec"), E.__dict__)
from napari_topo.models.voxel_head import TRUNCATE, _sigmas
from napari_topo.training.finetune import _scores
from napari_topo.training.head import _grown_box
from napari_topo import _cc3d as cc3d
from napari_topo.topology.metrics import cldice
vbox = _grown_box(E.va, (0, 0, 0)); valid = E.va[vbox]; truth = E.ves[vbox] & valid
def hyst(p, lo, hi, ms):
    low = np.ascontiguousarray(p > lo)
    lab = cc3d.connected_components(low, connectivity=26)
    keep = np.zeros(int(lab.max()) + 1, bool)
    keep[np.unique(lab[p > hi])] = True
    keep[0] = False
    m = keep[lab]
    return cc3d.dust(m, threshold=int(ms), connectivity=26) if ms else m
PAIRS = [(t, t) for t in (0.2, 0.3, 0.4, 0.5, 0.6)] + [(lo, hi) for lo in (0.1, 0.2, 0.3, 0.4) for hi in (0.5, 0.6, 0.7, 0.8, 0.9) if hi > lo]
gt = E.gt & E.test
for seed in [int(a) for a in sys.argv[1:]]:
    rb = np.load(f"raw2b_{seed}.npy"); rl = np.load(f"raw2l_{seed}.npy")
    pb = ndi.gaussian_filter(rb, _sigmas(1.0, E.sp), truncate=TRUNCATE)
    pl = ndi.gaussian_filter(rl, _sigmas(1.0, E.sp), truncate=TRUNCATE)
    rows = []
    for (lo, hi), ms in itertools.product(PAIRS, (100, 1000)):
        h = _scores(hyst(pb, lo, hi, ms)[vbox].astype(np.float32), truth, valid, None)
        m = hyst(pl, lo, hi, ms) & E.test
        tp = int((m & gt).sum()); d = 2 * tp / (m.sum() + gt.sum())
        c, tpr, tse = cldice(m, gt)
        rows.append(dict(lo=lo, hi=hi, ms=ms, hD=h["Dice"], hC=h["clDice"], hS=h["score"], lD=d, lC=float(c), lTp=float(tpr), lTs=float(tse)))
    json.dump(rows, open(f"hyst/hyst_{seed}.json", "w"))
    print(seed, "done", flush=True)
