"""Fine-tuning on a user's own sparse labels: does it help on real data, how fast, how much memory.

Run on demand (never as a timed test)::

    python benchmarks/bench_finetune.py [--case CONVERTED_CASE] [--minutes 10] [--threads 2]
        [--tube-minutes 2] [--results /work/results/finetune] [--skip-tubes] [--base MODEL]
        [--stack CONVERTED_STACK ...] [--stack-minutes 5] [--layers head|all|decoder]
        [--steps N] [--seed S] [--tta 1|2|4|8] [--save-model DIR]

The defaults (``--base unet-dice --layers head --minutes 10``) are what issue 10's
targets are reported with (``docs/finetune.md``): the voxel classifier on the frozen
unet-dice, the target's 10-minute budget. ``--layers all`` trains the network instead
(the product's own default, ``finetune``'s ``DEFAULT_LAYERS``).

``--steps`` replaces the case's time budget by a step budget, which repeats exactly (under
a time budget the learning-rate schedule follows the clock, so two runs differ);
``--tta`` also scores the case with that many mirrored copies per tile.

Three experiments, each exactly as a user would run it (``finetune`` from ``--base``,
``unet-dice`` unless given, with ``--layers``, then ``segment`` with the result):

* **A converted 3D-IRCADb case** (``--case``: a folder made by ``benchmarks/real/convert.py``
  holding ``meta.json``, e.g. ``CONVERTED/ircadb/ircadb1``). Ground truth: every vessel
  mask of the case (portal vein + hepatic veins/IVC + artery, ``vessels.nii.gz``); region
  of interest: the liver grown by 10 mm (``benchmarks/real/scoring.py``). The liver's
  slices are split in two halves along the slice axis: the labels of the **upper half**
  (slice index >= the middle of the liver's slices; the index grows towards the head) inside
  the ROI are the user's labels, as a corrected ``segment --roi liver --roi-margin 10`` mask
  holds them (0 outside the ROI). By default (``--annotate upper-slices``) no annotated
  mask is given: finetune's own region, the slices holding labels, whole, as
  ``napari-topo finetune IMAGE LABELS`` and the Fine-tune dock use them (the tissue outside
  the ROI is then background). ``--annotate upper`` gives the ROI of those slices as the
  annotated mask instead (the protocol until 2026-12-05: precision 0.71 against 0.81,
  ``benchmarks/results/finetune_roi/``). The **lower half** is scored (Dice, clDice,
  precision, sensitivity inside the ROI), for the base model and the fine-tuned one. Both
  are segmented on the bounding box of the lower-half ROI (plus 16 voxels) with
  ``modality="ct"`` (what the automatic detection says on the whole volume, and what the
  fine-tune used; a crop without air would not be recognised as CT). Targets (issue 10):
  Dice >= 0.6, clDice >= 0.65 within 10 minutes on 2 CPU cores.
* **Converted two-photon stacks** (``--stack``, repeatable: vesselNN folders of
  ``convert.py``): the labels of one half of the stack (x below its middle) are the
  annotation, the other half is scored (:func:`run_stack`).
* **The four-tube volume of issue 9** (``benchmarks/real/four_tubes.py``, uint16, 64 x 256
  x 256, as ``bench_four_tubes.py``): the labels of 8 z-slices (evenly spread over the slices
  holding tubes; some hold none, so they are given as the ``annotated`` mask) are the
  annotation; precision, sensitivity and Dice on all the other slices,
  base against fine-tuned. Target: precision >= 0.95.

Reported: fine-tune wall time, steps, seconds per 100 steps (training steps only, and with
the validations), the held-out validation before/after from the card, segmentation wall
times and the peak resident memory of the process (``ru_maxrss``) after each phase.
Everything goes to ``--results`` (``finetune.json``, ``finetune.md``, and the fine-tuned
models' cards without their weights: weights trained on 3D-IRCADb must not be shared).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "real"))
from four_tubes import four_tubes  # noqa: E402
from scoring import score  # noqa: E402

BASE = "unet-dice"
#: What the fine-tunes train unless ``--layers`` says (module docstring).
BENCH_LAYERS = "head"


#: Where fine-tuning and segmenting run (``--device``).
DEVICE = "cpu"


def gpu_peak_mb() -> float | None:
    """Peak CUDA memory allocated by torch so far, MiB (None off CUDA)."""
    import torch

    if not str(DEVICE).startswith("cuda"):
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def peak_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Timer:
    """Progress callback recording the time of every training step and validation."""

    def __init__(self, label: str):
        self.label, self.train, self.validate, self.last = label, [], [], 0.0

    def __call__(self, p) -> None:
        if p.phase == "train":
            # with its step: a voxel head reports once per 25 steps, the network each step
            self.train.append((p.elapsed_s, p.step))
        elif p.phase == "validate":
            self.validate.append(p.elapsed_s)
            v = p.validation
            what = (
                p.message  # no scores: the held-out part is being segmented
                if v is None
                else f"held-out Dice {v['Dice']:.3f} clDice {v['clDice']:.3f}"
            )
            print(f"  [{self.label}] {p.elapsed_s:6.0f} s step {p.step:4d}: {what}", flush=True)

    def per_100_steps(self) -> dict:
        """Seconds per 100 steps: the median over the gaps between step reports (training
        alone), and first to last report (validations, and a voxel head's second-stage
        preparation, included). The seconds per 100 steps of a 25-step gap were counted
        as those of one step before (a head's 0.4 s read as 29 s)."""
        if len(self.train) < 3:
            return {}
        t = np.asarray([e for e, _ in self.train], float)
        n = np.asarray([s for _, s in self.train], float)
        dt, dn = np.diff(t), np.diff(n)
        ok = dn > 0
        if not ok.any():
            return {}
        return {
            "s_per_100_steps_median_step": round(float(np.median(dt[ok] / dn[ok])) * 100, 2),
            "s_per_100_steps_with_validation": round(
                float((t[-1] - t[0]) / max(n[-1] - n[0], 1)) * 100, 2
            ),
        }


def _card_record(card) -> dict:
    t = card.training
    return {
        "name": card.name,
        "steps": t["steps"],
        "best_step": t["best_step"],
        "stopped": t["stopped"],
        "wall_time_s": t["wall_time_s"],
        "validation_before": card.metrics["validation_before"],
        "validation_after": card.metrics["validation"],
        "validation_after_at_0.5": card.metrics.get("validation_at_0.5"),
        "threshold": card.mask_threshold,
        "annotated_voxels": t["data"]["annotated_voxels"],
        "model_grid_shape": t["data"]["model_grid_shape"],
        "input_policy": t["input_policy"]["summary"],
    }


def _finetune(
    image,
    labels,
    annotated,
    base,
    spacing,
    minutes,
    threads,
    timer,
    name,
    command,
    patience=None,
    painted=None,
    lr=None,
    layers=None,
    steps=None,
    seed=0,
):
    """``finetune`` as the benchmarks run it (CPU, their thread count, a progress timer;
    ``patience``, ``lr`` None: finetune's defaults; ``painted``: the dock's painted
    slices; ``steps``: a step budget instead of ``minutes``, which repeats exactly)."""
    from napari_topo.training.finetune import finetune

    extra = {} if patience is None else {"patience": patience}
    if lr is not None:
        extra["lr"] = lr
    if painted is not None:
        extra["painted"] = painted
    if layers is not None:
        extra["layers"] = layers

    return finetune(
        image,
        labels,
        base,
        annotated=annotated,
        spacing=spacing,
        minutes=None if steps else minutes,
        steps=steps,
        seed=seed,
        device=DEVICE,
        threads=threads,
        progress=timer,
        name=name,
        command=command,
        **extra,
    )


def _score_both(
    base, tuned, image, gt, test, spacing, where: str, tta: int = 1, **settings
) -> dict:
    """Segment ``image`` with the base and the fine-tuned model; scores inside ``test``.

    ``tta`` > 1 scores each model a second time with that many mirrored copies per tile
    (``segment(tta=...)``, the dock's *Mirror* choice), in rows ``"base, tta N"`` and
    ``"fine-tuned, tta N"``.
    """
    import torch

    from napari_topo.inference import segment

    rows = {}
    runs = [("base", base, 1), ("fine-tuned", tuned, 1)]
    if tta > 1:
        runs += [(f"base, tta {tta}", base, tta), (f"fine-tuned, tta {tta}", tuned, tta)]
    for label, model, copies in runs:
        t = time.perf_counter()
        torch.manual_seed(0)
        analysis = segment(image, model, spacing=spacing, device=DEVICE, tta=copies, **settings)
        s = score(analysis.mask, gt, roi=test, spacing=spacing)
        s["segment_wall_s"] = round(time.perf_counter() - t, 1)
        rows[label] = s
        print(
            f"  {label:18s} {where}: Dice {s['Dice']:.3f} clDice {s['clDice']:.3f} "
            f"precision {s['Precision']:.3f} sensitivity {s['Sensitivity']:.3f} "
            f"(segmented {image.shape} in {s['segment_wall_s']:.0f} s)",
            flush=True,
        )
    return rows


def run_case(
    folder: Path,
    minutes: float,
    threads: int,
    results: Path,
    base: str = BASE,
    annotate: str = "upper-slices",
    patience: int | None = None,
    lr: float | None = None,
    layers: str | None = None,
    tta: int = 1,
    save_model: Path | None = None,
    steps: int | None = None,
    seed: int = 0,
) -> dict:
    import torch

    sys.path.insert(0, os.path.join(HERE, "real"))
    from run import load_case

    torch.set_num_threads(threads)
    t_load = time.perf_counter()
    case = load_case(folder)
    meta, spacing = case["meta"], case["spacing"]
    image, gt, roi = case["image"], case["gt"], case["roi"]
    from napari_topo.data.io import read_volume

    liver = np.asarray(read_volume(folder / meta["roi"]["mask"]).data) > 0
    zs = np.flatnonzero(liver.any(axis=(1, 2)))
    mid = (int(zs[0]) + int(zs[-1]) + 1) // 2
    upper = np.zeros(gt.shape, bool)
    upper[mid:] = True
    test = roi & ~upper
    # "lower" trains on the very half it scores: not a user's case but a ceiling, what this
    # network can learn of that half within the budget when shown its labels (finetune
    # holds 20 % of them out to validate and pick the threshold, also from that half)
    annotated = test.copy() if annotate == "lower" else roi & upper
    labels = (gt & annotated).astype(np.uint8)
    what = f"ROI of the {annotate} half ({int(annotated.sum())} voxels, "
    if annotate == "upper-slices":
        # the same labels, no annotated mask: finetune's default region, the slices
        # holding labels, whole (what `napari-topo finetune IMAGE LABELS` does)
        annotated = None
        what = "the slices holding the upper half's labels, whole ("
    print(
        f"{meta.get('data')}/{meta.get('case')}: {image.shape}, spacing {spacing}; liver slices "
        f"{zs[0]}..{zs[-1]}, annotated = {what}{int(labels.sum())} vessel), scored = ROI of slices "
        f"0..{mid - 1} ({int(test.sum())} voxels, {int((gt & test).sum())} vessel); loaded in "
        f"{time.perf_counter() - t_load:.0f} s",
        flush=True,
    )
    mem_loaded = peak_mb()

    timer = Timer("ircadb")
    t0 = time.perf_counter()
    module, card = _finetune(
        image,
        labels,
        annotated,
        base,
        spacing,
        minutes,
        threads,
        timer,
        f"{base}-ft-{meta.get('case', 'case')}",
        f"python benchmarks/bench_finetune.py --case {folder} --minutes {minutes:g} "
        f"--threads {threads} --base {base} --annotate {annotate}"
        + ("" if patience is None else f" --patience {patience}")
        + ("" if lr is None else f" --lr {lr:g}")
        + ("" if layers is None else f" --layers {layers}")
        + ("" if steps is None else f" --steps {steps}")
        + ("" if seed == 0 else f" --seed {seed}"),
        patience=patience,
        lr=lr,
        layers=layers,
        steps=steps,
        seed=seed,
    )
    ft_wall = time.perf_counter() - t0
    mem_ft = peak_mb()
    (results / f"{card.name}.card.json").write_text(card.to_json())  # no weights
    if save_model is not None:  # to rescore it later (segment/evaluate --model DIR)
        from napari_topo.training.finetune import save_finetuned

        print(f"saved the fine-tuned model: {save_finetuned(module, card, save_model).path}")

    # score on the lower half: segment its ROI's bounding box (+16 voxels of context)
    idx = np.nonzero(test)
    box = tuple(
        slice(max(0, int(i.min()) - 16), min(n, int(i.max()) + 17))
        for i, n in zip(idx, test.shape, strict=True)
    )
    crop = np.ascontiguousarray(image[box])
    rows = _score_both(
        base,
        (module, card),
        crop,
        gt[box],
        test[box],
        spacing,
        "lower half",
        tta=tta,
        modality="ct",
    )
    met_by = [
        k
        for k, r in rows.items()
        if k.startswith("fine-tuned") and r["Dice"] >= 0.6 and r["clDice"] >= 0.65
    ]
    return {
        "case": f"{meta.get('data')}/{meta.get('case')}",
        "split": {
            "liver_slices": [int(zs[0]), int(zs[-1])],
            "first_upper_slice": mid,
            "annotated_half": annotate,
        },
        "annotated_voxels": int(card.training["data"]["annotated_voxels"]),
        "annotated_vessel_voxels": int(labels.sum()),
        "scored_voxels": int(test.sum()),
        "finetune_wall_s": round(ft_wall, 1),
        **timer.per_100_steps(),
        "card": _card_record(card),
        "lower_half": rows,
        "scored_crop": [[s.start, s.stop] for s in box],
        "peak_memory_mb": {
            "after_loading": round(mem_loaded),
            "after_finetune": round(mem_ft),
            "after_scoring": round(peak_mb()),
            "gpu_peak": None if gpu_peak_mb() is None else round(gpu_peak_mb()),
        },
        "targets": "Dice >= 0.6, clDice >= 0.65 within 10 min on 2 CPU cores",
        "met": bool(met_by and ft_wall <= 600),  # --steps: met only if it fit in 10 min
        "met_by": met_by,
    }


def corrected_slices(gt: np.ndarray, k: int) -> list[int]:
    """``k`` z-slices a user would correct: evenly spread over the slices holding ground
    truth vessel (centres of ``k`` equal parts), never the stack's first or last slice
    when it has more than two holding vessel."""
    with_vessel = np.flatnonzero(gt.any(axis=(1, 2)))
    if len(with_vessel) > 2:
        with_vessel = with_vessel[(with_vessel > 0) & (with_vessel < gt.shape[0] - 1)]
    k = max(1, min(int(k), len(with_vessel)))
    return sorted({int(with_vessel[int((j + 0.5) * len(with_vessel) / k)]) for j in range(k)})


def run_stack(
    folder: Path,
    minutes: float,
    threads: int,
    results: Path,
    base: str = BASE,
    slices: int | None = None,
    layers: str | None = None,
) -> dict:
    """Fine-tune on the labels of one half of a two-photon stack, score the other half.

    ``folder``: a converted vesselNN case (``benchmarks/real/convert.py vesselnn``). The
    stack is split across x at its middle (its 25 slices are too few, and their labels too
    coarse, to split in z): the labels of ``x < middle`` are the user's annotation; Dice,
    clDice, precision and sensitivity are scored on ``x >= middle``. Both models segment
    the whole stack with the defaults and the stack's spacing, as ``run.py`` does.

    With ``slices`` (``--stack-slices K``), the Fine-tune dock's loop instead: the base
    model's mask (as Segment gives it) with ``K`` z-slices (:func:`corrected_slices`)
    replaced by the ground truth, passed with ``painted=(0, slices)`` as the dock passes
    the slices a user painted; scored on every other slice.
    """
    import torch

    sys.path.insert(0, os.path.join(HERE, "real"))
    from run import load_case

    torch.set_num_threads(threads)
    case = load_case(folder)
    meta, spacing, image, gt = case["meta"], case["spacing"], case["image"], case["gt"]
    painted = None
    if slices is not None:
        from napari_topo.inference import segment

        painted = corrected_slices(gt, slices)
        torch.manual_seed(0)
        labels = np.asarray(segment(image, base, spacing=spacing, device=DEVICE).mask, np.uint8)
        labels[painted] = gt[painted]
        annotated = None
        test = np.ones(gt.shape, bool)
        test[painted] = False
        split = f"corrected z-slices {painted} of the base model's mask, scored on the others"
        where = "other slices"
    else:
        mid = gt.shape[2] // 2
        annotated = np.zeros(gt.shape, bool)
        annotated[:, :, :mid] = True
        test = ~annotated
        labels = (gt & annotated).astype(np.uint8)
        split = f"annotated x < {mid}, scored x >= {mid}"
        where = "other half"
    print(
        f"{meta.get('data')}/{meta.get('case')}: {image.shape}, spacing {spacing}; {split} "
        f"({int((gt & test).sum())} vessel voxels scored)",
        flush=True,
    )
    timer = Timer(str(meta.get("case")))
    t0 = time.perf_counter()
    module, card = _finetune(
        image,
        labels,
        annotated,
        base,
        spacing,
        minutes,
        threads,
        timer,
        f"{base}-ft-{meta.get('case', 'stack')}",
        f"python benchmarks/bench_finetune.py --stack {folder} --minutes {minutes:g} "
        f"--threads {threads} --base {base}"
        + (f" --stack-slices {slices}" if slices else "")
        + (f" --layers {layers}" if layers else ""),
        painted=None if painted is None else (0, painted),
        layers=layers,
    )
    ft_wall = time.perf_counter() - t0
    (results / f"{card.name}.card.json").write_text(card.to_json())
    rows = _score_both(base, (module, card), image, gt, test, spacing, where)
    return {
        "case": f"{meta.get('data')}/{meta.get('case')}",
        "split": split,
        "annotated_vessel_voxels": int((labels > 0).sum())
        if painted is None
        else int((labels[painted] > 0).sum()),
        "finetune_wall_s": round(ft_wall, 1),
        **timer.per_100_steps(),
        "card": _card_record(card),
        "other_half": rows,
        "peak_memory_mb": round(peak_mb()),
        "gpu_peak_memory_mb": None if gpu_peak_mb() is None else round(gpu_peak_mb()),
    }


def run_tubes(
    minutes: float,
    threads: int,
    results: Path,
    seed: int = 0,
    base: str = BASE,
    layers: str | None = None,
) -> dict:
    import torch

    from napari_topo.inference import segment
    from napari_topo.topology.metrics import dice, precision, recall
    from napari_topo.training.finetune import finetune

    torch.set_num_threads(threads)
    vol = four_tubes(seed)
    with_tubes = np.flatnonzero(vol.mask.any(axis=(1, 2)))
    painted = sorted({int(v) for v in np.round(np.linspace(with_tubes[0], with_tubes[-1], 8))})
    labels = np.zeros(vol.mask.shape, np.uint8)
    labels[painted] = vol.mask[painted]
    rest = np.ones(vol.mask.shape[0], bool)
    rest[painted] = False
    # Some of the 8 slices hold no tube: painting nothing there cannot be seen in the
    # labels, so the user says which slices were labelled (--annotated in the CLI).
    annotated = np.zeros(vol.mask.shape, bool)
    annotated[painted] = True
    print(f"four tubes: {vol.image.shape} {vol.image.dtype}; labelled z-slices {painted}")
    timer = Timer("tubes")
    t0 = time.perf_counter()
    module, card = finetune(
        vol.image,
        labels,
        base,
        annotated=annotated,
        minutes=minutes,
        device=DEVICE,
        threads=threads,
        progress=timer,
        name=f"{base}-ft-four-tubes",
        **({} if layers is None else {"layers": layers}),
    )
    ft_wall = time.perf_counter() - t0
    (results / f"{card.name}.card.json").write_text(card.to_json())
    rows = {}
    for label, model in (("base", base), ("fine-tuned", (module, card))):
        t = time.perf_counter()
        torch.manual_seed(0)
        analysis = segment(vol.image, model, device=DEVICE)
        p, g = analysis.mask[rest], vol.mask[rest]
        rows[label] = {
            "Precision": precision(p, g),
            "Sensitivity": recall(p, g),
            "Dice": dice(p, g),
            "trees": int(analysis.result.n_trees),
            "segment_wall_s": round(time.perf_counter() - t, 1),
        }
        print(
            f"  {label:10s} other slices: precision {rows[label]['Precision']:.3f} sensitivity "
            f"{rows[label]['Sensitivity']:.3f} Dice {rows[label]['Dice']:.3f}",
            flush=True,
        )
    return {
        "painted_slices": painted,
        "finetune_wall_s": round(ft_wall, 1),
        **timer.per_100_steps(),
        "card": _card_record(card),
        "other_slices": rows,
        "peak_memory_mb": round(peak_mb()),
        "gpu_peak_memory_mb": None if gpu_peak_mb() is None else round(gpu_peak_mb()),
        "target": "precision >= 0.95 on the other slices",
        "met": bool(rows["fine-tuned"]["Precision"] >= 0.95),
    }


def _score_table(rows: dict) -> list[str]:
    """Markdown rows of the base and fine-tuned scores."""
    lines = [
        "| model | Dice | clDice | precision | sensitivity | segment (s) |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        lines.append(
            f"| {label} | {r['Dice']:.3f} | {r['clDice']:.3f} | {r['Precision']:.3f} | "
            f"{r['Sensitivity']:.3f} | {r['segment_wall_s']:.0f} |"
        )
    return lines


def markdown(report: dict) -> str:
    lines = [f"# Fine-tuning benchmark ({report['date']}, {report['platform']})", ""]
    case = report.get("case")
    if case:
        lines += [
            f"## {case['case']}: fine-tuned on the {case['split']['annotated_half']} half of the "
            "liver, scored on the lower"
            + (
                " (a ceiling: trained on the scored half)"
                if case["split"]["annotated_half"] == "lower"
                else ""
            ),
            "",
            *_score_table(case["lower_half"]),
        ]
        c = case["card"]
        ceiling = case["split"].get("annotated_half") == "lower"
        held_out = (
            "20 % of the labelled part, itself part of the scored one: optimistic"
            if ceiling
            else "20 % of the labelled part, not the scored one"
        )
        lines += [
            "",
            f"Fine-tune: {case['finetune_wall_s']:.0f} s, {c['steps']} steps "
            f"(best {c['best_step']}; {c['stopped']}), "
            f"{case.get('s_per_100_steps_with_validation', '?')} s per 100 "
            f"steps; held-out validation Dice ({held_out}) "
            f"{c['validation_before']['Dice']:.3f} -> "
            f"{c['validation_after']['Dice']:.3f} (mask threshold {c.get('threshold', 0.5):g}); "
            "peak memory (MiB) "
            + ", ".join(f"{k} {v}" for k, v in case["peak_memory_mb"].items() if v is not None)
            + "; targets (Dice >= 0.6, clDice >= 0.65, fine-tune within 10 min) met: "
            f"{case['met']}.",
            "",
        ]
    for stack in report.get("stacks", []):
        lines += [
            f"## {stack['case']}: fine-tuned on part of the stack ({stack['split']})",
            "",
            *_score_table(stack["other_half"]),
        ]
        c = stack["card"]
        lines += [
            "",
            f"Fine-tune: {stack['finetune_wall_s']:.0f} s, {c['steps']} steps "
            f"(best {c['best_step']}; {c['stopped']}); held-out validation Dice "
            "(20 % of the annotation) "
            f"{c['validation_before']['Dice']:.3f} -> {c['validation_after']['Dice']:.3f} "
            f"(mask threshold {c.get('threshold', 0.5):g}); "
            f"peak memory {stack['peak_memory_mb']} MiB.",
            "",
        ]
    tubes = report.get("tubes")
    if tubes:
        lines += [
            "## Four tubes (issue 9): 8 z-slices labelled, scored on the others",
            "",
            "| model | precision | sensitivity | Dice | trees |",
            "|---|---|---|---|---|",
        ]
        for label, r in tubes["other_slices"].items():
            lines.append(
                f"| {label} | {r['Precision']:.3f} | {r['Sensitivity']:.3f} | {r['Dice']:.3f} "
                f"| {r['trees']} |"
            )
        c = tubes["card"]
        lines += [
            "",
            f"Fine-tune: {tubes['finetune_wall_s']:.0f} s, {c['steps']} steps; "
            f"{tubes.get('s_per_100_steps_with_validation', '?')} s per 100 steps; target met: "
            f"{tubes['met']}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from napari_topo.training.finetune import DEFAULT_LR, LAYERS  # numpy only: torch stays lazy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", type=Path, help="a converted 3D-IRCADb case folder (meta.json)")
    ap.add_argument(
        "--minutes", type=float, default=10.0, help="fine-tune budget for the case (default 10)"
    )
    ap.add_argument("--tube-minutes", type=float, default=2.0, help="budget for the four tubes")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument("--results", type=Path, default=Path("/work/results/finetune"))
    ap.add_argument(
        "--stack",
        type=Path,
        action="append",
        default=[],
        help="a converted vesselNN stack folder (repeatable): fine-tuned on one half, "
        "scored on the other",
    )
    ap.add_argument("--stack-minutes", type=float, default=5.0, help="budget per stack")
    ap.add_argument(
        "--stack-slices",
        type=int,
        default=None,
        help="the dock's loop on each stack: K z-slices of the base model's mask "
        "corrected (set to the ground truth) and painted; scored on the other slices",
    )
    ap.add_argument("--skip-tubes", action="store_true")
    ap.add_argument("--base", default=BASE, help=f"the shipped model to fine-tune (default {BASE})")
    ap.add_argument(
        "--annotate",
        choices=("upper-slices", "upper", "lower"),
        default="upper-slices",
        help="which half of the case's liver is labelled: upper-slices (default, the "
        "user's case: the upper half's labels inside the liver + 10 mm, the slices holding "
        "them whole as finetune's default region), upper (the same labels, the annotated "
        "region cut to the liver + 10 mm), lower (trains on the scored half itself: a "
        "ceiling, not a result)",
    )
    ap.add_argument(
        "--patience",
        type=int,
        default=None,
        help="validations without progress before the case's fine-tune stops early "
        "(default: finetune's own, 8)",
    )
    ap.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate of the case's fine-tune (default: finetune's own, "
        f"{DEFAULT_LR:g}; with --layers all or decoder)",
    )
    ap.add_argument(
        "--layers",
        choices=LAYERS,
        default=BENCH_LAYERS,
        help=f"what every fine-tune trains (default {BENCH_LAYERS}: the voxel classifier the "
        "targets are reported with; all: every weight of the network, with the base "
        "model's own loss; finetune's own default, auto, is head on a U-Net)",
    )
    ap.add_argument(
        "--tta",
        type=int,
        choices=(1, 2, 4, 8),
        default=1,
        help="also score the case with this many mirrored copies per tile (segment's tta)",
    )
    ap.add_argument(
        "--save-model",
        type=Path,
        default=None,
        help="write the case's fine-tuned model (.safetensors + card) to this folder",
    )
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="a step budget for the case instead of --minutes: the run repeats exactly "
        "(under a time budget the network's learning-rate schedule and each budget's "
        "stopping point follow the clock)",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the case's fine-tune (sampling, augmentation, validation patches)",
    )
    ap.add_argument(
        "--device",
        default="cpu",
        help="where fine-tuning and segmenting run: cpu (default) or cuda; on CUDA the "
        "peak GPU memory is reported beside the resident memory",
    )
    args = ap.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if args.lr is not None and not args.lr > 0:
        ap.error(f"--lr must be above 0; got {args.lr:g}")
    if args.lr is not None and args.layers == "head":
        ap.error("--lr sets the network's learning rate: add --layers all (or decoder)")
    if args.steps is not None and args.steps < 1:
        ap.error(f"--steps must be at least 1; got {args.steps}")
    if args.stack_slices is not None and args.stack_slices < 1:
        ap.error(f"--stack-slices must be at least 1; got {args.stack_slices}")
    args.results.mkdir(parents=True, exist_ok=True)
    import torch

    gpu = (
        f", {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
        if DEVICE.startswith("cuda")
        else ""
    )
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "platform": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{args.threads} threads{gpu}",
        "device": DEVICE,
        "command": " ".join(["python", "benchmarks/bench_finetune.py", *(argv or sys.argv[1:])]),
        # what the command ran, defaults included (they changed on 2026-12-04)
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    out = args.results / "finetune.json"
    if not args.skip_tubes:
        report["tubes"] = run_tubes(
            args.tube_minutes, args.threads, args.results, base=args.base, layers=args.layers
        )
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.case is not None:
        report["case"] = run_case(
            args.case,
            args.minutes,
            args.threads,
            args.results,
            base=args.base,
            annotate=args.annotate,
            patience=args.patience,
            lr=args.lr,
            layers=args.layers,
            tta=args.tta,
            save_model=args.save_model,
            steps=args.steps,
            seed=args.seed,
        )
    for folder in args.stack:
        report.setdefault("stacks", []).append(
            run_stack(
                folder,
                args.stack_minutes,
                args.threads,
                args.results,
                base=args.base,
                slices=args.stack_slices,
                layers=args.layers,
            )
        )
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.results / "finetune.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out} and {args.results / 'finetune.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
