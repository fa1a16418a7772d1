"""Fine-tune a registered model on one volume and the user's own (sparse) labels.

The loop a user runs: segment, correct a few slices (or a box, or the whole mask) by
hand, fine-tune for a few minutes, segment again. :func:`finetune` does the middle step
and returns ``(module, card)``; :func:`save_finetuned` writes them, hash-checked like the
shipped models, into the user models folder
(:func:`napari_topo.models.registry.user_models_dir`), from where ``napari-topo models``,
``napari-topo segment --model NAME`` and the Segment widget find them.

What is learned from, and what is not
--------------------------------------
* **Only annotated voxels count.** The annotated region is an explicit ``annotated``
  mask, or derived from the labels by :func:`annotated_region`: the slices in which the
  user painted anything (along the axis where that is the fewest slices), or, when labels
  are present in most slices along every axis (a corrected whole mask), the labels'
  bounding box grown by a margin. Inside the region, label 0 means "no vessel here";
  outside it, nothing is known and the loss ignores the voxels: the prediction is
  multiplied by the region's mask before the loss (:func:`masked_loss`), so their
  gradient is exactly zero.
* **The base model's own loss** (its card's ``training.config.loss``: soft Dice,
  Dice + clDice or projected pooling + Dice) unless ``loss`` names another, plus a soft
  Dice over the whole batch and a binary cross-entropy, both on annotated voxels
  (:func:`finetune_objective`): without them a patch holding no labelled vessel gives
  almost no gradient, and the base model's false positives on what the user marked as
  background are never unlearned.
* **Patches**: a quarter centred on labelled vessel voxels, a quarter on hard negatives
  (annotated background the model called vessel in an earlier training batch, mined
  from the training forward passes at no extra cost), half on random annotated voxels. TopNet: the
  vessel head (soft Dice) and the centerness head (distance to the skeleton of the
  labels) fine-tune from a mask; the embedding branch and head are frozen unless the
  labels are tree labels (two or more distinct ids), in which case the embedding loss
  on pairs of centerline voxels trains them too. The shared decoder (and unless
  ``layers="decoder"`` the encoder) moves in both cases, so a frozen embedding can still
  drift a little.
* **What trains** (``layers``): by default (``"auto"``, :func:`resolve_layers`) a voxel
  classifier on a U-Net base (``"head"``, :mod:`napari_topo.training.head`), which did
  better than training the network on every real volume measured (``docs/finetune.md``),
  and every weight (``"all"``) on a TopNet or when a setting of the network's
  fine-tune (``loss``, ``lr``, ``batch_size``, ``patch``, ``val_every``) is given.
  ``"all"`` trains every weight with the base model's own loss; ``"decoder"``
  freezes the encoder (the base model's features are kept; the decoder, TopNet's task
  branches and the heads learn). Measured on the development data
  (``benchmarks/results/finetune_layers/`` and ``finetune_repeat/``, 2 CPU cores),
  neither of these two is better than the other everywhere: on 3D-IRCADb-01 patient
  01 with the labels of the whole upper half of the liver, at a 450-step budget, the
  lower half's Dice rose from 0.453 to 0.503 on average over three seeds (clDice
  0.410 -> 0.511) with the encoder frozen, against 0.481 (0.475) training every
  weight, ahead at each seed; with 10 labelled slices at one end of the liver (4
  minutes, no early stop), the other liver slices fell from 0.596
  to 0.470 with the encoder frozen, while every weight kept 0.607 (its held-out check
  never improved after step 25, so the kept weights are nearly the base's). The frozen
  encoder fits the held-out slices between the labelled ones steadily, and what it
  learns there need not hold far from them. The vesselNN stacks and the four tubes
  score alike with both (within 0.003 Dice); a step on the CT takes about 30 % less
  time frozen (46 s per 100 training steps against 65).
* **The same input as inference.** The volume goes through the base card's input policy
  (:func:`~napari_topo.inference.intensity.plan_input`: CT window or percentiles,
  polarity, zoom, resampling to isotropic voxels except a microscopy stack's coarse z
  step) exactly as
  :func:`~napari_topo.inference.pipeline.predict` will feed the fine-tuned model, whose
  card keeps the base card's ``normalization``.
* **Small-data augmentation**: random flips and axis permutations (the 48 rotations and
  mirrorings of a cube; a microscopy stack's kept coarse z axis stays in place, only y
  and x swap), scale 0.8-1.25, intensity scale/shift, gamma and noise.
* **Validation on held-out annotation**: ``validation_fraction`` of the annotated
  slices, evenly spread among them (or, for a mask or box, :data:`VALIDATION_SLABS` slabs
  spread along the slice axis) is never trained on; :data:`N_VALIDATION_PATCHES` fixed
  patches of it (centred on random held-out voxels) are scored together (one Dice and
  clDice over all of them) before training, every ``val_every`` steps and at the end.
  The result keeps the best weights, and when no step beats the base model the base
  weights are returned. Then the held-out part is **segmented as ``segment`` does it**
  (sliding windows, every zoom of the plan, the input grid: :func:`_held_out_view`) by
  the base model (before training) and by the kept weights: the mask threshold is
  chosen there, both scores reported there, and if the kept weights at their chosen
  threshold score below the base model at its own chosen threshold there, the base
  weights are returned: the result is never worse than the base on that held-out part,
  as the user will segment it. Both scores are in the card.
* **Stopping**: at ``steps`` or ``minutes`` (whichever comes first), early when
  ``patience`` validations in a row did not improve,
  or on ``cancel`` (:class:`~napari_topo.inference.sliding.Cancelled` is raised and
  nothing is returned or written). ``minutes`` is the wall time of the whole call, from
  the checks to the returned model: data preparation counts, and training stops early
  enough for the final validation and segmentation of the held-out part (timed on the
  base model's) to end within it.

The optimiser (:class:`Adam`) is written out here instead of taken from ``torch.optim``:
every ``torch.optim`` optimiser imports ``torch._dynamo`` when it is created
(``Optimizer.__init__`` -> ``add_param_group``, wrapped by ``torch._disable_dynamo``,
imports it lazily; ``step`` does too, through ``_use_grad_for_differentiable``), whatever
``foreach``/``fused`` say, and ``torch._dynamo.utils`` imports ``triton`` whenever it is
installed (CUDA wheels). Triton carries its own LLVM; napari's OpenGL context under Mesa
(llvmpipe, e.g. Xvfb) has already loaded Mesa's ``libLLVM``, and the two copies' symbols
clash on first-loaded-wins resolution: that import segfaults. Fine-tuning never imports
``torch._dynamo`` (a test checks it in a fresh interpreter), so the napari dock cannot
crash this way.

No Qt here: the CLI, scripts and the napari dock all call :func:`finetune`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .head import BACKGROUND_PER_VESSEL, HEAD_BATCH, HEAD_LR, HEAD_STEPS, MAX_VESSEL_VOXELS

__all__ = [
    "DEFAULT_LAYERS",
    "DEFAULT_LR",
    "LAYERS",
    "Adam",
    "FinetuneProgress",
    "annotated_region",
    "check_labels",
    "check_layers_for",
    "resolve_layers",
    "trains_words",
    "choose_threshold",
    "default_threads",
    "env_threads",
    "finetune",
    "finetune_objective",
    "masked_loss",
    "save_finetuned",
    "unchanged_from_base",
    "usable_cores",
]

#: What :func:`finetune` may train (``layers``): ``"all"`` (every weight),
#: ``"decoder"`` (the encoder frozen) or ``"head"`` (the network frozen; a voxel classifier
#: on its whole-volume output and image features, :mod:`napari_topo.training.head`).
LAYERS = ("all", "decoder", "head")

#: ``layers`` by default: :func:`resolve_layers` picks one of :data:`LAYERS` for the base.
#: The head on a U-Net: on every real volume measured (3D-IRCADb-01 patient 01, the three
#: vesselNN two-photon stacks, one to four corrected slices of a stack) it raised the
#: unlabelled part's Dice and clDice more than training the network did
#: (``docs/finetune.md``).
DEFAULT_LAYERS = "auto"

#: The settings of the network's fine-tune that a head does not take (:func:`finetune`'s
#: keywords): giving one makes ``layers="auto"`` train the network.
NETWORK_SETTINGS = ("loss", "lr", "batch_size", "patch", "val_every")

#: Peak learning rate of fine-tuning: a third of the shipped models' training rate (1e-3),
#: reached after :data:`WARMUP_STEPS` linear warm-up steps (Adam's first steps move every
#: weight by about the learning rate, which unsettles a trained network), then a cosine
#: decay to a tenth over the budget.
DEFAULT_LR = 3e-4
#: Steps of linear learning-rate warm-up.
WARMUP_STEPS = 10
#: Under this many training steps, a run stopped by its time budget says it was too short
#: (no validation between the first and the last: the budget went on preparation and
#: validation; the development data's gains took 50-500 steps).
FEW_STEPS = 25
#: Training steps a time budget always admits once the preparation (reading the region,
#: scoring the base model on the held-out part) ended within it: the time kept for the
#: end of the run (:func:`finetune`'s ``minutes``) is estimated from the first
#: validation, and on a loaded machine that estimate alone ate a newcomer's whole
#: 2-minute budget (72 s of preparation, 68 s kept: no step, nothing saved). The run
#: then takes longer than its budget, and says so. As many as the warm-up's steps; the
#: learning rate's cosine decay is then spread over them.
MIN_BUDGET_STEPS = WARMUP_STEPS
#: Minutes of fine-tuning when neither ``minutes`` nor ``steps`` is given.
DEFAULT_MINUTES = 5.0
#: Fraction of the labels' slices (per axis) under which labels count as sparse slices.
SPARSE_SLICE_FRACTION = 0.5
#: Labels count as painted slices too when, between the first and the last labelled
#: slice along an axis, at least this share of the slices hold no label, in gaps
#: between at least :data:`SPARSE_MIN_RUNS` separate runs of labelled slices: every
#: other slice painted (13 of 25: over half) is sparse, while a dense mask of vessels
#: that leave a few slices empty is not. A newcomer painted every other slice of a
#: 25-slice stack and the 12 unpainted ones, full of vessels, were taught as background.
SPARSE_GAP_FRACTION = 0.3
#: See :data:`SPARSE_GAP_FRACTION`.
SPARSE_MIN_RUNS = 3
#: Margin (voxels) around the labels' bounding box when the whole region is annotated.
REGION_MARGIN = 4
#: Validation patches scored (fixed for the run), centred on random held-out voxels.
N_VALIDATION_PATCHES = 12
#: Most model-grid voxels of the held-out view (:func:`_held_out_box`): the part of the
#: volume around the held-out annotation that the end of fine-tuning segments as
#: ``segment`` will (its cost is reserved from the time budget).
HELD_OUT_VIEW_VOXELS = 4_000_000
#: Context (model-grid voxels) kept around the held-out annotation in that view.
HELD_OUT_VIEW_CONTEXT = 32
#: A mask threshold is chosen only among those scoring within this much of the best
#: held-out score (mean of Dice and clDice), the one nearest 0.5 winning: one number fitted
#: to a few held-out slices is noisy, and a cut far from 0.5 is the riskiest where the rest
#: of the volume differs (3D-IRCADb-01: 0.2 scored 0.010 above 0.5 on the held-out upper
#: slices; the lower half then lost half its Dice, precision 0.17).
THRESHOLD_MARGIN = 0.02
#: Fewest labelled vessel voxels the held-out part must hold for a threshold other than
#: 0.5 to be chosen there (a held-out part without vessels scores 1 only where nothing is
#: found: the four tubes' held-out slices once chose 0.9 that way).
MIN_HELD_OUT_VESSEL_VOXELS = 50
#: Mask thresholds a fine-tuned model chooses from (:func:`choose_threshold`).
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Slabs the held-out part of a mask or box annotation is split into (spread evenly).
VALIDATION_SLABS = 4
#: Up to this many painted slices, bands of rows across them are held out (not a slice)
WITHIN_SLICES_MAX = 2
#: Largest share of the annotated region's voxels the labels may mark as vessel: more
#: leaves almost no background to learn what is not vessel, and is what an image passed
#: as the labels looks like (a newcomer's swapped IMAGE and LABELS trained on 8
#: background voxels).
MAX_VESSEL_SHARE = 0.9
#: A base model that scores at least this Dice and clDice (both at the threshold their
#: mean chooses) on the held-out part of labels whose annotated region was guessed from
#: them (no ``annotated`` mask, no ``painted`` slices) already draws them: nothing is left
#: to learn, and no result can beat it by a margin that means anything. It is what the
#: base model's own mask given as the labels looks like (a newcomer's run on it spent its
#: whole time budget and then saved nothing); fine-tuning stops there
#: (:func:`refuse_labels_like_base`). Painted slices and an annotated mask are never
#: refused so: a small correction the held-out part does not reach leaves the base
#: scoring 1 there (a reviewer's corrected patch between the held-out bands of one
#: painted slice).
#: unet-dice's own mask of vesselNN BBB_noLeakage (the whole stack given as the labels)
#: scores Dice 0.995, clDice 0.990 there: the box is segmented without ``segment``'s sheet
#: and smallest-piece filters. A CT's own mask cut by ``--vessel-range`` is not refused:
#: what the range dropped is something to learn.
LABELS_LIKE_BASE = 0.98
#: Weights of the two terms added to the base model's loss while fine-tuning: a soft
#: Dice over the whole batch's annotated voxels and a binary cross-entropy averaged over
#: them (both push against false positives in patches without any vessel, where a
#: per-patch Dice gives almost no gradient).
GLOBAL_DICE_WEIGHT = 1.0
BCE_WEIGHT = 1.0
#: Shares of training patches centred on labelled vessel voxels and on mined hard
#: negatives; the rest are centred on random annotated voxels, so that the patches'
#: share of vessel stays near the volume's (vessel-centred patches alone teach the
#: model to call too much vessel where the whole volume is segmented).
SAMPLE_VESSEL = 0.25
SAMPLE_HARD = 0.25
#: Hard-negative voxels remembered for patch sampling (the newest kept).
HARD_NEGATIVE_POOL = 20000


# ---------------------------------------------------------------------------------------
# the annotated region
# ---------------------------------------------------------------------------------------


def check_labels(labels: Any, shape: Sequence[int] | None = None) -> np.ndarray:
    """The user's labels as a non-negative integer array; a one-line ValueError if unusable.

    Parameters
    ----------
    labels : array_like (z, y, x)
        bool, integer, or float holding whole numbers (a NIfTI of ids is often float).
        0 is "no vessel"; any positive value is vessel; two or more distinct positive
        values are tree ids.
    shape : sequence of int, optional
        The image's shape, which the labels must have.

    Returns
    -------
    ndarray of int32
    """
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise ValueError(f"labels must be a 3D (z, y, x) array; got {arr.ndim}D {arr.shape}")
    if shape is not None and tuple(arr.shape) != tuple(int(s) for s in shape):
        raise ValueError(
            f"labels have shape {tuple(arr.shape)} but the image has {tuple(shape)}; "
            "they must cover the same voxels"
        )
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise ValueError(
                "labels hold fractional or non-finite values; give a mask or integer "
                "labels (0 = background), not a probability"
            )
    elif arr.dtype.kind not in "biu":
        raise ValueError(f"labels must be a mask or integer labels, got dtype {arr.dtype}")
    if arr.dtype.kind != "b" and arr.size and arr.min() < 0:
        raise ValueError("labels hold negative values; 0 is background, > 0 vessel")
    return arr.astype(np.int32, copy=False)


def _check_mask(mask: Any, shape: Sequence[int], what: str = "annotated") -> np.ndarray:
    m = np.asarray(mask)
    if tuple(m.shape) != tuple(shape):
        raise ValueError(
            f"the {what} mask has shape {tuple(m.shape)} but the image has {tuple(shape)}; "
            "they must cover the same voxels"
        )
    if m.dtype != bool:
        values = np.unique(m)
        if not np.isin(values, (0, 1)).all():
            raise ValueError(
                f"the {what} mask must be binary (0/1), got values "
                f"{values[:5].tolist()}{'...' if values.size > 5 else ''}"
            )
    return m.astype(bool, copy=False)


def _mean_run(painted: np.ndarray) -> float:
    """Mean length (slices) of the runs of labelled slices."""
    idx = np.flatnonzero(painted)
    return idx.size / (1 + int(np.count_nonzero(np.diff(idx) > 1))) if idx.size else 0.0


def _interleaved(painted: np.ndarray) -> bool:
    """Whether labelled slices (``painted``, one bool per slice) alternate with empty
    ones between the first and the last (see :data:`SPARSE_GAP_FRACTION`)."""
    idx = np.flatnonzero(painted)
    if idx.size < SPARSE_MIN_RUNS:
        return False
    span = painted[idx[0] : idx[-1] + 1]
    runs = 1 + int(np.count_nonzero(np.diff(idx) > 1))
    return runs >= SPARSE_MIN_RUNS and float(1.0 - span.mean()) >= SPARSE_GAP_FRACTION


def _painted_planes(painted: Any, shape: Sequence[int]) -> list[tuple[int, np.ndarray]]:
    """``painted`` (one ``(axis, indices)`` pair or a sequence of them) as a list of
    ``(axis, sorted unique indices)``, one per axis, checked against ``shape``."""
    pairs = list(painted) if isinstance(painted, (list, tuple)) else [painted]
    if len(pairs) == 2 and isinstance(pairs[0], (int, np.integer)):
        pairs = [tuple(pairs)]  # a single (axis, indices) pair
    merged: dict[int, set[int]] = {}
    for pair in pairs:
        axis, idx = _painted_slices(pair, shape)
        merged.setdefault(axis, set()).update(int(i) for i in idx)
    if not merged:
        raise ValueError("no painted slice was given: paint your corrections on a few slices")
    return [(a, np.asarray(sorted(merged[a]), dtype=np.int64)) for a in sorted(merged)]


def _painted_slices(painted: Any, shape: Sequence[int]) -> tuple[int, np.ndarray]:
    """``painted`` as ``(axis, sorted unique indices)``, checked against ``shape``."""
    try:
        axis, indices = painted
        axis = int(axis)
        idx = np.unique(np.asarray(indices, dtype=np.int64).ravel())
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"painted must be (axis, slice indices), e.g. (0, [3, 9, 15]); got {painted!r}"
        ) from exc
    if not 0 <= axis < len(shape):
        raise ValueError(f"painted axis must be 0..{len(shape) - 1}; got {axis}")
    if idx.size == 0:
        raise ValueError("no painted slice was given: paint your corrections on a few slices")
    if idx[0] < 0 or idx[-1] >= shape[axis]:
        raise ValueError(
            f"painted slices must lie in 0..{shape[axis] - 1} along axis {axis}; got {idx.tolist()}"
        )
    return axis, idx


def _slices_region(shape: Sequence[int], axis: int, slices: np.ndarray, how: str):
    mask = np.zeros(tuple(shape), bool)
    index: list[Any] = [slice(None)] * len(shape)
    index[axis] = slices
    mask[tuple(index)] = True
    n = int(mask.sum())
    return mask, {
        "method": "slices",
        "axis": int(axis),
        "slices": [int(s) for s in slices],
        "voxels": n,
        "description": f"{len(slices)} {how} slice{'s' if len(slices) != 1 else ''} "
        f"along axis {axis} ({_listed(slices)}; {n} voxels)",
    }


def _listed(items: Sequence[int], most: int = 12) -> str:
    """``items`` as text, the first and last few of a long list (a newcomer's CLI line
    said "5 painted slices along axis 0" without saying which)."""
    items = [int(i) for i in items]
    if len(items) <= most:
        return ", ".join(map(str, items))
    half = most // 2
    return ", ".join(map(str, items[:half])) + ", ..., " + ", ".join(map(str, items[-half:]))


def annotated_region(
    labels: Any, annotated: Any = None, *, margin: int = REGION_MARGIN, painted: Any = None
) -> tuple[np.ndarray, dict]:
    """Which voxels the user annotated, and how that was decided.

    Parameters
    ----------
    labels : array_like (z, y, x)
        The user's labels (0 = no vessel, > 0 vessel).
    annotated : array_like of bool (z, y, x), optional
        An explicit mask; returned as is (checked to be binary and of the same shape).
    margin : int
        Voxels added around the labels' bounding box in the "box" case.
    painted : (int, sequence of int) or a sequence of them, optional
        ``(axis, indices)``: the slices along ``axis`` the user painted in (the Fine-tune
        dock records them from napari's ``Labels.events.paint``), or several such pairs
        when the user painted along more than one axis. Those whole slices are the
        region, whatever else the labels hold (a corrected segmentation holds the
        model's own, unchecked output everywhere else); the held-out part is taken along
        the axis with the most painted slices (``info["axis"]``), the others'
        (``info["other_axes"]``) train. Ignored when ``annotated`` is given.

    Returns
    -------
    mask : ndarray of bool, shape of ``labels``
    info : dict
        ``{"method": "mask"|"slices"|"box", ...}``: for "slices", ``axis`` and the
        ``slices`` indices; for "box", ``box`` as ``[[start, stop], ...]``; always
        ``voxels`` (the count) and ``description`` (one line for the user).

    Notes
    -----
    Without ``annotated`` or ``painted``: for each axis, the slices holding any label are
    counted. If the labelled slices along an axis alternate with unlabelled ones (at
    least :data:`SPARSE_MIN_RUNS` runs, and :data:`SPARSE_GAP_FRACTION` of the slices
    between the first and the last labelled one empty: every other slice painted; of
    several such axes, the one with the thinnest runs), or else along the axis with the
    fewest labelled slices (a stroke on one z-slice of a 25 x 512 x 512 stack is 1 z-slice,
    not the 10 y-rows it spans) if their fraction of that axis is under
    :data:`SPARSE_SLICE_FRACTION`, the user painted some slices along
    that axis and exactly those slices (all their voxels, 0
    meaning "no vessel") are the region. Otherwise the labels fill most of the volume
    (e.g. a corrected segmentation) and the region is their bounding box grown by
    ``margin`` voxels.

    Raises
    ------
    ValueError
        Empty labels (without ``annotated``), an empty or non-binary ``annotated``, or
        ``painted`` that is not ``(axis, indices)`` inside the volume.

    Examples
    --------
    >>> lab = np.zeros((10, 20, 20), np.uint8); lab[3, 5:9, 5] = 1; lab[6, 2, 2:7] = 1
    >>> mask, info = annotated_region(lab)
    >>> info["method"], info["axis"], info["slices"], int(mask.sum())
    ('slices', 0, [3, 6], 800)
    """
    lab = np.asarray(labels)
    if annotated is not None:
        mask = _check_mask(annotated, lab.shape)
        n = int(mask.sum())
        if n == 0:
            raise ValueError("the annotated mask is empty; mark the voxels you labelled")
        return mask, {
            "method": "mask",
            "voxels": n,
            "description": f"the given annotated mask ({n} voxels)",
        }
    if painted is not None:
        planes = _painted_planes(painted, lab.shape)
        # the axis with the most painted slices is the one the held-out part is taken
        # along; slices painted along another axis (the user paged through y for a
        # while) are added to the region and train
        axis, slices = max(planes, key=lambda p: (len(p[1]), -p[0]))
        mask, info = _slices_region(lab.shape, axis, slices, "painted")
        others = [(a, ix) for a, ix in planes if a != axis]
        if others:
            for a, ix in others:
                index: list[Any] = [slice(None)] * lab.ndim
                index[a] = ix
                mask[tuple(index)] = True
            n = int(mask.sum())
            info["other_axes"] = {int(a): [int(i) for i in ix] for a, ix in others}
            info["voxels"] = n
            info["description"] = (
                f"{len(slices)} painted slice{'s' if len(slices) != 1 else ''} along axis "
                f"{axis} and "
                + ", ".join(f"{len(ix)} along axis {a}" for a, ix in others)
                + f" ({n} voxels)"
            )
        return mask, info
    fg = lab > 0
    if not fg.any():
        raise ValueError(
            # (an annotated mask would not help: empty labels inside it are refused too;
            # the hint read as a control the Fine-tune dock does not have)
            "the labels are empty: paint the vessels in a few slices (0 = background)"
        )
    fractions = []
    for axis in range(fg.ndim):
        other = tuple(a for a in range(fg.ndim) if a != axis)
        fractions.append(fg.any(axis=other))
    share = [float(f.mean()) for f in fractions]
    # slices painted apart along an axis say how the user painted, whatever the shares;
    # where several axes alternate (vessels running along z, apart in x, every other z
    # slice painted), the painted one has the thinnest runs: single slices, where a
    # vessel's cross-section spans its width
    interleaved = [a for a, f in enumerate(fractions) if _interleaved(f)]
    if interleaved:
        axis = min(interleaved, key=lambda a: (_mean_run(fractions[a]), share[a]))
    else:
        counts = [int(f.sum()) for f in fractions]
        axis = min(range(fg.ndim), key=lambda a: (counts[a], share[a]))
    if interleaved or share[axis] < SPARSE_SLICE_FRACTION:
        return _slices_region(fg.shape, axis, np.flatnonzero(fractions[axis]), "labelled")
    idx = np.nonzero(fg)
    box = [
        [max(0, int(i.min()) - margin), min(s, int(i.max()) + 1 + margin)]
        for i, s in zip(idx, fg.shape, strict=True)
    ]
    mask = np.zeros(fg.shape, bool)
    mask[tuple(slice(a, b) for a, b in box)] = True
    n = int(mask.sum())
    return mask, {
        "method": "box",
        "box": box,
        "voxels": n,
        "description": f"the labels' bounding box grown by {margin} voxels ("
        + ", ".join(f"{ax} {a}-{b - 1}" for ax, (a, b) in zip("zyx", box, strict=False))
        + f"; {n} voxels): the voxels between your labels and its faces count as 'no "
        "vessel'",
    }


def _spread(items: Sequence[int], n: int) -> list[int]:
    """``n`` of ``items`` evenly spread (never the first one when there are more)."""
    items = list(items)
    if n >= len(items):
        return items
    # centres of n equal parts: the held-out slices lie between training ones
    idx = [int((k + 0.5) * len(items) / n) for k in range(n)]
    return sorted({items[min(len(items) - 1, max(1, i))] for i in idx})


def _split_validation(
    mask: np.ndarray,
    info: dict,
    fraction: float,
    n_slabs: int = VALIDATION_SLABS,
    labels: np.ndarray | None = None,
):
    """``(train, validation, split_info)``: ``fraction`` of the region held out, spread.

    Slices: ``fraction`` of the annotated slices (at least one, at least one left for
    training), evenly spread among them, never the first; with ``labels``, among the
    slices holding a labelled vessel when at least two do (a held-out part without
    vessel scores 1 wherever nothing is found and cannot tell a better model), one of
    them left for training. With one or two painted slices (a user who corrected one
    slice), bands of rows across them are held out instead
    (:func:`_split_within_slices`), so that every painted slice trains. Otherwise (a
    mask or a box):
    up to ``n_slabs`` slabs of consecutive annotated slices, together ``fraction`` of
    them, evenly spread along the slice axis (axis 0, the one users page through; the
    longest side when the region is a single z-slice). Spread slabs see the same mixture of
    vessels, organ and surroundings as the training part (an edge slab can hold only
    margin and then predicts nothing about the rest).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_fraction must be between 0 and 1; got {fraction}")
    if info.get("method") == "slices":
        axis, slices = int(info["axis"]), list(info["slices"])
        if len(slices) <= WITHIN_SLICES_MAX:
            train, val, split = _split_within_slices(mask, axis, slices, fraction, n_slabs, labels)
            if info.get("other_axes"):  # painted planes of another axis, cut by the bands too
                split["within"]["other_axes"] = {
                    int(a): [int(i) for i in ix] for a, ix in info["other_axes"].items()
                }
            return train, val, split
        n_val = min(len(slices) - 1, max(1, int(round(fraction * len(slices)))))
        pool = slices
        if labels is not None:
            other = tuple(a for a in range(labels.ndim) if a != axis)
            vessel = np.flatnonzero(np.asarray(labels > 0).any(axis=other))
            with_vessel = [k for k in slices if k in set(vessel.tolist())]
            if len(with_vessel) >= 2:
                pool = with_vessel
                n_val = min(n_val, len(with_vessel) - 1)
        held = _spread(pool, n_val)
    else:
        present = []
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            present.append(np.flatnonzero(mask.any(axis=other)))
        axis = 0 if len(present[0]) >= 2 else int(np.argmax([len(p) for p in present]))
        candidates = [int(i) for i in present[axis]]  # the slices holding annotation
        length = len(candidates)
        if length < 2:
            raise ValueError("the annotated region is a single slice thick; label more")
        n_held = min(length - 1, max(1, int(round(fraction * length))))
        slabs = max(1, min(n_slabs, n_held))
        thick = [n_held // slabs + (1 if k < n_held % slabs else 0) for k in range(slabs)]
        held = []
        for k, t in enumerate(thick):
            centre = int((k + 0.5) * length / slabs)
            start = min(max(1, centre - t // 2), length - t)
            held += candidates[start : start + t]
        held = sorted(set(held))
    val = np.zeros_like(mask)
    index = [slice(None)] * 3
    index[axis] = held
    val[tuple(index)] = mask[tuple(index)]
    train = mask & ~val
    if not train.any() or not val.any():
        raise ValueError("the annotated region is too small to hold out a validation part")
    return train, val, {"axis": axis, "slices": [int(h) for h in held]}


def _split_within_slices(
    mask: np.ndarray,
    axis: int,
    slices: list[int],
    fraction: float,
    n_slabs: int,
    labels: np.ndarray | None,
):
    """``(train, validation, split_info)`` for one or two painted slices: bands of rows.

    The rows are taken along the in-plane axis (of the two other than ``axis``) along
    which the labelled vessels of the region extend furthest (the region itself without
    ``labels``): ``fraction`` of the rows from the first to the last holding a labelled
    vessel, as up to ``n_slabs`` bands of consecutive rows centred on evenly spread rows
    holding one, so that every band checks some vessel and the painted slices keep
    most of their vessels for training. Painted planes of another axis
    (``painted=[(0, ...), (1, ...)]``) are cut by the same bands. Bands of whole rows,
    not scattered voxels, so that a held-out voxel's neighbours are mostly held out too.
    ``split_info`` is ``{"axis": the row axis, "slices": the held-out rows, "within":
    {"axis": axis, "slices": slices}}`` (:func:`_split_validation` adds
    ``"other_axes": {axis: slices}`` to ``"within"`` for planes painted along other axes).
    """
    vessel = None
    if labels is not None:
        vessel = (np.asarray(labels) > 0) & mask
        if not vessel.any():
            vessel = None

    def rows(a: int, arr: np.ndarray) -> np.ndarray:
        return np.flatnonzero(arr.any(axis=tuple(o for o in range(3) if o != a)))

    def extent(a: int) -> int:
        r = rows(a, mask if vessel is None else vessel)
        return int(r[-1] - r[0] + 1) if len(r) else 0

    row_axis = max((a for a in range(3) if a != axis), key=extent)
    present = rows(row_axis, mask)
    if len(present) < 2:
        raise ValueError("the annotated region is too small to hold out a validation part")
    focus = rows(row_axis, vessel) if vessel is not None else present
    if len(focus) < 2:
        focus = present
    # ``fraction`` of the rows the labelled vessels span, not of the whole slice: a short
    # corrected vessel (40 of 256 rows) was otherwise held out whole and nothing trained
    span = int(focus[-1] - focus[0] + 1)
    n_held = min(span - 1, max(1, int(round(fraction * span))))
    slabs = max(1, min(n_slabs, n_held))
    thick = [n_held // slabs + (1 if k < n_held % slabs else 0) for k in range(slabs)]
    lo, hi = int(present[0]), int(present[-1])
    held: set[int] = set()
    for k, t in enumerate(thick):
        centre = int(focus[min(len(focus) - 1, int((k + 0.5) * len(focus) / slabs))])
        start = min(max(lo, centre - t // 2), hi + 1 - t)
        held.update(range(start, start + t))
    held_rows = sorted(held & set(present.tolist()))
    val = np.zeros_like(mask)
    index: list[Any] = [slice(None)] * 3
    index[row_axis] = held_rows
    val[tuple(index)] = mask[tuple(index)]
    train = mask & ~val
    if not train.any() or not val.any():
        raise ValueError("the annotated region is too small to hold out a validation part")
    return (
        train,
        val,
        {
            "axis": int(row_axis),
            "slices": [int(h) for h in held_rows],
            "within": {"axis": int(axis), "slices": [int(k) for k in slices]},
        },
    )


def resolve_layers(layers: str, card: Any, given: Sequence[str] = ()) -> str:
    """What ``layers`` trains on the base model of ``card``: one of :data:`LAYERS`.

    ``"auto"`` (:data:`DEFAULT_LAYERS`) is ``"head"`` on a U-Net (architecture
    ``"unet3d"``) unless ``given`` names a setting of the network's fine-tune
    (:data:`NETWORK_SETTINGS`: the user asked for the network), ``"head"`` on a model that
    carries a voxel head (a new head: its network cannot be fine-tuned under it) and
    ``"all"`` otherwise (a TopNet: the head reads a U-Net's vessel probability). Any
    other value comes back as it is (checked by :func:`finetune` and
    :func:`check_layers_for`).

    Parameters
    ----------
    layers : str
        ``"auto"`` or one of :data:`LAYERS`.
    card : ModelCard
        The base model's card.
    given : sequence of str
        The names of :data:`NETWORK_SETTINGS` the caller set.
    """
    if layers != "auto":
        return layers
    if card.architecture == "unet3d-voxel-head":
        return "head"
    if card.architecture == "unet3d" and not given:
        return "head"
    return "all"


def trains_words(
    layers: str, asked: str, card: Any, spec: dict, tree_labels: bool, own_loss: bool = True
) -> str:
    """What a fine-tune trains, in words (its first progress message): ``layers`` as
    resolved from ``asked`` (:func:`resolve_layers`) on the base ``card``, with the loss
    ``spec`` (``own_loss``: the base model's, not one the caller gave) and whether the
    labels are tree labels."""
    if layers == "head":
        what = (
            f"trains a voxel classifier on {card.name}'s output and image features (the "
            "network stays as it was)"
        )
        if asked == "auto":
            what += "; the default on a U-Net (--layers all trains the network's weights)"
        return what
    part = "every weight" if layers == "all" else "the decoder (the encoder frozen)"
    loss = f"its own loss ({spec.get('name')})" if own_loss else f"the loss {spec.get('name')}"
    what = f"trains {part} of {card.name} with {loss}"
    if card.task == "topnet":
        what += (
            "; the embedding learns the tree labels"
            if tree_labels
            else "; its embedding head stays frozen (no tree labels)"
        )
    if asked == "auto":
        what += (
            f"; a {card.architecture} model takes no voxel classifier"
            if card.architecture != "unet3d"
            else "; a setting of the network's fine-tune was given"
        )
    return what


def check_layers_for(layers: str, card: Any) -> None:
    """Refuse ``layers="head"`` on a base that is not a U-Net (``card``: its
    :class:`~napari_topo.models.registry.ModelCard`): the voxel classifier reads a U-Net's
    vessel probability. The CLI calls it before reading any volume.

    Raises
    ------
    ValueError
        ``layers`` is ``"head"`` and the base is, e.g., a TopNet.
    """
    if layers == "head" and card.architecture not in ("unet3d", "unet3d-voxel-head"):
        raise ValueError(
            f"a voxel classifier (--layers head) reads a U-Net's vessel probability, and "
            f"{card.name!r} is a {card.architecture} model: train every weight "
            "(--layers all) or its decoder (--layers decoder)"
        )


def _describe_split(split: dict) -> str:
    """The held-out part in words, for the card's ``validation_note``."""
    within = split.get("within")
    if within is None:
        k = len(split["slices"])
        return f"{k} slice{'' if k == 1 else 's'} along axis {split['axis']}, spread across it"
    ks = within["slices"]
    painted = (
        f"the painted slice {ks[0]}"
        if len(ks) == 1
        else "the painted slices " + ", ".join(str(k) for k in ks)
    )
    others = "".join(
        f" and {len(ix)} plane{'s' if len(ix) != 1 else ''} painted along axis {a}"
        for a, ix in (within.get("other_axes") or {}).items()
    )
    return (
        f"{len(split['slices'])} rows along axis {split['axis']} of {painted} along axis "
        f"{within['axis']}{others}, in bands across the labelled vessels"
    )


# ---------------------------------------------------------------------------------------
# loss, optimiser
# ---------------------------------------------------------------------------------------


def masked_loss(loss_fn, logits, target, mask):
    """``loss_fn(sigmoid(logits) * mask, target * mask)``: voxels outside ``mask`` ignored.

    Parameters
    ----------
    loss_fn : callable(probabilities, target)
        A loss of :mod:`napari_topo.topology.losses` built with ``sigmoid=False``.
    logits, target, mask : torch.Tensor (N, 1, D, H, W)
        ``mask`` is 1 on annotated voxels, 0 elsewhere.

    Returns
    -------
    torch.Tensor
        A scalar. Its gradient with respect to ``logits`` is exactly 0 outside ``mask``,
        and neither ``logits`` nor ``target`` there change its value.
    """
    import torch

    m = mask.to(logits.dtype)
    return loss_fn(torch.sigmoid(logits) * m, target.to(logits.dtype) * m)


def finetune_objective(
    loss_fn, logits, target, mask, *, dice_weight=GLOBAL_DICE_WEIGHT, bce_weight=BCE_WEIGHT
):
    """The fine-tuning loss: the base model's own loss plus batch soft Dice and BCE.

    ``masked_loss(loss_fn, ...) + dice_weight * (1 - softDice over the batch) +
    bce_weight * mean BCE``, the last two over annotated voxels only (the batch soft
    Dice of Kodym et al. / nnU-Net's "batch Dice", sums over every patch of the batch;
    the BCE is averaged over the annotated voxels). A per-patch soft Dice gives a patch
    without any labelled vessel almost no gradient, whatever it predicts there, so the
    base model's false positives on structures the user marked as background (muscle,
    bone, other organs) would never be unlearned; the two terms fix that.

    Parameters
    ----------
    loss_fn : callable(probabilities, target)
        The base model's loss, built with ``sigmoid=False``.
    logits, target, mask : torch.Tensor (N, 1, D, H, W)
        ``mask`` is 1 on annotated voxels, 0 elsewhere.
    dice_weight, bce_weight : float

    Returns
    -------
    torch.Tensor
        A scalar whose gradient with respect to ``logits`` is exactly 0 outside ``mask``.
    """
    import torch
    import torch.nn.functional as F

    m = mask.to(logits.dtype)
    g = target.to(logits.dtype) * m
    value = masked_loss(loss_fn, logits, target, mask)
    if dice_weight:
        p = torch.sigmoid(logits) * m
        dice = (2.0 * (p * g).sum() + 1.0) / (p.sum() + g.sum() + 1.0)
        value = value + dice_weight * (1.0 - dice)
    if bce_weight:
        bce = F.binary_cross_entropy_with_logits(logits, g, reduction="none")
        value = value + bce_weight * (bce * m).sum() / m.sum().clamp_min(1.0)
    return value


class Adam:
    """Adam with decoupled weight decay (Loshchilov & Hutter), without ``torch.optim``.

    The update of ``torch.optim.AdamW`` (``foreach=False``, no amsgrad), written with
    in-place tensor operations so that creating and stepping it never imports
    ``torch._dynamo`` (see the module docstring for why that matters in napari).

    Parameters
    ----------
    params : iterable of torch.nn.Parameter
        Parameters with ``requires_grad`` False are skipped.
    lr : float
    betas : (float, float)
    eps : float
    weight_decay : float
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        import torch

        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps = float(lr), tuple(betas), float(eps)
        self.weight_decay = float(weight_decay)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        import torch

        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1.0 - b1**self.t, 1.0 - b2**self.t
        with torch.no_grad():
            for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
                if p.grad is None:
                    continue
                g = p.grad
                if self.weight_decay:
                    p.mul_(1.0 - self.lr * self.weight_decay)
                m.mul_(b1).add_(g, alpha=1.0 - b1)
                v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
                denom = (v / bc2).sqrt_().add_(self.eps)
                p.addcdiv_(m, denom, value=-self.lr / bc1)


def _clip_grad_norm(params, max_norm: float) -> None:
    """Scale the gradients so that their global L2 norm is at most ``max_norm``."""
    import torch

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    total = torch.sqrt(sum((g.detach().float() ** 2).sum() for g in grads))
    scale = max_norm / (float(total) + 1e-6)
    if scale < 1.0:
        for g in grads:
            g.mul_(scale)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on macOS / Windows
        return max(1, os.cpu_count() or 1)


def env_threads() -> int | None:
    """``OMP_NUM_THREADS`` when it is a positive integer (a shared machine's limit), else
    None."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return n if n > 0 else None


def default_threads() -> int:
    """CPU threads for fine-tuning: all usable cores but one (at least 1), so a GUI stays
    usable; no more than ``OMP_NUM_THREADS`` when that is set (:func:`env_threads`)."""
    n = max(1, usable_cores() - 1)
    limit = env_threads()
    return n if limit is None else min(n, limit)


def _build_loss(spec: Mapping):
    """A probability-space loss (``sigmoid=False``) from a card's loss spec; TopNet's
    vessel head fine-tunes with soft Dice (its other heads have their own losses). A
    card's ``bce`` weight is left out: the fine-tuning objective adds its own
    cross-entropy over the annotated voxels (:data:`BCE_WEIGHT`), which a voxel mean over
    the whole patch would only dilute."""
    from ..topology import losses as L
    from .train import _loss_args, build_loss

    spec = {k: v for k, v in dict(spec).items() if k != "bce"}
    if spec.get("name") == "topnet":
        return L.SoftDiceLoss()
    if spec.get("name") not in ("dice", "cldice", "projpool"):
        raise ValueError(
            f"unknown loss {spec.get('name')!r}; known: dice, cldice, projpool (and topnet)"
        )
    return build_loss(_loss_args(spec), sigmoid=False)


def _loss_spec(loss: Any, base_card) -> dict:
    if loss is None:
        spec = (base_card.training.get("config") or {}).get("loss") or {"name": "dice"}
    elif isinstance(loss, str):
        spec = {"name": loss}
    elif isinstance(loss, Mapping) and "name" in loss:
        spec = dict(loss)
    else:
        raise ValueError(f"loss must be a name (dice, cldice, projpool) or a spec; got {loss!r}")
    spec = dict(spec)
    if base_card.task == "topnet" and spec["name"] != "topnet":
        raise ValueError("a TopNet model fine-tunes with its own loss; leave loss unset")
    if base_card.task != "topnet" and spec["name"] == "topnet":
        raise ValueError(f"the topnet loss needs a TopNet model; {base_card.name} is not one")
    _build_loss(spec)  # checks the name and arguments
    return spec


# ---------------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FinetuneProgress:
    """What :func:`finetune` reports to its ``progress`` callback.

    Attributes
    ----------
    phase : {"prepare", "train", "validate", "done"}
    step : int
        Optimiser steps done.
    max_steps : int or None
        The step budget, if any.
    elapsed_s : float
        Seconds since :func:`finetune` was called.
    fraction : float
        Share of the budget (steps or time, whichever is further) used, 0-1.
    loss : float or None
        Training loss of this step ("train") or validation loss ("validate").
    validation : dict or None
        On "validate": ``{"Dice", "clDice", "score", "loss", "step"}``.
    best : dict or None
        The best validation so far (the base model's at first).
    message : str
        One line for a status bar.
    input : str or None
        On the "prepare" report sent once the input is planned: the input policy in one
        line (modality, scaling, polarity, zoom), as ``segment`` will apply it.
    """

    phase: str
    step: int = 0
    max_steps: int | None = None
    elapsed_s: float = 0.0
    fraction: float = 0.0
    loss: float | None = None
    validation: dict | None = None
    best: dict | None = None
    message: str = ""
    input: str | None = None


def _steps_fit(n: int) -> str:
    """``"no training step"``, ``"only 1 training step"``, ``"only 8 training steps"``."""
    return "no training step" if n == 0 else f"only {n} training step{'' if n == 1 else 's'}"


def _is_set(cancel: Any) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Data:
    image: np.ndarray  # float32, normalised, model grid
    vessel: np.ndarray  # uint8
    train: np.ndarray  # bool
    val: np.ndarray  # bool
    trees: np.ndarray | None = None  # int32 (tree labels) or None
    distance: np.ndarray | None = None  # float32 distance to the labels' skeleton
    centerline: np.ndarray | None = None  # bool


def _nearest_indices(n_in: int, n_out: int, keep: Sequence[int] | None = None) -> np.ndarray:
    """Input index of each of ``n_out`` output positions, nearest-neighbour resampling.

    Output ``j`` takes input ``floor((j + 0.5) * n_in / n_out)`` (the nearest to its
    centre, as scikit-image's ``resize(order=0)`` but for exact ties). When shrinking, an
    index of ``keep`` (the annotated slices) that no output would take replaces the
    input of its own nearest output unless that one is in ``keep`` too, so that a
    painted slice is not skipped: at zoom 0.8, 25 slices -> 20 skipped slice 12, and one
    corrected slice there left nothing to train on. A replacement stays inside the
    output voxel's footprint and the order stays monotonic; two kept slices with the
    same nearest output (6 and 7 at zoom 0.5) keep one.
    """
    f = n_out / n_in
    src = np.clip(np.floor((np.arange(n_out) + 0.5) / f), 0, n_in - 1).astype(np.intp)
    if keep is not None and n_out < n_in:
        wanted = {int(k) for k in keep}
        for k in sorted(wanted - set(src.tolist())):
            j = int(np.clip(np.floor((k + 0.5) * f), 0, n_out - 1))
            if int(src[j]) not in wanted:
                src[j] = k
    return src


def _resize_nearest_kept(arrays: Sequence[np.ndarray], shape, region: np.ndarray) -> list:
    """``arrays`` (same shape) resampled to ``shape`` by nearest neighbour, every one with
    the same indices (:func:`_nearest_indices`), keeping each slice of every axis where
    ``region`` (bool, their shape) holds annotation when that axis shrinks."""
    index = []
    for axis, n_out in enumerate(shape):
        n_in = region.shape[axis]
        other = tuple(a for a in range(region.ndim) if a != axis)
        keep = np.flatnonzero(region.any(axis=other))
        index.append(_nearest_indices(n_in, int(n_out), keep))
    grid = np.ix_(*index)
    return [np.asarray(a)[grid] for a in arrays]


def _prepare_data(
    image, labels, region, train, val, policy, factors, context: int, topnet: bool, trees: bool
) -> tuple[_Data, dict]:
    """Crop around the region (plus context), resample and normalise as ``predict`` does."""
    from ..inference.pipeline import _needs_resampling, _resize

    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        nz = np.flatnonzero(region.any(axis=other))
        pad = int(math.ceil(context / factors[axis]))
        box.append((max(0, int(nz[0]) - pad), min(region.shape[axis], int(nz[-1]) + 1 + pad)))
    sl = tuple(slice(a, b) for a, b in box)
    img = np.asarray(image[sl], dtype=np.float32)
    lab, reg_train, reg_val = labels[sl], train[sl], val[sl]
    if _needs_resampling(factors):
        shape = tuple(max(1, round(n * f)) for n, f in zip(img.shape, factors, strict=True))
        img = _resize(img, shape).astype(np.float32)
        lab, reg_train, reg_val = _resize_nearest_kept(
            [lab, reg_train, reg_val], shape, np.asarray(reg_train) | np.asarray(reg_val)
        )
    img = np.asarray(policy.normalizer(img), dtype=np.float32)
    data = _Data(
        image=img,
        vessel=(lab > 0).astype(np.uint8),
        train=reg_train.astype(bool),
        val=reg_val.astype(bool),
        trees=lab.astype(np.int32) if trees else None,
    )
    if topnet:
        from scipy import ndimage as ndi

        from ..topology.skeleton import skeletonize

        cl = skeletonize(data.vessel > 0)
        data.centerline = cl
        data.distance = (
            ndi.distance_transform_edt(~cl).astype(np.float32)
            if cl.any()
            else np.zeros(img.shape, np.float32)
        )
    return data, {"crop": [[a, b] for a, b in box], "model_grid_shape": list(img.shape)}


def _pad_to(data: _Data, size: int) -> _Data:
    """Pad every array to at least ``size`` per axis at its far end: the image mirrored
    (repeatedly where the axis is shorter than the padding), as inference pads a volume
    smaller than its tile (:func:`~napari_topo.inference.sliding.sliding_window_inference`
    with ``pad_mode="reflect"``), so that the model is trained and validated on the
    context it will see; masks with 0."""
    pads = [(0, max(0, size - n)) for n in data.image.shape]
    if not any(p[1] for p in pads):
        return data
    out = _Data(
        image=np.pad(data.image, pads, mode="reflect"),
        vessel=np.pad(data.vessel, pads),
        train=np.pad(data.train, pads),
        val=np.pad(data.val, pads),
    )
    if data.trees is not None:
        out.trees = np.pad(data.trees, pads)
    if data.distance is not None:
        out.distance = np.pad(data.distance, pads, mode="edge")
        out.centerline = np.pad(data.centerline, pads)
    return out


class _Sampler:
    """Seeded training patches with flips, axis permutations, scale and intensity jitter.

    Patch centres: :data:`SAMPLE_VESSEL` on labelled vessel voxels, :data:`SAMPLE_HARD` on
    hard negatives (annotated background voxels the model being trained called vessel in
    an earlier batch, mined for free from the training forward passes by
    :meth:`add_false_positives`), the rest on random annotated voxels (also those meant
    for hard negatives until one has been seen).
    """

    def __init__(
        self,
        data: _Data,
        patch: int,
        rng: np.random.Generator,
        augment: bool = True,
        fixed_axes: tuple[int, ...] = (),
    ):
        self.data, self.patch, self.rng, self.augment = data, int(patch), rng, augment
        # axes the permutations leave in place: a microscopy stack's kept z step, whose
        # voxels are coarser than the others (inference never shows it elsewhere)
        self.fixed_axes = tuple(sorted(int(a) for a in fixed_axes))
        fg = np.argwhere((data.vessel > 0) & data.train)
        stride = 4
        coarse = np.argwhere(data.train[::stride, ::stride, ::stride]) * stride
        if len(coarse) == 0:
            coarse = np.argwhere(data.train)
        self.fg = fg.astype(np.int32)
        self.any = coarse.astype(np.int32)
        self.stride = stride
        self.hard = np.zeros((0, 3), np.int32)
        self.max_hard = HARD_NEGATIVE_POOL
        self.geometry: list[tuple] = []

    def _centre(self) -> np.ndarray:
        u = self.rng.random()
        if len(self.fg) and u < SAMPLE_VESSEL:
            return self.fg[int(self.rng.integers(len(self.fg)))]
        if len(self.hard) and u < SAMPLE_VESSEL + SAMPLE_HARD:
            return self.hard[int(self.rng.integers(len(self.hard)))]
        c = self.any[int(self.rng.integers(len(self.any)))]
        return np.minimum(
            c + self.rng.integers(0, self.stride, 3), np.array(self.data.train.shape) - 1
        )

    def add_false_positives(self, fp: np.ndarray, per_patch: int = 16) -> None:
        """Remember up to ``per_patch`` voxels of each patch's false positives.

        ``fp``: bool (N, p, p, p), in the augmented frame of the last :meth:`sample`;
        mapped back (flips, axis permutation, scale) onto the data grid.
        """
        found = []
        for b, (start, size, perm, flips) in enumerate(self.geometry[: len(fp)]):
            a = fp[b]
            if not a.any():
                continue
            if flips:
                a = np.flip(a, flips)
            a = np.transpose(a, np.argsort(perm))
            pts = np.argwhere(a)
            if len(pts) > per_patch:
                pts = pts[self.rng.choice(len(pts), per_patch, replace=False)]
            pts = start + (pts * (size / float(self.patch))).astype(np.int64)
            found.append(np.minimum(pts, np.array(self.data.train.shape) - 1))
        if found:
            self.hard = np.concatenate([self.hard, *found]).astype(np.int32)[-self.max_hard :]

    def sample(self, n: int) -> dict[str, np.ndarray]:
        import torch
        import torch.nn.functional as F

        d = self.data
        shape = np.array(d.image.shape)
        keys = ["image", "vessel", "mask"]
        if d.distance is not None:
            keys += ["distance", "centerline"]
        if d.trees is not None:
            keys.append("trees")
        out: dict[str, list] = {k: [] for k in keys}
        p = self.patch
        self.geometry = []
        for _ in range(n):
            scale = 1.0
            if self.augment and self.rng.random() < 0.3:
                scale = float(np.exp(self.rng.uniform(np.log(0.8), np.log(1.25))))
            size = np.minimum(np.maximum(8, np.round(p * scale).astype(int)), shape)
            c = self._centre()
            jitter = self.rng.integers(-(size // 4), size // 4 + 1)
            start = np.clip(c - size // 2 + jitter, 0, shape - size)
            sl = tuple(slice(int(a), int(a + s)) for a, s in zip(start, size, strict=True))
            arrays = {
                "image": d.image[sl],
                "vessel": d.vessel[sl],
                "mask": d.train[sl],
            }
            if d.distance is not None:
                arrays["distance"] = d.distance[sl]
                arrays["centerline"] = d.centerline[sl]
            if d.trees is not None:
                arrays["trees"] = d.trees[sl]
            if tuple(size) != (p, p, p):
                ratio = p / float(np.mean(size))
                for k, a in arrays.items():
                    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
                    if k in ("image", "distance"):
                        t = F.interpolate(t, size=(p, p, p), mode="trilinear", align_corners=False)
                    else:
                        t = F.interpolate(t, size=(p, p, p), mode="nearest")
                    r = t[0, 0].numpy()
                    if k == "distance":
                        r = r * ratio
                    arrays[k] = r.astype(a.dtype) if k not in ("image", "distance") else r
            perm, flips = np.arange(3), []
            if self.augment:
                if self.fixed_axes:
                    free = [a for a in range(3) if a not in self.fixed_axes]
                    perm = np.arange(3)
                    perm[free] = self.rng.permutation(free)
                else:
                    perm = self.rng.permutation(3)
                flips = [ax for ax in range(3) if self.rng.random() < 0.5]
                for k, a in arrays.items():
                    a = np.transpose(a, perm)
                    arrays[k] = np.flip(a, flips) if flips else a
                img = arrays["image"].astype(np.float32)
                if self.rng.random() < 0.5:  # contrast and brightness
                    img = img * self.rng.uniform(0.85, 1.15) + self.rng.uniform(-0.08, 0.08)
                if self.rng.random() < 0.3:  # gamma, on the clipped [0, 1] range
                    g = float(np.exp(self.rng.uniform(np.log(0.75), np.log(1.33))))
                    img = np.clip(img, 0.0, None) ** g
                if self.rng.random() < 0.3:
                    img = img + self.rng.normal(0.0, self.rng.uniform(0.0, 0.04), img.shape)
                arrays["image"] = img.astype(np.float32)
            self.geometry.append((start.copy(), size.copy(), perm, flips))
            for k, a in arrays.items():
                out[k].append(np.ascontiguousarray(a))
        return {k: np.stack(v) for k, v in out.items()}


def _validation_patches(data: _Data, size: int, rng: np.random.Generator, n: int):
    """Fixed validation patches (slices into the model-grid arrays).

    Centres drawn uniformly among the held-out voxels (not favouring vessels), so that
    the Dice over all patches together estimates the Dice over the whole held-out part:
    its mixture of vessel, organ and surroundings, where the false positives are.
    """
    shape = np.array(data.image.shape)
    size_v = np.minimum(size, shape)
    anyv = np.argwhere(data.val)
    out = []
    for i in rng.choice(len(anyv), min(n, len(anyv)), replace=False):
        start = np.clip(anyv[i] - size_v // 2, 0, shape - size_v)
        out.append(tuple(slice(int(a), int(a + s)) for a, s in zip(start, size_v, strict=True)))
    if not any(data.vessel[sl][data.val[sl]].any() for sl in out):  # at least one vessel
        fg = np.argwhere((data.vessel > 0) & data.val)
        if len(fg):
            c = fg[int(rng.integers(len(fg)))]
            start = np.clip(c - size_v // 2, 0, shape - size_v)
            out[-1] = tuple(slice(int(a), int(a + s)) for a, s in zip(start, size_v, strict=True))
    unique = {tuple((s.start, s.stop) for s in sl): sl for sl in out}
    return list(unique.values())


def _held_out_box(
    val_mask: np.ndarray, zoom_factors, vessel: np.ndarray | None = None
) -> tuple[slice, slice, slice]:
    """The box (input-grid slices) around the held-out voxels that the held-out view
    segments: their bounding box grown by :data:`HELD_OUT_VIEW_CONTEXT` voxels of the
    first zoom's grid, its longest axis (on that grid) halved around a held-out voxel
    still inside the box until the voxels the model sees, summed over every zoom it runs
    at, are at most :data:`HELD_OUT_VIEW_VOXELS`. Always holds held-out voxels.

    ``zoom_factors``: the resampling factors (z, y, x) of each zoom the plan runs, the
    plan's own zoom first. ``vessel``: the labels (nonzero: vessel); when given, the box
    is cut around held-out vessel voxels while any lie inside it (a box of background
    alone cannot choose a threshold)."""
    shape = val_mask.shape
    first = [float(f) for f in zoom_factors[0]]
    per_input_voxel = float(sum(np.prod([float(f) for f in fs]) for fs in zoom_factors))

    def others(ax: int) -> tuple[int, ...]:
        return tuple(a for a in range(3) if a != ax)

    box = []
    for ax in range(3):
        held = np.flatnonzero(val_mask.any(axis=others(ax)))
        pad = int(math.ceil(HELD_OUT_VIEW_CONTEXT / first[ax]))
        box.append([max(0, int(held[0]) - pad), min(shape[ax], int(held[-1]) + 1 + pad)])

    def extent(ax: int) -> int:
        return box[ax][1] - box[ax][0]

    held_vessel = None if vessel is None else val_mask & (np.asarray(vessel) > 0)
    if held_vessel is not None and not held_vessel.any():
        held_vessel = None
    while np.prod([extent(a) for a in range(3)]) * per_input_voxel > HELD_OUT_VIEW_VOXELS:
        ax = int(np.argmax([extent(a) * first[a] for a in range(3)]))
        if extent(ax) <= 2:
            break
        inside = tuple(slice(a, b) for a, b in box)
        sub = val_mask[inside]
        if held_vessel is not None and held_vessel[inside].any():
            sub = held_vessel[inside]
        held = np.flatnonzero(sub.any(axis=others(ax))) + box[ax][0]  # inside the box
        centre = int(held[len(held) // 2])
        half = max(1, extent(ax) // 4)
        lo = min(max(box[ax][0], centre - half), box[ax][1] - 2 * half)
        box[ax] = [lo, lo + 2 * half]
    return tuple(slice(a, b) for a, b in box)


def _held_out_view(
    module, card, image, lab, val_mask, box, policy, spacing, device, inputs, cancel=None
):
    """The model's vessel probability on ``box`` of the input, as ``segment`` makes it
    (sliding windows with their padding, every zoom of the plan fused, mapped back to the
    input grid; the intensities scaled as the whole image's), with the truth and the
    held-out voxels there: what :func:`choose_threshold` cuts.

    The validation patches that pick the best step are run whole on the model's grid
    and scored against labels resampled to it; on the vesselNN BBB_Leakage stack they
    put the held-out precision at 0.1 at 0.69 where segment's output had 0.42 (and
    threshold 0.1 then cost the other half 0.12 Dice), so the threshold is chosen here.
    """
    from ..inference.pipeline import predict

    out = predict(
        np.asarray(image[box]),
        (module, card),
        spacing=spacing,
        zoom=policy.zoom,
        intensity_from=image,
        device=str(device),
        cancel=cancel,
        on_message=lambda _m: None,
        **inputs,
    )
    valid = np.asarray(val_mask[box], bool)
    return out["vessel"], (np.asarray(lab[box]) > 0) & valid, valid, None


def _evaluate_grids(model, val_sets, device, loss_fn) -> dict:
    """The held-out scores (:func:`_scores` at 0.5) on each zoom's validation patches,
    each the mean over the grids: what picks the best step (the threshold is chosen on
    :func:`_held_out_view` instead)."""
    outputs = [_held_out_outputs(model, d, patches, device, loss_fn) for d, patches in val_sets]
    return _mean_scores([_scores(*o) for o in outputs])


def _mean_scores(scores: list[dict]) -> dict:
    if len(scores) == 1:
        return scores[0]
    out = {}
    for key in scores[0]:
        vals = [r[key] for r in scores if r[key] is not None]
        out[key] = float(np.mean(vals)) if vals else None
    return out


def _held_out_outputs(model, data: _Data, patches, device, loss_fn):
    """Vessel probability, truth and loss of the model on the validation patches: the
    probabilities and truths of all patches (held-out voxels only) concatenated, and
    the mean masked loss."""
    import torch

    probs, gts, valids, losses = [], [], [], []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for sl in patches:
            x = torch.from_numpy(np.ascontiguousarray(data.image[sl]))[None, None].to(device)
            out = model(x)
            logits = (out["vessel"] if isinstance(out, dict) else out).float()
            m = torch.from_numpy(np.ascontiguousarray(data.val[sl]))[None, None].to(device)
            g = torch.from_numpy(np.ascontiguousarray(data.vessel[sl]))[None, None].to(device)
            losses.append(float(masked_loss(loss_fn, logits, g.float(), m)))
            probs.append(torch.sigmoid(logits)[0, 0].cpu().numpy())
            valids.append(data.val[sl])
            gts.append((data.vessel[sl] > 0) & data.val[sl])
    if was_training:
        model.train()
    return (
        np.concatenate(probs, axis=0),
        np.concatenate(gts, axis=0),
        np.concatenate(valids, axis=0),
        float(np.mean(losses)),
    )


def refuse_labels_like_base(choice, vessel_voxels: int) -> None:
    """Refuse labels the base model already segments (:data:`LABELS_LIKE_BASE`).

    :func:`finetune` calls it only when the annotated region was guessed from the labels
    (no ``annotated`` mask, no ``painted`` slices).

    Parameters
    ----------
    choice : tuple
        :func:`choose_threshold`'s ``(threshold, scores, table)`` for the base model on the
        held-out part of the labels, segmented as ``segment`` does.
    vessel_voxels : int
        Vessel voxels the labels hold in the held-out part. Under
        :data:`MIN_HELD_OUT_VESSEL_VOXELS` nothing is refused: a held-out part without
        vessel, where the base model finds none either, scores Dice and clDice 1.

    Raises
    ------
    ValueError
        Dice and clDice both at least :data:`LABELS_LIKE_BASE` at the chosen threshold,
        on at least :data:`MIN_HELD_OUT_VESSEL_VOXELS` held-out vessel voxels.
    """
    threshold, at = choice[0], choice[1]
    if vessel_voxels < MIN_HELD_OUT_VESSEL_VOXELS:
        return
    if min(at["Dice"], at["clDice"]) < LABELS_LIKE_BASE:
        return
    raise ValueError(
        "the base model already segments the held-out part of the labels as they are "
        f"(Dice {at['Dice']:.3f}, clDice {at['clDice']:.3f} at threshold {threshold:g}): "
        "there they look like its own mask, uncorrected, with nothing to learn from. If "
        "you corrected some slices, give only those as the annotated region (--annotated "
        "MASK, 1 on them; the Fine-tune dock takes the slices you painted); otherwise "
        "correct the mask where it is wrong first"
    )


def _scores(prob, g, valid, loss: float | None, threshold: float = 0.5) -> dict:
    """Dice, clDice, precision, recall and the objective's score of ``prob > threshold``
    against ``g`` on the ``valid`` voxels."""
    from ..topology.metrics import cldice

    p = (prob > threshold) & valid
    tp, n_p, n_g = int((p & g).sum()), int(p.sum()), int(g.sum())
    dice = 1.0 if n_p + n_g == 0 else 2.0 * tp / (n_p + n_g)
    cl = (
        float(cldice(p, g)[0])
        if g.any() and p.any()
        else (1.0 if not (p.any() or g.any()) else 0.0)
    )
    if not math.isfinite(cl):
        cl = dice
    return {
        "Dice": float(dice),
        "clDice": cl,
        "Precision": float(tp / n_p) if n_p else None,
        "Recall": float(tp / n_g) if n_g else None,
        "score": 0.5 * (float(dice) + cl),
        "loss": loss,
    }


def choose_threshold(
    model,
    val_sets,
    device,
    loss_fn,
    *,
    outputs: Sequence[tuple] | None = None,
    margin: float = THRESHOLD_MARGIN,
) -> tuple[float, dict, list[dict]]:
    """The mask threshold of :data:`THRESHOLDS` whose held-out score is best.

    Where annotators draw a vessel's edge is a convention the network cannot know: on
    the two-photon development stacks the annotated edge lies in the blur outside the
    shipped models' 0.5 contour, and cutting their probability lower on half of a stack's
    labels raised the other half's Dice by 0.02-0.10. The held-out part of the user's
    annotation says which cut matches theirs. The score is the fine-tuning objective's
    (mean of Dice and clDice; over several outputs, the mean of each's). Among the
    thresholds scoring within :data:`THRESHOLD_MARGIN` of the best, the one nearest 0.5
    is chosen; with fewer than :data:`MIN_HELD_OUT_VESSEL_VOXELS` labelled vessel voxels
    in the outputs (for :func:`finetune`, in the held-out box it segmented), 0.5.
    Chosen on the held-out part, so its score there is slightly optimistic (one number
    fitted to it).

    ``margin``: the tolerance (default :data:`THRESHOLD_MARGIN`); 0 takes the best
    (ties: nearest 0.5), as the voxel head does (``training/head.py``: its smoothed
    probability has no calibrated 0.5 to prefer).

    ``outputs``: ``(probability, truth, held-out voxels, loss)`` tuples already at hand;
    :func:`finetune` passes its held-out view (:func:`_held_out_view`: the held-out part
    segmented as ``segment`` will, not the validation patches). None runs the model on
    ``val_sets``' patches.

    Returns
    -------
    threshold : float
    scores : dict
        The held-out scores at ``threshold`` (Dice, clDice, Precision, Recall, score,
        loss).
    table : list of dict
        ``{"threshold", "Dice", "clDice", "score"}`` for each threshold tried.
    """
    if outputs is None:
        outputs = [_held_out_outputs(model, d, patches, device, loss_fn) for d, patches in val_sets]
    rows = []
    for t in THRESHOLDS:
        rows.append((t, _mean_scores([_scores(*o, threshold=t) for o in outputs])))
    top = max(r["score"] for _, r in rows)
    if sum(int(np.count_nonzero(o[1])) for o in outputs) < MIN_HELD_OUT_VESSEL_VOXELS:
        margin = math.inf  # too few vessels held out to tell: 0.5
    near = [(abs(t - 0.5), t, r) for t, r in rows if r["score"] >= top - margin]
    _, threshold, scores = min(near, key=lambda x: x[0])
    table = [
        {"threshold": t, "Dice": r["Dice"], "clDice": r["clDice"], "score": r["score"]}
        for t, r in rows
    ]
    return float(threshold), scores, table


# ---------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------


def finetune(
    image: Any,
    labels: Any,
    base_model: Any = "unet-dice",
    *,
    annotated: Any = None,
    painted: Any = None,
    roi: Any = None,
    loss: str | Mapping | None = None,
    spacing: float | Sequence[float] | None = None,
    minutes: float | None = None,
    steps: int | None = None,
    device: str | None = "auto",
    progress: Callable[[FinetuneProgress], Any] | None = None,
    cancel: Any = None,
    seed: int = 0,
    name: str | None = None,
    threads: int | None = None,
    lr: float | None = None,
    layers: str = DEFAULT_LAYERS,
    batch_size: int | None = None,
    patch: int | None = None,
    val_every: int | None = None,
    patience: int = 8,
    validation_fraction: float = 0.2,
    modality: str = "auto",
    window: Sequence[float] | None = None,
    polarity: str = "auto",
    zoom: str | float | Sequence[float] | None = "auto",
    command: str | None = None,
    unit: str | None = None,
):
    """Fine-tune ``base_model`` on ``image`` and the user's ``labels``; ``(module, card)``.

    Parameters
    ----------
    image : array_like (z, y, x)
        The volume (numpy, dask or zarr), in its own units (HU for a CT).
    labels : array_like (z, y, x) of bool or int
        0 = no vessel, > 0 vessel; several ids = tree labels (used by TopNet's embedding).
        Only the annotated region counts (see ``annotated``).
    base_model : str, path or (module, ModelCard)
        A registered model (``napari-topo models``), a card/weights path or folder, or a
        loaded pair. Not modified.
    annotated : array_like of bool (z, y, x), optional
        The voxels the user labelled. Default: derived by :func:`annotated_region` (the
        painted slices, or the labels' bounding box plus a margin).
    painted : (int, sequence of int) or a sequence of them, optional
        ``(axis, indices)`` pairs: the slices the user painted in, which whole are the
        annotated region (:func:`annotated_region`); what the Fine-tune dock passes for a
        corrected segmentation. ``annotated`` wins when both are given.
    roi : array_like of bool (z, y, x), optional
        A region of interest: only the annotated voxels inside it count, for labels that
        cannot be trusted outside it (the model's uncorrected output there). The region
        is derived as without it (painted slices, guessed from the labels) and then cut,
        so the held-out part is chosen the same way and labels the base model already
        draws are still refused (:data:`LABELS_LIKE_BASE`). ``napari-topo finetune --roi
        MASK [--roi-margin D]``. A CT mask cut to the liver by ``segment --roi`` did
        better without it: on the development CT the tissue outside, taught as
        background, raised the lower half's precision from 0.71 to 0.81
        (``benchmarks/results/finetune_roi/``).
    loss : str or dict, optional
        ``"dice"``, ``"cldice"``, ``"projpool"`` or a spec such as
        ``{"name": "cldice", "alpha": 0.3}``; default the base model's own loss.
    spacing : float or sequence of 3 float, optional
        Voxel size (z, y, x), as for :func:`~napari_topo.inference.pipeline.predict`.
    minutes, steps : float, int, optional
        Budgets; the first reached stops training. ``minutes`` is the wall time of the
        whole call, the final validation included: training stops early enough to keep
        the time the first validation and segmentation of the held-out part took free
        for the last ones. Default: :data:`DEFAULT_MINUTES`. When the preparation ends
        within ``minutes`` but that kept time leaves room for fewer than
        :data:`MIN_BUDGET_STEPS` steps, that many steps run anyway (the learning rate's
        decay then spread over them) and the call takes longer than ``minutes`` (by
        those steps, a validation and a segmentation of the held-out part); a progress
        report and ``training["note"]`` say so. When the preparation alone took
        ``minutes`` or more, no step is done (``training["steps"]`` 0, the note says why).
        With ``minutes`` the learning rate's cosine decay follows the clock, so the
        steps done and the weights depend on the machine's speed: on the development CT
        two 10-minute runs of one command differed by 0.02 Dice and 0.08 clDice
        (``benchmarks/results/finetune_repeat/``). ``steps`` alone, the same ``seed``,
        device and ``threads`` repeat a run exactly. With ``layers="head"`` ``steps``
        bounds each of the head's two stages (``training["steps"]`` counts both), and a
        time budget too short for two gives one (:mod:`napari_topo.training.head`).
    device : str, optional
        "auto" (CUDA, MPS, CPU), "cuda", "mps" or "cpu".
    progress : callable(FinetuneProgress), optional
        Called after every step and every validation (from the calling thread).
    cancel : threading.Event or callable, optional
        Checked before every step; when set, :class:`~napari_topo.inference.sliding.Cancelled`
        is raised and nothing is returned.
    seed : int
        Seeds the patch sampling, augmentation, validation patches and torch.
    name : str, optional
        The new model's name (default ``<base>-ft-<date>-<time>``).
    threads : int, optional
        CPU threads (default :func:`default_threads`: all cores this process may use but
        one, at most ``OMP_NUM_THREADS`` when set); restored after.
    layers : {"auto", "all", "decoder", "head"}
        What is trained (:data:`LAYERS`; ``"auto"``, the default: :func:`resolve_layers`,
        a voxel classifier on a U-Net base unless ``loss``, ``lr``, ``batch_size``,
        ``patch`` or ``val_every`` is given, else every weight): ``"all"`` every weight
        (with the base model's own loss); ``"decoder"`` freezes the encoder (the
        contracting path's weights stay the base model's; the decoder, TopNet's task
        branches and the heads train); ``"head"`` freezes the network and trains a voxel
        classifier on its whole-volume output and image features
        (:mod:`napari_topo.training.head`; U-Net bases only; ``loss``, ``lr``,
        ``batch_size``, ``patch`` and ``val_every`` do not apply and are refused). The
        card's ``training["layers"]`` says which trained. Measured on the development
        data: module docstring and ``docs/finetune.md``.
    lr, batch_size, patch, val_every, patience, validation_fraction
        Peak learning rate (default :data:`DEFAULT_LR`; :data:`WARMUP_STEPS` of linear
        warm-up, then a cosine decay to a tenth over the budget), patches per step
        (default the base's training batch size), patch edge in voxels (default the
        base's), steps between validations (default 25, fewer for short step budgets),
        validations without improvement before stopping early, share of the annotation
        held out.
    modality, window, polarity, zoom
        The input policy choices, as for ``predict``; the same must be used when
        segmenting with the result (the defaults, "auto", are what ``segment`` uses).
    command : str, optional
        The command line, recorded in the card.
    unit : str, optional
        The length unit of ``spacing`` (e.g. ``"um"``, from the file), named in the
        ``input`` line of the progress reports.

    Returns
    -------
    module : torch.nn.Module
        The fine-tuned network (best validation weights; the base weights when nothing
        beat them), on the CPU, in eval mode.
    card : ModelCard
        Not yet saved (:func:`save_finetuned` writes it). ``normalization`` is the base
        card's; ``training`` records the base model and its sha256, the data's shape and
        spacing, the annotated and vessel voxel counts, how the region was derived, the
        input policy applied, loss, steps, wall time, why training stopped and the
        validation history (the patches that chose the step); ``threshold`` the mask
        threshold chosen on the held-out part segmented as ``segment`` does it
        (:func:`_held_out_view`, :func:`choose_threshold`), which ``segment`` uses by
        default; ``metrics["validation"]`` the scores of the result there at that
        threshold, ``metrics["validation_at_0.5"]`` at 0.5,
        ``metrics["validation_before"]`` those of the base model at its own threshold
        (what ``segment`` gives it) and ``metrics["threshold_choice"]`` the table. When
        the result at its chosen threshold scores below the base model at its chosen
        one there, the base model's weights are returned (``training["kept_base"]``
        says why).

    Raises
    ------
    ValueError
        One line each: not 3D, labels of another shape, fractional or negative labels,
        empty labels or annotation, a non-binary annotated mask, a single labelled
        slice, an unknown base model or loss, bad budgets.
    Cancelled
        When ``cancel`` was set.
    """
    import torch

    from .. import __version__
    from ..inference.device import pick_device
    from ..inference.intensity import plan_input
    from ..inference.pipeline import resample_factors, resolve_model, spacing_triple
    from ..inference.sliding import Cancelled
    from ..models.registry import ModelCard, sha256_file

    t0 = time.perf_counter()

    def report(**kw) -> None:
        if progress is not None:
            progress(FinetuneProgress(elapsed_s=time.perf_counter() - t0, **kw))

    # ---- checks, before any work ------------------------------------------------------
    shape = tuple(int(s) for s in getattr(image, "shape", np.shape(image)))
    if len(shape) != 3:
        raise ValueError(f"the image must be 3D (z, y, x); got shape {shape}")
    if minutes is None and steps is None:
        minutes = DEFAULT_MINUTES
    if minutes is not None and not (math.isfinite(minutes) and minutes > 0):
        raise ValueError(f"minutes must be a positive number; got {minutes}")
    if steps is not None and int(steps) < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    if layers not in LAYERS and layers != "auto":
        raise ValueError(f"layers must be auto or one of {', '.join(LAYERS)}; got {layers!r}")
    given = [
        k
        for k, v in (
            ("loss", loss),
            ("batch_size", batch_size),
            ("patch", patch),
            ("val_every", val_every),
        )
        if v is not None
    ] + (["lr"] if lr is not None else [])
    lr = DEFAULT_LR if lr is None else float(lr)
    lab = check_labels(labels, shape)
    region, region_info = annotated_region(lab, annotated, painted=painted)
    # labels that are the base model's own mask are refused only then (LABELS_LIKE_BASE)
    guessed_region = annotated is None and painted is None
    if roi is not None:  # cut after the region's method is known: the split follows it
        inside = _check_mask(roi, lab.shape, "region of interest")
        if not inside.any():
            raise ValueError("the region of interest is empty (all 0)")
        region = region & inside
        if not (lab[region] > 0).any():
            raise ValueError(
                "none of the labelled vessel voxels of the annotated region lies inside the "
                "region of interest: give the region the labels belong to"
            )
        n = int(np.count_nonzero(region))
        region_info = {
            **region_info,
            "voxels": n,
            "roi": True,
            "description": f"{region_info['description']}, inside the region of interest "
            f"({n} voxels)",
        }
    train_mask, val_mask, split = _split_validation(
        region, region_info, validation_fraction, labels=lab
    )
    if not (lab > 0).any():  # with an annotated mask: no vessel anywhere to learn from
        raise ValueError(
            "the labels are empty: paint the vessels inside the annotated region "
            "(0 = background there)"
        )
    if not (lab[region] > 0).any():
        raise ValueError(
            f"none of the {int((lab > 0).sum())} labelled vessel voxels lies inside the "
            f"annotated region ({region_info['voxels']} voxels, {region_info['method']}): "
            "give an annotated mask that covers your labels"
        )
    share = float(np.count_nonzero(lab[region])) / max(1, int(np.count_nonzero(region)))
    if share > MAX_VESSEL_SHARE:
        values = int(np.count_nonzero(np.unique(lab[region])))
        tight = (
            "; or the annotated mask holds little besides the vessels: include "
            "background around them"
            if region_info.get("method") == "mask"
            else ""
        )
        raise ValueError(
            f"the labels mark {share:.1%} of the annotated region's "
            f"{int(np.count_nonzero(region))} voxels as vessel, with {values} distinct "
            "values above 0 (labels usually hold one, or a few tree ids), leaving almost "
            "no background to learn from: are the image and the labels swapped? (labels: "
            f"0 = background, vessels > 0){tight}"
        )
    if not (lab[train_mask] > 0).any():
        held = (
            "bands of rows across your painted slices"
            if split.get("within")
            else "spread across it"
        )
        raise ValueError(
            "no vessel is labelled in the training part of the annotation ("
            f"{validation_fraction:.0%} of it, {held}, is held out); label "
            "vessels in more slices"
        )
    dev = pick_device(device)
    base, base_card = resolve_model(base_model, "cpu")
    asked, layers = layers, resolve_layers(layers, base_card, given)
    if layers == "head" and given:  # asked for, or "auto" on a model with a voxel head
        who = (
            "layers='head'"
            if asked == "head"
            else f"{base_card.name!r} carries a voxel head: a new head"
        )
        raise ValueError(
            f"{who} trains with its own settings (napari_topo.training.head); "
            f"{', '.join(given)} apply to the network's fine-tune only"
        )
    spec = _loss_spec(loss, base_card)
    topnet = base_card.task == "topnet"
    check_layers_for(layers, base_card)
    if layers != "head" and base_card.architecture == "unet3d-voxel-head":
        raise ValueError(
            f"{base_card.name!r} carries a voxel head trained on its network's output: "
            "fine-tune it with --layers head (layers='head': a new head), or fine-tune its "
            f"base model {base_card.training.get('fine_tuned_from', {}).get('name', '')!r}"
        )
    tree_ids = np.unique(lab[region])
    tree_labels = topnet and int((tree_ids > 0).sum()) >= 2
    if name is None:
        # a second round's model was "unet-dice-ft-<date>-ft-<date>": one suffix
        stem = re.sub(r"(-ft-\d{8}-\d{6})+$", "", base_card.name) or base_card.name
        name = f"{stem}-ft-{time.strftime('%Y%m%d-%H%M%S')}"
    ModelCard(name=name, architecture=base_card.architecture)  # checks the name
    cfg = base_card.training.get("config") or {}
    patch = int(patch or (cfg.get("patch") or [48])[0])
    if patch < 16 or patch % 8:
        raise ValueError(f"patch must be a multiple of 8, at least 16; got {patch}")
    batch_size = int(batch_size or cfg.get("batch_size") or 2)
    if steps is not None:
        val_every = val_every or min(25, max(1, int(steps) // 4))
    val_every = int(val_every or 25)

    report(
        phase="prepare",
        message=trains_words(layers, asked, base_card, spec, tree_labels, loss is None),
    )

    # ---- data on the model's grid, as predict() will see it ------------------------------
    report(phase="prepare", message="preparing the annotated region")
    policy = plan_input(
        image,
        base_card.normalization,
        modality=modality,
        window=window,
        polarity=polarity,
        zoom=zoom,
        spacing=spacing,
    )
    factors = resample_factors(spacing, policy.zoom.zoom, keep_coarse=policy.keep_coarse_axes)
    policy = dataclasses.replace(policy, factors=factors, spacing=spacing_triple(spacing))
    said = policy.describe(unit)
    report(phase="prepare", message=f"input: {said}", input=said)
    if layers == "head":
        from .head import finetune_head

        view_inputs = {"modality": modality, "window": window, "polarity": polarity}
        result, parts = finetune_head(
            image=image,
            lab=lab,
            region=region,
            train_mask=train_mask,
            val_mask=val_mask,
            base=base,
            base_card=base_card,
            policy=policy,
            spacing=spacing,
            view_inputs=view_inputs,
            dev=dev,
            steps=steps,
            minutes=minutes,
            patience=patience,
            seed=seed,
            threads=threads,
            cancel=cancel,
            report=report,
            t0=t0,
            refuse_like_base=guessed_region,
        )
        step, best_step, stopped = parts["steps"], parts["best_step"], parts["stopped"]
        history, curve, kept_base = parts["history"], parts["curve"], parts["kept_base"]
        threshold, threshold_table = parts["threshold"], parts["table"]
        at_threshold, at_half = parts["at_threshold"], parts["at_half"]
        before_view, view_box, step_s = parts["before_view"], parts["view_box"], parts["step_s"]
        best_state = {} if parts["improved"] else None
        grid = {
            # the head runs on the input grid (the network on its own, as for its base)
            "model_grid_shape": [b[1] - b[0] for b in parts["head"]["box"]],
            "voxel_head": parts["head"],
        }
        embedding, overrun_at = "n/a", parts.get("overrun_at")
        overrun_floor = parts.get("overrun_floor")
        validation_s = view_s = 0.0
        prepare_s = time.perf_counter() - t0
    else:
        val_size = patch + 16
        # One grid per zoom segment() will run the model at (the plan's zoom, then the finer
        # zooms it adds for thin vessels): a model fine-tuned at the first alone marks, at the
        # others, what the user's labels call background (vesselNN plaqueVessels: clDice of
        # the other half 0.776 -> 0.555, 134 pieces against 21, before this).
        grids = []
        for i, z in enumerate(policy.zoom.zooms):
            d, g = _prepare_data(
                image,
                lab,
                region,
                train_mask,
                val_mask,
                policy,
                resample_factors(spacing, z, keep_coarse=policy.keep_coarse_axes),
                val_size,
                topnet,
                tree_labels,
            )
            d = _pad_to(d, val_size)
            if d.train.any() and d.val.any():
                grids.append((float(z), d, g))
            elif i < len(policy.zoom.zooms) - 1:
                # a microscopy stack keeps its few slices and the zoom shrinks them (14 z
                # slices at zoom 0.265: 4), where the held-out slices can vanish: train at the
                # finer zooms segment() also runs
                report(
                    phase="prepare",
                    message=(
                        f"not trained at zoom {z:.3g} (one of those segment runs): shrunk to "
                        + "x".join(str(n) for n in g["model_grid_shape"])
                        + " voxels for the model, the "
                        + ("held-out" if d.train.any() else "training")
                        + " part of your labels keeps no voxel; the other zooms train"
                    ),
                )
        if not grids:
            raise ValueError("the annotated region vanished when resampled; label a larger region")
        grid = dict(grids[0][2])
        if len(grids) > 1:
            grid["zooms"] = [z for z, _, _ in grids]
            grid["model_grid_shapes"] = [g["model_grid_shape"] for _, _, g in grids]

        # ---- model, loss, optimiser ---------------------------------------------------------
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        old_threads = torch.get_num_threads()
        if dev.type == "cpu":
            torch.set_num_threads(int(threads or default_threads()))
        try:
            model = copy.deepcopy(base).to(dev)
            embedding = "n/a"
            if topnet:
                frozen = not tree_labels
                for part in (model.branches["embedding"], model.heads["embedding"]):
                    for prm in part.parameters():
                        prm.requires_grad_(not frozen)
                embedding = "frozen (no tree labels)" if frozen else "trained (tree labels given)"
            loss_fn = _build_loss(spec)
            if topnet:
                from ..topology.losses import CenternessLoss, EmbeddingMetricLoss

                center_fn, embed_fn = CenternessLoss(), EmbeddingMetricLoss()
            if layers == "decoder":  # the base's features are kept (module docstring)
                for prm in model.encoder.parameters():
                    prm.requires_grad_(False)
            opt = Adam(model.parameters(), lr=lr)
            kept = tuple("zyx".index(ax) for ax in policy.kept_axes())
            samplers = [_Sampler(d, patch, rng, fixed_axes=kept) for _, d, _ in grids]
            val_sets = [
                (d, _validation_patches(d, val_size, rng, N_VALIDATION_PATCHES))
                for _, d, _ in grids
            ]

            def evaluate() -> dict:
                return _evaluate_grids(model, val_sets, dev, loss_fn)

            t_val = time.perf_counter()
            before = evaluate()
            validation_s = time.perf_counter() - t_val
            report(
                phase="prepare",
                message="the base model segments the held-out part as segment will (the "
                "threshold is chosen there at the end)",
                max_steps=steps,
            )
            zoom_factors = [
                resample_factors(spacing, z, keep_coarse=policy.keep_coarse_axes)
                for z in policy.zoom.zooms
            ]
            view_box = _held_out_box(val_mask, zoom_factors, lab)
            view_inputs = {"modality": modality, "window": window, "polarity": polarity}

            def segment_held_out(net):
                return _held_out_view(
                    net,
                    base_card,
                    image,
                    lab,
                    val_mask,
                    view_box,
                    policy,
                    spacing,
                    dev,
                    view_inputs,
                    cancel,
                )

            t_view = time.perf_counter()
            base_view = segment_held_out(copy.deepcopy(base).to(dev))  # the caller's stays put
            view_s = time.perf_counter() - t_view
            t_view = time.perf_counter()
            # the base model as segment cuts it (its own threshold) and at its best threshold
            before_view = _scores(*base_view, threshold=base_card.mask_threshold)
            before_view["threshold"] = base_card.mask_threshold
            base_choice = choose_threshold(None, None, None, None, outputs=[base_view])
            if guessed_region:
                refuse_labels_like_base(base_choice, int(np.count_nonzero(base_view[1])))
            view_scoring_s = (time.perf_counter() - t_view) / (len(THRESHOLDS) + 1)
            # kept free at the end of the budget: the last validation, the held-out view of
            # the kept weights and choose_threshold scoring it at each threshold (and at 0.5)
            reserve_s = validation_s + view_s + (len(THRESHOLDS) + 1) * view_scoring_s
            before["step"] = 0
            best, best_state, best_step = dict(before), None, 0
            history = [dict(before)]
            report(
                phase="validate",
                validation=dict(before),
                best=dict(best),
                loss=before["loss"],
                max_steps=steps,
                message=f"base model: validation Dice {before['Dice']:.3f}",
            )

            budget_s = None if minutes is None else float(minutes) * 60.0
            step, curve, recent, stopped = 0, [], [], ""
            since_best = 0
            model.train()
            prepare_s = time.perf_counter() - t0
            # the time budget admits MIN_BUDGET_STEPS steps when the preparation fit in it
            floor = budget_s is not None and prepare_s < budget_s
            overrun_at = None  # the step at which the time budget ran out, when floor steps ran
            overrun_floor = None  # the head's (parts["overrun_floor"])

            def fraction() -> float:
                f = 0.0
                if steps is not None:
                    f = max(f, step / int(steps))
                if budget_s is not None:
                    f_time = (time.perf_counter() - t0 + reserve_s) / budget_s
                    if floor:  # a spent budget spreads the decay over the minimum steps
                        f_time = min(f_time, step / MIN_BUDGET_STEPS)
                    f = max(f, f_time)
                return min(1.0, f)

            last_val_step = 0
            t_loop, val_in_loop = time.perf_counter(), 0.0  # for the seconds per training step
            while True:
                if steps is not None and step >= int(steps):
                    stopped = f"step budget ({int(steps)} steps)"
                    break
                if budget_s is not None and time.perf_counter() - t0 + reserve_s >= budget_s:
                    if not floor or step >= MIN_BUDGET_STEPS:
                        stopped = f"time budget ({minutes:g} min)"
                        if overrun_at is not None:
                            stopped += f", overrun for the minimum {MIN_BUDGET_STEPS} steps"
                        break
                    if overrun_at is None:
                        overrun_at = step
                        fit = _steps_fit(step)
                        report(
                            phase="prepare",
                            step=step,
                            max_steps=steps,
                            fraction=fraction(),
                            best=dict(best),
                            message=(
                                f"{fit} fit in {minutes:g} min ({prepare_s:.0f} s went on "
                                f"preparing, {reserve_s:.0f} s are kept for the final "
                                f"validation); training the minimum {MIN_BUDGET_STEPS} steps "
                                "anyway: the run will take longer than its budget"
                            ),
                        )
                if _is_set(cancel):
                    raise Cancelled("fine-tuning cancelled; nothing was saved")
                frac = fraction()
                warm = min(1.0, (step + 1) / WARMUP_STEPS)
                opt.lr = lr * warm * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))
                sampler = samplers[step % len(samplers)]  # the zooms take turns
                batch = sampler.sample(batch_size)
                x = torch.from_numpy(batch["image"])[:, None].to(dev)
                g = torch.from_numpy(batch["vessel"]).float()[:, None].to(dev)
                m = torch.from_numpy(batch["mask"]).float()[:, None].to(dev)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    out = model(x)
                    logits = (out["vessel"] if topnet else out).float()
                    if topnet:
                        value = finetune_objective(loss_fn, logits, g, m)
                        dist = torch.from_numpy(batch["distance"]).float()[:, None].to(dev)
                        value = value + center_fn(out["centerness"].float(), dist, g * m)
                        if tree_labels:
                            from .train import _topnet_pairs

                            pairs = _topnet_pairs(
                                {**batch, "trees": batch["trees"].astype(np.int64)},
                                rng,
                                {"n_anchors": 64, "partners": 8, "radius": 15.0},
                                restrict=batch["mask"].astype(bool) & (batch["trees"] > 0),
                            )
                            value = value + embed_fn(out["embedding"], *[p.to(dev) for p in pairs])
                    else:
                        value = finetune_objective(loss_fn, logits, g, m)
                with torch.no_grad():
                    fp = (logits > 0) & (g < 0.5) & (m > 0.5)
                sampler.add_false_positives(fp[:, 0].cpu().numpy())
                opt.zero_grad()
                value.backward()
                _clip_grad_norm(opt.params, 5.0)
                opt.step()
                step += 1
                lv = float(value.detach())
                recent.append(lv)
                curve.append([step, lv])
                report(
                    phase="train",
                    step=step,
                    max_steps=steps,
                    fraction=fraction(),
                    loss=lv,
                    best=dict(best),
                    message=f"step {step}: loss {lv:.4f}",
                )
                if step % val_every == 0:
                    last_val_step = step
                    t_val = time.perf_counter()
                    res = evaluate()
                    val_in_loop += time.perf_counter() - t_val
                    res["step"] = step
                    history.append(res)
                    if res["score"] > best["score"] + 1e-4:
                        best, best_step, since_best = dict(res), step, 0
                        best_state = {
                            k: v.detach().to("cpu", copy=True)
                            for k, v in model.state_dict().items()
                        }
                    else:
                        since_best += 1
                    report(
                        phase="validate",
                        step=step,
                        max_steps=steps,
                        fraction=fraction(),
                        loss=res["loss"],
                        validation=dict(res),
                        best=dict(best),
                        message=f"step {step}: validation Dice {res['Dice']:.3f}",
                    )
                    if since_best >= patience:
                        stopped = f"early stop ({patience} validations without improvement)"
                        break
            step_s = (time.perf_counter() - t_loop - val_in_loop) / step if step else 0.0
            if step > last_val_step:
                if _is_set(cancel):
                    raise Cancelled("fine-tuning cancelled; nothing was saved")
                res = evaluate()
                res["step"] = step
                history.append(res)
                if res["score"] > best["score"] + 1e-4:
                    best, best_step = dict(res), step
                    best_state = {
                        k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                    }
                report(
                    phase="validate",
                    step=step,
                    max_steps=steps,
                    fraction=1.0,
                    loss=res["loss"],
                    validation=dict(res),
                    best=dict(best),
                    message=f"step {step}: validation Dice {res['Dice']:.3f}",
                )
            result = copy.deepcopy(base)
            if best_state is not None:
                result.load_state_dict(best_state)
            for prm in result.parameters():
                prm.requires_grad_(True)
            if _is_set(cancel):
                raise Cancelled("fine-tuning cancelled; nothing was saved")
            kept_base = None
            if best_state is None:
                threshold, at_threshold, threshold_table = base_choice
                at_half = _scores(*base_view)
            else:
                report(
                    phase="validate",
                    step=step,
                    max_steps=steps,
                    fraction=1.0,
                    best=dict(best),
                    message="segmenting the held-out part as segment will, to choose the threshold",
                )
                result_view = segment_held_out(result.to(dev))
                threshold, at_threshold, threshold_table = choose_threshold(
                    None, None, None, None, outputs=[result_view]
                )
                at_half = _scores(*result_view)
                if at_threshold["score"] < base_choice[1]["score"]:
                    # as many decimals as tell the two apart ("0.721 ... below 0.721" read
                    # as a contradiction to a newcomer)
                    ours, theirs = _apart(at_threshold["score"], base_choice[1]["score"])
                    # better on the patches, worse as segment runs it: the base model is kept
                    # a newcomer watched the patch scores climb 0.59 -> 0.79 and then read
                    # "the base weights are kept" without knowing why the two disagree
                    kept_base = (
                        f"the trained weights (step {best_step}, the best on the validation "
                        f"patches, small crops of the held-out part) scored "
                        f"{ours} on the whole held-out part segmented as "
                        f"segment does it (every zoom, whole tiles), below the base model's "
                        f"{theirs} (mean of Dice and clDice, each at its "
                        "best threshold): the base weights are kept"
                    )
                    result, best_state, best_step = copy.deepcopy(base), None, 0
                    threshold, at_threshold, threshold_table = base_choice
                    at_half = _scores(*base_view)
            at_threshold = {**at_threshold, "step": best_step}
            at_half["step"] = best_step
        finally:
            torch.set_num_threads(old_threads)

    result = result.cpu().eval()
    wall = time.perf_counter() - t0
    base_sha = base_card.sha256
    if not base_sha and base_card.weights_path is not None and base_card.weights_path.is_file():
        base_sha = sha256_file(base_card.weights_path)
    improved = best_state is not None
    note = None
    # the head's steps are milliseconds: it trains up to HEAD_STEPS of them
    usually = (
        f"the voxel classifier usually trains {HEAD_STEPS} steps a stage (about 10 s on the "
        "development CT with 2 free CPU cores; several times that on busy cores)"
        if layers == "head"
        else "fine-tuning usually needs a few hundred steps"
    )
    few = HEAD_STEPS // 3 if layers == "head" else FEW_STEPS
    if stopped.startswith("time budget") and step == 0:
        note = (
            f"no training step fit in {minutes:g} min (scoring the base model on the "
            f"held-out patches and segmenting the held-out part took "
            f"{validation_s + view_s:.0f} s); {usually}: give it more time"
        )
    elif overrun_at is not None and layers == "head":
        note = (
            f"{_steps_fit(overrun_at)} fit in {minutes:g} min (the base model's pass over "
            "the annotated region and the image features took most of it); the minimum "
            f"{overrun_floor} steps ran anyway, so the run took {wall:.0f} s; {usually}: "
            "give it more time"
        )
    elif overrun_at is not None:
        note = (
            f"{_steps_fit(overrun_at)} fit in {minutes:g} min (preparing and scoring the "
            f"base model took {prepare_s:.0f} s, {reserve_s:.0f} s were kept for the "
            "final validation and segmenting the held-out part); the minimum "
            f"{MIN_BUDGET_STEPS} steps ran anyway, so the run took {wall:.0f} s; "
            f"{usually}: give it more time"
        )
    elif re.search(r"(^|: )(its share of the )?time budget \(", stopped) and step < few:
        took = (
            "the base model's pass over the annotated region and the image features took most of it"
            if layers == "head"
            else f"a step took {step_s:.1f} s, a validation {validation_s:.0f} s"
        )
        note = (
            f"only {step} training step{'' if step == 1 else 's'} fit in {minutes:g} min "
            f"({took}); {usually}: give it more time"
        )
    summary = (
        f"{base_card.name} fine-tuned on a {'x'.join(map(str, shape))} volume "
        f"({region_info['voxels']} annotated voxels): held-out Dice "
        f"{before_view['Dice']:.3f} -> {at_threshold['Dice']:.3f}"
        + (f" (mask threshold {threshold:g})" if threshold != 0.5 else "")
        + (
            ""
            if improved
            else " (the base model's weights kept: they scored higher on the held-out part)"
            if kept_base
            else " (no step beat the base model: its weights kept)"
        )
    )
    sp = None if spacing is None else [float(s) for s in np.broadcast_to(spacing, (3,))]
    head = layers == "head"
    card = ModelCard(
        name=name,
        architecture="unet3d-voxel-head" if hasattr(result, "refine") else base_card.architecture,
        arch_kwargs=copy.deepcopy(result.arch_kwargs),
        task=base_card.task,
        summary=summary,
        normalization=copy.deepcopy(base_card.normalization),
        training={
            "fine_tuned_from": {
                "name": base_card.name,
                "sha256": base_sha,
                "summary": base_card.summary,
            },
            "data": {
                "shape": list(shape),
                "spacing": sp,
                "unit": unit,
                "annotated_voxels": int(region_info["voxels"]),
                "annotated_region": dict(region_info),
                "vessel_voxels": int((lab[region] > 0).sum()),
                "validation_part": split,
                "validation_voxels": int(val_mask.sum()),
                "tree_labels": bool(tree_labels),
                **grid,
            },
            "input_policy": policy.to_dict(),
            "loss": {"name": "bce"} if head else spec,
            "objective": "binary cross entropy of the voxel head (the network frozen)"
            if head
            else f"the base loss ({spec['name']}) on annotated voxels + "
            f"{GLOBAL_DICE_WEIGHT:g} x batch soft Dice + {BCE_WEIGHT:g} x BCE (annotated voxels)",
            "sampling": "every labelled vessel voxel of the training part (at most "
            f"{MAX_VESSEL_VOXELS}) and {BACKGROUND_PER_VESSEL} times as many "
            "background voxels of it"
            if head
            else f"{SAMPLE_VESSEL:.0%} labelled vessel, {SAMPLE_HARD:.0%} mined false "
            "positives, the rest random annotated voxels",
            "embedding": embedding,
            "steps": step,
            "best_step": best_step,
            "stopped": stopped,
            "note": note,
            "kept_base": kept_base,
            "wall_time_s": round(wall, 1),
            "budget": {"minutes": minutes, "steps": steps},
            "lr": HEAD_LR if head else lr,
            "layers": layers,
            "batch_size": HEAD_BATCH if head else batch_size,
            "patch": None if head else [patch] * 3,
            "augmentation": "none (a voxel head)"
            if head
            else "flips, axis permutations, scale 0.8-1.25, contrast/brightness, "
            "gamma, Gaussian noise",
            "seed": seed,
            "device": str(dev),
            "threads": int(threads or default_threads()) if dev.type == "cpu" else None,
            "validation_history": history,
            "loss_curve": curve,
            # the spacing of the volume it was tuned on (the base's synthetic [1, 1, 1]
            # read as this model's training spacing to a newcomer)
            "voxel_spacing": sp,
            "radius_range_voxels": base_card.training.get("radius_range_voxels"),
            "command": command,
            "torch": torch.__version__,
            "napari_topo": __version__,
        },
        threshold=threshold,
        min_size=parts["min_size"] if head else base_card.min_size,
        metrics={
            "validation": dict(at_threshold),
            "validation_at_0.5": dict(at_half),
            "validation_before": dict(before_view),
            "threshold_choice": threshold_table,
            "validation_note": "held-out part of the user's annotation "
            f"({_describe_split(split)}), "
            "never trained on, segmented as segment does (the box "
            + "x".join(f"{b.start}:{b.stop}" for b in view_box)
            + " of the input); 'validation' is at the mask threshold chosen on it "
            "('threshold_choice'), 'validation_at_0.5' at 0.5, 'validation_before' the base "
            "model's at its own threshold; training.validation_history holds the patch "
            "validations that chose the step",
        },
        description=(
            "Fine-tuned with napari-topo on one user's volume; use it on images like that "
            f"one. That volume was read as: {policy.describe()}. "
            + (
                # predict pins a head's intensities (pipeline.fine_tuned_reading): its
                # features are those values themselves
                "segment reads every image's intensities the same way (the voxel "
                "classifier's features are those values), measuring only the automatic "
                "zoom on that image; pass --zoom to hold it, or --modality, --window or "
                "--polarity to read another way."
                if hasattr(result, "refine")  # a voxel head model, as its architecture
                else "segment reads every image by the same rules (its 'input:' line), "
                "measuring percentiles, polarity and the automatic zoom on that image; pass "
                "--zoom (or --window) to hold them."
            )
        ),
    )
    report(
        phase="done",
        step=step,
        max_steps=steps,
        fraction=1.0,
        best=dict(at_threshold),
        message=summary,
    )
    return result, card


def _apart(a: float, b: float, fewest: int = 3, most: int = 6) -> tuple[str, str]:
    """``a`` and ``b`` as text with the fewest decimals (``fewest`` to ``most``) that
    tell them apart (the Fine-tune dock's loss scale uses it too)."""
    for decimals in range(fewest, most + 1):
        text = f"{a:.{decimals}f}", f"{b:.{decimals}f}"
        if text[0] != text[1]:
            break
    return text


def one_score_fell(card) -> str | None:
    """When training beat the base but Dice or clDice alone fell on the held-out part, the
    sentence that says what the result was checked by, else None.

    A newcomer read "Dice 0.710 -> 0.702, clDice 0.732 -> 0.743 ... saved" as a worse
    model kept: the check against the base is the mean of the two (each at its best
    threshold), so one of them may fall.

    Parameters
    ----------
    card : ModelCard
        From :func:`finetune` (``metrics["validation_before"]`` and ``["validation"]``).

    Returns
    -------
    str or None
        E.g. ``"the mean of Dice and clDice, by which the result is checked against the
        base model, rose: 0.721 -> 0.722; Dice alone fell"``.
    """
    t, m = card.training or {}, card.metrics or {}
    before, after = m.get("validation_before") or {}, m.get("validation") or {}
    keys = ("Dice", "clDice")
    if not all(k in before and k in after for k in keys):
        return None
    fell = [k for k in keys if after[k] < before[k]]
    if len(fell) != 1 or t.get("kept_base") or not t.get("best_step"):
        return None
    was, now = _apart(
        0.5 * (before["Dice"] + before["clDice"]), 0.5 * (after["Dice"] + after["clDice"])
    )
    return (
        f"the mean of Dice and clDice, by which the result is checked against the base "
        f"model, rose: {was} -> {now}; {fell[0]} alone fell"
    )


def unchanged_from_base(card) -> str | None:
    """Why the model of a :func:`finetune` ``card`` is its base model unchanged, or None.

    Unchanged: no training step was done, or none beat the base model on the held-out
    part (``best_step`` 0, or ``kept_base``), and the mask threshold is the base's. The
    Fine-tune dock and ``napari-topo finetune`` then save nothing: a newcomer's run saved
    a copy of the base model, and *Segment again* with it changed no voxel.

    Parameters
    ----------
    card : ModelCard
        From :func:`finetune`.

    Returns
    -------
    str or None
        E.g. ``"no training step beat the base model on the held-out part (...), and
        the mask threshold stays 0.5 (...)"``; the note of a run with no step.
    """
    t = card.training or {}
    if not t.get("steps"):
        return t.get("note") or "no training step fit in the time budget"
    if not (t.get("kept_base") or t.get("best_step") == 0):
        return None
    base = (card.metrics or {}).get("validation_before", {}).get("threshold")
    threshold = 0.5 if card.threshold is None else card.threshold
    if base is None or not math.isclose(float(base), float(threshold)):
        return None
    return (
        "no training step beat the base model on the held-out part (segmented as segment "
        f"does), and the mask threshold stays {threshold:g} (label more slices, spread "
        "out, or give it more time)"
    )


def save_finetuned(module, card, directory=None):
    """Write a fine-tuned model (``.safetensors`` + JSON card with its sha256).

    Parameters
    ----------
    module, card
        From :func:`finetune`.
    directory : path, optional
        Default :func:`napari_topo.models.registry.user_models_dir` (listed by
        ``napari-topo models`` and the Segment widget).

    Returns
    -------
    ModelCard
        The written card (``path`` set).

    Raises
    ------
    ValueError
        The name is that of a shipped model (it would be hidden behind it).
    """
    from ..models.registry import WEIGHTS_DIR, save_model, user_models_dir

    if (WEIGHTS_DIR / f"{card.name}.json").is_file():
        raise ValueError(f"{card.name!r} is the name of a shipped model; choose another name")
    directory = user_models_dir() if directory is None else directory
    return save_model(module, card, directory)
