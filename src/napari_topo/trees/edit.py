"""Manual correction of vessel trees: branches, subtrees, undoable edits.

A :class:`~napari_topo.trees.reconstruct.TreeResult` assigns every centerline point to
a tree, and its ``to_volume(mask)`` spreads those ids over the vessel mask. When the
assignment is wrong (a branch given to the neighbouring tree, two pieces of one tree
kept apart), a user clicks a vessel and gives it, or everything downstream of it, to
another tree. This module does that bookkeeping without Qt:

* :func:`centerline_forest` turns the point graph into a forest that follows the
  centerline, rooted at the tree sources;
* :func:`tree_branches` cuts that forest into :class:`Branch` es, runs of points between
  roots, junctions and tips; :func:`subtree` lists everything downstream of a point;
* :class:`TreeEditor` finds the branch under a clicked voxel, reassigns branches or
  subtrees, merges trees, and keeps undo/redo stacks of :class:`Delta` s that store
  only what changed; :meth:`TreeEditor.repartition` re-runs the multi-source
  partition from moved, added or deleted roots as one more undoable edit, and
  :meth:`TreeEditor.from_labels` builds an editor for any label volume (e.g. painted by
  hand), computing its skeleton and keeping its labels.

Why not ``TreeResult.predecessors``? That is the shortest-path forest of the
multi-source Dijkstra, and with a neighbourhood of several voxels (TopNet's points are
joined up to 5.5 voxels apart) a shortest path takes the longest straight hops it can:
most points hang directly off a point a few voxels upstream and the forest is a bushy
star, not a vessel. A minimum spanning tree of the same kept edges joins each point to
its nearest neighbours instead and follows the centerline like a skeleton does. Edges
between points of different trees are left out, so each tree stays its own piece.

The label volume follows one rule: every mask voxel takes the tree id of its nearest
centerline point (Euclidean, physical units, the same nearest-seed search as
:func:`~napari_topo.trees.reconstruct.propagate_labels`). The nearest point of every
voxel is found once, on the first edit, so an edit rewrites exactly the voxels of the
points it changes. When every point carries a tree id, the edited volume is therefore
bit for bit ``propagate_labels(editor.labels, points, mask)``.

Nothing here imports Qt or napari.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import (
    breadth_first_order,
    connected_components,
    dijkstra,
    minimum_spanning_tree,
)
from scipy.spatial import cKDTree

from napari_topo.topology.metrics import _spacing_array
from napari_topo.topology.skeleton import _bounding_box, skeletonize
from napari_topo.trees.graph import _voxel_indices, radius_at
from napari_topo.trees.reconstruct import (
    NEIGHBOURS_26,
    TreeResult,
    _attach_pieces,
    _nearest_seed_labels,
    _source_indices,
    detect_sources,
    reconstruct_trees,
)

__all__ = [
    "Branch",
    "Delta",
    "TreeEditor",
    "centerline_forest",
    "subtree",
    "tree_branches",
]


# --------------------------------------------------------------------------------------
# forest and branches
# --------------------------------------------------------------------------------------
def _check_result(result) -> TreeResult:
    if not isinstance(result, TreeResult):
        raise ValueError(
            f"expected a TreeResult (from reconstruct_trees or trees_from_skeleton); got "
            f"{type(result).__name__}."
        )
    return result


def _forest(result: TreeResult) -> tuple[np.ndarray, np.ndarray]:
    """Parents (-1 for roots) and a parents-first order of all points."""
    m = len(result.points)
    if m == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    lab = np.asarray(result.labels)
    adj = result.adjacency.tocoo()
    keep = (adj.row < adj.col) & (lab[adj.row] == lab[adj.col])
    within = sparse.coo_matrix(
        (adj.data[keep], (adj.row[keep], adj.col[keep])), shape=(m, m)
    ).tocsr()
    mst = minimum_spanning_tree(within)
    sym = (mst + mst.T).tocoo()
    # roots: the sources, then the lowest-index point of every piece without one
    comp = sparse.csgraph.connected_components(sym, directed=False)[1]
    root_of = np.full(comp.max() + 1, -1, dtype=np.intp)
    src = np.asarray(result.sources, dtype=np.intp)
    root_of[comp[src[::-1]]] = src[::-1]  # reversed: the first source of a piece wins
    first = np.unique(comp, return_index=True)[1]
    root_of = np.where(root_of >= 0, root_of, first)
    roots = np.sort(root_of)
    # one BFS from a virtual node m that points at every root
    rows = np.r_[sym.row, np.full(roots.size, m)]
    cols = np.r_[sym.col, roots]
    g = sparse.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(m + 1, m + 1)).tocsr()
    order, pred = breadth_first_order(g, m, directed=True, return_predecessors=True)
    parents = pred[:m].astype(np.intp)
    parents[(parents == m) | (parents < 0)] = -1
    return parents, order[1:].astype(np.intp)


def centerline_forest(result) -> np.ndarray:
    """Parent of every centerline point in a forest that follows the vessels.

    The forest is the minimum spanning forest (edge weight: physical length) of the
    result's kept edges between points of the same tree, each piece rooted at its tree's
    source, or at its lowest-index point where it holds no source (points no source
    reached, or pieces cut off from their tree). See the module notes for why this, not
    ``result.predecessors``, is the tree structure used for branches, subtrees and SWC.

    Parameters
    ----------
    result : TreeResult

    Returns
    -------
    parents : (M,) ndarray of intp
        Parent point index, -1 for roots.

    Raises
    ------
    ValueError
        If ``result`` is not a TreeResult.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_topo.trees import reconstruct_trees
    >>> pts = np.array([[0, 0, x] for x in range(5)])
    >>> res = reconstruct_trees(pts, sources=[2])
    >>> centerline_forest(res).tolist()
    [1, 2, -1, 2, 3]
    """
    return _forest(_check_result(result))[0]


@dataclass(frozen=True, eq=False)
class Branch:
    """A run of centerline points between a root, a junction or a tip.

    Attributes
    ----------
    index : int
        Position in :func:`tree_branches`' list (and in ``TreeEditor.branches``).
    points : (L,) ndarray of intp
        Point indices, from upstream to downstream. The last point is a tip or a
        junction (the junction belongs to the branch that leads into it).
    upstream : int
        The point this branch hangs from (the junction or root just upstream of
        ``points[0]``); -1 for a branch that starts at a root.
    tree : int
        Tree id of the branch: the most common label among its points when the
        branch was made (0: unassigned).
    """

    index: int
    points: np.ndarray
    upstream: int
    tree: int

    def __len__(self) -> int:
        return int(self.points.size)

    def path(self, points) -> np.ndarray:
        """Coordinates of the branch from its upstream point on, ``(L or L+1, ndim)``."""
        ids = self.points if self.upstream < 0 else np.r_[self.upstream, self.points]
        return np.asarray(points)[ids]


def _majority(labels: np.ndarray) -> int:
    if labels.size == 0:
        return 0
    vals, counts = np.unique(labels, return_counts=True)
    return int(vals[np.argmax(counts)])


def _branch_ids(parents: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Branch id per point and the first point of every branch, numbered in BFS order."""
    m = parents.size
    n_children = np.bincount(parents[parents >= 0], minlength=m)
    safe = np.where(parents >= 0, parents, 0)
    start = (parents < 0) | (n_children[safe] != 1)
    # head of each point's branch: follow parents until a branch start (pointer jumping)
    head = np.where(start, np.arange(m), parents)
    while True:
        nxt = head[head]
        if np.array_equal(nxt, head):
            break
        head = nxt
    firsts = order[start[order]]  # branch starts in BFS order
    number = np.full(m, -1, dtype=np.intp)
    number[firsts] = np.arange(firsts.size)
    return number[head], firsts


def tree_branches(result, labels=None) -> list[Branch]:
    """Cut the :func:`centerline_forest` of a result into branches.

    A branch starts at a root, or at a child of a point with two or more children, and
    runs downstream while each point has exactly one child; it ends at a tip or at a
    junction. Every point belongs to exactly one branch.

    Parameters
    ----------
    result : TreeResult
    labels : (M,) array_like of int, optional
        Tree id per point for ``Branch.tree``; default ``result.labels``.

    Returns
    -------
    list of Branch
        Ordered by a breadth-first walk from the roots (root branches first).

    Raises
    ------
    ValueError
        If ``result`` is not a TreeResult or ``labels`` has the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_topo.trees import reconstruct_trees
    >>> pts = np.array([[0, 0, x] for x in range(4)] + [[0, 1, 3], [0, -1, 3]])
    >>> res = reconstruct_trees(pts + [0, 1, 0], sources=[0], neighbourhood=1.01)
    >>> [(b.points.tolist(), b.upstream) for b in tree_branches(res)]
    [([0, 1, 2, 3], -1), ([4], 3), ([5], 3)]
    """
    res = _check_result(result)
    parents, order = _forest(res)
    lab = _labels_or(res, labels)
    bid, firsts = _branch_ids(parents, order)
    return _make_branches(bid, firsts, parents, order, lab)


def _labels_or(res: TreeResult, labels) -> np.ndarray:
    if labels is None:
        return np.asarray(res.labels)
    lab = np.asarray(labels)
    if lab.shape != (len(res.points),) or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(
            f"labels must be ({len(res.points)},) integers, one per point; got "
            f"{lab.dtype} of shape {lab.shape}."
        )
    return lab


def _make_branches(bid, firsts, parents, order, lab) -> list[Branch]:
    # points grouped by branch, each group in BFS order = upstream to downstream
    ordered = order[np.argsort(bid[order], kind="stable")]
    bounds = np.r_[0, np.cumsum(np.bincount(bid, minlength=firsts.size))]
    out = []
    for k in range(firsts.size):
        pts = ordered[bounds[k] : bounds[k + 1]]
        out.append(Branch(k, pts, int(parents[pts[0]]), _majority(lab[pts])))
    return out


def _children_matrix(parents: np.ndarray) -> sparse.csr_matrix:
    m = parents.size
    child = np.flatnonzero(parents >= 0)
    return sparse.coo_matrix(
        (np.ones(child.size, dtype=np.int8), (parents[child], child)), shape=(m, m)
    ).tocsr()


def subtree(parents, point) -> np.ndarray:
    """Indices of ``point`` and every point downstream of it in a forest, sorted.

    Parameters
    ----------
    parents : (M,) array_like of int
        Parent per point, -1 for roots (e.g. :func:`centerline_forest`).
    point : int
        Index of the top of the subtree.

    Returns
    -------
    (K,) ndarray of intp

    Raises
    ------
    ValueError
        If ``parents`` is not a 1D integer array with values in [-1, M) or ``point`` is
        not an index into it.

    Examples
    --------
    >>> subtree([-1, 0, 1, 1, 0], 1).tolist()
    [1, 2, 3]
    """
    par = np.asarray(parents)
    if par.ndim != 1 or not np.issubdtype(par.dtype, np.integer):
        raise ValueError(f"parents must be a 1D integer array; got {par.dtype}{par.shape}.")
    if par.size and (par.min() < -1 or par.max() >= par.size):
        raise ValueError("parents must hold point indices or -1.")
    p = _point_index(point, par.size)
    return np.sort(
        breadth_first_order(_children_matrix(par.astype(np.intp)), p, directed=True)[0]
    ).astype(np.intp)


def _point_index(point, m: int) -> int:
    if isinstance(point, bool) or not isinstance(point, Integral) or not 0 <= point < m:
        raise ValueError(f"point must be an index in [0, {m - 1}]; got {point!r}.")
    return int(point)


# --------------------------------------------------------------------------------------
# deltas
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Delta:
    """One edit, as the entries it changes (nothing else is stored).

    Attributes
    ----------
    points : (P,) ndarray of intp
        Indices of the centerline points whose tree id changes.
    old_labels, new_labels : (P,) ndarray of int32
        Their tree ids before and after.
    voxels : (V,) ndarray of intp
        Flat (C order) indices into the label volume of the voxels that change; turn
        them into coordinates with ``numpy.unravel_index(delta.voxels, shape)``.
    old_values, new_values : (V,) ndarray
        Their values before and after, in the volume's dtype.
    description : str
        What the edit did, for an undo menu or a log.
    old_sources, new_sources : (K,) ndarray of intp or None
        Root point indices before and after, for an edit that moves the roots
        (:meth:`TreeEditor.repartition`); None for edits that keep them.
    """

    points: np.ndarray
    old_labels: np.ndarray
    new_labels: np.ndarray
    voxels: np.ndarray
    old_values: np.ndarray
    new_values: np.ndarray
    description: str = ""
    old_sources: np.ndarray | None = None
    new_sources: np.ndarray | None = None

    @property
    def size(self) -> int:
        """Number of stored entries: changed points plus changed voxels."""
        return int(self.points.size + self.voxels.size)

    @property
    def empty(self) -> bool:
        """True when the edit changes nothing (no point, no voxel, no root)."""
        return self.size == 0 and not self._moves_sources

    @property
    def _moves_sources(self) -> bool:
        return self.new_sources is not None and not np.array_equal(
            self.old_sources, self.new_sources
        )

    def inverse(self) -> Delta:
        """The edit that undoes this one."""
        return Delta(
            self.points,
            self.new_labels,
            self.old_labels,
            self.voxels,
            self.new_values,
            self.old_values,
            f"undo {self.description}",
            self.new_sources,
            self.old_sources,
        )


# --------------------------------------------------------------------------------------
# editor
# --------------------------------------------------------------------------------------
def _tree_id(value, name: str, dtype: np.dtype) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer tree id; got {value!r}.")
    if value > np.iinfo(dtype).max or value > np.iinfo(np.int32).max:
        raise ValueError(f"{name} = {value} does not fit the label volume's dtype {dtype}.")
    return int(value)


class TreeEditor:
    """Branch and subtree edits of a tree reconstruction, with undo and redo.

    Parameters
    ----------
    source : TreeResult or VesselAnalysis
        The reconstruction to edit. An object with ``result`` (a TreeResult) and
        ``trees`` / ``mask`` attributes, such as
        :class:`napari_topo.analysis.VesselAnalysis`, gives all three.
    trees : array_like of int, optional
        Tree label volume that goes with the result (``result.to_volume(mask)``);
        default ``source.trees``. Must cover every point.
    mask : array_like of bool, optional
        Vessel mask whose voxels follow their nearest point; default ``source.mask`` or
        ``trees > 0``.
    copy : bool, optional
        Edit a copy of ``trees`` (default). With False, ``trees`` must be a writable
        numpy array and is edited in place (e.g. the data of a napari Labels layer the
        plugin owns; call ``layer.refresh()`` after each edit).

    Attributes
    ----------
    labels : (M,) ndarray of int32
        Current tree id per point (a copy; the result is never modified).
    trees : ndarray
        Current label volume.
    parents : (M,) ndarray of intp
        :func:`centerline_forest` of the result.
    branches : tuple of Branch
        :func:`tree_branches` of the result (``Branch.tree`` as at the start; use
        :meth:`branch` for the current id).

    Notes
    -----
    Every edit goes through :meth:`apply`, which pushes its :class:`Delta` on the undo
    stack and clears the redo stack. Edits that change nothing are returned but not
    pushed. :meth:`undo` and :meth:`redo` write the stored old / new values back as they
    are, so undo restores the points and the volume bit for bit.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_topo.trees import reconstruct_trees
    >>> pts = np.array([[1, 1, x] for x in range(1, 9)])
    >>> mask = np.zeros((3, 3, 10), bool); mask[:, :, 1:9] = True
    >>> res = reconstruct_trees(pts, sources=[0])
    >>> ed = TreeEditor(res, res.to_volume(mask))
    >>> b = ed.branch_at((1, 1, 4))
    >>> d = ed.reassign(b, ed.new_tree_id())
    >>> np.unique(ed.trees).tolist(), d.size < mask.size
    ([0, 2], True)
    >>> _ = ed.undo(); np.unique(ed.trees).tolist()
    [0, 1]
    """

    def __init__(self, source, trees=None, *, mask=None, copy: bool = True):
        result = source if isinstance(source, TreeResult) else getattr(source, "result", None)
        if not isinstance(result, TreeResult):
            raise ValueError(
                "source must be a TreeResult or an object with a TreeResult `result` "
                f"(e.g. VesselAnalysis); got {type(source).__name__}."
            )
        if trees is None:
            trees = getattr(source, "trees", None)
            if trees is None:
                raise ValueError("trees (the label volume of the result) must be given.")
        if mask is None:
            mask = getattr(source, "mask", None)
        if copy:
            vol = np.array(trees)
        else:
            vol = trees
            if not isinstance(vol, np.ndarray) or not vol.flags.writeable:
                raise ValueError("copy=False needs trees to be a writable numpy array.")
        ndim = result.points.shape[1] if result.points.ndim == 2 else None
        if vol.ndim != ndim or not np.issubdtype(vol.dtype, np.integer):
            raise ValueError(
                f"trees must be a {ndim}D integer label volume to match the result's points; "
                f"got {vol.dtype} of shape {vol.shape}."
            )
        if mask is None:
            m = vol > 0
        else:
            m = np.asarray(mask)
            if m.shape != vol.shape:
                raise ValueError(f"mask must have the shape of trees {vol.shape}; got {m.shape}.")
            m = m.astype(bool, copy=False)
        self._idx = _voxel_indices(result.points, vol.shape)
        self._result = result
        self._source = source
        self.trees = vol
        self._mask = m
        self._sp = np.asarray(result.spacing, dtype=float)
        self.labels = np.asarray(result.labels, dtype=np.int32).copy()
        self._sources = np.asarray(result.sources, dtype=np.intp).copy()
        self.parents, self._order = _forest(result)
        bid, firsts = _branch_ids(self.parents, self._order)
        self._branch_of = bid
        self.branches = tuple(_make_branches(bid, firsts, self.parents, self._order, self.labels))
        self._children = None
        self._kd = None
        self._owner = None  # (starts, voxels sorted by nearest point), built on first edit
        self._undo: list[Delta] = []
        self._redo: list[Delta] = []

    @classmethod
    def from_labels(cls, trees, spacing=None, *, copy: bool = True) -> TreeEditor:
        """An editor for any tree label volume, e.g. one a user painted by hand.

        The centerline is the skeleton of ``trees > 0``
        (:func:`napari_topo.topology.skeleton.skeletonize`), joined into a 26-neighbour
        point graph as in :func:`~napari_topo.trees.reconstruct.trees_from_skeleton`.
        Every skeleton point takes the id of its voxel, so the existing labels are
        kept as they are (nothing in ``trees`` changes until an edit); each tree id gets
        one root, its thickest point at the volume border
        (:func:`~napari_topo.trees.reconstruct.detect_sources`), else its thickest point.

        Parameters
        ----------
        trees : (Y, X) or (Z, Y, X) array_like of int
            Tree label volume, 0 = background.
        spacing : float or sequence of float, optional
            Physical voxel size per axis. Default: 1.
        copy : bool, optional
            As in :class:`TreeEditor` (False: edit ``trees`` in place).

        Returns
        -------
        TreeEditor
            Built on a :class:`napari_topo.analysis.VesselAnalysis` (``method``
            ``"labels"``), so :meth:`to_analysis` and its exports work.

        Raises
        ------
        ValueError
            If ``trees`` is not a 2D/3D array of non-negative integers.

        Examples
        --------
        >>> import numpy as np
        >>> vol = np.zeros((9, 9, 20), np.int32)
        >>> vol[1:4, 1:4, :] = 3; vol[5:8, 5:8, :] = 1
        >>> ed = TreeEditor.from_labels(vol)
        >>> sorted(set(ed.labels.tolist())), bool((ed.trees == vol).all())
        ([1, 3], True)
        """
        from napari_topo.analysis import VesselAnalysis

        vol = np.array(trees) if copy else trees
        if not isinstance(vol, np.ndarray):
            vol = np.asarray(vol)
        if vol.ndim not in (2, 3) or not np.issubdtype(vol.dtype, np.integer):
            raise ValueError(
                "trees must be a 2D (y, x) or 3D (z, y, x) integer label volume; got "
                f"{vol.dtype} of shape {vol.shape}."
            )
        if vol.size and vol.min() < 0:
            raise ValueError("trees must hold non-negative ids (0 = background).")
        mask = vol > 0
        sp = _spacing_array(spacing, vol.ndim)
        skeleton = skeletonize(mask)
        points = np.argwhere(skeleton)
        radius = radius_at(points, mask, sp)
        labels = vol[tuple(points.T)].astype(np.int32)
        roots = []
        for tid in np.unique(labels[labels > 0]).tolist():
            own = np.flatnonzero(labels == tid)
            found = detect_sources(
                points[own], radius[own], vol.shape, n=1, neighbourhood=NEIGHBOURS_26, spacing=sp
            )
            roots.append(int(own[found[0]] if found.size else own[np.argmax(radius[own])]))
        res = reconstruct_trees(
            points,
            None,
            np.asarray(roots, dtype=np.intp),
            neighbourhood=NEIGHBOURS_26,
            spacing=sp,
        )
        res = dataclasses.replace(res, labels=labels)
        analysis = VesselAnalysis(
            mask=mask,
            result=res,
            trees=vol,
            radius=radius,
            spacing=tuple(sp.tolist()),
            method="labels",
            skeleton=skeleton,
        )
        return cls(analysis, vol, mask=mask, copy=False)

    # ---------------------------------------------------------------- state
    @property
    def result(self) -> TreeResult:
        """The result with the current point labels and roots (a new TreeResult).

        After :meth:`repartition` its ``sources`` are the new roots; ``distance`` and
        ``predecessors`` stay those of the original reconstruction.
        """
        return dataclasses.replace(
            self._result, labels=self.labels.copy(), sources=self._sources.copy()
        )

    @property
    def sources(self) -> np.ndarray:
        """Point indices of the current tree roots (a copy)."""
        return self._sources.copy()

    @property
    def points(self) -> np.ndarray:
        """Centerline point coordinates ``(M, ndim)`` (voxels; the result's, not a copy)."""
        return self._result.points

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def history(self) -> tuple[Delta, ...]:
        """The undo stack, oldest first."""
        return tuple(self._undo)

    def to_analysis(self, *, copy: bool = True):
        """The source analysis with the current labels and volume (``source.replace``).

        With ``copy=False`` the analysis shares the edited volume (no copy of a large
        array, e.g. to export the graph); later edits then show through it.

        Raises
        ------
        ValueError
            If the editor was built from a bare TreeResult.
        """
        replace = getattr(self._source, "replace", None)
        if replace is None:
            raise ValueError("the editor was not built from a VesselAnalysis.")
        return replace(result=self.result, trees=self.trees.copy() if copy else self.trees)

    def new_tree_id(self) -> int:
        """An id used by no point, no voxel and no source: one more than the largest."""
        top = max(
            int(self.labels.max(initial=0)),
            int(self.trees.max(initial=0)),
            self._result.n_trees,
        )
        return top + 1

    # ---------------------------------------------------------------- queries
    def branch(self, index) -> Branch:
        """Branch ``index`` with its current tree id."""
        if isinstance(index, Branch):
            index = index.index
        n = len(self.branches)
        if isinstance(index, bool) or not isinstance(index, Integral) or not 0 <= index < n:
            raise ValueError(f"branch must be a Branch or an index in [0, {n}); got {index!r}.")
        b = self.branches[int(index)]
        return dataclasses.replace(b, tree=_majority(self.labels[b.points]))

    @property
    def prepared(self) -> bool:
        """Whether the voxel ownership edits need is built (:meth:`prepare`, or a first
        edit)."""
        return self._owner is not None

    def prepare(self) -> TreeEditor:
        """Build now what the first click and the first edit would otherwise build.

        The voxel ownership (mask voxels grouped by nearest centerline point, one
        distance transform of the mask's bounding box) and the point k-d tree are made
        lazily; a GUI calls this in a worker thread right after building the editor, so
        neither runs on its GUI thread. Both depend only on what the editor was built
        with (the mask, the points, the spacing), never on edits, so an edit made while
        this runs is correct either way (it builds its own, with the same result).

        Returns
        -------
        TreeEditor
            ``self``.
        """
        self._owned()
        if self._kd is None and len(self._idx):
            self._kd = cKDTree(self._result.points * self._sp)
        return self

    def branch_at(self, voxel, max_distance: float | None = None) -> Branch | None:
        """The branch of the centerline point nearest to a voxel.

        Parameters
        ----------
        voxel : sequence of float
            Voxel coordinates ``(z, y, x)`` (data coordinates of a click; need not be
            integers or inside the mask).
        max_distance : float, optional
            Give up (return None) when the nearest point is farther than this, in
            physical units.

        Returns
        -------
        Branch or None
            With its current tree id; None if there are no points or none near enough.

        Raises
        ------
        ValueError
            If ``voxel`` is not ``ndim`` finite numbers or ``max_distance`` is negative.
        """
        ndim = self._idx.shape[1]
        v = np.asarray(voxel, dtype=float) if _is_numeric(voxel) else None
        if v is None or v.shape != (ndim,) or not np.isfinite(v).all():
            raise ValueError(f"voxel must be {ndim} finite coordinates; got {voxel!r}.")
        if max_distance is not None and (
            isinstance(max_distance, bool)
            or not isinstance(max_distance, Real)
            or not max_distance >= 0
        ):
            raise ValueError(f"max_distance must be None or >= 0; got {max_distance!r}.")
        if not len(self._idx):
            return None
        if self._kd is None:
            self._kd = cKDTree(self._result.points * self._sp)
        dist, point = self._kd.query(v * self._sp)
        if max_distance is not None and dist > max_distance:
            return None
        return self.branch(int(self._branch_of[point]))

    def points_of(self, branch, subtree: bool = False) -> np.ndarray:
        """Point indices of a branch (sorted), or of everything downstream of its start.

        ``subtree=True`` gives every point whose parent chain in the
        :func:`centerline_forest` passes through the branch's first point: the branch and
        all branches downstream of it. The junction it hangs from and its sibling
        branches are not included.
        """
        b = self.branch(branch)
        if not subtree:
            return np.sort(b.points)
        if self._children is None:
            self._children = _children_matrix(self.parents)
        top = int(b.points[0])
        return np.sort(breadth_first_order(self._children, top, directed=True)[0]).astype(np.intp)

    # ---------------------------------------------------------------- edits
    def reassign(self, branch, tree_id: int, *, subtree: bool = False, apply: bool = True):
        """Give a branch (or its whole subtree) to tree ``tree_id``.

        Parameters
        ----------
        branch : Branch or int
            A branch (e.g. from :meth:`branch_at`) or its index.
        tree_id : int
            Target tree id, >= 1; may be new (:meth:`new_tree_id`) to split a tree.
        subtree : bool, optional
            Also reassign everything downstream (:meth:`points_of`).
        apply : bool, optional
            Apply the edit (default); with False only compute it, e.g. for a preview,
            and apply it later with :meth:`apply`.

        Returns
        -------
        Delta
        """
        tid = _tree_id(tree_id, "tree_id", self.trees.dtype)
        pts = self.points_of(branch, subtree=subtree)
        b = self.branch(branch)
        what = "subtree" if subtree else "branch"
        delta = self._delta(pts, tid, None, f"{what} {b.index} -> tree {tid}")
        return self._maybe_apply(delta, apply)

    def merge_trees(self, a: int, b: int, *, apply: bool = True) -> Delta:
        """Merge tree ``b`` into tree ``a``: every point and voxel of ``b`` becomes ``a``.

        Ids are not renumbered (``b`` simply disappears).

        Raises
        ------
        ValueError
            If ``a`` or ``b`` is not a positive id, they are equal, or ``b`` labels no
            point and no voxel.
        """
        a = _tree_id(a, "a", self.trees.dtype)
        b = _tree_id(b, "b", self.trees.dtype)
        if a == b:
            raise ValueError(f"cannot merge tree {a} into itself.")
        pts = np.flatnonzero(self.labels == b)
        vox = np.flatnonzero(self.trees == b)
        if pts.size == 0 and vox.size == 0:
            raise ValueError(f"tree {b} labels no point and no voxel; nothing to merge.")
        return self._maybe_apply(self._delta(pts, a, vox, f"merge tree {b} into {a}"), apply)

    def repartition(self, sources, *, tree_ids=None, apply: bool = True) -> Delta:
        """Re-run the multi-source partition from new roots over the current graph.

        The roots are snapped to their nearest centerline point and one multi-source
        Dijkstra (:func:`scipy.sparse.csgraph.dijkstra`, ``min_only=True``) runs on the
        result's kept edges (``result.adjacency``: the same graph, embedding cuts
        included, that :func:`~napari_topo.trees.reconstruct.reconstruct_trees` used),
        so every point goes to the root nearest along the graph. Connected pieces that
        no root reaches are attached, as wholes, across the smallest straight-line gap
        to already labelled points (physical units), exactly as
        :func:`~napari_topo.trees.reconstruct.trees_from_skeleton` does, so re-running
        with unchanged roots changes nothing. Voxels follow their nearest point, as for
        every edit.

        Parameters
        ----------
        sources : (K, ndim) array_like of float, or (K,) array_like of int
            Root coordinates (voxels; e.g. the data of a Points layer) or point indices.
            Moving, adding or deleting rows moves, adds or deletes roots.
        tree_ids : (K,) array_like of int, optional
            Tree id per root. Entries <= 0 ask for a new id (one more than any used so
            far). Default: each root keeps the current id of the point it snaps to, so
            moving a root along its own tree keeps the tree's colour; a root on an
            unlabelled point, or on a tree another root already took, gets a new id.
        apply : bool, optional
            Apply (default) or only compute the edit.

        Returns
        -------
        Delta
            The points and voxels whose id changes, and the old and new roots; undo
            restores all three.

        Raises
        ------
        ValueError
            If ``sources`` is empty, badly shaped, not finite, or two roots snap to the
            same point; or ``tree_ids`` is not one integer per root, repeats an id or
            does not fit the volume's dtype.

        Examples
        --------
        >>> import numpy as np
        >>> from napari_topo.trees import reconstruct_trees
        >>> pts = np.array([[0, 0, x] for x in range(6)])
        >>> res = reconstruct_trees(pts, sources=[0])
        >>> ed = TreeEditor(res, res.to_volume(np.ones((1, 1, 6), bool)))
        >>> _ = ed.repartition([[0, 0, 0], [0, 0, 5]])
        >>> ed.labels.tolist(), ed.trees.ravel().tolist()
        ([1, 1, 1, 2, 2, 2], [1, 1, 1, 2, 2, 2])
        >>> _ = ed.undo(); ed.labels.tolist()
        [1, 1, 1, 1, 1, 1]
        """
        pts = np.asarray(self._result.points)
        m, ndim = len(pts), self._idx.shape[1]
        if m == 0:
            raise ValueError("there are no centerline points to partition.")
        s = np.asarray(sources)
        if s.ndim == 2 and s.shape[1] == ndim and s.size and not np.isfinite(s).all():
            raise ValueError("sources must be finite coordinates.")
        src = _source_indices(s, pts.astype(np.float64), self._sp)
        if src.size == 0:
            raise ValueError(
                f"sources must hold at least one root, as (K, {ndim}) coordinates or (K,) "
                "point indices; got none."
            )
        ids = self._root_ids(src, tree_ids)
        adj = self._result.adjacency
        _, _, nearest = dijkstra(
            adj, directed=True, indices=src, min_only=True, return_predecessors=True
        )
        tree_of = np.zeros(m, dtype=np.int32)
        tree_of[src] = ids
        labels = np.zeros(m, dtype=np.int32)
        reached = nearest >= 0
        labels[reached] = tree_of[nearest[reached]]
        if (~reached).any():  # pieces without a root: across the smallest gap, exactly
            # as trees_from_skeleton attaches them, so unchanged roots change nothing
            comp = connected_components(adj, directed=False)[1]
            labels = _attach_pieces(pts * self._sp, labels, comp)
        delta = self._delta_to(labels, f"re-partition from {src.size} sources")
        delta = dataclasses.replace(
            delta, old_sources=self._sources.copy(), new_sources=src.astype(np.intp)
        )
        return self._maybe_apply(delta, apply)

    def _root_ids(self, src: np.ndarray, tree_ids) -> np.ndarray:
        dtype = self.trees.dtype
        if tree_ids is None:
            want = self.labels[src].astype(np.int64)
            taken: set[int] = set()
            for k, t in enumerate(want.tolist()):
                if t in taken:
                    want[k] = 0
                taken.add(t)
        else:
            want = np.asarray(tree_ids)
            if want.shape != src.shape or (want.size and not np.issubdtype(want.dtype, np.integer)):
                raise ValueError(
                    f"tree_ids must be {src.size} integers, one per source; got {want.dtype} "
                    f"of shape {want.shape}."
                )
            want = want.astype(np.int64)
            pos = want[want > 0]
            if np.unique(pos).size != pos.size:
                raise ValueError(f"tree_ids must not repeat an id; got {want.tolist()}.")
        nxt = max(self.new_tree_id(), int(want.max(initial=0)) + 1)
        for k in np.flatnonzero(want <= 0):
            want[k] = nxt
            nxt += 1
        for t in want.tolist():
            _tree_id(t, "tree id", dtype)
        return want.astype(np.int32)

    def _delta_to(self, labels: np.ndarray, description: str) -> Delta:
        """The edit that sets every point's id to ``labels`` and its voxels to match."""
        changed = np.flatnonzero(self.labels != labels).astype(np.intp)
        starts, voxels = self._owned()
        owner = np.repeat(np.arange(len(labels)), np.diff(starts))
        dtype = self.trees.dtype
        new_v = labels[owner].astype(dtype)
        old_v = self.trees.flat[voxels]
        keep = (old_v != new_v) & (old_v != 0)  # erased voxels stay erased
        vox, old_v, new_v = voxels[keep], old_v[keep], new_v[keep]
        order = np.argsort(vox, kind="stable")
        return Delta(
            points=changed,
            old_labels=self.labels[changed].copy(),
            new_labels=labels[changed].astype(np.int32),
            voxels=vox[order].astype(np.intp),
            old_values=old_v[order].astype(dtype, copy=False),
            new_values=new_v[order],
            description=description,
        )

    def _maybe_apply(self, delta: Delta, apply: bool) -> Delta:
        return self.apply(delta) if apply else delta

    def apply(self, delta: Delta) -> Delta:
        """Apply an edit and push it on the undo stack (clears redo).

        Raises
        ------
        ValueError
            If the delta does not fit this editor, or the current labels or voxels
            differ from its ``old`` values (it was made for another state).
        """
        if not isinstance(delta, Delta):
            raise ValueError(f"expected a Delta; got {type(delta).__name__}.")
        if delta.empty:
            return delta
        m, size = len(self.labels), self.trees.size
        if (delta.points.size and (delta.points.min() < 0 or delta.points.max() >= m)) or (
            delta.voxels.size and (delta.voxels.min() < 0 or delta.voxels.max() >= size)
        ):
            raise ValueError("delta indices do not fit this editor's points or volume.")
        if not (
            np.array_equal(self.labels[delta.points], delta.old_labels)
            and np.array_equal(self.trees.flat[delta.voxels], delta.old_values)
            and (delta.old_sources is None or np.array_equal(self._sources, delta.old_sources))
        ):
            raise ValueError(
                "delta does not apply to the current state (its old values differ); it was "
                "made before another edit or for another volume."
            )
        self._write(delta)
        self._undo.append(delta)
        self._redo.clear()
        return delta

    def undo(self) -> Delta | None:
        """Revert the last edit; returns it (None when there is nothing to undo)."""
        if not self._undo:
            return None
        delta = self._undo.pop()
        self._write(delta.inverse())
        self._redo.append(delta)
        return delta

    def redo(self) -> Delta | None:
        """Re-apply the last undone edit; returns it (None when there is none)."""
        if not self._redo:
            return None
        delta = self._redo.pop()
        self._write(delta)
        self._undo.append(delta)
        return delta

    # ---------------------------------------------------------------- internals
    def _write(self, delta: Delta) -> None:
        self.labels[delta.points] = delta.new_labels
        self.trees.flat[delta.voxels] = delta.new_values
        if delta.new_sources is not None:
            self._sources = np.asarray(delta.new_sources, dtype=np.intp).copy()

    def _owned(self):
        """Mask voxels grouped by nearest point: (starts (M+1,), flat voxel indices)."""
        if self._owner is None:
            m = len(self._idx)
            box = _bounding_box(self._mask)
            if box is None or m == 0:
                self._owner = (np.zeros(m + 1, dtype=np.intp), np.zeros(0, dtype=np.intp))
                return self._owner
            # the same crop and nearest-seed search as propagate_labels, seeds = point ids
            lo = np.minimum([s.start for s in box], self._idx.min(axis=0))
            hi = np.maximum([s.stop for s in box], self._idx.max(axis=0) + 1)
            cb = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
            ids = np.arange(1, m + 1, dtype=np.int32)
            near = _nearest_seed_labels(self._mask[cb], self._idx - lo, ids, self._sp)
            local = np.flatnonzero(near)
            owner = near.ravel()[local] - 1
            coords = np.unravel_index(local, near.shape)
            flat = np.ravel_multi_index(
                tuple(c + o for c, o in zip(coords, lo, strict=True)), self.trees.shape
            )
            order = np.argsort(owner, kind="stable")
            starts = np.r_[0, np.cumsum(np.bincount(owner, minlength=m))].astype(np.intp)
            self._owner = (starts, flat[order].astype(np.intp))
        return self._owner

    def _delta(self, pts: np.ndarray, tid: int, extra_voxels, description: str) -> Delta:
        """Set points ``pts`` and the voxels nearest to them (and ``extra_voxels``) to tid.

        Only entries whose value differs from ``tid`` are recorded.
        """
        changed = pts[self.labels[pts] != tid]
        starts, voxels = self._owned()
        counts = starts[pts + 1] - starts[pts]
        total = int(counts.sum())
        offset = np.repeat(starts[pts] - np.r_[0, np.cumsum(counts)[:-1]], counts)
        vox = voxels[offset + np.arange(total)] if total else np.zeros(0, dtype=np.intp)
        if extra_voxels is not None:
            vox = np.union1d(vox, extra_voxels)
        dtype = self.trees.dtype
        old_v = self.trees.flat[vox]
        # background stays background: voxels erased since the editor was built (e.g.
        # with napari's eraser while editing) are not brought back by a relabel
        keep = (old_v != tid) & (old_v != 0)
        vox, old_v = vox[keep], old_v[keep]
        return Delta(
            points=changed.astype(np.intp),
            old_labels=self.labels[changed].copy(),
            new_labels=np.full(changed.size, tid, dtype=np.int32),
            voxels=vox.astype(np.intp),
            old_values=old_v.astype(dtype, copy=False),
            new_values=np.full(vox.size, tid, dtype=dtype),
            description=description,
        )


def _is_numeric(v) -> bool:
    try:
        a = np.asarray(v)
    except (TypeError, ValueError):
        return False
    return np.issubdtype(a.dtype, np.number) and not np.issubdtype(a.dtype, np.complexfloating)
