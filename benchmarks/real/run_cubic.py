"""``run.py`` with the input resampled by cubic splines instead of linear interpolation.

An experiment, not a setting of the package: ``segment`` resamples a volume to the
model's grid (a CT: isotropic at its finest spacing) with linear interpolation
(``napari_topo.inference.pipeline._resampled``). This script replaces that function, for
the input image only (the outputs are mapped back linearly as before), with scikit-image's
``resize(order=3)`` (cubic B-spline, what nnU-Net uses for images), then runs ``run.py``
with the same arguments::

    python benchmarks/real/run_cubic.py THICK --results R --models unet-dice

The rows it writes carry ``run.py``'s command line; say which script made them.
Results: ``benchmarks/results/thick_slices/resampling/``.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from skimage.transform import resize

import napari_topo.inference.pipeline as pipeline

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def cubic_resampled(volume, shape, factors):
    """``pipeline._resampled`` with a cubic B-spline (order 3) instead of linear."""
    if not pipeline._needs_resampling(factors):
        return volume
    new_shape = tuple(max(1, round(n * f)) for n, f in zip(shape, factors, strict=True))
    out = resize(
        np.asarray(volume, np.float32),
        new_shape,
        order=3,
        mode="edge",
        anti_aliasing=False,
        preserve_range=True,
    )
    return out.astype(np.float32)


if __name__ == "__main__":
    import run  # noqa: E402 - benchmarks/real/run.py, found through the path set above

    pipeline._resampled = cubic_resampled
    raise SystemExit(run.main(sys.argv[1:]))
