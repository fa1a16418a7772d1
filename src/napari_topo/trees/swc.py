"""SWC files of a centerline forest, numbered so that tree N reads as tree N.

One writer for :meth:`napari_topo.analysis.VesselAnalysis.to_swc` and the plugin's
Points writer (:func:`napari_topo._plugin.write_graph`), and the header parser of the
plugin's SWC reader.

Layout of a napari-topo SWC file
--------------------------------
* Comment lines (``#``) first: what the file is, spacing, shape, unit and geometry
  (written by the callers), then one line per tree::

      # tree 1: nodes 1-58, root 1
      # tree 2: nodes 59-324, root 59
      # tree 3: nodes 325-448, roots 325, 440
      # tree 0: nodes 449-460, roots 449, 455 (no source reached these)

  ``tree N`` is the id the same points have everywhere else: the value of their voxels
  in the trees label volume (``<name>_trees.*``, the *trees* Labels layer), the
  ``tree`` column of ``<name>_graph.csv`` and of the Points layer, ``trees[].id`` of
  ``<name>_summary.json``. Tree 0 holds points no source reached. A tree's nodes are one
  block of consecutive SWC ids (in the rare case of a Points layer whose parent links
  cross trees, a tree can have more than one block, one line each). Trees come in
  ascending id order, tree 0 last. A tree has more than one root where a piece of it is
  not joined to its source.
* Then one line ``n T x y z R P`` per point: ``n`` the 1-based node id (parents before
  children, so ``P < n``), ``T = 3`` for every point, ``x y z`` world coordinates in
  x, y, z order (``z = 0`` in 2D), ``R`` the radius (physical) and ``P`` the parent's
  node id, -1 for a root.

Node ids are *not* the ``id`` column of ``<name>_graph.csv`` (point indices, which are
not parent-first); match points by coordinates or by tree.
"""

from __future__ import annotations

import re

import numpy as np


class ParentCycleError(ValueError):
    """The parent links of the points have a cycle: no parent-first order exists."""


#: A tree line of the header: ``# tree T: nodes A-B, root(s) ...`` (``A`` alone for one node).
_TREE_LINE = re.compile(r"^#\s*tree\s+(-?\d+)\s*:\s*nodes?\s+(\d+)(?:\s*-\s*(\d+))?", re.I)


def swc_order(parents, tree, *, first=None) -> np.ndarray:
    """Rows in SWC order: tree by tree (ascending ids, 0 last), parents before children.

    Parameters
    ----------
    parents : (M,) array_like of int
        Parent row of each row, -1 for a root.
    tree : (M,) array_like of int
        Tree id of each row (0 = unassigned).
    first : array_like of int, optional
        Rows to take first among the roots of their tree (the sources), in this order.

    Returns
    -------
    order : (M,) ndarray of intp
        ``order[k]`` is the row written as node ``k + 1``. Within a tree its roots come
        ``first`` rows first, then by row; each root is followed by its whole subtree
        (depth first).

    Raises
    ------
    ValueError
        If ``parents`` and ``tree`` differ in length or a parent is out of range;
        :class:`ParentCycleError` (a ValueError) if the parent links have a cycle.
    """
    par = np.asarray(parents, dtype=np.int64).ravel()
    lab = np.asarray(tree, dtype=np.int64).ravel()
    m = par.size
    if lab.size != m:
        raise ValueError(f"parents and tree must have one value per point; got {m} and {lab.size}.")
    if ((par < -1) | (par >= m)).any():
        raise ValueError("parents must be row indices or -1 for a root.")
    children: list[list[int]] = [[] for _ in range(m)]
    for r, q in enumerate(par.tolist()):
        if q >= 0:
            children[q].append(r)
    rank = {int(r): k for k, r in enumerate(np.asarray(first if first is not None else []).ravel())}
    roots = np.flatnonzero(par < 0).tolist()
    roots.sort(key=lambda r: (lab[r] <= 0, lab[r], rank.get(r, m), r))
    order: list[int] = []
    for root in roots:
        stack = [root]
        while stack:
            r = stack.pop()
            order.append(r)
            stack.extend(reversed(children[r]))
    if len(order) != m:
        raise ParentCycleError("the parent links have a cycle; cannot write SWC.")
    return np.asarray(order, dtype=np.intp)


def tree_lines(order, parents, tree) -> list[str]:
    """The ``# tree T: nodes A-B, root(s) ...`` header lines of an SWC in ``order``."""
    order = np.asarray(order, dtype=np.intp)
    par = np.asarray(parents, dtype=np.int64)
    lab = np.asarray(tree, dtype=np.int64)[order]
    is_root = par[order] < 0
    lines = []
    start = 0
    for k in range(1, order.size + 1):
        if k < order.size and lab[k] == lab[start]:
            continue
        roots = (np.flatnonzero(is_root[start:k]) + start + 1).tolist()
        span = f"nodes {start + 1}-{k}" if k - start > 1 else f"node {start + 1}"
        line = f"# tree {int(lab[start])}: {span}"
        if roots:
            line += (", root " if len(roots) == 1 else ", roots ") + ", ".join(map(str, roots))
        if lab[start] == 0:
            line += " (no source reached these)"
        lines.append(line)
        start = k
    return lines


def swc_text(world, radius, parents, tree, header, *, first=None) -> str:
    """The whole SWC file (see the module notes for its layout).

    Parameters
    ----------
    world : (M, 3) or (M, 2) array_like of float
        World coordinates in napari's (z, y, x) order.
    radius : (M,) array_like of float
        Physical radius of each point.
    parents : (M,) array_like of int
        Parent row, -1 for a root.
    tree : (M,) array_like of int or None
        Tree id of each point, as in the trees label volume (0 = unassigned). None:
        no tree lines (roots in row order).
    header : list of str
        Comment lines written first (each starting with ``#``).
    first : array_like of int, optional
        Source rows, taken first among their tree's roots (:func:`swc_order`).

    Returns
    -------
    str
        The file's text, ending with a newline.

    Raises
    ------
    ValueError
        As :func:`swc_order`, or when ``world`` is not (M, 2) or (M, 3).
    """
    pts = np.asarray(world, dtype=float)
    par = np.asarray(parents, dtype=np.int64)
    if pts.ndim != 2 or pts.shape[1] not in (2, 3) or len(pts) != par.size:
        raise ValueError(f"world must be (M, 2) or (M, 3) with M = {par.size}; got {pts.shape}.")
    if pts.shape[1] == 2:
        pts = np.c_[np.zeros(len(pts)), pts]
    rad = np.asarray(radius, dtype=float)
    lab = np.zeros(par.size, dtype=np.int64) if tree is None else tree
    order = swc_order(par, lab, first=first)
    node = np.empty(order.size, dtype=np.int64)
    node[order] = np.arange(1, order.size + 1)
    lines = list(header)
    if tree is not None:
        lines.append(
            "# trees: tree N is N in the trees label volume, the CSV 'tree' column and the "
            "summary; each tree's nodes are consecutive"
        )
        lines += tree_lines(order, par, tree)
    lines.append("# id type x y z radius parent")
    for r in order.tolist():
        z, y, x = pts[r].tolist()
        p = int(node[par[r]]) if par[r] >= 0 else -1
        lines.append(f"{int(node[r])} 3 {x:.9g} {y:.9g} {z:.9g} {rad[r]:.6g} {p}")
    return "\n".join(lines) + "\n"


def parse_tree_line(line: str) -> tuple[int, int, int] | None:
    """``(tree, first_node, last_node)`` of a ``# tree T: nodes A-B`` header line, else None."""
    m = _TREE_LINE.match(line.strip())
    if m is None:
        return None
    a = int(m.group(2))
    return int(m.group(1)), a, int(m.group(3)) if m.group(3) else a
