"""Losses: known answers, cross-checks against MONAI, gradients, edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from napari_topo.topology.losses import (
    CenternessLoss,
    DiceclDiceLoss,
    EmbeddingMetricLoss,
    ProjectedPoolingLoss,
    SkeletonIterationWarning,
    SoftclDiceLoss,
    SoftDiceLoss,
    TopNetLoss,
    sample_embedding_pairs,
    soft_dilate,
    soft_erode,
    soft_skeleton,
)


@pytest.fixture(scope="module")
def monai_cldice():
    """MONAI's clDice module, the reference implementation; only the comparisons with it
    are skipped when it does not import (the other loss tests never need it)."""
    return pytest.importorskip("monai.losses.cldice")


def tube(shape=(24, 24, 24), radius=3.0, axis_yx=(12, 12), gap=None) -> torch.Tensor:
    """A straight tube along z as a (1, 1, D, H, W) float tensor, optionally cut at z in gap."""
    z, y, x = np.indices(shape)
    m = (y - axis_yx[0]) ** 2 + (x - axis_yx[1]) ** 2 <= radius**2
    m &= (z >= 2) & (z < shape[0] - 2)
    if gap is not None:
        m &= ~((z >= gap[0]) & (z < gap[1]))
    return torch.from_numpy(m.astype(np.float32))[None, None]


def smooth_random(shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    return x


# --- morphology and soft skeleton ------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 1, 11, 12, 13), (3, 2, 17, 19)])
def test_erode_dilate_match_reference(shape, monai_cldice):
    x = smooth_random(shape)
    assert torch.equal(soft_erode(x), monai_cldice.soft_erode(x))
    assert torch.equal(soft_dilate(x), monai_cldice.soft_dilate(x))


@pytest.mark.parametrize("shape", [(2, 1, 14, 15, 16), (2, 2, 25, 23)])
def test_soft_skeleton_matches_reference_values_and_gradients(shape, monai_cldice):
    x = smooth_random(shape, seed=1)
    ours_in = x.clone().requires_grad_(True)
    ref_in = x.clone().requires_grad_(True)
    ours = soft_skeleton(ours_in, 6, warn=False)
    ref = monai_cldice.soft_skel(ref_in, 6)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    w = smooth_random(shape, seed=2)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    assert ref_in.grad.abs().sum() > 0
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-9, atol=1e-9)


def test_soft_skeleton_of_bar_is_thin_and_centered():
    bar = torch.zeros(1, 1, 9, 9, 9)
    bar[..., 3:6, 3:6] = 1.0
    skel = soft_skeleton(bar, iterations=2)
    assert int(skel.sum()) == 9
    assert torch.all(skel[0, 0, :, 4, 4] == 1)


def test_soft_skeleton_warns_when_iterations_too_few():
    t = tube(radius=4.0)
    with pytest.warns(SkeletonIterationWarning, match="too few"):
        soft_skeleton(t, iterations=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        soft_skeleton(t, iterations=4)


def test_soft_skeleton_validates():
    with pytest.raises(ValueError, match="shape"):
        soft_skeleton(torch.zeros(4, 4))
    with pytest.raises(ValueError, match=">= 0"):
        soft_skeleton(torch.zeros(1, 1, 4, 4), iterations=-1)
    with pytest.raises(ValueError, match="floating"):
        soft_skeleton(torch.zeros(1, 1, 4, 4, dtype=torch.int64))


# --- Dice / clDice ---------------------------------------------------------------------


def test_soft_cldice_matches_monai_on_random_3d(monai_cldice):
    g = torch.Generator().manual_seed(3)
    pred = torch.rand(2, 1, 20, 20, 20, generator=g)
    target = (torch.rand(2, 1, 20, 20, 20, generator=g) > 0.6).float()
    ours = SoftclDiceLoss(iterations=5)
    ref = monai_cldice.SoftclDiceLoss(iter_=5, smooth_nr=1.0, smooth_dr=1.0, smooth=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkeletonIterationWarning)
        torch.testing.assert_close(ours(pred, target), ref(pred, target), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            SoftclDiceLoss(5, reduction="none")(pred, target)[:, 0],
            monai_cldice.SoftclDiceLoss(iter_=5, reduction="none")(pred, target),
            rtol=1e-5,
            atol=1e-6,
        )


def test_perfect_prediction_costs_nothing_and_a_cut_costs():
    target = tube()
    cut = tube(gap=(10, 13))
    for loss in (SoftDiceLoss(), SoftclDiceLoss(5), DiceclDiceLoss(0.5, 5), ProjectedPoolingLoss()):
        perfect = float(loss(target, target))
        broken = float(loss(cut, target))
        assert perfect < 1e-3, (type(loss).__name__, perfect)
        assert broken > perfect + 1e-3, (type(loss).__name__, broken)
    # clDice weighs the cut more than Dice does: the skeleton is thin, the gap is not.
    dice_rise = float(SoftDiceLoss()(cut, target))
    cldice_rise = float(SoftclDiceLoss(5)(cut, target))
    assert cldice_rise > dice_rise


def test_combined_loss_is_the_papers_mix():
    g = torch.Generator().manual_seed(4)
    pred = torch.rand(1, 1, 16, 16, 16, generator=g)
    target = tube((16, 16, 16), 2.0, (8, 8))
    a = 0.3
    expected = (1 - a) * SoftDiceLoss()(pred, target) + a * SoftclDiceLoss(4)(pred, target)
    torch.testing.assert_close(DiceclDiceLoss(a, 4)(pred, target), expected)
    torch.testing.assert_close(DiceclDiceLoss(0.0, 4)(pred, target), SoftDiceLoss()(pred, target))
    with pytest.raises(ValueError, match=r"\[0, 0.5\]"):
        DiceclDiceLoss(alpha=0.7)


def test_sigmoid_background_and_reduction():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 12, 12, generator=g)
    target = (torch.rand(2, 3, 12, 12, generator=g) > 0.5).float()
    probs = torch.sigmoid(logits)
    torch.testing.assert_close(
        SoftDiceLoss(sigmoid=True)(logits, target), SoftDiceLoss()(probs, target)
    )
    per = SoftDiceLoss(reduction="none")(probs, target)
    assert per.shape == (2, 3)
    no_bg = SoftDiceLoss(include_background=False, reduction="none")(probs, target)
    torch.testing.assert_close(no_bg, per[:, 1:])
    torch.testing.assert_close(SoftDiceLoss(reduction="sum")(probs, target), per.sum())
    with pytest.raises(ValueError, match="reduction"):
        SoftDiceLoss(reduction="max")


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="shape of input"):
        SoftclDiceLoss(3)(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 7))


# --- projected pooling -----------------------------------------------------------------


def test_projected_pooling_sum_mode_is_the_released_formula_normalised():
    g = torch.Generator().manual_seed(6)
    pred = torch.rand(1, 1, 20, 24, 28, generator=g)
    target = (torch.rand(1, 1, 20, 24, 28, generator=g) > 0.8).float()
    kernels = (4, 5)
    expected = []
    for k in kernels:
        for dim in (2, 3, 4):
            mp = torch.nn.functional.max_pool2d(pred.amax(dim), k, k, ceil_mode=True)
            mg = torch.nn.functional.max_pool2d(target.amax(dim), k, k, ceil_mode=True)
            expected.append((mp.sum() - mg.sum()).abs() / mp.numel())
    loss = ProjectedPoolingLoss(kernels, lambda_dice=0.0, mode="sum")(pred, target)
    torch.testing.assert_close(loss, torch.stack(expected).mean())


@pytest.mark.parametrize("mode", ["pixel", "sum"])
def test_projected_pooling_scale_does_not_depend_on_patch_size(mode):
    target = tube((16, 16, 16), 2.0, (8, 8))
    pred = tube((16, 16, 16), 2.0, (8, 8), gap=(6, 9)) * 0.9
    loss = ProjectedPoolingLoss((4, 8), lambda_dice=0.0, mode=mode)
    small = loss(pred, target)
    big = loss(pred.repeat(1, 1, 2, 2, 2), target.repeat(1, 1, 2, 2, 2))
    assert float(small) > 0
    torch.testing.assert_close(small, big)


def test_projected_pooling_skips_large_kernels_and_handles_2d():
    target = tube((16, 16, 16), 2.0, (8, 8))
    pred = target * 0.5
    only_small = ProjectedPoolingLoss((4,), lambda_dice=0.0)(pred, target)
    with_large = ProjectedPoolingLoss((4, 20), lambda_dice=0.0)(pred, target)
    torch.testing.assert_close(only_small, with_large)
    none_fit = ProjectedPoolingLoss((20,), lambda_dice=0.0)(pred, target)
    assert float(none_fit) == 0.0
    img = target[:, :, 8]
    assert float(ProjectedPoolingLoss()(img * 0.5, img)) > 0


def test_projected_pooling_sees_a_spurious_blob():
    target = tube((32, 32, 32), 2.0, (10, 10))
    pred = target.clone()
    pred[..., 20:23, 24:27, 24:27] = 1.0  # a false positive component
    assert float(ProjectedPoolingLoss(lambda_dice=0.0)(pred, target)) > 0.01


# --- TopNet ----------------------------------------------------------------------------


def test_centerness_loss():
    dist = torch.tensor([[[0.0, 1.0, 2.0, 5.0]]]).reshape(1, 1, 1, 2, 2)
    vessel = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]]).reshape(1, 1, 1, 2, 2)
    loss = CenternessLoss()
    assert float(loss(dist.clone(), dist, vessel)) == 0.0
    pred = dist + 1.0  # off by one everywhere: smooth-L1(1) = 0.5 at each vessel voxel
    assert float(loss(pred, dist, vessel)) == pytest.approx(0.5)
    pred = dist.clone()
    pred.view(-1)[3] = 100.0  # outside the vessel: ignored
    assert float(loss(pred, dist, vessel)) == 0.0
    assert float(loss(dist, dist, torch.zeros_like(vessel))) == 0.0


def test_embedding_metric_loss_hand_computed():
    emb = torch.zeros(1, 2, 1, 1, 3)
    emb[0, :, 0, 0, 1] = torch.tensor([3.0, 4.0])  # |x1 - x0| = 5
    emb[0, :, 0, 0, 2] = torch.tensor([0.0, 1.0])  # |x2 - x0| = 1
    loss = EmbeddingMetricLoss(alpha=0.5, margin=3.0, gamma=0.5)
    a = torch.tensor([0, 0])
    b = torch.tensor([1, 2])
    geo = torch.tensor([4.0, 0.0])
    same = torch.tensor([True, False])
    # intra: |5 - 0.5 * 4| = 3; inter: max(0, 3 - 1) = 2, times gamma 0.5 -> 1
    assert float(loss(emb, a, b, geo, same)) == pytest.approx(4.0, abs=1e-5)
    empty = torch.zeros(0, dtype=torch.int64)
    assert float(loss(emb, empty, empty, torch.zeros(0), torch.zeros(0, dtype=torch.bool))) == 0.0


def test_sample_embedding_pairs_follows_vessels():
    labels = np.zeros((1, 20, 20), np.int32)
    labels[0, 2, 2:18] = 1  # an L-shaped tree: along row 2, then down column 17
    labels[0, 2:18, 17] = 1
    labels[0, 6:18, 5] = 2  # a second tree
    a, b, geo, same = sample_embedding_pairs(labels, n_anchors=40, partners=8, radius=15, rng=0)
    assert len(a) <= 40 * 8 and len(a) > 0
    coords_a = np.array(np.unravel_index(a, labels.shape)).T
    coords_b = np.array(np.unravel_index(b, labels.shape)).T
    ta, tb = labels[tuple(coords_a.T)], labels[tuple(coords_b.T)]
    assert np.array_equal(same, ta == tb)
    euclid = np.linalg.norm(coords_a - coords_b, axis=1)
    assert np.all(geo[same] >= euclid[same] - 1e-4)
    corner = same & (geo > euclid + 2)  # pairs around the corner are longer along the vessel
    assert corner.any()
    assert np.all(np.linalg.norm(coords_a - coords_b, axis=1) <= 15 + 1e-6)


def test_topnet_loss_runs_on_a_batch_and_gradients_flow():
    torch.manual_seed(0)
    labels = np.zeros((12, 12, 12), np.int32)
    labels[2:10, 4, 4] = 1
    labels[2:10, 8, 8] = 2
    pairs = [torch.from_numpy(p) for p in sample_embedding_pairs(labels, rng=1)]
    vessel = torch.from_numpy(labels > 0).float()[None, None]
    outputs = {
        "vessel": torch.randn(1, 1, 12, 12, 12, requires_grad=True),
        "centerness": torch.randn(1, 1, 12, 12, 12, requires_grad=True),
        "embedding": torch.randn(1, 8, 12, 12, 12, requires_grad=True),
    }
    total, parts = TopNetLoss()(
        outputs, {"vessel": vessel, "distance": torch.zeros_like(vessel), "pairs": pairs}
    )
    total.backward()
    assert set(parts) == {"vessel", "centerness", "embedding"}
    for t in outputs.values():
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


# --- every loss: gradients, empty masks, autocast -------------------------------------

REGION_LOSSES = [
    SoftDiceLoss(),
    SoftclDiceLoss(4),
    DiceclDiceLoss(0.5, 4),
    ProjectedPoolingLoss(),
    ProjectedPoolingLoss(mode="sum"),
]


@pytest.mark.parametrize("loss", REGION_LOSSES, ids=lambda x: type(x).__name__)
@pytest.mark.parametrize("ndim", [2, 3])
def test_gradients_flow(loss, ndim):
    torch.manual_seed(7)
    shape = (2, 1) + (20,) * ndim
    pred = torch.rand(shape, requires_grad=True)
    target = (torch.rand(shape) > 0.7).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkeletonIterationWarning)
        loss(pred, target).backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0


@pytest.mark.parametrize("loss", REGION_LOSSES, ids=lambda x: type(x).__name__)
def test_empty_masks_are_finite(loss):
    empty = torch.zeros(1, 1, 16, 16, 16)
    some = torch.rand(1, 1, 16, 16, 16, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkeletonIterationWarning)
        # clDice keeps its harmonic-mean epsilon (1e-4): a residue of about 5e-5.
        assert float(loss(empty, empty)) == pytest.approx(0.0, abs=1e-4)
        value = loss(some, empty)
        value.backward()
    assert torch.isfinite(value) and torch.isfinite(some.grad).all()


@pytest.mark.parametrize("loss", REGION_LOSSES, ids=lambda x: type(x).__name__)
def test_loss_is_float32_under_autocast(loss):
    pred = torch.rand(1, 1, 16, 16, 16).bfloat16()
    target = (torch.rand(1, 1, 16, 16, 16) > 0.5).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16), warnings.catch_warnings():
        warnings.simplefilter("ignore", SkeletonIterationWarning)
        value = loss(pred, target)
    assert value.dtype == torch.float32 and torch.isfinite(value)


def test_cldice_iterations_accept_numpy_integers_not_bools():
    """A sweep or a YAML loader hands over numpy integers; soft_skeleton takes them too."""
    assert SoftclDiceLoss(np.int64(5)).iterations == 5
    x = smooth_random((1, 1, 12, 12, 12)).sigmoid()
    t = (x > 0.5).float()
    assert torch.equal(DiceclDiceLoss(0.5, np.int32(3))(x, t), DiceclDiceLoss(0.5, 3)(x, t))
    for bad in (True, np.bool_(True), -1, 2.0):
        with pytest.raises(ValueError, match="iterations"):
            SoftclDiceLoss(bad)
