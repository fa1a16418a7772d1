"""Four tubes in one quarter of a 64 x 256 x 256 volume, i.i.d. noise elsewhere.

Usage: python benchmarks/results/stage5/sparse.py [MODEL_OR_CARD ...]
Prints, per model, the mask voxels more than 3 voxels from a tube ("far FP"), the
precision and the tree count (tests/test_transfer.py checks the same volume).
"""

import sys
import time

import numpy as np
from scipy import ndimage as ndi

from napari_topo.data.phantoms import sparse_tubes
from napari_topo.inference import segment

big, labels = sparse_tubes()
truth = labels > 0
far = ndi.distance_transform_edt(~truth) > 3
models = sys.argv[1:] or ["unet-dice", "unet-cldice", "unet-projpool", "topnet"]
for model in models:
    t = time.time()
    res = segment(big, model)
    m = np.asarray(res.mask, bool)
    n_trees = np.unique(np.asarray(res.trees))[1:].size
    print(
        f"{model} far FP {int((m & far).sum())} precision {(m & truth).sum() / m.sum():.3f} "
        f"trees {n_trees} {time.time() - t:.1f}s",
        flush=True,
    )
