"""Centerline points and graphs: skeleton graphs (skan), centre-voxel NMS, radii.

These are the building blocks of tree reconstruction (:mod:`napari_topo.trees.reconstruct`):

* :func:`skeleton_graph` and :func:`branches` turn a one-voxel-wide skeleton into a
  voxel graph and a tidy table of branches, using skan's pixel graph and path
  decomposition (junction clusters are thinned to their minimum spanning tree, so a
  tree-shaped skeleton gives nearly a forest, not a graph full of little triangles);
* :func:`centerline_points_nms` picks centre voxels from a predicted distance-to-
  centerline map (TopNet's centerness output) by non-minimum suppression;
* :func:`radius_at` estimates the vessel radius at such points from the mask.

Arrays are ``(z, y, x)`` (or ``(y, x)``); ``spacing`` is the physical voxel size in the
same order. Nothing here imports Qt or torch. skan (and with it numba and pandas) is
imported only by the two functions that use it.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

from napari_topo.topology.metrics import _spacing_array
from napari_topo.topology.skeleton import _as_binary_mask, _bounding_box

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["branches", "centerline_points_nms", "radius_at", "skeleton_graph"]

#: skan's ``branch_type`` codes, as words.
BRANCH_TYPES = {0: "tip-tip", 1: "tip-junction", 2: "junction-junction", 3: "cycle"}
_AXIS_NAMES = {2: ("y", "x"), 3: ("z", "y", "x")}


def _import_skan():
    try:
        from skan import csr
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "napari_topo.trees.graph.skeleton_graph/branches need skan; install it with "
            "`pip install skan`."
        ) from err
    return csr


def _as_skeleton(skeleton) -> np.ndarray:
    return _as_binary_mask(skeleton, "skeleton")


def skeleton_graph(skeleton, spacing=None) -> nx.Graph:
    """Graph of the voxels of a skeleton, joined to their 26 (3D) or 8 (2D) neighbours.

    Built with skan's :func:`skan.csr.skeleton_to_csgraph`. Inside a junction (a cluster
    of voxels with three or more neighbours) skan keeps only the minimum spanning tree
    of the cluster, which removes most of the small triangles a 26-neighbour graph has
    at every bifurcation. A few can remain (a triangle through a voxel with only two
    neighbours), as can true loops of the skeleton; use
    ``networkx.minimum_spanning_tree(graph, weight="length")`` where a strict tree is
    needed.

    Parameters
    ----------
    skeleton : (M, N) or (P, M, N) array_like of bool or {0, 1}
        One-voxel-wide skeleton (e.g. from :func:`napari_topo.topology.skeleton.skeletonize`).
    spacing : float or sequence of float, optional
        Physical voxel size per axis, in array order. Default: 1.

    Returns
    -------
    networkx.Graph
        Nodes are voxel index tuples ``(z, y, x)`` with attribute ``coord`` (the same
        tuple, as Python ints). Edges carry ``length``, the Euclidean distance between
        the two voxels in physical units. ``graph.graph`` holds ``shape`` and
        ``spacing``. An empty skeleton gives an empty graph.

    Raises
    ------
    ValueError
        If ``skeleton`` is not a 2D/3D binary array or ``spacing`` is invalid.

    Examples
    --------
    >>> import numpy as np
    >>> skel = np.zeros((3, 5, 5), bool)
    >>> skel[1, 2, :3] = True; skel[1, 1, 3] = True  # a step to the diagonal
    >>> g = skeleton_graph(skel, spacing=(1.0, 1.0, 2.0))
    >>> g.number_of_nodes(), g.number_of_edges()
    (4, 3)
    >>> round(g.edges[(1, 2, 2), (1, 1, 3)]["length"], 4)  # sqrt(1 + 2**2)
    2.2361
    """
    skel = _as_skeleton(skeleton)
    sp = _spacing_array(spacing, skel.ndim)
    import networkx as nx  # here, not at import: the Tree editor dock needs none of it

    g = nx.Graph(shape=tuple(int(s) for s in skel.shape), spacing=tuple(float(s) for s in sp))
    if not skel.any():
        return g
    csr = _import_skan()
    adj, coords = csr.skeleton_to_csgraph(skel, spacing=sp)
    nodes = [tuple(c) for c in np.stack(coords, axis=1).astype(int).tolist()]
    g.add_nodes_from((n, {"coord": n}) for n in nodes)
    upper = adj.tocoo()
    keep = upper.row < upper.col  # skan's matrix is symmetric: every edge once
    g.add_edges_from(
        (nodes[i], nodes[j], {"length": float(w)})
        for i, j, w in zip(
            upper.row[keep].tolist(),
            upper.col[keep].tolist(),
            upper.data[keep].tolist(),
            strict=True,
        )
    )
    return g


def branches(skeleton, spacing=None):
    """Tidy table of the branches of a skeleton (skan's :func:`skan.summarize`).

    A branch is a path of skeleton voxels between two tips, two junctions, or a tip and
    a junction (or a closed loop).

    Parameters
    ----------
    skeleton : (M, N) or (P, M, N) array_like of bool or {0, 1}
        One-voxel-wide skeleton.
    spacing : float or sequence of float, optional
        Physical voxel size per axis, in array order. Default: 1.

    Returns
    -------
    pandas.DataFrame
        One row per branch with columns

        * ``branch_id`` (int, 0..B-1) and ``skeleton_id`` (the connected piece of the
          skeleton it belongs to);
        * ``src_z, src_y, src_x`` and ``dst_z, dst_y, dst_x`` (``src_y, src_x, ...`` in
          2D): voxel indices of the two end points;
        * ``length``: length along the branch in physical units;
        * ``euclidean_length``: straight-line distance between the end points, physical;
        * ``type``: ``"tip-tip"``, ``"tip-junction"``, ``"junction-junction"`` or
          ``"cycle"``.

        An empty skeleton, or one of isolated voxels alone (the skeleton of a round
        blob), gives an empty table with these columns; isolated voxels beside branches
        are left out (skan's convention: a point is not a branch).

    Raises
    ------
    ValueError
        If ``skeleton`` is not a 2D/3D binary array or ``spacing`` is invalid.

    Notes
    -----
    skan compiles its path walker with numba on first use in a process (a few seconds).

    Examples
    --------
    >>> import numpy as np
    >>> skel = np.zeros((3, 9, 9), bool)
    >>> skel[1, 4, :] = True; skel[1, :4, 4] = True  # a T: three branches
    >>> t = branches(skel)
    >>> len(t), sorted(t["type"].unique())
    (3, ['tip-junction'])
    """
    import pandas as pd  # a dependency of skan

    skel = _as_skeleton(skeleton)
    sp = _spacing_array(spacing, skel.ndim)
    names = _AXIS_NAMES[skel.ndim]
    columns = (
        ["branch_id", "skeleton_id"]
        + [f"src_{a}" for a in names]
        + [f"dst_{a}" for a in names]
        + ["length", "euclidean_length", "type"]
    )
    if not skel.any() or _all_isolated(skel):
        # skan leaves isolated voxels out of its table (a point is no branch), and raises
        # on a skeleton made of them alone (a blob's skeleton is one voxel)
        return pd.DataFrame({c: pd.Series(dtype=object if c == "type" else float) for c in columns})
    csr = _import_skan()
    with warnings.catch_warnings():
        # skan 0.13 calls DataFrame.rename(inplace=True), deprecated in pandas >= 3.1
        warnings.filterwarnings("ignore", message=".*inplace keyword.*")
        summary = csr.summarize(csr.Skeleton(skel, spacing=sp), separator="_")
    out = {
        "branch_id": np.arange(len(summary)),
        "skeleton_id": summary["skeleton_id"].to_numpy(),
    }
    for end in ("src", "dst"):
        for i, a in enumerate(names):
            out[f"{end}_{a}"] = summary[f"image_coord_{end}_{i}"].to_numpy().astype(int)
    out["length"] = summary["branch_distance"].to_numpy(dtype=float)
    out["euclidean_length"] = summary["euclidean_distance"].to_numpy(dtype=float)
    out["type"] = [BRANCH_TYPES[int(k)] for k in summary["branch_type"]]
    return pd.DataFrame(out, columns=columns)


def _all_isolated(skel: np.ndarray) -> bool:
    """Whether no voxel of a non-empty boolean skeleton has a neighbour (full connectivity)."""
    from scipy.spatial import cKDTree

    points = np.argwhere(skel)
    if len(points) < 2:
        return True
    nearest = cKDTree(points).query(points, k=2)[0][:, 1]
    return bool(nearest.min() > np.sqrt(skel.ndim) + 1e-6)


def _check_window(size) -> int:
    if isinstance(size, bool) or not isinstance(size, Integral) or size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer (window side), got {size!r}.")
    return int(size)


def centerline_points_nms(distance, mask, size: int = 5, max_distance: float | None = 1.0):
    """Centre voxels: local minima of a predicted distance-to-centerline map.

    TopNet's "centerness" head regresses, for every vessel voxel, its distance (in
    voxels) to the nearest centerline voxel; centre voxels are therefore the *minima*
    of that map (0 on the centerline). Following the paper's tree reconstruction, the
    map is first masked with the vessel prediction, then non-minimum suppression keeps
    the voxels of ``mask`` whose value equals the minimum of their ``size``-wide window
    (``size**ndim`` voxels, :func:`scipy.ndimage.minimum_filter`) and is at most
    ``max_distance``.

    Voxels outside ``mask`` take part in nothing: they are set to +inf before filtering,
    so they can neither be picked nor suppress a vessel voxel next to them. Ties are all
    kept: a plateau of equal minimal values (e.g. a distance that is exactly 0 along the
    whole centerline) returns every voxel of the plateau, so the points can be as dense
    as the centerline itself; on a noisy prediction, points are typically ``size // 2 + 1``
    or more voxels apart along a vessel.

    Parameters
    ----------
    distance : (M, N) or (P, M, N) array_like of float
        Predicted distance to the nearest centerline voxel, in voxels.
    mask : array_like of bool or {0, 1}, same shape
        Vessel mask, e.g. ``vessel_probability > 0.5``.
    size : int, optional
        Side of the (cubic) suppression window, odd; 5 as in TopNet.
    max_distance : float or None, optional
        Largest accepted distance value; minima further from the centerline (e.g. in
        blobs the network is unsure about) are dropped. None keeps every minimum.

    Returns
    -------
    points : (K, ndim) ndarray of intp
        Voxel indices of the centre voxels, in C (raster) order.

    Raises
    ------
    ValueError
        On a shape mismatch, ndim other than 2 or 3, a non-binary mask, NaN in
        ``distance`` inside the mask, an even or non-positive ``size`` or a negative
        ``max_distance``.

    Examples
    --------
    >>> import numpy as np
    >>> d = np.full((1, 3, 9), 2.0); d[0, 1] = [1, .5, 1, 1, .2, 1, 1, .9, 1]
    >>> centerline_points_nms(d, d < 5, size=3, max_distance=0.6).tolist()
    [[0, 1, 1], [0, 1, 4]]
    """
    m = _as_binary_mask(mask, "mask")
    d = np.asarray(distance)
    if d.shape != m.shape:
        raise ValueError(
            f"distance and mask must have the same shape; got {d.shape} and {m.shape}."
        )
    if not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)):
        raise ValueError(f"distance must be a real-valued array; got dtype {d.dtype}.")
    size = _check_window(size)
    if max_distance is not None and (
        isinstance(max_distance, bool)
        or not isinstance(max_distance, Real)
        or not max_distance >= 0
    ):
        raise ValueError(f"max_distance must be None or a number >= 0, got {max_distance!r}.")
    out = np.zeros((0, m.ndim), dtype=np.intp)
    box = _bounding_box(m)
    if box is None:
        return out
    # Work on the mask's bounding box grown by the window radius: identical result.
    r = size // 2
    box = tuple(
        slice(max(s.start - r, 0), min(s.stop + r, n)) for s, n in zip(box, m.shape, strict=True)
    )
    mb = m[box]
    db = np.where(mb, d[box], np.inf).astype(np.float64, copy=False)
    if np.isnan(db).any():
        raise ValueError("distance holds NaN inside the mask.")
    low = ndi.minimum_filter(db, size=size, mode="constant", cval=np.inf)
    keep = mb & (db == low)
    if max_distance is not None:
        keep &= db <= max_distance
    pts = np.argwhere(keep)
    if pts.size:
        pts += np.array([s.start for s in box])
    return pts.astype(np.intp, copy=False)


def _as_points(points, ndim: int | None = None, name: str = "points") -> np.ndarray:
    """(M, ndim) float/int coordinate array, validated."""
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] not in (2, 3):
        raise ValueError(
            f"{name} must be an (M, 2) or (M, 3) array of coordinates; got shape {p.shape}."
        )
    if ndim is not None and p.shape[1] != ndim:
        raise ValueError(
            f"{name} must have {ndim} coordinates per row to match a {ndim}D volume; got "
            f"{p.shape[1]}."
        )
    if not (np.issubdtype(p.dtype, np.integer) or np.issubdtype(p.dtype, np.floating)):
        raise ValueError(f"{name} must hold numbers; got dtype {p.dtype}.")
    if np.issubdtype(p.dtype, np.floating) and not np.isfinite(p).all():
        raise ValueError(f"{name} must be finite.")
    return p


def _voxel_indices(points, shape, name: str = "points") -> np.ndarray:
    """Round points to voxel indices and check that they lie inside ``shape``."""
    p = _as_points(points, len(shape), name)
    idx = np.rint(p).astype(np.intp) if np.issubdtype(p.dtype, np.floating) else p.astype(np.intp)
    if idx.size and ((idx < 0).any() or (idx >= np.asarray(shape)).any()):
        raise ValueError(f"{name} must lie inside the volume of shape {tuple(shape)}.")
    return idx


def radius_at(points, mask, spacing=None) -> np.ndarray:
    """Vessel radius at centerline points, from the mask's Euclidean distance transform.

    The radius at a point is the distance (physical units,
    :func:`scipy.ndimage.distance_transform_edt` with ``sampling=spacing``) from the
    point's voxel to the nearest background voxel. On a digitised tube of radius ``r``
    this reads ``r`` up to about half a voxel too large (the nearest background voxel
    centre lies just outside the surface). The array border does not count as
    background: a vessel leaving the volume keeps its full radius up to the border.

    Parameters
    ----------
    points : (K, ndim) array_like of int or float
        Voxel coordinates (rounded to the nearest voxel).
    mask : (M, N) or (P, M, N) array_like of bool or {0, 1}
        Vessel mask.
    spacing : float or sequence of float, optional
        Physical voxel size per axis, in array order. Default: 1.

    Returns
    -------
    radius : (K,) ndarray of float64
        0 for points outside the mask.

    Raises
    ------
    ValueError
        If ``mask`` is not binary 2D/3D, ``points`` has the wrong shape or lies outside
        the volume, or ``spacing`` is invalid.

    Examples
    --------
    >>> import numpy as np
    >>> zz, yy = np.mgrid[:11, :11]
    >>> tube = np.broadcast_to(((zz - 5) ** 2 + (yy - 5) ** 2 <= 9)[..., None], (11, 11, 20))
    >>> radius_at([[5, 5, 10], [5, 7, 10], [0, 0, 0]], tube).round(3).tolist()
    [3.162, 1.414, 0.0]
    """
    m = _as_binary_mask(mask, "mask")
    sp = _spacing_array(spacing, m.ndim)
    idx = _voxel_indices(points, m.shape)
    out = np.zeros(len(idx))
    box = _bounding_box(m)
    if box is None or not len(idx):
        return out
    # One voxel of background around the mask's bounding box is all the EDT needs.
    box = tuple(
        slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, m.shape, strict=True)
    )
    edt = ndi.distance_transform_edt(m[box], sampling=sp)
    start = np.array([s.start for s in box])
    stop = np.array([s.stop for s in box])
    inside = np.all((idx >= start) & (idx < stop), axis=1)
    local = idx[inside] - start
    out[inside] = edt[tuple(local.T)]
    return out
