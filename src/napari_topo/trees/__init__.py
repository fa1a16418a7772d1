"""Vessel trees: centerline graphs, tree roots, multi-source Dijkstra, label volumes.

numpy/scipy/networkx only (skan for skeleton branch tables); no torch, no Qt.

Typical use with TopNet's outputs (``vessel`` probability, ``centerness`` = predicted
distance to the centerline, ``embedding`` of shape ``(8, Z, Y, X)``):

>>> from napari_topo.trees import (centerline_points_nms, detect_sources,
...     radius_at, reconstruct_trees)
>>> mask = vessel > 0.5  # doctest: +SKIP
>>> pts = centerline_points_nms(centerness, mask)  # doctest: +SKIP
>>> roots = detect_sources(pts, radius_at(pts, mask), mask.shape, n=2)  # doctest: +SKIP
>>> res = reconstruct_trees(pts, embedding, roots, neighbourhood=5)  # doctest: +SKIP
>>> tree_labels = res.to_volume(mask)  # doctest: +SKIP

and for any model that predicts a mask only: ``trees_from_skeleton(mask).to_volume(mask)``.
"""

from napari_topo.trees.graph import branches, centerline_points_nms, radius_at, skeleton_graph
from napari_topo.trees.reconstruct import (
    NEIGHBOURS_26,
    TreeResult,
    detect_sources,
    label_switches,
    propagate_labels,
    reconstruct_trees,
    trees_from_skeleton,
)

__all__ = [
    "NEIGHBOURS_26",
    "TreeResult",
    "branches",
    "centerline_points_nms",
    "detect_sources",
    "label_switches",
    "propagate_labels",
    "radius_at",
    "reconstruct_trees",
    "skeleton_graph",
    "trees_from_skeleton",
]
