# ruff: noqa
# Scratch probe of stop 47 (issue 10), not part of the product: ../../voxel_head_context/probe/cache.py
# with the base network's pass run with tta=T mirrored copies, written to /work/scratch/s47/cache_ttaT.
# Usage: python cache_tta.py T; then CACHE=/work/scratch/s47/cache_ttaT python ac.py SEED (that probe's
# exp.py/ac.py reading the cache folder from $CACHE): ac_tta1.log.txt, ac_tta4.log.txt.
import os
import sys

T = int(sys.argv[1])
here = os.path.dirname(os.path.abspath(__file__))
source = open(os.path.join(here, "..", "..", "voxel_head_context", "probe", "cache.py")).read()
source = source.replace('OUT = "/work/scratch/s46/cache"', f'OUT = "/work/scratch/s47/cache_tta{T}"')
source = source.replace('**got["view_inputs"],', f'**{{**got["view_inputs"], "tta": {T}}},')
assert f"cache_tta{T}" in source and '"tta":' in source
exec(compile(source, "cache.py (tta)", "exec"))
