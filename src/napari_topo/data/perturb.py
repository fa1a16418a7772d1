"""Inject the topology mistakes segmentation models make into a correct mask.

Used by the demo, the tests and the widgets' sample data to show what each metric and
loss sees: a vessel broken in two, a false bridge between two trees, and small spurious
blobs. Each function returns a new array and never modifies its input.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["add_spurious_blobs", "break_vessel", "bridge_trees"]


def _check_3d(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 3:
        raise ValueError(f"{name} must be a 3D (z, y, x) array, got {a.ndim}D shape {a.shape}")
    return a


def _ball(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    zz, yy, xx = np.ogrid[-r : r + 1, -r : r + 1, -r : r + 1]
    return zz**2 + yy**2 + xx**2 <= radius**2


def _paint(volume: np.ndarray, center, radius: float, value) -> None:
    """Set a ball of ``radius`` voxels around ``center`` to ``value``, clipped to the array."""
    ball = _ball(radius)
    r = ball.shape[0] // 2
    lo = np.asarray(center, int) - r
    src = [
        slice(max(0, -lo[i]), ball.shape[i] - max(0, lo[i] + ball.shape[i] - volume.shape[i]))
        for i in range(3)
    ]
    dst = [slice(max(0, lo[i]), min(volume.shape[i], lo[i] + ball.shape[i])) for i in range(3)]
    volume[tuple(dst)][ball[tuple(src)]] = value


def break_vessel(mask, centerline, radius, *, min_radius: float = 1.0, rng=None) -> np.ndarray:
    """Cut one vessel: remove a ball around a centerline voxel, away from the junctions.

    Parameters
    ----------
    mask : (Z, Y, X) bool array
    centerline : (Z, Y, X) bool array
        Centerline voxels inside ``mask``.
    radius : (Z, Y, X) float array
        Vessel radius in voxels at centerline voxels.
    min_radius : float
        Only cut vessels at least this thick (thin ones would vanish rather than break).
    rng : Generator or int, optional

    Returns
    -------
    ndarray of bool
        A copy of ``mask`` with one vessel interrupted.
    """
    mask, centerline, radius = (
        _check_3d(n, a) for n, a in (("mask", mask), ("centerline", centerline), ("radius", radius))
    )
    rng = np.random.default_rng(rng)
    cl = centerline.astype(bool)
    # Voxels with exactly two centerline neighbours lie inside a branch, not at a fork/end.
    neighbours = ndi.convolve(cl.astype(np.uint8), np.ones((3, 3, 3), np.uint8), mode="constant")
    inner = cl & (neighbours == 3) & (radius >= min_radius)
    candidates = np.argwhere(inner)
    if len(candidates) == 0:
        raise ValueError("no branch interior thick enough to cut; lower min_radius")
    center = candidates[rng.integers(len(candidates))]
    out = mask.astype(bool, copy=True)
    _paint(out, center, float(radius[tuple(center)]) + 1.5, False)
    return out


def bridge_trees(trees, *, bridge_radius: float = 1.0) -> np.ndarray:
    """Join the two closest vessels of different trees with a thin tube (a false bridge).

    Parameters
    ----------
    trees : (Z, Y, X) int array
        Tree id per voxel, 0 = background; at least two trees.
    bridge_radius : float
        Radius of the bridging tube in voxels.

    Returns
    -------
    ndarray of bool
        ``trees > 0`` plus the bridge.
    """
    from scipy.spatial import cKDTree

    trees = _check_3d("trees", trees)
    ids = np.unique(trees[trees > 0])
    if len(ids) < 2:
        raise ValueError(f"bridge_trees needs at least two trees, got {len(ids)}")
    a = np.argwhere(trees == ids[0])
    b = np.argwhere((trees > 0) & (trees != ids[0]))
    dist, j = cKDTree(b).query(a)
    i = int(np.argmin(dist))
    start, end = a[i].astype(float), b[j[i]].astype(float)
    out = trees > 0
    n = int(np.ceil(np.linalg.norm(end - start))) * 2 + 1
    for t in np.linspace(0.0, 1.0, n):
        _paint(out, np.rint(start + t * (end - start)), bridge_radius, True)
    return out


def add_spurious_blobs(mask, n: int = 5, *, radius: float = 1.5, rng=None) -> np.ndarray:
    """Add ``n`` small balls in the background, away from the vessels (false positives)."""
    mask = _check_3d("mask", mask).astype(bool)
    rng = np.random.default_rng(rng)
    far = ndi.distance_transform_edt(~mask) > radius + 2
    candidates = np.argwhere(far)
    if len(candidates) == 0:
        raise ValueError("no background far enough from the vessels for a blob")
    out = mask.copy()
    for c in candidates[rng.choice(len(candidates), size=min(n, len(candidates)), replace=False)]:
        _paint(out, c, radius, True)
    return out
