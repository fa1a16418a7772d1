# ruff: noqa
# Scratch probe of stop 48 (issue 10), not part of the product: ../../voxel_head_context/probe/ac.py
# (both stages trained as the product does, on the cache of cache_tta.py 1) with the positives of each
# stage's sample drawn again from the labels' skeleton (skimage.morphology.skeletonize): SKEL x as many
# extra draws as vessel voxels, the clDice paper's skeleton emphasis in a voxel loss. skeleton.log.txt:
# CACHE=/work/scratch/s47/cache_tta1 SKEL=1.0 python skeleton.py SEED, seeds 0 1 2; skeleton_stage1.log.txt:
# the same with SKEL2=0 (stage 1 only).
import os
import sys
import types

here = os.path.dirname(os.path.abspath(__file__))
probe = os.path.join(here, "..", "..", "voxel_head_context", "probe")
source = open(os.path.join(probe, "exp.py")).read()
source = source.replace('C = "/work/scratch/s46/cache"', 'C = os.environ["CACHE"]')
source = source.replace("import json\n", "import json\nimport os\n")
old = """        pos = rng.choice(pos, 200_000, replace=False)
"""
new = old + """    extra = SKEL if seed < 100 else SKEL2  # ac.py seeds stage 2 with seed + 100
    if extra > 0:
        sk = np.flatnonzero((tr & SK).ravel())
        pos = np.concatenate([pos, rng.choice(sk, int(extra * len(pos)), replace=True)])
"""
assert old in source
source = source.replace(old, new)
source = source.replace(
    "def head_prob",
    'SKEL = float(os.environ.get("SKEL", "0"))\n'
    'SKEL2 = float(os.environ.get("SKEL2", SKEL))\n'
    "if SKEL > 0 or SKEL2 > 0:\n"
    "    from skimage.morphology import skeletonize\n"
    "    SK = skeletonize(ves).astype(bool)\n\n\n"
    "def head_prob",
)
exp = types.ModuleType("exp")
exp.__file__ = os.path.join(probe, "exp.py")
exec(compile(source, "exp.py (skeleton)", "exec"), exp.__dict__)
sys.modules["exp"] = exp
ac = open(os.path.join(probe, "ac.py")).read()
exec(compile(ac, "ac.py", "exec"), {"__name__": "__main__"})
