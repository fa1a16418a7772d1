"""benchmarks/interpolate_weights.py: weight interpolation of two model cards."""

from __future__ import annotations

import pytest
import torch
from _scripts import load_script

from napari_topo.models.registry import load_model, save_model


@pytest.fixture(scope="module")
def interp():
    return load_script("benchmarks/interpolate_weights.py")


@pytest.fixture
def parents(tmp_path):
    """unet-dice and a copy with every float tensor shifted by 1."""
    model, card = load_model("unet-dice")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    shifted = save_model(model, {**card.to_dict(), "name": "shifted"}, tmp_path / "shifted")
    return "unet-dice", str(shifted.path)


def test_interpolation_is_the_weighted_mean_and_loads_with_its_hash(interp, parents, tmp_path):
    a, b = parents
    card = interp.interpolate(a, b, 0.25, "mix", tmp_path / "mix")
    mix, loaded = load_model(card.path)  # the sha256 on the card matches the weights
    wa, wb = load_model(a)[0].state_dict(), load_model(b)[0].state_dict()
    for key, t in mix.state_dict().items():
        if t.is_floating_point():
            torch.testing.assert_close(t, 0.75 * wa[key] + 0.25 * wb[key])
    info = loaded.training["interpolation"]
    assert info["alpha"] == 0.25 and info["a"]["name"] == "unet-dice"
    assert info["b"]["name"] == "shifted" and loaded.metrics == {}
    # alpha 1 is model b exactly
    one = load_model(interp.interpolate(a, b, 1.0, "one", tmp_path / "one").path)[0]
    for key, t in one.state_dict().items():
        assert torch.equal(t, wb[key])


def test_interpolation_refuses_bad_alpha_and_other_architectures(interp, parents, tmp_path):
    a, _ = parents
    with pytest.raises(ValueError, match="alpha"):
        interp.interpolate(a, a, 1.5, "x", tmp_path / "x")
    with pytest.raises(ValueError, match="architecture"):
        interp.interpolate(a, "topnet", 0.5, "x", tmp_path / "x")
