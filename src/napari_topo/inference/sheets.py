"""Sheet-like pieces of a vessel mask: found by their shape, dropped after the model runs.

The U-Nets mark bright *sheets* as well as bright tubes: the bone plates of a CT (which
its HU vessel range also removes, but not on a CT read without it), the bright
subcutaneous fat of a time-of-flight MRA (where no intensity range can help).
Each 64^3 tile is normalised on its own, so their absolute brightness does not reach
the network, and a sheet seen edge-on looks like a vessel in every slice across it. A
vessel is thin across two axes and long along one; a sheet is thin across one axis only.
That is the plate-versus-line measure of Frangi et al. (1998):

    R_A = |lambda_2| / |lambda_3|,   |lambda_1| <= |lambda_2| <= |lambda_3|,

the eigenvalues of the Hessian of the (Gaussian-smoothed) image. Inside a tube the two
largest curvatures are equal (R_A near 1); inside a sheet only one is large (R_A near 0).
Here it is computed on the *mask* (not the image, so it does not depend on the
modality's intensities), on isotropic voxels, at each mask voxel at the scale (of
:data:`SCALES`) where the scale-normalised largest curvature ``sigma^2 |lambda_3|`` is
strongest. A 26-connected piece of the mask whose median R_A
is below :data:`SHEET_RATIO` is a sheet and is dropped; a sheet the network joined to a
vessel by a thin bridge is first cut where it is thin, as the CT vessel range does
(:func:`~napari_topo.inference.pipeline._split_where_thin`), and its parts whose median
R_A reaches the threshold (the test a whole piece passes) are kept.

What it does on data (``benchmarks/bench_sheets.py``, ``benchmarks/real/``): on synthetic
volumes it drops the CT phantom's bone plate and the scalp of an MRA-like head (Dice
0.04-0.14 -> 0.11-0.24, and 0.10 -> 0.45) and no vessel; on the development data
(3D-IRCADb-01 patient 01, vesselNN two-photon stacks) no piece of the shipped models'
masks is sheet-like enough to be dropped (the CT's vessel pieces have medians of 0.26
or more, its false pieces 0.24-0.35 as well: muscle and kidney are thick, and the CT's
vessel range already removes its bone), so the scores there do not change.

Reference: A. F. Frangi, W. J. Niessen, K. L. Vincken, M. A. Viergever, *Multiscale
vessel enhancement filtering*, MICCAI 1998 (Eq. 11: ``R_A``, "plate-like versus
line-like").
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

__all__ = [
    "MAX_VOXELS",
    "MIN_RESPONSE",
    "SCALES",
    "SHEET_MIN_SIZE",
    "SHEET_RATIO",
    "drop_sheets",
    "line_ratio",
]

#: Gaussian scales, in voxels of the isotropic grid, at which the Hessian is taken.
SCALES = (1.0, 2.0, 4.0)
#: Scale-normalised largest curvature ``sigma^2 |lambda_3|`` under which a voxel's shape
#: is not measured (NaN): deep inside a block wider than the largest scale every
#: curvature is near 0 (a step edge of the mask gives about 0.24).
MIN_RESPONSE = 0.05
#: Largest isotropic grid (voxels) :func:`line_ratio` resamples a mask to.
MAX_VOXELS = 16_000_000
#: A piece whose median R_A is below this is a sheet. Chosen on synthetic data only
#: (``benchmarks/bench_sheets.py``): the vessel pieces of the generator's four styles
#: and of the phantoms have medians of 0.34 or more (0.40 or more above 300 voxels),
#: the bone plates of the CT phantom 0.05-0.06, the scalp of an MRA-like head 0.04, the
#: generator's CT sheets 0.06-0.12 (one 0.21). The threshold sits low in the gap, so a
#: flattened or tangled vessel is kept (``benchmarks/results/sheets/sheets.md``).
SHEET_RATIO = 0.15
#: Pieces smaller than this (voxels) are not judged: too few voxels for a median shape.
SHEET_MIN_SIZE = 100


def line_ratio(
    mask, spacing=None, scales: Sequence[float] = SCALES, max_voxels: int = MAX_VOXELS
) -> np.ndarray:
    """Frangi's plate-versus-line ratio ``R_A`` of a mask, at every mask voxel.

    Parameters
    ----------
    mask : (Z, Y, X) array_like of bool
        The mask (any 3D boolean array; read-only arrays are fine).
    spacing : float or sequence of 3 float, optional
        Voxel size (z, y, x). Default 1 (isotropic voxels).
    scales : sequence of float
        Gaussian standard deviations, in voxels of the isotropic grid (below).
    max_voxels : int
        Largest isotropic grid (voxels) the mask's bounding box is resampled to.

    Returns
    -------
    ndarray of float32, shape (Z, Y, X)
        ``R_A`` in [0, 1] at mask voxels (1: a tube's axis, 0: a flat sheet), at the
        scale with the strongest scale-normalised largest curvature; NaN at mask voxels
        where that curvature is under :data:`MIN_RESPONSE` (deep inside a block); 1
        outside the mask.

    Raises
    ------
    ValueError
        A mask that is not 3D, a bad ``spacing`` or an empty or non-positive ``scales``.

    Notes
    -----
    Curvature needs isotropic voxels: on a 5 x 1 x 1 um stack a Gaussian of one
    in-plane voxel is a fifth of a voxel in z, and the second derivative across the
    slices reads every surface vessel as a sheet. So the mask's bounding box (grown by
    three of the largest scale) is resampled, as a voxel occupancy (linear
    interpolation, :func:`scipy.ndimage.zoom`), to isotropic voxels at the finest spacing,
    or coarser when that grid would exceed ``max_voxels`` (a CT's liver region at
    about 1 mm). The Hessian comes from Gaussian-derivative filters there
    (:func:`scipy.ndimage.gaussian_filter` with ``order``; the volume's border extends
    the mask, so a vessel or a block leaving the volume has no false edge there), is
    read at each mask voxel's centre (:func:`scipy.ndimage.map_coordinates`, linear)
    and its eigenvalues taken there only (:func:`numpy.linalg.eigvalsh`). Reference:
    Frangi et al., MICCAI 1998, Eq. 11.
    """
    from scipy import ndimage as ndi

    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3:
        raise ValueError(f"the mask must be 3D (z, y, x); got shape {m.shape}")
    sp = np.broadcast_to(np.asarray(1.0 if spacing is None else spacing, float), (3,)).copy()
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be 3 positive numbers (z, y, x); got {spacing!r}")
    scales = [float(s) for s in scales]
    if not scales or any(not np.isfinite(s) or s <= 0 for s in scales):
        raise ValueError(f"scales must be positive numbers; got {scales!r}")
    out = np.ones(m.shape, dtype=np.float32)
    idx = np.nonzero(m)
    if len(idx[0]) == 0:
        return out
    # the bounding box, grown by 3 sigma of the largest scale (at the finest spacing)
    pad = np.ceil(3.0 * max(scales) * sp.min() / sp).astype(int) + 1
    lo = np.maximum([int(i.min()) for i in idx] - pad, 0)
    hi = np.minimum([int(i.max()) + 1 for i in idx] + pad, m.shape)
    size = hi - lo
    iso = max(float(sp.min()), float((np.prod(size * sp) / max_voxels) ** (1.0 / 3.0)))
    factors = sp / iso
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    # uint8 in, float32 out: no float copy of the whole box (linear needs no prefilter)
    grid = ndi.zoom(
        m[box].view(np.uint8), factors, order=1, grid_mode=True, mode="nearest", output=np.float32
    )
    # each mask voxel's centre on the isotropic grid (voxel i spans [i, i + 1) * spacing)
    coords = np.stack(
        [(i - a + 0.5) * f - 0.5 for i, a, f in zip(idx, lo, factors, strict=True)]
    ).astype(np.float32)
    best = np.zeros(len(idx[0]), dtype=np.float32)
    ratio = np.ones(len(idx[0]), dtype=np.float32)
    pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    for s in scales:
        hess = np.empty((len(idx[0]), 3, 3), dtype=np.float32)
        for a, b in pairs:
            order = [0, 0, 0]
            order[a] += 1
            order[b] += 1
            d = ndi.gaussian_filter(grid, sigma=s, order=order, mode="nearest")
            d = ndi.map_coordinates(d, coords, order=1, mode="nearest")
            hess[:, a, b] = d
            hess[:, b, a] = d
        ev = np.sort(np.abs(np.linalg.eigvalsh(hess)), axis=1)  # |l1| <= |l2| <= |l3|
        del hess
        response = s**2 * ev[:, 2]  # scale-normalised (isotropic grid: one unit)
        take = response > best
        best[take] = response[take]
        ratio[take] = ev[take, 1] / np.maximum(ev[take, 2], 1e-12)
    ratio[best < MIN_RESPONSE] = np.nan  # no scale sees a shape there
    out[idx] = ratio
    return out


def drop_sheets(
    outputs, threshold: float = 0.5, *, spacing=None, keep=None, ratio: float = SHEET_RATIO
) -> int:
    """Drop the sheet-like pieces of the mask ``outputs["vessel"] > threshold``, in place.

    A 26-connected piece (:func:`cc3d.connected_components`) of at least
    :data:`SHEET_MIN_SIZE` voxels whose median :func:`line_ratio` is below ``ratio`` gets
    probability (and TopNet's centerness) 0; a failing piece is first cut where it is
    thin and its parts that look like tubes are kept (module docstring), and so is the
    part a point of ``keep`` (a tree root) lies on or within reach of.

    Parameters
    ----------
    outputs : dict of str to ndarray
        :func:`~napari_topo.inference.pipeline.predict`'s outputs (float32 (z, y, x)).
    threshold : float
        The mask threshold.
    spacing : float or sequence of 3 float, optional
        Voxel size (z, y, x). Default 1.
    keep : (K, 3) array_like, optional
        Voxel coordinates of tree roots: the part of a failing piece each lies on is
        kept (the whole piece when it cannot be cut), as in
        :func:`~napari_topo.inference.pipeline.drop_pieces_outside`.
    ratio : float
        Median ``R_A`` under which a piece is a sheet.

    Returns
    -------
    int
        Pieces dropped.

    Raises
    ------
    ValueError
        ``ratio`` outside (0, 1), or ``keep`` not of shape (K, 3).
    """
    from scipy import ndimage as ndi

    from .. import _cc3d as cc3d
    from .pipeline import _drop_failing_pieces

    if not (isinstance(ratio, int | float) and 0.0 < float(ratio) < 1.0):
        raise ValueError(f"ratio must be a number between 0 and 1; got {ratio!r}")
    mask = outputs["vessel"] > threshold
    labels, n = cc3d.connected_components(mask, connectivity=26, return_N=True)
    if n == 0:
        return 0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    judged = sizes >= SHEET_MIN_SIZE
    judged[0] = False
    if not judged.any():
        return 0
    r = line_ratio(judged[labels], spacing)
    medians = np.full(n + 1, np.nan)
    judged_ids = np.flatnonzero(judged)
    with warnings.catch_warnings():  # a piece with no measured voxel: NaN, not judged
        warnings.simplefilter("ignore", RuntimeWarning)
        medians[judged_ids] = ndi.labeled_comprehension(
            r, labels, judged_ids, np.nanmedian, float, np.nan
        )
    bad = judged & (np.nan_to_num(medians, nan=1.0) < ratio)
    if not bad.any():
        return 0
    # unmeasured (block) voxels count as tube-like in the parts, as in the whole piece
    values = np.nan_to_num(r, nan=1.0, copy=False)  # r is not needed after this
    return _drop_failing_pieces(
        outputs, labels, bad, values, ratio, 1.0, spacing, lower_percentile=50, keep=keep
    )
