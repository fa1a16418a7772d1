"""Scores of one prediction against one real-data ground truth, inside a region of interest.

Every metric that the project already has comes from :mod:`napari_topo.topology.metrics`
(Dice, clDice, precision, recall, Betti numbers, tree accuracy); this module only chooses
*where* they are computed (the region of interest) and adds the one benchmark-specific
check, the sensitivity on thick vessel cores ("hollow vessels").

Region of interest
------------------
* 3D-IRCADb (CT): the liver mask grown by 10 mm, measured in physical units with the
  voxel spacing (:func:`roi_from_mask`: Euclidean distance transform with
  ``sampling=spacing``, so 10 mm is ~6 slices at 1.6 mm and ~17 pixels at 0.57 mm).
* vesselNN (two-photon): the whole volume (``roi=None``).

Prediction and ground truth are both set to background outside the ROI, then cropped to
the ROI's bounding box (which changes no score: outside the box both are empty). Betti-0
therefore counts the connected pieces *inside the ROI*.

Thick-core sensitivity ("hollow vessel" check)
----------------------------------------------
The fraction of ground-truth voxels lying deeper than ``core_depth`` (default 5) voxels
inside a vessel that are predicted. Depth is the Euclidean distance transform of the
ground truth with the spacing normalised to the finest axis, i.e. measured in units of
the finest (in-plane) voxel: for vesselNN (5 x 0.994 x 0.994 um) the threshold is ~5 um,
for the CT (1.6 x 0.57 x 0.57 mm) ~2.9 mm. A model that outlines large vessels instead
of filling them scores near 0 here while its Dice can still look fair.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from napari_topo.topology.metrics import (
    _spacing_array,
    betti_numbers,
    cldice,
    dice,
    precision,
    recall,
    tree_accuracy,
)
from napari_topo.topology.skeleton import skeletonize

__all__ = ["ROI_MARGIN_MM", "CORE_DEPTH", "bounding_box", "core_mask", "roi_from_mask", "score"]

#: Margin around the liver mask, mm (the issue's "inside the liver grown by 10 mm").
ROI_MARGIN_MM = 10.0
#: Depth (in finest-axis voxels) beyond which a ground-truth voxel is a "thick core".
CORE_DEPTH = 5.0




def roi_from_mask(mask, spacing=None, margin: float = ROI_MARGIN_MM) -> np.ndarray:
    """``mask`` grown by ``margin`` physical units (Euclidean, spacing-aware).

    A voxel is in the ROI when its centre lies within ``margin`` of the centre of a mask
    voxel, distances measured with ``spacing`` (units of ``spacing``).

    Examples
    --------
    >>> m = np.zeros((9, 9, 9), bool); m[4, 4, 4] = True
    >>> r = roi_from_mask(m, spacing=(2.0, 1.0, 1.0), margin=2.0)
    >>> int(r[:, 4, 4].sum()), int(r[4, 4, :].sum())
    (3, 5)
    """
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        raise ValueError("the ROI mask is empty")
    if margin < 0:
        raise ValueError(f"margin must be >= 0; got {margin}")
    sp = _spacing_array(spacing, m.ndim)
    # Only the mask's bounding box grown by the margin can be reached: EDT there only.
    pad = np.ceil(margin / sp).astype(int) + 1
    box = bounding_box(m)
    lo = [max(0, s.start - p) for s, p in zip(box, pad, strict=True)]
    hi = [min(n, s.stop + p) for s, n, p in zip(box, m.shape, pad, strict=True)]
    sub = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    dist = ndimage.distance_transform_edt(~m[sub], sampling=sp)
    out = np.zeros_like(m)
    out[sub] = dist <= margin + 1e-9
    return out


def bounding_box(mask) -> tuple[slice, ...]:
    """Slices of the smallest box holding every non-zero voxel of ``mask``."""
    m = np.asarray(mask)
    idx = np.nonzero(m)
    if idx[0].size == 0:
        raise ValueError("the mask is empty: no bounding box")
    return tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)


def core_mask(gt, spacing=None, depth: float = CORE_DEPTH) -> np.ndarray:
    """Ground-truth voxels deeper than ``depth`` finest-axis voxels inside a vessel."""
    g = np.asarray(gt, dtype=bool)
    sp = _spacing_array(spacing, g.ndim)
    if not g.any():
        return np.zeros_like(g)
    edt = ndimage.distance_transform_edt(g, sampling=sp / sp.min())
    return edt > depth


def _nan_to_none(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def score(
    pred,
    gt,
    *,
    roi=None,
    spacing=None,
    pred_trees=None,
    gt_trees=None,
    core_depth: float = CORE_DEPTH,
) -> dict:
    """All benchmark scores of a binary prediction inside ``roi``.

    Parameters
    ----------
    pred, gt : (z, y, x) array_like of bool
        Predicted and true vessel masks, same shape.
    roi : (z, y, x) array_like of bool, optional
        Region of interest; default the whole volume.
    spacing : sequence of 3 float, optional
        Voxel size (z, y, x); only the thick-core depth uses it (relative to the finest
        axis).
    pred_trees, gt_trees : (z, y, x) int arrays, optional
        Tree labels (0 = background). With both, "Tree accuracy" is
        :func:`~napari_topo.topology.metrics.tree_accuracy` of the labels inside the ROI
        on the skeleton of ``gt`` inside the ROI: the fraction of ground-truth centerline
        voxels (those in a labelled tree) whose predicted tree matches, after the
        one-to-one (Hungarian) matching of predicted to true trees by overlap inside the
        ROI.
    core_depth : float
        Threshold of the thick-core sensitivity, finest-axis voxels.

    Returns
    -------
    dict
        ``Dice``, ``clDice``, ``Tprec``, ``Tsens``, ``Precision``, ``Sensitivity``,
        ``Betti-0 error``, ``Components (pred)``, ``Components (gt)``,
        ``Core sensitivity`` (None when the ground truth has no core voxel),
        ``Core voxels``, ``Tree accuracy`` (only with both tree maps; None when
        undefined), ``Predicted voxels``, ``True voxels``. NaN values become None (JSON).
    """
    p = np.asarray(pred, dtype=bool)
    g = np.asarray(gt, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape; got {p.shape} and {g.shape}")
    if roi is None:
        r = np.ones(g.shape, bool)
        box = tuple(slice(0, n) for n in g.shape)
    else:
        r = np.asarray(roi, dtype=bool)
        if r.shape != g.shape:
            raise ValueError(f"roi must have the shape {g.shape}; got {r.shape}")
        box = bounding_box(r)
        r = r[box]
    p = p[box] & r
    g_full = g[box]  # depth is measured in the whole vessel, not cut at the ROI's edge
    g = g_full & r

    _, tprec, tsens = cl = cldice(p, g)
    b0_p = betti_numbers(p)[0]
    b0_g = betti_numbers(g)[0]
    cores = core_mask(g_full, spacing, core_depth) & r
    n_core = int(np.count_nonzero(cores))
    out = {
        "Dice": dice(p, g),
        "clDice": cl[0],
        "Tprec": tprec,
        "Tsens": tsens,
        "Precision": precision(p, g),
        "Sensitivity": recall(p, g),
        # = betti_errors(p, g)[0], without computing both topologies twice
        "Betti-0 error": abs(int(b0_p) - int(b0_g)),
        "Components (pred)": int(b0_p),
        "Components (gt)": int(b0_g),
        "Core sensitivity": (float(np.count_nonzero(p & cores)) / n_core if n_core else math.nan),
        "Core voxels": n_core,
        "Predicted voxels": int(np.count_nonzero(p)),
        "True voxels": int(np.count_nonzero(g)),
    }
    if pred_trees is not None and gt_trees is not None:
        pt = np.where(r, np.asarray(pred_trees)[box], 0)
        gtl = np.where(r, np.asarray(gt_trees)[box], 0)
        out["Tree accuracy"] = tree_accuracy(pt, gtl, centerline=skeletonize(g))
    return {k: _nan_to_none(float(v) if isinstance(v, float) else v) for k, v in out.items()}
