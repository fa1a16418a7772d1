"""Tests of napari_topo.inference: device pick and sliding-window inference.

Tiny volumes (about 40 x 50 x 60) and tiles of 16-32 voxels keep the whole file fast.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from _arrays import RecordingArray

from napari_topo.inference import (
    Cancelled,
    PercentileNormalizer,
    autocast_context,
    available_devices,
    gaussian_weights,
    normalize_percentile,
    pick_device,
    sliding_window_inference,
    tile_starts,
)

SHAPE = (40, 50, 60)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_follows_the_cpu(monkeypatch, native):
    from napari_topo.inference import device as dev_mod

    monkeypatch.setattr(dev_mod, "cpu_bfloat16_native", lambda: native)
    expected = torch.bfloat16 if native else None
    assert dev_mod.resolve_precision("auto", "cpu") is expected
    assert dev_mod.resolve_precision(None, "cpu") is expected
    assert dev_mod.resolve_precision("float32", "cpu") is None
    # asked for explicitly, bfloat16 runs (emulated where the CPU lacks it)
    assert dev_mod.resolve_precision("bfloat16", "cpu") is torch.bfloat16
    assert dev_mod.resolve_precision("auto", "cuda") is torch.float16
    with pytest.raises(ValueError, match="CUDA only"):
        dev_mod.resolve_precision("float16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        dev_mod.resolve_precision("half", "cpu")
    # TopNet's embedding decides the trees: 'auto' keeps it in float32 on the CPU
    assert dev_mod.resolve_precision("auto", "cpu", embedding=True) is None
    assert dev_mod.resolve_precision("bfloat16", "cpu", embedding=True) is torch.bfloat16


def test_auto_precision_keeps_topnet_in_float32_on_the_cpu(monkeypatch):
    from napari_topo.inference import device as dev_mod
    from napari_topo.inference import predict

    monkeypatch.setattr(dev_mod, "cpu_bfloat16_native", lambda: True)
    vol = np.random.default_rng(1).random((32, 32, 32), dtype=np.float32)
    assert predict(vol, "unet-dice", device="cpu", zoom=1).compute["precision"] == "bfloat16"
    assert predict(vol, "topnet", device="cpu", zoom=1).compute["precision"] == "float32"


def test_bfloat16_gives_the_float32_mask():
    """The fast CPU path changes nothing a user sees: same mask, probabilities close."""
    from napari_topo.data.synthetic import make_vessel_volume
    from napari_topo.inference import predict

    v = make_vessel_volume(shape=(48, 48, 48), seed=2)
    full = predict(v.image, "unet-dice", device="cpu", precision="float32")
    fast = predict(v.image, "unet-dice", device="cpu", precision="bfloat16")
    tiles = "0 of 1 tiles empty, not run"
    assert full.compute == {"device": "cpu", "precision": "float32", "empty tiles": tiles}
    assert fast.compute == {"device": "cpu", "precision": "bfloat16", "empty tiles": tiles}
    p32, p16 = full["vessel"], fast["vessel"]
    assert p16.dtype == np.float32 and p16.shape == p32.shape
    assert 0 < np.abs(p32 - p16).max() < 0.1  # really computed differently, and close
    m32, m16 = p32 > 0.5, p16 > 0.5
    assert 2 * (m32 & m16).sum() / (m32.sum() + m16.sum()) > 0.99


def test_channels_last_on_the_cpu_gives_the_same_probabilities(monkeypatch):
    """oneDNN's faster layout on the CPU changes nothing but float rounding."""
    from napari_topo.data.synthetic import make_vessel_volume
    from napari_topo.inference import device as device_mod
    from napari_topo.inference import predict
    from napari_topo.models.registry import load_model

    assert device_mod.memory_format("cpu") == torch.channels_last_3d
    assert device_mod.memory_format("cpu", ndim=4) == torch.contiguous_format
    assert device_mod.memory_format("cuda") == torch.contiguous_format
    v = make_vessel_volume(shape=(48, 48, 48), seed=2)
    module, card = load_model("topnet")
    fast = predict(v.image, (module, card), device="cpu", precision="float32")
    conv = next(m for m in module.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)  # really used
    monkeypatch.setattr(device_mod, "memory_format", lambda *a, **k: torch.contiguous_format)
    module, card = load_model("topnet")
    plain = predict(v.image, (module, card), device="cpu", precision="float32")
    conv = next(m for m in module.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous()
    for key in ("vessel", "centerness", "embedding"):
        np.testing.assert_allclose(fast[key], plain[key], atol=2e-4)


@pytest.fixture(scope="module")
def vol() -> np.ndarray:
    return np.random.default_rng(0).random(SHAPE, dtype=np.float32)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x




def naive_reference(volume, predictor, tile, overlap, blend="gaussian"):
    """Straightforward full-volume weighted average, one tile at a time (no padding)."""
    acc = None
    wsum = np.zeros(volume.shape, dtype=np.float64)
    w = gaussian_weights(tile).astype(np.float64) if blend == "gaussian" else np.ones(tile)
    for z, y, x in tile_starts(volume.shape, tile, overlap):
        sl = (slice(z, z + tile[0]), slice(y, y + tile[1]), slice(x, x + tile[2]))
        pred = predictor(torch.from_numpy(volume[sl][None, None].copy()))[0].double().numpy()
        if acc is None:
            acc = np.zeros((pred.shape[0], *volume.shape), dtype=np.float64)
        acc[(slice(None), *sl)] += pred * w
        wsum[sl] += w
    return acc / wsum


def local_garbage(x: torch.Tensor) -> torch.Tensor:
    """Depends on the voxel *and* its position inside the tile: blending is visible."""
    tz, ty, tx = x.shape[2:]
    ramp = (
        torch.arange(tz).view(-1, 1, 1) * 0.1
        + torch.arange(ty).view(1, -1, 1) * 0.01
        - torch.arange(tx).view(1, 1, -1) * 0.02
    )
    return torch.cat([torch.sin(3 * x) + ramp, x * ramp], dim=1)


# --------------------------------------------------------------------------- device


def test_pick_device_cpu_and_auto():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(" CPU ") == torch.device("cpu")
    assert pick_device(torch.device("cpu")) == torch.device("cpu")
    assert pick_device("auto").type in {"cuda", "mps", "cpu"}
    assert pick_device(None) == pick_device("auto")
    choices = available_devices()
    assert choices[0] == "auto" and choices[-1] == "cpu"
    for choice in choices:
        pick_device(choice)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_pick_device_missing_cuda():
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda:1")
    assert "cuda" not in available_devices()


def test_pick_device_bad_names():
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        pick_device("gpu0")
    with pytest.raises(ValueError, match="must be a string"):
        pick_device(3)
    if not torch.cuda.is_available():
        if torch.backends.mps.is_available():
            pytest.skip("MPS present")
        with pytest.raises(ValueError, match="MPS is not available"):
            pick_device("mps")


def test_autocast_context_is_noop_on_cpu():
    with autocast_context("cpu"):
        y = torch.ones(3, dtype=torch.float32) @ torch.ones(3, dtype=torch.float32)
    assert y.dtype == torch.float32
    # bfloat16 on the CPU only when asked for (resolve_precision decides when it pays)
    with autocast_context("cpu", dtype=torch.bfloat16):
        y = torch.ones(2, 3) @ torch.ones(3, 2)
    assert y.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="bfloat16"):
        with autocast_context("cpu", dtype=torch.float16):
            pass
    with pytest.raises(ValueError, match="float16 or torch.bfloat16"):
        with autocast_context("cuda", dtype=torch.float32):
            pass


# --------------------------------------------------------------------------- tiling


def test_gaussian_weights():
    w = gaussian_weights((16, 20, 24))
    assert w.shape == (16, 20, 24) and w.dtype == np.float32
    assert w.min() > 0
    np.testing.assert_allclose(w, w[::-1, ::-1, ::-1], rtol=1e-6)  # symmetric
    assert np.unravel_index(w.argmax(), w.shape) in {(7, 9, 11), (8, 10, 12), (7, 10, 12)}
    assert gaussian_weights(64, sigma_scale=0.01).min() > 0  # tiny sigma still positive
    with pytest.raises(ValueError, match="sigma_scale"):
        gaussian_weights(8, sigma_scale=0)


def test_tile_starts_cover_and_flush():
    shape, tile = (40, 50, 60), (16, 24, 32)
    starts = tile_starts(shape, tile, 0.25)
    covered = np.zeros(shape, dtype=int)
    for z, y, x in starts:
        covered[z : z + tile[0], y : y + tile[1], x : x + tile[2]] += 1
    assert covered.min() >= 1
    for axis in range(3):
        assert max(s[axis] for s in starts) + tile[axis] == shape[axis]  # flush with border
    assert tile_starts((8, 8, 8), 16, 0.5) == [(0, 0, 0)]
    assert sorted({s[0] for s in tile_starts((128,) * 3, 64, 0.25)}) == [0, 48, 64]


# --------------------------------------------------------------------------- inference


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize(("tile", "overlap"), [(16, 0.5), ((24, 20, 32), 0.25), (32, 0.0)])
def test_identity_reproduces_input(vol, blend, tile, overlap):
    res = sliding_window_inference(vol, identity, tile=tile, overlap=overlap, blend=blend)
    assert res.shape == (1, *SHAPE) and res.dtype == np.float32
    np.testing.assert_allclose(res[0], vol, rtol=1e-5, atol=1e-6)


def test_constant_predictor_gives_constant_output(vol):
    res = sliding_window_inference(
        vol, lambda x: torch.full_like(x, 3.5), tile=16, overlap=0.4, batch_size=3
    )
    np.testing.assert_allclose(res, 3.5, rtol=1e-5)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("batch_size", [1, 5, 40])
def test_matches_naive_blending(vol, blend, batch_size):
    # batch_size 40 spans several z rows of tiles: exercises the rolling slab.
    tile, overlap = (16, 20, 24), 0.3
    res = sliding_window_inference(
        vol, local_garbage, tile=tile, overlap=overlap, batch_size=batch_size, blend=blend
    )
    ref = naive_reference(vol, local_garbage, tile, overlap, blend)
    assert res.shape == (2, *SHAPE)
    np.testing.assert_allclose(res, ref, rtol=1e-4, atol=1e-5)


def test_dict_outputs(vol):
    def topnet_like(x):
        return {
            "vessel": torch.sigmoid(x),
            "centerness": 1 - x,
            "embedding": torch.cat([x * k for k in range(8)], dim=1),
        }

    res = sliding_window_inference(
        vol,
        topnet_like,
        tile=24,
        out_channels={"vessel": 1, "centerness": 1, "embedding": 8},
    )
    assert set(res) == {"vessel", "centerness", "embedding"}
    assert res["embedding"].shape == (8, *SHAPE)
    np.testing.assert_allclose(res["vessel"][0], 1 / (1 + np.exp(-vol)), rtol=1e-5)
    np.testing.assert_allclose(res["centerness"][0], 1 - vol, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res["embedding"][5], 5 * vol, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_volume_smaller_than_tile(pad_mode):
    small = np.random.default_rng(1).random((5, 12, 40)).astype(np.float64)
    seen = []

    def pred(x):
        seen.append(tuple(x.shape))
        return x * 2

    res = sliding_window_inference(small, pred, tile=16, overlap=0.25, pad_mode=pad_mode)
    assert res.shape == (1, 5, 12, 40)
    assert all(s[2:] == (16, 16, 16) for s in seen)  # the network always gets full tiles
    np.testing.assert_allclose(res[0], 2 * small, rtol=1e-5, atol=1e-6)

    # Padding content reaches the network: zeros versus a mirror of the data.
    def peek(x):
        return x[:, :, 10:11, 0:1, 0:1].expand_as(x).clone()

    res = sliding_window_inference(small[:, :, :16], peek, tile=16, pad_mode=pad_mode)
    expected = 0.0 if pad_mode == "constant" else small[2, 0, 0]  # reflect: 10 -> 2*4-10
    np.testing.assert_allclose(res, expected, rtol=1e-5, atol=1e-6)


def test_integer_and_bool_volumes():
    lab = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 7).astype(np.uint16)
    res = sliding_window_inference(lab, identity, tile=32)
    np.testing.assert_allclose(res[0], lab, rtol=1e-5)
    res = sliding_window_inference(lab > 3, identity, tile=32)
    np.testing.assert_allclose(res[0], lab > 3, atol=1e-6)


def test_plain_array_like_is_read_tile_by_tile(vol):
    src = RecordingArray(vol)
    tile = (16, 20, 24)
    res = sliding_window_inference(src, identity, tile=tile, overlap=0.25)
    np.testing.assert_allclose(res[0], vol, rtol=1e-5, atol=1e-6)
    assert max(src.reads) <= np.prod(tile)
    assert len(src.reads) <= len(tile_starts(SHAPE, tile, 0.25)) + 1  # + the dtype probe


def test_dask_input_is_not_materialised(vol):
    da = pytest.importorskip("dask.array")
    src = RecordingArray(vol)
    chunks = (10, 25, 20)
    lazy = da.from_array(src, chunks=chunks, asarray=False)
    src.reads.clear()
    tile, batch_size = (16, 16, 16), 4
    res = sliding_window_inference(lazy, identity, tile=tile, overlap=0.25, batch_size=batch_size)
    np.testing.assert_allclose(res[0], vol, rtol=1e-5, atol=1e-6)
    chunk_voxels = int(np.prod(chunks))
    assert src.reads and max(src.reads) <= chunk_voxels  # never more than a chunk at a time
    # Each batch touches at most a handful of chunks: total reads stay far below
    # "every chunk once per tile", and nothing was read as a whole volume.
    n_batches = -(-len(tile_starts(SHAPE, tile, 0.25)) // batch_size)
    assert sum(src.reads) <= n_batches * batch_size * 8 * chunk_voxels
    assert sum(src.reads) < 40 * vol.size


def test_dask_nan_is_reported(vol):
    da = pytest.importorskip("dask.array")
    bad = vol.copy()
    bad[30, 40, 50] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        sliding_window_inference(da.from_array(bad, chunks=20), identity, tile=16)


def test_zarr_input_and_outputs(vol):
    zarr = pytest.importorskip("zarr")
    src = zarr.array(vol, chunks=(16, 16, 16))
    out = zarr.zeros((1, *SHAPE), chunks=(1, 16, 25, 30), dtype="float32")
    got = sliding_window_inference(src, identity, tile=24, overlap=0.25, out=out)
    assert got is out
    np.testing.assert_allclose(out[:], vol[None], rtol=1e-5, atol=1e-6)

    outs = {
        "vessel": zarr.zeros((1, *SHAPE), chunks=(1, 20, 50, 60), dtype="float32"),
        "embedding": np.zeros((3, *SHAPE), dtype=np.float16),
    }

    def two_heads(x):
        return {"vessel": x, "embedding": torch.cat([x, -x, x * 0], dim=1)}

    got = sliding_window_inference(src, two_heads, tile=24, out=outs)
    assert got is outs
    np.testing.assert_allclose(outs["vessel"][:][0], vol, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs["embedding"][1], -vol, atol=1e-3)


def test_numpy_out(vol):
    out = np.full((1, *SHAPE), np.nan, dtype=np.float32)
    got = sliding_window_inference(vol, identity, tile=32, out=out)
    assert got is out
    np.testing.assert_allclose(out[0], vol, rtol=1e-5, atol=1e-6)


def test_progress_counts(vol):
    calls = []
    tile = 20
    sliding_window_inference(
        vol, identity, tile=tile, batch_size=3, progress=lambda d, t: calls.append((d, t))
    )
    total = len(tile_starts(SHAPE, tile, 0.25))
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    done = [d for d, _ in calls]
    assert done == sorted(set(done))  # strictly increasing
    assert all(t == total for _, t in calls)
    assert len(calls) == 1 + -(-total // 3)


@pytest.mark.parametrize("kind", ["event", "callable"])
def test_cancel_after_first_batch(vol, kind):
    event = threading.Event()
    cancel = event if kind == "event" else event.is_set
    n_calls = []

    def pred(x):
        n_calls.append(1)
        return x

    out = np.full((1, *SHAPE), 7.0, dtype=np.float32)
    with pytest.raises(Cancelled):
        sliding_window_inference(
            vol,
            pred,
            tile=16,
            batch_size=2,
            cancel=cancel,
            out=out,
            progress=lambda d, t: event.set() if d > 0 else None,
        )
    assert len(n_calls) == 1
    assert not out.any()  # no partial result left behind


def test_cancel_before_start_on_lazy_input(vol):
    da = pytest.importorskip("dask.array")
    with pytest.raises(Cancelled):
        sliding_window_inference(da.from_array(vol, chunks=20), identity, cancel=lambda: True)


def test_predictor_on_module_uses_its_device(vol):
    net = torch.nn.Conv3d(1, 2, 3, padding=1)
    with pytest.warns(UserWarning, match="training mode"):
        sliding_window_inference(vol[:16, :16, :16], net, tile=16)
    net.eval()
    res = sliding_window_inference(vol[:16, :16, :16], net, tile=16)
    with torch.no_grad():
        ref = net(torch.from_numpy(vol[None, None, :16, :16, :16].copy()))[0].numpy()
    np.testing.assert_allclose(res, ref, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("volume", "match"),
    [
        (np.zeros((20, 20)), "3D .* got a 2D array of shape \\(20, 20\\).*2D image"),
        (np.zeros((4, 20, 20, 3)), "4D array.*RGB"),
        (np.zeros((2, 4, 20, 20)), "4D array.*multi-channel"),
        (np.zeros((0, 20, 20)), "empty"),
        (np.zeros((4, 4, 4), dtype=complex), "real numbers"),
        ("not an array", "array-like"),
    ],
)
def test_bad_volume(volume, match):
    with pytest.raises(ValueError, match=match):
        sliding_window_inference(volume, identity, tile=16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile": 0}, "tile must be"),
        ({"tile": (16, 16)}, "tile must be"),
        ({"tile": (16, 16, 16.5)}, "tile must be"),
        ({"tile": (16, -1, 16)}, "tile must be"),
        ({"overlap": 1.0}, "overlap must be"),
        ({"overlap": -0.1}, "overlap must be"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"batch_size": 1.5}, "batch_size must be"),
        ({"blend": "max"}, "blend must be"),
        ({"pad_mode": "wrap"}, "pad_mode must be"),
        ({"device": "tpu"}, "unknown device|not supported"),
        ({"out": np.zeros((1, 4, 4, 4), np.float32)}, "out must have shape"),
        ({"out": np.zeros((1, *SHAPE), np.int32)}, "floating dtype"),
        ({"out": np.zeros((2, *SHAPE), np.float32)}, "2 channel"),
        ({"out_channels": 3}, "out_channels=3"),
        ({"cancel": 5}, "cancel must be"),
    ],
)
def test_bad_arguments(vol, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sliding_window_inference(vol, identity, **{"tile": 16, **kwargs})


def test_nan_voxels_rejected(vol):
    bad = vol.copy()
    bad[3, 4, 5] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values \(first at voxel \(3, 4, 5\)\)"):
        sliding_window_inference(bad, identity, tile=16)


@pytest.mark.parametrize(
    ("predictor", "match"),
    [
        (lambda x: x[:, 0], "output has shape"),
        (lambda x: x[..., :8], "output has shape"),
        (lambda x: {"a": x, "b": x[:, :, :2]}, "output 'b' has shape"),
        (lambda x: x.numpy().tolist(), "must return a torch.Tensor"),
    ],
)
def test_bad_predictor_output(vol, predictor, match):
    with pytest.raises(ValueError, match=match):
        sliding_window_inference(vol, predictor, tile=16)


# --------------------------------------------------------------------------- percentiles


def test_normalize_percentile_numpy(vol):
    norm = normalize_percentile(vol, 1, 99, sample=20_000)
    lo, hi = norm
    assert isinstance(norm, PercentileNormalizer)
    ref_lo, ref_hi = np.percentile(vol, [1, 99])
    assert abs(lo - ref_lo) < 0.02 and abs(hi - ref_hi) < 0.02
    scaled = norm(vol, clip=True)
    assert scaled.min() == 0 and scaled.max() == 1
    t = norm(torch.from_numpy(vol))
    assert isinstance(t, torch.Tensor)
    flat = normalize_percentile(np.full((4, 4, 4), 2.0))
    assert flat == (2.0, 2.0) and not flat(np.full(3, 2.0)).any()
    with pytest.raises(ValueError, match="low < high"):
        normalize_percentile(vol, 99, 1)


def test_normalize_percentile_reads_a_bounded_sample(vol):
    da = pytest.importorskip("dask.array")
    src = RecordingArray(vol)
    lazy = da.from_array(src, chunks=(10, 25, 30), asarray=False)
    src.reads.clear()
    norm = normalize_percentile(lazy, 0.5, 99.5, sample=5_000)
    assert 0 <= norm.lo < 0.05 and 0.95 < norm.hi <= 1
    assert max(src.reads) <= 10 * 25 * 30
