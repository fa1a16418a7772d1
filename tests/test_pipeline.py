"""predict() and segment(): the model-level pipeline the CLI and the widgets call.

Real shipped models on small synthetic volumes (48^3-64^3, a second or two each on the
CPU), plus tiny fake models for the out-of-memory fallbacks.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch
from _arrays import RecordingArray

from napari_topo.data.synthetic import make_vessel_volume
from napari_topo.inference import (
    Cancelled,
    InferenceFallbackWarning,
    predict,
    resample_factors,
    segment,
)
from napari_topo.models.registry import get_card, load_model
from napari_topo.topology.metrics import compute_metrics, dice, tree_accuracy


@pytest.fixture(scope="module")
def vol():
    return make_vessel_volume(shape=(64, 64, 64), seed=5)


@pytest.fixture(scope="module")
def unet():
    return load_model("unet-dice")


# ----------------------------------------------------------------------- outputs


def test_segment_recovers_the_generator_ground_truth(vol):
    analysis = segment(vol.image, "unet-dice", sources=vol.sources, spacing=vol.spacing)
    m = compute_metrics(analysis.mask, vol.mask, spacing=vol.spacing)
    assert m["Dice"] > 0.8 and m["clDice"] > 0.8
    assert analysis.result.n_trees == vol.n_trees
    assert set(np.unique(analysis.trees)) <= set(range(vol.n_trees + 1))
    # what reached the model is recorded: not a CT, so percentiles, whatever the card
    policy = analysis.input_policy
    assert policy.intensity.modality == "microscopy" and policy.intensity.method == "percentile"
    assert policy.intensity.card_method == get_card("unet-dice").normalization["method"]
    # every tree id found is used, and the trees cover the mask exactly
    assert np.array_equal(analysis.trees > 0, analysis.mask)
    assert analysis.radius.shape == (len(analysis.points),) and (analysis.radius > 0).all()


def test_segment_takes_a_volume_read_from_a_file(tmp_path):
    # the README's first Python call: segment(read_volume(path)) failed inside numpy
    # ("setting an array element with a sequence")
    from napari_topo.data.io import read_volume, write_volume
    from napari_topo.geometry import Geometry

    v = make_vessel_volume(shape=(32, 48, 48), seed=3)
    g = Geometry.from_spacing((2.0, 0.5, 0.5), unit="um")
    vol = read_volume(write_volume(tmp_path / "v.tif", v.image.astype(np.float32), geometry=g))
    a = segment(vol, "unet-dice", tile=32)
    assert a.geometry.unit == "um" and np.allclose(a.spacing, (2.0, 0.5, 0.5))
    assert np.array_equal(a.mask, segment(vol.data, "unet-dice", geometry=g, tile=32).mask)
    # its layers carry the file's unit, as the reader's layers do
    from napari_topo.geometry import napari_units

    units = {m.get("units") for _, m, _ in a.to_layers()}
    assert units == {napari_units("um", "zyx")}  # ("um",) * 3; None on napari < 0.6
    if napari_units("um", "zyx") is not None:
        assert units == {("um", "um", "um")}
    two = vol._replace(data=np.stack([vol.data, vol.data]), geometry=None)
    with pytest.raises(ValueError, match="select_channel"):
        segment(two, "unet-dice")


def test_shares_dropped_are_never_read_as_zero():
    # "dropped 7 pieces of the mask (0 % of its voxels)" when they were 0.4 % of it
    from napari_topo.inference.pipeline import percent_text

    assert [percent_text(x) for x in (0, 0.0002, 0.004, 0.0123, 0.78)] == [
        "0 %",
        "< 0.1 %",
        "0.4 %",
        "1 %",
        "78 %",
    ]


def test_segment_trees_on_the_test_distribution():
    # 96^3 is the size of the model comparison's test set; the skeleton baseline labels
    # most of the ground-truth centerline with the right tree there.
    v = make_vessel_volume(shape=(96, 96, 96), seed=10000)
    analysis = segment(v.image, "unet-dice", sources=v.sources, spacing=v.spacing)
    assert tree_accuracy(analysis.trees, v.trees, centerline=v.centerline) > 0.9


def test_topnet_outputs_and_embedding_trees(vol):
    out = predict(vol.image, "topnet", tile=48, device="cpu")
    assert out["vessel"].shape == vol.shape
    assert out["centerness"].shape == vol.shape and (out["centerness"] >= 0).all()
    assert out["embedding"].shape == (8, *vol.shape)
    assert dice(out["vessel"] > 0.5, vol.mask) > 0.6
    analysis = segment(vol.image, "topnet", sources=vol.sources, tile=48, device="cpu")
    assert analysis.method == "embedding-skeleton" and analysis.result.n_trees == vol.n_trees


@pytest.mark.parametrize("seed", [1, 3])
def test_volume_smaller_than_the_tile(seed, unet):
    # 48^3 with the default 64^3 tiles: the padding must not look like vessel (these
    # seeds have dark vessels on a bright background, where zero padding did)
    v = make_vessel_volume(shape=(48, 48, 48), seed=seed)
    small = predict(v.image, unet, tile=64, device="cpu")["vessel"]
    fitted = predict(v.image, unet, tile=48, device="cpu")["vessel"]
    assert dice(small > 0.5, v.mask) > 0.8
    assert abs(dice(small > 0.5, v.mask) - dice(fitted > 0.5, v.mask)) < 0.1


# ----------------------------------------------------------------------- lazy input


def test_dask_volume_is_processed_lazily_into_zarr(vol, unet):
    da = pytest.importorskip("dask.array")
    zarr = pytest.importorskip("zarr")
    src = RecordingArray(vol.image.astype(np.float32))
    chunks = (32, 32, 32)
    lazy = da.from_array(src, chunks=chunks, asarray=False)
    out = {"vessel": zarr.zeros((1, *vol.shape), chunks=(1, 32, 64, 64), dtype="float32")}
    got = predict(lazy, unet, tile=32, overlap=0.25, device="cpu", out=out)
    assert got["vessel"] is out["vessel"] and set(got) == {"vessel"}
    assert got.input_policy.intensity.method == "percentile"
    # never more than one chunk read at a time, never the volume as a whole
    assert src.reads and max(src.reads) <= np.prod(chunks)
    expected = predict(vol.image.astype(np.float32), unet, tile=32, overlap=0.25, device="cpu")
    np.testing.assert_allclose(out["vessel"][0], expected["vessel"], atol=1e-5)


# ----------------------------------------------------------------------- spacing


def test_resample_factors():
    assert resample_factors(None) == (1.0, 1.0, 1.0)
    assert resample_factors((2.0, 0.5, 0.5)) == (4.0, 1.0, 1.0)
    assert resample_factors(0.3, zoom=0.5) == (0.5, 0.5, 0.5)
    for bad in [(1, 2), (0, 1, 1), (np.nan, 1, 1)]:
        with pytest.raises(ValueError, match="spacing"):
            resample_factors(bad)
    with pytest.raises(ValueError, match="zoom"):
        resample_factors(None, zoom=-1)
    # outside CT an axis more than 3x the finest keeps its voxels (zoom still applies)
    assert resample_factors((5.0, 1.0, 1.0), keep_coarse=True) == (1.0, 1.0, 1.0)
    assert resample_factors((5.0, 1.0, 1.0), 0.5, keep_coarse=True) == (0.5, 0.5, 0.5)
    assert resample_factors((3.0, 1.0, 1.0), keep_coarse=True) == (3.0, 1.0, 1.0)
    assert resample_factors((4.0, 2.0, 1.0), keep_coarse=True) == (1.0, 2.0, 1.0)


def test_a_microscopy_stack_runs_on_its_own_slices_and_a_ct_is_made_isotropic(auto_card):
    # Two-photon stacks (5 x 0.994 x 0.994 um) had their z step upsampled 5x to cubic
    # voxels; on its own slices unet-dice's mean vesselNN Dice is 0.707 against 0.626. A CT
    # is still resampled to isotropic voxels whatever its slices (on 3D-IRCADb-01 patient
    # 01 keeping them took Dice from 0.540 to 0.317).
    from test_intensity import ct_phantom, tubes

    stack, mask = tubes((2.0, 3.0), shape=(12, 64, 64))
    net = Identity(gain=10.0, centre=0.5)
    out = predict(stack, (net, auto_card), spacing=(5.0, 1.0, 1.0), zoom=1.0, device="cpu")
    policy = out.input_policy
    assert policy.intensity.modality == "microscopy" and policy.factors == (1.0, 1.0, 1.0)
    assert any("not upsampled" in r and "own slices" in r for r in policy.reasons())
    assert policy.describe().endswith("voxels 5x1x1 (z not upsampled)")
    assert out["vessel"].shape == stack.shape
    assert dice(out["vessel"] > 0.5, mask) > 0.8
    img = ct_phantom(shape=(12, 64, 64))[0]
    ct = predict(img, (net, auto_card), spacing=(2.5, 0.5, 0.5), tile=32, device="cpu")
    assert ct.input_policy.intensity.modality == "ct"
    assert ct.input_policy.factors == pytest.approx((5.0, 1.0, 1.0))  # 0.5 mm cubes
    assert not any("not upsampled" in r for r in ct.input_policy.reasons())
    assert ct["vessel"].shape == img.shape
    # out= (streaming on the input grid): the stack can, the CT cannot
    dest = {"vessel": np.zeros((1, *stack.shape), np.float32)}
    predict(stack, (net, auto_card), spacing=(5.0, 1.0, 1.0), zoom=1.0, out=dest, device="cpu")
    assert dice(dest["vessel"][0] > 0.5, mask) > 0.8
    with pytest.raises(ValueError, match="isotropic ones for a CT"):
        dest = {"vessel": np.zeros((1, *img.shape), np.float32)}
        predict(img, (net, auto_card), spacing=(2.5, 0.5, 0.5), out=dest, device="cpu")


def test_anisotropic_spacing_is_resampled_and_mapped_back(unet):
    # An isotropic volume sampled at every third plane: spacing (3, 1, 1). The model
    # was trained on isotropic voxels; with the spacing it sees them again. (The first
    # models gained 0.05 Dice from it; models trained with anisotropic augmentation
    # gain less, so the test asks that it helps, and that the result is mapped back.)
    v = make_vessel_volume(shape=(96, 64, 64), seed=2)
    image, mask = v.image[::3], v.mask[::3]
    plain = predict(image, unet, device="cpu")
    resampled = predict(image, unet, spacing=(3.0, 1.0, 1.0), device="cpu")
    assert resampled["vessel"].shape == image.shape
    assert resampled.input_policy.factors[0] == pytest.approx(3 * resampled.input_policy.factors[1])
    assert dice(resampled["vessel"] > 0.5, mask) > 0.7
    assert dice(resampled["vessel"] > 0.5, mask) > dice(plain["vessel"] > 0.5, mask)


def test_out_cannot_be_combined_with_resampling(vol, unet):
    with pytest.raises(ValueError, match="resampling"):
        predict(vol.image, unet, spacing=(2, 1, 1), out={"vessel": np.zeros((1, *vol.shape))})


# ----------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("volume", "match"),
    [
        (np.zeros((64, 64), np.float32), "2D"),
        (np.zeros((8, 32, 32, 3), np.float32), "RGB"),
        (np.zeros((0, 32, 32), np.float32), "empty"),
        (np.zeros((32, 32, 32), np.float32), "empty"),
        (np.full((32, 32, 32), 7, np.uint16), "empty"),
        (np.array([[["a"]]]), "real numbers"),
    ],
)
def test_bad_volumes_get_one_clear_line(volume, match, unet):
    with pytest.raises(ValueError, match=match) as info:
        predict(volume, unet, device="cpu")
    assert "\n" not in str(info.value)


def test_nan_voxels_are_reported(vol, unet):
    image = vol.image.astype(np.float32).copy()
    image[10, 20, 30] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        predict(image, unet, device="cpu")


def test_sparse_bright_vessels_still_normalise(unet):
    # fewer vessel voxels than the 99.5th percentile: falls back to the full range
    image = np.zeros((48, 48, 48), np.float32)
    image[20:23, 20:23, 5:40] = 1.0
    out = predict(image, unet, tile=48, device="cpu")["vessel"]
    assert out.shape == image.shape and np.isfinite(out).all()


def test_cancel_raises_and_returns_nothing(vol, unet):
    stop = threading.Event()

    def progress(done, total):
        if done >= 1:
            stop.set()

    with pytest.raises(Cancelled):
        predict(vol.image, unet, tile=32, device="cpu", progress=progress, cancel=stop)


# ----------------------------------------------------------------------- out of memory


class OOMNet(torch.nn.Module):
    """Runs out of 'memory' when a batch holds more than ``limit`` voxels."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        if x.numel() > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return (x - 0.5) * 20 * self.scale


@pytest.fixture
def card():
    return dataclasses.replace(get_card("unet-dice"))


def test_out_of_memory_retries_with_smaller_batches_and_tiles(vol, card):
    net = OOMNet(limit=32**3)
    messages: list[str] = []
    out = predict(
        vol.image, (net, card), tile=64, batch_size=2, device="cpu", on_message=messages.append
    )
    assert [m.split(";")[0] for m in messages] == [
        "out of memory on cpu with tile (64, 64, 64) and batch 2",
        "out of memory on cpu with tile (64, 64, 64) and batch 1",
    ]
    assert net.calls[-1][0] == 1 and net.calls[-1][2:] == (32, 32, 32)
    assert out["vessel"].shape == vol.shape and np.isfinite(out["vessel"]).all()


def test_out_of_memory_warns_by_default_and_gives_up_clearly(vol, card):
    net = OOMNet(limit=0)
    with pytest.warns(InferenceFallbackWarning, match="out of memory"):
        with pytest.raises(MemoryError, match="even with tile"):
            predict(vol.image, (net, card), tile=64, device="cpu")


def test_min_size_drops_specks_but_keeps_vessels():
    from napari_topo.analysis import VesselAnalysis

    prob = np.zeros((24, 24, 40), np.float32)
    prob[10:13, 10:13, :] = 0.9  # a vessel: 360 voxels
    for z in (2, 6, 18):
        prob[z : z + 3, 2:5, 37:40] = 0.8  # specks of 27 voxels on the border
    raw = VesselAnalysis.from_outputs({"vessel": prob})
    clean = VesselAnalysis.from_outputs({"vessel": prob}, min_size=32)
    assert raw.result.n_trees > 1 and clean.result.n_trees == 1  # specks became "trees"
    assert clean.mask.sum() == 360 and clean.mask[10:13, 10:13, :].all()
    with pytest.raises(ValueError, match="min_size"):
        VesselAnalysis.from_outputs({"vessel": prob}, min_size=-1)


# ----------------------------------------------------------------------- input policy


class Identity(torch.nn.Module):
    """A 'model' whose vessel logit is its input: ``gain * (x - centre)``.

    Its probability shows what the model was given; ``seen`` keeps each batch's range.
    """

    def __init__(self, gain: float = 1.0, centre: float = 0.0):
        super().__init__()
        self.gain, self.centre = gain, centre
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.seen: list[tuple[float, float]] = []

    def forward(self, x):
        self.seen.append((float(x.min()), float(x.max())))
        return (x - self.centre) * self.gain * self.scale


AUTO_CARD = {"method": "auto", "ct_window": [-100, 300], "low": 0.5, "high": 99.5,
             "polarity": "bright"}  # fmt: skip


@pytest.fixture
def auto_card(card):
    return dataclasses.replace(card, normalization=dict(AUTO_CARD))


@pytest.fixture
def legacy_card(card):
    """A card of the first models (percentiles only), whatever the shipped cards say."""
    legacy = {"method": "percentile", "low": 0.5, "high": 99.5}
    return dataclasses.replace(card, normalization=legacy)


def test_ct_reaches_an_auto_model_windowed(legacy_card, auto_card):
    # The failure: a percentile-scaled CT gave vessels and liver nearly the same input
    # (models segmented air). The window keeps 60 HU of contrast visible.
    from test_intensity import ct_phantom

    img, vessels, liver, air, _ = ct_phantom()
    net = Identity(gain=40.0, centre=0.6)  # "vessel" above 0.6 of the window (140 HU)
    out = predict(img, (net, auto_card), spacing=(1.0, 0.35, 0.35), tile=32, device="cpu")
    policy = out.input_policy
    assert set(out) == {"vessel"}  # outputs stay arrays; the policy rides beside them
    assert policy.describe() == (
        "CT in HU (detected) window -100..300 HU, bright vessels, zoom 0.7 -> 0.5 mm voxels"
    )
    assert policy.factors == pytest.approx((2.0, 0.7, 0.7))  # 0.5 mm voxels
    assert min(lo for lo, _ in net.seen) >= 0.0 and max(hi for _, hi in net.seen) <= 1.0
    prob = out["vessel"]
    assert prob.shape == img.shape
    assert prob[vessels].mean() > 0.5 > prob[liver].mean() and prob[air].mean() < 0.01
    # the same "model" on the percentile scaling of an earlier card cannot tell them apart
    old = predict(img, (Identity(gain=40.0, centre=0.6), legacy_card), tile=32, device="cpu")
    assert old.input_policy.intensity.method == "percentile"
    sep_old = old["vessel"][vessels].mean() - old["vessel"][liver].mean()
    assert prob[vessels].mean() - prob[liver].mean() > sep_old + 0.3


def test_an_old_card_gets_exactly_the_old_input(legacy_card):
    from test_intensity import tubes

    from napari_topo.inference import normalize_percentile

    img, _ = tubes((2.0, 3.0), dark=True)
    out = predict(img, (Identity(), legacy_card), tile=48, device="cpu")
    ref = normalize_percentile(img, 0.5, 99.5)
    expected = torch.sigmoid(torch.from_numpy(ref(img.astype(np.float32)))).numpy()
    np.testing.assert_allclose(out["vessel"], expected, atol=1e-5)
    policy = out.input_policy
    assert not policy.intensity.invert and policy.factors == (1.0, 1.0, 1.0)


def test_dark_vessels_reach_an_auto_model_bright(auto_card):
    from test_intensity import tubes

    img, mask = tubes((2.0, 3.0), dark=True)
    net = Identity(gain=10.0, centre=0.85)
    out = predict(img, (net, auto_card), tile=48, device="cpu")
    assert out.input_policy.intensity.invert
    assert out["vessel"][mask].mean() > out["vessel"][~mask].mean() + 0.3
    # polarity chosen by hand wins
    out = predict(img, (net, auto_card), polarity="bright", tile=48, device="cpu")
    assert out["vessel"][mask].mean() < out["vessel"][~mask].mean()
    with pytest.raises(ValueError, match="window low must be below high"):
        predict(img, (Identity(), auto_card), window=(300, -100), device="cpu")


def test_auto_zoom_brings_thick_vessels_to_the_trained_radius(auto_card):
    from test_intensity import tubes

    img, mask = tubes((20.0,), shape=(80, 160, 160))
    net = Identity(gain=10.0, centre=0.5)
    out = predict(img, (net, auto_card), tile=32, device="cpu")
    policy = out.input_policy
    assert policy.zoom.source == "vessel-radius" and policy.zoom.zoom < 0.5
    assert all(f == policy.zoom.zoom for f in policy.factors)
    assert out["vessel"].shape == img.shape
    assert dice(out["vessel"] > 0.5, mask) > 0.8  # mapped back onto the input grid
    fixed = predict(img[:, :64, :64], (net, auto_card), zoom=1.0, tile=32, device="cpu")
    assert fixed.input_policy.factors == (1.0, 1.0, 1.0)


def test_out_keeps_the_input_grid_without_an_auto_zoom(auto_card):
    from test_intensity import tubes

    img, _ = tubes((16.0,), shape=(48, 112, 112))
    notes: list[str] = []
    dest = {"vessel": np.zeros((1, *img.shape), np.float32)}
    got = predict(
        img, (Identity(), auto_card), tile=48, device="cpu", out=dest, on_message=notes.append
    )
    assert got.input_policy.zoom.zoom == 1.0 and "out=" in got.input_policy.zoom.reason
    assert any("automatic zoom" in n for n in notes)


def test_the_input_line_names_the_voxel_size_the_model_sees(auto_card):
    # A newcomer's two-photon stack: the CT line said "-> 1.0 mm voxels", a microscopy
    # stack's line said nothing of its voxels, so a wrong --spacing went unnoticed.
    from test_intensity import tubes

    img, _ = tubes((2.0,), shape=(24, 64, 64))
    net = Identity(gain=10.0, centre=0.5)
    out = predict(img, (net, auto_card), spacing=(1.5, 0.5, 0.5), tile=32, device="cpu")
    line = out.input_policy.describe()
    assert line.endswith(", voxels 1.5x0.5x0.5 -> 0.5"), line
    assert out.input_policy.to_dict()["spacing"] == [1.5, 0.5, 0.5]
    # a z step over 3x the pixel size is kept (not a CT): no arrow, and the reason
    kept = predict(img, (net, auto_card), spacing=(2.0, 0.5, 0.5), tile=32, device="cpu")
    assert kept.input_policy.describe().endswith(", voxels 2x0.5x0.5 (z not upsampled)")
    assert "(z 4x)" in kept.input_policy.to_dict()["voxel_grid"]
    assert out.input_policy.to_dict()["voxel_grid"] is None
    iso = predict(img, (net, auto_card), spacing=0.5, tile=32, device="cpu")
    assert iso.input_policy.describe().endswith(", voxels 0.5")
    bare = predict(img, (net, auto_card), tile=32, device="cpu")
    assert ", voxels" not in bare.input_policy.describe()  # no voxel size given
    # with the unit the caller knows (the file's, the layer's), both sizes carry it
    assert line != out.input_policy.describe("um")
    assert out.input_policy.describe("um").endswith(", voxels 1.5x0.5x0.5 um -> 0.5 um")


class Skewed(torch.nn.Module):
    """A fixed convolution with a lopsided kernel: not mirror-symmetric."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.linspace(-2, 6, 27).reshape(1, 1, 3, 3, 3))
        self.calls = 0

    def forward(self, x):
        self.calls += x.shape[0]
        return self.conv(x) - 1.0


@pytest.mark.parametrize("tta", [2, 4, 8])
def test_test_time_mirroring_averages_the_mirrored_predictions(auto_card, tta):
    from napari_topo.inference.pipeline import mirror_flips

    img = np.random.default_rng(0).random((32, 32, 32), dtype=np.float32)
    net = Skewed()
    # uniform noise: a tile the empty-tile test would not run
    kw = dict(tile=32, device="cpu", zoom=1.0, precision="float32", skip_empty_tiles=False)
    plain = predict(img, (net, auto_card), **kw)
    calls = net.calls
    mirrored = predict(img, (net, auto_card), tta=tta, **kw)
    assert net.calls - calls == tta * calls  # one forward pass per mirrored copy
    # one tile covers the volume: the result is the mean of the un-mirrored predictions
    x = torch.from_numpy(mirrored.input_policy.normalizer(img))[None, None]
    with torch.no_grad():
        want = (
            sum(torch.flip(torch.sigmoid(net(torch.flip(x, d))), d) for d in mirror_flips(tta))
            / tta
        )
    np.testing.assert_allclose(mirrored["vessel"], want[0, 0].numpy(), atol=1e-5)
    assert not np.allclose(mirrored["vessel"], plain["vessel"], atol=1e-3)


def test_test_time_mirroring_keeps_topnets_embedding_and_refuses_bad_counts(vol):
    small = vol.image[:48, :48, :48]
    kw = dict(tile=48, device="cpu", zoom=1.0)
    one = predict(small, "topnet", **kw)
    two = predict(small, "topnet", tta=2, **kw)
    np.testing.assert_array_equal(one["embedding"], two["embedding"])
    assert not np.array_equal(one["vessel"], two["vessel"])
    for bad in (0, 3, True, "8"):
        with pytest.raises(ValueError, match="tta must be 1"):
            predict(small, "topnet", tta=bad, **kw)


def test_roi_keeps_results_inside_the_region_grown_by_its_margin(unet):
    from napari_topo.inference import grow_roi

    v = make_vessel_volume(shape=(64, 64, 64), seed=5)
    roi = np.zeros(v.image.shape, bool)
    roi[:, :, :32] = True  # e.g. a liver mask: the left half
    kw = dict(device="cpu", zoom=1.0)
    whole = segment(v.image, unet, **kw)
    assert whole.mask[:, :, 40:].any()  # vessels on both sides
    inside = segment(v.image, unet, roi=roi, **kw)
    assert not inside.mask[:, :, 32:].any() and inside.mask[:, :, :32].any()
    np.testing.assert_array_equal(inside.mask[:, :, :28], whole.mask[:, :, :28])
    grown = segment(v.image, unet, roi=roi, roi_margin=4.0, spacing=2.0, **kw)
    assert grown.mask[:, :, 32:34].any() and not grown.mask[:, :, 35:].any()  # 4 units = 2 voxels
    # the growth is Euclidean in physical units
    region = grow_roi(roi, 3.0, spacing=(1.0, 1.0, 1.5))
    assert region[:, :, 33].all() and not region[:, :, 34].any()
    for bad, match in [
        (roi[0], "3D"),
        (roi[:, :, :10], "shape"),
        (np.zeros_like(roi), "empty"),
        (np.full(roi.shape, np.nan), "NaN"),
    ]:
        with pytest.raises(ValueError, match=match):
            segment(v.image, unet, roi=bad, **kw)
    with pytest.raises(ValueError, match="roi_margin"):
        grow_roi(roi, -1.0)


def test_vessel_range_drops_whole_pieces_of_other_intensities(auto_card):
    # On the development CT every model also marked a muscle sheet (40-60 HU), ribs and
    # vertebrae (above 300 HU) by shape; in HU a contrast-filled lumen is neither.
    import cc3d
    from scipy import ndimage as ndi

    from napari_topo.inference import drop_pieces_outside

    hu = np.zeros((20, 20, 40), np.int16)
    prob = np.zeros(hu.shape, np.float32)
    for x0, value in ((2, 200), (12, 50), (22, 800)):  # lumen, muscle, bone
        hu[5:10, 5:10, x0 : x0 + 5] = value
        prob[5:10, 5:10, x0 : x0 + 5] = 0.9
    hu[5:10, 5:10, 32:35], hu[5:10, 5:10, 35:37] = 200, 600  # mostly lumen, touching bone
    prob[5:10, 5:10, 32:37] = 0.9
    outputs = {"vessel": prob.copy()}
    assert drop_pieces_outside(outputs, hu, (100, 300)) == 2
    kept = outputs["vessel"] > 0.5
    assert kept[5:10, 5:10, 2:7].all() and kept[5:10, 5:10, 32:37].all()  # kept whole
    assert not kept[:, :, 12:27].any()
    # through segment, on a CT phantom: every piece left has a median in the range
    from test_intensity import ct_phantom

    img, vessels, _, _, bone = ct_phantom(shape=(24, 64, 64))
    net = Identity(gain=40.0, centre=0.6)  # "vessel" above 0.6 of the window (140 HU)
    kw = dict(spacing=0.5, zoom=1.0, tile=32, device="cpu", min_size=0)
    plain = segment(img, (net, auto_card), vessel_range=None, **kw)
    gated = segment(img, (net, auto_card), vessel_range=(100, 300), **kw)
    assert plain.mask[bone].any() and not gated.mask[bone].any()
    assert plain.vessel_range is None and gated.vessel_range == (100.0, 300.0)
    assert gated.pieces_dropped > 0
    # "auto" (the default) applies it to a CT in HU and to nothing else
    auto = segment(img, (net, auto_card), **kw)
    assert auto.vessel_range == (100.0, 300.0)
    np.testing.assert_array_equal(auto.mask, gated.mask)
    micro = segment(img, (net, auto_card), modality="microscopy", **kw)
    assert micro.vessel_range is None
    assert gated.mask[vessels].mean() > 0.9 and plain.mask[vessels].mean() > 0.9
    labels, n = cc3d.connected_components(gated.mask, connectivity=26, return_N=True)
    medians = ndi.median(img, labels, index=np.arange(1, n + 1))
    assert all(100 <= m <= 300 for m in np.atleast_1d(medians))
    for bad in [(300, 100), (0, np.nan), (1,), "100 300", "on"]:
        with pytest.raises(ValueError, match="vessel_range"):
            segment(img, (net, auto_card), vessel_range=bad, **kw)


def test_vessel_range_keeps_the_piece_a_root_is_in(auto_card):
    # On the development CT, a network that joined the vessel tree to the body wall (a
    # muscle ring at 40-60 HU) lost the whole tree to the vessel range: Dice 0.33 -> 0.06.
    # The user's roots say where trees are: their pieces stay, the rest is judged as before.
    from napari_topo.inference import drop_pieces_outside

    hu = np.full((16, 24, 48), -1000, np.int16)
    hu[:, :, 4:] = 50  # muscle
    z, y, x = np.indices(hu.shape)
    r2 = (z - 8) ** 2 + (y - 8) ** 2
    vessel = (r2 <= 4) & (x >= 4) & (x < 16)
    block = (r2 <= 16) & (x >= 16) & (x < 44)  # bone-bright, larger than the vessel
    lone = (z >= 13) & (z < 15) & (y >= 18) & (y < 22) & (x >= 6) & (x < 40)  # apart
    hu[vessel], hu[block] = 200, 800
    prob = np.where(vessel | block | lone, 0.9, 0.0).astype(np.float32)
    assert np.median(hu[vessel | block]) > 300  # the joined piece is bone-like

    out = {"vessel": prob.copy()}
    assert drop_pieces_outside(out, hu, (100, 300)) == 2
    assert not (out["vessel"] > 0.5).any()  # the vessel went with the block
    root = np.array([[8.0, 8.0, 5.0]])  # in the vessel
    out = {"vessel": prob.copy()}
    assert drop_pieces_outside(out, hu, (100, 300), keep=root) == 1
    np.testing.assert_array_equal(out["vessel"] > 0.5, vessel | block)
    # a root beside the mask (as users click) keeps the piece it snaps to
    out = {"vessel": prob.copy()}
    near = np.array([[8.0, 8.0, 1.0]])  # 3 voxels before the vessel's end
    assert drop_pieces_outside(out, hu, (100, 300), keep=near, spacing=(1.0, 0.5, 0.5)) == 1
    assert (out["vessel"][vessel] > 0.5).all()
    # a root far from every piece (its own vessel missed) keeps nothing: the nearest
    # piece could be the bone beside it
    out = {"vessel": prob.copy()}
    far = np.array([[8.0, 8.0, 0.0], [2.0, 20.0, 46.0]])  # 4 and 6 voxels away
    assert drop_pieces_outside(out, hu, (100, 300), keep=far) == 2
    with pytest.raises(ValueError, match="keep must be"):
        drop_pieces_outside({"vessel": prob.copy()}, hu, (100, 300), keep=[8, 8, 5])
    # through segment: its sources are the roots kept; the share dropped is reported
    net = Identity(gain=40.0, centre=0.6)  # "vessel" above 140 HU: the vessel and block
    kw = dict(zoom=1.0, tile=16, device="cpu", min_size=0, modality="ct")
    lost = segment(hu, (net, auto_card), vessel_range=(100, 300), **kw)
    assert not lost.mask.any() and lost.pieces_dropped == 1 and lost.dropped_share == 1.0
    kept = segment(hu, (net, auto_card), vessel_range=(100, 300), sources=root, **kw)
    assert kept.mask[vessel].all() and kept.pieces_dropped == 0
    assert kept.dropped_share == 0.0 and kept.result.n_trees == 1


def test_a_root_keeps_its_vessel_not_the_bone_it_is_joined_to():
    # A newcomer opened the development CT in napari (whose reader shows it with y and x
    # reversed); unet-dice's mask there joined bone, skin and muscle into one piece of
    # 1.6 million voxels (median 88 HU) beside the portal root, which kept it whole: 13 %
    # of the mask dropped instead of 78 %, Dice 0.31 instead of 0.53. Now the piece is
    # cut where thin like any other and the root keeps the part it lies on (0.46).
    from napari_topo.inference import drop_pieces_outside

    hu = np.full((20, 24, 64), -1000, np.int16)
    z, y, x = np.indices(hu.shape)
    r2 = (z - 10) ** 2 + (y - 12) ** 2
    vessel = (r2 <= 9) & (x >= 2) & (x < 20)  # radius 3, 200 HU
    bridge = (r2 <= 1) & (x >= 20) & (x < 24)  # thin
    bone = (r2 <= 36) & (x >= 24) & (x < 62)  # radius 6, 800 HU: most of the piece
    hu[vessel | bridge], hu[bone] = 200, 800
    prob = np.where(vessel | bridge | bone, 0.9, 0.0).astype(np.float32)
    assert np.median(hu[vessel | bridge | bone]) > 300  # the piece fails as a whole
    for root in ([[10.0, 12.0, 5.0]], [[10.0, 12.0, 0.0]]):  # on the vessel; beside it
        out = {"vessel": prob.copy()}
        assert drop_pieces_outside(out, hu, (100, 300), keep=root) == 1
        kept = out["vessel"] > 0.5
        assert kept[vessel].all() and not kept[bone].any()
    # a root on the bone keeps the bone's part (the user said it is a vessel)
    out = {"vessel": prob.copy()}
    assert drop_pieces_outside(out, hu, (100, 300), keep=[[10.0, 12.0, 40.0]]) == 1
    kept = out["vessel"] > 0.5
    assert kept[bone].all() and kept[vessel].all()  # the vessel's part is in range


def test_vessel_range_splits_a_piece_where_it_is_thin():
    # On a crop of the development CT (the lower half of the liver), unet-dice joined the
    # vessel tree through a thin bridge to a sheet of muscle three times its size: the
    # piece's median was muscle and the whole tree was dropped (Dice 0.26 -> 0.04). Cut
    # at the bridge, the tree's part is judged on its own.
    from napari_topo.inference import drop_pieces_outside

    hu = np.full((20, 40, 64), -100, np.int16)  # fat
    z, y, x = np.indices(hu.shape)
    vessel = ((z - 10) ** 2 + (y - 10) ** 2 <= 9) & (x >= 4) & (x < 60)
    muscle = (z >= 4) & (z < 16) & (y >= 20) & (y < 36) & (x >= 4) & (x < 60)
    bridge = (z == 10) & (x == 30) & (y >= 10) & (y < 20)  # one voxel thick
    hu[muscle | bridge], hu[vessel] = 50, 200
    # a second tube on the muscle's far side, only partly bright: its median is inside
    # the range but a quarter of it is not
    mixed = ((z - 10) ** 2 + (y - 37) ** 2 <= 2) & (x >= 4) & (x < 60)
    hu[mixed] = np.where(x[mixed] % 5 < 2, 50, 200)
    piece = vessel | muscle | bridge | mixed
    assert np.median(hu[piece]) < 100  # as a whole, muscle
    prob = np.where(piece, 0.9, 0.0).astype(np.float32)

    out = {"vessel": prob.copy()}
    assert drop_pieces_outside(out, hu, (100, 300), spacing=(1.0, 1.0, 1.0)) == 1
    kept = out["vessel"] > 0.5
    assert kept[vessel].all()  # the vessel kept whole ...
    assert not kept[muscle | mixed].any()  # ... the muscle and the mixed tube dropped
    assert not (kept & ~(vessel | bridge)).any()  # (the bridge's end goes with the vessel)
    # fused by a thick slab instead (one core), the piece is judged whole as before
    slab = (z >= 7) & (z < 14) & (y >= 12) & (y < 22) & (x >= 4) & (x < 60)
    fused_hu = np.where(slab & ~vessel, 50, hu).astype(np.int16)
    out = {"vessel": np.where(vessel | muscle | slab, 0.9, 0.0).astype(np.float32)}
    assert drop_pieces_outside(out, fused_hu, (100, 300)) == 1
    assert not (out["vessel"] > 0.5).any()


def test_vessel_range_drops_small_pieces_whole(monkeypatch):
    # Two 4-voxel cubes, one of vessel intensity, joined by a thin bridge: 147 voxels, under
    # SPLIT_MIN_SIZE, so the piece is dropped whole; split, the bright cube would stay.
    from napari_topo.inference import drop_pieces_outside, pipeline

    hu = np.full((12, 12, 24), -100, np.int16)
    piece = np.zeros(hu.shape, bool)
    piece[4:8, 4:8, 2:6] = True  # 64 voxels at 200 HU
    hu[4:8, 4:8, 2:6] = 200
    piece[4:8, 4:8, 9:14] = True  # 80 voxels of muscle
    hu[4:8, 4:8, 9:14] = 50
    piece[5, 5, 6:9] = True  # the bridge
    hu[5, 5, 6:9] = 50
    assert piece.sum() < pipeline.SPLIT_MIN_SIZE and np.median(hu[piece]) < 100
    prob = np.where(piece, 0.9, 0.0).astype(np.float32)
    out = {"vessel": prob.copy()}
    assert drop_pieces_outside(out, hu, (100, 300)) == 1 and not out["vessel"].any()
    monkeypatch.setattr(pipeline, "SPLIT_MIN_SIZE", 0)
    out = {"vessel": prob.copy()}
    drop_pieces_outside(out, hu, (100, 300))
    assert (out["vessel"][4:8, 4:8, 2:6] > 0.5).all() and not out["vessel"][:, :, 9:].any()


def test_vessel_range_judges_pieces_before_the_roi_cuts_them(auto_card):
    # A newcomer's liver CT with --roi: a piece the default dropped whole (median above
    # 300 HU) was cut by the region first, and its inside part (lumen-like HU) was kept.
    hu = np.full((16, 16, 48), -1000, np.int16)
    hu[:, :, 8:] = 40
    hu[6:10, 6:10, 10:20] = 200  # the part inside the region
    hu[6:10, 6:10, 20:44] = 800  # the larger part outside: the piece's median is bone
    roi = np.zeros(hu.shape, bool)
    roi[:, :, :20] = True
    net = Identity(gain=40.0, centre=0.6)  # "vessel" above 140 HU
    kw = dict(zoom=1.0, tile=16, device="cpu", min_size=0, modality="ct")
    whole = segment(hu, (net, auto_card), vessel_range=(100, 300), **kw)
    assert not whole.mask.any()
    inside = segment(hu, (net, auto_card), vessel_range=(100, 300), roi=roi, **kw)
    assert not inside.mask.any()
    np.testing.assert_array_equal(inside.region, roi)  # the region applied, as grown
    off = segment(hu, (net, auto_card), vessel_range=None, roi=roi, **kw)
    assert off.mask[:, :, 10:20].any() and not off.mask[:, :, 20:].any()


def test_predict_mirrored_is_predict_on_the_mirrored_volume_mirrored_back(tmp_path):
    # the Segment dock runs a file the reader shows mirrored (LPS) in the file's order
    from types import SimpleNamespace

    from napari_topo._plugin import read_volumes
    from napari_topo.data.io import write_volume
    from napari_topo.geometry import Geometry, reader_flips
    from napari_topo.inference.pipeline import predict, predict_mirrored

    image = make_vessel_volume(shape=(32, 32, 32), seed=2).image.astype(np.float32)
    kw = {"tile": 32, "device": "cpu", "precision": "float32", "spacing": 1.0}
    mirrored = predict_mirrored(image, (2, 1), "unet-dice", **kw)
    direct = predict(image[:, ::-1, ::-1], "unet-dice", **kw)
    np.testing.assert_array_equal(mirrored["vessel"], direct["vessel"][:, ::-1, ::-1])
    assert mirrored["vessel"].flags.c_contiguous and mirrored.input_policy is not None
    plain = predict(image, "unet-dice", **kw)
    assert not np.array_equal(mirrored["vessel"], plain["vessel"])  # not mirror-symmetric
    np.testing.assert_array_equal(
        predict_mirrored(image, (), "unet-dice", **kw)["vessel"], plain["vessel"]
    )
    with pytest.raises(ValueError, match="spatial axes"):
        predict_mirrored(image, (3,), "unet-dice", **kw)
    zarr = pytest.importorskip("zarr")  # takes no negative steps: read first
    z = zarr.array(image, chunks=(16, 16, 16))
    np.testing.assert_array_equal(
        predict_mirrored(z, (1, 2), "unet-dice", **kw)["vessel"], mirrored["vessel"]
    )

    # which axes: from the file's geometry the reader keeps in the layer's metadata
    def layer(path):
        data, meta, _kind = read_volumes(str(path))[0]
        return SimpleNamespace(
            data=data,
            ndim=3,
            metadata=meta["metadata"],
            scale=meta.get("scale"),
            translate=meta.get("translate"),
            rotate=None,
            shear=None,
            affine=None,
        )

    lps = Geometry(np.diag([2.0, -2.0, -2.0, 1.0]), "zyx", unit="mm")
    las = Geometry(np.diag([2.0, 2.0, -2.0, 1.0]), "zyx", unit="mm")
    ras = Geometry(np.diag([2.0, 2.0, 2.0, 1.0]), "zyx", unit="mm")
    assert reader_flips(layer(write_volume(tmp_path / "lps.nii.gz", image, geometry=lps))) == (1, 2)
    assert reader_flips(layer(write_volume(tmp_path / "las.nii.gz", image, geometry=las))) == (2,)
    assert reader_flips(layer(write_volume(tmp_path / "ras.nii.gz", image, geometry=ras))) == ()
    assert reader_flips(SimpleNamespace(data=image, ndim=3, metadata={})) == ()  # not a file
    # an oblique LPS scan (5 degrees about z): the reader mirrors its nearest axes too
    c, s5 = np.cos(np.radians(5)), np.sin(np.radians(5))
    tilt = np.eye(4)
    tilt[1:3, 1:3] = [[c, -s5], [s5, c]]
    oblique = Geometry(tilt @ np.diag([2.0, -2.0, -2.0, 1.0]), "zyx", unit="mm")
    tilted = layer(write_volume(tmp_path / "oblique.nii.gz", image, geometry=oblique))
    np.testing.assert_array_equal(np.asarray(tilted.data), image[:, ::-1, ::-1])
    assert reader_flips(tilted) == (1, 2)
