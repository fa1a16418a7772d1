# ruff: noqa
# Scratch probe of stop 46 (issue 10), kept to reproduce benchmarks/results/voxel_head_context/README.md;
# not part of the product. Run cache.py once (writes /work/scratch/s46/cache), then exp.py SEEDS / ac.py SEED.
"""auto-context probe (scratch)."""

import sys
import time

import numpy as np

sys.path.insert(0, "/work/scratch/s46")
import exp as E
from scipy import ndimage as ndi

from napari_topo.models.voxel_head import TRUNCATE, _sigmas, symmetric_eigenvalues

sp = np.asarray(E.sp)
unit = sp.min()


def ctx(p):
    kw = {"truncate": TRUNCATE, "mode": "reflect"}
    out = [ndi.gaussian_filter(p, _sigmas(s, sp), **kw) for s in (1.75, 3.5, 7.0)]
    for s in (1.4, 2.8):
        sig = _sigmas(s, sp)
        el = []
        for i in range(3):
            for j in range(i, 3):
                o = [0, 0, 0]
                o[i] += 1
                o[j] += 1
                el.append(
                    ndi.gaussian_filter(p, sig, order=o, **kw) * ((s * unit) ** 2 / (sp[i] * sp[j]))
                )
        ev = symmetric_eigenvalues(el)
        out += [ev[k] for k in range(3)]
    return np.stack(out, -1).astype(np.float32)


seed = int(sys.argv[1])
t = time.time()
head, bs = E.train(seed)
p1b, p1l = E.head_prob(head, E.Ft), E.head_prob(head, E.Fl)
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
head2, bs2 = E.train(seed + 100)
p2b, p2l = E.smooth(E.head_prob(head2, Ft2)), E.smooth(E.head_prob(head2, Fl2))
th, ms, at, _ = E.choose(p2b)
print(
    "stage2",
    seed,
    th,
    ms,
    {k: round(at[k], 4) for k in ("Dice", "clDice")},
    E.low_score(p2l, th, ms),
    {t2: E.low_score(p2l, t2, ms)["clDice"] for t2 in (0.3, 0.4, 0.5)},
    round(time.time() - t),
    flush=True,
)
