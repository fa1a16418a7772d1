"""IncrementalMetrics must equal compute_metrics after any sequence of edits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_topo.topology.incremental import (
    FAST_METRICS,
    SLOW_METRICS,
    IncrementalMetrics,
    euler_lut,
)
from napari_topo.topology.metrics import _euler_closed_cells, compute_metrics


def assert_matches(live: IncrementalMetrics, pred, gt, axis=0):
    expected = compute_metrics(pred, gt, axis=axis)
    got = live.values()
    assert list(got) == list(FAST_METRICS)
    for key in FAST_METRICS:
        a, b = got[key], expected[key]
        assert (math.isnan(a) and math.isnan(b)) or a == b, (key, a, b)
    np.testing.assert_array_equal(live.pred, pred > 0)
    np.testing.assert_array_equal(live.gt, gt > 0)


def random_edit(rng, shape, max_radius=2):
    """A blob-shaped edit: random voxels of a box around a random centre."""
    centre = [int(rng.integers(0, s)) for s in shape]
    r = int(rng.integers(0, max_radius + 1))
    box = np.zeros(shape, bool)
    box[tuple(slice(max(0, c - r), c + r + 1) for c in centre)] = True
    box &= rng.random(shape) < 0.7
    idx = np.nonzero(box)
    if rng.random() < 0.7:
        values = int(rng.integers(0, 3))  # paint a label, or erase with 0
    else:
        values = rng.integers(0, 3, size=idx[0].size)  # mixed paint and erase
    return idx, values


@pytest.mark.parametrize("ndim", [2, 3])
def test_euler_lut_sums_to_closed_cell_euler_characteristic(ndim):
    from napari_topo.topology.incremental import _Euler

    lut = euler_lut(ndim)
    assert lut.shape == (2**2**ndim,) and lut[0] == 0
    rng = np.random.default_rng(1)
    for _ in range(100):
        m = rng.random((4,) * ndim) < 0.5
        e = _Euler(np.pad(m, 1))
        assert e.sum % 2**ndim == 0
        assert e.chi == _euler_closed_cells(m)


@pytest.mark.parametrize(
    ("shape", "axis", "seed"),
    [((10, 12, 14), 0, 0), ((10, 12, 14), 2, 1), ((9, 11, 13), 1, 2), ((28, 33), 0, 3)],
)
def test_random_paint_and_erase_match_compute_metrics(shape, axis, seed):
    rng = np.random.default_rng(seed)
    pred = (rng.random(shape) < 0.3).astype(np.uint8)
    gt = (rng.random(shape) < 0.3).astype(np.uint8) * 3  # labels, not only 0/1
    live = IncrementalMetrics(pred, gt, axis=axis)
    assert_matches(live, pred, gt, axis)
    for step in range(40):
        which = "gt" if step % 4 == 0 else "pred"
        target = gt if which == "gt" else pred
        idx, values = random_edit(rng, shape)
        target[idx] = values
        if which == "gt" and step % 8 == 0:
            live.update_gt(idx, values)
        elif step % 5 == 0:  # flat indices work too
            live.update(np.ravel_multi_index(idx, shape), values, which=which)
        else:
            live.update(idx, values, which=which)
        assert_matches(live, pred, gt, axis)


def tube_pair():
    gt = np.zeros((12, 12, 30), np.uint8)
    gt[4:8, 4:8, 2:28] = 1
    return gt.copy(), gt


def test_cut_splits_then_repair_merges():
    pred, gt = tube_pair()
    live = IncrementalMetrics(pred, gt)
    cut = np.nonzero(np.ones((12, 12, 2), bool))
    cut = (cut[0], cut[1], cut[2] + 14)
    pred[cut] = 0
    live.update(cut, 0)
    assert live.topology("pred")[0] == 2
    assert_matches(live, pred, gt)
    assert live.values()["Betti-0 error"] == 1.0
    pred[cut] = gt[cut]
    live.update(cut, gt[cut])
    assert live.topology("pred")[0] == 1
    assert_matches(live, pred, gt)
    assert live.values()["Dice"] == 1.0


def test_tip_cut_off_and_far_pieces_are_found():
    """A split where one piece is small (closed in a small window) and a split of two
    long pieces that needs a larger window, plus erasing a whole component."""
    pred = np.zeros((10, 10, 60), np.uint8)
    pred[4:6, 4:6, 1:59] = 1
    pred[1, 1, 1:5] = 1  # a separate small component
    gt = pred.copy()
    live = IncrementalMetrics(pred, gt)
    for z0 in (55, 30):  # near the tip, then in the middle
        idx = np.nonzero(np.ones((10, 10, 1), bool))
        idx = (idx[0], idx[1], idx[2] + z0)
        pred[idx] = 0
        live.update(idx, 0)
        assert_matches(live, pred, gt)
    assert live.topology("pred")[0] == 4
    small = np.nonzero(pred[:3, :3] > 0)
    pred[small] = 0
    live.update(small, 0)
    assert live.topology("pred")[0] == 3
    assert_matches(live, pred, gt)


def test_loop_and_cavity_are_tracked():
    pred = np.zeros((9, 9, 9), np.uint8)
    gt = pred.copy()
    live = IncrementalMetrics(pred, gt)
    # A hollow cube: one component, one cavity, no loop.
    shell = np.zeros_like(pred)
    shell[2:7, 2:7, 2:7] = 1
    shell[3:6, 3:6, 3:6] = 0
    idx = np.nonzero(shell)
    pred[idx] = 1
    live.update(idx, 1)
    assert live.topology("pred")[:3] == (1, 0, 1)
    assert_matches(live, pred, gt)
    # Drill through two opposite faces: the cavity opens, a tunnel appears.
    hole = (np.array([2, 6]), np.array([4, 4]), np.array([4, 4]))
    pred[hole] = 0
    live.update(hole, 0)
    assert live.topology("pred")[:3] == (1, 1, 0)
    assert_matches(live, pred, gt)


def test_duplicate_indices_take_the_last_value_and_noops_are_cheap():
    pred, gt = tube_pair()
    live = IncrementalMetrics(pred, gt)
    before = live.values()
    idx = (np.array([5, 5]), np.array([5, 5]), np.array([10, 10]))
    live.update(idx, np.array([0, 1]))  # erased then painted again: no change
    assert live.values() == before
    live.update(idx, np.array([1, 0]))
    pred[5, 5, 10] = 0
    assert_matches(live, pred, gt)
    live.update((np.array([], int),) * 3, 1)  # nothing to do
    assert_matches(live, pred, gt)


def test_the_input_arrays_are_copied():
    pred, gt = tube_pair()
    live = IncrementalMetrics(pred, gt)
    pred[:] = 0
    assert live.values()["Dice"] == 1.0
    with pytest.raises(ValueError):
        live.pred[0, 0, 0] = True  # read-only view


def test_empty_masks_follow_compute_metrics():
    pred = np.zeros((6, 6, 6), np.uint8)
    gt = pred.copy()
    live = IncrementalMetrics(pred, gt)
    assert_matches(live, pred, gt)
    idx = (np.array([2]), np.array([2]), np.array([2]))
    pred[idx] = 1
    live.update(idx, 1)
    assert_matches(live, pred, gt)  # recall, volume error NaN; precision 0


def test_bad_input():
    pred, gt = tube_pair()
    with pytest.raises(ValueError, match="same shape"):
        IncrementalMetrics(pred, gt[:, :, :10])
    live = IncrementalMetrics(pred, gt)
    with pytest.raises(ValueError, match="which"):
        live.update((np.array([0]),) * 3, 1, which="both")
    with pytest.raises(ValueError, match="out of bounds"):
        live.update((np.array([12]), np.array([0]), np.array([0])), 1)
    with pytest.raises(ValueError, match="3 index arrays"):
        live.update((np.array([0]),) * 2, 1)
    assert set(FAST_METRICS).isdisjoint(SLOW_METRICS)
    two_trees = pred.copy()
    two_trees[4:8, 4:8, 20:28] = 2
    assert set(FAST_METRICS) | set(SLOW_METRICS) == set(compute_metrics(two_trees, two_trees))


def test_slow_metrics_match_compute_metrics_and_reuse_skeletons():
    from napari_topo.topology.incremental import SkeletonCache, slow_metrics

    gt = np.zeros((9, 9, 30), np.uint8)
    gt[2:7, 2:5, 2:28] = 1
    gt[2:7, 6:9, 2:28] = 2
    pred = gt.copy()
    pred[:, :, 14:16] = 0
    cache = SkeletonCache()
    for p in (pred, gt, pred):
        expected = compute_metrics(p, gt, spacing=(2.0, 1.0, 1.0))
        got = slow_metrics(p, gt, spacing=(2.0, 1.0, 1.0), cache=cache)
        assert got == pytest.approx({k: expected[k] for k in SLOW_METRICS}, nan_ok=True)
        assert slow_metrics(p, gt, spacing=(2.0, 1.0, 1.0)) == pytest.approx(got, nan_ok=True)
    assert cache.hits == 2  # the ground truth was thinned once
    binary = slow_metrics(pred > 0, gt > 0)
    assert "Tree accuracy" not in binary
