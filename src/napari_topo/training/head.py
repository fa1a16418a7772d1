"""``finetune(..., layers="head")``: train a voxel classifier on a frozen network's output.

The network's weights stay the base model's; a :class:`~napari_topo.models.voxel_head.VoxelHead`
learns, from the user's labels, which voxels are vessel given the base model's probability
and classic image features computed on the whole volume
(:mod:`napari_topo.models.voxel_head`). The result is a
:class:`~napari_topo.models.voxel_head.VoxelHeadNet` (architecture ``"unet3d-voxel-head"``)
that ``segment`` runs as the base network followed by the head.

How (called by :func:`~napari_topo.training.finetune.finetune` after its checks):

1. The base model segments the annotated region's bounding box, grown by the features'
   context (:func:`~napari_topo.models.voxel_head.halo_per_axis`), as ``segment`` does it
   (every zoom of the input policy, the intensities scaled as the whole image's).
2. The features are computed there block by block
   (:func:`~napari_topo.models.voxel_head.feature_blocks`; kept for steps 4 and 5 when
   they fit in :func:`feature_cache_limit`). Training voxels (:func:`training_sample`):
   every labelled vessel voxel of the training part (at most :data:`MAX_VESSEL_VOXELS`:
   the labels' whole centerline and others drawn at random), and
   :data:`BACKGROUND_PER_VESSEL` background voxels of it per vessel voxel and per extra
   centerline draw; validation: every voxel of the held-out part.
3. Adam (learning rate :data:`HEAD_LR`, batches of :data:`HEAD_BATCH` voxels, binary cross
   entropy; the batches draw the centerline's voxels again, :data:`CENTERLINE_DRAWS` extra
   draws per vessel voxel spread over them) for at most :data:`HEAD_STEPS` steps, the time
   or step budget, or until ``patience`` validations (every :data:`HEAD_VAL_EVERY` steps:
   Dice and clDice at 0.5 on the held-out part; also at :data:`HEAD_EARLY_VALIDATIONS`,
   which do not count towards ``patience``) bring no improvement; the best validation's
   weights are kept.
4. Stage 2 (auto-context; Tu and Bai, IEEE TPAMI 32(10), 2010): the first head's
   probability is computed over the box, and a second head of the same shape trains in the
   same way on the same voxels (without the centerline's extra draws, and only
   :data:`BACKGROUND_PER_VESSEL` background voxels per vessel voxel), its inputs the
   features plus what the first head said around each voxel
   (:func:`~napari_topo.models.voxel_head.context_features`: that probability smoothed at
   three scales and its Hessian's eigenvalues at two). It is kept only when its held-out
   score beats the first head's; otherwise (or when the time budget leaves no room for it)
   the model has one stage. The step budget applies to each stage.
5. The mask threshold is chosen on the held-out part (:func:`choose_threshold`) and the
   result is compared with the base model there, each at its best threshold: when the head
   does not score higher, the base model is returned unchanged (``training["kept_base"]``).

Measured on the development CT (3D-IRCADb-01 patient 01; ``docs/finetune.md``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Training steps at most (the probe's 3000 converged; ``benchmarks/results/feature_head``).
HEAD_STEPS = 3000
#: Voxels per step.
HEAD_BATCH = 4096
#: Adam's learning rate (constant).
HEAD_LR = 3e-3
#: Steps between validations on the held-out part.
HEAD_VAL_EVERY = 250
#: Validations before the first of every :data:`HEAD_VAL_EVERY` steps (each stage), not
#: counted in ``patience``: with a slice or two painted, a head can be best after a few
#: hundred draws of its small sample and worse at every later validation (a newcomer's
#: 3 slices: best at the first, step 250).
HEAD_EARLY_VALIDATIONS = (50, 100, 150, 200)
#: Steps the first stage trains under a time budget even when the budget is spent (its
#: early validations and its first regular one; fewer with a smaller step budget): a
#: head's step takes milliseconds (1.3 ms on the development CT, 2 CPU cores), so they
#: cost seconds past the budget, plus the final pass over the box. Stage 2, which only
#: runs when the budget was foreseen to hold it, stops at its budget after 10 steps. A newcomer's
#: CT with 3 labelled slices spent 167 of its 180 s preparing; the 10 steps then allowed
#: scored Dice 0 and nothing was saved, where 50 steps of the same head score 0.43
#: against the base model's 0.20 (the same run with 6 minutes).
HEAD_MIN_BUDGET_STEPS = 250
#: Background voxels drawn per labelled vessel voxel of the training part.
BACKGROUND_PER_VESSEL = 4
#: Labelled vessel voxels used at most (drawn at random beyond).
MAX_VESSEL_VOXELS = 200_000
#: Stage 1's batches draw the labels' centerline voxels again, this many times as many
#: draws as the sample has vessel voxels (:func:`training_sample`): clDice's
#: topology sensitivity (Shit et al., CVPR 2021) counts the centerline, where a thin
#: vessel is nearly all centerline and a thick one little of it. On the development CT
#: (upper half labelled, lower half scored, 3 seeds; benchmarks/results/voxel_head_cache/
#: probe/skeleton.py) 1.0 in stage 1 raised the lower half's mean Dice / clDice from
#: 0.702 / 0.651 to 0.710 / 0.662; in both stages it gained nothing.
CENTERLINE_DRAWS = 1.0
#: At most this many extra draws per centerline voxel on average (the draws are random):
#: compact labels (a painted ball's skeleton is a voxel or two) would otherwise put most
#: vessel draws on a few voxels. The development CT's labels drew each about 24 times
#: (62956 vessel voxels, 2635 on the centerline).
MAX_CENTERLINE_REPEATS = 30
#: Hidden units per layer of the head.
HEAD_HIDDEN = 64
#: Smallest kept mask pieces (voxels, 26-connected) chosen from on the held-out part,
#: beside the base model's own: on the development CT the head's small false pieces cost
#: clDice (probe, threshold 0.5: clDice 0.43 with none removed, 0.57 without pieces under
#: 1000 voxels; benchmarks/results/feature_head/).
HEAD_MIN_SIZES = (100, 1000)
#: Seconds of training (both stages) a time budget must leave, beyond the second stage's
#: preparation and the end, for two stages (each stage's 3000 steps took 10-12 s on the
#: development CT on 2 CPU cores).
MIN_TRAINING_S = 30.0
#: The box's first-stage features are kept in memory for the second stage and the final
#: pass (instead of computed four more times) when they take at most this many bytes
#: and an eighth of the machine's memory (float32; on the development CT's box 1.3 GB).
#: A larger box computes them again (:func:`feature_cache_limit`).
FEATURE_CACHE_BYTES = 3 << 30
#: With the features kept, the share of the first features pass that stage 2's context
#: features take (15 Gaussian-derivative filters and 2 eigenvalue passes, against 36
#: and 3), and of one Gaussian smoothing of the box. The passes of the head itself over
#: the box are timed (its pass over the held-out voxels, scaled): as multiples of the
#: features pass (0.5 for one stage's end) they kept about 50 s for an end that took
#: about 10 s on a newcomer's CT box of 101 whole planes, so a 6-minute budget skipped
#: stage 2 with 3 minutes unused.
CONTEXT_SHARE = 0.5
SMOOTH_SHARE = 1.0 / 30.0
#: Scorings of the held-out view at the end (the thresholds and the smallest pieces).
END_SCORINGS = 12
#: Sigma (finest voxel sizes) of the smoothing of the head's probability
#: (:class:`~napari_topo.models.voxel_head.VoxelHeadNet`'s ``smooth``).
HEAD_SMOOTH = 1.0


def _grown_box(mask: np.ndarray, grow: tuple[int, int, int]) -> tuple[slice, slice, slice]:
    box = []
    for ax in range(3):
        others = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(mask.any(axis=others))
        box.append(
            slice(max(0, int(idx[0]) - grow[ax]), min(mask.shape[ax], int(idx[-1]) + 1 + grow[ax]))
        )
    return tuple(box)


@dataclass(frozen=True)
class TrainingSample:
    """The voxels a head trains on (:func:`training_sample`).

    ``voxels``: flat indices into the box, sorted: the rows of the training features.
    ``stage1`` and ``stage2``: the rows each stage draws its batches from, uniformly
    (stage 1's centerline rows repeated). The counts are those of the card's
    ``training_voxels``.
    """

    voxels: np.ndarray
    stage1: np.ndarray
    stage2: np.ndarray
    vessel: int
    centerline: int
    centerline_draws: int
    background: int
    stage2_background: int

    def counts(self) -> dict[str, int]:
        return {
            k: int(getattr(self, k))
            for k in (
                "vessel",
                "centerline",
                "centerline_draws",
                "background",
                "stage2_background",
            )
        }


def gather_rows(
    parts: Iterable[tuple[tuple[slice, slice, slice], np.ndarray]],
    masks: Sequence[np.ndarray],
    keep: np.ndarray | None = None,
) -> list[np.ndarray]:
    """The features of each mask's voxels, one row per voxel in raster order.

    ``parts``: :func:`~napari_topo.models.voxel_head.feature_blocks`' ``(region,
    features)`` over the masks' grid (in whatever order its blocks come); ``masks``: bool
    arrays of that grid; ``keep``: an array of every voxel's features, filled on the way
    (None: nothing kept). Returns one ``(voxels of the mask, F)`` array per mask (the
    features' dtype), each written in place block by block (memory: the rows, plus 8
    bytes a row while gathering).
    """
    if not masks:
        return []
    at = [np.flatnonzero(m.ravel()) for m in masks]  # the rows' voxels, raster order
    written = [0] * len(masks)
    out: list[np.ndarray | None] = [None] * len(masks)
    shape = masks[0].shape
    plane = int(np.prod(shape[1:]))
    for region, f in parts:
        if keep is not None:
            keep[region] = f
        planes = all(
            r.start == 0 and r.stop == n for r, n in zip(region[1:], shape[1:], strict=True)
        )
        for k, m in enumerate(masks):
            if out[k] is None:
                out[k] = np.empty((len(at[k]), f.shape[-1]), f.dtype)
            inside = m[region]
            if planes:  # a slab of whole planes: its rows follow one another
                i0, i1 = np.searchsorted(at[k], (region[0].start * plane, region[0].stop * plane))
                out[k][i0:i1] = f[inside]
                written[k] += int(i1 - i0)
                continue
            flat = np.ravel_multi_index(
                tuple(i + r.start for i, r in zip(np.nonzero(inside), region, strict=True)),
                shape,
            )
            out[k][np.searchsorted(at[k], flat)] = f[inside]
            written[k] += len(flat)
    if written != [len(w) for w in at]:  # the blocks must tile the grid
        raise ValueError(
            f"the blocks covered {written} of the masks' {[len(w) for w in at]} voxels"
        )
    return [
        np.empty((len(w), 0), np.float32) if o is None else o for o, w in zip(out, at, strict=True)
    ]


def _box_rows(crop, prob, sp, policy, stop, masks, on, *, keep=None, context=None, features=None):
    """The features of each of ``masks``' voxels over the box (torch tensors, rows in
    raster order: :func:`gather_rows` of :func:`~napari_topo.models.voxel_head.
    feature_blocks`), the pass reported to ``on(slices done, slices)`` up to its end."""
    import torch

    from ..models.voxel_head import feature_blocks

    n = prob.shape[0]
    blocks = feature_blocks(
        crop,
        prob,
        sp,
        normalize=policy.normalizer,
        cancel=stop,
        context=context,
        features=features,
        progress=lambda done: on(done, n),
    )
    rows = gather_rows(blocks, masks, keep=keep)
    on(n, n)
    return [torch.from_numpy(a) for a in rows]


def training_sample(
    train: np.ndarray, vessel: np.ndarray, rng: np.random.Generator
) -> TrainingSample:
    """The voxels a head trains on, and how often each stage draws each.

    * Every labelled vessel voxel of ``train`` (at most :data:`MAX_VESSEL_VOXELS`: the
      centerline's, and the others drawn at random), among them the labels' centerline
      (:func:`~napari_topo.topology.skeleton.skeletonize` of the labels in ``train``, the
      skeleton clDice measures with; in a slice painted alone, a point or two where a
      vessel crosses it and a curve along one lying in it).
    * Stage 1 draws the centerline again, :data:`CENTERLINE_DRAWS` times as many draws as
      there are vessel voxels (but at most :data:`MAX_CENTERLINE_REPEATS` per centerline
      voxel on average), spread at random over its voxels, and :data:`BACKGROUND_PER_VESSEL`
      background voxels of ``train`` per vessel voxel and per extra draw (all there are,
      if fewer).
    * Stage 2 draws each vessel voxel once and :data:`BACKGROUND_PER_VESSEL` background
      voxels per vessel voxel (a part of stage 1's).

    Parameters
    ----------
    train : ndarray of bool (z, y, x)
        The annotated voxels that train (the held-out part excluded).
    vessel : ndarray of bool, ``train``'s shape
        The labels (True: vessel); only their voxels in ``train`` are read.
    rng : numpy Generator

    Returns
    -------
    TrainingSample
    """
    from ..topology.skeleton import skeletonize

    labelled = train & vessel
    pos = np.flatnonzero(labelled.ravel())
    centre = np.flatnonzero(skeletonize(labelled).ravel()) if len(pos) else pos
    if len(pos) > MAX_VESSEL_VOXELS:  # the centerline, and the rest drawn at random
        centre = np.sort(rng.choice(centre, min(len(centre), MAX_VESSEL_VOXELS), False))
        rest = np.setdiff1d(pos, centre, assume_unique=True)
        pos = np.union1d(centre, rng.choice(rest, MAX_VESSEL_VOXELS - len(centre), False))
    extra = min(int(round(CENTERLINE_DRAWS * len(pos))), MAX_CENTERLINE_REPEATS * len(centre))
    neg = np.flatnonzero((train & ~vessel).ravel())
    # in random order: stage 2's are the first of them
    neg = rng.choice(neg, min(len(neg), BACKGROUND_PER_VESSEL * max(len(pos) + extra, 1)), False)
    neg2 = neg[: BACKGROUND_PER_VESSEL * max(len(pos), 1)]
    voxels = np.union1d(pos, neg)
    centre_rows = np.searchsorted(voxels, centre)
    stage1 = np.concatenate([np.arange(len(voxels)), rng.choice(centre_rows, extra)])
    stage2 = np.searchsorted(voxels, np.union1d(pos, neg2))
    return TrainingSample(
        voxels=voxels,
        stage1=stage1,
        stage2=stage2,
        vessel=len(pos),
        centerline=len(centre),
        centerline_draws=extra,
        background=len(neg),
        stage2_background=len(neg2),
    )


def finetune_head(
    *,
    image: Any,
    lab: np.ndarray,
    region: np.ndarray,
    train_mask: np.ndarray,
    val_mask: np.ndarray,
    base: Any,
    base_card: Any,
    policy: Any,
    spacing: Any,
    view_inputs: dict,
    dev: Any,
    steps: int | None,
    minutes: float | None,
    patience: int,
    seed: int,
    threads: int | None,
    cancel: Any,
    report,
    t0: float,
    refuse_like_base: bool = False,
):
    """The head's training; returns ``(module, parts)`` where ``parts`` holds what the card
    needs (see :func:`~napari_topo.training.finetune.finetune`). Arguments as prepared by
    ``finetune`` (the input policy planned on the whole image, the split made);
    ``refuse_like_base``: refuse labels the base model already draws on the held-out part
    (:func:`~napari_topo.training.finetune.refuse_labels_like_base`; the annotated region
    was guessed from the labels)."""
    import torch

    from ..models.voxel_head import VoxelHeadNet
    from .finetune import default_threads

    sp = None if spacing is None else tuple(float(s) for s in np.broadcast_to(spacing, (3,)))
    # a second round: a new head on the same frozen network, judged against the old
    # model as it segments (network and head)
    net_base = copy.deepcopy(base.base if isinstance(base, VoxelHeadNet) else base)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    old_threads = torch.get_num_threads()
    if dev.type == "cpu":  # the base's pass and the features too (torch's eigenvalues)
        torch.set_num_threads(int(threads or default_threads()))
    try:
        return _train(**locals())
    finally:
        torch.set_num_threads(old_threads)


def _train(
    *,
    image,
    lab,
    region,
    train_mask,
    val_mask,
    base,
    base_card,
    policy,
    spacing,
    view_inputs,
    dev,
    steps,
    minutes,
    patience,
    seed,
    threads,
    cancel,
    report,
    t0,
    sp,
    net_base,
    rng,
    refuse_like_base=False,
    **_unused,
):
    """The body of :func:`finetune_head` (threads already set)."""
    import torch

    from ..inference.pipeline import predict
    from ..inference.sliding import Cancelled
    from ..models.voxel_head import (
        CONTEXT_NAMES,
        FEATURE_NAMES,
        VoxelHeadNet,
        halo_per_axis,
    )
    from .finetune import (
        Adam,
        _apart,
        _is_set,
        _scores,
        choose_threshold,
        default_threads,
        refuse_labels_like_base,
    )

    def stop() -> None:
        if _is_set(cancel):
            raise Cancelled("fine-tuning cancelled; nothing was saved")

    budget_s = None if minutes is None else float(minutes) * 60.0
    shown_fraction = [0.0]  # what the progress bar last showed: it never goes back

    def used() -> float:
        """The share of the time budget spent (0 without one), never less than shown."""
        if budget_s is not None:
            spent = min(1.0, (time.perf_counter() - t0) / budget_s)
            shown_fraction[0] = max(shown_fraction[0], spent)
        return shown_fraction[0]

    finetune_report = report

    def report(**kw) -> None:
        # a report without a fraction showed 0: the bar went back after the first pass
        kw.setdefault("fraction", used())
        finetune_report(**kw)

    def tenths(what: str, phase: str = "prepare", step: int = 0):
        """``progress(done, total)`` for a pass over the box: a report at each tenth done
        (a newcomer's 64 x 640 x 640 volume prepared for 2-3 minutes without a word)."""
        last = [-1]

        def on(done: float, total: float) -> None:
            tenth = min(10, int(10 * done / total)) if total else 10
            if tenth > last[0]:
                last[0] = tenth
                report(
                    phase=phase,
                    step=step,
                    max_steps=steps,
                    fraction=used(),
                    message=f"{what}: {10 * tenth} %",
                )

        return on

    # ---- 1. the base model on the annotated region and its context ---------------------
    # the second stage's inputs are exact only that far in (its context features read the
    # first stage's probability, itself exact only a features' halo in from the faces)
    grow = halo_per_axis(sp, stages=2)
    box = _grown_box(region, grow)
    report(
        phase="prepare",
        message="the base model segments the annotated region ("
        + "x".join(str(b.stop - b.start) for b in box)
        + " voxels with the features' context)",
        max_steps=steps,
    )
    crop = np.asarray(image[box])
    out = predict(
        crop,
        (net_base, base_card),
        spacing=spacing,
        zoom=policy.zoom,
        intensity_from=image,
        device=str(dev),
        cancel=cancel,
        progress=tenths("the base model segments the annotated region"),
        on_message=lambda _m: None,
        **view_inputs,
    )
    prob = np.asarray(out["vessel"], np.float32)
    stop()

    # the held-out part as segment makes it: the truth there, and (below) the base's
    # probability; a network base's is known now, so labels it already draws are refused
    # before the features are computed
    train_b, val_b = train_mask[box], val_mask[box]
    vessel_b = np.asarray(lab[box]) > 0
    vbox = _grown_box(val_b, (0, 0, 0))
    valid = val_b[vbox]
    truth = vessel_b[vbox] & valid
    early_choice = None
    if not isinstance(base, VoxelHeadNet):
        view = (prob[vbox], truth, valid, None)
        early_choice = choose_threshold(None, None, None, None, outputs=[view])
        if refuse_like_base:
            refuse_labels_like_base(early_choice, int(truth.sum()))

    # ---- 2. features of the training sample and of the held-out part -------------------
    sample = training_sample(train_b, vessel_b, rng)
    take = np.zeros(prob.size, bool)
    take[sample.voxels] = True  # the features' rows: these voxels in raster order
    take = take.reshape(prob.shape)
    report(
        phase="prepare",
        message=f"image features of {sample.vessel} vessel ({sample.centerline} on the "
        f"labels' centerline) and {sample.background} background voxels to train on, "
        f"{int(val_b.sum())} held out",
        max_steps=steps,
    )
    t_feat = time.perf_counter()
    n_feat = len(FEATURE_NAMES)
    kept = (
        np.empty(prob.shape + (n_feat,), np.float32)
        if prob.size * n_feat * 4 <= feature_cache_limit()
        else None
    )
    keep = kept is not None
    kept_mb = 0 if kept is None else round(kept.nbytes / 2**20)
    on = tenths("image features of the annotated region")
    x_train, x_val = _box_rows(crop, prob, sp, policy, stop, (take, val_b), on, keep=kept)
    features_s = time.perf_counter() - t_feat
    y_train = torch.from_numpy(vessel_b.ravel()[sample.voxels].astype(np.float32))
    stop()

    def over_box(net, what: str, phase: str = "prepare", step: int = 0) -> np.ndarray:
        """``net`` (a head model) over the box as segment runs it, the pass reported."""
        on = tenths(what, phase, step)
        norm = policy.normalizer
        return net.refine(crop, prob, sp, normalize=norm, cancel=stop, features=kept, progress=on)

    # what the base model segments there: a second round's base is the earlier head (its
    # first-stage features are these)
    base_prob = (
        over_box(base, "the earlier head segments the annotated region")
        if isinstance(base, VoxelHeadNet)
        else prob
    )

    base_view = (base_prob[vbox], truth, valid, None)
    before_view = _scores(*base_view, threshold=base_card.mask_threshold)
    before_view["threshold"] = base_card.mask_threshold
    if early_choice is None:  # an earlier head: its own pass was needed first
        base_choice = choose_threshold(None, None, None, None, outputs=[base_view])
        if refuse_like_base:
            refuse_labels_like_base(base_choice, int(truth.sum()))
    else:  # the same view, scored above
        base_choice = early_choice
    where = np.flatnonzero(val_b[vbox].ravel())  # x_val's rows, in vbox order

    # ---- 3. training -----------------------------------------------------------------
    old_threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(int(threads or default_threads()))
    try:
        model = VoxelHeadNet.on(net_base, HEAD_HIDDEN, HEAD_SMOOTH, stages=2)
        n_background = int((train_b & ~vessel_b).sum())
        gen = torch.Generator().manual_seed(seed)

        def view_probability(head, x_val) -> np.ndarray:
            head.eval()
            p = np.zeros(valid.shape, np.float32)
            flat = p.reshape(-1)
            with torch.no_grad():
                for c in range(0, len(x_val), 1 << 20):
                    flat[where[c : c + (1 << 20)]] = (
                        torch.sigmoid(head(x_val[c : c + (1 << 20)].to(dev))).cpu().numpy()
                    )
            head.train()
            return p

        t_val = time.perf_counter()
        before = _scores(*base_view[:3], _bce(base_view[0], truth, valid))
        validation_s = time.perf_counter() - t_val
        before["step"] = 0
        history = [dict(before)]
        report(
            phase="validate",
            validation=dict(before),
            best=dict(before),
            loss=before["loss"],
            max_steps=steps,
            fraction=used(),
            message=f"base model: held-out Dice {before['Dice']:.3f}",
        )
        limit = min(int(steps), HEAD_STEPS) if steps is not None else HEAD_STEPS
        curve: list = []

        # the head's pass over the whole box, timed on the held-out voxels (untrained: the
        # same arithmetic)
        t_head = time.perf_counter()
        view_probability(model.head, x_val)
        head_box_s = (time.perf_counter() - t_head) * prob.size / max(1, len(x_val))

        def final_s(stages: int) -> float:
            """Seconds kept for the end: the model's passes over the box (without the
            features kept, a features pass each stage, the second's with its context:
            about 3 passes for two stages, measured; with them kept, the head's timed
            passes, stage 2's context features and the smoothing), the scorings of the
            threshold and smallest-piece choices, and a margin."""
            if not keep:
                return 2 * validation_s + (1.5 if stages == 1 else 3.0) * features_s + 5.0
            passes = stages * head_box_s + SMOOTH_SHARE * features_s
            if stages == 2:
                passes += CONTEXT_SHARE * features_s
            return END_SCORINGS * validation_s + passes + 5.0

        # stage 2's preparation: the first head over the box and the features again with
        # its context (about 2.7 passes, measured; with them kept, the first head's
        # timed pass and the context features), plus a
        # few steps
        prepare2_s = (
            3.0 * features_s if not keep else head_box_s + CONTEXT_SHARE * features_s
        ) + 10.0

        def fraction(step_count: int) -> float:
            frac = step_count / (2 * limit)
            if budget_s is not None:
                frac = max(frac, (time.perf_counter() - t0 + final_s(2)) / budget_s)
            shown_fraction[0] = max(shown_fraction[0], min(1.0, frac))
            return shown_fraction[0]

        # (the step at which stage 1 found its budget spent, the steps it then trained)
        overrun: list = [None, None]

        def fit(head, x_train, y_train, x_val, best: dict, step0: int, reserve, stage, draw):
            """Train ``head`` (stage 1 or 2) from its sample; keep its best validation's
            weights when they beat ``best``. Batches are drawn uniformly from ``draw``
            (rows of ``x_train``, some more than once). Steps are counted on from
            ``step0``; it stops when ``reserve()`` seconds are all the time budget has
            left. Returns ``(best, best_state, best_step, steps, stopped, s per step,
            its own best)``."""
            nonlocal validation_s
            drawn = torch.from_numpy(np.asarray(draw, np.int64))
            head.set_scaling(x_train[drawn])
            # the share of the training part's background voxels drawn (VoxelHead's
            # offset; the centerline's extra draws are not corrected for: they are meant
            # to raise the odds of vessel there)
            n_neg = int(len(drawn) - y_train[drawn].sum()) if len(drawn) else 0
            head.offset.fill_(math.log(max(n_neg, 1) / max(n_background, 1)))
            head.to(dev).train()
            opt = Adam(list(head.net.parameters()), lr=HEAD_LR)
            xt, yt, drawn = x_train.to(dev), y_train.to(dev), drawn.to(dev)
            best, best_state, best_step, since_best = dict(best), None, 0, 0
            own: dict | None = None
            step, stopped = 0, ""
            t_loop = time.perf_counter()
            where_ = "" if stage == 1 else "stage 2, "
            checked = [0]  # the step of the last validation
            told = [0]  # the step of the last training loss reported
            last = [math.nan]  # the last step's training loss

            def tell(step: int) -> None:
                """Report the training loss of ``step``."""
                told[0] = step
                shown, lv = step0 + step, last[0]
                report(
                    phase="train",
                    step=shown,
                    max_steps=steps,
                    fraction=fraction(shown),
                    loss=lv,
                    best=dict(best),
                    message=f"{where_}step {step}: loss {lv:.4f}",
                )

            validating = [0.0]  # seconds of validation in the loop (not in step_ms)

            def check(step: int, shown: int, counts: bool = True) -> bool:
                """Score the head on the held-out part and keep it when it is the best;
                True when ``patience`` validations brought no improvement (``counts``
                False: this one is not counted when it brings none)."""
                nonlocal best, best_state, best_step, since_best, own, validation_s
                checked[0] = step
                t_val = time.perf_counter()
                p = view_probability(head, x_val)
                res = _scores(p, truth, valid, _bce(p, truth, valid))
                validation_s = max(validation_s, time.perf_counter() - t_val)
                validating[0] += time.perf_counter() - t_val
                res["step"], res["stage"] = shown, stage
                history.append(res)
                if own is None or res["score"] > own["score"]:
                    own = dict(res)
                if res["score"] > best["score"] + 1e-4:
                    best, best_step, since_best = dict(res), shown, 0
                    best_state = {
                        k: v.detach().to("cpu", copy=True) for k, v in head.state_dict().items()
                    }
                elif counts:
                    since_best += 1
                report(
                    phase="validate",
                    step=shown,
                    max_steps=steps,
                    fraction=fraction(shown),
                    loss=res["loss"],
                    validation=dict(res),
                    best=dict(best),
                    message=f"{where_}step {step}: held-out Dice {res['Dice']:.3f}",
                )
                return since_best >= patience

            while True:
                if step >= limit:
                    stopped = (
                        f"step budget ({int(steps)} steps)"
                        if steps is not None and int(steps) <= HEAD_STEPS
                        else f"the head's {HEAD_STEPS} steps"
                    )
                    break
                if budget_s is not None and time.perf_counter() - t0 + reserve() >= budget_s:
                    floor = min(HEAD_MIN_BUDGET_STEPS, limit) if stage == 1 else 10
                    if stage == 1 and step < floor and overrun[0] is None:
                        overrun[:] = [step, floor]
                        report(  # "prepare", as the network's notice: no loss to plot
                            phase="prepare",
                            step=step0 + step,
                            max_steps=steps,
                            fraction=fraction(step0 + step),
                            best=dict(best),
                            message=f"the time budget is spent at step {step}: training "
                            f"the minimum {floor} steps anyway",
                        )
                    if step >= floor:
                        share = "its share of the " if stage == 1 and two else ""
                        stopped = f"{share}time budget ({minutes:g} min)"
                        if step > told[0]:
                            tell(step)
                        if step > checked[0]:
                            # the weights trained since the last validation are scored
                            # too (a newcomer's loaded machine stopped a CT head at step
                            # 216, before the first validation, and kept the base)
                            check(step, step0 + step)
                        break
                stop()
                b = drawn[
                    torch.randint(0, len(drawn), (min(HEAD_BATCH, len(drawn)),), generator=gen).to(
                        dev
                    )
                ]
                value = torch.nn.functional.binary_cross_entropy_with_logits(
                    head.sampled_logits(xt[b]), yt[b]
                )
                opt.zero_grad()
                value.backward()
                opt.step()
                step += 1
                shown = step0 + step
                lv = float(value.detach())
                curve.append([shown, lv])
                last[0] = lv
                # a report per ~5 ms step swamped the dock's queue: one per 25 steps, and
                # the last before a stage's end (a 20-step run plotted no training loss)
                if step % 25 == 0 or step == limit:
                    tell(step)
                early = step in HEAD_EARLY_VALIDATIONS
                if step % HEAD_VAL_EVERY == 0 or step == limit or early:
                    if check(step, shown, counts=not early or step == limit):
                        stopped = f"early stop ({patience} validations without improvement)"
                        break
            step_s = (time.perf_counter() - t_loop - validating[0]) / step if step else 0.0
            if best_state is not None:
                head.load_state_dict(best_state)
            return best, best_state, best_step, step, stopped, step_s, own

        # Two stages when the time budget holds the second's preparation, the longer end
        # and MIN_TRAINING_S of training; stage 1 then leaves stage 2 half the training time.
        # Otherwise one stage, which keeps for itself all but its own end (a 2-minute
        # budget trained no head at all once stage 2's share was always held back).
        two = True
        reserve1 = lambda: final_s(1)  # noqa: E731 - evaluated at each step
        if budget_s is not None:
            left = budget_s - (time.perf_counter() - t0)
            training_s = left - final_s(2) - prepare2_s
            two = training_s >= MIN_TRAINING_S
            if two:
                reserve1 = lambda: final_s(2) + prepare2_s + training_s / 2  # noqa: E731
        best, best_state, best_step, step, stopped, step_s, _ = fit(
            model.head, x_train, y_train, x_val, before, 0, reserve1, 1, sample.stage1
        )
        n_val = len(x_val)
        del x_train, x_val  # stage 2 has its own, wider ones
        stage2, best1 = None, dict(best)
        if best_state is not None and not two:
            stopped = f"stage 1: {stopped}; stage 2: skipped (the time budget holds only one stage)"
        elif best_state is not None:
            stage2 = _second_stage(
                crop=crop,
                prob=prob,
                sp=sp,
                policy=policy,
                stop=stop,
                take=take,
                val_b=val_b,
                y_train=y_train,
                draw=sample.stage2,
                model=model,
                fit=fit,
                best=best,
                step=step,
                final_s=final_s,
                prepare2_s=prepare2_s,
                report=report,
                steps=steps,
                budget_s=budget_s,
                t0=t0,
                fraction=shown_fraction,
                tenths=tenths,
                features=kept,
            )
            if stage2 is None:
                stopped = f"stage 1: {stopped}; stage 2: skipped (no time left)"
        if stage2 is None or stage2["best_state"] is None:
            model = model.one_stage()
        else:
            best, best_step = stage2["best"], stage2["best_step"]
        if stage2 is not None:
            step += stage2["steps"]
            stopped = f"stage 1: {stopped}; stage 2: {stage2['stopped']}"
        stop()
        kept_base = None
        min_size, sizes = base_card.min_size, []
        if best_state is None:
            result = copy.deepcopy(base)
            threshold, at_threshold, table = base_choice
            at_half = _scores(*base_view)
        else:
            shown_fraction[0] = 1.0  # training is over: the bar stays full
            report(
                phase="validate",
                step=step,
                max_steps=steps,
                fraction=1.0,
                best=dict(best),
                message="the head segments the annotated region as segment will, to choose "
                "the threshold",
            )
            # the whole box again, as segment runs it (smoothing included), so the
            # threshold and the smallest piece are chosen on what segment will cut
            p_box = over_box(model, "the head segments the annotated region", "validate", step)
            kept = None  # its memory back before the choices
            p = p_box[vbox]
            view = (p, truth, valid, None)
            # the best outright: smoothed, the head's probability has no calibrated 0.5
            # to prefer (on the development CT's held-out slices 0.4 scored 0.770, 0.5
            # 0.753: the network's 0.02 margin kept 0.5)
            threshold, at_threshold, table = choose_threshold(
                None, None, None, None, outputs=[view], margin=0.0
            )
            at_half = _scores(*view)
            min_size, at_threshold, sizes = _choose_min_size(
                p_box, vbox, truth, valid, threshold, at_threshold, base_card.mask_min_size
            )
            result = model
            # a tie keeps the base too: an equal head is no new model (a newcomer's second
            # round with the same labels and seed saved a copy of the first)
            if at_threshold["score"] <= base_choice[1]["score"]:
                ours, theirs = _apart(at_threshold["score"], base_choice[1]["score"])
                kept_base = (
                    f"the head (step {best_step}) scored {ours} on the held-out part, "
                    f"not above the base model's {theirs} (mean of Dice and clDice, each "
                    "at its best threshold): the base model is kept"
                )
                result, best_state, best_step = copy.deepcopy(base), None, 0
                threshold, at_threshold, table = base_choice
                at_half = _scores(*base_view)
                min_size, sizes = base_card.min_size, []
    finally:
        torch.set_num_threads(old_threads)
    for prm in result.parameters():
        prm.requires_grad_(True)
    parts = {
        "before": before,
        "before_view": before_view,
        "history": history,
        "curve": curve,
        "best_step": best_step,
        "improved": best_state is not None,
        "kept_base": kept_base,
        "stopped": stopped,
        "overrun_at": overrun[0],
        "overrun_floor": overrun[1],
        "steps": step,
        "step_s": step_s,
        "threshold": float(threshold),
        "at_threshold": {**at_threshold, "step": best_step},
        "at_half": {**at_half, "step": best_step},
        "table": table,
        "min_size": min_size,
        "min_size_choice": sizes,
        "view_box": vbox_in_volume(box, vbox),
        "head": {
            "features": list(FEATURE_NAMES),
            "training_voxels": sample.counts(),
            "held_out_voxels": int(n_val),
            "features_s": round(features_s, 1),
            # MiB of first-stage features kept for stage 2 and the end (0: computed again)
            "features_kept_mb": kept_mb,
            "box": [[b.start, b.stop] for b in box],
            "lr": HEAD_LR,
            "batch_voxels": HEAD_BATCH,
            "max_steps": HEAD_STEPS,
            "stages": getattr(result, "stages", 1) if best_state is not None else 0,
        },
    }
    if stage2 is not None:
        parts["head"]["stage2"] = {
            "context_features": list(CONTEXT_NAMES),
            "kept": stage2["best_state"] is not None,
            "steps": stage2["steps"],
            "features_s": stage2["features_s"],
            "held_out_at_0.5": {
                "stage1": {k: best1[k] for k in ("Dice", "clDice", "score")},
                "stage2": {k: (stage2["own"] or {}).get(k) for k in ("Dice", "clDice", "score")},
            },
        }
    if math.isfinite(step_s):
        parts["head"]["step_ms"] = round(1000 * step_s, 2)
    return result, parts


def feature_cache_limit() -> int:
    """Bytes of first-stage features a head fine-tune keeps in memory at most:
    :data:`FEATURE_CACHE_BYTES`, and no more than an eighth of the machine's memory
    (:func:`machine_memory`; the constant alone where it is unknown). Keeping them saves
    about 40 % of a two-stage fine-tune's time on the development CT and adds their size
    to its peak memory."""
    limit = int(FEATURE_CACHE_BYTES)
    total = machine_memory()
    return limit if not total else min(limit, total // 8)


#: Files that hold a Linux container's memory limit (cgroup v2, then v1).
CGROUP_MEMORY_FILES = (
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
)


def machine_memory(cgroup_files: tuple[str, ...] = CGROUP_MEMORY_FILES) -> int | None:
    """Bytes of memory this process may use, or None when unknown: the physical memory
    (psutil when installed, as with napari, which covers Windows; else ``os.sysconf``),
    lowered to a Linux container's limit where ``cgroup_files`` state one ("max" or an
    unreadable file: none)."""
    import os

    total = None
    try:
        import psutil

        total = int(psutil.virtual_memory().total)
    except Exception:  # noqa: BLE001 - absent or failing: the system's own answer
        try:
            total = int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            total = None
    for path in cgroup_files:
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) > 0:
            total = int(text) if not total else min(total, int(text))
        break
    return total if total and total > 0 else None


def _second_stage(
    *,
    crop,
    prob,
    sp,
    policy,
    stop,
    take,
    val_b,
    y_train,
    draw,
    model,
    fit,
    best,
    step,
    final_s,
    prepare2_s,
    report,
    steps,
    budget_s,
    t0,
    fraction,
    features,
    tenths,
) -> dict | None:
    """Stage 2 of :func:`finetune_head` (auto-context): the first head's probability
    over the box, the features again plus its :func:`~napari_topo.models.voxel_head.
    context_features` for the same voxels, and ``model.context_head`` trained on them
    (``fit``), judged against the first stage's best. ``features``: the box's first-stage
    features when kept (else None: computed again). None when the time budget leaves no
    room for it (the model then keeps one stage)."""

    if budget_s is not None and time.perf_counter() - t0 + final_s(2) + prepare2_s >= budget_s:
        return None
    report(
        phase="prepare",
        step=step,
        max_steps=steps,
        fraction=fraction[0],
        message="stage 2: the first head's probability over the annotated region and what "
        "it says around each voxel",
    )
    t = time.perf_counter()
    n_slices = prob.shape[0]
    on_first = tenths("stage 2: the first head over the annotated region", step=step)
    first = model.stage_probability(
        crop,
        prob,
        sp,
        stage=1,
        normalize=policy.normalizer,
        cancel=stop,
        features=features,
        progress=lambda done: on_first(done, n_slices),
    )
    # the rows of stage 1's sample, in its order
    on = tenths("stage 2: what the first head says around each voxel", step=step)
    masks = (take, val_b)
    x_train, x_val = _box_rows(
        crop, prob, sp, policy, stop, masks, on, context=first, features=features
    )
    del first
    spent = time.perf_counter() - t
    # the end passes over the box again what this preparation did (and the second head):
    # its measured time, not only the estimate, is kept back for it
    end_s = max(final_s(2), 1.5 * spent + 10.0)
    best2, state, best_step, n, stopped, _, own = fit(
        model.context_head, x_train, y_train, x_val, best, step, lambda: end_s, 2, draw
    )
    return {
        "own": own,
        "best": best2,
        "best_state": state,
        "best_step": best_step,
        "steps": n,
        "stopped": stopped,
        "features_s": round(spent, 1),
    }


def made_by_head(training: dict) -> str | None:
    """What a ``layers="head"`` fine-tune made, in words for the CLI and the Fine-tune
    dock (a newcomer could not tell), from its card's ``training``; None when the base
    model was kept or nothing else was made."""
    if training.get("layers") != "head" or training.get("kept_base"):
        return None
    if not training.get("best_step"):
        return None
    stages = ((training.get("data") or {}).get("voxel_head") or {}).get("stages")
    return (
        "the base network, unchanged, followed by a voxel classifier (a small perceptron "
        "on its probability and image features"
        + (", then a second reading the first's output around each voxel" if stages == 2 else "")
        + ") trained on your labels"
    )


def _choose_min_size(prob, vbox, truth, valid, threshold, at_threshold, default):
    """The smallest kept mask piece (:data:`HEAD_MIN_SIZES`, and ``default``) whose
    held-out score at ``threshold`` is best; ties go to the smaller. ``prob`` covers the
    annotated region's box, ``vbox`` (in it) the held-out part's: pieces are counted in
    the whole box (26-connected), so one crossing its faces is counted short.
    Returns ``(min_size, scores there, table)``."""
    from .. import _cc3d as cc3d
    from .finetune import _scores

    rows = [{"min_size": int(default), **at_threshold}]
    for size in HEAD_MIN_SIZES:
        if size <= default:
            continue
        kept = cc3d.dust(np.ascontiguousarray(prob > threshold), threshold=size, connectivity=26)
        cut = kept[vbox].astype(np.float32)
        rows.append({"min_size": size, **_scores(cut, truth, valid, None)})
    best = max(rows, key=lambda r: r["score"] - 1e-9 * r["min_size"])
    table = [{k: r[k] for k in ("min_size", "Dice", "clDice", "score")} for r in rows]
    scores = {k: v for k, v in best.items() if k != "min_size"}
    return best["min_size"], scores, table


def _bce(prob: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> float:
    """Mean binary cross entropy of ``prob`` against ``truth`` on the ``valid`` voxels."""
    p = np.clip(prob[valid], 1e-6, 1 - 1e-6)
    return float(-np.mean(np.where(truth[valid], np.log(p), np.log1p(-p))))


def vbox_in_volume(box, inner) -> tuple[slice, slice, slice]:
    """``inner`` (slices of the crop ``box``) as slices of the whole volume."""
    return tuple(
        slice(b.start + i.start, b.start + i.stop) for b, i in zip(box, inner, strict=True)
    )
