"""Voxels that ``feature_blocks`` computes (the features with their context) over the
volume's, for an isotropic 300-slice volume at the default 16.8 M voxels a block: the
real block layout, with the features themselves replaced by a counter (nothing is
computed). Usage: ``python block_work.py`` (writes nothing; block_work.log.txt is its output).
"""

import math

import numpy as np

import napari_topo.models.voxel_head as vh


class Zeros:
    """A lazy volume of zeros."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def __getitem__(self, key):
        return np.broadcast_to(np.float32(0), tuple(k.stop - k.start for k in key))


sizes: list[int] = []


def count(image, probability, spacing=None, context=None, progress=None):
    sizes.append(image.size)
    return np.broadcast_to(np.float32(0), image.shape + (len(vh.FEATURE_NAMES),))


vh.voxel_features = count
for side in (256, 512, 768, 1024, 2048):
    sizes.clear()
    shape = (300, side, side)
    blocks = list(vh.feature_blocks(Zeros(shape), Zeros(shape), (1.0, 1.0, 1.0)))
    cubes = blocks[0][0][1] != slice(0, side)
    print(
        f"{side} x {side}: {'cubes' if cubes else 'slabs of whole planes'}, {len(blocks)} "
        f"blocks, work/volume {sum(sizes) / math.prod(shape):.1f}x, largest block "
        f"{max(sizes) / (1 << 24):.2f} x max_voxels"
    )
