# ruff: noqa
# Probe of stop 50 (issue 10; ../README.md), from stop 49's scratch avg.py: both stages trained as the
# product does on the cached CT inputs (../../voxel_head_cache/probe/cache_tta.py 1), the raw (unsmoothed)
# stage-2 probabilities of the labelled box and of the lower half saved to OUT for post.py / ens.py.
# Usage: OUT=DIR CACHE=... SKEL=1 SKEL2=0 python save.py SEED
# (stop 49's notes follow) variance of the head between seeds. On the cached CT inputs
# (CACHE=/work/scratch/s47/cache_tta1), both stages as ../voxel_head_context/probe/ac.py with the
# centerline drawn again in stage 1 only (SKEL=1, SKEL2=0, as shipped), plus
#   EMA=d : validate and keep an exponential moving average of the weights (decay d per step)
#   K=k   : k heads per stage (seeds seed*1000+j), their probabilities averaged
# Usage: CACHE=... SKEL=1 SKEL2=0 [EMA=0.99] [K=3] python avg.py SEED
import copy, math, os, sys, time, types
import numpy as np
import torch

probe = "/work/main/benchmarks/results/voxel_head_context/probe"
skel = open("/work/main/benchmarks/results/voxel_head_cache/probe/skeleton.py").read()
# reuse skeleton.py's patched exp module, without running ac.py
skel = skel.split("ac = open(")[0]
skel = skel.replace('here = os.path.dirname(os.path.abspath(__file__))', 'here = "/work/main/benchmarks/results/voxel_head_cache/probe"')
exec(compile(skel, "skeleton.py", "exec"), {"__name__": "skel"})
E = sys.modules["exp"]

EMA = float(os.environ.get("EMA", "0"))
K = int(os.environ.get("K", "1"))
LR_END = os.environ.get("COS")  # cosine decay of the lr to this factor

src = open(os.path.join(probe, "exp.py")).read()
# patch train() for EMA / cosine: rebuild it from exp's source with the loop changed
tsrc = src[src.index("def train("): src.index("def smooth(")]
tsrc = tsrc.replace("""        opt.step()
""", """        opt.step()
        if COS is not None:
            for g in opt.param_groups:
                g["lr"] = 3e-3 * (float(COS) + (1 - float(COS)) * 0.5 * (1 + math.cos(math.pi * step / steps)))
        if EMA > 0:
            with torch.no_grad():
                d = min(EMA, (1 + step) / (10 + step))
                for pe, pp in zip(ema.net.parameters(), head.net.parameters()):
                    pe.mul_(d).add_(pp, alpha=1 - d)
""")
tsrc = tsrc.replace("""    gen = torch.Generator().manual_seed(seed)
""", """    gen = torch.Generator().manual_seed(seed)
    ema = copy.deepcopy(head) if EMA > 0 else head
""")
tsrc = tsrc.replace("""            head.eval()
            with torch.no_grad():
                p = np.zeros(valid.shape, np.float32)
                p.reshape(-1)[where] = torch.sigmoid(head(xv)).numpy()
            head.train()""", """            ema.eval()
            with torch.no_grad():
                p = np.zeros(valid.shape, np.float32)
                p.reshape(-1)[where] = torch.sigmoid(ema(xv)).numpy()
            ema.train()""")
tsrc = tsrc.replace("best_state = {k: v.clone() for k, v in head.state_dict().items()}", "best_state = {k: v.clone() for k, v in ema.state_dict().items()}")
# exp.py's skeleton patch lives in E.train's source already; take it from the patched module
import inspect
ptrain = inspect.getsource(E.train) if False else None
g = E.__dict__
g.update(EMA=EMA, COS=LR_END, copy=copy)
# re-apply skeleton's patch to this source
old = """        pos = rng.choice(pos, 200_000, replace=False)
"""
new = old + """    extra = SKEL if seed < 100 or (seed >= 1000 and seed % 1000 < 100) else SKEL2
    extra = SKEL if STAGE[0] == 1 else SKEL2
    if extra > 0:
        sk = np.flatnonzero((tr & SK).ravel())
        pos = np.concatenate([pos, rng.choice(sk, int(extra * len(pos)), replace=True)])
"""
assert old in tsrc
tsrc = tsrc.replace(old, new)
STAGE = [1]
g["STAGE"] = STAGE
exec(compile(tsrc, "train (avg)", "exec"), g)

from scipy import ndimage as ndi
from napari_topo.models.voxel_head import TRUNCATE, _sigmas, symmetric_eigenvalues
sp = np.asarray(E.sp)
unit = sp.min()


def ctx(p):
    # the product's context features (models/voxel_head.py), as ac.py computed them
    from napari_topo.models.voxel_head import context_features

    return context_features(p, sp)


seed = int(sys.argv[1])
t = time.time()
STAGE[0] = 1
p1b = p1l = 0
for j in range(K):
    head, bs = E.train(seed if K == 1 else seed * 1000 + j)
    p1b = p1b + E.head_prob(head, E.Ft) / K
    p1l = p1l + E.head_prob(head, E.Fl) / K
th, ms, at, _ = E.choose(E.smooth(p1b))
print("stage1", seed, th, ms, E.low_score(E.smooth(p1l), th, ms), flush=True)
Cb, Cl = ctx(p1b), ctx(p1l)
Ft2 = np.concatenate([np.asarray(E.Ft), Cb], -1)
Fl2 = np.concatenate([np.asarray(E.Fl), Cl], -1)
del Cb, Cl
E.Ft = Ft2
from napari_topo.models import voxel_head as V
V.FEATURE_NAMES = tuple(list(V.FEATURE_NAMES) + [f"c{i}" for i in range(9)])
E.FEATURE_NAMES = V.FEATURE_NAMES
g["FEATURE_NAMES"] = V.FEATURE_NAMES
g["Ft"] = Ft2
STAGE[0] = 2
p2b = p2l = 0
for j in range(K):
    head2, bs2 = E.train(seed + 100 if K == 1 else seed * 1000 + 100 + j, Ft=Ft2) if "Ft=" in tsrc else E.train(seed + 100 if K == 1 else seed * 1000 + 100 + j)
    p2b = p2b + E.head_prob(head2, Ft2) / K
    p2l = p2l + E.head_prob(head2, Fl2) / K
np.save(os.path.join(os.environ["OUT"], f"raw2b_{seed}.npy"), p2b.astype(np.float32)); np.save(os.path.join(os.environ["OUT"], f"raw2l_{seed}.npy"), p2l.astype(np.float32))
p2b, p2l = E.smooth(p2b), E.smooth(p2l)
th, ms, at, _ = E.choose(p2b)
print("stage2", seed, th, ms, {k: round(at[k], 4) for k in ("Dice", "clDice")}, E.low_score(p2l, th, ms),
      {t2: E.low_score(p2l, t2, ms)["clDice"] for t2 in (0.3, 0.4, 0.5)}, round(time.time() - t), flush=True)
