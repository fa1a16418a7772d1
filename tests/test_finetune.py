"""Fine-tuning on a user's own sparse labels (napari_topo.training.finetune) and its CLI.

Every test uses a tiny network (widths 4, 8; a few thousand parameters) registered in a
temporary user models folder, and small synthetic volumes, so that a fine-tune of a few
dozen steps takes a second or two on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch

from napari_topo.cli import main
from napari_topo.data.io import write_volume
from napari_topo.data.synthetic import make_vessel_volume
from napari_topo.inference.intensity import plan_input
from napari_topo.inference.pipeline import predict
from napari_topo.inference.sliding import Cancelled
from napari_topo.models import UNet3D
from napari_topo.models.registry import (
    USER_MODELS_ENV,
    ModelNotFoundError,
    WeightsIntegrityError,
    list_models,
    load_model,
    model_card,
    save_model,
    user_models_dir,
)
from napari_topo.models.topnet import TopNet
from napari_topo.topology.losses import DiceclDiceLoss, ProjectedPoolingLoss, SoftDiceLoss
from napari_topo.topology.metrics import dice
from napari_topo.training.finetune import (
    Adam,
    _Data,
    _describe_split,
    _Sampler,
    _split_validation,
    annotated_region,
    finetune,
    finetune_objective,
    masked_loss,
    save_finetuned,
)

FAST = {"device": "cpu", "patch": 16, "batch_size": 2, "threads": 1, "lr": 1e-2}
NORMALIZATION = {"method": "percentile", "low": 0.5, "high": 99.5}


# ------------------------------------------------------------------------------ helpers


def save_tiny_base(folder, name="tiny-base", arch="unet3d", seed=0):
    """A tiny, untrained model (it has seen no vessel) registered in ``folder``."""
    torch.manual_seed(seed)
    if arch == "unet3d":
        net = UNet3D(widths=(4, 8))
        loss = {"name": "dice"}
    else:
        net = TopNet(widths=(4, 8), embedding_dim=3)
        loss = {"name": "topnet"}
    card = {
        "name": name,
        "summary": "tiny untrained test model",
        "normalization": dict(NORMALIZATION),
        "training": {"config": {"loss": loss, "patch": [16, 16, 16], "batch_size": 2}},
        # as the shipped TopNet's card: its own smallest mask piece
        "min_size": 64 if arch == "topnet" else None,
    }
    return save_model(net, card, folder)


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """An empty user models folder holding the tiny base models only."""
    folder = tmp_path / "user-models"
    monkeypatch.setenv(USER_MODELS_ENV, str(folder))
    save_tiny_base(folder)
    return folder


def volume(seed=1, shape=(32, 40, 40)):
    return make_vessel_volume(shape=shape, n_trees=2, seed=seed)


def sparse(mask, slices):
    lab = np.zeros(mask.shape, np.uint8)
    lab[slices] = mask[slices]
    return lab


# ------------------------------------------------------------------------ the region


def test_annotated_region_from_slices_box_or_mask():
    lab = np.zeros((20, 30, 30), np.uint8)
    lab[[3, 9, 15], 5:25, 8:22] = 1
    mask, info = annotated_region(lab)
    assert info["method"] == "slices" and info["axis"] == 0 and info["slices"] == [3, 9, 15]
    assert mask[[3, 9, 15]].all() and mask.sum() == 3 * 30 * 30  # 0 there means background
    # painted along x instead
    mask, info = annotated_region(np.moveaxis(lab, 0, 2))
    assert info["method"] == "slices" and info["axis"] == 2
    # every other slice of 25: 13 painted (over half), the 12 between them not labels
    alt = np.zeros((25, 30, 30), np.uint8)
    alt[::2, 5:25, 8:22] = 1
    mask, info = annotated_region(alt)
    assert info["method"] == "slices" and info["axis"] == 0
    assert info["slices"] == list(range(0, 25, 2)) and not mask[1::2].any()
    # vessels along z, apart in x (x alternates too, with wider runs), every other z
    # slice painted: the painted axis is z (review: x was chosen, by its smaller share)
    tubes = np.zeros((25, 30, 40), np.uint8)
    for x0 in (4, 14, 24, 34):
        tubes[::2, 10:20, x0 : x0 + 3] = 1
    mask, info = annotated_region(tubes)
    assert info["method"] == "slices" and info["axis"] == 0 and not mask[1::2].any()
    # a dense mask of two vessels leaving a block of slices empty between them: a box
    two = np.zeros((25, 30, 30), np.uint8)
    two[2:10, 2:28, 2:14] = 1
    two[16:24, 2:28, 16:28] = 1
    assert annotated_region(two)[1]["method"] == "box"
    # a corrected whole mask: its bounding box, grown
    full = np.zeros((20, 30, 30), np.uint8)
    full[2:18, 5:25, 5:25] = 1
    mask, info = annotated_region(full, margin=2)
    assert info["method"] == "box" and info["box"] == [[0, 20], [3, 27], [3, 27]]
    # an explicit mask wins
    given = np.zeros(lab.shape, bool)
    given[:5] = True
    mask, info = annotated_region(lab, given)
    assert info["method"] == "mask" and (mask == given).all()
    with pytest.raises(ValueError, match="labels are empty"):
        annotated_region(np.zeros_like(lab))
    with pytest.raises(ValueError, match="binary"):
        annotated_region(lab, given.astype(np.uint8) * 2 + 1)
    with pytest.raises(ValueError, match="annotated mask is empty"):
        annotated_region(lab, np.zeros(lab.shape, bool))


# -------------------------------------------------------------------------- the loss


@pytest.mark.parametrize(
    "loss_fn",
    [SoftDiceLoss(), DiceclDiceLoss(alpha=0.3, iterations=3), ProjectedPoolingLoss([2, 4])],
    ids=["dice", "cldice", "projpool"],
)
def test_voxels_outside_the_annotation_do_not_change_the_loss(loss_fn):
    rng = np.random.default_rng(0)
    shape = (2, 1, 12, 16, 16)
    mask = torch.zeros(shape)
    mask[:, :, 3:6] = 1.0
    logits = torch.from_numpy(rng.normal(size=shape).astype(np.float32)).requires_grad_(True)
    target = torch.from_numpy((rng.random(shape) > 0.7).astype(np.float32))
    value = masked_loss(loss_fn, logits, target, mask)
    value.backward()
    outside = mask == 0
    assert logits.grad[outside].abs().max() == 0.0
    assert logits.grad[~outside].abs().max() > 0.0
    # anything outside may change, the loss does not
    other_logits = logits.detach().clone()
    other_logits[outside] = torch.randn(int(outside.sum()))
    other_target = target.clone()
    other_target[outside] = 1.0 - other_target[outside]
    again = masked_loss(loss_fn, other_logits, other_target, mask)
    assert float(again) == pytest.approx(float(value.detach()), abs=1e-6)


def test_the_objective_ignores_voxels_outside_and_punishes_false_positives_without_vessels():
    rng = np.random.default_rng(1)
    shape = (2, 1, 12, 16, 16)
    mask = torch.zeros(shape)
    mask[:, :, 3:6] = 1.0
    target = torch.zeros(shape)
    target[0, 0, 4, 5:9, 8] = 1.0  # patch 1 holds no vessel at all
    logits = torch.from_numpy(rng.normal(size=shape).astype(np.float32)).requires_grad_(True)
    loss_fn = SoftDiceLoss()
    finetune_objective(loss_fn, logits, target, mask).backward()
    outside = mask == 0
    assert logits.grad[outside].abs().max() == 0.0
    # the vessel-free patch gets a real push down where it predicts vessel; the
    # per-patch Dice alone gives it (almost) none
    inside_empty = logits.grad[1][mask[1] > 0]
    plain = logits.detach().clone().requires_grad_(True)
    masked_loss(loss_fn, plain, target, mask).backward()
    assert inside_empty.mean() > 10 * plain.grad[1][mask[1] > 0].mean().abs()


def test_mined_false_positives_map_back_through_flips_permutations_and_scale():
    shape = (40, 48, 56)
    data = _Data(
        image=np.zeros(shape, np.float32),
        vessel=np.zeros(shape, np.uint8),
        train=np.ones(shape, bool),
        val=np.zeros(shape, bool),
    )
    marker = (13, 29, 41)
    for seed in range(6):
        sampler = _Sampler(data, 16, np.random.default_rng(seed))
        data.image[:] = 0.0
        data.image[marker] = 1.0
        sampler.rng = np.random.default_rng(seed)
        # patches that hold the marker: find where it landed, report it as a false positive
        for _ in range(20):
            batch = sampler.sample(1)
            img = batch["image"][0]
            start, size, perm, flips = sampler.geometry[0]
            inside = all(a <= m < a + s for a, s, m in zip(start, size, marker, strict=True))
            if not inside or tuple(size) != (16, 16, 16):
                continue
            fp = np.zeros((1, 16, 16, 16), bool)
            fp[0][np.unravel_index(np.argmax(img), img.shape)] = True
            sampler.add_false_positives(fp)
            assert tuple(sampler.hard[-1]) == marker
            break


def test_a_kept_coarse_z_axis_is_never_permuted_with_y_and_x():

    # a two-photon stack now trains on its own 5 um slices (not upsampled): putting that
    # coarse axis where y or x should be shows the model patches inference never gives it
    shape = (24, 48, 48)
    data = _Data(
        image=np.random.default_rng(0).random(shape, dtype=np.float32),
        vessel=np.zeros(shape, np.uint8),
        train=np.ones(shape, bool),
        val=np.zeros(shape, bool),
    )
    free = _Sampler(data, 16, np.random.default_rng(0))
    kept = _Sampler(data, 16, np.random.default_rng(0), fixed_axes=(0,))
    kept_perms, free_perms = set(), set()
    for _ in range(30):
        free.sample(1)
        kept.sample(1)
        free_perms.add(tuple(int(a) for a in free.geometry[0][2]))
        kept_perms.add(tuple(int(a) for a in kept.geometry[0][2]))
    assert kept_perms == {(0, 1, 2), (0, 2, 1)}
    assert {p[0] for p in free_perms} == {0, 1, 2}
    # the axes fine-tuning keeps are the input policy's (one rule for predict and finetune)
    # (finetune sets the policy's spacing, as predict does)
    card = model_card("unet-dice").normalization

    def kept(spacing):
        policy = plan_input(data.image, card, spacing=spacing)
        return dataclasses.replace(policy, spacing=spacing).kept_axes()

    assert kept((5.0, 0.994, 0.994)) == ("z",)
    assert kept((3.0, 1.0, 1.0)) == () and kept(None) == ()


def test_validation_is_spread_across_the_annotation():
    mask = np.zeros((40, 30, 60), bool)
    mask[4:36, 5:25, 0:60] = True  # longest along x, but held out along the slice axis
    train, val, split = _split_validation(mask, {"method": "mask"}, 0.2)
    assert split["axis"] == 0
    held = np.asarray(split["slices"])
    assert len(held) == round(0.2 * 32) and held.min() > 4 and held.max() < 35
    assert np.diff(held).max() > 4  # several slabs, not one
    assert not (train & val).any() and ((train | val) == mask).all()
    # a mask of a few painted slices (some without vessels): held-out ones among them
    painted = [9, 16, 22, 29, 35]
    sparse_mask = np.zeros(mask.shape, bool)
    sparse_mask[painted] = True
    train, val, split = _split_validation(sparse_mask, {"method": "mask"}, 0.4)
    assert split["axis"] == 0 and len(split["slices"]) == 2
    assert set(split["slices"]) < set(painted[1:]) and val.any() and train.any()
    info = {"method": "slices", "axis": 0, "slices": list(range(0, 40, 4))}
    _, _, split = _split_validation(mask, info, 0.2)
    assert split["slices"] == [8, 28]


def test_held_out_slices_hold_vessels_when_they_can():
    # 10 painted slices; vessels labelled in 3 of them (the rest: background corrected)
    mask = np.zeros((40, 20, 20), bool)
    slices = list(range(0, 40, 4))
    mask[slices] = True
    lab = np.zeros(mask.shape, np.uint8)
    lab[[8, 20, 32], 5:9, 5:9] = 1
    info = {"method": "slices", "axis": 0, "slices": slices}
    train, val, split = _split_validation(mask, info, 0.2, labels=lab)
    assert set(split["slices"]) <= {8, 20, 32} and len(split["slices"]) == 2
    assert (lab[val] > 0).any() and (lab[train] > 0).any()  # one vessel slice trains
    # without labels: evenly spread, whatever they hold (as before)
    assert _split_validation(mask, info, 0.2)[2]["slices"] == [8, 28]


def test_painted_slices_are_the_region_of_a_corrected_segmentation():
    # a model's whole mask, corrected on z = 3, 9, 15 and 21: only those count
    seg = np.zeros((25, 40, 40), np.uint8)
    seg[:, 20:24, 5:35] = 1  # two vessels crossing, along z
    seg[:, 5:35, 10:14] = 1
    mask, info = annotated_region(seg, painted=(0, [21, 3, 9, 15, 9]))
    assert info["method"] == "slices" and info["axis"] == 0
    assert info["slices"] == [3, 9, 15, 21] and "4 painted slices" in info["description"]
    assert mask[[3, 9, 15, 21]].all() and mask.sum() == 4 * 40 * 40
    assert annotated_region(seg)[1]["method"] == "box"  # unpainted: the whole mask
    given = np.zeros(seg.shape, bool)
    given[:2] = True
    assert annotated_region(seg, given, painted=(0, [3]))[1]["method"] == "mask"
    # painted along z, then along y for a while: both, held out along z
    mask, info = annotated_region(seg, painted=[(0, [3, 9, 15]), (1, [20]), (0, [21])])
    assert info["axis"] == 0 and info["slices"] == [3, 9, 15, 21]
    assert info["other_axes"] == {1: [20]} and mask[:, 20].all()
    assert mask.sum() == info["voxels"] == 4 * 40 * 40 + 25 * 40 - 4 * 40
    assert "and 1 along axis 1" in info["description"]
    train, val, split = _split_validation(mask, info, 0.25, labels=seg)
    assert split["axis"] == 0 and set(split["slices"]) < {3, 9, 15, 21}
    assert train[:, 20].sum() > 0 and not (train & val).any()
    # two axes (a list of two pairs is not one pair)
    _, info = annotated_region(seg, painted=[(0, [3]), (1, [7])])
    assert info["slices"] == [3] and info["other_axes"] == {1: [7]}
    for bad, words in [
        ((3, [1]), "axis must be 0..2"),
        ((0, []), "no painted slice"),
        ((0, [25]), "must lie in 0..24"),
        ("z", "painted must be"),
    ]:
        with pytest.raises(ValueError, match=words):
            annotated_region(seg, painted=bad)


def test_a_stroke_on_one_slice_is_that_slice():
    # a newcomer's blob on z = 5 of a 25 x 512 x 512 stack spans 10 y-rows, a smaller
    # share of y (0.02) than its one z-slice of z (0.04): it is one z-slice all the same
    lab = np.zeros((25, 512, 512), np.uint8)
    lab[5, 200:210, 200:260] = 1
    _, info = annotated_region(lab)
    assert info["method"] == "slices" and info["axis"] == 0 and info["slices"] == [5]


def test_one_or_two_painted_slices_hold_out_bands_within_them():
    # the Cellpose-style loop: a user corrects one slice (or two). Holding out a whole
    # slice would leave nothing (or one slice) to train on; bands of rows across the
    # painted slices are held out instead, each on a labelled vessel
    lab = np.zeros((25, 120, 60), np.uint8)
    lab[:, 10:110, 20:24] = 1  # a vessel along y
    lab[:, 60:64, 5:55] = 1  # one along x
    for slices in ([12], [6, 18]):
        mask, info = annotated_region(lab, painted=(0, slices))
        train, val, split = _split_validation(mask, info, 0.2, labels=lab)
        assert split["within"] == {"axis": 0, "slices": slices}
        assert split["axis"] == 1  # the vessels extend furthest along y
        held = np.asarray(split["slices"])
        assert 0.15 * 120 <= len(held) <= 0.25 * 120 and np.diff(held).max() > 1  # bands
        assert not (train & val).any() and ((train | val) == mask).all()
        for k in slices:  # every painted slice trains and is checked
            assert (lab[k][train[k]] > 0).any() and (lab[k][val[k]] > 0).any()
        assert not val[:, held.max() + 1 :].any() and val[slices][:, held].all()
    # a short corrected vessel (40 of 256 rows): a fifth of its rows held out, not all
    short = np.zeros((10, 256, 256), np.uint8)
    short[5, 100:140, 60:63] = 1
    mask, info = annotated_region(short, painted=(0, [5]))
    train, val, split = _split_validation(mask, info, 0.2, labels=short)
    held_vessel, kept = int(short[val].sum()), int(short[train].sum())
    assert 0 < held_vessel <= 0.25 * 120 and kept >= 0.75 * 120
    # one z-slice and one y-row plane painted: the bands cut both, and the note names both
    mask, info = annotated_region(lab, painted=[(0, [12]), (1, [30])])
    train, val, split = _split_validation(mask, info, 0.2, labels=lab)
    assert split["within"] == {"axis": 0, "slices": [12], "other_axes": {1: [30]}}
    assert not (train & val).any() and ((train | val) == mask).all()
    note = _describe_split(split)
    assert "painted slice 12 along axis 0 and 1 plane painted along axis 1" in note, note
    # three painted slices: whole slices are held out, as before
    mask, info = annotated_region(lab, painted=(0, [4, 12, 20]))
    _, _, split = _split_validation(mask, info, 0.2, labels=lab)
    assert "within" not in split and split["axis"] == 0 and len(split["slices"]) == 1


def test_adam_matches_torch_adamw():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    ours = Adam(a.parameters(), lr=1e-2, weight_decay=0.01)
    ref = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.01, foreach=False)
    x = torch.randn(8, 5)
    for _ in range(5):
        for net, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


# ---------------------------------------------------------------------- fine-tuning


def test_finetune_improves_the_held_out_part_and_saves_a_hashed_model(user_dir):
    vol = volume()
    painted = list(range(2, 32, 4))  # 8 slices; 2 of them, spread, are held out
    lab = sparse(vol.mask, painted)
    events = []
    module, card = finetune(
        vol.image, lab, "tiny-base", steps=60, seed=0, name="mine", progress=events.append, **FAST
    )
    before, after = card.metrics["validation_before"], card.metrics["validation"]
    assert after["Dice"] > before["Dice"] + 0.2, (before, after)
    assert card.normalization == NORMALIZATION  # the base card's input policy, kept
    data = card.training["data"]
    assert data["annotated_voxels"] == 8 * 40 * 40 and data["shape"] == [32, 40, 40]
    assert data["vessel_voxels"] == int(lab.sum())
    assert card.training["fine_tuned_from"]["name"] == "tiny-base"
    assert len(card.training["fine_tuned_from"]["sha256"]) == 64
    assert card.training["steps"] == 60 and card.training["stopped"].startswith("step budget")
    assert {e.phase for e in events} >= {"prepare", "train", "validate", "done"}
    # on the held-out slices, as a user would segment them, it is better than the base
    held = card.training["data"]["validation_part"]["slices"]
    assert len(held) == 2 and held != painted[-2:]  # spread, not the last ones
    base_prob = predict(vol.image, "tiny-base", device="cpu", tile=32)["vessel"]
    saved = save_finetuned(module, card)
    assert saved.path.parent == user_models_dir() and len(saved.sha256) == 64
    prob = predict(vol.image, "mine", device="cpu", tile=32)["vessel"]
    assert dice(prob[held] > 0.5, vol.mask[held]) > dice(base_prob[held] > 0.5, vol.mask[held])
    assert "mine" in [c.name for c in list_models()]
    # loadable by name, card path and folder; tampering is refused
    _, by_json = load_model(saved.path)
    assert by_json.name == "mine"
    weights = saved.path.with_suffix(".safetensors")
    blob = bytearray(weights.read_bytes())
    blob[-5] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(WeightsIntegrityError):
        load_model("mine")


def test_held_out_scores_are_those_of_the_segmentation_a_user_gets(user_dir):
    """The threshold is chosen, and the before/after scores reported, on the held-out
    part segmented as ``segment`` does it (sliding windows, every zoom, the input grid),
    not on the validation patches: on the vesselNN BBB_Leakage stack the patches put the
    precision at threshold 0.1 at 0.69 where the user's segmentation had 0.42, the
    choice of 0.1 then cost the other half 0.12 Dice."""
    vol = volume()
    lab = sparse(vol.mask, list(range(2, 32, 4)))
    module, card = finetune(vol.image, lab, "tiny-base", steps=20, seed=0, name="v", **FAST)
    held = card.training["data"]["validation_part"]["slices"]
    m = card.metrics
    base_prob = predict(vol.image, "tiny-base", device="cpu")["vessel"]
    prob = predict(vol.image, (module, card), device="cpu")["vessel"]
    truth = vol.mask[held]
    assert m["validation_before"]["Dice"] == pytest.approx(dice(base_prob[held] > 0.5, truth))
    assert m["validation_at_0.5"]["Dice"] == pytest.approx(dice(prob[held] > 0.5, truth))
    t = card.mask_threshold
    assert m["validation"]["Dice"] == pytest.approx(dice(prob[held] > t, truth))
    assert "segmented as segment does" in m["validation_note"]


def test_the_held_out_view_is_bounded_and_runs_at_the_plans_zooms(monkeypatch):
    import napari_topo.training.finetune as ft
    from napari_topo.inference.intensity import ZoomPlan

    # small: the held-out voxels' bounding box grown by the context, clipped
    small = np.zeros((40, 60, 60), bool)
    small[10:12, 20:30, 20:30] = True
    whole = (slice(0, 40), slice(0, 60), slice(0, 60))
    assert ft._held_out_box(small, [(1.0, 1.0, 1.0)]) == whole
    assert ft._held_out_box(small, [(0.25, 0.25, 0.25)])[1] == slice(0, 60)
    # large: cut down to the cap (model-grid voxels), still holding held-out voxels
    monkeypatch.setattr(ft, "HELD_OUT_VIEW_VOXELS", 100_000)
    val = np.zeros((40, 200, 200), bool)
    val[[5, 15, 25, 35]] = True
    for factors in ((1.0, 1.0, 1.0), (1.0, 0.5, 0.5)):
        box = ft._held_out_box(val, [factors])
        model_voxels = np.prod([(b.stop - b.start) * f for b, f in zip(box, factors, strict=True)])
        assert model_voxels <= 100_000 and val[box].any(), (factors, box)
    # held-out slabs that lie apart in y and x too: the cut box still holds held-out voxels
    apart = np.zeros((40, 200, 200), bool)
    apart[5, 0:20, 0:20] = apart[20, 90:110, 90:110] = apart[35, 180:200, 180:200] = True
    box = ft._held_out_box(apart, [(1.0, 1.0, 1.0)])
    assert np.prod([b.stop - b.start for b in box]) <= 100_000 and apart[box].any(), box
    # every zoom the model runs at counts: a second zoom at twice the first's resolution
    box = ft._held_out_box(val, [(0.5, 0.5, 0.5), (1.0, 1.0, 1.0)])
    assert np.prod([b.stop - b.start for b in box]) * (0.125 + 1.0) <= 100_000
    # with the labels given, the cut box keeps held-out vessel voxels where there are any
    lab = np.zeros(val.shape, np.uint16)
    lab[35, 150:160, 150:160] = 7  # a vessel in the last held-out slab only
    box = ft._held_out_box(val, [(1.0, 1.0, 1.0)], lab)
    assert (val & (lab > 0))[box].any(), box
    # a crop runs at exactly the zooms its whole volume's plan chose (the ensemble too)
    plan = ZoomPlan(0.5, "vessel-radius", "large vessels", radius_voxels=16.0, also=(1.0,))
    image = np.random.default_rng(0).random((16, 32, 32), dtype=np.float32)
    assert plan_input(image, model_card("unet-dice").normalization, zoom=plan).zoom == plan


def test_weights_that_segment_the_held_out_part_worse_are_not_kept(user_dir, monkeypatch):
    """Better on the validation patches is not enough: when the kept weights, segmented
    as the user will segment, score below the base model on the held-out part, the base
    weights come back and the card says why."""
    import napari_topo.training.finetune as ft

    view, calls = ft._held_out_view, []

    def worse_after_training(*args, **kwargs):
        prob, truth, valid, loss = view(*args, **kwargs)
        calls.append(1)
        if len(calls) > 1:  # the kept weights' view: nothing found
            prob = np.zeros_like(prob)
        return prob, truth, valid, loss

    monkeypatch.setattr(ft, "_held_out_view", worse_after_training)
    vol = volume()
    lab = sparse(vol.mask, list(range(2, 32, 4)))
    base, _ = load_model("tiny-base")
    module, card = finetune(vol.image, lab, "tiny-base", steps=60, seed=0, name="w", **FAST)
    assert len(calls) == 2  # training beat the base on the patches, so it was segmented
    assert card.training["kept_base"].startswith("the trained weights (step ")
    assert card.training["best_step"] == 0
    for (k, v), w in zip(module.state_dict().items(), base.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    m = card.metrics
    assert m["validation"]["score"] >= m["validation_before"]["score"]
    assert "base model's weights kept" in card.summary
    from napari_topo.cli import _finetune_result_lines

    said = " ".join(_finetune_result_lines(card))
    # the step the patches preferred is named, not "best ... at step 0" after progress
    # lines that called a later step the best (newcomer)
    assert card.training["kept_base"] in said and "at step 0" not in said
    assert "the base model's weights kept" in said and "no training step beat" not in said
    # the base weights at the base's threshold are the base model: the dock and the CLI
    # save nothing (a newcomer's run saved such a copy; Segment again changed no voxel)
    from dataclasses import replace

    from napari_topo.training.finetune import unchanged_from_base

    base_cut = m["validation_before"]["threshold"]
    same = unchanged_from_base(replace(card, threshold=base_cut))
    assert same.startswith("no training step beat the base model on the held-out part")
    assert unchanged_from_base(replace(card, threshold=base_cut + 0.2)) is None  # a change
    trained = replace(card, training={**card.training, "kept_base": None, "best_step": 60})
    assert unchanged_from_base(replace(trained, threshold=base_cut)) is None
    idle = {**card.training, "steps": 0, "note": "no training step fit in 1 min"}
    assert unchanged_from_base(replace(card, training=idle)) == "no training step fit in 1 min"


def test_fine_tune_threads_follow_omp_num_threads(monkeypatch):
    # the CLI followed OMP_NUM_THREADS; the Python API and the GUI used every core but one
    from napari_topo.training.finetune import default_threads, env_threads, usable_cores

    for value, want in (("3", 3), ("0", None), ("4,2", None), ("", None)):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert env_threads() == want, value
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert env_threads() is None
    monkeypatch.setattr("napari_topo.training.finetune.usable_cores", lambda: 16)
    assert default_threads() == 15  # a core left for the GUI
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert default_threads() == 4  # a shared machine's limit holds
    monkeypatch.setenv("OMP_NUM_THREADS", "64")
    assert default_threads() == 15
    monkeypatch.undo()
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


def test_a_folder_holding_one_model_loads(tmp_path, user_dir):
    vol = volume()
    module, card = finetune(
        vol.image, sparse(vol.mask, [4, 12, 20, 28]), "tiny-base", steps=2, name="f", **FAST
    )
    out = tmp_path / "ft"
    save_finetuned(module, card, out)
    assert load_model(out)[1].name == "f"
    assert load_model(str(out))[1].name == "f"
    save_tiny_base(out, name="second")
    with pytest.raises(ModelNotFoundError, match="holds 2 models"):
        load_model(out)


def test_a_corrected_segmentation_trains_on_its_painted_slices(user_dir):
    """The dock's case: the model's whole mask, corrected on a few slices."""
    vol = volume()
    painted = [4, 12, 20, 28]
    seg = vol.mask.astype(np.uint8)
    _, card = finetune(vol.image, seg, "tiny-base", steps=2, painted=(0, painted), **FAST)
    data = card.training["data"]
    region = data["annotated_region"]
    assert region["method"] == "slices" and region["slices"] == painted
    assert data["annotated_voxels"] == len(painted) * seg[0].size
    held = data["validation_part"]["slices"]  # among the painted slices
    assert set(held) < set(painted) and held


def test_never_worse_than_the_base_on_the_held_out_part(user_dir):
    """With a learning rate that wrecks the network, the base weights come back."""
    vol = volume()
    lab = sparse(vol.mask, list(range(2, 32, 4)))
    base, _ = load_model("tiny-base")
    module, card = finetune(
        vol.image, lab, "tiny-base", steps=6, **{**FAST, "lr": 50.0}, val_every=2
    )
    after, before = card.metrics["validation"], card.metrics["validation_before"]
    assert after["score"] >= before["score"]
    if card.training["best_step"] == 0:
        for (k, v), w in zip(module.state_dict().items(), base.state_dict().values(), strict=True):
            assert torch.equal(v, w), k


def test_cancel_raises_and_leaves_no_model(user_dir):
    vol = volume()
    lab = sparse(vol.mask, [4, 12, 20, 28])
    stop = threading.Event()

    def progress(p):
        if p.phase == "train" and p.step >= 2:
            stop.set()

    with pytest.raises(Cancelled):
        finetune(vol.image, lab, "tiny-base", steps=50, progress=progress, cancel=stop, **FAST)
    assert sorted(p.name for p in user_dir.iterdir()) == ["tiny-base.json", "tiny-base.safetensors"]


def test_topnet_embedding_frozen_unless_tree_labels(user_dir):
    save_tiny_base(user_dir, name="tiny-top", arch="topnet")
    base, _ = load_model("tiny-top")
    vol = volume()
    painted = [4, 10, 16, 22, 28]

    def changed(module, part):
        new = dict(module.named_parameters())
        return any(
            not torch.equal(new[k], v) for k, v in base.named_parameters() if k.startswith(part)
        )

    mask_only = sparse(vol.mask, painted)
    module, card = finetune(
        vol.image, mask_only, "tiny-top", steps=4, val_every=1, patience=10, **FAST
    )
    if card.training["best_step"]:
        assert changed(module, "branches.vessel")
        assert not changed(module, "branches.embedding") and not changed(module, "heads.embedding")
    assert card.training["embedding"].startswith("frozen")
    trees = np.zeros(vol.trees.shape, np.int32)
    trees[painted] = vol.trees[painted]
    module, card = finetune(vol.image, trees, "tiny-top", steps=4, val_every=1, patience=10, **FAST)
    assert card.training["embedding"].startswith("trained") and card.training["data"]["tree_labels"]
    assert card.task == "topnet"
    assert card.min_size == 64  # the base model's smallest mask piece is kept


@pytest.mark.parametrize("arch", ["unet3d", "topnet"])
def test_layers_decoder_trains_all_but_the_encoder(user_dir, arch, monkeypatch):
    """``layers="decoder"`` gives the optimiser every weight but the encoder's (and
    TopNet's frozen embedding without tree labels); ``"all"`` every weight."""
    from napari_topo.training import finetune as ft

    name = f"tiny-{arch}"
    save_tiny_base(user_dir, name=name, arch=arch)
    base, _ = load_model(name)
    optimised = []

    class Recording(ft.Adam):
        def __init__(self, params, **kw):
            super().__init__(params, **kw)
            optimised.append(sum(p.numel() for p in self.params))

    monkeypatch.setattr(ft, "Adam", Recording)
    vol = volume()
    lab = sparse(vol.mask, [4, 10, 16, 22, 28])

    def numel(prefixes=(), skip=()):
        return sum(
            p.numel()
            for k, p in base.named_parameters()
            if k.startswith(prefixes) and not k.startswith(skip)
        )

    embedding = ("branches.embedding", "heads.embedding") if arch == "topnet" else ()
    everything = numel(("",), embedding)
    for layers, expected in (("decoder", everything - numel("encoder.")), ("all", everything)):
        _, card = finetune(vol.image, lab, name, layers=layers, steps=1, **FAST)
        assert card.training["layers"] == layers
        assert optimised.pop() == expected > 0


def test_the_default_trains_a_head_on_a_unet_and_the_network_otherwise(user_dir):
    """layers="auto" (the default): a voxel classifier on a U-Net base, which did better
    than every weight on each real volume measured; every weight on a TopNet, or when a
    setting of the network's fine-tune is given (the user asked for the network)."""
    from types import SimpleNamespace

    from napari_topo.training.finetune import DEFAULT_LAYERS, resolve_layers

    assert DEFAULT_LAYERS == "auto"
    unet, topnet, head = (
        SimpleNamespace(architecture=a) for a in ("unet3d", "topnet", "unet3d-voxel-head")
    )
    assert resolve_layers("auto", unet) == "head"
    assert resolve_layers("auto", unet, ["loss"]) == "all"
    assert resolve_layers("auto", topnet) == "all"
    assert resolve_layers("auto", head) == "head"
    for layers in ("all", "decoder", "head"):  # a choice is kept as it is
        assert resolve_layers(layers, topnet) == layers
    save_tiny_base(user_dir, "tiny-top", arch="topnet")
    vol = volume()
    lab = sparse(vol.mask, [4, 10, 16, 22, 28])

    def run(base, **kw):
        said = []
        _, card = finetune(
            vol.image, lab, base, steps=2, progress=lambda p: said.append(p.message), **kw
        )
        return card, said[0]  # the first message says what trains, and why

    card, said = run("tiny-base", device="cpu", threads=1)
    assert card.training["layers"] == "head" and card.architecture == "unet3d-voxel-head"
    assert said.startswith("trains a voxel classifier on tiny-base's output")
    assert "the default on a U-Net" in said
    card, said = run("tiny-base", **FAST)  # patch, lr, ...: the network's settings
    assert card.training["layers"] == "all" and card.architecture == "unet3d"
    assert said.startswith("trains every weight of tiny-base with its own loss (dice)")
    assert "a setting of the network's fine-tune was given" in said
    _, said = run("tiny-base", loss="cldice", **FAST)
    assert said.startswith("trains every weight of tiny-base with the loss cldice")
    card, said = run("tiny-top", device="cpu", threads=1)
    assert card.training["layers"] == "all"
    assert said.startswith("trains every weight of tiny-top with its own loss (topnet)")
    assert "embedding head stays frozen" in said and "takes no voxel classifier" in said


def test_layers_decoder_keeps_the_base_encoder(user_dir):
    """What comes back: the encoder's weights are the base model's, the head moved."""
    base, _ = load_model("tiny-base")
    vol = volume()
    lab = sparse(vol.mask, [4, 10, 16, 22, 28])

    def moved(module, part):
        new = dict(module.named_parameters())
        return [
            k
            for k, v in base.named_parameters()
            if k.startswith(part) and not torch.equal(new[k], v)
        ]

    kw = dict(steps=4, val_every=1, patience=10, **FAST)
    module, card = finetune(vol.image, lab, "tiny-base", layers="decoder", **kw)
    assert card.training["best_step"] > 0
    assert not moved(module, "encoder.") and moved(module, "head.")
    module, card = finetune(vol.image, lab, "tiny-base", layers="all", **kw)
    assert card.training["best_step"] > 0 and moved(module, "encoder.")


@pytest.mark.parametrize(
    ("labels", "kwargs", "match"),
    [
        (np.zeros((32, 40, 41), np.uint8), {}, "same voxels"),
        (np.zeros((32, 40, 40), np.uint8), {}, "labels are empty"),
        (np.full((32, 40, 40), 0.5, np.float32), {}, "fractional"),
        (-np.ones((32, 40, 40), np.int16), {}, "negative"),
        ("ok", {"base_model": "no-such-model"}, "unknown model"),
        ("ok", {"annotated": np.full((32, 40, 40), 2, np.uint8)}, "binary"),
        ("ok", {"minutes": -1.0}, "minutes"),
        ("ok", {"layers": "encoder"}, "layers must be auto or one of all, decoder"),
        # a newcomer's --annotated mask missed every label: "the last 20 % is held out"
        ("ok", {"annotated": "elsewhere"}, "none of the .* labelled vessel voxels lies inside"),
        # a newcomer's empty labels with a mask read "none of the 0 labelled vessel voxels"
        (
            np.zeros((32, 40, 40), np.uint8),
            {"annotated": "elsewhere"},
            "labels are empty: paint the vessels inside the annotated region",
        ),
    ],
)
def test_bad_input_is_one_clear_error(user_dir, labels, kwargs, match):
    vol = volume()
    if isinstance(labels, str) and labels == "ok":
        labels = sparse(vol.mask, [4, 12, 20, 28])
    if isinstance(kwargs.get("annotated"), str):  # slices holding no label
        kwargs["annotated"] = np.zeros(vol.mask.shape, bool)
        kwargs["annotated"][[6, 14]] = True
    kwargs = {"base_model": "tiny-base", **kwargs}
    with pytest.raises(ValueError, match=match):
        finetune(vol.image, labels, steps=2, **kwargs, **FAST)


def test_one_corrected_slice_is_enough_to_fine_tune(user_dir):
    vol = volume()
    k = int(np.argmax(vol.mask.sum(axis=(1, 2))))  # the slice with most vessel
    module, card = finetune(
        vol.image, sparse(vol.mask, [k]), "tiny-base", painted=(0, [k]), steps=2, **FAST
    )
    assert card.training["data"]["annotated_voxels"] == 40 * 40
    assert f"of the painted slice {k} along axis 0" in card.metrics["validation_note"]
    from napari_topo.cli import _finetune_result_lines

    said = "\n".join(_finetune_result_lines(card))
    assert f"held-out part: bands of rows of the labelled slice {k} (axis 0)" in said
    # a second plane painted along y: the bands cut it too, and both are named
    j = int(np.argmax(vol.mask.sum(axis=(0, 2))))
    lab = sparse(vol.mask, [k])
    lab[:, j] = vol.mask[:, j]
    _, card = finetune(vol.image, lab, "tiny-base", painted=[(0, [k]), (1, [j])], steps=2, **FAST)
    assert (
        f"painted slice {k} along axis 0 and 1 plane painted along axis 1"
        in (card.metrics["validation_note"])
    )
    said = "\n".join(_finetune_result_lines(card))
    assert f"slice {k} (axis 0) and of those along axis 1 ({j}), which" in said


def test_a_second_rounds_default_name_has_one_ft_suffix(user_dir):
    # a newcomer's second round was named unet-dice-ft-20261203-140243-ft-20261203-140739
    import re

    save_tiny_base(user_dir, name="tiny-base-ft-20261203-140243")
    vol = volume()
    _, card = finetune(
        vol.image,
        sparse(vol.mask, [4, 12, 20, 28]),
        "tiny-base-ft-20261203-140243",
        steps=1,
        **FAST,
    )
    assert re.fullmatch(r"tiny-base-ft-\d{8}-\d{6}", card.name), card.name
    assert card.training["fine_tuned_from"]["name"] == "tiny-base-ft-20261203-140243"


def test_painted_slices_survive_a_zoom_that_shrinks_their_axis():
    # vesselNN BBB_Leakage runs at zoom 0.8 with its 25 slices kept: nearest resampling
    # to 20 slices skipped slice 12, and one corrected slice there was refused ("the
    # annotated region vanished when resampled")
    from napari_topo.training.finetune import _nearest_indices, _resize_nearest_kept

    src = _nearest_indices(25, 20)
    assert 12 not in src.tolist()  # plain nearest loses it
    for k in range(25):
        assert k in _nearest_indices(25, 20, keep=[k]).tolist()
    kept = _nearest_indices(25, 20, keep=[3, 12])
    assert {3, 12} <= set(kept.tolist()) and np.all(np.diff(kept) >= 0)
    assert np.abs(kept - src).max() <= 1  # the others stay where nearest puts them
    region = np.zeros((25, 30, 30), bool)
    region[12] = True
    lab = np.zeros((25, 30, 30), np.uint8)
    lab[12, 10:20, 14:16] = 1
    lab[13] = 1  # an uncorrected neighbour: never taken for slice 12
    out_lab, out_region = _resize_nearest_kept([lab, region], (20, 24, 24), region)
    assert out_region.sum() == 24 * 24 and out_region.any(axis=(1, 2)).sum() == 1
    j = int(np.flatnonzero(out_region.any(axis=(1, 2)))[0])
    assert 0 < out_lab[j].sum() < 24 * 24 and out_lab.dtype == np.uint8
    # nothing to keep, or upsampling: plain nearest
    assert np.array_equal(_nearest_indices(20, 25, keep=[3]), _nearest_indices(20, 25))


def test_finetuning_never_imports_torch_dynamo(user_dir):
    """torch.optim imports torch._dynamo (and with it triton, which segfaults in a process
    holding napari's GL context); the fine-tune path must not. Checked in a fresh
    interpreter, since other tests may have imported it already."""
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from napari_topo.data.synthetic import make_vessel_volume
        from napari_topo.training.finetune import finetune, save_finetuned
        vol = make_vessel_volume(shape=(24, 32, 32), n_trees=1, seed=2)
        lab = np.zeros(vol.mask.shape, np.uint8)
        lab[[4, 10, 16, 22]] = vol.mask[[4, 10, 16, 22]]
        m, card = finetune(vol.image, lab, "tiny-base", steps=3, device="cpu", patch=16,
                           threads=1, name="nodyn")
        save_finetuned(m, card)
        print("dynamo" if "torch._dynamo" in sys.modules else "clean")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=240, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "clean"


# ---------------------------------------------------------------------------------- CLI


@pytest.fixture
def files(tmp_path):
    vol = volume()
    img = write_volume(tmp_path / "scan.nii.gz", vol.image, spacing=(1.0, 1.0, 1.0))
    lab = write_volume(
        tmp_path / "labels.nii.gz", sparse(vol.mask, list(range(2, 32, 4))), spacing=(1, 1, 1)
    )
    return tmp_path, img, lab, vol


def test_cli_finetune_then_segment_with_it(files, user_dir, capsys):
    tmp, img, lab, _ = files
    out = tmp / "my-model"
    rc = main(
        [
            "finetune",
            str(img),
            str(lab),
            "--base",
            "tiny-base",
            "--steps",
            "8",
            "--out",
            str(out),
            "--name",
            "mine",
            "--device",
            "cpu",
            "--threads",
            "1",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "held-out annotation, segmented as segment does: Dice" in captured.out
    assert "->" in captured.out
    assert "base model: held-out Dice" in captured.err  # progress
    assert sorted(p.name for p in out.iterdir()) == ["mine.json", "mine.safetensors"]
    card = json.loads((out / "mine.json").read_text())
    assert card["training"]["fine_tuned_from"]["name"] == "tiny-base"
    assert card["training"]["data"]["spacing"] == [1.0, 1.0, 1.0]
    assert card["training"]["command"].startswith("napari-topo finetune ")
    assert "--steps 8" in card["training"]["command"]
    # the spacing it was tuned at, not the base's synthetic [1, 1, 1] by another name
    assert card["training"]["voxel_spacing"] == card["training"]["data"]["spacing"]
    assert main(["models", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith("mine: tiny-base fine-tuned on a ")
    # the default on a U-Net base: a voxel classifier, whose --steps bounds each stage
    assert card["training"]["layers"] == "head" and 8 <= card["training"]["steps"] <= 16
    from napari_topo.models.registry import steps_text

    steps = steps_text(card["training"])  # each stage's steps, and whether the 2nd is kept
    assert steps in ("8 steps", "16 steps (8 + 8, in two stages)") or steps.startswith(
        "8 steps (and a second stage of "
    ), steps
    assert "fine-tuned from tiny-base (sha256 " in said and f", {steps} in " in said
    assert "held-out part of the annotation, base -> this model: Dice " in said
    rc = main(
        [
            "segment",
            str(img),
            "--model",
            str(out),
            "--out",
            str(tmp / "seg"),
            "--device",
            "cpu",
            "--tile",
            "32",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert (tmp / "seg" / "scan_mask.nii.gz").is_file()
    # into the user models folder by default, then listed and usable by name
    rc = main(
        [
            "finetune",
            str(img),
            str(lab),
            "--base",
            "tiny-base",
            "--steps",
            "2",
            "--name",
            "mine2",
            "--device",
            "cpu",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    capsys.readouterr()
    assert main(["models"]) == 0
    assert "mine2" in capsys.readouterr().out
    # a second model into the same --out folder: the hint names its card (the folder
    # alone no longer names one model)
    argv = ["finetune", str(img), str(lab), "--base", "tiny-base", "--steps", "1"]
    assert main([*argv, "--out", str(out), "--name", "mine3", "--threads", "1"]) == 0
    said = capsys.readouterr().out
    # a command that runs once IMAGE and DIR are filled in (segment requires --out)
    hint = f"segment with: napari-topo segment IMAGE --model {out / 'mine3.json'} --out DIR"
    assert hint in said


def test_cli_labels_in_mm_beside_an_image_in_um_are_on_its_grid(files, user_dir, capsys):
    # a newcomer's labels stated 0.005 mm voxels beside a 5 um image: refused as "not
    # the same grid", while segment --gt and evaluate took the same file
    tmp, _, _, vol = files
    img = write_volume(tmp / "um.nii.gz", vol.image, spacing=(5.0, 1.0, 1.0), unit="um")
    lab = sparse(vol.mask, list(range(2, 32, 4)))
    mm = write_volume(tmp / "mm.nii.gz", lab, spacing=(0.005, 0.001, 0.001), unit="mm")
    argv = ["finetune", str(img), str(mm), "--base", "tiny-base", "--steps", "2"]
    rc = main([*argv, "--out", str(tmp / "m"), "--device", "cpu", "--threads", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "note: the labels mm.nii.gz's lengths were converted from mm to um" in out
    assert "8 labelled slices along axis 0" in out
    # with --spacing (in the image's unit) too: it was set on the labels in their mm
    # before converting, and refused (review)
    rc = main([*argv, "--out", str(tmp / "m2"), "--spacing", "5", "1", "1", "--threads", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err


def test_cli_roi_keeps_the_annotated_voxels_inside_it(files, user_dir, capsys):
    """A CT's labels cut to the liver by ``segment --roi`` are 0 outside it, which is not
    "no vessel": ``finetune --roi`` counts only the annotated voxels inside the region
    (grown by ``--roi-margin``), says so, and writes it in the card."""
    tmp, img, lab, vol = files
    roi = np.zeros(vol.mask.shape, np.uint8)
    roi[:, 5:35, 5:35] = 1
    roi_path = write_volume(tmp / "organ.nii.gz", roi, spacing=(1.0, 1.0, 1.0))
    base = ["finetune", str(img), str(lab), "--base", "tiny-base", "--steps", "2"]
    base += ["--device", "cpu", "--threads", "1", "--layers", "all"]
    rc = main([*base, "--roi", str(roi_path), "--out", str(tmp / "m"), "--name", "r"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    slices = np.zeros(vol.mask.shape, bool)
    slices[2:32:4] = True  # the slices holding labels (the region guessed from them)
    inside = int((slices & (roi > 0)).sum())
    assert f"inside the region of interest organ.nii.gz ({inside} voxels)" in out
    card = json.loads((tmp / "m" / "r.json").read_text())
    assert card["training"]["data"]["annotated_voxels"] == inside < int(slices.sum())
    assert card["training"]["data"]["annotated_region"]["method"] == "slices"  # as without
    assert card["training"]["data"]["annotated_region"]["roi"] is True
    assert "--roi " in card["training"]["command"]
    # grown by a margin: more voxels, and the command says it
    rc = main([*base, "--roi", str(roi_path), "--roi-margin", "2", "--out", str(tmp / "g")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    card = json.loads(next((tmp / "g").glob("*.json")).read_text())
    assert inside < card["training"]["data"]["annotated_voxels"] < int(slices.sum())
    assert "--roi-margin 2.0" in card["training"]["command"] and "grown by 2" in out
    # bad regions: one line, exit 2, nothing written
    far = np.zeros_like(roi)
    far[:, :2, :2] = 1  # no labelled vessel there
    far_path = write_volume(tmp / "far.nii.gz", far, spacing=(1.0, 1.0, 1.0))
    other = write_volume(tmp / "other.nii.gz", roi[:, :-1], spacing=(1.0, 1.0, 1.0))
    empty = write_volume(tmp / "empty.nii.gz", 0 * roi, spacing=(1.0, 1.0, 1.0))
    for extra, match in (
        (["--roi", str(far_path)], "lies inside the region of interest far.nii.gz"),
        (["--roi", str(other)], "shape"),
        (["--roi", str(empty)], "the region of interest empty.nii.gz is empty"),
        (["--roi-margin", "3"], "give --roi MASK too"),
    ):
        assert main([*base, *extra, "--out", str(tmp / "bad")]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err
        assert not (tmp / "bad").exists()


def test_a_roi_cuts_the_region_as_derived_without_it(user_dir, tmp_path, capsys):
    """``roi=`` cuts the annotated region after its method is known: the held-out part is
    chosen as without it (bands across two painted slices, not a whole slice), labels
    the base model already draws are still refused, and the CLI reads the region on the
    image's grid with --spacing applied (a wrong header overridden)."""
    from napari_topo.inference import segment

    vol = volume()
    everywhere = np.ones(vol.mask.shape, bool)
    lab = sparse(vol.mask, [10, 20])
    kw = {"steps": 1, "device": "cpu", "threads": 1, "layers": "all"}
    _, plain = finetune(vol.image, lab, "tiny-base", painted=(0, [10, 20]), **kw)
    _, cut = finetune(vol.image, lab, "tiny-base", painted=(0, [10, 20]), roi=everywhere, **kw)
    for key in ("validation_part",):
        assert cut.training["data"][key] == plain.training["data"][key]
    assert cut.training["data"]["validation_part"].get("within")  # bands, as painted
    own = segment(vol.image, "tiny-base", device="cpu").mask.astype(np.uint8)
    with pytest.raises(ValueError, match="look like its own mask"):
        finetune(vol.image, own, "tiny-base", roi=everywhere, **kw)
    # a wrong header (3 x 1 x 1) on every file, overridden by --spacing
    paths = {}
    for name, data in (("img", vol.image), ("lab", lab), ("roi", everywhere.astype(np.uint8))):
        paths[name] = write_volume(tmp_path / f"{name}.nii.gz", data, spacing=(3.0, 1.0, 1.0))
    argv = ["finetune", str(paths["img"]), str(paths["lab"]), "--base", "tiny-base"]
    argv += ["--roi", str(paths["roi"]), "--spacing", "1", "1", "1", "--steps", "1"]
    argv += ["--device", "cpu", "--threads", "1", "--layers", "all", "--out", str(tmp_path / "m")]
    assert main(argv) == 0, capsys.readouterr().err


def test_cli_unit_names_the_voxel_size_of_an_npy(files, user_dir, capsys, tmp_path):
    # segment and evaluate took --unit, finetune did not: a newcomer's card read
    # "spacing 5x0.994x0.994" with no unit
    _, _, _, vol = files
    img, lab = tmp_path / "img.npy", tmp_path / "lab.npy"
    np.save(img, vol.image)
    np.save(lab, sparse(vol.mask, list(range(2, 32, 4))))
    argv = ["finetune", str(img), str(lab), "--base", "tiny-base", "--steps", "1"]
    argv += ["--device", "cpu", "--threads", "1", "--out", str(tmp_path / "m")]
    assert main([*argv, "--unit", "um"]) == 2  # no voxel size to name
    out, err = capsys.readouterr()
    assert "--unit um names the unit of a voxel size, and img.npy states none" in err
    assert not (tmp_path / "m").exists()
    assert main([*argv, "--spacing", "5", "1", "1", "--unit", "um", "--name", "u"]) == 0
    assert "no voxel size" not in capsys.readouterr().out  # --spacing gave it
    card = json.loads((tmp_path / "m" / "u.json").read_text())
    assert card["training"]["data"]["unit"] == "um"
    assert "--unit um" in card["training"]["command"]
    assert main(["models", str(tmp_path / "m")]) == 0
    assert "(spacing 5x1x1 um)" in capsys.readouterr().out
    # without --spacing the note segment gives: the saved model's zoom follows it
    assert main([*argv, "--name", "plain"]) == 0
    out = capsys.readouterr().out
    assert "note: img.npy states no voxel size; its voxels are taken as cubes" in out


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("shape", "shape differs"),
        ("grid", "spacing differs"),
        ("empty", "labels are empty"),
        ("fraction", "fractional"),
        ("annotated", "binary"),
        ("base", "unknown model"),
        ("swapped", "are the image and the labels swapped?"),
    ],
)
def test_cli_bad_input_one_line_exit_2_nothing_written(files, user_dir, capsys, case, match):
    tmp, img, lab, vol = files
    args = ["finetune", str(img), str(lab), "--base", "tiny-base", "--steps", "2"]
    if case == "shape":
        lab = write_volume(tmp / "bad.nii.gz", np.zeros((32, 40, 39), np.uint8))
    elif case == "grid":
        lab = write_volume(tmp / "bad.nii.gz", sparse(vol.mask, [4, 8]), spacing=(2, 1, 1))
    elif case == "empty":
        lab = write_volume(tmp / "bad.nii.gz", np.zeros(vol.mask.shape, np.uint8))
    elif case == "fraction":
        lab = write_volume(tmp / "bad.nii.gz", np.full(vol.mask.shape, 0.3, np.float32))
    elif case == "annotated":
        ann = write_volume(tmp / "ann.nii.gz", np.full(vol.mask.shape, 3, np.uint8))
        args += ["--annotated", str(ann)]
    elif case == "base":
        args[4] = "no-such-model"
    elif case == "swapped":  # a uint8 image given as the labels (a newcomer's swap)
        scaled = np.clip(vol.image * 200 + 20, 1, 255).astype(np.uint8)
        lab = write_volume(tmp / "bad.nii.gz", scaled)
    args[2] = str(lab)
    out = tmp / "out"
    rc = main([*args, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and match in err[0], err
    assert not out.exists()
    assert sorted(p.name for p in user_dir.iterdir()) == ["tiny-base.json", "tiny-base.safetensors"]


def test_finetune_trains_at_every_zoom_segment_runs(user_dir, monkeypatch):
    """Thick vessels give an automatic zoom below 0.75, so segment also runs finer zooms for
    thin vessels: fine-tuning sees the data at each of them, in turn, and validates on all.

    Seen on the two-photon plaqueVessels stack: fine-tuned at its zoom 0.265 only, the
    model marked thin fragments at zooms 0.53 and 1 that the labels call background.
    """
    from napari_topo.inference.intensity import plan_input
    from napari_topo.training import finetune as ft

    folder = user_dir
    torch.manual_seed(0)
    card = {
        "name": "tiny-auto",
        "summary": "tiny untrained test model, automatic input policy",
        "normalization": {"method": "auto", "low": 0.5, "high": 99.5, "polarity": "bright"},
        "training": {"config": {"loss": {"name": "dice"}, "patch": [16] * 3, "batch_size": 2}},
    }
    save_model(UNet3D(widths=(4, 8)), card, folder)
    # one thick tube (radius 14 voxels) and a thin one, bright on a noisy background
    rng = np.random.default_rng(0)
    z, y, x = np.indices((48, 64, 64))
    thick = (y - 24) ** 2 + (x - 24) ** 2 <= 14**2
    thin = (z - 24) ** 2 + (y - 52) ** 2 <= 4
    mask = thick | thin
    image = (np.where(mask, 200.0, 40.0) + rng.normal(0, 10, mask.shape)).astype(np.float32)
    base_card = load_model("tiny-auto")[1]
    zooms = plan_input(image, base_card.normalization).zoom.zooms
    assert len(zooms) > 1 and zooms[0] < 0.75 and zooms[-1] == 1.0

    seen = []
    sample = ft._Sampler.sample

    def spy(self, n):
        seen.append(self.data.image.shape)
        return sample(self, n)

    monkeypatch.setattr(ft._Sampler, "sample", spy)
    lab = sparse(mask, list(range(4, 48, 6)))
    module, tuned = finetune(
        image, lab, "tiny-auto", steps=2 * len(zooms), val_every=len(zooms), patience=10, **FAST
    )
    data = tuned.training["data"]
    assert data["zooms"] == pytest.approx(list(zooms))
    shapes = [tuple(s) for s in data["model_grid_shapes"]]
    assert len(set(shapes)) == len(zooms)  # one grid per zoom, each a different size
    # the zooms take turns, and every grid is trained on
    assert len(seen) == 2 * len(zooms) and len(set(seen)) == len(zooms)
    assert tuned.metrics["validation"]["Dice"] is not None


def fake_clock(monkeypatch, validation_s: float, step_s: float = 0.0, view_s: float = 0.0):
    """Make :func:`finetune` see every validation take ``validation_s`` seconds, every
    training step ``step_s`` and every segmentation of the held-out part ``view_s``,
    whatever the machine's speed (real time runs a thousand times slower on this
    clock)."""
    import time
    import types

    import napari_topo.training.finetune as ft

    virtual = [0.0]
    real = time.perf_counter
    start = real()
    clock = types.SimpleNamespace(
        perf_counter=lambda: virtual[0] + (real() - start) * 1e-3, strftime=time.strftime
    )
    monkeypatch.setattr(ft, "time", clock)
    # a validation and the mask threshold's choice each run the model over the held-out
    # patches once (per grid; these tests have one)
    held_out, sample = ft._held_out_outputs, ft._Sampler.sample

    def slow_held_out(*args, **kwargs):
        virtual[0] += validation_s
        return held_out(*args, **kwargs)

    def slow_sample(self, n):
        virtual[0] += step_s
        return sample(self, n)

    view = ft._held_out_view

    def slow_view(*args, **kwargs):
        virtual[0] += view_s
        return view(*args, **kwargs)

    monkeypatch.setattr(ft, "_held_out_outputs", slow_held_out)
    monkeypatch.setattr(ft._Sampler, "sample", slow_sample)
    monkeypatch.setattr(ft, "_held_out_view", slow_view)


def test_the_time_budget_holds_the_final_validation(user_dir, monkeypatch):
    """``minutes`` bounds the whole call: training stops early enough for the last
    validation and the segmentation of the held-out part that the mask threshold is
    chosen on.

    Every validation takes 12 s, a segmentation of the held-out part 6 s (the base
    model's, before training, and the kept weights', at the end) and a training step
    nothing: with a 60 s budget and a validation every 7 steps, training stops after the
    validation at 42 s (step 14), keeping 18 s (a validation and a segmentation) free;
    the kept weights' segmentation then ends the call at 48 s.
    """
    fake_clock(monkeypatch, validation_s=12.0, view_s=6.0)
    vol = volume()
    lab = sparse(vol.mask, list(range(2, 32, 4)))
    _, card = finetune(vol.image, lab, "tiny-base", minutes=1.0, val_every=7, patience=99, **FAST)
    assert 48.0 <= card.training["wall_time_s"] < 49.0
    assert card.training["steps"] == 14
    assert "time budget" in card.training["stopped"]
    assert card.training["note"].startswith("only 14 training steps fit in 1 min")
    assert card.metrics["threshold_choice"]  # chosen, on the held-out part as segmented


def test_a_budget_that_fits_no_step_says_so_without_a_step_time(user_dir, monkeypatch):
    # a newcomer's 2-minute run on loaded cores trained 0 steps and was told "a step took
    # 0.0 s"; here the preparation alone (the base model's validation) takes the budget
    fake_clock(monkeypatch, validation_s=70.0)
    vol = volume()
    lab = sparse(vol.mask, list(range(2, 32, 4)))
    _, card = finetune(vol.image, lab, "tiny-base", minutes=1.0, patience=99, **FAST)
    assert card.training["steps"] == 0
    assert card.training["note"].startswith(
        "no training step fit in 1 min (scoring the base model on the held-out patches and "
        "segmenting the held-out part took 70 s)"
    )


@pytest.mark.parametrize(
    "validation_s, step_s, n_fit, fit",
    [(40.0, 0.0, 0, "no training step"), (12.0, 5.0, 8, "only 8 training steps")],
)
def test_a_budget_the_kept_time_eats_still_trains_the_minimum_steps(
    user_dir, monkeypatch, validation_s, step_s, n_fit, fit
):
    """The time kept for the end of the run is estimated from the first validation; on a
    busy 2-core machine it ate a newcomer's whole 2-minute budget and no step was done.
    When the preparation ended within the budget, MIN_BUDGET_STEPS steps run anyway,
    with the learning rate's decay spread over them, and the run says it overran.

    40 s validations: 40 s of preparation, 40 s kept, 80 s > 60 s before the first step.
    12 s validations and 5 s steps: 12 + 8 x 5 + 12 = 64 s > 60 s after step 8.
    """
    from napari_topo.training.finetune import MIN_BUDGET_STEPS

    fake_clock(monkeypatch, validation_s=validation_s, step_s=step_s)
    vol = volume()
    lab = sparse(vol.mask, list(range(2, 32, 4)))
    reports = []
    _, card = finetune(
        vol.image,
        lab,
        "tiny-base",
        minutes=1.0,
        val_every=99,
        patience=99,
        progress=reports.append,
        **FAST,
    )
    t = card.training
    assert t["steps"] == MIN_BUDGET_STEPS == 10
    assert t["stopped"] == "time budget (1 min), overrun for the minimum 10 steps"
    prep = f"{validation_s:.0f} s"
    assert t["note"].startswith(
        f"{fit} fit in 1 min (preparing and scoring the base model took {prep}, {prep} "
        "were kept for the final validation and segmenting the held-out part); the minimum "
        "10 steps ran anyway, so the run took "
    )
    assert t["wall_time_s"] > 60.0  # past its budget, as the note says
    # one progress line says so, when the budget ran out (the CLI prints "prepare" lines)
    said = [i for i, p in enumerate(reports) if "training the minimum 10 steps" in p.message]
    assert len(said) == 1 and reports[said[0]].phase == "prepare"
    assert reports[said[0]].message.startswith(f"{fit} fit in 1 min ({validation_s:.0f} s went on")
    before = [p.step for p in reports[: said[0]] if p.phase == "train"]
    assert before == list(range(1, n_fit + 1))
    # the learning rate's decay runs over the minimum steps (the spent clock alone put
    # every step at the bottom of the cosine, a tenth of the rate)
    fractions = [p.fraction for p in reports if p.phase == "train"]
    assert len(fractions) == 10 and fractions[-1] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(fractions[:-1], fractions[1:], strict=True)), fractions


#: A 1-minute CLI fine-tune of the tiny base's network: the network's budget rules (a
#: head's, the default on a U-Net, are tested in test_voxel_head.py).
NETWORK_ONE_MINUTE = ("--base", "tiny-base", "--minutes", "1", "--layers", "all")


def test_a_minimum_steps_run_that_beats_nothing_saves_nothing(files, user_dir, monkeypatch, capsys):
    """The minimum steps of a spent budget (above) follow the rule of every run: when
    no step beats the base model on the held-out part, the CLI writes nothing."""
    import napari_topo.training.finetune as ft

    tmp, img, lab, _ = files
    fake_clock(monkeypatch, validation_s=40.0)
    evaluate, calls = ft._evaluate_grids, []

    def never_better(*args, **kwargs):
        res = evaluate(*args, **kwargs)
        calls.append(1)
        return res if len(calls) == 1 else {**res, "score": -1.0}

    monkeypatch.setattr(ft, "_evaluate_grids", never_better)
    monkeypatch.setattr(ft, "choose_threshold", _base_threshold(ft.choose_threshold))
    out = tmp / "none"
    args = ["finetune", str(img), str(lab), *NETWORK_ONE_MINUTE]
    rc = main([*args, "--out", str(out), "--device", "cpu", "--threads", "1"])
    captured = capsys.readouterr()
    last = captured.err.strip().splitlines()[-1]
    assert "training the minimum 10 steps anyway" in captured.err
    assert rc == 2 and "no training step beat the base model on the held-out part" in last
    assert last.endswith("Nothing was written (it would be the base model).")
    assert not out.exists() or not any(out.iterdir())


def _base_threshold(choose):
    """``choose_threshold`` that keeps the tiny base's own mask threshold (0.5)."""

    def keep(*args, **kwargs):
        _, at, table = choose(*args, **kwargs)
        return 0.5, at, table

    return keep


def test_cli_writes_nothing_when_no_training_step_fit(files, user_dir, monkeypatch, capsys):
    # the dock saved nothing for such a run while the CLI saved the base model's weights
    # under a new name
    tmp, img, lab, _ = files
    fake_clock(monkeypatch, validation_s=70.0)
    out = tmp / "none"
    args = ["finetune", str(img), str(lab), *NETWORK_ONE_MINUTE]
    rc = main([*args, "--out", str(out), "--device", "cpu", "--threads", "1"])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # progress lines come first
    assert rc == 2 and last.startswith("napari-topo: error: no training step fit in 1 min")
    assert last.endswith("Nothing was written (it would be the base model).")
    assert not out.exists() or not any(out.iterdir())
    assert sorted(p.name for p in user_dir.iterdir()) == ["tiny-base.json", "tiny-base.safetensors"]


def test_cli_writes_nothing_when_the_result_is_the_base_model(files, user_dir, monkeypatch, capsys):
    """Steps done, none better than the base on the held-out part, the base's threshold
    kept: the base model itself. A newcomer's CLI run saved it under a new name (exit 0)."""
    import napari_topo.training.finetune as ft

    tmp, img, lab, _ = files
    real = ft.finetune

    def base_again(*args, **kwargs):
        module, card = real(*args, **kwargs)
        training = {**card.training, "best_step": 0, "kept_base": "the trained weights (...)"}
        before = card.metrics["validation_before"]["threshold"]
        return module, dataclasses.replace(card, training=training, threshold=before)

    monkeypatch.setattr(ft, "finetune", base_again)
    out = tmp / "same"
    args = ["finetune", str(img), str(lab), "--base", "tiny-base", "--steps", "2"]
    rc = main([*args, "--out", str(out), "--device", "cpu", "--threads", "1"])
    captured = capsys.readouterr()
    last = captured.err.strip().splitlines()[-1]
    assert rc == 2 and "no training step beat the base model on the held-out part" in last
    assert last.endswith("Nothing was written (it would be the base model).")
    assert "held-out annotation, segmented as segment does" in captured.out  # the scores
    assert not out.exists() or not any(out.iterdir())


def test_cli_says_when_the_budget_left_too_few_steps(files, user_dir, monkeypatch, capsys):
    """A 1-minute run where validation takes 15 s and a step 2 s trains 15 steps (15 s
    are kept for the last validation and the threshold's choice): the CLI says so, and
    prints the input line (as segment will read the image) before training starts."""
    tmp, img, lab, _ = files
    fake_clock(monkeypatch, validation_s=15.0, step_s=2.0)
    reports = []
    import napari_topo.cli as cli

    printer = cli._finetune_printer

    def recording_printer(stream=None):
        inner = printer(stream)

        def progress(p):
            reports.append(p)
            inner(p)

        return progress

    monkeypatch.setattr(cli, "_finetune_printer", recording_printer)
    args = ["finetune", str(img), str(lab), *NETWORK_ONE_MINUTE]
    rc = main([*args, "--name", "short", "--device", "cpu", "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "note: only 15 training steps fit in 1 min (a step took 2.0 s, a validation 15 s)" in out
    assert out.index("input: ") < out.index("held-out annotation, segmented")
    phases = [p.phase for p in reports]
    first_input = next(i for i, p in enumerate(reports) if p.input is not None)
    assert phases[first_input] == "prepare" and "train" not in phases[:first_input]
    assert reports[first_input].input.startswith(("microscopy", "CT"))


def test_a_step_budget_with_a_fixed_seed_repeats_exactly(user_dir):
    """The brief's "reproducible from one command with a fixed seed": with ``steps`` and
    no time budget two runs give the same weights, threshold and scores (a time budget
    cannot: the steps done and the learning-rate schedule follow the clock, said in the
    docstring); another seed gives other weights."""
    vol = volume()
    lab = sparse(vol.mask, list(range(2, 32, 4)))

    def run(seed):
        module, card = finetune(vol.image, lab, "tiny-base", steps=12, seed=seed, **FAST)
        return {k: v.detach().clone() for k, v in module.state_dict().items()}, card

    (a, card_a), (b, card_b), (c, _) = run(0), run(0), run(1)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert card_a.metrics == card_b.metrics and card_a.threshold == card_b.threshold
    assert [h["Dice"] for h in card_a.training["validation_history"]] == [
        h["Dice"] for h in card_b.training["validation_history"]
    ]
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_kept_base_scores_are_told_apart():
    """ "scored 0.721 ... below the base model's 0.721" read as a contradiction to a
    newcomer: the two scores get as many decimals as tell them apart."""
    from napari_topo.training.finetune import _apart

    assert _apart(0.72104, 0.72149) == ("0.7210", "0.7215")
    assert _apart(0.5, 0.7) == ("0.500", "0.700")
