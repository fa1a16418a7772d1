"""Tests for napari_topo.models: networks and the hashed registry (CPU, tiny inputs)."""

import contextlib
import json
import threading

import pytest
import torch

from napari_topo.models import (
    ARCHITECTURES,
    WEIGHTS_DIR,
    ModelCard,
    ModelNotFoundError,
    TopNet,
    UNet3D,
    WeightsIntegrityError,
    count_parameters,
    get_card,
    list_models,
    load_model,
    save_model,
)
from napari_topo.models.registry import MODEL_PATH_ENV
from napari_topo.models.unet import _EXCLUDE, ExcludingInstanceNorm3d

TINY = (4, 8, 16)  # three levels: inputs are padded to a multiple of 4
ODD_SHAPE = (1, 1, 19, 21, 23)
MAX_BYTES = 5 * 2**20


@pytest.fixture(autouse=True)
def _no_user_model_path(monkeypatch):
    monkeypatch.delenv(MODEL_PATH_ENV, raising=False)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors gain nothing from threads, and on a shared, busy CPU OpenMP threads
    # waiting for each other turn milliseconds into seconds.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def x():
    return torch.randn(1, 1, 20, 24, 28, generator=torch.Generator().manual_seed(0))


def _tiny_unet(**kw):
    torch.manual_seed(0)
    return UNet3D(widths=TINY, **kw)


def _tiny_topnet(**kw):
    torch.manual_seed(0)
    return TopNet(widths=TINY, embedding_dim=3, **kw)


# -- networks ---------------------------------------------------------------------------


@pytest.mark.parametrize("down", ["maxpool", "conv"])
@pytest.mark.parametrize("up", ["transpose", "trilinear"])
def test_unet_shapes_odd_sizes(down, up):
    net = UNet3D(out_channels=2, widths=TINY, downsample=down, upsample=up).eval()
    with torch.no_grad():
        y = net(torch.randn(ODD_SHAPE))
    assert y.shape == (1, 2, *ODD_SHAPE[2:])


def test_topnet_shapes_odd_sizes_and_nonnegative_centerness():
    net = _tiny_topnet().eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, 9, 13, 6))
    assert set(out) == {"vessel", "centerness", "embedding"}
    assert out["vessel"].shape == (2, 1, 9, 13, 6)
    assert out["centerness"].shape == (2, 1, 9, 13, 6)
    assert out["embedding"].shape == (2, 3, 9, 13, 6)
    assert (out["centerness"] >= 0).all()


def test_bad_input_raises():
    net = _tiny_unet()
    with pytest.raises(ValueError, match=r"\(N, 1, D, H, W\)"):
        net(torch.zeros(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="N, 1, D, H, W"):
        net(torch.zeros(1, 8, 8, 8))
    with pytest.raises(ValueError, match="widths"):
        UNet3D(widths=(8,))
    with pytest.raises(ValueError, match="downsample"):
        UNet3D(downsample="avg")


@contextlib.contextmanager
def _excluding(mask):
    token = _EXCLUDE.set(mask)
    try:
        yield
    finally:
        _EXCLUDE.reset(token)


def test_excluding_norm_is_instance_norm_without_an_exclusion(x):
    # shipped weights (trained with nn.InstanceNorm3d) must give the same outputs
    norm = ExcludingInstanceNorm3d(3, affine=True)
    ref = torch.nn.InstanceNorm3d(3, affine=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0), norm.bias.uniform_(-1.0, 1.0)
    ref.load_state_dict(norm.state_dict())
    feats = torch.randn(2, 3, 6, 7, 8)
    assert torch.allclose(norm(feats), ref(feats), atol=1e-5)


def test_excluded_voxels_leave_the_statistics():
    feats = torch.randn(1, 2, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    exclude = torch.zeros(1, 1, 8, 8, 8, dtype=torch.bool)
    exclude[..., :3, :, :] = True
    bright = feats.clone()
    bright[:, :, :3] = 1000.0  # saturated bone in the excluded slab
    norm = ExcludingInstanceNorm3d(2, affine=True).eval()
    with _excluding(exclude):
        out = norm(bright)
    kept = feats[:, :, 3:]
    alone = torch.nn.functional.instance_norm(kept, eps=norm.eps)
    assert torch.allclose(out[:, :, 3:], alone, atol=1e-4)
    # without the exclusion the bright slab dominates the statistics
    assert not torch.allclose(norm(bright)[:, :, 3:], alone, atol=1e-2)


def test_an_instance_with_almost_everything_excluded_uses_all_voxels():
    feats = torch.randn(1, 1, 4, 4, 4)
    norm = ExcludingInstanceNorm3d(1, affine=True)
    ref = torch.nn.functional.instance_norm(feats, eps=norm.eps)
    with _excluding(torch.ones(1, 1, 4, 4, 4, dtype=torch.bool)):
        assert torch.allclose(norm(feats), ref, atol=1e-5)
    with pytest.raises(ValueError, match="affine=True"):
        ExcludingInstanceNorm3d(1, affine=False)


def test_unet_leaves_the_window_top_out_of_its_norms():
    # The first norm sees the first convolution of the input: its 3x3x3 reach is what the
    # one-voxel growth of the window's top covers, so with the exclusion how bright a
    # slab at the window's top is does not reach that norm's features away from it
    # (deeper norms, whose reach is larger, still see some of it: the class docstring).
    def volume(bone: float):
        v = torch.full((1, 1, 32, 24, 24), 0.3)
        v[..., 20:24, 10:14, :] = 0.6  # a dim tube along x
        v[..., :6, :, :] = bone  # a slab at the window's top (bone, as a CT window shows it)
        return v

    def first_norm_output(net, v):
        seen = []
        norm = next(m for m in net.modules() if isinstance(m, ExcludingInstanceNorm3d))
        handle = norm.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
        with torch.no_grad():
            net(v)
        handle.remove()
        return seen[0][..., 10:, :, :]  # away from the slab and its reach

    torch.manual_seed(0)
    plain = UNet3D(widths=(4, 8)).eval()
    masked = UNet3D(widths=(4, 8), norm_exclude_above=0.98).eval()
    masked.load_state_dict(plain.state_dict())
    assert masked.arch_kwargs["norm_exclude_above"] == 0.98
    assert "norm_exclude_above" not in plain.arch_kwargs  # the shipped cards are unchanged
    gap_masked = first_norm_output(masked, volume(4.0)) - first_norm_output(masked, volume(1.0))
    gap_plain = first_norm_output(plain, volume(4.0)) - first_norm_output(plain, volume(1.0))
    assert gap_masked.abs().max() < 1e-4 < gap_plain.abs().max()
    assert _EXCLUDE.get() is None  # reset after the forward pass
    with pytest.raises(ValueError, match="finite"):
        UNet3D(norm_exclude_above=float("nan"))


def test_one_excluding_unet_runs_in_several_threads():
    torch.manual_seed(0)
    net = UNet3D(widths=(4, 8), norm_exclude_above=0.98).eval()
    gen = torch.Generator().manual_seed(3)
    inputs = [torch.rand(1, 1, 16 + 4 * k, 20, 20, generator=gen) for k in range(6)]
    with torch.no_grad():
        serial = [net(v) for v in inputs]
    got = [None] * len(inputs)

    def work(k):
        with torch.no_grad():
            for _ in range(3):
                got[k] = net(inputs[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, serial, strict=True))


@pytest.mark.parametrize("cls", [UNet3D, TopNet])
def test_default_configs_are_small(cls):
    net = cls()
    n = count_parameters(net)
    assert n < 1_200_000
    assert n * 4 < MAX_BYTES
    rebuilt = cls(**json.loads(json.dumps(net.arch_kwargs)))
    assert count_parameters(rebuilt) == n


def test_nets_can_learn():
    """A few Adam steps reduce a simple loss for both nets."""
    g = torch.Generator().manual_seed(1)
    img = torch.randn(1, 1, 12, 12, 12, generator=g)
    target = (img > 0.5).float()
    for net, pick in [(_tiny_unet(), lambda o: o), (_tiny_topnet(), lambda o: o["vessel"])]:
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        losses = []
        for _ in range(10):
            opt.zero_grad()
            out = net(img)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(pick(out), target)
            if isinstance(out, dict):  # make every TopNet head receive a gradient
                loss = loss + out["centerness"].mean() + out["embedding"].pow(2).mean()
            loss.backward()
            assert all(p.grad is not None for p in net.parameters())
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.85 * losses[0], losses


def test_topnet_output_works_with_topnet_loss():
    from napari_topo.topology.losses import TopNetLoss

    net = _tiny_topnet()
    out = net(torch.randn(1, 1, 8, 8, 8))
    vessel = torch.zeros(1, 1, 8, 8, 8)
    vessel[..., 3:5, 3:5, :] = 1
    pairs = (
        torch.tensor([0, 1]),
        torch.tensor([2, 3]),
        torch.tensor([1.0, 2.0]),
        torch.tensor([True, False]),
    )
    total, parts = TopNetLoss()(out, {"vessel": vessel, "distance": vessel * 0.5, "pairs": pairs})
    total.backward()
    assert set(parts) == {"vessel", "centerness", "embedding"}


# -- registry ---------------------------------------------------------------------------


def _card(name, **kw):
    return {"name": name, "summary": "tiny test model", "training": {"steps": 0}, **kw}


@pytest.mark.parametrize("make", [_tiny_unet, _tiny_topnet])
def test_save_load_round_trip(tmp_path, x, make):
    net = make().eval()
    card = save_model(net, _card("tiny"), tmp_path)
    assert (tmp_path / "tiny.safetensors").is_file() and (tmp_path / "tiny.json").is_file()
    assert card.sha256 and card.architecture in ARCHITECTURES
    on_disk = json.loads((tmp_path / "tiny.json").read_text())
    assert on_disk["sha256"] == card.sha256 and on_disk["arch_kwargs"] == net.arch_kwargs
    assert list(on_disk) == sorted(on_disk)

    loaded, card2 = load_model("tiny", directory=tmp_path)
    assert not loaded.training
    assert card2 == card
    with torch.no_grad():
        a, b = net(x), loaded(x)
    if isinstance(a, dict):
        assert all(torch.equal(a[k], b[k]) for k in a)
    else:
        assert torch.equal(a, b)


def test_tampered_weights_raise(tmp_path):
    save_model(_tiny_unet(), _card("tiny"), tmp_path)
    path = tmp_path / "tiny.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # flip one bit of the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match="SHA-256"):
        load_model("tiny", directory=tmp_path)
    assert issubclass(WeightsIntegrityError, ValueError)


def test_card_without_hash_is_refused(tmp_path):
    save_model(_tiny_unet(), _card("tiny"), tmp_path)
    card = json.loads((tmp_path / "tiny.json").read_text())
    card["sha256"] = ""
    (tmp_path / "tiny.json").write_text(json.dumps(card))
    with pytest.raises(WeightsIntegrityError, match="no sha256"):
        load_model("tiny", directory=tmp_path)


def test_unknown_name_lists_available(tmp_path):
    save_model(_tiny_unet(), _card("alpha"), tmp_path)
    save_model(_tiny_topnet(), _card("beta"), tmp_path)
    with pytest.raises(ModelNotFoundError, match="alpha, beta") as info:
        load_model("gamma", directory=tmp_path)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ModelNotFoundError, match="available models: none"):
        get_card("gamma", directory=tmp_path / "empty")


def test_load_user_file_by_path(tmp_path, x):
    net = _tiny_topnet().eval()
    save_model(net, _card("mine"), tmp_path / "user")
    with torch.no_grad():
        ref = net(x)["embedding"]
    for path in (tmp_path / "user" / "mine.safetensors", str(tmp_path / "user" / "mine.json")):
        loaded, card = load_model(path)
        assert card.name == "mine" and card.task == "topnet"
        with torch.no_grad():
            assert torch.equal(loaded(x)["embedding"], ref)
    (tmp_path / "user" / "mine.json").unlink()
    with pytest.raises(ModelNotFoundError, match="no model card"):
        load_model(tmp_path / "user" / "mine.safetensors")
    with pytest.raises(ModelNotFoundError, match="no such file"):
        load_model(tmp_path / "nope.json")


def test_list_models_empty_and_populated(tmp_path):
    assert list_models(tmp_path) == []
    assert list_models(tmp_path / "missing") == []
    (tmp_path / "README.md").write_text("not a card")
    save_model(_tiny_topnet(), _card("b-topnet"), tmp_path)
    save_model(_tiny_unet(), _card("a-unet"), tmp_path)
    cards = list_models(tmp_path)
    assert [c.name for c in cards] == ["a-unet", "b-topnet"]
    assert [c.task for c in cards] == ["segmentation", "topnet"]
    assert all(isinstance(c, ModelCard) for c in cards)


def test_broken_card_is_skipped_with_warning(tmp_path):
    save_model(_tiny_unet(), _card("good"), tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.warns(UserWarning, match="bad.json"):
        assert [c.name for c in list_models(tmp_path)] == ["good"]


def test_env_var_adds_model_folders(tmp_path, monkeypatch):
    save_model(_tiny_unet(), _card("from-env"), tmp_path)
    monkeypatch.setenv(MODEL_PATH_ENV, str(tmp_path))
    assert "from-env" in [c.name for c in list_models()]
    model, _ = load_model("from-env")
    assert isinstance(model, UNet3D)


def test_bundled_models_load_and_match_their_hash():
    """Every card shipped in the package loads (its weights exist and the hash matches)."""
    assert WEIGHTS_DIR.is_dir()
    for card in list_models():
        model, loaded = load_model(card.name)
        assert loaded.sha256 == card.sha256
        assert isinstance(model, ARCHITECTURES[card.architecture])


def test_card_json_round_trip_keeps_unknown_keys():
    card = ModelCard.from_dict(_card("c", architecture="unet3d", future_field={"x": 1}))
    assert card.task == "segmentation" and card.weights_file == "c.safetensors"
    again = ModelCard.from_json(card.to_json())
    assert again == card and again.to_dict()["future_field"] == {"x": 1}


def test_card_values_become_strict_json(tmp_path):
    """numpy numbers, tuples and NaN metrics (e.g. HD95 of an empty mask) still save."""
    import numpy as np

    metrics = {"dice": np.float32(0.5), "hd95": float("nan"), "curve": np.arange(2), "t": (1, 2)}
    card = save_model(_tiny_unet(), _card("m", metrics=metrics), tmp_path)
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text
    assert card.metrics == {"dice": 0.5, "hd95": None, "curve": [0, 1], "t": [1, 2]}
    assert ModelCard.from_json(tmp_path / "m.json").metrics == card.metrics
    with pytest.raises(ValueError, match="card.metrics.obj"):
        ModelCard.from_dict(_card("m", architecture="unet3d", metrics={"obj": object()})).to_dict()


def test_topnet_trained_for_segmentation_only():
    card = ModelCard(name="t", architecture="topnet", task="segmentation")
    assert card.task == "segmentation"
    assert ModelCard(name="t", architecture="topnet").task == "topnet"


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"name": "../evil", "architecture": "unet3d"}, "model name"),
        ({"name": "m", "architecture": "resnet"}, "unknown architecture"),
        ({"name": "m", "architecture": "unet3d", "task": "topnet"}, "does task"),
        ({"name": "m", "architecture": "topnet", "task": "detection"}, "does task"),
        ({"name": "m", "architecture": "unet3d", "sha256": "xyz"}, "64 hex"),
        ({"name": "m", "architecture": "unet3d", "weights_file": "../w.safetensors"}, "bare"),
        ({"architecture": "unet3d"}, "required"),
    ],
)
def test_invalid_cards_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        ModelCard.from_dict(bad)


def test_save_refuses_contradicting_card(tmp_path):
    with pytest.raises(ValueError, match="architecture"):
        save_model(_tiny_unet(), _card("m", architecture="topnet"), tmp_path)
    with pytest.raises(ValueError, match="arch_kwargs"):
        save_model(_tiny_unet(), _card("m", arch_kwargs={"widths": [1, 2]}), tmp_path)
    assert not list(tmp_path.iterdir())


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    save_model(_tiny_unet(), _card("m"), tmp_path)
    card = json.loads((tmp_path / "m.json").read_text())
    card["arch_kwargs"]["widths"] = [4, 8]
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="do not fit"):
        load_model(tmp_path / "m.json")
