"""benchmarks/bench_tree_cost.py: radius-aware path costs for the skeleton partition."""

from __future__ import annotations

import numpy as np
import pytest
from _scripts import load_script

from napari_topo.topology.metrics import tree_accuracy
from napari_topo.trees.reconstruct import trees_from_skeleton


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/bench_tree_cost.py")


@pytest.fixture(scope="module")
def touching():
    """A thin vessel (tree 1) running into the side of a wide trunk (tree 2)."""
    zz, yy, xx = np.mgrid[:24, :48, :64]
    trunk = ((zz - 12) ** 2 + (yy - 12) ** 2 <= 16) & (xx < 60)  # radius 4, root at x = 0
    thin = ((zz - 12) ** 2 + (xx - 50) ** 2 <= 2) & (yy >= 12) & (yy < 44)  # root at y = 43
    gt = np.zeros(trunk.shape, np.uint8)
    gt[trunk] = 2
    gt[thin & ~trunk] = 1
    return trunk | thin, gt, [[12, 43, 50], [12, 12, 0]]


def test_length_cost_is_the_package_partition(bench, touching):
    mask, _, roots = touching
    vol, _ = bench.partition(mask, roots, (1, 1, 1), "length", 0.0)
    np.testing.assert_array_equal(vol, trees_from_skeleton(mask, roots).to_volume(mask))


def test_radius_costs_keep_the_trunk_to_its_own_root(bench, touching):
    mask, gt, roots = touching
    acc = {
        (c, lam): tree_accuracy(bench.partition(mask, roots, (1, 1, 1), c, lam)[0], gt)
        for c, lam in [("length", 0.0), ("taper", 10.0), ("width", 2.0)]
    }
    # by length alone the thin vessel's root takes the trunk's far end
    assert acc["length", 0.0] < 0.8
    assert acc["taper", 10.0] > acc["length", 0.0] + 0.05
    assert acc["width", 2.0] > 0.9


def test_edge_costs(bench):
    r = np.array([1.0, 3.0])
    i, j, length = np.array([0, 1]), np.array([1, 0]), np.array([1.0, 1.0])
    np.testing.assert_allclose(bench.edge_costs(i, j, length, r, "taper", 2.0), [5.0, 1.0])
    np.testing.assert_allclose(bench.edge_costs(i, j, length, r, "width", 1.0), [2.0, 2.0])
    with pytest.raises(ValueError, match="cost must be"):
        bench.edge_costs(i, j, length, r, "speed", 1.0)


def test_confusion_counts_true_centerline_by_given_tree(bench, touching):
    mask, gt, _ = touching
    conf = np.array(bench.confusion(gt, gt, np.ones(gt.shape, bool)))
    assert conf.shape == (2, 3) and conf[0, 1] > 0 and conf[1, 2] > 0
    assert conf[0, [0, 2]].sum() == 0 and conf[1, :2].sum() == 0


def test_own_paths_tells_a_reachable_loss_from_a_blocked_one(bench, touching):
    mask, gt, roots = touching
    _, res = bench.partition(mask, roots, (1, 1, 1), "length", 0.0)
    paths = bench.own_paths(res, gt)
    # the trunk's far end went to tree 1, but tree 2's root reaches it along the trunk
    assert paths[1]["lost_in_root_piece"] > 0
    assert paths[1]["reachable_avoiding_other_trees"] == paths[1]["lost_in_root_piece"]
    # tree 2's root moved onto a short piece of its own that touches tree 1's vessel:
    # the trunk can only be reached through tree 1
    zz, yy, xx = np.mgrid[:24, :48, :64]
    stub = ((zz - 12) ** 2 + (yy - 36) ** 2 <= 2) & (xx >= 50) & (xx < 60)
    gt2 = np.where(stub & (gt == 0), 2, gt).astype(np.uint8)
    _, res = bench.partition(gt2 > 0, [roots[0], [12, 36, 59]], (1, 1, 1), "length", 0.0)
    paths = bench.own_paths(res, gt2)
    assert paths[1]["lost_in_root_piece"] > 0
    assert paths[1]["reachable_avoiding_other_trees"] == 0
