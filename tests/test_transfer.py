"""The shipped models, with the defaults a user gets, on phantoms of the real-data failures.

Issue 9 measured the first shipped models on real volumes: Dice 0 on contrast liver CT
(they segmented air), hollow large vessels on two-photon stacks and 60-90 "trees" on a
plain noisy volume of four tubes. Real data cannot run in CI; these phantoms
(``napari_topo.data.phantoms``) reproduce each failure, and every test here fails with
those first models. Thresholds are set well below what the retrained models measure
(see the README's tables), so they catch a regression, not noise.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_topo.data.phantoms import (
    ct_phantom,
    four_tubes,
    sparse_tubes,
    thick_tube_phantom,
    tof_mra_head,
    vein_beside_spine,
)
from napari_topo.inference import segment
from napari_topo.models.registry import list_models

MODELS = ["unet-dice", "unet-cldice", "unet-projpool", "topnet"]


def _dice(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


@pytest.fixture(scope="module")
def ct():
    return ct_phantom(seed=0)


def test_every_shipped_model_is_listed():
    assert set(MODELS) <= {card.name for card in list_models()}


#: Share of the phantom's vessel voxels found, and Dice, below which a model has regressed.
#: Measured with the shipped models (stage 4 for the U-Nets, stage 3 TopNet): found 0.20 /
#: 0.63 / 0.07 / 0.43, Dice 0.31 / 0.35 / 0.13 / 0.39 (dice / cldice / projpool / topnet);
#: the first models 0 %. unet-projpool's stage 4 lost most of what its stage 3 found here
#: (0.17) while its thick two-photon vessels stopped being hollow; the README says so, and
#: its floor is set below its own figure so that a further loss still fails. Each floor
#: is about two thirds of the model's own figure, so losing a third of it fails.
CT_FLOORS = {
    "unet-dice": (0.13, 0.2),
    "unet-cldice": (0.4, 0.23),
    "unet-projpool": (0.05, 0.09),
    "topnet": (0.28, 0.26),
}


@pytest.mark.parametrize("model", MODELS)
def test_contrast_ct_in_hu_gives_vessels_not_air(ct, model):
    res = segment(ct["hu"], model, spacing=(1.0, 1.0, 1.0))
    # scored away from the bone plate, which test_contrast_ct_bone_is_not_vessel covers
    mask = np.asarray(res.mask, bool) & ~ndi.binary_dilation(ct["bone"], iterations=2)
    assert mask.any(), "nothing segmented on a contrast CT"
    # the first models put their voxels on air (median -997 HU here, -900 on real CT)
    hu = ct["hu"][mask]
    assert np.median(hu) > 50, f"median HU of the predicted voxels {np.median(hu)}"
    assert (mask & ct["air_tubes"]).sum() < 0.02 * ct["air_tubes"].sum()
    # vessels 60 HU above the organ at noise 20 HU (CT_FLOORS: what each model finds)
    vessels = ct["vessels"]
    found, dice = CT_FLOORS[model]
    assert (mask & vessels).sum() > found * vessels.sum()
    assert _dice(mask, vessels) > dice


def test_contrast_ct_bone_is_not_vessel(ct):
    # Every shipped model marks a bright bone plate in fat as vessel by its shape (an
    # xfail until the CT default vessel_range: pieces whose median is above 300 HU are
    # dropped); on the development CT the spine's cortex and the ribs were segmented.
    res = segment(ct["hu"], "unet-projpool", spacing=(1.0, 1.0, 1.0))
    mask = np.asarray(res.mask, bool)
    assert (mask & ct["bone"]).sum() < 0.1 * ct["bone"].sum()
    assert res.vessel_range == (100.0, 300.0)  # recognised as a CT: the default applied
    off = segment(
        ct["hu"], "unet-projpool", spacing=(1.0, 1.0, 1.0), vessel_range=None, sheets="keep"
    )
    assert (np.asarray(off.mask, bool) & ct["bone"]).sum() >= 0.1 * ct["bone"].sum()
    # the plate is also a sheet by shape: the sheet filter drops it without the HU range
    shape_only = segment(ct["hu"], "unet-projpool", spacing=(1.0, 1.0, 1.0), vessel_range=None)
    assert (np.asarray(shape_only.mask, bool) & ct["bone"]).sum() < 0.1 * ct["bone"].sum()
    assert shape_only.sheets_dropped >= 1


def test_tof_mra_scalp_is_not_vessel():
    # A time-of-flight MRA shows fat bright: the scalp is a bright shell around the head,
    # and unet-dice marked it whole (Dice 0.10 on this phantom, 240k false voxels against
    # 16k of vessel); it is dropped as a sheet by default (Dice 0.45)
    p = tof_mra_head(seed=0)
    res = segment(p["image"], spacing=p["spacing"])
    assert res.input_policy.intensity.modality != "ct"  # no HU range can help here
    mask = np.asarray(res.mask, bool)
    assert (mask & p["scalp"]).sum() < 0.05 * p["scalp"].sum()
    assert (mask & p["vessels"]).sum() > 0.8 * p["vessels"].sum()
    assert res.sheets_dropped >= 1
    kept = segment(p["image"], spacing=p["spacing"], sheets="keep")
    assert (np.asarray(kept.mask, bool) & p["scalp"]).sum() > 0.3 * p["scalp"].sum()


@pytest.mark.parametrize("model", MODELS)
def test_four_noisy_tubes_give_four_trees_not_eighty(model):
    image, labels = four_tubes((48, 128, 128), seed=1)
    res = segment(image, model)
    mask = np.asarray(res.mask, bool)
    truth = labels > 0
    precision = (mask & truth).sum() / max(mask.sum(), 1)
    assert precision >= 0.85, precision  # first models: 0.27
    assert _dice(mask, truth) > 0.6
    n_trees = int(np.unique(np.asarray(res.trees))[1:].size)
    assert 1 <= n_trees <= 8, n_trees  # at most twice the true count


@pytest.mark.parametrize("model", MODELS)
def test_noise_far_from_any_vessel_is_not_vessel(model):
    # four tubes in one quarter of the volume, i.i.d. noise of the same level and
    # spread elsewhere: most 64^3 tiles hold no vessel at all. Each tile is normalised
    # on its own inside the networks, and without the empty-tile test unet-cldice
    # marked 96,502 voxels of the empty quarters (351 trees) and TopNet 4,195 (36 trees)
    # (2026-12-02; unet-dice 50, unet-projpool 0).
    big, labels = sparse_tubes()
    truth = labels > 0
    res = segment(big, model)
    mask = np.asarray(res.mask, bool)
    far = ndi.distance_transform_edt(~truth) > 3
    assert (mask & far).sum() < 0.01 * truth.sum(), int((mask & far).sum())
    assert 1 <= int(np.unique(np.asarray(res.trees))[1:].size) <= 8
    assert res.compute["empty tiles"] == "16 of 25 tiles empty, not run"


def test_without_the_empty_tile_test_noise_alone_is_read_as_vessel():
    # the mechanism the test above guards against, shown on the model it hit hardest:
    # the tubes come out the same either way, the empty quarters only with the test
    big, labels = sparse_tubes()
    truth = labels > 0
    far = ndi.distance_transform_edt(~truth) > 3
    masks = {
        skip: np.asarray(segment(big, "unet-cldice", skip_empty_tiles=skip).mask, bool)
        for skip in (True, False)
    }
    assert (masks[False] & far).sum() > truth.sum()  # 96,502 against 13,540
    assert (masks[True] & far).sum() < 0.01 * truth.sum()
    found = {skip: (m & truth).sum() for skip, m in masks.items()}
    assert abs(int(found[True]) - int(found[False])) <= 0.005 * truth.sum(), found


def test_thick_vessels_are_solid_not_hollow():
    image, mask_true, thick = thick_tube_phantom(seed=0)
    res = segment(image, spacing=(1.0, 1.0, 1.0))
    mask = np.asarray(res.mask, bool)
    core = ndi.distance_transform_edt(thick) > 5  # deeper than 5 voxels inside
    assert mask[core].mean() > 0.9, mask[core].mean()
    assert _dice(mask, mask_true) > 0.7


def test_thin_vessels_beside_a_thick_one_survive_the_automatic_zoom():
    # vesselNN plaqueVessels: the zoom that brings a radius-30 vessel to ~8 voxels shrank
    # the capillaries below a voxel (sensitivity 0.34); the model also runs at zoom 1
    image, mask_true, thick = thick_tube_phantom((48, 160, 160), seed=0, radius=22.0)
    res = segment(image)
    plan = res.input_policy.zoom
    assert plan.zoom < 0.5 and plan.also == (1.0,), plan
    assert "for thin vessels" in res.input_policy.describe()
    mask = np.asarray(res.mask, bool)
    thin = mask_true & ~thick
    assert mask[thin].mean() > 0.85, mask[thin].mean()  # one zoom alone: 0.67
    assert mask[ndi.distance_transform_edt(thick) > 5].mean() > 0.9


def test_dark_vessels_are_found_with_automatic_polarity():
    image, labels = four_tubes((48, 128, 128), seed=2)
    dark = (np.iinfo(np.uint16).max - image).astype(np.uint16)  # dark tubes, bright ground
    res = segment(dark)
    mask = np.asarray(res.mask, bool)
    assert _dice(mask, labels > 0) > 0.6


def test_a_few_hot_pixels_or_a_fill_value_do_not_wipe_out_the_vessels():
    # bad-input probe: on a uint16 stack 5 voxels at 65535 took the vessel voxels found
    # from 3826 to 386, one float32 fill value (-3.4e38) to 0, and one voxel at 1e6 made
    # the polarity "dark" (each tile is normalised by its own mean and spread)
    image, labels = four_tubes((48, 128, 128), seed=1)
    truth = labels > 0
    clean = _dice(np.asarray(segment(image).mask, bool), truth)
    assert clean > 0.6
    rng = np.random.default_rng(0)
    hot = image.copy()
    hot[tuple(rng.integers(0, hot.shape, (5, 3)).T)] = np.iinfo(np.uint16).max
    assert _dice(np.asarray(segment(hot).mask, bool), truth) > clean - 0.05
    for far in (-3.4e38, 1e6):
        odd = image.astype(np.float32)
        odd[tuple(rng.integers(0, odd.shape, 3))] = far
        res = segment(odd)
        assert "bright vessels" in res.input_policy.describe(), far
        assert _dice(np.asarray(res.mask, bool), truth) > clean - 0.05, far


def _vein_found(phantom) -> tuple[float, float]:
    """(sensitivity on the vein, on its voxels deeper than 5 mm) of the default model."""
    res = segment(phantom["hu"], spacing=phantom["spacing"])
    mask = np.asarray(res.mask, bool)
    deep = ndi.distance_transform_edt(phantom["vein"], sampling=phantom["spacing"]) > 5
    return float(mask[phantom["vein"]].mean()), float(mask[deep].mean())


def test_a_large_contrast_filled_vein_alone_is_found_whole():
    # the control of the test below: the same 10 mm vein in liver, no bone near
    sensitivity, deep = _vein_found(vein_beside_spine(bone=False))
    assert sensitivity > 0.9 and deep > 0.9, (sensitivity, deep)


@pytest.mark.xfail(
    strict=True,
    reason="known failure (issue 9): the development CT's portal vein and vena cava are "
    "mostly missed; a vertebra's saturated cortex beside a large vein hides it from the "
    "U-Nets, which normalise each tile. Training on such bones (large_bone_prob) has "
    "not fixed it yet; norms that leave the bone out (UNet3D(norm_exclude_above)), "
    "trained, find this vein but lost real CT sensitivity, so they are not shipped",
)
def test_a_large_vein_beside_the_spine_is_found():
    sensitivity, deep = _vein_found(vein_beside_spine())
    assert sensitivity > 0.5 and deep > 0.5, (sensitivity, deep)
