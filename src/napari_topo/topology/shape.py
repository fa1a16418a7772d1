"""Is a mask shaped like a region (an organ, a tumour) or like tubes (vessels)?

Used to keep an organ or region mask from being offered as a vessel ground truth when its
name does not say what it is (a LiTS-style ``segmentation-0`` holds liver and tumour).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: A mask whose :func:`thickness_ratio` is above this is shaped like a region. Measured
#: (``tests/test_shape.py`` pins the synthetic ones): a ball 0.19, an ellipsoid with
#: semi-axes 3:2:1 0.091, the liver mask of 3D-IRCADb-01 patient 01 0.096; vessel trees of
#: the synthetic generator 0.021-0.035 (radii up to 6 voxels in 64^3-96^3) and 0.038-0.052
#: (radii up to 12: thick for so small a volume), one straight tube ten radii long 0.033,
#: that patient's vessel masks 0.015 and the three vesselNN poon2015 labels 0.004-0.022.
#: A flatter ellipsoid (5:3.3:1, 0.061) passes for tubes: the cut favours a thick
#: vessel mask over an unusual organ.
REGION_RATIO = 0.065

#: At most this many voxels are read (a uniform stride over every axis).
MAX_SAMPLE = 2**20


def _strided(data, max_voxels: int) -> tuple[np.ndarray, int]:
    shape = tuple(int(s) for s in data.shape)
    size = math.prod(shape)
    step = max(1, math.ceil((size / max_voxels) ** (1.0 / len(shape)))) if size else 1
    sample = np.asarray(data[tuple(slice(None, None, step) for _ in shape)])
    return sample, step


def thickness_ratio(
    data, spacing: Sequence[float] | None = None, *, max_voxels: int = MAX_SAMPLE
) -> float | None:
    """Upper-quartile depth of a mask's foreground over its largest extent.

    The depth of a foreground voxel is its Euclidean distance to the nearest background
    voxel (:func:`scipy.ndimage.distance_transform_edt`, in ``spacing`` units); the ratio
    is the 75th percentile of the depths over the longest side of the foreground's
    bounding box, in the same units. Tubes are thin for their length (vessel trees
    0.004-0.052), a ball is 0.19 and an organ about half that (a liver 0.096): the ratio
    does not depend on the voxel size, nor on the mask's position. A heuristic, not a
    published measure; :data:`REGION_RATIO` lists what it was measured on.

    Parameters
    ----------
    data : array-like, shape (y, x) or (z, y, x)
        Mask or labels (any non-zero value is foreground); numpy, dask or zarr. Only a
        uniform strided sample of at most ``max_voxels`` voxels is read.
    spacing : sequence of float, optional
        Voxel size per axis (any unit); default 1.
    max_voxels : int
        Largest sample read.

    Returns
    -------
    float or None
        The ratio, or None when the sample holds fewer than 27 foreground voxels (too
        little to tell).

    Raises
    ------
    ValueError
        If ``data`` is not 2D or 3D, or ``spacing`` does not match its dimensions or is
        not positive.
    """
    ndim = len(data.shape)
    if ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D mask, got shape {tuple(data.shape)}")
    spacing = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=float)[-ndim:]
    if spacing.shape != (ndim,) or not np.all(spacing > 0):
        raise ValueError(f"spacing must be {ndim} positive numbers, got {spacing.tolist()}")
    sample, step = _strided(data, max_voxels)
    fg = sample != 0
    if int(fg.sum()) < 27:
        return None
    idx = np.nonzero(fg)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    fg = np.pad(fg[box], 1)  # background all round: a mask touching the edge ends there
    sampling = spacing * step
    depth = ndimage.distance_transform_edt(fg, sampling=sampling)[fg]
    extent = float(max((b.stop - b.start) * s for b, s in zip(box, sampling, strict=True)))
    return float(np.percentile(depth, 75)) / extent


def looks_like_region(data, spacing: Sequence[float] | None = None) -> bool:
    """Whether a mask is shaped like a region rather than tubes: its
    :func:`thickness_ratio` is above :data:`REGION_RATIO` (False when it cannot tell)."""
    ratio = thickness_ratio(data, spacing)
    return ratio is not None and ratio > REGION_RATIO
