"""The voxel head (``finetune(..., layers="head")``): features, training, saving, segmenting."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
from test_finetune import save_tiny_base, sparse, user_dir, volume  # noqa: F401 (a fixture)

from napari_topo.inference import predict, segment
from napari_topo.inference.sliding import Cancelled
from napari_topo.models.registry import (
    WeightsIntegrityError,
    list_models,
    load_model,
)
from napari_topo.models.voxel_head import (
    FEATURE_NAMES,
    VoxelHeadNet,
    feature_blocks,
    halo_per_axis,
    symmetric_eigenvalues,
    voxel_features,
)
from napari_topo.training.finetune import finetune, save_finetuned

HEAD = {"device": "cpu", "threads": 1, "layers": "head"}


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


# ------------------------------------------------------------------------------ features


def assemble(parts, shape):
    """feature_blocks' (region, features) put together: every voxel exactly once."""
    parts = list(parts)
    out = np.full(tuple(shape) + (parts[0][1].shape[-1],), np.nan, np.float32)
    seen = np.zeros(shape, np.int32)
    for region, f in parts:
        assert all(isinstance(r.start, int) and isinstance(r.stop, int) for r in region)
        out[region] = f
        seen[region] += 1
    assert (seen == 1).all()
    return out


def test_slab_features_equal_the_whole_volume():
    """What inference computes slab by slab is what the whole volume gives (anisotropic)."""
    rng = np.random.default_rng(0)
    x = rng.random((30, 20, 22)).astype(np.float32)
    p = rng.random(x.shape).astype(np.float32)
    spacing = (1.6, 0.57, 0.57)
    whole = voxel_features(x, p, spacing)
    assert whole.shape == x.shape + (len(FEATURE_NAMES),) and whole.dtype == np.float32
    parts = list(feature_blocks(x, p, spacing, slab=6))
    assert [(r[0].start, r[0].stop) for r, _ in parts][:2] == [(0, 6), (6, 12)]
    assert all(r[1:] == (slice(0, 20), slice(0, 22)) for r, _ in parts)  # whole planes
    np.testing.assert_allclose(assemble(parts, x.shape), whole, atol=1e-5)
    assert halo_per_axis(spacing)[0] < halo_per_axis(spacing)[1]  # thick slices: less z context


def test_features_follow_the_spacing_and_see_a_tube():
    """A bright tube along x: its Hessian has two strongly negative eigenvalues across it,
    and a volume with twice the voxel size gives the features of its subsampled copy."""
    z, y, x = np.mgrid[:24, :24, :24]
    tube = np.exp(-((z - 12.0) ** 2 + (y - 12.0) ** 2) / (2 * 2.0**2)).astype(np.float32)
    f = voxel_features(tube, np.zeros_like(tube))
    k = FEATURE_NAMES.index("hessian_eigenvalue2_2.8")
    centre, outside = f[12, 12, 12, k], f[2, 2, 12, k]
    assert centre < -0.1 and abs(outside) < 0.05 * abs(centre)
    with pytest.raises(ValueError, match="one shape"):
        voxel_features(tube, tube[:-1])


def test_a_second_stage_reads_the_first_stages_context_slab_by_slab():
    """Two stages (auto-context): refine is the second head on the features plus the
    first head's context features, computed slab by slab as on the whole volume."""
    from napari_topo.models.voxel_head import CONTEXT_NAMES, context_features

    rng = np.random.default_rng(2)
    x = rng.random((30, 20, 22)).astype(np.float32)
    p = rng.random(x.shape).astype(np.float32)
    spacing = (1.6, 0.57, 0.57)
    torch.manual_seed(0)
    net = VoxelHeadNet(hidden=8, stages=2)
    assert net.stages == 2 and net.arch_kwargs["stages"] == 2

    def run(head, f):
        with torch.no_grad():
            return torch.sigmoid(head(torch.from_numpy(f.reshape(-1, f.shape[-1])))).numpy()

    first = run(net.head, voxel_features(x, p, spacing)).reshape(x.shape)
    both = voxel_features(x, p, spacing, context=first)
    assert both.shape[-1] == len(FEATURE_NAMES) + len(CONTEXT_NAMES)
    np.testing.assert_allclose(both[..., len(FEATURE_NAMES) :], context_features(first, spacing))
    want = run(net.context_head, both).reshape(x.shape)
    np.testing.assert_allclose(net.refine(x, p, spacing), want, atol=1e-5)
    parts = feature_blocks(x, p, spacing, slab=6, context=first)
    np.testing.assert_allclose(assemble(parts, x.shape), both, atol=1e-5)
    # the first stage alone is the model saved before stages existed (no "stages" key)
    one = net.one_stage()
    assert one.stages == 1 and "stages" not in one.arch_kwargs and one.head is net.head
    np.testing.assert_allclose(one.refine(x, p, spacing), first, atol=1e-5)
    with pytest.raises(ValueError, match="1 or 2 stages"):
        VoxelHeadNet(stages=3)
    with pytest.raises(ValueError, match="first stage's probability"):
        voxel_features(x, p, spacing, context=first[:-1])


def test_large_planes_are_computed_in_blocks_with_the_same_values():
    """Where even the thinnest slab of whole planes with its context exceeds max_voxels
    (an isotropic volume with 512 x 512 planes needed about 10 GB), the volume is computed
    in cubes, each with its context: the same features, first stage and context, and no
    computation holds more than max_voxels."""
    from napari_topo.models.voxel_head import CONTEXT_NAMES

    rng = np.random.default_rng(5)
    shape = (30, 40, 40)
    x = rng.random(shape).astype(np.float32)
    p = rng.random(shape).astype(np.float32)
    first = rng.random(shape).astype(np.float32)
    spacing = (1.0, 4.0, 4.0)  # context: 43 slices (all here), 12 rows and columns
    whole = voxel_features(x, p, spacing, context=first)
    seen = []
    parts = list(
        feature_blocks(
            x, p, spacing, max_voxels=35_000, context=first, cancel=lambda: seen.append(1)
        )
    )
    # cores of 10 voxels: 30 * (10 + 2 * 12) ** 2 <= 35000 voxels with their context
    assert {tuple(r.stop - r.start for r in region) for region, _ in parts} == {(10, 10, 10)}
    assert len(parts) == len(seen) == 3 * 4 * 4  # each block may cancel
    got = assemble(parts, shape)
    assert got.shape == shape + (len(FEATURE_NAMES) + len(CONTEXT_NAMES),)
    np.testing.assert_allclose(got, whole, atol=1e-5)
    # a fine-tune's training rows from cubes: each mask's voxels in raster order
    from napari_topo.training.head import gather_rows

    masks = (rng.random(shape) < 0.1, rng.random(shape) < 0.02)
    kept = np.zeros_like(whole)
    rows = gather_rows(parts, masks, keep=kept)
    for m, r in zip(masks, rows, strict=True):
        np.testing.assert_allclose(r, whole[m], atol=1e-5)
    np.testing.assert_allclose(kept, whole, atol=1e-5)
    # the memory of one block: no computation holds more than max_voxels
    calls = []
    import napari_topo.models.voxel_head as vh

    real = vh.voxel_features

    def spy(image, *args, **kwargs):
        calls.append(image.size)
        return real(image, *args, **kwargs)

    vh.voxel_features = spy
    try:
        list(feature_blocks(x, p, spacing, max_voxels=35_000))
    finally:
        vh.voxel_features = real
    assert len(calls) == 48 and max(calls) <= 35_000


def test_a_head_segments_in_cubes_what_it_segments_in_slabs(monkeypatch):
    """refine (what segment runs) with its features in cubes gives the probability it
    gives with whole planes, both stages, and its progress ends at every slice."""
    import functools

    import napari_topo.models.voxel_head as vh

    rng = np.random.default_rng(7)
    shape = (30, 40, 40)
    x = rng.random(shape).astype(np.float32)
    p = rng.random(shape).astype(np.float32)
    spacing = (1.0, 4.0, 4.0)
    torch.manual_seed(3)
    net = VoxelHeadNet(hidden=8, stages=2)
    whole = net.refine(x, p, spacing)
    real = vh.feature_blocks
    regions = []

    def cubes(*args, **kwargs):
        for region, f in functools.partial(real, max_voxels=35_000)(*args, **kwargs):
            regions.append(region)
            yield region, f

    monkeypatch.setattr(vh, "feature_blocks", cubes)
    seen = []
    got = net.refine(x, p, spacing, progress=lambda done, total: seen.append((done, total)))
    assert len(regions) == 2 * 48  # cubes of 10 voxels, both stages
    np.testing.assert_allclose(got, whole, atol=1e-5)
    done = [d for d, _ in seen]
    assert done == sorted(done) and seen[-1] == (60, 60)


class _Zeros:
    """A lazy volume of zeros: reads cost nothing (the shape of a light-sheet stack)."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def __getitem__(self, key):
        return np.broadcast_to(np.float32(0), tuple(k.stop - k.start for k in key))


@pytest.mark.parametrize("side", [512, 2048])
def test_blocks_of_large_isotropic_planes_compute_a_few_times_the_volume(monkeypatch, side):
    """Cubes, not slabs of plane blocks: an isotropic volume with 2048 x 2048 planes
    computed 30 times its voxels in thin slabs of plane blocks; in cubes with their
    context, under 3 times, whatever the planes (counted: the features are not
    computed)."""
    import napari_topo.models.voxel_head as vh

    sizes = []

    def count(image, probability, spacing=None, context=None, progress=None):
        sizes.append(image.size)
        n = len(FEATURE_NAMES)
        return np.broadcast_to(np.float32(0), image.shape + (n,))

    monkeypatch.setattr(vh, "voxel_features", count)
    shape = (300, side, side)
    covered = 0
    for region, f in feature_blocks(_Zeros(shape), _Zeros(shape), (1.0, 1.0, 1.0)):
        assert f.shape[:3] == tuple(r.stop - r.start for r in region)
        covered += f.shape[0] * f.shape[1] * f.shape[2]
    assert covered == math.prod(shape)
    assert max(sizes) <= 1 << 24
    assert sum(sizes) / math.prod(shape) < 3.0  # thin slabs of plane blocks: 3.4 at 512


def test_progress_moves_within_a_slab():
    """A CT crop is one slab: the head's progress bar stood still for ~30 s per stage.
    Now it moves after each group of filters (and each block of a plane), never back,
    and ends at every slice counted for each stage."""
    rng = np.random.default_rng(6)
    x = rng.random((12, 30, 32)).astype(np.float32)
    p = rng.random(x.shape).astype(np.float32)
    torch.manual_seed(2)
    net = VoxelHeadNet(hidden=8, stages=2)
    seen = []
    net.refine(x, p, (1.6, 0.57, 0.57), progress=lambda done, total: seen.append((done, total)))
    done = [d for d, _ in seen]
    assert len(list(feature_blocks(x, p, (1.6, 0.57, 0.57)))) == 1  # one slab a stage
    assert len(seen) >= 2 * 8 and done == sorted(done) and seen[-1] == (24, 24)
    assert any(0 < d < 12 for d in done) and any(12 < d < 24 for d in done)
    # with blocks of the plane, each block moves it too
    calls = []
    list(feature_blocks(x, p, (1.0, 4.0, 4.0), max_voxels=10_800, progress=calls.append))
    assert len(calls) > 8 * 2 and calls == sorted(calls) and calls[-1] <= 12


def test_kept_features_give_what_computing_them_again_gives():
    """Fine-tuning keeps its box's first-stage features for stage 2 and the final pass:
    each slab, and each stage's probability, equals the one computed from scratch."""
    rng = np.random.default_rng(4)
    x = rng.random((30, 20, 22)).astype(np.float32)
    p = rng.random(x.shape).astype(np.float32)
    spacing = (1.6, 0.57, 0.57)
    kept = assemble(feature_blocks(x, p, spacing, slab=6), x.shape)
    first = rng.random(x.shape).astype(np.float32)
    for context in (None, first):
        fresh = list(feature_blocks(x, p, spacing, slab=6, context=context))
        reused = list(feature_blocks(x, p, spacing, slab=6, context=context, features=kept))
        assert [r for r, _ in fresh] == [r for r, _ in reused]
        for (_, f), (_, g) in zip(fresh, reused, strict=True):
            np.testing.assert_array_equal(f, g)
    torch.manual_seed(1)
    net = VoxelHeadNet(hidden=8, stages=2)
    np.testing.assert_array_equal(
        net.refine(x, p, spacing), net.refine(x, p, spacing, features=kept)
    )
    with pytest.raises(ValueError, match="features must have shape"):
        list(feature_blocks(x, p, spacing, features=kept[:, :-1]))
    with pytest.raises(ValueError, match="first stage's probability must have"):
        list(feature_blocks(x, p, spacing, context=first[:-1], features=kept))


def test_closed_form_eigenvalues_match_numpy():
    rng = np.random.default_rng(1)
    elems = [rng.normal(size=(5, 7, 9)).astype(np.float32) for _ in range(6)]
    elems.append(None)
    a00, a01, a02, a11, a12, a22, _ = elems
    mats = np.stack(
        [
            np.stack([a00, a01, a02], -1),
            np.stack([a01, a11, a12], -1),
            np.stack([a02, a12, a22], -1),
        ],
        -2,
    ).astype(np.float64)
    want = np.linalg.eigvalsh(mats)[..., ::-1]  # largest first
    got = np.moveaxis(symmetric_eigenvalues(elems[:6]), 0, -1)
    np.testing.assert_allclose(got, want, atol=2e-4)
    flat = symmetric_eigenvalues([np.full(3, 2.0), *[np.zeros(3)] * 2, np.full(3, 2.0), 0, 2.0])
    np.testing.assert_allclose(flat, 2.0)  # a multiple of the identity


# ------------------------------------------------------------------------------ training


@pytest.fixture
def models(request):
    """The user models folder (``test_finetune.user_dir``: the untrained "tiny-base")."""
    return request.getfixturevalue("user_dir")


@pytest.fixture
def tubes():
    vol = volume(seed=3, shape=(40, 48, 48))
    lab = sparse(vol.mask, slice(0, 24))
    annotated = np.zeros(vol.mask.shape, bool)
    annotated[:24] = True
    return vol, lab, annotated


def test_stage_one_draws_the_labels_centerline_again():
    """Stage 1's batches weigh a thin vessel by its centerline, not only its voxels: a tube
    of radius 4 and one of radius 1, labelled in the training slices; the centerline
    comes from the training part's labels only, every centerline voxel is in the sample,
    the thin tube's share of the vessel draws is above its share of the vessel voxels,
    and stage 2 draws each sampled vessel voxel once with BACKGROUND_PER_VESSEL
    background voxels per vessel voxel."""
    from skimage.draw import disk

    from napari_topo.topology.skeleton import skeletonize
    from napari_topo.training.head import (
        BACKGROUND_PER_VESSEL,
        CENTERLINE_DRAWS,
        MAX_CENTERLINE_REPEATS,
        training_sample,
    )

    shape = (40, 40, 60)
    vessel = np.zeros(shape, bool)
    thick, thin = np.zeros(shape, bool), np.zeros(shape, bool)
    for z in range(shape[0]):
        thick[(z, *disk((12, 15), 4.5, shape=shape[1:]))] = True
        thin[(z, *disk((28, 45), 1.2, shape=shape[1:]))] = True
    vessel = thick | thin
    train = np.zeros(shape, bool)
    train[:30] = True  # slices 30-39 held out
    sample = training_sample(train, vessel, np.random.default_rng(0))

    rows = sample.voxels
    assert np.all(np.diff(rows) > 0)  # sorted and unique: the features' raster order
    labelled = (train & vessel).ravel()
    on_centre = skeletonize(train & vessel).ravel()[rows]
    assert sample.centerline == int(skeletonize(train & vessel).sum()) == int(on_centre.sum())
    assert train.ravel()[rows].all()  # nothing of the held-out slices
    assert int(labelled[rows].sum()) == sample.vessel == int(labelled.sum())
    assert sample.background == int((~labelled[rows]).sum())
    assert sample.centerline_draws == min(
        round(CENTERLINE_DRAWS * sample.vessel), MAX_CENTERLINE_REPEATS * sample.centerline
    )
    assert sample.centerline_draws > 0
    assert sample.background == BACKGROUND_PER_VESSEL * (sample.vessel + sample.centerline_draws)

    # stage 1: every row once, plus the extra draws, all on the centerline
    s1 = sample.stage1
    assert len(s1) == len(rows) + sample.centerline_draws
    assert np.array_equal(np.bincount(s1, minlength=len(rows)) > 0, np.ones(len(rows), bool))
    assert on_centre[s1[len(rows) :]].all()
    assert np.bincount(s1).max() <= 1 + MAX_CENTERLINE_REPEATS * 2  # no voxel drawn alone
    vessel_draws = s1[labelled[rows[s1]]]
    thin_share_of_draws = thin.ravel()[rows[vessel_draws]].mean()
    thin_share_of_voxels = (train & thin).sum() / (train & vessel).sum()
    assert thin_share_of_draws > 1.5 * thin_share_of_voxels

    # stage 2: each vessel voxel once, BACKGROUND_PER_VESSEL background voxels per vessel
    s2 = sample.stage2
    assert len(np.unique(s2)) == len(s2)
    assert int(labelled[rows[s2]].sum()) == sample.vessel
    assert int((~labelled[rows[s2]]).sum()) == sample.stage2_background
    assert sample.stage2_background == BACKGROUND_PER_VESSEL * sample.vessel
    assert sample.counts()["centerline"] == sample.centerline


def test_the_centerline_of_slices_painted_alone_and_the_caps(monkeypatch):
    """A user paints a few separate slices: their centerline is a point or two where a
    vessel crosses a slice and a curve along one lying in it (not the plate). The vessel
    cap holds and keeps the whole centerline, and no
    centerline voxel is drawn more than MAX_CENTERLINE_REPEATS extra times (a ball's
    skeleton is a voxel or two)."""
    from skimage.draw import disk

    import napari_topo.training.head as head_module
    from napari_topo.topology.skeleton import skeletonize
    from napari_topo.training.head import training_sample

    shape = (30, 40, 40)
    vessel = np.zeros(shape, bool)
    for z in range(shape[0]):
        vessel[(z, *disk((10, 10), 3.5, shape=shape[1:]))] = True  # crosses every slice
    vessel[15, 25:30, 5:35] = True  # a vessel lying in slice 15
    train = np.zeros(shape, bool)
    train[[5, 15, 25]] = True  # painted alone
    sample = training_sample(train, vessel, np.random.default_rng(0))
    centre = np.zeros(vessel.size, bool)
    centre[sample.voxels[sample.stage1[len(sample.voxels) :]]] = True  # drawn again
    centre = centre.reshape(shape)
    for z in (5, 25):
        assert 1 <= centre[z].sum() <= 3
    lying = centre[15, 20:35]
    assert lying.any(axis=0)[8:32].all() and lying.sum() <= 40  # a curve along it
    assert sample.centerline == int(skeletonize(train & vessel).sum()) <= 3 * 3 + 40

    ball = np.zeros(shape, bool)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    ball[(zz - 15) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 36] = True
    full = np.ones(shape, bool)
    sample = training_sample(full, ball, np.random.default_rng(0))
    assert sample.centerline_draws == head_module.MAX_CENTERLINE_REPEATS * sample.centerline
    assert np.bincount(sample.stage1).max() <= 1 + head_module.MAX_CENTERLINE_REPEATS * 2

    # over the cap: the whole centerline, and the other vessel voxels drawn at random
    monkeypatch.setattr(head_module, "MAX_VESSEL_VOXELS", 100)
    capped = training_sample(np.ones(shape, bool), vessel, np.random.default_rng(1))
    skeleton = skeletonize(vessel).ravel()
    assert capped.vessel == 100 and capped.centerline == int(skeleton.sum()) < 100
    assert int(skeleton[capped.voxels].sum()) == capped.centerline
    assert int(vessel.ravel()[capped.voxels].sum()) == 100


@pytest.mark.usefixtures("user_dir")
def test_head_learns_what_an_untrained_base_cannot_and_segment_uses_it(tubes):
    """A base that has seen no vessel (Dice near 0) plus a head trained on the upper slices
    segments the lower, never labelled, slices; the model saves, lists, reloads (hash
    checked) and segment runs the head on the whole volume."""
    vol, lab, annotated = tubes
    base = "tiny-base"  # untrained: it has seen no vessel
    events = []
    module, card = finetune(
        vol.image, lab, base, annotated=annotated, steps=500, progress=events.append, **HEAD
    )
    assert isinstance(module, VoxelHeadNet) and card.architecture == "unet3d-voxel-head"
    assert card.training["layers"] == "head"
    # two stages of 500 steps each (the second on the first's context)
    stage2 = card.training["data"]["voxel_head"]["stage2"]
    assert card.training["steps"] == 500 + stage2["steps"] == 1000
    # each stage's prior correction follows the background it drew (stage 1 drew more:
    # 4 per extra centerline draw too)
    drawn = card.training["data"]["voxel_head"]["training_voxels"]
    gap = float(module.head.offset) - float(module.context_head.offset)
    assert drawn["background"] > drawn["stage2_background"] > 0
    assert math.isclose(
        gap, math.log(drawn["background"] / drawn["stage2_background"]), abs_tol=1e-5
    )
    assert card.metrics["validation"]["score"] > card.metrics["validation_before"]["score"] + 0.2
    # the base network itself is untouched
    tiny, _ = load_model(base)
    for k, v in tiny.state_dict().items():
        assert torch.equal(module.base.state_dict()[k], v)
    # few progress reports: one per 25 steps plus validations, not one per step
    assert sum(e.phase == "train" for e in events) == 1000 // 25
    # the progress bar moves on through both stages, never back (nor to 0 between them)
    shown = [e.fraction for e in events if e.step]
    assert shown == sorted(shown) and shown[-1] == 1.0
    assert [e.fraction for e in events] == sorted(e.fraction for e in events)
    # each pass over the box says how far it is (a newcomer's 64 x 640 x 640 volume
    # prepared for 2-3 minutes without a word)
    passes = [e.message for e in events if e.message.endswith(" %")]
    for what in (
        "the base model segments the annotated region",
        "image features of the annotated region",
        "stage 2: the first head over the annotated region",
        "stage 2: what the first head says around each voxel",
        "the head segments the annotated region",
    ):
        said = [m for m in passes if m.startswith(what + ":")]
        assert said and said[-1] == f"{what}: 100 %", (what, said)
        assert len(said) >= 2 or what.startswith("stage 2: the first"), said  # kept: one step
    saved = save_finetuned(module, card)
    assert saved.name in [c.name for c in list_models()]
    lower = np.zeros(vol.mask.shape, bool)
    lower[28:] = True  # never labelled
    before = segment(vol.image, base, device="cpu")
    after = segment(vol.image, saved.name, device="cpu")
    assert after.compute["voxel head"].startswith("on the whole volume")
    assert (
        dice(after.mask[lower], vol.mask[lower]) > dice(before.mask[lower], vol.mask[lower]) + 0.3
    )
    assert dice(after.mask[lower], vol.mask[lower]) > 0.6
    # a tampered file is refused
    weights = saved.path.with_suffix(".safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError):
        load_model(saved.name)


@pytest.mark.usefixtures("user_dir")
def test_labels_outside_the_annotated_region_change_nothing(tubes):
    vol, lab, annotated = tubes
    base = "tiny-base"  # untrained: it has seen no vessel
    noisy = lab.copy()
    noisy[30:, :20] = 1  # painted outside the annotated slices
    heads = []
    for labels in (lab, noisy):
        module, _ = finetune(vol.image, labels, base, annotated=annotated, steps=60, **HEAD)
        heads.append(module.head.state_dict())
    for k in heads[0]:
        assert torch.equal(heads[0][k], heads[1][k]), k


def test_cancel_leaves_nothing(models, tubes):
    vol, lab, annotated = tubes
    base = "tiny-base"  # untrained: it has seen no vessel
    stop = threading.Event()

    def progress(p):
        if p.phase == "train":
            stop.set()

    with pytest.raises(Cancelled):
        finetune(
            vol.image,
            lab,
            base,
            annotated=annotated,
            steps=500,
            cancel=stop,
            progress=progress,
            **HEAD,
        )
    assert [c.name for c in list_models(models)] == ["tiny-base"]


def test_refused_where_it_does_not_apply(models, tubes):
    vol, lab, annotated = tubes
    topnet = save_tiny_base(models, "tiny-topnet", arch="topnet").name
    with pytest.raises(ValueError, match="reads a U-Net.s vessel probability"):
        finetune(vol.image, lab, topnet, annotated=annotated, steps=5, **HEAD)
    base = "tiny-base"  # untrained: it has seen no vessel
    module, card = finetune(vol.image, lab, base, annotated=annotated, steps=100, **HEAD)
    assert card.architecture == "unet3d-voxel-head"
    with pytest.raises(ValueError, match="carries a voxel head"):
        finetune(
            vol.image,
            lab,
            (module, card),
            annotated=annotated,
            steps=5,
            device="cpu",
            layers="all",
        )
    with pytest.raises(ValueError, match="out= cannot be used"):
        out = {"vessel": np.zeros((1,) + vol.image.shape, np.float32)}
        predict(vol.image, (module, card), device="cpu", zoom=1, out=out)


def test_a_second_round_is_judged_against_the_first_head(models, tubes):
    """A head model as the base: the new head is compared with it as it segments (its
    own head), so a round that does not beat it returns it, unchanged."""
    from napari_topo.training.finetune import unchanged_from_base

    vol, lab, annotated = tubes
    first, card1 = finetune(vol.image, lab, "tiny-base", annotated=annotated, steps=400, **HEAD)
    saved = save_finetuned(first, card1)
    second, card2 = finetune(vol.image, lab, saved.name, annotated=annotated, steps=1, **HEAD)
    before = card2.metrics["validation_before"]["Dice"]
    # the first head as segment runs it, not the bare network under it (Dice near 0)
    assert before > 0.5 and abs(before - card1.metrics["validation"]["Dice"]) < 0.15
    assert card2.training["kept_base"] or unchanged_from_base(card2)
    assert isinstance(second, VoxelHeadNet)
    for k, v in first.head.state_dict().items():
        assert torch.equal(second.head.state_dict()[k], v), k


@pytest.mark.parametrize("layers", ["head", "all"])
def test_the_base_models_own_mask_as_labels_is_refused_before_training(
    models, tmp_path, capsys, layers
):
    """A newcomer gave ``finetune`` the base model's own mask as the labels: the run spent
    its whole time budget and then saved nothing (no result can beat a base that draws
    the labels). It now stops as soon as the base model has segmented the held-out part:
    one line, exit 2, no training step, nothing written."""
    from napari_topo import cli

    vol = volume(seed=3, shape=(40, 48, 48))
    own = segment(vol.image, "tiny-base", device="cpu").mask
    assert 0.1 < own.mean() < 0.9  # a mask, neither empty nor everything
    image, labels = tmp_path / "image.npy", tmp_path / "own.npy"
    np.save(image, vol.image)
    np.save(labels, own.astype(np.uint8))
    argv = ["finetune", str(image), str(labels), "--base", "tiny-base", "--layers", layers]
    argv += ["--minutes", "5", "--device", "cpu", "--threads", "1", "--out", str(tmp_path / "m")]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    *said, last = err.strip().splitlines()  # the progress, then one line
    assert "they look like its own mask" in last and "Dice 1.000" in last
    assert all(line.startswith("fine-tuning: ") for line in said), said
    assert not any("image features of" in line or "step" in line for line in said), said
    assert not (tmp_path / "m").exists()
    events, kw = [], {**HEAD, "layers": layers}
    with pytest.raises(ValueError, match="look like its own mask"):
        finetune(vol.image, own, "tiny-base", minutes=5, progress=events.append, **kw)
    assert events and not any(e.phase == "train" for e in events)
    if layers == "head":  # stopped before the features pass
        assert not any("image features of" in e.message for e in events)
    # corrected where it is wrong, the same labels train
    fixed = own.copy()
    fixed[::4] = vol.mask[::4]
    module, card = finetune(vol.image, fixed, "tiny-base", steps=2, **kw)
    assert card.training["steps"] >= 2
    # slices the user says were painted, or an annotated mask, are never refused so: a
    # small correction that the held-out bands of one painted slice miss leaves the base
    # scoring 1 there (a reviewer's case)
    from napari_topo.training.finetune import _split_validation, annotated_region

    painted = annotated_region(own, painted=(0, [20]))
    _, held_out, _ = _split_validation(*painted, 0.2, labels=own)
    rows = [r for r in range(own.shape[1]) if not held_out[20, r].any()]
    patch = own.copy()
    patch[20, rows] = vol.mask[20, rows]  # corrected only where nothing is held out
    assert (patch != own).any() and not ((patch != own) & held_out).any()
    for where in ({"painted": (0, [20])}, {"annotated": np.ones(own.shape, bool)}):
        _, card = finetune(vol.image, patch, "tiny-base", steps=2, **where, **kw)
        assert card.training["steps"] >= 2, where


def test_a_held_out_part_without_vessel_is_no_reason_to_refuse():
    """Dice and clDice are 1 where neither the labels nor the base model hold a vessel: a
    held-out part with fewer than MIN_HELD_OUT_VESSEL_VOXELS vessel voxels refuses
    nothing, however well the base model scores there."""
    from napari_topo.training.finetune import (
        MIN_HELD_OUT_VESSEL_VOXELS,
        choose_threshold,
        refuse_labels_like_base,
    )

    valid = np.ones((4, 16, 16), bool)
    truth = np.zeros_like(valid)
    prob = np.zeros(valid.shape, np.float32)
    empty = choose_threshold(None, None, None, None, outputs=[(prob, truth, valid, None)])
    assert empty[1]["Dice"] == empty[1]["clDice"] == 1.0
    refuse_labels_like_base(empty, 0)  # nothing held out to learn from: no refusal
    truth[:, 6:10, 6:10] = True  # 64 vessel voxels, drawn exactly by the base model
    assert truth.sum() >= MIN_HELD_OUT_VESSEL_VOXELS
    prob[truth] = 0.9
    same = choose_threshold(None, None, None, None, outputs=[(prob, truth, valid, None)])
    with pytest.raises(ValueError, match="look like its own mask"):
        refuse_labels_like_base(same, int(truth.sum()))
    refuse_labels_like_base(same, MIN_HELD_OUT_VESSEL_VOXELS - 1)


def test_streaming_and_cluster_paths_refuse_a_head_model(models, tubes, tmp_path):
    from napari_topo.inference.chunked import segment_to_ome_zarr

    vol, lab, annotated = tubes
    module, card = finetune(vol.image, lab, "tiny-base", annotated=annotated, steps=100, **HEAD)
    saved = save_finetuned(module, card)
    with pytest.raises(ValueError, match="cannot stream chunk by chunk"):
        out = {k: str(tmp_path / k) for k in ("probability", "mask")}
        segment_to_ome_zarr(vol.image, None, out, saved.name)


def test_a_short_head_run_reports_its_training_loss(models, tubes):
    """A stage shorter than the 25 steps between loss reports still reports its last
    training loss (the dock's plot showed no training curve for a 20-step run)."""
    vol, lab, annotated = tubes
    events = []
    _, card = finetune(
        vol.image, lab, "tiny-base", annotated=annotated, steps=20, progress=events.append, **HEAD
    )
    trained = [e for e in events if e.phase == "train" and e.loss is not None]
    head = card.training["data"]["voxel_head"]
    trained_stages = 1 + ("stage2" in head)  # stage 2 reports as it trains, kept or not
    assert [e.step for e in trained] == [20 * (k + 1) for k in range(trained_stages)]
    assert all(math.isfinite(e.loss) and e.loss > 0 for e in trained)


def test_head_settings_of_the_network_are_refused(models, tubes):
    vol, lab, annotated = tubes
    with pytest.raises(ValueError, match="lr, |batch_size"):
        finetune(vol.image, lab, "tiny-base", annotated=annotated, steps=5, batch_size=4, **HEAD)


def test_keeping_the_features_changes_no_result(models, tubes, monkeypatch):
    """The same fine-tune with the box's features kept in memory (the default when they
    fit) and computed again each time (a box over FEATURE_CACHE_BYTES) trains the same
    heads and chooses the same threshold."""
    import napari_topo.training.head as head_module

    vol, lab, annotated = tubes
    runs = []
    for cap in (head_module.FEATURE_CACHE_BYTES, 0):
        monkeypatch.setattr(head_module, "FEATURE_CACHE_BYTES", cap)
        module, card = finetune(vol.image, lab, "tiny-base", annotated=annotated, steps=250, **HEAD)
        runs.append((module, card))
    (kept, card_kept), (again, card_again) = runs
    ran = [c.training["data"]["voxel_head"]["stage2"] for c in (card_kept, card_again)]
    assert ran[0] == {**ran[1], "features_s": ran[0]["features_s"]} and ran[0]["steps"] > 0
    assert kept.stages == again.stages
    for part in ("head", "context_head")[: kept.stages]:
        a, b = getattr(kept, part).state_dict(), getattr(again, part).state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), (part, k)
    assert card_kept.mask_threshold == card_again.mask_threshold
    assert card_kept.metrics["validation"] == card_again.metrics["validation"]
    kept_mb = [c.training["data"]["voxel_head"]["features_kept_mb"] for _, c in runs]
    assert kept_mb[0] > 0 and kept_mb[1] == 0


def test_the_kept_features_stay_within_an_eighth_of_the_memory(monkeypatch, tmp_path):
    import napari_topo.training.head as head_module

    memory = {"bytes": 8 << 30}
    monkeypatch.setattr(head_module, "machine_memory", lambda: memory["bytes"])
    assert head_module.feature_cache_limit() == 1 << 30
    memory["bytes"] = 256 << 30  # the constant holds
    assert head_module.feature_cache_limit() == head_module.FEATURE_CACHE_BYTES
    memory["bytes"] = None  # unknown: the constant
    assert head_module.feature_cache_limit() == head_module.FEATURE_CACHE_BYTES
    monkeypatch.undo()
    # this machine's memory is known, and a container's limit lowers it
    own = head_module.machine_memory(cgroup_files=())
    assert own is not None and own > 1 << 28
    limit = tmp_path / "memory.max"
    limit.write_text(f"{2 << 30}\n")
    assert head_module.machine_memory(cgroup_files=(str(limit),)) == min(own, 2 << 30)
    limit.write_text("max\n")
    assert head_module.machine_memory(cgroup_files=(str(limit),)) == own


def test_cli_refuses_streaming_a_head_model_before_making_the_folder(models, tubes, tmp_path):
    from napari_topo import cli

    vol, lab, annotated = tubes
    module, card = finetune(vol.image, lab, "tiny-base", annotated=annotated, steps=100, **HEAD)
    saved = save_finetuned(module, card)
    image = tmp_path / "image.npy"
    np.save(image, vol.image)
    out = tmp_path / "nested" / "out"
    argv = ["segment", str(image), "--model", saved.name, "--format", "ome-zarr"]
    assert cli.main([*argv, "--out", str(out)]) == 2
    assert not (tmp_path / "nested").exists()


def test_cli_says_what_a_head_fine_tune_made(models, tubes, tmp_path, capsys):
    """A newcomer could not tell from finetune's output what ``--layers head`` had made."""
    from napari_topo import cli

    vol, lab, annotated = tubes
    paths = {}
    for name, data in (("image", vol.image), ("labels", lab), ("annotated", annotated)):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], data.astype(np.uint8) if data.dtype == bool else data)
    argv = ["finetune", str(paths["image"]), str(paths["labels"]), "--base", "tiny-base"]
    argv += ["--annotated", str(paths["annotated"]), "--layers", "head", "--steps", "100"]
    argv += ["--device", "cpu", "--threads", "1", "--out", str(tmp_path / "m")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "followed by a voxel classifier" in out
    assert "note: image.npy states no voxel size" in out
    assert len(list((tmp_path / "m").glob("*.safetensors"))) == 1


def test_a_short_time_budget_trains_one_stage(models, tubes):
    """A budget that cannot hold the second stage's preparation and a minute of its
    training gives a one-stage head, trained on all of it (a reviewer found a 2-minute
    budget holding back so much for stage 2 that no head trained)."""
    vol, lab, annotated = tubes
    events = []
    module, card = finetune(
        vol.image,
        lab,
        "tiny-base",
        annotated=annotated,
        minutes=0.5,
        progress=events.append,
        **HEAD,
    )
    assert "stage 2: skipped (the time budget holds only one stage)" in card.training["stopped"]
    assert isinstance(module, VoxelHeadNet) and module.stages == 1
    assert "stages" not in card.arch_kwargs and card.training["steps"] >= 250
    # under a time budget the bar follows the time spent from the first pass on, and
    # never goes back (a report without a fraction showed 0 after the first pass)
    shown = [e.fraction for e in events]
    assert shown == sorted(shown) and shown[-1] == 1.0
    first = next(e for e in events if e.message.endswith("100 %"))
    assert first.fraction > 0


def test_the_cli_ends_a_terminals_training_bar_once(capsys):
    """On a terminal the training bar is rewritten in place (\r); the next line ends it,
    and the passes after it (stage 2, the final pass) print one line each, without a
    blank line between their tenths."""
    import io

    from napari_topo import cli
    from napari_topo.training.finetune import FinetuneProgress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    show = cli._finetune_printer(out)
    show(FinetuneProgress(phase="train", step=25, loss=0.5, fraction=0.3, message=""))
    show(FinetuneProgress(phase="prepare", step=25, fraction=0.4, message="stage 2: 10 %"))
    show(FinetuneProgress(phase="prepare", step=25, fraction=0.5, message="stage 2: 20 %"))
    show(FinetuneProgress(phase="validate", step=25, fraction=1.0, message="final: 10 %"))
    lines = out.getvalue().split("\n")
    assert lines[0].startswith("\rfine-tuning: [")  # the bar, ended once
    assert lines[1:] == [
        "fine-tuning: stage 2: 10 %",
        "fine-tuning: stage 2: 20 %",
        "fine-tuning: final: 10 %",
        "",
    ]


def test_a_time_budget_ending_between_validations_scores_the_last_weights(
    models, tubes, monkeypatch
):
    """A newcomer's loaded machine stopped a CT head by its time budget at step 216,
    before the first validation (every 250 steps): the trained head was never scored
    and the base model came back as the "fine-tuned" one. The last weights are scored
    when the budget stops training."""
    import napari_topo.training.head as head_module

    monkeypatch.setattr(head_module, "HEAD_VAL_EVERY", 10**9)  # no regular validation
    monkeypatch.setattr(head_module, "HEAD_EARLY_VALIDATIONS", ())  # nor an early one
    monkeypatch.setattr(head_module, "HEAD_STEPS", 10**9)  # nor one at the step limit
    vol, lab, annotated = tubes
    module, card = finetune(vol.image, lab, "tiny-base", annotated=annotated, minutes=0.25, **HEAD)
    assert "time budget" in card.training["stopped"]
    assert isinstance(module, VoxelHeadNet) and card.training["best_step"] > 0
    assert card.metrics["validation"]["score"] > card.metrics["validation_before"]["score"]


def test_the_head_is_validated_early_without_counting_towards_patience(models, tubes):
    """A newcomer's head on 3 painted slices was best at its first validation (step 250)
    and worse at every later one: each stage is also validated at steps 50-200, and those
    validations do not count towards ``patience`` (a stage stops early only at a regular
    validation)."""
    from napari_topo.training.head import HEAD_EARLY_VALIDATIONS, HEAD_VAL_EVERY

    vol, lab, annotated = tubes
    _, card = finetune(
        vol.image, lab, "tiny-base", annotated=annotated, steps=600, patience=1, **HEAD
    )
    history = card.training["validation_history"]
    for stage in (1, 2):
        steps = [h["step"] for h in history if h.get("stage") == stage]
        if stage == 2 and not steps:
            continue
        first = steps[0] - HEAD_EARLY_VALIDATIONS[0]  # stage 2 counts on from stage 1
        assert [s - first for s in steps[: len(HEAD_EARLY_VALIDATIONS)]] == list(
            HEAD_EARLY_VALIDATIONS
        ), (stage, steps)
        # patience 1: the first regular validation without progress stops it; none sooner
        assert (steps[-1] - first) % HEAD_VAL_EVERY == 0 or steps[-1] - first == 600, steps
        assert steps[-1] - first >= HEAD_VAL_EVERY, steps


def test_a_budget_spent_in_preparation_still_trains_a_head(models, tubes):
    """A newcomer's CT with 3 labelled slices spent 167 of its 180 s preparing; the 10
    steps then allowed scored Dice 0 and nothing was saved. A head's steps take
    milliseconds: HEAD_MIN_BUDGET_STEPS run anyway, and the run says the budget was
    short."""
    from napari_topo.training.head import HEAD_MIN_BUDGET_STEPS

    vol, lab, annotated = tubes
    events = []
    spent = {"annotated": annotated, "minutes": 0.001, "progress": events.append}
    module, card = finetune(vol.image, lab, "tiny-base", **spent, **HEAD)
    # a notice, not a training point (the CLI's terminal bar formats a "train" event's loss)
    said = [e.message for e in events if "anyway" in e.message and e.phase == "prepare"]
    assert said == [
        f"the time budget is spent at step 0: training the minimum {HEAD_MIN_BUDGET_STEPS} "
        "steps anyway"
    ]
    assert card.training["steps"] == HEAD_MIN_BUDGET_STEPS
    assert "stage 2: skipped (the time budget holds only one stage)" in card.training["stopped"]
    assert isinstance(module, VoxelHeadNet)
    assert card.metrics["validation"]["score"] > card.metrics["validation_before"]["score"]
    note = card.training["note"]
    assert note.startswith("no training step fit in 0.001 min (the base model's pass")
    assert f"the minimum {HEAD_MIN_BUDGET_STEPS} steps ran anyway, so the run took" in note
    # a step budget below the minimum: that many steps, and the note says so
    _, card = finetune(
        vol.image, lab, "tiny-base", annotated=annotated, minutes=0.001, steps=40, **HEAD
    )
    assert card.training["steps"] == 40
    assert "the minimum 40 steps ran anyway" in card.training["note"]


def test_a_step_budget_with_a_skipped_second_stage_is_not_blamed_on_time(models, tubes):
    """A reviewer's run: 100 steps asked for, a budget too short for stage 2; the note
    said "only 100 training steps fit in 0.25 min ... give it more time"."""
    vol, lab, annotated = tubes
    _, card = finetune(
        vol.image, lab, "tiny-base", annotated=annotated, minutes=0.25, steps=100, **HEAD
    )
    assert "step budget (100 steps)" in card.training["stopped"]
    assert "stage 2: skipped (the time budget" in card.training["stopped"]
    assert "fit in" not in (card.training.get("note") or "")


def test_a_cards_steps_and_window_say_what_the_model_holds(models, tubes):
    """A newcomer's card read "3500 steps" for a one-stage model whose second stage (500
    steps) was not kept, and "CT, -100..300 -> [0, 1]" without the window's unit."""
    from dataclasses import replace

    from napari_topo.cli import _finetune_result_lines
    from napari_topo.inference.pipeline import fine_tuned_reading
    from napari_topo.models.registry import describe_card

    vol, lab, annotated = tubes
    _, card = finetune(vol.image, lab, "tiny-base", annotated=annotated, steps=60, **HEAD)
    t = card.training
    two = t["data"]["voxel_head"]["stage2"]
    assert t["steps"] == 60 + two["steps"]
    n, second = t["steps"], two["steps"]
    for kept, want in (
        (True, f"{n} steps (60 + {second}, in two stages)"),
        (False, f"60 steps (and a second stage of {second}, not kept)"),
    ):
        stage2 = {**two, "kept": kept}
        head = {**t["data"]["voxel_head"], "stage2": stage2}
        card = replace(card, training={**t, "data": {**t["data"], "voxel_head": head}})
        for lines in (describe_card(card), _finetune_result_lines(card)):
            text = " ".join(lines)
            assert want in text, text
            assert kept or f"{n} steps" not in text, text
    # the window of a CT head names its unit; microscopy intensities have none
    policy = t["input_policy"]
    ct = {**policy, "intensity": {**policy["intensity"], "modality": "ct", "lo": -100, "hi": 300}}
    ct_card = replace(card, training={**t, "input_policy": ct})
    assert "CT, -100..300 HU -> [0, 1]" in fine_tuned_reading(ct_card)["summary"]
    assert " HU" not in fine_tuned_reading(card)["summary"]
    assert any("-100..300 HU -> [0, 1]" in ln for ln in describe_card(ct_card))


def test_a_head_model_reads_any_volume_as_it_was_fine_tuned(models, tubes):
    """A head's features are the normalised intensities: a newcomer's head, fine-tuned on
    a crop read one way and run on a crop read another, scored Dice 0. predict pins the
    fine-tune's reading unless the caller chose one."""
    from napari_topo.inference.intensity import plan_input

    vol, lab, annotated = tubes
    module, card = finetune(vol.image, lab, "tiny-base", annotated=annotated, steps=100, **HEAD)
    trained = plan_input(vol.image, card.normalization).normalizer
    other = vol.image.copy()
    other[:4] = other.max() * 3  # a bright slab: its own percentiles differ
    seen, said = [], []
    predict(other, (module, card), device="cpu", on_policy=seen.append, on_message=said.append)
    probe = np.linspace(float(vol.image.min()), float(vol.image.max()), 50, dtype=np.float32)
    np.testing.assert_allclose(seen[0].normalizer(probe), trained(probe), atol=1e-5)
    assert any("read as when it was fine-tuned" in m for m in said)
    from napari_topo.inference.pipeline import Notice

    # information, not a warning: the Segment dock shows it so
    assert all(isinstance(m, Notice) for m in said if "read as when it was fine-tuned" in m)
    from napari_topo.models.registry import describe_card

    # its card says so (a newcomer read "measuring percentiles ... on that image" there)
    assert "reads every image's intensities the same way" in card.description
    lines = describe_card(card)  # what `napari-topo models` prints
    assert any(ln.startswith("input: read as when fine-tuned, ") for ln in lines)
    assert any("a voxel classifier in " in ln for ln in lines)
    # its own reading differs: the pin is what made them equal
    own = plan_input(other, card.normalization).normalizer
    assert not np.allclose(own(probe), trained(probe), atol=1e-3)
    # a caller's choice wins
    seen.clear()
    predict(other, (module, card), device="cpu", on_policy=seen.append, window=(0, 1))
    ends = seen[0].normalizer(np.array([0.0, 1.0], np.float32))
    np.testing.assert_allclose(ends, [0.0, 1.0], atol=1e-6)


def test_cli_refuses_a_topnet_base_for_a_head_before_reading_anything(models, tmp_path, capsys):
    """A newcomer's TopNet base with --layers head was refused only after the volumes
    were read: now before (the image here does not even exist)."""
    from napari_topo import cli

    save_tiny_base(models, "tiny-topnet", arch="topnet")
    argv = ["finetune", str(tmp_path / "none.nii.gz"), str(tmp_path / "nolabels.nii.gz")]
    assert cli.main([*argv, "--base", "tiny-topnet", "--layers", "head"]) == 2
    err = capsys.readouterr().err
    assert "reads a U-Net's vessel probability" in err and "none.nii.gz" not in err
