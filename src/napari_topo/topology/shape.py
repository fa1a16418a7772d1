"""Is a mask shaped like a region (an organ, a tumour) or like tubes (vessels)?

Used to keep an organ or region mask from being offered as a vessel ground truth when its
name does not say what it is (a LiTS-style ``segmentation-0`` holds liver and tumour).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: A mask whose :func:`thickness_ratio` is above this is shaped like a region. Measured
#: (``tests/test_shape.py`` pins the synthetic ones): a ball 0.18, an ellipsoid with
#: semi-axes 3:2:1 0.081, the liver mask of 3D-IRCADb-01 patient 01 0.090 (cropped to 40
#: or 10 of its slices 0.16 and 0.12), one or two kidney-sized ellipsoids 0.095-0.096;
#: vessel trees of the synthetic generator 0.016-0.030 (radii up to 6 voxels in
#: 64^3-96^3) and up to 0.059 (radii up to 12: thick for so small a volume), a straight
#: 5 x 5-voxel bar 24 voxels long 0.063, that patient's vessel masks 0.010 (cropped as
#: the liver above 0.024 and 0.058) and the three vesselNN poon2015 labels 0.003-0.026.
#: The margins are thin at both ends (a flatter organ, semi-axes 5:3.3:1, reads 0.052
#: and passes for tubes): a mask it misjudges is only a default, which the user
#: overrides by picking.
REGION_RATIO = 0.07

#: About this many voxels are read at most (one uniform stride over every axis).
MAX_SAMPLE = 2**20


def strided_sample(data, max_voxels: int) -> tuple[np.ndarray, int]:
    """``(sample, step)``: ``data`` read on one stride ``step`` along every axis, about
    ``max_voxels`` voxels at most (a lazy dask/zarr array reads only those)."""
    shape = tuple(int(s) for s in data.shape)
    size = math.prod(shape)
    step = max(1, math.ceil((size / max_voxels) ** (1.0 / max(len(shape), 1))))
    sample = np.asarray(data[tuple(slice(None, None, step) for _ in shape)])
    return sample, step


def thickness_ratio(
    data, spacing: Sequence[float] | None = None, *, max_voxels: int = MAX_SAMPLE
) -> float | None:
    """Upper-quartile depth of a mask's foreground over the extent of its pieces.

    The depth of a foreground voxel is its Euclidean distance to the nearest background
    voxel (:func:`scipy.ndimage.distance_transform_edt`, in ``spacing`` units); the ratio
    is the 75th percentile of the depths over the extent of the pieces (26-connected
    components; each piece's extent is the longest side of its bounding box, in the same
    units, and the pieces' extents are averaged weighted by their voxels, so two kidneys
    far apart read as two organs, not as one long thin shape). Tubes are thin for their
    length (vessel trees 0.003-0.063), a ball is 0.18 and an organ about half that (a
    liver 0.090): the ratio does not depend on the voxel size, nor on the mask's position.
    A heuristic, not a published measure; :data:`REGION_RATIO` lists what it was measured
    on. Axes of length 1 are left out (a (1, y, x) mask is measured as 2D).

    Parameters
    ----------
    data : array-like, shape (y, x) or (z, y, x)
        Mask or labels (any non-zero value is foreground); numpy, dask or zarr. Only a
        sample on one uniform stride along every axis, about ``max_voxels`` voxels, is
        read.
    spacing : sequence of float, optional
        Voxel size per axis (any unit; the sign is ignored, as napari's flipped axes);
        default 1.
    max_voxels : int
        About the largest sample read.

    Returns
    -------
    float or None
        The ratio, or None when the sample holds fewer than 27 foreground voxels or no
        background (too little to tell).

    Raises
    ------
    ValueError
        If ``data`` is not 2D or 3D, or ``spacing`` is not one non-zero number per axis.
    """
    from scipy import ndimage  # not at import: the reader uses strided_sample at start-up

    shape = tuple(int(n) for n in data.shape)
    ndim = len(shape)
    if ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D mask, got shape {shape}")
    if spacing is None:
        spacing = np.ones(ndim)
    spacing = np.abs(np.atleast_1d(np.asarray(spacing, dtype=float)))
    if spacing.shape != (ndim,) or not np.all(np.isfinite(spacing) & (spacing > 0)):
        raise ValueError(
            f"spacing must be {ndim} non-zero numbers (one per axis of {shape}), "
            f"got {spacing.tolist()}"
        )
    sample, step = strided_sample(data, max_voxels)
    keep = [i for i, n in enumerate(shape) if n > 1]
    fg = sample.reshape([sample.shape[i] for i in keep]) != 0
    sampling = spacing[keep] * step
    if len(keep) < 2 or int(fg.sum()) < 27 or fg.all():
        return None
    # depth to the mask's own background only: the array's faces are not an edge (a
    # ground truth cropped to a slab of a liver is still a liver; padded, it read as thin)
    pieces, n = ndimage.label(fg, structure=np.ones((3,) * fg.ndim, bool))
    # to the nearest background voxel's centre; the mask's edge lies about half a voxel
    # nearer (a 5-voxel-wide bar would otherwise read a third thicker than it is)
    depth = ndimage.distance_transform_edt(fg, sampling=sampling)[fg] - 0.5 * sampling.min()
    sizes = np.bincount(pieces.ravel(), minlength=n + 1)[1:]
    extents = np.array(
        [
            max((b.stop - b.start) * s for b, s in zip(box, sampling, strict=True))
            for box in ndimage.find_objects(pieces)
        ]
    )
    extent = float((sizes * extents).sum() / sizes.sum())
    return float(np.percentile(depth, 75)) / extent


def looks_like_region(data, spacing: Sequence[float] | None = None) -> bool:
    """Whether a mask is shaped like a region rather than tubes: its
    :func:`thickness_ratio` is above :data:`REGION_RATIO` (False when it cannot tell)."""
    ratio = thickness_ratio(data, spacing)
    return ratio is not None and ratio > REGION_RATIO
