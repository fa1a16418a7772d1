# ruff: noqa
# Scratch (stop 47): peak memory of the head's features on an isotropic slab: python mem.py 172 256 -> "172x256x256 isotropic: halo (43, 43, 43), peak 2840 MiB (before 314), 72 s" (2 CPU cores).
import resource, sys, time, numpy as np, torch
from napari_topo.models.voxel_head import VoxelHeadNet, halo_per_axis
n, side = int(sys.argv[1]), int(sys.argv[2])
x = np.random.default_rng(0).random((n, side, side), dtype=np.float32)
p = np.random.default_rng(1).random((n, side, side), dtype=np.float32)
torch.manual_seed(0)
net = VoxelHeadNet(hidden=64, stages=1)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.time()
out = net.stage_probability(x, p, (1, 1, 1), stage=1)
r1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{n}x{side}x{side} isotropic: halo {halo_per_axis((1,1,1))}, peak {r1:.0f} MiB (before {r0:.0f}), {time.time()-t:.0f} s")
