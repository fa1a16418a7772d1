"""Time and peak memory of ``feature_blocks`` on a random isotropic volume.

Usage: ``python measure.py N SIDE [MAX_VOXELS]`` (an N x SIDE x SIDE float32 volume; the
default 16.8 M voxels a block). Prints the blocks' count, the peak resident memory and
the time; measure.log.txt holds the runs quoted in README.md.
"""

import resource
import sys
import time

import numpy as np

from napari_topo.models.voxel_head import feature_blocks

n, side = int(sys.argv[1]), int(sys.argv[2])
max_voxels = int(sys.argv[3]) if len(sys.argv) > 3 else 1 << 24
x = np.random.default_rng(0).random((n, side, side), dtype=np.float32)
p = np.random.default_rng(1).random((n, side, side), dtype=np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
blocks = sum(1 for _ in feature_blocks(x, p, (1, 1, 1), max_voxels=max_voxels))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(
    f"{n}x{side}x{side} isotropic, max_voxels {max_voxels}: {blocks} blocks, peak {peak:.0f} "
    f"MiB (inputs {before:.0f}), {time.perf_counter() - t:.0f} s",
    flush=True,
)
