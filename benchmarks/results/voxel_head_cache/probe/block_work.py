# ruff: noqa
# Scratch (stop 47, written by a reviewer): voxels that feature_slabs' blocks compute, over the volume's, for an isotropic 300-slice volume (the block arithmetic of models/voxel_head.py at 98aec30 repeated; no features computed). Output: block_work.log.txt.
import math
from napari_topo.models.voxel_head import halo_per_axis
M = 1 << 24
h, hy, hx = halo_per_axis((1, 1, 1))
for side_p in (512, 768, 1024, 2048):
    n, ny, nx = 300, side_p, side_p
    plane = ny * nx
    slab = max(1, M // plane)
    work = 0; biggest = 0
    for z0 in range(0, n, slab):
        z1 = min(n, z0 + slab); a, b = max(0, z0 - h), min(n, z1 + h)
        side = math.isqrt(max(1, M // (b - a))); core = max(hy, hx, side - 2 * max(hy, hx), 1)
        for y0 in range(0, ny, core):
            ya, yb = max(0, y0 - hy), min(ny, y0 + core + hy)
            for x0 in range(0, nx, core):
                xa, xb = max(0, x0 - hx), min(nx, x0 + core + hx)
                v = (b - a) * (yb - ya) * (xb - xa); work += v; biggest = max(biggest, v)
    print(side_p, "slab", slab, "work/volume %.1fx" % (work / (n * plane)), "largest block %.2f x max_voxels" % (biggest / M))
