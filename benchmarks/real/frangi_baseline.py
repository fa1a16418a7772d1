"""The classical baseline a user reaches for first: scikit-image's Frangi filter.

Recipe (fixed, nothing tuned to any case):

1. The volume as stored (HU for CT, raw counts for microscopy) is scaled to [0, 1] by its
   minimum and maximum (float32). Frangi's own ``gamma`` (half the largest Hessian norm)
   makes the response insensitive to this scaling; it only keeps the numbers tame.
2. ``skimage.filters.frangi(image, sigmas, black_ridges=False)``: bright vessels, the
   default ``alpha=0.5, beta=0.5``. The scales come from a plausible vessel *radius* range
   in physical units written by ``convert.py`` (CT 1-5 mm, two-photon 2-15 um):
   ``sigma = radius / 2`` (the standard deviation of a solid disc of radius r along one
   axis is r/2) divided by the finest voxel size, four scales spaced geometrically,
   none below 1 voxel. skimage applies the same sigma on every axis: anisotropic voxels
   are not corrected, as a plain user of the filter would not correct them.
3. The mask is ``response > threshold_otsu(response)`` over the whole volume.
4. Trees: the mask goes through the same post-processing as
   :func:`napari_topo.inference.segment` (``VesselAnalysis.from_outputs`` with
   ``min_size=DEFAULT_MIN_SIZE`` and the given roots), so the Frangi row is scored
   exactly like a model's.
"""

from __future__ import annotations

import numpy as np

__all__ = ["frangi_mask", "frangi_segment", "frangi_sigmas"]


def frangi_sigmas(radius_range, spacing=None, n: int = 4) -> tuple[float, ...]:
    """Frangi scales (voxels of the finest axis) for vessel radii in ``radius_range``.

    Examples
    --------
    >>> frangi_sigmas((2.0, 16.0), spacing=(5.0, 1.0, 1.0))
    (1.0, 2.0, 4.0, 8.0)
    """
    lo, hi = (float(r) for r in radius_range)
    if not 0 < lo <= hi:
        raise ValueError(f"radius_range must be 0 < low <= high; got {radius_range!r}")
    finest = 1.0 if spacing is None else float(np.min(spacing))
    sig = np.geomspace(lo, hi, n) / 2.0 / finest
    return tuple(float(round(max(1.0, s), 3)) for s in sig)


def frangi_mask(volume, sigmas) -> tuple[np.ndarray, float]:
    """Otsu-thresholded bright-vessel Frangi response and the threshold."""
    from skimage.filters import frangi, threshold_otsu

    img = np.asarray(volume, dtype=np.float32)
    lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return np.zeros(img.shape, bool), float("nan")
    img = (img - lo) / (hi - lo)
    resp = frangi(img, sigmas=sigmas, black_ridges=False)
    thr = float(threshold_otsu(resp))
    return resp > thr, thr


def frangi_segment(volume, *, spacing=None, sources=None, radius_range=(1.0, 5.0)):
    """Frangi mask and its trees as a ``VesselAnalysis`` (plus the settings used)."""
    from napari_topo.analysis import VesselAnalysis
    from napari_topo.inference.pipeline import DEFAULT_MIN_SIZE

    sigmas = frangi_sigmas(radius_range, spacing)
    mask, thr = frangi_mask(volume, sigmas)
    settings = {"sigmas": list(sigmas), "otsu_threshold": thr, "radius_range": list(radius_range)}

    def trees(src):
        return VesselAnalysis.from_outputs(
            {"vessel": mask},
            threshold=0.5,
            sources=src,
            spacing=spacing,
            min_size=DEFAULT_MIN_SIZE,
        )

    try:
        return trees(sources), settings
    except ValueError as exc:  # e.g. nothing left to root the trees on
        if sources is None or "source" not in str(exc).lower():
            raise
        settings["roots"] = f"not usable ({exc}); trees found without them"
        return trees(None), settings
