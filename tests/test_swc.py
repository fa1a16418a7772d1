"""Tests of napari_topo.trees.swc: SWC node order and the per-tree header lines."""

from __future__ import annotations

import numpy as np
import pytest

from napari_topo.trees.swc import parse_tree_line, swc_order, swc_text, tree_lines


def test_trees_in_id_order_each_a_block_from_its_source():
    # rows: tree 2 = 0<-1<-2, tree 1 = 3<-4 with a cut-off piece 5<-6, unassigned 7
    parents = np.array([-1, 0, 1, -1, 3, -1, 5, -1])
    tree = np.array([2, 2, 2, 1, 1, 1, 1, 0])
    # the cut-off piece's root (5) has a lower row than tree 1's source only if given so
    order = swc_order(parents, tree, first=[5])
    assert order.tolist() == [5, 6, 3, 4, 0, 1, 2, 7]
    order = swc_order(parents, tree, first=[3, 0])
    assert order.tolist() == [3, 4, 5, 6, 0, 1, 2, 7]
    assert tree_lines(order, parents, tree) == [
        "# tree 1: nodes 1-4, roots 1, 3",
        "# tree 2: nodes 5-7, root 5",
        "# tree 0: node 8, root 8 (no source reached these)",
    ]


def test_text_parents_first_and_lines_parse_back():
    parents = np.array([1, -1, 1])
    tree = np.array([4, 4, 4])
    world = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    text = swc_text(world, [1, 2, 3], parents, tree, ["# test"]).splitlines()
    assert text[0] == "# test"
    (line,) = [ln for ln in text if ln.startswith("# tree ")]
    assert parse_tree_line(line) == (4, 1, 3)
    rows = [ln.split() for ln in text if not ln.startswith("#")]
    assert rows[0] == ["1", "3", "6", "5", "4", "2", "-1"]  # x y z of row 1, the root
    assert [r[6] for r in rows] == ["-1", "1", "1"]
    assert parse_tree_line("# tree 0: node 8, root 8") == (0, 8, 8)
    assert parse_tree_line("# root 3: tree 2") is None


def test_mixed_trees_in_one_piece_get_a_line_per_block():
    parents = np.array([-1, 0, 1])
    tree = np.array([1, 2, 1])
    assert tree_lines(swc_order(parents, tree), parents, tree) == [
        "# tree 1: node 1, root 1",
        "# tree 2: node 2",
        "# tree 1: node 3",
    ]


def test_refuses_cycles_and_bad_parents():
    with pytest.raises(ValueError, match="cycle"):
        swc_order([1, 0], [1, 1])
    with pytest.raises(ValueError, match="row indices"):
        swc_order([5, -1], [1, 1])
    with pytest.raises(ValueError, match="one value per point"):
        swc_order([-1, 0], [1])
