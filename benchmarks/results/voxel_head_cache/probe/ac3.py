# ruff: noqa
# Scratch probe of stop 47 (issue 10), not part of the product; needs ../../voxel_head_context/probe/{exp,ac}.py copied to /work/scratch/s47 (exp.py reading the cache folder from $CACHE). Result: ac3_0.log.txt.
"""Probe: a third auto-context stage on the second's output (scratch, stop 47)."""
import sys, time
import numpy as np
sys.path.insert(0, "/work/scratch/s47")
seed = int(sys.argv[1])
sys.argv = [sys.argv[0], str(seed)]
exec(open("/work/scratch/s47/ac.py").read())  # stage 1 and 2 as the product; p1b.., Ft2, Fl2, head2
q2b, q2l = E.head_prob(head2, Ft2), E.head_prob(head2, Fl2)  # unsmoothed second stage
Cb, Cl = ctx(q2b), ctx(q2l)
n0 = len(V.FEATURE_NAMES) - 9
Ft3 = np.concatenate([Ft2[..., :n0], Cb], -1)
Fl3 = np.concatenate([Fl2[..., :n0], Cl], -1)
del Cb, Cl
E.Ft = Ft3
head3, bs3 = E.train(seed + 200)
p3b, p3l = E.smooth(E.head_prob(head3, Ft3)), E.smooth(E.head_prob(head3, Fl3))
th3, ms3, at3, _ = E.choose(p3b)
print("stage3", seed, th3, ms3, {k: round(at3[k], 4) for k in ("Dice", "clDice")}, E.low_score(p3l, th3, ms3), round(time.time() - t), flush=True)
