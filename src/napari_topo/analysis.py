"""One object for what a viewer shows after inference: mask, centerline, trees, exports.

:class:`VesselAnalysis` is the headless end of the pipeline::

    outputs = predict(model, image)                    # {"vessel": prob, ...}
    analysis = VesselAnalysis.from_outputs(outputs, spacing=(2.0, 1.0, 1.0))
    analysis.summary()                                 # numbers for a table
    analysis.save("trees.swc")                         # or .graphml / .csv
    layers = analysis.to_layers("vessels", scale=image_layer.scale)

It runs in a script, the CLI or a worker thread; nothing here imports Qt, and napari
only where :mod:`napari_topo.layers` builds a colormap.

The tree structure used for branches, exports and editing is the
:func:`~napari_topo.trees.edit.centerline_forest` of the reconstruction: a minimum
spanning forest of the kept point edges inside each tree, rooted at the sources (see
:mod:`napari_topo.trees.edit` for why it, not the Dijkstra predecessors, follows the
vessels).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from functools import cached_property
from numbers import Integral, Real
from pathlib import Path

import networkx as nx
import numpy as np

from napari_topo import layers as _layers
from napari_topo.geometry import Geometry, napari_units
from napari_topo.topology.metrics import _spacing_array
from napari_topo.topology.skeleton import skeletonize
from napari_topo.trees.edit import _forest, tree_branches
from napari_topo.trees.graph import branches as skan_branches
from napari_topo.trees.graph import centerline_points_nms, radius_at
from napari_topo.trees.reconstruct import (
    NEIGHBOURS_26,
    TreeResult,
    detect_sources,
    reconstruct_trees,
    trees_from_skeleton,
)
from napari_topo.trees.swc import swc_text

__all__ = ["VesselAnalysis"]

#: NMS window (voxels) and largest accepted centerness for TopNet's centre voxels.
NMS_SIZE = 5
NMS_MAX_DISTANCE = 1.5
#: Link distance (voxels) between TopNet centre voxels, a bit more than the NMS window.
TOPNET_NEIGHBOURHOOD = 5.5
_AXES = {2: ("y", "x"), 3: ("z", "y", "x")}


def _real_volume(value, name: str, *, allow_bool: bool = False) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2D (y, x) or 3D (z, y, x) array; got {arr.shape}.")
    if allow_bool and arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers; got dtype {arr.dtype}.")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (no NaN or inf).")
    return arr


def _analysis_geometry(geometry, spacing, ndim: int) -> Geometry:
    """The geometry of an analysis: ``geometry`` (its spatial axes), or one made from
    ``spacing``; both must agree when both are given."""
    if geometry is None:
        sp = _spacing_array(spacing, ndim)
        return Geometry.from_spacing(sp.tolist(), known="none" if spacing is None else None)
    if not isinstance(geometry, Geometry):
        raise ValueError(f"geometry must be a Geometry; got {type(geometry).__name__}.")
    g = geometry.spatial()
    if g.ndim != ndim:
        raise ValueError(f"geometry has {g.ndim} spatial axes but the mask has {ndim}.")
    if spacing is not None and not np.allclose(_spacing_array(spacing, ndim), g.spacing, rtol=1e-4):
        raise ValueError(
            f"spacing {tuple(_spacing_array(spacing, ndim).tolist())} differs from the "
            f"geometry's {g.spacing}; give one of them."
        )
    return g


def _path(path) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise ValueError(f"path must be a str or os.PathLike; got {type(path).__name__}.")
    return Path(path)


#: Columns of :meth:`VesselAnalysis.branch_table` the branches layer's features carry
#: (napari's features table shows, sorts and exports them), beside ``tree`` and ``branch``.
#: The three a vessel user reads first come first (the table is wider than a dock).
BRANCH_MEASURES = (
    "length",
    "tortuosity",
    "radius_mean",
    "generation",
    "parent",
    "end",
    "euclidean_length",
    "radius_min",
    "radius_max",
)


class VesselAnalysis:
    """Segmentation, centerline and vessel trees of one volume.

    Usually made by :meth:`from_outputs`. All arrays are ``(z, y, x)`` (or ``(y, x)``)
    voxel arrays; lengths and radii are in physical units of ``spacing``.

    Attributes
    ----------
    probability : ndarray of float or None
        Vessel probability the mask was thresholded from.
    mask : ndarray of bool
        Vessel mask.
    result : TreeResult
        Tree reconstruction on the centerline points.
    points : (M, ndim) ndarray
        Centerline points, voxel coordinates (``result.points``).
    radius : (M,) ndarray of float64
        Vessel radius at each point (:func:`~napari_topo.trees.graph.radius_at`).
    trees : ndarray of int32
        Tree id per voxel of the mask (0 = background).
    spacing : tuple of float
        Physical voxel size per axis (``geometry.spacing``).
    geometry : Geometry
        Where the voxels lie (:class:`~napari_topo.geometry.Geometry`, spatial axes):
        the input's affine and unit, so that the graph exports (CSV ``*_physical``
        columns, SWC, GraphML) are in the input's world coordinates. Default: axis-
        aligned at the origin with ``spacing``.
    method : str
        ``"skeleton"`` (the mask's skeleton graph), ``"embedding-skeleton"`` (TopNet: the
        skeleton graph cut where embeddings disagree) or ``"embedding"`` (TopNet, the
        paper's NMS centre voxels joined by embedding).
    threshold : float or None
        Threshold that made the mask.
    skeleton : ndarray of bool
        One-voxel skeleton of the mask (computed on first access for TopNet outputs).
    """

    def __init__(
        self,
        *,
        mask,
        result: TreeResult,
        trees,
        radius,
        probability=None,
        spacing=None,
        method: str = "skeleton",
        threshold: float | None = None,
        skeleton=None,
        geometry: Geometry | None = None,
    ):
        if not isinstance(result, TreeResult):
            raise ValueError(f"result must be a TreeResult; got {type(result).__name__}.")
        self.mask = np.asarray(mask).astype(bool, copy=False)
        self.trees = np.asarray(trees)
        ndim = self.mask.ndim
        self.geometry = _analysis_geometry(geometry, spacing, ndim)
        self.spacing = tuple(float(s) for s in self.geometry.spacing)
        if self.trees.shape != self.mask.shape:
            raise ValueError(
                f"trees must have the mask's shape {self.mask.shape}; got {self.trees.shape}."
            )
        self.result = result
        self.radius = np.asarray(radius, dtype=np.float64)
        if self.radius.shape != (len(result.points),):
            raise ValueError(
                f"radius must have one value per point ({len(result.points)}); got "
                f"{self.radius.shape}."
            )
        self.probability = None if probability is None else np.asarray(probability)
        self.method = str(method)
        self.threshold = threshold
        self._skeleton = None if skeleton is None else np.asarray(skeleton, dtype=bool)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_outputs(
        cls,
        outputs: Mapping,
        *,
        threshold: float = 0.5,
        sources=None,
        spacing=None,
        embedding_threshold: float = 2.0,
        n_trees: int | None = None,
        min_size: int = 0,
        centerline: str = "skeleton",
        geometry: Geometry | None = None,
    ) -> VesselAnalysis:
        """Threshold, find the centerline, reconstruct and label the trees.

        Parameters
        ----------
        outputs : mapping
            Model outputs as returned by :func:`napari_topo.inference.pipeline.predict`:
            ``"vessel"`` (probability, (Z, Y, X); a bool mask works too) and, for
            TopNet, ``"centerness"`` (predicted distance to the centerline, voxels) and
            ``"embedding"`` ``(E, Z, Y, X)``.
        threshold : float, optional
            ``mask = vessel > threshold``.
        sources : (K, ndim) array_like, optional
            Tree roots as voxel coordinates, snapped to the nearest centerline point;
            row ``k`` becomes tree ``k + 1``. Default: found by
            :func:`~napari_topo.trees.reconstruct.detect_sources`.
        spacing : float or sequence of float, optional
            Physical voxel size per axis. Default 1.
        embedding_threshold : float, optional
            Largest embedding distance of a kept edge (TopNet only).
        n_trees : int, optional
            Number of roots to detect when ``sources`` is None (default: one per
            connected group of points).
        min_size : int, optional
            Connected pieces of the mask (26-connectivity) with fewer voxels are removed
            before anything else (``cc3d.dust``): the specks a model leaves in noisy
            backgrounds, which otherwise become one-voxel "trees". Default 0 (keep all);
            :func:`napari_topo.inference.pipeline.segment` uses 32.
        centerline : {"skeleton", "nms"}, optional
            With TopNet outputs, which centerline points carry the trees: "skeleton"
            (default) is the mask's skeleton graph with every edge cut whose ends'
            embeddings differ by more than ``embedding_threshold``; "nms" is the paper's
            procedure (minima of ``centerness`` in 5x5x5 windows inside the mask, joined
            within 5.5 voxels where embeddings agree). On the synthetic test set the NMS
            points are too sparse to stay connected (most are unreached from the
            sources), so "skeleton" labels trees far better (README, model comparison).
            Ignored without an embedding.
        geometry : Geometry, optional
            Where the voxels lie (e.g. ``read_volume(path).geometry`` after a channel
            was chosen); its spacing is used when ``spacing`` is None. The exports then
            give world coordinates in the input's space.

        Returns
        -------
        VesselAnalysis

        Notes
        -----
        With an ``"embedding"`` (TopNet), centre voxels are the minima of
        ``centerness`` inside the mask (:func:`centerline_points_nms`, window 5, at most
        1.5 voxels from the centerline), joined within 5.5 voxels where their embeddings
        agree, and assigned to roots by :func:`reconstruct_trees`. Otherwise
        (``"centerness"`` alone is not used) the mask's skeleton is the centerline and
        :func:`trees_from_skeleton` assigns it. Either way ``trees =
        result.to_volume(mask)``.

        Raises
        ------
        ValueError
            On a missing or badly shaped output, a non-finite threshold or bad sources.

        Examples
        --------
        >>> import numpy as np
        >>> prob = np.zeros((9, 9, 20), np.float32)
        >>> prob[1:4, 1:4, :] = 0.9; prob[5:8, 5:8, :] = 0.8   # two tubes
        >>> a = VesselAnalysis.from_outputs({"vessel": prob}, sources=[[2, 2, 0], [6, 6, 19]])
        >>> a.result.n_trees, int(a.trees[2, 2, 10]), int(a.trees[6, 6, 10])
        (2, 1, 2)
        """
        if not isinstance(outputs, Mapping) or "vessel" not in outputs:
            raise ValueError(
                "outputs must be a mapping with a 'vessel' probability (as returned by "
                f"predict); got {type(outputs).__name__}"
                + (f" with keys {sorted(outputs)}." if isinstance(outputs, Mapping) else ".")
            )
        prob = _real_volume(outputs["vessel"], "outputs['vessel']", allow_bool=True)
        if isinstance(threshold, bool) or not isinstance(threshold, Real):
            raise ValueError(f"threshold must be a number; got {threshold!r}.")
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite; got {threshold!r}.")
        mask = prob > threshold
        if isinstance(min_size, bool) or not isinstance(min_size, Integral) or min_size < 0:
            raise ValueError(f"min_size must be an integer >= 0; got {min_size!r}.")
        if min_size > 1 and mask.any():
            from . import _cc3d as cc3d

            mask = cc3d.dust(
                mask, threshold=int(min_size), connectivity=26 if mask.ndim == 3 else 8
            )
        if geometry is not None:
            geometry = _analysis_geometry(geometry, spacing, mask.ndim)
        if spacing is None and geometry is not None and geometry.known != "none":
            spacing = geometry.spacing
        sp = _spacing_array(spacing, mask.ndim)
        if sources is not None:
            src = np.asarray(sources)
            if src.ndim != 2 or src.shape[1] != mask.ndim:
                raise ValueError(
                    f"sources must be a (K, {mask.ndim}) array of voxel coordinates; got "
                    f"shape {src.shape}."
                )
        if centerline not in ("skeleton", "nms"):
            raise ValueError(f"centerline must be 'skeleton' or 'nms'; got {centerline!r}.")
        embedding = None
        if "embedding" in outputs:
            embedding = np.asarray(outputs["embedding"])
            if embedding.shape[1:] != mask.shape:
                raise ValueError(
                    f"embedding must be (E, {', '.join(map(str, mask.shape))}); got "
                    f"{embedding.shape}."
                )
        if embedding is not None and centerline == "nms":
            if "centerness" not in outputs:
                raise ValueError("TopNet outputs with an 'embedding' need 'centerness' too.")
            centerness = _real_volume(outputs["centerness"], "outputs['centerness']")
            embedding = np.asarray(outputs["embedding"])
            if centerness.shape != mask.shape or embedding.shape[1:] != mask.shape:
                raise ValueError(
                    f"centerness must have the shape {mask.shape} of 'vessel' and embedding "
                    f"(E, {', '.join(map(str, mask.shape))}); got {centerness.shape} and "
                    f"{embedding.shape}."
                )
            points = centerline_points_nms(
                centerness, mask, size=NMS_SIZE, max_distance=NMS_MAX_DISTANCE
            )
            radius = radius_at(points, mask, sp)
            if sources is None:
                sources = detect_sources(
                    points,
                    radius,
                    mask.shape,
                    n=n_trees,
                    neighbourhood=TOPNET_NEIGHBOURHOOD,
                    spacing=sp,
                )
                if len(points) and not len(sources):  # no vessel reaches the border
                    sources = None  # (a region of interest inside the body): one per piece
            result = reconstruct_trees(
                points,
                embedding,
                sources,
                neighbourhood=TOPNET_NEIGHBOURHOOD,
                embedding_threshold=embedding_threshold,
                spacing=sp,
            )
            method, skeleton = "embedding", None
        else:
            skeleton = None
            if sources is None and n_trees is not None:
                skeleton = skeletonize(mask)
                pts = np.argwhere(skeleton)
                found = detect_sources(
                    pts,
                    radius_at(pts, mask, sp),
                    mask.shape,
                    n=n_trees,
                    neighbourhood=NEIGHBOURS_26,
                    spacing=sp,
                )
                sources = pts[found] if found.size else None
            result = trees_from_skeleton(mask, sources, spacing=sp, embedding=embedding)
            if skeleton is None:  # the result's points are the skeleton voxels
                skeleton = np.zeros(mask.shape, dtype=bool)
                skeleton[tuple(np.asarray(result.points, dtype=np.intp).T)] = True
            radius = radius_at(result.points, mask, sp)
            method = "skeleton" if embedding is None else "embedding-skeleton"
        return cls(
            mask=mask,
            result=result,
            trees=result.to_volume(mask),
            radius=radius,
            probability=None if prob.dtype == bool else prob,  # a mask adds nothing
            spacing=None if geometry is not None else tuple(sp.tolist()),
            method=method,
            threshold=float(threshold),
            skeleton=skeleton,
            geometry=geometry,
        )

    def replace(self, **changes) -> VesselAnalysis:
        """A copy with some attributes replaced (e.g. ``result`` and ``trees`` after edits).

        Array attributes that are not replaced are shared, not copied.
        """
        allowed = {
            "mask",
            "result",
            "trees",
            "radius",
            "probability",
            "spacing",
            "method",
            "threshold",
            "skeleton",
            "geometry",
        }
        bad = set(changes) - allowed
        if bad:
            raise ValueError(f"cannot replace {sorted(bad)}; choose from {sorted(allowed)}.")
        kw = {
            "mask": self.mask,
            "result": self.result,
            "trees": self.trees,
            "radius": self.radius,
            "probability": self.probability,
            "method": self.method,
            "threshold": self.threshold,
            "skeleton": self._skeleton if "mask" not in changes else None,
            "geometry": self.geometry,
        }
        if "spacing" in changes and "geometry" not in changes:
            # a new voxel size keeps the origin and direction
            kw["geometry"] = self.geometry.with_spacing(
                _spacing_array(changes["spacing"], self.ndim).tolist()
            )
            changes = {k: v for k, v in changes.items() if k != "spacing"}
        kw.update(changes)
        return type(self)(**kw)

    def __repr__(self) -> str:
        return (
            f"VesselAnalysis(shape={self.mask.shape}, spacing={self.spacing}, "
            f"method={self.method!r}, n_points={len(self.points)}, "
            f"n_trees={self.result.n_trees})"
        )

    # ------------------------------------------------------------------ derived
    @property
    def points(self) -> np.ndarray:
        """Centerline points (M, ndim), voxel coordinates."""
        return self.result.points

    @property
    def ndim(self) -> int:
        return self.mask.ndim

    def root_placement(self, sources) -> list[dict]:
        """Where each given tree root landed: the centerline point it was moved to, and how far.

        Trees grow from the centerline point nearest each root (:func:`reconstruct_trees`
        snaps coordinates to points), so a root placed off every vessel the mask found (in
        air, or on a vessel the model missed) silently roots its tree on whatever vessel
        is nearest. This says so, for the CLI's closing lines and the Segment dock's status.

        Parameters
        ----------
        sources : (K, ndim) array_like of float
            The roots as given to :meth:`from_outputs` (voxel coordinates, same order:
            root ``k`` grew tree ``k + 1``).

        Returns
        -------
        list of dict
            One per root: ``tree`` (its id, ``k + 1``), ``given`` and ``point`` (voxel
            coordinates, the point is ``points[result.sources[k]]``), ``moved`` (Euclidean
            distance between them in physical units of ``spacing``), ``in_mask`` (the
            given coordinate, rounded, lies on a mask voxel or one of its 26-neighbours
            does: a root on the vessel, however thick, is in the mask; one placed beside
            it on the background is not) and ``n_voxels`` (voxels of its tree, for a
            root off the mask; None for the others, sparing a pass over the volume).

        Raises
        ------
        ValueError
            If ``sources`` is not ``(K, ndim)`` or does not have one row per tree of
            ``result`` (roots detected automatically have nothing to compare against).
        """
        src = np.asarray(sources, dtype=np.float64)
        if src.ndim != 2 or src.shape[1] != self.ndim:
            raise ValueError(
                f"sources must be a (K, {self.ndim}) array of voxel coordinates; got shape "
                f"{src.shape}."
            )
        roots = np.asarray(self.result.sources, dtype=np.intp)
        if len(src) != len(roots):
            raise ValueError(
                f"got {len(src)} roots for {len(roots)} trees; pass the sources the trees "
                "were grown from."
            )
        sp = np.asarray(self.spacing, dtype=np.float64)
        shape = np.asarray(self.mask.shape)
        sizes = None  # tree sizes: one pass over the volume, only when a root is off
        out = []
        for k, (given, i) in enumerate(zip(src, roots, strict=True)):
            point = np.asarray(self.points[i], dtype=np.float64)
            c = np.clip(np.rint(given).astype(np.intp), 0, shape - 1)
            lo, hi = np.maximum(c - 1, 0), np.minimum(c + 2, shape)
            near = self.mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
            inside = bool(np.all((given >= -0.5) & (given <= shape - 0.5)) and near.any())
            if inside:
                n_voxels = None
            else:
                if sizes is None:
                    sizes = np.bincount(self.trees.ravel(), minlength=len(roots) + 1)
                n_voxels = int(sizes[k + 1])
            out.append(
                {
                    "tree": k + 1,
                    "given": given.tolist(),
                    "point": point.tolist(),
                    "moved": float(np.linalg.norm((given - point) * sp)),
                    "in_mask": inside,
                    "n_voxels": n_voxels,
                }
            )
        return out

    @property
    def skeleton(self) -> np.ndarray:
        """Skeleton of the mask (computed and kept on first access if not known)."""
        if self._skeleton is None:
            self._skeleton = skeletonize(self.mask)
        return self._skeleton

    @cached_property
    def _forest_order(self) -> tuple[np.ndarray, np.ndarray]:
        return _forest(self.result)

    @cached_property
    def _branches(self) -> list:
        """:func:`~napari_topo.trees.edit.tree_branches` of :attr:`result`, cut once per
        analysis (about 1 s on a whole CT): the branch table, the summary's count and the
        layers share them."""
        return tree_branches(self.result)

    @property
    def parents(self) -> np.ndarray:
        """Parent point of every point in the centerline forest, -1 for roots."""
        return self._forest_order[0]

    def edges(self, kind: str = "tree") -> tuple[np.ndarray, np.ndarray]:
        """Centerline edges and their physical lengths.

        Parameters
        ----------
        kind : {"tree", "graph"}
            ``"tree"``: the forest, one ``(child, parent)`` row per non-root point;
            ``"graph"``: every kept edge of the reconstruction, ``(i, j)`` with ``i < j``.

        Returns
        -------
        pairs : (E, 2) ndarray of intp
        length : (E,) ndarray of float64
        """
        if kind == "tree":
            child = np.flatnonzero(self.parents >= 0)
            pairs = np.stack([child, self.parents[child]], axis=1).astype(np.intp)
        elif kind == "graph":
            from scipy import sparse

            up = sparse.triu(self.result.adjacency, k=1).tocoo()
            pairs = np.stack([up.row, up.col], axis=1).astype(np.intp)
        else:
            raise ValueError(f"kind must be 'tree' or 'graph'; got {kind!r}.")
        if not len(pairs):
            return np.zeros((0, 2), dtype=np.intp), np.zeros(0)
        p = np.asarray(self.points, dtype=float)
        n = self.ndim
        # the affine's linear part: the spacing, and any shear an oblique scan has
        step = (p[pairs[:, 0]] - p[pairs[:, 1]]) @ self.geometry.affine[:n, :n].T
        return pairs, np.sqrt(np.einsum("ij,ij->i", step, step))

    def world_points(self) -> np.ndarray:
        """Centerline points in world coordinates ``(M, ndim)``, napari's axis order, in
        the unit of :attr:`geometry` (``geometry.world(points)``)."""
        return self.geometry.world(np.asarray(self.points, dtype=float))

    def branch_paths(self) -> tuple[list[np.ndarray], np.ndarray]:
        """Voxel paths of the centerline branches (each from its junction on) and trees."""
        found = self._branches
        pts = np.asarray(self.points, dtype=float)
        return [b.path(pts) for b in found], np.array([b.tree for b in found], dtype=np.int64)

    #: Columns of :meth:`branch_table`, in order (``start_y, start_x, ...`` in 2D).
    BRANCH_COLUMNS = (
        "branch",
        "tree",
        "parent",
        "generation",
        "end",
        "n_points",
        "length",
        "euclidean_length",
        "tortuosity",
        "radius_mean",
        "radius_min",
        "radius_max",
    )

    def branch_table(self):
        """Per-branch morphometry of the vessel trees: length, radius, tortuosity.

        The branches are those of :meth:`branch_paths` (the Tree editor's and the
        branches layer's, same order): runs of centerline points from a root or a
        junction to the next junction or a tip, along the trees' shortest-path forest.

        Returns
        -------
        pandas.DataFrame
            One row per branch, columns :attr:`BRANCH_COLUMNS` then
            ``start_z, start_y, start_x, end_z, end_y, end_x``:

            * ``branch`` (int): its index; ``tree`` (int): its tree id (0: no tree);
            * ``parent`` (int): the branch it hangs from, -1 for one that starts at a
              root; ``generation`` (int): branches between it and its root (0 at the
              root, +1 at every junction). A piece no root reaches along the graph,
              given to a tree across a gap, starts again at generation 0 (parent -1);
            * ``end``: ``"tip"`` or ``"junction"`` (where further branches start);
            * ``n_points`` (int): its centerline points;
            * ``length`` (float): along the centerline, from the junction it hangs from
              to its last point, in the physical unit of :attr:`geometry` (the
              affine's linear part: spacing and any shear);
            * ``euclidean_length`` (float): the straight line between the same ends;
            * ``tortuosity`` (float): ``length / euclidean_length``, the distance metric
              of Bullitt et al. (IEEE TMI 22(9), 2003), 1 for a straight vessel; NaN
              when the ends coincide (a one-point branch: a root that is itself a
              junction is one, of length 0, as in the Tree editor);
            * ``radius_mean``, ``radius_min``, ``radius_max`` (float): the vessel radius
              at its points (:attr:`radius`, distance to the mask's edge, physical),
              its last point included (at a junction the radius reads large), the
              junction it hangs from not;
            * ``start_*`` / ``end_*`` (float): world coordinates of its ends
              (:meth:`world_points`), as napari shows them.

            An analysis without centerline points gives an empty table with these
            columns.
        """
        import pandas as pd  # installed with skan (napari_topo.trees.graph)

        n = self.ndim
        axes = "zyx"[-n:]
        coords = [f"{w}_{ax}" for w in ("start", "end") for ax in axes]
        found = self._branches
        if not found:
            return pd.DataFrame({c: [] for c in (*self.BRANCH_COLUMNS, *coords)})
        parents = self.parents
        children = np.bincount(parents[parents >= 0], minlength=len(parents))
        branch_of = np.empty(len(parents), dtype=np.intp)
        for b in found:
            branch_of[b.points] = b.index
        linear = self.geometry.affine[:n, :n]
        pts = np.asarray(self.points, dtype=float)
        world = self.world_points()
        generation = np.zeros(len(found), dtype=np.int64)
        rows = []
        for b in found:  # roots first: a parent's generation is known before its children
            ids = b.points if b.upstream < 0 else np.r_[b.upstream, b.points]
            steps = np.diff(pts[ids], axis=0) @ linear.T
            length = float(np.sqrt(np.einsum("ij,ij->i", steps, steps)).sum())
            chord = float(np.linalg.norm((pts[ids[-1]] - pts[ids[0]]) @ linear.T))
            parent = -1 if b.upstream < 0 else int(branch_of[b.upstream])
            if parent >= 0:
                generation[b.index] = generation[parent] + 1
            r = self.radius[b.points]
            rows.append(
                (
                    b.index,
                    int(b.tree),
                    parent,
                    int(generation[b.index]),
                    "junction" if children[b.points[-1]] else "tip",
                    int(b.points.size),
                    length,
                    chord,
                    length / chord if chord > 0 else math.nan,
                    float(r.mean()),
                    float(r.min()),
                    float(r.max()),
                    *world[ids[0]].tolist(),
                    *world[ids[-1]].tolist(),
                )
            )
        return pd.DataFrame(rows, columns=[*self.BRANCH_COLUMNS, *coords])

    # ------------------------------------------------------------------ numbers
    def summary(self) -> dict:
        """Counts and lengths for a results table.

        Returns
        -------
        dict
            ``n_voxels`` and ``volume`` (physical) of the mask; ``n_points`` and
            ``n_assigned_points`` (tree id > 0) of the centerline; ``n_trees``;
            ``n_branches``, the branches of the trees (:meth:`branch_table`'s rows,
            ``segment``'s ``_branches.csv``); ``n_skeleton_branches`` and
            ``total_length`` (physical) of the mask's skeleton from skan
            (:func:`~napari_topo.trees.graph.branches`: every skeleton branch, cycles
            and unassigned pieces included, cut at every junction); ``method``,
            ``threshold``, ``spacing`` and its length ``unit`` (None when unstated);
            ``trees``, one dict per tree id > 0 present
            (``id``, ``n_points``, ``n_voxels``, ``length`` of its forest edges);
            ``trees_length``, the sum of the trees' lengths (less than
            ``total_length`` where the skeleton has cycles, which a forest cuts, or
            pieces no tree took); ``shape`` of the mask and ``geometry``
            (:meth:`Geometry.to_dict`), where the voxel coordinates of the graph files
            lie.
        """
        table = skan_branches(self.skeleton, spacing=self.spacing)
        n_vox = int(np.count_nonzero(self.mask))
        labels = np.asarray(self.result.labels)
        pairs, length = self.edges("tree")
        edge_tree = labels[pairs[:, 0]] if len(pairs) else np.zeros(0, dtype=np.int64)
        ids = sorted(
            set(np.unique(labels[labels > 0]).tolist())
            | set(np.unique(self.trees[self.trees > 0]).tolist())
        )
        vox_counts = np.bincount(self.trees.ravel(), minlength=max(ids, default=0) + 1)
        per_tree = [
            {
                "id": int(k),
                "n_points": int(np.count_nonzero(labels == k)),
                "n_voxels": int(vox_counts[k]),
                "length": float(length[edge_tree == k].sum()),
            }
            for k in ids
        ]
        return {
            "n_voxels": n_vox,
            "volume": float(n_vox * math.prod(self.spacing)),
            "n_points": int(len(self.points)),
            "n_assigned_points": int(np.count_nonzero(labels > 0)),
            "n_trees": int(self.result.n_trees),
            # one branch count, the trees' (a newcomer read 101 here, 139 rows in the
            # branch table and 139 in the run's line); the skeleton's under its own name
            "n_branches": int(len(self._branches)),
            "n_skeleton_branches": int(len(table)),
            "total_length": float(table["length"].sum()) if len(table) else 0.0,
            "method": self.method,
            "threshold": self.threshold,
            "spacing": self.spacing,
            # the length unit of spacing, volume and every length here and in the branch
            # table (None: unstated, voxels); a newcomer could not tell from the CSVs
            "unit": self.geometry.unit or None,
            "trees": per_tree,
            "trees_length": float(sum(t["length"] for t in per_tree)),
            "shape": [int(v) for v in self.mask.shape],
            "geometry": self.geometry.to_dict(),
        }

    # ------------------------------------------------------------------ export
    def to_csv(self, nodes_path, edges_path, *, edges: str = "tree") -> tuple[Path, Path]:
        """Write the centerline as a nodes table and an edges table (CSV, with header).

        Nodes: ``id`` (point index), ``z, y, x`` (voxel indices of the analysed array;
        ``y, x`` in 2D), ``z_physical, y_physical, x_physical`` (world coordinates,
        :meth:`world_points`: the input's affine and unit, as napari places the image),
        ``radius`` (physical), ``tree`` (0 = unassigned). Edges: ``source, target``
        (node ids; child, parent for ``edges="tree"``) and ``length`` (physical); see
        :meth:`edges`. The same columns as the plugin's Points writer, so either table
        can be given to ``napari-topo segment --sources``.

        Returns
        -------
        (nodes_path, edges_path) as Paths
        """
        npath, epath = _path(nodes_path), _path(edges_path)
        pairs, length = self.edges(edges)
        axes = _AXES[self.ndim]
        labels = np.asarray(self.result.labels).tolist()
        world = self.world_points().tolist()
        with npath.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", *axes, *(f"{a}_physical" for a in axes), "radius", "tree"])
            for i, (c, p, r, t) in enumerate(
                zip(
                    np.asarray(self.points).tolist(),
                    world,
                    self.radius.tolist(),
                    labels,
                    strict=True,
                )
            ):
                w.writerow([i, *c, *(repr(v) for v in p), repr(r), t])
        with epath.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["source", "target", "length"])
            for (a, b), d in zip(pairs.tolist(), length.tolist(), strict=True):
                w.writerow([a, b, repr(d)])
        return npath, epath

    def to_networkx(self, edges: str = "tree") -> nx.Graph:
        """The centerline as a networkx graph with GraphML-safe (scalar) attributes.

        Nodes are point indices with ``z, y, x`` (voxel, int), ``z_physical,
        y_physical, x_physical`` (world coordinates, float), ``radius`` (float),
        ``tree`` (int) and ``parent`` (int, -1 for roots); edges carry ``length``.
        Graph attributes: ``spacing_z, spacing_y, spacing_x``, ``n_trees``, ``method``,
        ``sources`` (comma-separated root point indices), ``geometry`` (the
        :class:`Geometry` as JSON) and ``unit`` (when known).
        """
        axes = _AXES[self.ndim]
        g = nx.Graph()
        g.graph.update({f"spacing_{a}": float(s) for a, s in zip(axes, self.spacing, strict=True)})
        g.graph["geometry"] = self.geometry.to_json()
        if self.geometry.unit:
            g.graph["unit"] = self.geometry.unit
        g.graph["n_trees"] = int(self.result.n_trees)
        g.graph["method"] = self.method
        g.graph["sources"] = ",".join(str(int(s)) for s in self.result.sources)
        coords = np.asarray(self.points).tolist()
        world = self.world_points().tolist()
        labels = np.asarray(self.result.labels).tolist()
        parents = self.parents.tolist()
        for i, (c, wc, r, t, p) in enumerate(
            zip(coords, world, self.radius.tolist(), labels, parents, strict=True)
        ):
            attrs = {a: v for a, v in zip(axes, c, strict=True)}
            attrs.update({f"{a}_physical": float(v) for a, v in zip(axes, wc, strict=True)})
            g.add_node(i, **attrs, radius=float(r), tree=int(t), parent=int(p))
        pairs, length = self.edges(edges)
        g.add_edges_from(
            (a, b, {"length": float(d)})
            for (a, b), d in zip(pairs.tolist(), length.tolist(), strict=True)
        )
        return g

    def to_graphml(self, path, *, edges: str = "tree") -> Path:
        """Write :meth:`to_networkx` as GraphML (``networkx.write_graphml``).

        Read it back with ``networkx.read_graphml(path, node_type=int)``.
        """
        p = _path(path)
        nx.write_graphml(self.to_networkx(edges), p)
        return p

    def to_swc(self, path) -> Path:
        """Write the centerline forest as one SWC file, numbered tree by tree.

        One line ``n T x y z R P`` per centerline point: ``n`` is a 1-based node id
        (parents are written before their children), ``T = 3`` for every point, ``x y z``
        are *world* coordinates in SWC's x, y, z order: :meth:`world_points` (the input's
        affine: spacing, origin, direction; for a NIfTI input the scanner's RAS
        millimetres) reversed, ``z = 0`` in 2D; ``R`` the radius (physical) and ``P`` the
        parent's node id, or -1 for a root.

        Trees come in ascending id order, each as one block of consecutive node ids
        starting at its source (the root); tree 0 (points no source reached) comes last.
        Header comments give the spacing, the unit, the array shape and the geometry
        (JSON, so the file is placed without the summary), then one line per tree,
        ``# tree N: nodes A-B, root A``, where ``N`` is the tree's id in :attr:`trees`
        (the label volume), in the CSV's ``tree`` column and in :meth:`summary`. A tree
        has more roots where a piece of it is cut off from its source. The layout is
        described in :mod:`napari_topo.trees.swc`; the plugin's reader reads the tree
        ids back.
        """
        p = _path(path)
        axes = ", ".join(_AXES[self.ndim])
        header = [
            "# napari-topo vessel centerline forest",
            f"# spacing ({axes}): " + ", ".join(repr(s) for s in self.spacing),
            f"# shape ({axes}): " + ", ".join(str(int(v)) for v in self.mask.shape),
            f"# unit: {self.geometry.unit or 'unknown'}",
            "# geometry: " + self.geometry.to_json(),
            "# coordinates: world (the image's affine), x y z order; type 3; parent -1 = root",
        ]
        p.write_text(
            swc_text(
                self.world_points(),
                self.radius,
                self.parents,
                np.asarray(self.result.labels),
                header,
                first=np.asarray(self.result.sources, dtype=np.intp),
            )
        )
        return p

    def save(self, path) -> tuple[Path, ...]:
        """Write by extension: ``.graphml``, ``.swc`` or ``.csv``.

        ``.csv`` writes the nodes to ``path`` and the edges next to it as
        ``<stem>_edges.csv``.

        Returns
        -------
        tuple of Path
            The files written.

        Raises
        ------
        ValueError
            For any other extension.
        """
        p = _path(path)
        ext = p.suffix.lower()
        if ext == ".graphml":
            return (self.to_graphml(p),)
        if ext == ".swc":
            return (self.to_swc(p),)
        if ext == ".csv":
            return self.to_csv(p, p.with_name(f"{p.stem}_edges.csv"))
        raise ValueError(f"cannot save {p.name!r}: use a .graphml, .swc or .csv path.")

    # ------------------------------------------------------------------ napari
    def to_layers(
        self, name: str = "vessels", scale=None, translate=None, *, skeleton: bool = False
    ) -> list:
        """Layer data tuples for napari (see :mod:`napari_topo.layers`).

        In order (bottom to top): probability (if known), mask (hidden), skeleton (if
        asked), trees (Labels, a colour per tree), branches (Shapes paths; their
        features carry :data:`BRANCH_MEASURES` from :meth:`branch_table`) and centerline
        (Points sized by radius, coloured by tree).

        Parameters
        ----------
        name : str, optional
            Prefix of the layer names.
        scale : sequence of float, optional
            Layer scale. Pass the source image layer's scale (and translate) so the
            results overlay it. Default (with ``translate`` None too): placed by
            :attr:`geometry` (its spacing and origin, and an ``affine`` for a rotated
            or flipped one; :meth:`Geometry.layer_kwargs`).
        translate : sequence of float, optional
        skeleton : bool, optional
            Also return the skeleton as a Labels layer.

        Returns
        -------
        list of (data, meta, layer_type)
        """
        kw: dict = {"name": name, "scale": scale, "translate": translate}
        if scale is None and translate is None:
            kw.update(self.geometry.layer_kwargs())
        elif scale is None:
            kw["scale"] = self.spacing
        units = napari_units(self.geometry.unit, "zyx"[-self.ndim :])
        if units is not None and "units" not in kw:  # the scale bar reads mm or um
            kw["units"] = units
        n = max(self.result.n_trees, int(self.trees.max(initial=0)))
        out = []
        if self.probability is not None:
            out.append(_layers.probability_layer(self.probability, **kw))
        out.append(_layers.mask_layer(self.mask, visible=False, **kw))
        if skeleton:
            out.append(_layers.skeleton_layer(self.skeleton, **kw))
        out.append(_layers.trees_layer(self.trees, n, **kw))
        paths, tree = self.branch_paths()
        table = self.branch_table()  # the same (cached) branches, in the same order
        measures = {c: table[c].to_numpy() for c in BRANCH_MEASURES}
        out.append(_layers.branches_layer(paths, tree, ndim=self.ndim, measures=measures, **kw))
        out.append(
            _layers.points_layer(self.points, self.radius, self.result.labels, self.parents, **kw)
        )
        return out
