"""Evaluation metrics for tubular-structure segmentation (numpy only).

Volumetric overlap (Dice, precision, recall, volume error), the clDice family (clDice,
Tprec, Tsens; Shit et al., CVPR 2021), topology (Betti numbers, Euler characteristic and
their errors), connected-component errors (3D CCE and mean 2D CCE; projected-pooling paper),
the 95th-percentile Hausdorff distance in physical units, and a tree-labelling accuracy for
multi-label vessel trees. :func:`compute_metrics` returns all of them in one call, sharing
every skeleton and component labelling between the metrics that need it.

Conventions
-----------
* Arrays are ``(y, x)`` or ``(z, y, x)``; ``spacing`` follows the same axis order.
* A *binary* mask is a bool array or a numeric array whose values are all 0 or 1.
  Label volumes (non-negative integers, 0 = background) are accepted only by
  :func:`tree_accuracy` and :func:`compute_metrics`.
* Digital topology uses the dual connectivity pair: foreground 26-connected and background
  6-connected in 3D (8 / 4 in 2D). This is the topology of the union of the closed unit
  voxels. Everything outside the array is background.
* Empty masks never raise and never emit numpy warnings: symmetric agreement scores
  (Dice, clDice, HD95, all errors) take their perfect value when both masks are empty;
  one-sided ratios whose denominator is empty (precision, recall, volume error, Tprec,
  Tsens) are NaN. Each function's docstring states its own rule.

No torch, no Qt: this module is meant to be recomputed live from a napari widget's worker.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from .. import _cc3d as cc3d
from .skeleton import _as_binary_mask, _bounding_box
from .skeleton import skeletonize as _skeletonize_checked

__all__ = [
    "DISTANCE_METRICS",
    "METRIC_DESCRIPTIONS",
    "betti_errors",
    "betti_numbers",
    "cce_2d",
    "cce_3d",
    "cldice",
    "compute_metrics",
    "dice",
    "euler_characteristic",
    "euler_error",
    "hd95",
    "precision",
    "recall",
    "tree_accuracy",
    "volume_error",
]

#: Foreground / background connectivity used by cc3d, per number of dimensions.
_FG_CONNECTIVITY = {2: 8, 3: 26}
_BG_CONNECTIVITY = {2: 4, 3: 6}

#: Keys of :func:`compute_metrics` that are distances, in the spacing's unit (voxels
#: without one): shown with their unit by the CLI and the metrics dock.
DISTANCE_METRICS = frozenset({"HD95"})

#: One sentence per key of :func:`compute_metrics` (shown as a tooltip by the widget).
METRIC_DESCRIPTIONS: dict[str, str] = {
    "Dice": "Voxel overlap 2|P∩G|/(|P|+|G|); 1 is perfect.",
    "Precision": "Fraction of predicted voxels that lie in the ground truth, |P∩G|/|P|.",
    "Recall": "Fraction of ground-truth voxels that were predicted, |P∩G|/|G|.",
    "Volume error": "Relative volume difference (|P|-|G|)/|G|; negative means under-segmented.",
    "clDice": "Harmonic mean of Tprec and Tsens: centerline overlap, sensitive to breaks "
    "and spurious branches; 1 is perfect.",
    "Tprec": "Topology precision: fraction of the predicted centerline inside the ground "
    "truth (drops with false branches).",
    "Tsens": "Topology sensitivity: fraction of the ground-truth centerline covered by the "
    "prediction (drops with missed or broken vessels).",
    "Betti-0 error": "Absolute difference in the number of connected components "
    "(26-connected in 3D, 8 in 2D).",
    "Betti-1 error": "Absolute difference in the number of loops (tunnels / handles).",
    "Betti-2 error": "Absolute difference in the number of enclosed cavities (always 0 in 2D).",
    "Euler error": "Absolute difference of the Euler characteristics b0 - b1 + b2.",
    "CCE 3D": "3D connected-component error: |#components(P) - #components(G)|.",
    "CCE 2D": "Mean over slices containing foreground of the per-slice 2D "
    "connected-component count difference.",
    "HD95": "95th-percentile symmetric surface distance in physical units (voxel spacing "
    "applied); 0 is perfect.",
    "Tree accuracy": "Fraction of ground-truth centerline voxels whose predicted tree label "
    "matches after one-to-one matching of tree labels by overlap.",
}


# ----------------------------------------------------------------------------- validation


def _as_labels(x, name: str) -> np.ndarray:
    """Return a 2D/3D label array (bool or non-negative integers).

    Read-only or strided input (a ``.npy`` memory map, a view) is copied: cc3d refuses
    read-only buffers.
    """
    from ..geometry import writable

    arr = writable(x)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be a 2D (y, x) or 3D (z, y, x) array; got an array with "
            f"ndim={arr.ndim} and shape {arr.shape}."
        )
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.signedinteger) and arr.size and arr.min() < 0:
            raise ValueError(
                f"{name} must hold non-negative labels (0 = background); got minimum {arr.min()}."
            )
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        # A float mask is fine as long as it is binary; anything else is ambiguous.
        return _as_binary_mask(arr, name)
    raise ValueError(
        f"{name} must be a bool mask or an integer label array; got dtype {arr.dtype}."
    )


def _check_same_shape(a: np.ndarray, b: np.ndarray, names=("pred", "gt")) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape; got {a.shape} and {b.shape}."
        )


def _binary_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p = _as_binary_mask(pred, "pred")
    g = _as_binary_mask(gt, "gt")
    _check_same_shape(p, g)
    return p, g


def _spacing_array(spacing, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    sp = np.asarray(spacing, dtype=float)
    if sp.ndim == 0:
        sp = np.full(ndim, float(sp))
    if sp.shape != (ndim,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(
            f"spacing must be None, a positive number or {ndim} positive numbers (one per "
            f"axis, in array axis order); got {spacing!r}."
        )
    return sp


def _check_axis(axis, ndim: int) -> int:
    if not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(
            f"axis must be an integer in [{-ndim}, {ndim - 1}] for a {ndim}D array; got {axis!r}."
        )
    return int(axis) % ndim


def _ratio(num: int, den: int) -> float:
    """num / den as a float, NaN (without a warning) when den is 0."""
    return float(num) / float(den) if den else math.nan


# ------------------------------------------------------------------- overlap metrics


def dice(pred, gt) -> float:
    """Dice coefficient ``2|P∩G| / (|P| + |G|)`` of two binary masks.

    Parameters
    ----------
    pred, gt : (M, N) or (P, M, N) array_like of bool or {0, 1}
        Prediction and ground truth, same shape.

    Returns
    -------
    float
        In [0, 1]. 1.0 when both masks are empty (perfect agreement).

    Raises
    ------
    ValueError
        On a shape mismatch, ndim other than 2 or 3, or non-binary input.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros((4, 4), bool); p[:2] = True
    >>> g = np.zeros((4, 4), bool); g[1:3] = True
    >>> dice(p, g)
    0.5
    """
    p, g = _binary_pair(pred, gt)
    return _dice(np.count_nonzero(p), np.count_nonzero(g), np.count_nonzero(p & g))


def _dice(n_p: int, n_g: int, tp: int) -> float:
    return 1.0 if n_p + n_g == 0 else 2.0 * float(tp) / float(n_p + n_g)


def precision(pred, gt) -> float:
    """Voxel precision ``|P∩G| / |P|``.

    Parameters
    ----------
    pred, gt : (M, N) or (P, M, N) array_like of bool or {0, 1}
        Prediction and ground truth, same shape.

    Returns
    -------
    float
        In [0, 1]; NaN when ``pred`` is empty.

    Raises
    ------
    ValueError
        On a shape mismatch, ndim other than 2 or 3, or non-binary input.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros((4, 4), bool); p[:2] = True
    >>> g = np.zeros((4, 4), bool); g[1:] = True
    >>> precision(p, g)
    0.5
    """
    p, g = _binary_pair(pred, gt)
    return _ratio(np.count_nonzero(p & g), np.count_nonzero(p))


def recall(pred, gt) -> float:
    """Voxel recall (sensitivity) ``|P∩G| / |G|``.

    Parameters
    ----------
    pred, gt : (M, N) or (P, M, N) array_like of bool or {0, 1}
        Prediction and ground truth, same shape.

    Returns
    -------
    float
        In [0, 1]; NaN when ``gt`` is empty.

    Raises
    ------
    ValueError
        On a shape mismatch, ndim other than 2 or 3, or non-binary input.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros((4, 4), bool); p[:2] = True
    >>> g = np.zeros((4, 4), bool); g[1:] = True
    >>> recall(p, g)
    0.3333333333333333
    """
    p, g = _binary_pair(pred, gt)
    return _ratio(np.count_nonzero(p & g), np.count_nonzero(g))


def volume_error(pred, gt) -> float:
    """Signed relative volume error ``(|P| - |G|) / |G|``.

    Parameters
    ----------
    pred, gt : (M, N) or (P, M, N) array_like of bool or {0, 1}
        Prediction and ground truth, same shape.

    Returns
    -------
    float
        Negative when the prediction is too small, positive when too large;
        NaN when ``gt`` is empty.

    Raises
    ------
    ValueError
        On a shape mismatch, ndim other than 2 or 3, or non-binary input.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros((4, 4), bool); p[:3] = True
    >>> g = np.zeros((4, 4), bool); g[:2] = True
    >>> volume_error(p, g)
    0.5
    """
    p, g = _binary_pair(pred, gt)
    n_p, n_g = np.count_nonzero(p), np.count_nonzero(g)
    return _ratio(n_p - n_g, n_g)


# --------------------------------------------------------------------------- clDice


def cldice(pred, gt) -> tuple[float, float, float]:
    """clDice with its topology precision and sensitivity (Shit et al., CVPR 2021).

    With hard skeletons ``S_P = skeleton(P)`` and ``S_G = skeleton(G)``
    (:func:`napari_topo.topology.skeleton.skeletonize`)::

        Tprec  = |S_P ∩ G| / |S_P|
        Tsens  = |S_G ∩ P| / |S_G|
        clDice = 2 Tprec Tsens / (Tprec + Tsens)

    extended by 0 when ``Tprec = Tsens = 0`` (as the paper suggests).

    Parameters
    ----------
    pred, gt : (M, N) or (P, M, N) array_like of bool or {0, 1}
        Prediction and ground truth, same shape.

    Returns
    -------
    cldice : float
        In [0, 1]. 1.0 when both masks are empty; 0.0 when exactly one is empty.
    tprec : float
        NaN when ``pred`` is empty (no predicted centerline).
    tsens : float
        NaN when ``gt`` is empty.

    Raises
    ------
    ValueError
        On a shape mismatch, ndim other than 2 or 3, or non-binary input.

    Examples
    --------
    >>> import numpy as np
    >>> tube = np.zeros((7, 7, 20), bool); tube[2:5, 2:5, 2:18] = True
    >>> cldice(tube, tube)
    (1.0, 1.0, 1.0)
    >>> broken = tube.copy(); broken[:, :, 9:11] = False
    >>> round(cldice(broken, tube)[0], 3) < 1.0
    True
    """
    p, g = _binary_pair(pred, gt)
    return _cldice(p, g, _skeletonize(p), _skeletonize(g))


def _skeletonize(m: np.ndarray) -> np.ndarray:
    # ``m`` is already a validated bool array, for which the public check is a no-op.
    return _skeletonize_checked(m)


def _cldice(p, g, skel_p, skel_g) -> tuple[float, float, float]:
    n_sp = np.count_nonzero(skel_p)
    n_sg = np.count_nonzero(skel_g)
    tprec = _ratio(np.count_nonzero(skel_p & g), n_sp)
    tsens = _ratio(np.count_nonzero(skel_g & p), n_sg)
    if n_sp == 0 and n_sg == 0:
        return 1.0, tprec, tsens
    if n_sp == 0 or n_sg == 0:
        return 0.0, tprec, tsens
    if tprec + tsens == 0:
        return 0.0, tprec, tsens
    return float(2.0 * tprec * tsens / (tprec + tsens)), tprec, tsens


# ------------------------------------------------------------------------- topology


def _n_components(m: np.ndarray, connectivity: int) -> int:
    _, n = cc3d.connected_components(m, connectivity=connectivity, return_N=True)
    return int(n)


def _euler_closed_cells(m: np.ndarray) -> int:
    """Euler characteristic of the union of the closed voxels of ``m`` (bool, 2D/3D).

    Counts the cells of the closed cubical complex directly: a k-cell of the lattice is
    present when any voxel it bounds is foreground, found by OR-ing shifted copies of the
    zero-padded mask (no lookup table). 3D: ``V - E + F - C``; 2D: ``V - E + F``.
    """
    p = np.pad(m, 1)
    cnt = np.count_nonzero
    if m.ndim == 2:
        oy = p[1:] | p[:-1]  # (Y+1, X+2): y-faces' neighbourhoods
        ox = p[:, 1:] | p[:, :-1]
        n_edges = cnt(oy[:, 1:-1]) + cnt(ox[1:-1, :])
        n_vertices = cnt(oy[:, 1:] | oy[:, :-1])
        return int(n_vertices - n_edges + cnt(m))
    oz = p[1:] | p[:-1]  # (Z+1, Y+2, X+2)
    oy = p[:, 1:] | p[:, :-1]  # (Z+2, Y+1, X+2)
    ox = p[:, :, 1:] | p[:, :, :-1]  # (Z+2, Y+2, X+1)
    n_faces = cnt(oz[:, 1:-1, 1:-1]) + cnt(oy[1:-1, :, 1:-1]) + cnt(ox[1:-1, 1:-1, :])
    del ox
    ozy = oz[:, 1:] | oz[:, :-1]  # edges along x live in 2x2 (z, y) neighbourhoods
    n_edges = cnt(ozy[:, :, 1:-1])
    n_edges += cnt((oz[:, :, 1:] | oz[:, :, :-1])[:, 1:-1, :])  # edges along y
    del oz
    n_edges += cnt((oy[:, :, 1:] | oy[:, :, :-1])[1:-1])  # edges along z
    del oy
    n_vertices = cnt(ozy[:, :, 1:] | ozy[:, :, :-1])
    return int(n_vertices - n_edges + n_faces - cnt(m))


def _n_cavities(m: np.ndarray) -> int:
    """Background components (6-conn / 4-conn) not connected to the outside."""
    bg = ~np.pad(m, 1)
    return _n_components(bg, _BG_CONNECTIVITY[m.ndim]) - 1


def _topology(m: np.ndarray) -> tuple[int, int, int, int]:
    """(b0, b1, b2, chi) of a validated bool mask."""
    box = _bounding_box(m)
    if box is None:
        return 0, 0, 0, 0
    # Outside the box is background connected to the outside of the array, so cropping
    # (the helpers pad by one voxel) changes no Betti number, only the run time.
    m = m[box]
    chi = _euler_closed_cells(m)
    b0 = _n_components(m, _FG_CONNECTIVITY[m.ndim])
    b2 = _n_cavities(m) if m.ndim == 3 else 0
    return b0, b0 + b2 - chi, b2, chi


def euler_characteristic(mask) -> int:
    """Euler characteristic of a binary mask (26/6 connectivity in 3D, 8/4 in 2D).

    The mask is read as the union of its closed unit voxels (pixels), whose topology is
    that of the 26-connected (8-connected) foreground with a 6-connected (4-connected)
    background. The cells of that closed cubical complex are counted directly from
    OR-ed shifted copies of the zero-padded mask (no lookup table)::

        chi = V - E + F - C     (3D)        chi = V - E + F     (2D)

    so ``chi = b0 - b1 + b2``. Outside the array is background. Agrees with
    ``skimage.measure.euler_number(mask, connectivity=mask.ndim)``.

    Parameters
    ----------
    mask : (M, N) or (P, M, N) array_like of bool or {0, 1}
        Binary mask.

    Returns
    -------
    int
        The Euler characteristic; 0 for an empty mask.

    Raises
    ------
    ValueError
        If ``mask`` is not 2D/3D or not binary.

    Examples
    --------
    >>> import numpy as np
    >>> ring = np.zeros((5, 5), bool); ring[1:4, 1:4] = True; ring[2, 2] = False
    >>> euler_characteristic(ring)
    0
    """
    return _euler_closed_cells(_as_binary_mask(mask))


def betti_numbers(mask) -> tuple[int, int, int]:
    """Betti numbers ``(b0, b1, b2)`` of a binary mask.

    Foreground is 26-connected and background 6-connected in 3D (8 / 4 in 2D); the
    outside of the array counts as background. Computed without persistent homology:

    * ``b0``: foreground connected components (cc3d, connectivity 26 / 8);
    * ``b2``: components of the 6-connected background of the zero-padded mask, minus
      the one that touches the outside (enclosed cavities); 0 in 2D;
    * ``chi``: :func:`euler_characteristic` (closed-cell count ``V - E + F - C``);
    * ``b1 = b0 + b2 - chi`` (loops / tunnels / handles).

    Parameters
    ----------
    mask : (M, N) or (P, M, N) array_like of bool or {0, 1}
        Binary mask.

    Returns
    -------
    tuple of int
        ``(b0, b1, b2)``; ``(0, 0, 0)`` for an empty mask.

    Raises
    ------
    ValueError
        If ``mask`` is not 2D/3D or not binary.

    Examples
    --------
    >>> import numpy as np
    >>> torus = np.zeros((3, 5, 5), bool); torus[1, 1:4, 1:4] = True; torus[1, 2, 2] = False
    >>> betti_numbers(torus)
    (1, 1, 0)
    >>> shell = np.zeros((5, 5, 5), bool); shell[1:4, 1:4, 1:4] = True; shell[2, 2, 2] = False
    >>> betti_numbers(shell)
    (1, 0, 1)
    """
    b0, b1, b2, _ = _topology(_as_binary_mask(mask))
    return b0, b1, b2


def betti_errors(pred, gt) -> tuple[int, int, int]:
    """Absolute Betti-number errors ``(|Δb0|, |Δb1|, |Δb2|)``; see :func:`betti_numbers`.

    Parameters
    ----------
    pred, gt : (M, N) or (P, M, N) array_like of bool or {0, 1}
        Prediction and ground truth, same shape.

    Returns
    -------
    tuple of int
        Per-dimension absolute differences (the b2 error is always 0 in 2D).

    Raises
    ------
    ValueError
        On a shape mismatch, ndim other than 2 or 3, or non-binary input.

    Examples
    --------
    >>> import numpy as np
    >>> g = np.zeros((5, 9), bool); g[2, 1:8] = True
    >>> p = g.copy(); p[2, 4] = False
    >>> betti_errors(p, g)
    (1, 0, 0)
    """
    p, g = _binary_pair(pred, gt)
    tp, tg = _topology(p), _topology(g)
    return tuple(abs(a - b) for a, b in zip(tp[:3], tg[:3], strict=True))


def euler_error(pred, gt) -> int:
    """Absolute Euler-characteristic error ``|chi(P) - chi(G)|``.

    Parameters
    ----------
    pred, gt : (M, N) or (P, M, N) array_like of bool or {0, 1}
        Prediction and ground truth, same shape.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        On a shape mismatch, ndim other than 2 or 3, or non-binary input.

    Examples
    --------
    >>> import numpy as np
    >>> g = np.zeros((5, 5), bool); g[1:4, 1:4] = True
    >>> p = g.copy(); p[2, 2] = False  # a hole: chi 1 -> 0
    >>> euler_error(p, g)
    1
    """
    p, g = _binary_pair(pred, gt)
    return abs(_euler_closed_cells(p) - _euler_closed_cells(g))


# ------------------------------------------------------------ connected-component errors


def cce_3d(pred, gt) -> int:
    """3D connected-component error ``|#CC(P) - #CC(G)|`` (projected-pooling paper).

    Components are 26-connected (8-connected for a 2D input), so this equals the
    Betti-0 error.

    Parameters
    ----------
    pred, gt : (M, N) or (P, M, N) array_like of bool or {0, 1}
        Prediction and ground truth, same shape.

    Returns
    -------
    int
        0 when both are empty.

    Raises
    ------
    ValueError
        On a shape mismatch, ndim other than 2 or 3, or non-binary input.

    Examples
    --------
    >>> import numpy as np
    >>> g = np.zeros((3, 3, 9), bool); g[1, 1, :] = True
    >>> p = g.copy(); p[1, 1, 4] = False
    >>> cce_3d(p, g)
    1
    """
    p, g = _binary_pair(pred, gt)
    conn = _FG_CONNECTIVITY[p.ndim]
    return abs(_n_components(p, conn) - _n_components(g, conn))


def _slice_component_counts(m: np.ndarray, axis: int, nonempty: np.ndarray) -> np.ndarray:
    counts = np.zeros(m.shape[axis], dtype=np.int64)
    index = [slice(None)] * 3
    for i in np.flatnonzero(nonempty):
        index[axis] = i
        counts[i] = _n_components(m[tuple(index)], 8)
    return counts


def _nonempty_slices(m: np.ndarray, axis: int) -> np.ndarray:
    return m.any(axis=tuple(a for a in range(3) if a != axis))


def _cce_2d(p: np.ndarray, g: np.ndarray, axis: int) -> float:
    if p.ndim == 2:
        if not (p.any() or g.any()):
            return 0.0
        return float(abs(_n_components(p, 8) - _n_components(g, 8)))
    ne_p, ne_g = _nonempty_slices(p, axis), _nonempty_slices(g, axis)
    used = ne_p | ne_g
    n_used = np.count_nonzero(used)
    if n_used == 0:
        return 0.0
    diff = _slice_component_counts(p, axis, ne_p) - _slice_component_counts(g, axis, ne_g)
    return float(np.abs(diff[used]).sum() / n_used)


def cce_2d(pred, gt, axis: int = 0) -> float:
    """Mean 2D connected-component error over the slices along ``axis``.

    For every 2D slice perpendicular to ``axis``, count the 8-connected components of the
    prediction and of the ground truth and take the absolute difference. Our reading of
    the "average 2D CCE" of the projected-pooling paper: the mean is taken over the
    slices where the prediction **or** the ground truth is non-empty (slices empty in
    both would only dilute the error with zeros).

    Parameters
    ----------
    pred, gt : (M, N) or (P, M, N) array_like of bool or {0, 1}
        Prediction and ground truth, same shape. A 2D input is a single slice, and
        ``axis`` is then ignored.
    axis : int, optional
        Slicing axis of a 3D input (default 0, i.e. ``z``: axial slices).

    Returns
    -------
    float
        0.0 when no slice holds any foreground.

    Raises
    ------
    ValueError
        On a shape mismatch, ndim other than 2 or 3, non-binary input or a bad axis.

    Examples
    --------
    >>> import numpy as np
    >>> g = np.zeros((4, 6, 6), bool); g[:2, 1:5, 2] = True
    >>> p = g.copy(); p[0, 3, 2] = False  # slice 0 splits in two
    >>> cce_2d(p, g)
    0.5
    """
    p, g = _binary_pair(pred, gt)
    ax = _check_axis(axis, p.ndim) if p.ndim == 3 else 0
    return _cce_2d(p, g, ax)


# ------------------------------------------------------------------------------ HD95


def _surface(m: np.ndarray) -> np.ndarray:
    """``m XOR erosion(m)`` with the face-connected cross and background outside.

    Same as ``m ^ scipy.ndimage.binary_erosion(m)`` (MONAI's edges), but from shifted
    views of the padded array, which is several times faster.
    """
    p = np.pad(m, 1)
    inner = tuple(slice(1, -1) for _ in range(m.ndim))
    eroded = m.copy()
    for ax in range(m.ndim):
        for sl in (slice(None, -2), slice(2, None)):
            idx = list(inner)
            idx[ax] = sl
            eroded &= p[tuple(idx)]
    return m & ~eroded


def _surface_points(m: np.ndarray, sp: np.ndarray):
    """Flattened surface mask, flat indices and physical coordinates of its voxels."""
    surf = _surface(m).ravel()
    flat = np.flatnonzero(surf)  # much faster than np.argwhere on large volumes
    coords = np.stack(np.unravel_index(flat, m.shape), axis=1) * sp
    return surf, flat, coords


def _percentile95_to(src_flat, src_xyz, dst_surface_flat: np.ndarray, dst_tree) -> float:
    """95th percentile of the distances from each source surface voxel to ``dst_tree``."""
    d = np.zeros(src_flat.size)
    # Voxels on both surfaces are at distance 0: query only the others (exact, and fast
    # when the segmentations mostly agree).
    todo = ~dst_surface_flat[src_flat]
    if todo.any():
        d[todo] = dst_tree.query(src_xyz[todo], k=1)[0]
    return float(np.percentile(d, 95))


def _hd95(p: np.ndarray, g: np.ndarray, sp: np.ndarray) -> float:
    has_p, has_g = p.any(), g.any()
    if not has_p and not has_g:
        return 0.0
    if not has_p or not has_g:
        return math.nan
    on_p, fp, xp = _surface_points(p, sp)
    on_g, fg, xg = _surface_points(g, sp)
    # Unbalanced trees without node compaction build ~2x faster and query no slower here.
    tree_p = cKDTree(xp, balanced_tree=False, compact_nodes=False)
    tree_g = cKDTree(xg, balanced_tree=False, compact_nodes=False)
    return max(_percentile95_to(fp, xp, on_g, tree_g), _percentile95_to(fg, xg, on_p, tree_p))


def hd95(pred, gt, spacing: float | Sequence[float] | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance between mask surfaces.

    Surface voxels are ``mask XOR erosion(mask)`` (face-connected structuring element,
    background outside the array). For each surface voxel of one mask the Euclidean
    distance, in physical units, to the nearest surface voxel of the other is found
    with a KD-tree (:class:`scipy.spatial.cKDTree`, coordinates multiplied by
    ``spacing``). The result is the larger of the two directed 95th percentiles (linear
    interpolation), as in ``monai.metrics.compute_hausdorff_distance(percentile=95)``.

    Parameters
    ----------
    pred, gt : (M, N) or (P, M, N) array_like of bool or {0, 1}
        Prediction and ground truth, same shape.
    spacing : float or sequence of float, optional
        Physical voxel size, one value per axis in array order (``(z, y, x)``), or one
        number for isotropic voxels. Default: 1 (distances in voxels).

    Returns
    -------
    float
        The HD95 in units of ``spacing``. 0.0 when both masks are empty; NaN when exactly
        one is empty (the distance is undefined; MONAI returns inf there).

    Raises
    ------
    ValueError
        On a shape mismatch, ndim other than 2 or 3, non-binary input or bad spacing.

    Examples
    --------
    >>> import numpy as np
    >>> g = np.zeros((5, 20), bool); g[2, 3] = True
    >>> p = np.zeros((5, 20), bool); p[2, 13] = True
    >>> hd95(p, g), hd95(p, g, spacing=(1.0, 0.5))
    (10.0, 5.0)
    """
    p, g = _binary_pair(pred, gt)
    return _hd95(p, g, _spacing_array(spacing, p.ndim))


# --------------------------------------------------------------------- tree accuracy


def _tree_accuracy(pl: np.ndarray, gl: np.ndarray, centerline: np.ndarray) -> float:
    gfg = gl > 0
    if not gfg.any():
        return math.nan
    on_line = centerline & gfg
    n_line = np.count_nonzero(on_line)
    if n_line == 0:
        return math.nan
    both = gfg & (pl > 0)
    if not both.any():
        return 0.0
    p_ids, p_inv = np.unique(pl[both], return_inverse=True)
    g_ids, g_inv = np.unique(gl[both], return_inverse=True)
    overlap = np.bincount(
        p_inv.ravel() * g_ids.size + g_inv.ravel(), minlength=p_ids.size * g_ids.size
    ).reshape(p_ids.size, g_ids.size)
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    keep = overlap[rows, cols] > 0
    matched_p = p_ids[rows[keep]]  # sorted, as linear_sum_assignment returns sorted rows
    matched_g = g_ids[cols[keep]]
    p_line, g_line = pl[on_line], gl[on_line]
    pos = np.searchsorted(matched_p, p_line)
    pos_c = np.minimum(pos, matched_p.size - 1)
    correct = (matched_p[pos_c] == p_line) & (matched_g[pos_c] == g_line)
    return float(np.count_nonzero(correct)) / float(n_line)


def tree_accuracy(pred_labels, gt_labels, centerline=None) -> float:
    """Fraction of ground-truth centerline voxels assigned to the right tree.

    Tree ids of the prediction and of the ground truth are arbitrary, so they are first
    matched one-to-one by maximising the total overlap (voxel counts of ``pred == i`` and
    ``gt == j``, ids > 0, over the whole volume; Hungarian algorithm,
    :func:`scipy.optimize.linear_sum_assignment`). A centerline voxel is correct when the
    predicted id there is matched to its ground-truth id; unmatched, background or wrong
    ids count as errors.

    Parameters
    ----------
    pred_labels, gt_labels : (M, N) or (P, M, N) array_like of int or bool
        Label volumes, 0 = background, one positive id per tree; same shape.
    centerline : array_like of bool or {0, 1}, optional
        Ground-truth centerline. Default: the skeleton of ``gt_labels > 0``
        (:func:`napari_topo.topology.skeleton.skeletonize`). Only its voxels inside
        ``gt_labels > 0`` are scored.

    Returns
    -------
    float
        In [0, 1]. NaN when ``gt_labels`` holds no tree or no centerline voxel lies in a
        tree.

    Raises
    ------
    ValueError
        On a shape mismatch, ndim other than 2 or 3, negative or non-integer labels, or a
        non-binary ``centerline``.

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.zeros((3, 9, 9), np.uint8); gt[1, 2, 1:8] = 1; gt[1, 6, 1:8] = 2
    >>> tree_accuracy(gt, gt), tree_accuracy(np.where(gt == 1, 5, gt * 3), gt)
    (1.0, 1.0)
    """
    pl = _as_labels(pred_labels, "pred_labels")
    gl = _as_labels(gt_labels, "gt_labels")
    _check_same_shape(pl, gl, ("pred_labels", "gt_labels"))
    if centerline is None:
        cl = _skeletonize(gl > 0)
    else:
        cl = _as_binary_mask(centerline, "centerline")
        _check_same_shape(cl, gl, ("centerline", "gt_labels"))
    return _tree_accuracy(pl, gl, cl)


# ------------------------------------------------------------------------ all at once


def _has_two_labels(lab: np.ndarray) -> bool:
    if lab.dtype == bool or lab.size == 0:
        return False
    top = lab.max()
    if top <= 0:
        return False
    low = np.min(lab, where=lab > 0, initial=top)
    return bool(low < top)


def compute_metrics(
    pred,
    gt,
    *,
    spacing: float | Sequence[float] | None = None,
    axis: int = 0,
    labels=None,
) -> dict[str, float]:
    """All segmentation metrics of a prediction against a ground truth, in one call.

    Each skeleton, component labelling and Euler count is computed once and shared
    (e.g. CCE 3D reuses the Betti-0 component counts, tree accuracy reuses the
    ground-truth skeleton of clDice).

    Parameters
    ----------
    pred, gt : (M, N) or (P, M, N) array_like
        Binary masks or label volumes (bool, non-negative integers, or floats in
        {0, 1}); same shape. The binary metrics use ``> 0``.
    spacing : float or sequence of float, optional
        Physical voxel size in array axis order, used by HD95 (e.g. a napari layer's
        ``scale``). Default: 1.
    axis : int, optional
        Slicing axis of the mean 2D CCE of a 3D input (default 0); ignored in 2D.
    labels : array_like, optional
        Tree labels of the prediction for ``"Tree accuracy"`` (same shape, 0 =
        unassigned), when ``pred`` is the mask they were grown in: the binary metrics
        then score the whole mask, also its voxels no tree reached. Default: ``pred``.

    Returns
    -------
    dict of str to float
        In this order (descriptions in :data:`METRIC_DESCRIPTIONS`): ``"Dice"``,
        ``"Precision"``, ``"Recall"``, ``"Volume error"``, ``"clDice"``, ``"Tprec"``,
        ``"Tsens"``, ``"Betti-0 error"``, ``"Betti-1 error"``, ``"Betti-2 error"``,
        ``"Euler error"``, ``"CCE 3D"``, ``"CCE 2D"``, ``"HD95"`` and
        ``"Tree accuracy"`` when ``gt`` holds two or more distinct non-zero labels and
        either ``labels`` is given (also when it holds one tree: every tree merged) or
        ``pred`` holds two or more (a ``pred`` with one label may be a 0/1 mask).
        Values follow the empty-mask rules of the single metrics (NaN where undefined).

    Raises
    ------
    ValueError
        On a shape mismatch, ndim other than 2 or 3, negative labels, non-binary float
        input, bad ``spacing`` or bad ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.zeros((8, 16, 16), bool); gt[3:5, 3:5, 2:14] = True
    >>> m = compute_metrics(gt, gt, spacing=(2.0, 1.0, 1.0))
    >>> m["Dice"], m["clDice"], m["Betti-0 error"], m["HD95"]
    (1.0, 1.0, 0.0, 0.0)
    >>> "Tree accuracy" in m
    False
    """
    pl = _as_labels(pred, "pred")
    gl = _as_labels(gt, "gt")
    _check_same_shape(pl, gl)
    sp = _spacing_array(spacing, pl.ndim)
    ax = _check_axis(axis, pl.ndim) if pl.ndim == 3 else 0
    p = pl if pl.dtype == bool else pl > 0
    g = gl if gl.dtype == bool else gl > 0

    n_p, n_g, tp = np.count_nonzero(p), np.count_nonzero(g), np.count_nonzero(p & g)
    skel_p, skel_g = _skeletonize(p), _skeletonize(g)
    cl, tprec, tsens = _cldice(p, g, skel_p, skel_g)
    b0p, b1p, b2p, chip = _topology(p)
    b0g, b1g, b2g, chig = _topology(g)

    out = {
        "Dice": _dice(n_p, n_g, tp),
        "Precision": _ratio(tp, n_p),
        "Recall": _ratio(tp, n_g),
        "Volume error": _ratio(n_p - n_g, n_g),
        "clDice": cl,
        "Tprec": tprec,
        "Tsens": tsens,
        "Betti-0 error": float(abs(b0p - b0g)),
        "Betti-1 error": float(abs(b1p - b1g)),
        "Betti-2 error": float(abs(b2p - b2g)),
        "Euler error": float(abs(chip - chig)),
        "CCE 3D": float(abs(b0p - b0g)),
        "CCE 2D": _cce_2d(p, g, ax),
        "HD95": _hd95(p, g, sp),
    }
    trees_given = labels is not None
    if trees_given:
        pl = _as_labels(labels, "labels")
        _check_same_shape(pl, gl, ("labels", "gt"))
    # explicit tree labels are scored even when they hold one tree (all trees merged:
    # the worst labelling, not a missing one); ``pred`` alone may be a 0/1 mask
    if _has_two_labels(gl) and (trees_given or _has_two_labels(pl)):
        out["Tree accuracy"] = _tree_accuracy(pl, gl, skel_g)
    return {k: float(v) for k, v in out.items()}
