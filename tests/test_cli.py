"""The command line and the error injection its demo relies on."""

from __future__ import annotations

import io

import numpy as np
import pytest

from napari_topo import __version__, cli
from napari_topo.data.perturb import add_spurious_blobs, break_vessel, bridge_trees
from napari_topo.data.synthetic import make_vessel_volume
from napari_topo.topology.metrics import betti_numbers


@pytest.fixture(scope="module")
def vol():
    return make_vessel_volume(shape=(48, 48, 48), n_trees=2, seed=3)


def test_break_vessel_adds_a_component(vol):
    broken = break_vessel(vol.mask, vol.centerline, vol.radius / min(vol.spacing), rng=0)
    assert betti_numbers(broken)[0] == betti_numbers(vol.mask)[0] + 1
    assert broken.sum() < vol.mask.sum()
    assert not np.any(broken & ~vol.mask)  # only removes


def test_bridge_trees_joins_two_trees(vol):
    bridged = bridge_trees(vol.trees)
    assert betti_numbers(vol.mask)[0] == 2
    assert betti_numbers(bridged)[0] == 1
    assert np.all(bridged[vol.mask])  # keeps every vessel voxel


def test_spurious_blobs_are_separate_components(vol):
    blobs = add_spurious_blobs(vol.mask, n=4, rng=1)
    assert betti_numbers(blobs)[0] == betti_numbers(vol.mask)[0] + 4


def test_perturbations_validate_input(vol):
    with pytest.raises(ValueError, match="3D"):
        add_spurious_blobs(vol.mask[0])
    with pytest.raises(ValueError, match="two trees"):
        bridge_trees(vol.trees == 1)


def test_demo_prints_what_each_metric_sees():
    out = io.StringIO()
    rows = dict(cli.run_demo(size=48, seed=3, out=out))
    text = out.getvalue()
    assert "broken vessel" in text and "soft clDice" in text
    assert rows["perfect"]["Dice"] == 1.0 and rows["perfect"]["Betti-0 error"] == 0
    assert rows["broken vessel"]["Betti-0 error"] == 1
    assert rows["false bridge"]["Betti-0 error"] == 1
    assert rows["spurious blobs"]["CCE 3D"] == 6
    # Dice hardly notices a cut; the topology metrics do.
    assert rows["broken vessel"]["Dice"] > 0.95


def test_cli_version_and_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and __version__ in capsys.readouterr().out
    assert cli.main(["demo", "--size", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-topo: error:") and "--size" in err
    assert len(err.strip().splitlines()) == 1
