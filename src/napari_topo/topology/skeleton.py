"""Hard (non-differentiable) skeletons of binary masks.

The skeleton is the one-voxel-wide, topology-preserving centerline that clDice's
Tprec/Tsens, the tree accuracy metric and the centerline extraction of the pipeline
are computed on. It is numpy-only (scikit-image) and imports neither torch nor Qt.
"""

from __future__ import annotations

import numpy as np
from skimage.morphology import skeletonize as _sk_skeletonize

__all__ = ["skeletonize", "skeletonize_box"]


def _as_binary_mask(mask, name: str = "mask") -> np.ndarray:
    """Return ``mask`` as a bool array after checking that it is a 2D/3D binary mask.

    Read-only or strided input (a ``.npy`` memory map, a view) is copied: cc3d and
    scikit-image refuse read-only buffers.
    """
    from ..geometry import writable

    arr = writable(mask)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be a 2D (y, x) or 3D (z, y, x) array; got an array with "
            f"ndim={arr.ndim} and shape {arr.shape}."
        )
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(
            f"{name} must be a binary mask (bool, or numbers in {{0, 1}}); got dtype {arr.dtype}."
        )
    if arr.size:
        lo, hi = arr.min(), arr.max()
        ok = lo >= 0 and hi <= 1
        if ok and np.issubdtype(arr.dtype, np.floating):
            ok = bool(np.all((arr == 0) | (arr == 1)))
        if not ok:
            raise ValueError(
                f"{name} must be binary (bool, or values in {{0, 1}}); got values in "
                f"[{lo}, {hi}] with dtype {arr.dtype}. Threshold probabilities first, or "
                "use `labels > 0` for a label volume."
            )
    return arr.astype(bool)


def _bounding_box(m: np.ndarray) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding all foreground of bool ``m``; None if empty."""
    first = m.any(axis=0)  # one pass over the full array, the rest on a 2D/1D projection
    along = [m.any(axis=tuple(range(1, m.ndim)))]
    along += [
        first.any(axis=tuple(a for a in range(m.ndim - 1) if a != ax)) for ax in range(m.ndim - 1)
    ]
    if not along[0].any():
        return None
    box = []
    for a in along:
        idx = np.flatnonzero(a)
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


def skeletonize(mask, *, restore_lost: bool = True) -> np.ndarray:
    """Topology-preserving skeleton (centerline) of a binary mask.

    Thin the mask by scikit-image's :func:`skimage.morphology.skeletonize`: Lee et al.'s
    3D thinning for ``(z, y, x)`` volumes and Zhang & Suen's thinning for ``(y, x)``
    images. Thinning keeps the number of connected components (26-connected in 3D,
    8-connected in 2D) and loops of the mask. The array border is treated as background.
    Only the bounding box of the foreground is thinned, so sparse volumes are cheap.

    In 3D, scikit-image's thinning can delete the whole centerline of a straight,
    axis-aligned run 2-5 voxels across (scikit-image issue #3757): a 2 x 2 bar gives an
    empty skeleton, and such a branch of a tree is cut back to its junction. What it
    loses is put back (:func:`_restore_lost`): every piece of the mask keeps a
    centerline, and a run left farther from the skeleton than twice the skeleton's depth
    there plus 2 voxels is joined to it along the middle of the mask (a path may lie
    beside the skeleton for a voxel or two where it joins). On the vesselNN poon2015
    ground truth this adds 16-65 short paths (0.6-2 % of the skeleton voxels, mostly
    thin vessel tips cut short); on 3D-IRCADb-01 patient 01's vessels, none.

    Parameters
    ----------
    mask : (M, N) or (P, M, N) array_like of bool or {0, 1}
        Binary mask; non-zero is foreground.
    restore_lost : bool
        Put back what the 3D thinning loses (above; the default). False gives
        scikit-image's thinning alone. The chunked path of large volumes
        (:func:`napari_topo.inference.chunked.skeletonize_chunked`) uses
        :func:`skeletonize_box`, which repairs only the pieces that lie whole in a
        chunk's box.

    Returns
    -------
    skeleton : ndarray of bool, same shape as ``mask``
        One-voxel-wide centerline, ``True`` on the skeleton. A new array; ``mask`` is
        not modified. An empty mask gives an empty skeleton.

    Raises
    ------
    ValueError
        If ``mask`` is not 2D or 3D or not binary.

    Examples
    --------
    >>> import numpy as np
    >>> tube = np.zeros((5, 5, 12), dtype=bool)
    >>> tube[1:4, 1:4, 1:11] = True
    >>> skel = skeletonize(tube)
    >>> skel.dtype, skel.shape
    (dtype('bool'), (5, 5, 12))
    >>> bool(skel[2, 2, 3:9].all()), int(skel[:, [0, 1, 3], :].sum() + skel[[0, 4]].sum())
    (True, 0)
    """
    m = _as_binary_mask(mask)
    out = np.zeros(m.shape, dtype=bool)
    box = _bounding_box(m)
    if box is None:
        return out
    # skimage pads with background internally, so cropping to the bounding box changes
    # nothing but the run time.
    inner = np.ascontiguousarray(m[box])
    skel = _sk_skeletonize(inner)
    if restore_lost and inner.ndim == 3:
        _restore_lost(inner, skel)
    out[box] = skel
    return out


def skeletonize_box(block, cut) -> np.ndarray:
    """Skeleton of a box cut out of a larger 3D mask (a chunk with its halo).

    The box is thinned as :func:`skeletonize` thins it with ``restore_lost=False``, and
    what the thinning lost is put back (:func:`_restore_lost`) in the pieces of the box
    that touch none of its cut faces: those are whole pieces of the volume, and their
    repair is the one :func:`skeletonize` makes on the whole volume. Pieces that cross a
    cut face keep the plain thinning (their repair would need them whole).

    Parameters
    ----------
    block : (P, M, N) array_like of bool or {0, 1}
        The mask in the box (a 2D ``(M, N)`` box is thinned as :func:`skeletonize`
        thins it; the repair is 3D only).
    cut : sequence of (bool, bool), one per axis
        Per axis, whether the box's low and high faces cut through the volume (True)
        or are the volume's own faces (False).

    Returns
    -------
    ndarray of bool, the shape of ``block``

    Raises
    ------
    ValueError
        A mask that is not 2D/3D or not binary, or ``cut`` not one pair per axis.
    """
    m = _as_binary_mask(block, "block")
    faces = [tuple(bool(f) for f in pair) for pair in cut]
    if len(faces) != m.ndim or any(len(pair) != 2 for pair in faces):
        raise ValueError(f"cut must hold a (low, high) pair per axis; got {cut!r}.")
    skel = skeletonize(m, restore_lost=False)
    if m.ndim != 3 or not m.any():  # the 2D thinning loses nothing
        return skel
    from .. import _cc3d as cc3d

    labels = cc3d.connected_components(m, connectivity=26)
    touching = set()
    for axis, (low, high) in enumerate(faces):
        for side, is_cut in ((0, low), (-1, high)):
            if is_cut:
                touching.update(np.unique(np.take(labels, side, axis=axis)).tolist())
    touching.discard(0)
    whole = m & ~np.isin(labels, list(touching)) if touching else m
    if whole.any():
        _restore_lost(whole, skel)
    return skel


def _restore_lost(m: np.ndarray, skel: np.ndarray) -> int:
    """Put back the centerlines that scikit-image's 3D thinning loses; in place.

    Lee's thinning as scikit-image implements it (scikit-image issue #3757, open since
    2019) can delete the whole centerline of an axis-aligned run whose cross-section is
    2 x 2, 4 x 3, 4 x 4 voxels and the like: a straight tube of radius 1-2.5 voxels
    vanishes in about half of its sub-voxel placements, and such a run joined to a tree
    loses its branch down to the junction voxel. Here every 26-connected piece of the
    mask keeps a centerline: a piece with no skeleton voxel gets one at its deepest
    voxel, and each run of the piece lying farther from the skeleton than twice the
    depth of its nearest skeleton voxel plus 2 voxels (a correct skeleton reaches a
    tube's tip to within about its radius; a blob's corners are that close to its deep
    centre) is joined to the skeleton by the minimum-cost path through the mask from
    its farthest voxel, at cost 1 / depth^2 (a path along the middle; the invalidation
    ball and path step of TEASAR, Sato et al., Proc. Pacific Graphics 2000). Only
    pieces whose skeleton leaves more of their bounding box uncovered than that are
    examined, so a mask the thinning got right costs one labelling. Returns the number
    of paths added.
    """
    from scipy import ndimage as ndi
    from skimage.graph import MCP_Geometric

    from .. import _cc3d as cc3d

    labels = cc3d.connected_components(m, connectivity=26)
    n = int(labels.max())
    if n == 0:
        return 0
    # bounding boxes as (n + 1, 6) arrays of inclusive [lo, hi] per axis
    stats = cc3d.statistics(labels, no_slice_conversion=True)
    boxes = np.asarray(stats["bounding_boxes"], dtype=np.int64)
    counts = np.asarray(stats["voxel_counts"], dtype=np.int64)
    on_skel = cc3d.statistics(
        np.where(skel, labels, 0).astype(labels.dtype, copy=False), no_slice_conversion=True
    )
    k = len(on_skel["voxel_counts"])
    skel_counts = np.zeros(n + 1, dtype=np.int64)
    skel_counts[:k] = on_skel["voxel_counts"]
    skel_boxes = np.zeros_like(boxes)
    skel_boxes[:k] = on_skel["bounding_boxes"]
    # cheap screen, vectorised over the pieces (a noisy mask has 10^5 of them): how far
    # each piece's bounding box reaches beyond its skeleton's, against a radius from its
    # cross-section (voxels per skeleton voxel); a piece with no skeleton is a suspect
    reach = np.maximum(skel_boxes[:, 0::2] - boxes[:, 0::2], boxes[:, 1::2] - skel_boxes[:, 1::2])
    radius = np.sqrt(counts / (np.pi * np.maximum(skel_counts, 1)))
    flagged = (skel_counts == 0) | (reach.max(axis=1) > 2 * radius + 2)
    flagged &= counts > 0
    flagged[0] = False
    suspects = np.flatnonzero(flagged)
    # a piece whose box diagonal is under 4 voxels is covered by any one voxel of it
    # (the coverage is at least 2 * 1 + 2): a speck of noise gets its most central voxel
    extent = boxes[:, 1::2] - boxes[:, 0::2]
    small = np.sqrt((extent.astype(np.float64) ** 2).sum(axis=1)) < 4
    added = 0
    for lab in suspects:
        box = tuple(slice(int(lo), int(hi) + 1) for lo, hi in boxes[lab].reshape(-1, 2))
        piece = labels[box] == lab
        sk = skel[box]  # a view: paths are written into ``skel``
        if small[lab]:
            if not (sk & piece).any():
                where = np.argwhere(piece)
                centre = where[np.argmin(((where - where.mean(axis=0)) ** 2).sum(axis=1))]
                sk[tuple(centre)] = True
            continue
        # depth to the background, outside the box included (a piece fills its own
        # bounding box to the faces; without the pad a full box has no background)
        depth = ndi.distance_transform_edt(np.pad(piece, 1))[1:-1, 1:-1, 1:-1]
        if not (sk & piece).any():
            sk[np.unravel_index(np.argmax(depth), depth.shape)] = True
        # covered: within 2 * depth + 2 of a skeleton voxel, its own depth (TEASAR's
        # invalidation ball): a blob's corners are covered by its deep centre, a thin
        # branch cut off beside a thin trunk is not
        far, nearest = ndi.distance_transform_edt(~(sk & piece), return_indices=True)
        lost = piece & (far > 2 * depth[tuple(nearest)] + 2)
        if not lost.any():
            continue
        runs = cc3d.connected_components(lost, connectivity=26)
        run_boxes = cc3d.statistics(runs)["bounding_boxes"]
        costs = np.full(piece.shape, np.inf)
        costs[piece] = 1.0 / np.maximum(depth[piece], 0.5) ** 2
        for r in range(1, len(run_boxes)):
            rb = run_boxes[r]
            if rb is None:
                continue
            in_run = runs[rb] == r
            far_run = np.where(in_run, far[rb], -1.0)
            end = np.unravel_index(np.argmax(far_run), far_run.shape)
            end = tuple(int(e) + b.start for e, b in zip(end, rb, strict=True))
            # search a box around the run that reaches the skeleton (far[end] away)
            margin = int(np.ceil(far[end])) + 2
            crop = tuple(
                slice(max(b.start - margin, 0), min(b.stop + margin, n_))
                for b, n_ in zip(rb, piece.shape, strict=True)
            )
            for attempt in (crop, tuple(slice(0, n_) for n_ in piece.shape)):
                starts = np.argwhere(sk[attempt] & piece[attempt])
                local_end = tuple(e - c.start for e, c in zip(end, attempt, strict=True))
                if not len(starts):
                    continue
                mcp = MCP_Geometric(costs[attempt], fully_connected=True)
                cumulative, _ = mcp.find_costs(starts, [local_end])
                if np.isfinite(cumulative[local_end]):  # else: the way leaves the box
                    crop = attempt
                    break
            path = np.asarray(mcp.traceback(local_end))
            sk[crop][tuple(path.T)] = True
            added += 1
    return added
