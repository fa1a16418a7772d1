"""Hard (non-differentiable) skeletons of binary masks.

The skeleton is the one-voxel-wide, topology-preserving centerline that clDice's
Tprec/Tsens, the tree accuracy metric and the centerline extraction of the pipeline
are computed on. It is numpy-only (scikit-image) and imports neither torch nor Qt.
"""

from __future__ import annotations

import numpy as np
from skimage.morphology import skeletonize as _sk_skeletonize

__all__ = ["skeletonize"]


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


def skeletonize(mask) -> np.ndarray:
    """Topology-preserving skeleton (centerline) of a binary mask.

    Thin the mask by scikit-image's :func:`skimage.morphology.skeletonize`: Lee et al.'s
    3D thinning for ``(z, y, x)`` volumes and Zhang & Suen's thinning for ``(y, x)``
    images. Thinning keeps the number of connected components (26-connected in 3D,
    8-connected in 2D) and loops of the mask. The array border is treated as background.
    Only the bounding box of the foreground is thinned, so sparse volumes are cheap.

    Parameters
    ----------
    mask : (M, N) or (P, M, N) array_like of bool or {0, 1}
        Binary mask; non-zero is foreground.

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
    out[box] = _sk_skeletonize(np.ascontiguousarray(m[box]))
    return out
