"""Vessel trees from centerline points: source detection, multi-source Dijkstra, labels.

The reconstruction follows TopNet's test-time procedure (Keshwani et al., MICCAI 2020):

1. centre voxels are found on the predicted distance-to-centerline map, masked by the
   vessel prediction (:func:`napari_topo.trees.graph.centerline_points_nms`);
2. two centre voxels ``i, j`` closer than ``neighbourhood`` voxels are joined by an edge
   if their embeddings agree, ``||x_i - x_j|| <= embedding_threshold``; the edge weight
   is the Euclidean length of the segment in physical units (:func:`reconstruct_trees`);
3. a multi-source Dijkstra from the tree roots (:func:`detect_sources`, or given)
   assigns every centre voxel to the root it is closest to along the graph;
4. the tree ids are spread from the centre voxels to the whole vessel mask
   (:func:`propagate_labels`).

Without an embedding (any non-TopNet model) the same machinery runs on the hard
skeleton of the mask (:func:`trees_from_skeleton`). :func:`label_switches` counts the
abrupt label changes along vessels that metric learning is meant to remove.

The graph work is done with :mod:`scipy.spatial` (``cKDTree.query_pairs``) and
:mod:`scipy.sparse.csgraph` (one multi-source ``dijkstra`` call), which handle 10^5
points in well under a second; networkx is used only for the optional graph view of a
result and :func:`label_switches`, and imported there (a plain import costs 0.3 s, and
much more on a loaded machine, on the GUI thread of the Tree editor dock). Nothing here
imports Qt or torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from numbers import Integral, Real
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.spatial import cKDTree

from napari_topo.topology.metrics import _as_labels, _spacing_array
from napari_topo.topology.skeleton import _as_binary_mask, _bounding_box, skeletonize
from napari_topo.trees.graph import _as_points, _voxel_indices, radius_at

if TYPE_CHECKING:
    import networkx as nx

__all__ = [
    "CoincidingSourcesError",
    "TreeResult",
    "detect_sources",
    "label_switches",
    "propagate_labels",
    "reconstruct_trees",
    "trees_from_skeleton",
]

class CoincidingSourcesError(ValueError):
    """Two tree roots landed on one centerline point (coordinates snap to the nearest).

    Attributes
    ----------
    indices : list of int
        The point index each root landed on, in the roots' order: roots ``j`` and ``k``
        coincide where ``indices[j] == indices[k]``.
    """

    def __init__(self, message: str, indices):
        super().__init__(message)
        self.indices = [int(i) for i in indices]

    def first_pair(self) -> tuple[int, int]:
        """0-based positions ``(j, k)``, ``j < k``, of the first two roots that coincide."""
        for k, i in enumerate(self.indices):
            if i in self.indices[:k]:
                return self.indices.index(i), k
        raise ValueError("no two roots coincide")


#: Link distance (voxels) that joins exactly the 26-neighbours of a voxel (8 in 2D).
NEIGHBOURS_26 = math.sqrt(3.0) + 1e-6


# --------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TreeResult:
    """Trees reconstructed on a set of centerline points.

    Attributes
    ----------
    labels : (M,) ndarray of int32
        Tree id per point: ``k + 1`` for the tree grown from ``sources[k]``, 0 for points
        no source reaches.
    sources : (K,) ndarray of intp
        Point indices of the tree roots; ``sources[k]`` is the root of tree ``k + 1``.
    points : (M, ndim) ndarray
        The centerline points, voxel coordinates ``(z, y, x)``.
    distance : (M,) ndarray of float64
        Geodesic distance (physical units, along kept edges) from each point to the root
        of its tree; ``inf`` where unreached.
    predecessors : (M,) ndarray of intp
        Parent of each point in the shortest-path forest, -1 for roots and unreached
        points. Following it from a point walks back to its root; a point's subtree is
        every point whose walk passes through it.
    adjacency : (M, M) scipy.sparse.csr_matrix of float64
        Symmetric matrix of the kept edges, weighted by Euclidean length (physical).
    spacing : tuple of float
        Physical voxel size used for the lengths.
    """

    labels: np.ndarray
    sources: np.ndarray
    points: np.ndarray
    distance: np.ndarray
    predecessors: np.ndarray
    adjacency: sparse.csr_matrix
    spacing: tuple[float, ...]

    @property
    def n_trees(self) -> int:
        """Number of trees (sources)."""
        return int(len(self.sources))

    @cached_property
    def graph(self) -> nx.Graph:
        """The kept edges as a networkx graph (built on first access).

        Nodes are point indices with attributes ``coord`` (tuple), ``label`` (tree id)
        and ``distance`` (geodesic distance to the root); edges carry ``length``
        (physical units). ``graph.graph["sources"]`` lists the root indices.
        """
        import networkx as nx  # imported on use: a GUI dock that never asks pays nothing

        g = nx.Graph(sources=self.sources.tolist(), spacing=self.spacing)
        coords = [tuple(c) for c in self.points.tolist()]
        g.add_nodes_from(
            (i, {"coord": c, "label": lab, "distance": d})
            for i, (c, lab, d) in enumerate(
                zip(coords, self.labels.tolist(), self.distance.tolist(), strict=True)
            )
        )
        up = sparse.triu(self.adjacency, k=1).tocoo()
        g.add_edges_from(
            (i, j, {"length": w})
            for i, j, w in zip(up.row.tolist(), up.col.tolist(), up.data.tolist(), strict=True)
        )
        return g

    def to_volume(self, mask, *, per_component: bool = False) -> np.ndarray:
        """Tree labels spread over ``mask``: :func:`propagate_labels` with this result."""
        return propagate_labels(
            self.labels, self.points, mask, spacing=self.spacing, per_component=per_component
        )


# --------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------
def _positive(value, name: str, *, allow_zero: bool = False) -> float:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, Real)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}.")
    return float(value)


def _per_point(values, m: int, name: str) -> np.ndarray:
    v = np.asarray(values)
    if v.shape != (m,):
        raise ValueError(f"{name} must have shape ({m},), one value per point; got {v.shape}.")
    if not (np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.floating)):
        raise ValueError(f"{name} must hold numbers; got dtype {v.dtype}.")
    return v


def _check_shape(shape, ndim: int) -> np.ndarray:
    try:
        s = tuple(shape)
    except TypeError:
        s = None
    if (
        s is None
        or len(s) != ndim
        or not all(isinstance(v, Integral) and not isinstance(v, bool) and v > 0 for v in s)
    ):
        raise ValueError(f"shape must be {ndim} positive integers (one per axis); got {shape!r}.")
    return np.asarray(s, dtype=np.int64)


def _link(points: np.ndarray, r: float) -> np.ndarray:
    """(E, 2) index pairs ``i < j`` of points closer than ``r`` (voxels)."""
    if len(points) < 2:
        return np.zeros((0, 2), dtype=np.intp)
    tree = cKDTree(points, balanced_tree=False, compact_nodes=False)
    return tree.query_pairs(r=r, output_type="ndarray").astype(np.intp, copy=False)


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component id per node of the graph given by ``pairs``."""
    adj = sparse.coo_matrix((np.ones(len(pairs), bool), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(adj, directed=False)[1]


def _first_per_group(order: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Entries of ``order`` that are the first of their ``group[entry]``, in order."""
    _, first = np.unique(group[order], return_index=True)
    return order[np.sort(first)]


# --------------------------------------------------------------------------------------
# source detection
# --------------------------------------------------------------------------------------
_MIN_REACH = 4.0  # voxels: smallest neighbourhood for a local vessel direction
_MIN_ALIGNMENT = 0.5  # |cos| of the angle between vessel and face normal: at most 60 deg


def _alignment(p: np.ndarray, idx: np.ndarray, reach: float, sp: np.ndarray) -> np.ndarray:
    """|components| of the local vessel direction at points ``idx`` (NaN: too few points).

    The direction is the principal axis (in physical space) of the points within
    ``reach`` voxels.
    """
    out = np.full((idx.size, p.shape[1]), np.nan)
    around = cKDTree(p).query_ball_point(p[idx], r=reach)
    for k, nb in enumerate(around):
        if len(nb) < 3:
            continue
        x = (p[nb] - p[nb].mean(axis=0)) * sp
        out[k] = np.abs(np.linalg.svd(x, full_matrices=False)[2][0])
    return out


def detect_sources(
    points,
    radius,
    shape,
    n: int | None = None,
    border: float = 3,
    *,
    neighbourhood: float = 3.0,
    spacing=None,
) -> np.ndarray:
    """Likely tree roots: the thickest centerline points at the border of the volume.

    A vessel tree enters the imaged volume through its root, the thickest vessel of the
    tree, so roots are looked for among the *border points*: points whose vessel reaches
    a face of the volume and heads towards it. A point reaches a face when its distance
    to the face (voxels) is at most ``border`` plus its radius (converted to voxels
    along that axis); the radius allowance matters for skeletons, which stop about one
    radius short of the face a vessel leaves by. It heads towards the face when the
    local vessel direction (principal axis of the points within ``2 * neighbourhood``
    voxels, at least 4) makes at most 60 degrees with the face normal, which drops thick
    vessels that merely run along a face. Points with fewer than two others within that
    reach pass this test.

    Border points closer than ``neighbourhood`` voxels are grouped into *patches*, one
    per vessel crossing the border. Each patch proposes its best point by the score
    ``radius + max(0, radius - distance to the face)`` (physical units): thick, and
    reaching deep past the face, as a root that enters the volume does, rather than
    skimming it, as a thick branch turning near a face does (ties: the point closest to
    a face, then the lowest index). *Connected groups* are the connected components of
    all points linked at ``neighbourhood`` voxels (one per tree when trees are apart).
    Then

    * ``n`` None: one root per connected group, its best proposal. Groups that never
      reach the border get no root;
    * ``n`` given: the same per-group roots (best first), then the remaining proposals
      (best first), cut at ``n`` (fewer if there are fewer patches). So a group gets a
      second root only when more roots are wanted than there are groups, e.g. where a
      prediction merges two trees; a thick branch leaving the volume does not outrank
      the root of another tree.

    This is a heuristic: where the first branches are nearly as thick as the root and
    leave the volume too, it can pick a branch; pass known roots to
    :func:`reconstruct_trees` instead where you have them.

    Parameters
    ----------
    points : (M, ndim) array_like of int or float
        Centerline points, voxel coordinates.
    radius : (M,) array_like of float
        Vessel radius at each point in physical units (e.g. :func:`radius_at`).
    shape : sequence of int
        Shape of the volume the points live in.
    n : int, optional
        Number of roots wanted; default: one per connected group.
    border : float, optional
        Extra margin in voxels beyond the vessel radius, default 3.
    neighbourhood : float, optional
        Link distance in voxels for patches and groups (as in :func:`reconstruct_trees`).
    spacing : float or sequence of float, optional
        Physical voxel size, to turn ``radius`` into voxels. Default: 1.

    Returns
    -------
    (K,) ndarray of intp
        Point indices of the roots, in the order above. Empty if no point is near the
        border.

    Raises
    ------
    ValueError
        On badly shaped or non-finite input, points outside ``shape``, a negative radius,
        a negative ``n`` or ``border``, or a non-positive ``neighbourhood``.

    Examples
    --------
    >>> import numpy as np
    >>> pts = np.array([[10, 10, x] for x in range(10)] + [[z, 3, 15] for z in range(5)])
    >>> r = np.r_[np.linspace(3, 1, 10), np.full(5, 2.0)]
    >>> detect_sources(pts, r, (20, 20, 20), border=0).tolist()  # on faces x=0 and z=0
    [0, 10]
    >>> detect_sources(pts, r, (20, 20, 20), n=1, border=0).tolist()
    [0]
    >>> pts[10:] = [[1, 3, x] for x in range(11, 16)]  # runs along the face z=0
    >>> detect_sources(pts, r, (20, 20, 20), border=0).tolist()
    [0]
    """
    p = _as_points(points).astype(np.float64)
    m, ndim = p.shape
    rad = _per_point(radius, m, "radius").astype(np.float64)
    if not np.isfinite(rad).all() or (rad < 0).any():
        raise ValueError("radius must be finite and >= 0.")
    shp = _check_shape(shape, ndim)
    if m and ((p < -0.5).any() or (p >= shp - 0.5).any()):
        raise ValueError(f"points must lie inside the volume of shape {tuple(shp.tolist())}.")
    if n is not None and (isinstance(n, bool) or not isinstance(n, Integral) or n < 0):
        raise ValueError(f"n must be None or an integer >= 0, got {n!r}.")
    border = _positive(border, "border", allow_zero=True)
    neighbourhood = _positive(neighbourhood, "neighbourhood")
    sp = _spacing_array(spacing, ndim)
    empty = np.zeros(0, dtype=np.intp)
    if m == 0 or n == 0:
        return empty
    to_face = np.minimum(p, (shp - 1) - p)  # (M, ndim) voxels to the nearer face per axis
    near = (to_face - rad[:, None] / sp) <= border  # (M, ndim): near a face normal to axis
    cand = np.flatnonzero(near.any(axis=1))
    if cand.size:
        # keep vessels that run towards a face they are near, not along it
        align = _alignment(p, cand, max(2.0 * neighbourhood, _MIN_REACH), sp)
        heading = (near[cand] & (align >= _MIN_ALIGNMENT)).any(axis=1)
        cand = cand[heading | np.isnan(align[:, 0])]
    if cand.size == 0:
        return empty
    patch = _components(cand.size, _link(p[cand], neighbourhood))
    # score: radius plus how far the vessel reaches past the nearest face (physical)
    past = np.max(rad[cand, None] - to_face[cand] * sp, axis=1)
    score = rad[cand] + np.maximum(past, 0.0)
    # rank: best score, then closest to a face, then lowest index
    rank = np.lexsort((cand, to_face[cand].min(axis=1), -score))
    best = cand[_first_per_group(rank, patch)]
    group = _components(m, _link(p, neighbourhood))
    roots = _first_per_group(best, group)
    if n is not None:
        roots = np.concatenate([roots, best[~np.isin(best, roots)]])[:n]
    return roots.astype(np.intp)


# --------------------------------------------------------------------------------------
# reconstruction
# --------------------------------------------------------------------------------------
def _point_embedding(embedding, points: np.ndarray) -> np.ndarray:
    e = np.asarray(embedding)
    m, ndim = points.shape
    if not (np.issubdtype(e.dtype, np.floating) or np.issubdtype(e.dtype, np.integer)):
        raise ValueError(f"embedding must hold numbers; got dtype {e.dtype}.")
    if e.ndim == 2:
        if e.shape[0] != m:
            raise ValueError(
                f"embedding given per point must have shape (M, E) with M = {m} points; "
                f"got {e.shape}."
            )
    elif e.ndim == ndim + 1:  # a (E, z, y, x) embedding volume: sample at the points
        idx = _voxel_indices(points, e.shape[1:], "points (for the embedding volume)")
        e = np.moveaxis(e[(slice(None), *idx.T)], 0, -1)
    else:
        raise ValueError(
            f"embedding must be (M, E) per point or an (E, {', '.join('zyx'[-ndim:])}) "
            f"volume; got shape {e.shape}."
        )
    e = np.ascontiguousarray(e, dtype=np.float32 if e.dtype == np.float32 else np.float64)
    if not np.isfinite(e).all():
        raise ValueError("embedding must be finite (no NaN or inf).")
    return e


def _source_indices(sources, points: np.ndarray, spacing=None) -> np.ndarray:
    """Point indices of ``sources`` (indices, or coordinates snapped to the nearest point,
    nearest in physical units when ``spacing`` (per axis) is given: on a CT of 1.6 mm
    slices and 0.57 mm pixels a point one slice away is farther than one 2 pixels away).
    """
    s = np.asarray(sources)
    m, ndim = points.shape
    if s.ndim == 0:
        s = s.reshape(1)
    if s.ndim == 1:
        if s.size and not np.issubdtype(s.dtype, np.integer):
            raise ValueError(f"sources as a 1D array must be point indices (int); got {s.dtype}.")
        s = s.astype(np.intp)
        if s.size and (s.min() < 0 or s.max() >= m):
            raise ValueError(f"source indices must lie in [0, {m - 1}]; got {s.tolist()}.")
    elif s.ndim == 2 and s.shape[1] == ndim:
        # coordinates: snap each to its nearest point
        c = _as_points(s, ndim, "sources").astype(np.float64)
        if c.size and m == 0:
            raise ValueError("sources were given as coordinates but there are no points.")
        sp = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
        s = (
            cKDTree(points * sp).query(c * sp)[1].astype(np.intp)
            if len(c)
            else np.zeros(0, dtype=np.intp)
        )
    else:
        raise ValueError(
            f"sources must be (K,) point indices or (K, {ndim}) coordinates; got shape {s.shape}."
        )
    if np.unique(s).size != s.size:
        raise CoincidingSourcesError(
            f"sources must be distinct points; got point indices {s.tolist()} (coordinates "
            "snap to their nearest point, so two sources may have landed on the same one).",
            s,
        )
    return s


def _kept_edges(p: np.ndarray, neighbourhood: float, sp: np.ndarray, emb, threshold: float):
    pairs = _link(p, neighbourhood)
    i, j = pairs[:, 0], pairs[:, 1]
    if emb is not None and i.size:
        de = emb[i] - emb[j]
        keep = np.einsum("ij,ij->i", de, de) <= threshold * threshold
        i, j = i[keep], j[keep]
    step = (p[i] - p[j]) * sp
    w = np.sqrt(np.einsum("ij,ij->i", step, step))
    if i.size and not (w > 0).all():
        k = int(np.flatnonzero(w <= 0)[0])
        raise ValueError(f"points must be distinct; points {i[k]} and {j[k]} coincide.")
    return i, j, w


def reconstruct_trees(
    points,
    embedding=None,
    sources=None,
    *,
    neighbourhood: float = 3.0,
    embedding_threshold: float = 2.0,
    spacing=None,
) -> TreeResult:
    """Assign centerline points to trees by a multi-source Dijkstra on a point graph.

    Edges join points closer than ``neighbourhood`` voxels
    (:meth:`scipy.spatial.cKDTree.query_pairs`). With an ``embedding`` (TopNet's
    topology-distance output), an edge is kept only if the embeddings of its ends are
    within ``embedding_threshold`` (Euclidean), which cuts the edges between touching or
    merged trees. Edge weights are Euclidean lengths in physical units. One call to
    :func:`scipy.sparse.csgraph.dijkstra` with ``min_only=True`` then gives, for every
    point, its nearest source along the graph: tree id ``k + 1`` for ``sources[k]``.

    Parameters
    ----------
    points : (M, ndim) array_like of int or float
        Centerline points in voxel coordinates, distinct (e.g. from
        :func:`centerline_points_nms` or ``np.argwhere(skeleton)``).
    embedding : array_like, optional
        Either ``(M, E)``, one embedding vector per point, or an ``(E, Z, Y, X)``
        embedding volume sampled at the (rounded) points. None keeps every edge.
    sources : array_like, optional
        Tree roots: ``(K,)`` point indices, or ``(K, ndim)`` coordinates that are snapped
        to their nearest point, nearest in physical units of ``spacing`` (a single
        coordinate must be given as ``(1, ndim)``). None
        makes every connected component of the kept-edge graph a tree, largest first,
        rooted at its lowest-index point (use :func:`detect_sources` to find roots).
    neighbourhood : float, optional
        Largest edge length in voxels (default 3: all 26-neighbours and a bit more, which
        bridges one-voxel gaps). NMS points of a noisy prediction are sparser than a
        skeleton; use at least the NMS window size there.
    embedding_threshold : float, optional
        Largest embedding distance of a kept edge; 2 as in TopNet.
    spacing : float or sequence of float, optional
        Physical voxel size, for the edge weights. Default: 1.

    Returns
    -------
    TreeResult
        ``labels`` (tree id per point, 0 = unreached), ``sources``, the shortest-path
        forest (``distance``, ``predecessors``), the kept edges (``adjacency`` and the
        networkx view ``graph``) and ``to_volume(mask)``.

    Raises
    ------
    ValueError
        On badly shaped or non-finite points, embeddings or sources, coinciding points or
        sources, or non-positive ``neighbourhood`` / negative ``embedding_threshold``.

    Examples
    --------
    Two touching lines; the embedding tells them apart:

    >>> import numpy as np
    >>> pts = np.array([[0, 0, x] for x in range(6)] + [[0, 1, x] for x in range(6)])
    >>> emb = np.repeat([[0.0], [10.0]], 6, axis=0)
    >>> reconstruct_trees(pts, emb, sources=[0, 11]).labels.tolist()
    [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    >>> reconstruct_trees(pts, None, sources=[0, 11]).labels.tolist()  # no embedding
    [1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2]
    """
    p = _as_points(points).astype(np.float64)
    m, ndim = p.shape
    sp = _spacing_array(spacing, ndim)
    neighbourhood = _positive(neighbourhood, "neighbourhood")
    threshold = _positive(embedding_threshold, "embedding_threshold", allow_zero=True)
    emb = None if embedding is None else _point_embedding(embedding, p)
    src = None if sources is None else _source_indices(sources, p, sp)

    i, j, w = _kept_edges(p, neighbourhood, sp, emb, threshold)
    adj = sparse.coo_matrix((np.r_[w, w], (np.r_[i, j], np.r_[j, i])), shape=(m, m)).tocsr()

    if src is None and m == 0:
        src = np.zeros(0, dtype=np.intp)
    elif src is None:  # one tree per connected component, largest first
        comp = connected_components(adj, directed=False)[1]
        sizes = np.bincount(comp)
        first = np.unique(comp, return_index=True)[1]  # lowest point index per component
        src = first[np.argsort(-sizes, kind="stable")].astype(np.intp)

    labels = np.zeros(m, dtype=np.int32)
    distance = np.full(m, np.inf)
    predecessors = np.full(m, -1, dtype=np.intp)
    if src.size:
        # the matrix is symmetric, so the directed search is the undirected one
        dist, pred, nearest = dijkstra(
            adj, directed=True, indices=src, min_only=True, return_predecessors=True
        )
        reached = nearest >= 0
        tree_of = np.zeros(m, dtype=np.int32)
        tree_of[src] = np.arange(1, src.size + 1, dtype=np.int32)
        labels[reached] = tree_of[nearest[reached]]
        distance = np.where(reached, dist, np.inf)
        predecessors = np.where(pred >= 0, pred, -1).astype(np.intp)
    return TreeResult(
        labels=labels,
        sources=src,
        points=np.asarray(points).copy(),
        distance=distance,
        predecessors=predecessors,
        adjacency=adj,
        spacing=tuple(float(s) for s in sp),
    )


# --------------------------------------------------------------------------------------
# labels on the volume
# --------------------------------------------------------------------------------------
def _nearest_seed_labels(region: np.ndarray, seed_idx, seed_lab, sp) -> np.ndarray:
    """Label of the nearest seed at every voxel of bool ``region`` (0 elsewhere)."""
    seeds = np.zeros(region.shape, dtype=np.int32)
    seeds[tuple(seed_idx.T)] = seed_lab
    nearest = ndi.distance_transform_edt(
        seeds == 0, sampling=sp, return_distances=False, return_indices=True
    )
    return np.where(region, seeds[tuple(nearest)], 0)


def propagate_labels(
    point_labels, points, mask, *, spacing=None, per_component: bool = False
) -> np.ndarray:
    """Spread tree labels from centerline points to every voxel of a vessel mask.

    Every voxel of ``mask`` gets the label of the nearest labelled point (Euclidean
    distance in physical units, straight line, through
    :func:`scipy.ndimage.distance_transform_edt` with ``return_indices=True`` on a seed
    volume). Points labelled 0 (unreached) are not seeds. With ``per_component``, a voxel
    only takes labels from points in its own connected component of the mask
    (26-connected in 3D, 8 in 2D) and components without a labelled point stay 0;
    otherwise labels may cross background gaps.

    Parameters
    ----------
    point_labels : (M,) array_like of int
        Tree id per point, 0 = none (e.g. ``TreeResult.labels``).
    points : (M, ndim) array_like of int or float
        Point voxel coordinates (rounded), inside the volume.
    mask : (M, N) or (P, M, N) array_like of bool or {0, 1}
        Vessel mask to label.
    spacing : float or sequence of float, optional
        Physical voxel size per axis. Default: 1.
    per_component : bool, optional
        Keep labels inside the connected component of the mask they start in.

    Returns
    -------
    labels : ndarray of int32, shape of ``mask``
        0 outside the mask (and where no seed applies).

    Raises
    ------
    ValueError
        On shape mismatches, negative or non-integer labels, points outside the volume,
        a non-binary mask or bad spacing.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((1, 1, 8), bool); mask[..., 1:7] = True
    >>> propagate_labels([1, 2], [[0, 0, 1], [0, 0, 6]], mask).ravel().tolist()
    [0, 1, 1, 1, 2, 2, 2, 0]
    """
    m = _as_binary_mask(mask, "mask")
    sp = _spacing_array(spacing, m.ndim)
    idx = _voxel_indices(points, m.shape)
    lab = _per_point(point_labels, len(idx), "point_labels")
    if lab.size and (not np.issubdtype(lab.dtype, np.integer) or lab.min() < 0):
        raise ValueError("point_labels must be non-negative integers (0 = unlabelled).")
    out = np.zeros(m.shape, dtype=np.int32)
    seed = lab > 0
    seed_idx, seed_lab = idx[seed], lab[seed].astype(np.int32)
    box = _bounding_box(m)
    if box is None or seed_idx.size == 0:
        return out

    if per_component:
        comp, _ = ndi.label(m, structure=np.ones((3,) * m.ndim, dtype=bool))
        boxes = ndi.find_objects(comp)
        seed_comp = comp[tuple(seed_idx.T)]
        for c in np.unique(seed_comp[seed_comp > 0]):
            cb = boxes[c - 1]
            start = np.array([s.start for s in cb])
            sel = seed_comp == c
            region = comp[cb] == c
            filled = _nearest_seed_labels(region, seed_idx[sel] - start, seed_lab[sel], sp)
            out[cb][region] = filled[region]
        return out

    # the bounding box of the mask and the seeds holds every nearest seed
    lo = np.minimum([s.start for s in box], seed_idx.min(axis=0))
    hi = np.maximum([s.stop for s in box], seed_idx.max(axis=0) + 1)
    cb = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    out[cb] = _nearest_seed_labels(m[cb], seed_idx - lo, seed_lab, sp)
    return out


# --------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------
def label_switches(pred_trees, gt_graph) -> int:
    """Number of abrupt tree-label changes along ground-truth vessels.

    Counts the edges of a ground-truth centerline graph whose two end voxels carry
    different non-zero predicted labels: the "abrupt change in vessel labels along the
    vascular tree" of the TopNet paper. Label ids need no matching to ground truth,
    since any change along an edge is a switch whatever the ids. Edges with a 0 (missed)
    end are not switches; misses are scored by tree accuracy and recall instead. A
    correct prediction scores 0.

    Parameters
    ----------
    pred_trees : (M, N) or (P, M, N) array_like of int
        Predicted tree labels, 0 = background.
    gt_graph : networkx.Graph
        Centerline graph whose nodes are voxel index tuples ``(z, y, x)``, with edges
        inside one tree (e.g. ``SyntheticVessels.graph`` or :func:`skeleton_graph`).

    Returns
    -------
    int

    Raises
    ------
    ValueError
        If ``pred_trees`` is not a non-negative label volume or the graph's nodes are
        not voxel tuples inside it.

    Examples
    --------
    >>> import numpy as np, networkx as nx
    >>> g = nx.path_graph([(0, 0, x) for x in range(5)])
    >>> pred = np.array([[[1, 1, 2, 2, 0]]])
    >>> label_switches(pred, g)
    1
    """
    import networkx as nx

    pl = _as_labels(pred_trees, "pred_trees")
    if not isinstance(gt_graph, nx.Graph):
        raise ValueError(f"gt_graph must be a networkx graph; got {type(gt_graph).__name__}.")
    if gt_graph.number_of_edges() == 0:
        return 0
    try:
        ends = np.array(list(gt_graph.edges()), dtype=np.int64)
    except (TypeError, ValueError):
        ends = None
    if ends is None or ends.ndim != 3 or ends.shape[2] != pl.ndim:
        raise ValueError(
            f"gt_graph nodes must be voxel index tuples with {pl.ndim} integers, like "
            "SyntheticVessels.graph."
        )
    if (ends < 0).any() or (ends >= np.asarray(pl.shape)).any():
        raise ValueError(f"gt_graph nodes must lie inside pred_trees of shape {pl.shape}.")
    a = pl[tuple(ends[:, 0].T)]
    b = pl[tuple(ends[:, 1].T)]
    return int(np.count_nonzero((a != b) & (a > 0) & (b > 0)))


# --------------------------------------------------------------------------------------
# baseline without embedding
# --------------------------------------------------------------------------------------
def _attach_pieces(xyz: np.ndarray, labels: np.ndarray, comp: np.ndarray) -> np.ndarray:
    """Label every unlabelled connected piece by its smallest gap to labelled points.

    Prim-like: repeatedly the unlabelled piece with the smallest straight-line gap to
    any labelled point takes that point's label and becomes labelled itself. Each step
    queries the remaining points against the newly labelled piece only, so the cost is
    about one nearest-neighbour query per point per piece it could attach to.
    """
    labels = labels.copy()
    todo = np.flatnonzero(labels == 0)
    done = np.flatnonzero(labels > 0)
    best_d, best_j = cKDTree(xyz[done]).query(xyz[todo])
    best_lab = labels[done][best_j]
    pieces = comp[todo]
    while todo.size:
        k = int(np.argmin(best_d))
        piece = pieces[k]
        members = pieces == piece
        labels[todo[members]] = best_lab[k]
        new_pts = xyz[todo[members]]
        keep = ~members
        todo, pieces = todo[keep], pieces[keep]
        best_d, best_lab = best_d[keep], best_lab[keep]
        if todo.size:
            d, _ = cKDTree(new_pts).query(xyz[todo])
            closer = d < best_d
            best_d[closer] = d[closer]
            best_lab[closer] = labels[comp == piece][0]
    return labels


def trees_from_skeleton(
    mask, sources=None, spacing=None, *, embedding=None, embedding_threshold: float = 2.0
) -> TreeResult:
    """Tree reconstruction on the skeleton graph of a hard segmentation.

    The baseline for models that only predict a mask, and (with ``embedding``) the
    default for TopNet: the mask's skeleton
    (:func:`napari_topo.topology.skeleton.skeletonize`) becomes a 26-neighbour point
    graph and :func:`reconstruct_trees` runs its multi-source Dijkstra on it. Roots are
    the given ``sources`` or, if None, :func:`detect_sources` with one root per connected
    piece of the skeleton that reaches the border; when no piece reaches it (a region of
    interest inside the body), every connected piece is a tree of its own. Skeleton
    pieces that no root reaches along the graph (pieces cut off from their tree by a gap
    in the mask, or inner pieces) are attached, as wholes, across the smallest gap: the
    piece nearest to an already labelled point (straight-line, physical units) takes that
    point's label, then the next, as in Prim's algorithm, so a vessel broken into several pieces
    follows its own tree rather than the nearest root. Their ``distance`` stays ``inf``
    and ``predecessors`` -1.

    Parameters
    ----------
    mask : (M, N) or (P, M, N) array_like of bool or {0, 1}
        Vessel mask.
    sources : (K, ndim) array_like, optional
        Root coordinates (voxels), each snapped to its nearest skeleton voxel (in
        physical units of ``spacing``); row ``k``
        becomes tree ``k + 1``. Default: detected.
    spacing : float or sequence of float, optional
        Physical voxel size per axis. Default: 1.
    embedding : (E, Z, Y, X) array_like, optional
        TopNet's embedding: a skeleton edge is kept only where the embeddings of its
        ends are within ``embedding_threshold`` (as in :func:`reconstruct_trees`), which
        cuts the skeleton where two trees touch.
    embedding_threshold : float, optional
        Largest embedding distance of a kept edge.

    Returns
    -------
    TreeResult
        On the skeleton voxels (``points``); ``result.to_volume(mask)`` gives the label
        volume.

    Raises
    ------
    ValueError
        On a non-binary mask, bad spacing, or sources that are not ``(K, ndim)``
        coordinates or snap to the same skeleton voxel.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((9, 9, 20), bool)
    >>> mask[1:4, 1:4, :] = True; mask[5:8, 5:8, :] = True  # two separate tubes
    >>> res = trees_from_skeleton(mask, sources=[[2, 2, 0], [6, 6, 19]])
    >>> vol = res.to_volume(mask)
    >>> int(vol[2, 2, 10]), int(vol[6, 6, 10]), int(vol[0, 0, 0])
    (1, 2, 0)
    """
    m = _as_binary_mask(mask, "mask")
    sp = _spacing_array(spacing, m.ndim)
    if sources is not None:
        s = np.asarray(sources)
        if s.ndim != 2 or s.shape[1] != m.ndim:
            raise ValueError(
                f"sources must be a (K, {m.ndim}) array of voxel coordinates; got shape {s.shape}."
            )
    points = np.argwhere(skeletonize(m))
    if sources is None:
        src = detect_sources(
            points, radius_at(points, m, sp), m.shape, neighbourhood=NEIGHBOURS_26, spacing=sp
        )
        if len(points) and not len(src):
            # no vessel reaches the volume's border (a region of interest inside the body,
            # e.g. a liver): one tree per connected piece, largest first
            src = None
    elif len(points) == 0:
        raise ValueError("sources were given but the mask is empty (no skeleton to root).")
    else:
        src = sources
    res = reconstruct_trees(
        points,
        None if embedding is None or len(points) == 0 else embedding,
        src,
        neighbourhood=NEIGHBOURS_26,
        embedding_threshold=embedding_threshold,
        spacing=sp,
    )
    if res.n_trees == 0 or not (res.labels == 0).any():
        return res
    comp = connected_components(res.adjacency, directed=False)[1]
    labels = _attach_pieces(points * sp, res.labels, comp)
    return dataclasses.replace(res, labels=labels)
