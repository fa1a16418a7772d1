"""The input policy (napari_topo.inference.intensity): CT window, percentiles, polarity, zoom.

Synthetic volumes only, built here so that they stay fixed while the training generator
changes: a CT-like int16 volume in Hounsfield units (air outside a body, fat, liver with
noise, contrast-filled vessels, bone plates), and uint16 "microscopy" stacks of straight
tubes, bright or dark, thin or thick. Each test names the failure it guards against.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _arrays import RecordingArray

from napari_topo.inference.intensity import (
    AUTO_NORMALIZATION,
    DEFAULT_CT_WINDOW,
    LEGACY_NORMALIZATION,
    IntensityNormalizer,
    card_normalization,
    estimate_vessel_radius,
    looks_like_hu,
    plan_input,
    plan_intensity,
    plan_zoom,
    polarity_skewness,
    strided_sample,
)
from napari_topo.inference.sliding import normalize_percentile

AUTO = AUTO_NORMALIZATION
LEGACY = LEGACY_NORMALIZATION


# ------------------------------------------------------------------------------ volumes


def ct_phantom(shape=(40, 96, 96), seed=0):
    """An abdomen-like int16 CT in HU: (image, vessels, liver, body, bone) masks."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=np.float32)
    _, ny, nx = shape
    body = ((y - ny / 2) / (0.45 * ny)) ** 2 + ((x - nx / 2) / (0.45 * nx)) ** 2 <= 1
    fat = body & ~(((y - ny / 2) / (0.40 * ny)) ** 2 + ((x - nx / 2) / (0.40 * nx)) ** 2 <= 1)
    liver = ((y - 0.45 * ny) / (0.28 * ny)) ** 2 + ((x - 0.45 * nx) / (0.30 * nx)) ** 2 <= 1
    vessels = np.zeros(shape, bool)
    for cy, cx, r in [(0.40, 0.35, 3.0), (0.50, 0.50, 2.0), (0.45, 0.60, 2.5)]:
        vessels |= (y - cy * ny) ** 2 + (x - cx * nx) ** 2 <= r * r
    vessels &= liver
    bone = body & (
        ((y - 0.82 * ny) ** 2 + (x - nx / 2) ** 2 <= (0.06 * ny) ** 2)  # a vertebra
        | ((np.abs(y - 0.15 * ny) < 2) & (np.abs(x - nx / 2) < 0.3 * nx))  # a plate
    )
    img = np.full(shape, -1000.0, np.float32)  # air
    img[body] = 40.0  # soft tissue
    img[fat] = -100.0
    img[liver] = 110.0
    img[vessels] = 170.0  # portal-venous contrast
    img[bone] = rng.uniform(700, 1000, size=int(bone.sum()))
    img += rng.normal(0.0, 20.0, shape) * body
    return np.round(img).astype(np.int16), vessels, liver & ~vessels, ~body, bone


def tubes(radii, shape=(48, 96, 96), *, dark=False, seed=0, cnr=6.0):
    """uint16 straight tubes along x, bright (or dark) on a noisy background; (image, mask)."""
    rng = np.random.default_rng(seed)
    z, y, _ = np.indices(shape, dtype=np.float32)
    mask = np.zeros(shape, bool)
    for i, r in enumerate(radii):
        cz = shape[0] / 2 + (0 if len(radii) == 1 else (i % 2 - 0.5) * 0.3 * shape[0])
        cy = shape[1] * (i + 1) / (len(radii) + 1)
        mask |= (z - cz) ** 2 + (y - cy) ** 2 <= r * r
    sigma, background = 20.0, 300.0
    contrast = cnr * sigma * (-1 if dark else 1)
    img = background + contrast * mask + rng.normal(0.0, sigma, shape)
    return np.clip(img, 0, None).astype(np.uint16), mask


@pytest.fixture(scope="module")
def ct():
    return ct_phantom()


@pytest.fixture(scope="module")
def bright():
    return tubes((1.5, 2.5, 3.0, 4.0))


@pytest.fixture(scope="module")
def dark():
    return tubes((1.5, 2.5, 3.0, 4.0), dark=True)


# ------------------------------------------------------------------------------ CT


def test_ct_in_hu_is_windowed_so_vessels_stand_out_from_liver(ct):
    # The failure: percentiles over air and bone squeezed 60 HU of vessel-liver contrast
    # into 3 % of the range, and the models segmented air.
    img, vessels, liver, air, bone = ct
    plan = plan_intensity(img, AUTO)
    assert plan.modality == "ct" and plan.modality_source == "detected"
    assert plan.method == "window" and plan.window == DEFAULT_CT_WINDOW and plan.clip
    assert plan.polarity == "bright" and not plan.invert
    assert "1st percentile -1000" in plan.modality_reason
    norm = plan(img.astype(np.float32))
    assert norm.min() == 0.0 and norm.max() == 1.0
    assert np.all(norm[air] == 0.0) and np.mean(norm[bone] == 1.0) > 0.99
    contrast = norm[vessels].mean() - norm[liver].mean()
    assert contrast > 0.1  # 60 HU of 400; percentiles over -1000..1000 give 0.03
    old = plan_intensity(img, LEGACY)
    old_norm = old(img.astype(np.float32))
    assert old_norm[vessels].mean() - old_norm[liver].mean() < 0.05  # what went wrong
    assert plan.describe() == "CT in HU (detected) window -100..300 HU, bright vessels"


def test_hu_detection_rules(ct):
    img = ct[0]
    assert looks_like_hu(img)[0]
    assert looks_like_hu(img.astype(np.float32))[0]  # whole numbers in a float NIfTI
    is_hu, why = looks_like_hu(img.astype(np.float32) + 0.5)
    assert not is_hu and "fractional" in why
    # unsigned data is never HU (e.g. a CT stored with +1024 and no intercept)
    is_hu, why = looks_like_hu((img.astype(np.int32) + 1024).astype(np.uint16))
    assert not is_hu and "uint16" in why
    # no air: soft tissue only
    assert not looks_like_hu(np.clip(img, 0, None))[0]
    # beyond the HU scale
    wide = img.astype(np.int32)
    wide[0, 0, :5] = 20000
    assert "range" in looks_like_hu(wide)[1]
    # -32768 outside the scanner's field of view is padding, not a reason to give up
    padded = img.copy()
    padded[:, :12, :12] = -32768
    is_hu, why = looks_like_hu(padded)
    assert is_hu and "padding -32768" in why
    assert plan_intensity(padded, AUTO).modality == "ct"


def test_header_hint_decides_when_values_cannot(ct):
    img = ct[0].astype(np.float32) + 0.5  # fractional: not detected from the values
    assert plan_intensity(img, AUTO).modality == "microscopy"
    plan = plan_intensity(img, AUTO, header_hint="CT")
    assert plan.modality == "ct" and plan.modality_source == "header"
    assert plan_intensity(ct[0], AUTO, header_hint="MR").modality == "microscopy"


# ------------------------------------------------------------------------------ microscopy


def test_uint16_microscopy_keeps_percentiles(bright):
    img, mask = bright
    plan = plan_intensity(img, AUTO)
    assert plan.modality == "microscopy" and plan.method == "percentile"
    assert plan.percentiles == (0.5, 99.5) and not plan.clip
    assert plan.polarity == "bright" and not plan.invert
    ref = normalize_percentile(img, 0.5, 99.5)
    assert (plan.lo, plan.hi) == (ref.lo, ref.hi)
    norm = plan(img.astype(np.float32))
    assert norm[mask].mean() > np.median(norm[~mask]) + 0.5
    assert norm.max() > 1.0  # not clipped, as before


def test_dark_vessels_are_detected_and_inverted(dark, bright):
    # 30 % of the earlier training volumes had dark vessels, which taught the models that
    # dark tubes (air in a CT) are vessels; the new models only see bright ones.
    img, mask = dark
    plan = plan_intensity(img, AUTO)
    assert plan.polarity == "dark" and plan.polarity_source == "detected" and plan.invert
    assert "skewness" in plan.polarity_reason
    norm = plan(img.astype(np.float32))
    assert norm[mask].mean() > np.median(norm[~mask]) + 0.3  # vessels now bright
    assert plan_intensity(bright[0], AUTO).polarity == "bright"
    # a plain noisy background (no vessels) stays bright, the default
    noise = np.random.default_rng(1).normal(300, 20, (32, 64, 64)).astype(np.float32)
    assert plan_intensity(noise, AUTO).polarity == "bright"
    # a CT look already windowed to [0, 1] (not HU): bright, though air and bone make
    # its plain histogram skew little
    windowed = np.clip((ct_phantom()[0].astype(np.float32) + 100) / 400, 0, 1)
    assert plan_intensity(windowed, AUTO).polarity == "bright"


def test_polarity_of_the_classic_generator():
    # The plugin's sample data and many tests use the classic look, 30 % of it with dense
    # dark networks (10 % of the voxels) on a textured background. A skewness of the plain
    # histogram called some of them bright (-0.35 to -0.74), and a bright-vessel model then
    # found nothing (Dice 0.0 on seed 5).
    from napari_topo.data.synthetic import make_vessel_volume

    for seed in range(24):  # dark: 5, 6, 7, 14, 19, 20
        v = make_vessel_volume(shape=(64, 64, 64), seed=seed)
        expected = "dark" if v.params["polarity"] < 0 else "bright"
        assert plan_intensity(v.image, AUTO).polarity == expected, seed
    assert abs(polarity_skewness(np.ones((8, 8, 8)))) < 1e-9


def test_explicit_choices_win(ct, dark):
    img = ct[0]
    plan = plan_intensity(img, AUTO, modality="microscopy")
    assert plan.modality == "microscopy" and plan.method == "percentile"
    plan = plan_intensity(img, AUTO, window=(-200, 400))
    assert (plan.lo, plan.hi, plan.clip) == (-200.0, 400.0, True)
    assert plan.scaling_source == "user" and "(chosen)" in plan.describe()
    plan = plan_intensity(img, AUTO, polarity="dark")
    assert plan.polarity == "dark" and plan.invert and plan.polarity_source == "user"
    d = dark[0]
    plan = plan_intensity(d, AUTO, polarity="bright")
    assert plan.polarity == "bright" and not plan.invert
    plan = plan_intensity(d, AUTO, modality="ct")
    assert plan.modality == "ct" and plan.window == DEFAULT_CT_WINDOW
    # an explicit window on a non-CT maps without clipping, like the percentiles
    plan = plan_intensity(d, AUTO, window=(0, 1000), modality="microscopy")
    assert (plan.lo, plan.hi, plan.clip) == (0.0, 1000.0, False)
    # a CT chosen by hand is windowed even with an earlier card
    assert plan_intensity(img, LEGACY, modality="ct").method == "window"
    # the card's own window
    card = {**AUTO, "ct_window": [-50, 250]}
    assert plan_intensity(img, card).window == (-50.0, 250.0)


def test_old_cards_keep_percentiles_without_inversion(ct, dark):
    # Models trained before the policy keep exactly their earlier input.
    for img in (ct[0], dark[0]):
        plan = plan_intensity(img, LEGACY)
        ref = normalize_percentile(img, 0.5, 99.5)
        assert plan.method == "percentile" and (plan.lo, plan.hi) == (ref.lo, ref.hi)
        assert not plan.clip and not plan.invert
        x = img.astype(np.float32)
        np.testing.assert_array_equal(plan(x), ref(x))
    assert plan_intensity(ct[0], LEGACY).modality == "ct"  # still said
    assert "percentiles only" in plan_intensity(ct[0], LEGACY).describe()
    assert plan_intensity(ct[0], None).method == "percentile"  # no normalization: legacy
    # sparse bright structures: the full range, as before
    sparse = np.zeros((48, 48, 48), np.float32)
    sparse[20:23, 20:23, 5:40] = 1.0
    plan = plan_intensity(sparse, LEGACY)
    assert (plan.lo, plan.hi) == (0.0, 1.0)


def test_constant_volume_is_empty():
    with pytest.raises(ValueError, match="empty"):
        plan_intensity(np.full((16, 16, 16), 7, np.uint16), AUTO)


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": (300, -100)}, "low must be below high"),
        ({"window": (100, 100)}, "low must be below high"),
        ({"window": (float("nan"), 300)}, "finite"),
        ({"window": (0, float("inf"))}, "finite"),
        ({"window": (1,)}, "two numbers"),
        ({"window": "0 300"}, "two numbers"),
        ({"window": ("a", "b")}, "two numbers"),
        ({"polarity": "up"}, "polarity must be one of auto, bright, dark"),
        ({"polarity": None}, "polarity"),
        ({"modality": "mri"}, "modality must be one of auto, ct, microscopy"),
        ({"zoom": -1}, "zoom"),
        ({"zoom": "big"}, "zoom"),
        ({"zoom": (1, 2)}, "zoom"),
        ({"zoom": float("nan")}, "zoom"),
        ({"spacing": (1, 0, 1)}, "spacing"),
        ({"header_hint": 3}, "header_hint"),
    ],
)
def test_bad_choices_raise_one_line(kwargs, match, bright):
    with pytest.raises(ValueError, match=match) as info:
        plan_input(bright[0], AUTO, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"method": "zscore"}, "method must be one of"),
        ({"method": "percentile", "ct_window": [-100, 300]}, "need method 'auto'"),
        ({"method": "auto", "polarity": "grey"}, "polarity"),
        ({"method": "auto", "ct_window": [300, -100]}, "ct_window low must be below high"),
        ({"method": "auto", "low": 99, "high": 1}, "percentiles"),
        ({"method": "auto", "ct_windw": [-100, 300]}, "unknown key"),
        ({"method": "auto", "target_radius_voxels": 0}, "target_radius_voxels"),
        ("percentile", "must be a dict"),
    ],
)
def test_bad_card_normalization(spec, match):
    with pytest.raises(ValueError, match=match) as info:
        card_normalization(spec)
    assert "\n" not in str(info.value)


def test_model_cards_check_their_normalization():
    from napari_topo.models.registry import DEFAULT_NORMALIZATION, ModelCard, list_models

    assert ModelCard(name="new", architecture="unet3d", normalization=dict(AUTO)).normalization
    with pytest.raises(ValueError, match="model 'bad'.*method"):
        ModelCard(name="bad", architecture="unet3d", normalization={"method": "zscore"})
    assert card_normalization(DEFAULT_NORMALIZATION).legacy
    for card in list_models():  # every model card parses
        card_normalization(card.normalization)


# ------------------------------------------------------------------------------ zoom


def test_auto_zoom_shrinks_thick_vessels_only():
    # The failure: surface vessels of radius 15-25 voxels came out hollow or as outlines.
    thick, _ = tubes((20.0,), shape=(80, 160, 160))
    policy = plan_input(thick, AUTO)
    z = policy.zoom
    assert z.source == "vessel-radius" and 0.25 <= z.zoom < 0.5
    assert 16 <= z.radius_voxels <= 24 and "radius" in z.reason
    assert "vessel radius ~" in policy.describe()
    thin, _ = tubes((2.0,))
    assert plan_input(thin, AUTO).zoom.zoom == 1.0  # never magnified
    dark_thick, _ = tubes((20.0,), shape=(80, 160, 160), dark=True)
    assert plan_input(dark_thick, AUTO).zoom.zoom < 0.5  # measured after the inversion
    # the earlier models: not zoomed unless asked
    assert plan_input(thick, LEGACY).zoom.zoom == 1.0
    # explicit values win
    assert plan_input(thick, AUTO, zoom=0.8).zoom.zoom == 0.8
    assert plan_input(thick, AUTO, zoom=None).zoom.zoom == 1.0
    assert plan_input(thick, AUTO, zoom=(1, 0.5, 0.5)).zoom.zoom == (1.0, 0.5, 0.5)


def test_auto_zoom_of_a_ct_keeps_its_finest_spacing_above_half_a_mm(ct):
    img = ct[0]
    policy = plan_input(img, AUTO, spacing=(1.0, 0.35, 0.35))
    assert policy.zoom.source == "ct-spacing" and policy.zoom.zoom == pytest.approx(0.7)
    assert policy.describe().endswith("bright vessels, zoom 0.7 -> 0.5 mm voxels")
    # never upsampled beyond the finest spacing
    assert plan_input(img, AUTO, spacing=(2.5, 1.6, 1.6)).zoom.zoom == 1.0
    policy = plan_input(img, AUTO)  # no spacing: nothing to go by
    assert policy.zoom.zoom == 1.0 and "spacing" in policy.zoom.reason


def test_vessel_radius_estimate():
    for r in (3.0, 6.0, 10.0):
        img, _ = tubes((r,), shape=(48, 72, 72))
        radius, _ = estimate_vessel_radius(img.astype(np.float32))
        assert abs(radius - r) <= 0.25 * r + 0.5, (r, radius)
    flat = np.ones((16, 16, 16), np.float32)
    assert estimate_vessel_radius(flat)[0] is None
    half = np.zeros((16, 16, 16), np.float32)
    half[:, :12] = 1.0  # 75 % bright: tissue, not vessels
    radius, why = estimate_vessel_radius(half)
    assert radius is None and "not vessels" in why


def test_plan_zoom_alone(bright):
    plan = plan_intensity(bright[0], AUTO)
    assert plan_zoom(bright[0], plan, AUTO).zoom == 1.0
    assert plan_zoom(bright[0], plan, AUTO, zoom=0.5).source == "user"


# ------------------------------------------------------------------------------ lazy


def test_plans_read_a_strided_sample_only(ct):
    da = pytest.importorskip("dask.array")
    img = ct[0]
    src = RecordingArray(img)
    lazy = da.from_array(src, chunks=(20, 48, 48), asarray=False)
    policy = plan_input(lazy, AUTO, spacing=(2.0, 0.7, 0.7), sample=50_000)
    assert sum(src.reads) <= img.size // 4  # a strided view, not the volume
    assert policy == plan_input(img, AUTO, spacing=(2.0, 0.7, 0.7), sample=50_000)
    sample, stride = strided_sample(img, 50_000)
    assert stride == 2 and sample.size <= 50_000
    assert strided_sample(img)[1] == 1


def test_a_crop_takes_modality_and_polarity_from_the_whole_image(ct, dark):
    # Segment on a field of view: a crop of a CT inside the liver holds no air, so its own
    # values do not look like HU (it was percentile-scaled, bone not saturated); a crop of
    # a dark-vessel stack without vessels has no dark tail to detect.
    img, vessels, liver, outside, bone = ct
    crop = img[:, 30:60, 30:60]
    assert crop.min() > -500  # no air in it
    alone = plan_input(crop, AUTO, spacing=(1.0, 1.0, 1.0))
    assert alone.intensity.modality == "microscopy"  # the failure
    whole = plan_input(crop, AUTO, spacing=(1.0, 1.0, 1.0), intensity_from=img[::2, ::2, ::2])
    assert whole.intensity.modality == "ct" and whole.intensity.window == DEFAULT_CT_WINDOW
    assert whole.describe().startswith("CT in HU (detected, values of the whole image) window")
    assert whole.zoom.source == "ct-spacing"  # a CT's zoom rule, from the crop's spacing
    dimg, dmask = dark
    empty = dimg[:, :12, :]  # above the tubes: noise only
    assert not dmask[:, :12, :].any()
    ref = plan_input(empty, AUTO, intensity_from=dimg).intensity
    assert ref.polarity == "dark" and ref.invert
    assert ref.lo == plan_input(dimg, AUTO).intensity.lo  # the whole stack's percentiles


def test_normalizer_on_arrays_and_tensors():
    norm = IntensityNormalizer(-100.0, 300.0, clip=True, invert=True)
    x = np.array([-1000.0, -100.0, 100.0, 300.0, 2000.0], np.float32)
    expected = [1.0, 1.0, 0.5, 0.0, 0.0]
    np.testing.assert_allclose(norm(x), expected)
    np.testing.assert_allclose(norm(torch.from_numpy(x)).numpy(), expected)
    plain = IntensityNormalizer(0.0, 10.0)
    np.testing.assert_allclose(plain(np.array([20.0])), [2.0])  # not clipped to [0, 1]
    # but outliers (a hot pixel, a fill value) are limited to 5 ranges beyond
    far = np.array([65535.0, -3.4e38, 1e30], np.float32)
    np.testing.assert_allclose(plain(far), [6.0, -5.0, 6.0])
    np.testing.assert_allclose(plain(torch.from_numpy(far)).numpy(), [6.0, -5.0, 6.0])


def test_policy_to_dict_is_json(ct):
    import json

    policy = plan_input(ct[0], AUTO, spacing=(2.0, 0.7, 0.7))
    d = json.loads(json.dumps(policy.to_dict()))
    assert d["intensity"]["window"] == [-100.0, 300.0] and d["zoom"]["target_spacing"] == 0.7
    assert d["summary"] == policy.describe() and len(policy.reasons()) == 4
