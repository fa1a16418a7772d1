# ruff: noqa
# Scratch (stop 47): peak memory of feature_slabs (replaced by feature_blocks since: run it with napari_topo at commit 1fb5e9c, e.g. a git worktree on PYTHONPATH, as ../../voxel_head_blocks/measure.log.txt did), python mem2.py 120 384 16777216 (blocks: 4104 MiB, 92 s) and ... 67108864 (whole planes: 4313 MiB, 75 s), 2 CPU cores shared with other work.
import resource, sys, time, numpy as np, torch
from napari_topo.models.voxel_head import feature_slabs
n, side, mv = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
x = np.random.default_rng(0).random((n, side, side), dtype=np.float32)
p = np.random.default_rng(1).random((n, side, side), dtype=np.float32)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.time(); k = 0
for z0, z1, f in feature_slabs(x, p, (1, 1, 1), max_voxels=mv):
    k += 1
r1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{n}x{side}x{side} isotropic, max_voxels {mv}: {k} slabs, peak {r1:.0f} MiB (inputs {r0:.0f}), {time.time()-t:.0f} s", flush=True)
