"""Where a prediction's topology goes wrong: centerline the metrics count as errors.

clDice's two halves say *how much* centerline is wrong; :func:`topology_errors` says
*where*:

* **missed centerline** -- ground-truth skeleton voxels outside the prediction
  (``skeleton(G) & ~P``): the vessel is broken or missing there (lowers Tsens);
* **false centerline** -- predicted skeleton voxels outside the ground truth
  (``skeleton(P) & ~G``): a false bridge between vessels or a spurious branch (lowers
  Tprec).

Both are also grouped into connected pieces (26-connected in 3D, 8 in 2D), each with one
location to jump to, largest piece first. Numpy only, no Qt.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import _cc3d as cc3d
from .metrics import _as_labels, _check_same_shape, _spacing_array
from .skeleton import skeletonize

__all__ = ["topology_errors"]

_CONN = {2: 8, 3: 26}


def _pieces(points_mask: np.ndarray, sp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Locations (one skeleton voxel per piece, nearest its centroid) and sizes."""
    ndim = points_mask.ndim
    labels, n = cc3d.connected_components(
        points_mask.astype(np.uint8), connectivity=_CONN[ndim], return_N=True
    )
    if n == 0:
        return np.zeros((0, ndim), dtype=np.int64), np.zeros(0, dtype=np.int64)
    coords = np.argwhere(labels > 0)
    ids = labels[tuple(coords.T)].astype(np.int64)
    sizes = np.bincount(ids, minlength=n + 1)[1:]
    centroids = (
        np.stack(
            [np.bincount(ids, weights=coords[:, d], minlength=n + 1)[1:] for d in range(ndim)],
            axis=1,
        )
        / sizes[:, None]
    )
    # The voxel of each piece nearest its (physical) centroid: always on the piece,
    # unlike the centroid of a curved piece.
    dist = (((coords - centroids[ids - 1]) * sp) ** 2).sum(axis=1)
    order = np.lexsort((dist, ids))
    first = np.searchsorted(ids[order], np.arange(1, n + 1))
    locations = coords[order[first]]
    rank = np.argsort(-sizes, kind="stable")  # largest piece first
    return locations[rank], sizes[rank]


def topology_errors(pred, gt, spacing: float | Sequence[float] | None = None) -> dict:
    """Centerline voxels behind the topology errors of ``pred`` against ``gt``.

    Skeletons come from :func:`napari_topo.topology.skeleton.skeletonize`, the same ones
    clDice scores, so ``missed_centerline`` is empty exactly when Tsens is 1 and
    ``false_centerline`` exactly when Tprec is 1.

    Parameters
    ----------
    pred, gt : (M, N) or (P, M, N) array_like
        Binary masks or label volumes (``> 0`` is foreground), same shape.
    spacing : float or sequence of float, optional
        Voxel size in array axis order, used to pick each piece's location nearest its
        physical centroid. Default: 1.

    Returns
    -------
    dict
        ``"missed_centerline"`` : (N, ndim) int array
            Ground-truth skeleton voxels not covered by ``pred`` (broken/missed vessels).
        ``"false_centerline"`` : (N, ndim) int array
            Predicted skeleton voxels outside ``gt`` (false bridges, spurious branches).
        ``"missed_locations"``, ``"false_locations"`` : (K, ndim) int arrays
            One skeleton voxel per connected piece of the above (the voxel nearest the
            piece's centroid), largest piece first.
        ``"missed_sizes"``, ``"false_sizes"`` : (K,) int arrays
            Voxels per piece, in the same order.

    Raises
    ------
    ValueError
        On a shape mismatch, ndim other than 2 or 3, negative labels or bad spacing.

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.zeros((7, 7, 21), bool); gt[2:5, 2:5, 2:19] = True
    >>> pred = gt.copy(); pred[:, :, 9:12] = False  # a break
    >>> err = topology_errors(pred, gt)
    >>> len(err["missed_locations"]), len(err["false_locations"])
    (1, 0)
    >>> int(err["missed_locations"][0][2]) in (9, 10, 11)
    True
    """
    pl = _as_labels(pred, "pred")
    gl = _as_labels(gt, "gt")
    _check_same_shape(pl, gl)
    sp = _spacing_array(spacing, pl.ndim)
    p = pl if pl.dtype == bool else pl > 0
    g = gl if gl.dtype == bool else gl > 0
    missed = skeletonize(g) & ~p
    false = skeletonize(p) & ~g
    missed_loc, missed_size = _pieces(missed, sp)
    false_loc, false_size = _pieces(false, sp)
    return {
        "missed_centerline": np.argwhere(missed),
        "false_centerline": np.argwhere(false),
        "missed_locations": missed_loc,
        "missed_sizes": missed_size,
        "false_locations": false_loc,
        "false_sizes": false_size,
    }
