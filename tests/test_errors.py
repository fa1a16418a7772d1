"""topology_errors points at the break of a broken vessel and at a false bridge."""

from __future__ import annotations

import numpy as np
import pytest

from napari_topo.data.perturb import break_vessel, bridge_trees
from napari_topo.data.synthetic import make_vessel_volume
from napari_topo.topology.errors import topology_errors
from napari_topo.topology.metrics import cldice

KEYS = (
    "missed_centerline",
    "false_centerline",
    "missed_locations",
    "missed_sizes",
    "false_locations",
    "false_sizes",
)


@pytest.fixture(scope="module")
def vessels():
    return make_vessel_volume(shape=(48, 48, 48), seed=3)


def test_identical_masks_have_no_errors(vessels):
    err = topology_errors(vessels.mask, vessels.trees)
    assert set(err) == set(KEYS)
    assert all(len(err[k]) == 0 for k in KEYS)
    assert err["missed_centerline"].shape == (0, 3)


def test_a_break_gives_one_missed_piece_at_the_break(vessels):
    broken = break_vessel(vessels.mask, vessels.centerline, vessels.radius, rng=0)
    err = topology_errors(broken, vessels.mask)
    assert len(err["false_locations"]) == 0
    assert len(err["missed_locations"]) == 1
    assert err["missed_sizes"].sum() == len(err["missed_centerline"]) > 0
    erased = np.argwhere(vessels.mask & ~broken)
    loc = err["missed_locations"][0]
    # The location is a missed skeleton voxel, inside the erased ball.
    assert any((err["missed_centerline"] == loc).all(axis=1))
    assert np.linalg.norm(loc - erased.mean(axis=0)) < 3
    assert not broken[tuple(loc)] and vessels.mask[tuple(loc)]
    # Consistent with clDice's Tsens.
    _, _, tsens = cldice(broken, vessels.mask)
    assert tsens < 1.0


def test_a_bridge_gives_one_false_piece_at_the_bridge(vessels):
    bridged = bridge_trees(vessels.trees)
    err = topology_errors(bridged, vessels.mask, spacing=(2.0, 1.0, 1.0))
    assert len(err["missed_locations"]) == 0
    assert len(err["false_locations"]) == 1
    bridge = np.argwhere(bridged & ~vessels.mask)
    loc = err["false_locations"][0]
    assert not vessels.mask[tuple(loc)] and bridged[tuple(loc)]
    assert np.abs(bridge - loc).sum(axis=1).min() == 0
    _, tprec, _ = cldice(bridged, vessels.mask)
    assert tprec < 1.0


def test_pieces_are_sorted_by_size_and_2d_works():
    gt = np.zeros((20, 40), bool)
    gt[5, 2:38] = True
    gt[15, 2:38] = True
    pred = gt.copy()
    pred[5, 10:13] = False  # a 3-pixel gap
    pred[15, 20:28] = False  # an 8-pixel gap
    err = topology_errors(pred, gt)
    assert err["missed_sizes"].tolist() == [8, 3]
    assert err["missed_locations"][0][0] == 15 and 20 <= err["missed_locations"][0][1] < 28
    assert err["missed_locations"][1][0] == 5


def test_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        topology_errors(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="spacing"):
        topology_errors(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), spacing=(1, -1, 1))
