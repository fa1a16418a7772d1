"""Evaluate the shipped models on a fixed synthetic test set: the evidence behind the README.

``napari-topo evaluate-models`` runs every registered model (or the ones named) on the
held-out synthetic test set (:func:`napari_topo.data.synthetic.test_set`, regenerated from
its seeds, never used in training or validation) through the same
:func:`~napari_topo.inference.pipeline.predict` a user runs, and measures:

- the segmentation and topology metrics of :func:`~napari_topo.topology.metrics.compute_metrics`
  (Dice, clDice, Betti errors, Euler error, 2D/3D CCE, HD95);
- tree labelling, with the ground-truth sources given (as a user clicks them): the
  fraction of ground-truth centerline voxels given the right tree, and the number of
  label switches along ground-truth centerline edges. TopNet reconstructs its trees from
  its own centerness (5x5x5 NMS) and embedding (edges within distance 2); every model is
  also scored with the embedding-free baseline, the multi-source Dijkstra on the
  skeleton of its mask (:func:`~napari_topo.trees.reconstruct.trees_from_skeleton`).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["evaluate_models", "format_table", "summarize"]

TABLE_COLUMNS = (
    "Dice",
    "clDice",
    "Betti-0 error",
    "Betti-1 error",
    "Euler error",
    "CCE 3D",
    "CCE 2D",
    "HD95",
    "Tree accuracy (skeleton)",
    "Label switches (skeleton)",
    "Tree accuracy (TopNet)",
    "Label switches (TopNet)",
    "Tree accuracy (TopNet, skeleton graph)",
    "Label switches (TopNet, skeleton graph)",
)


def _tree_scores(
    outputs: dict, vol, threshold: float, min_size: int = 0, centerline: str = "skeleton"
) -> tuple[float, float]:
    """Tree accuracy and label switches of the trees a user would get from ``outputs``.

    Goes through :meth:`VesselAnalysis.from_outputs` with the true sources: TopNet's
    centerness NMS + embedding graph when ``outputs`` has an embedding, the skeleton
    baseline otherwise. An empty mask, or one whose reconstruction cannot place the
    sources (e.g. fewer centerline points than sources), scores 0 with no switch count;
    the latter with a ``RuntimeWarning`` naming the volume and the reason.
    """
    from .analysis import VesselAnalysis
    from .topology.metrics import tree_accuracy
    from .trees.reconstruct import label_switches

    if not (outputs["vessel"] > threshold).any():
        return 0.0, float("nan")
    try:
        analysis = VesselAnalysis.from_outputs(
            outputs,
            threshold=threshold,
            sources=vol.sources,
            spacing=vol.spacing,
            min_size=min_size,
            centerline=centerline,
        )
    except ValueError as err:
        # the sources cannot be placed (no centerline point, two roots on one point):
        # scored 0, and said, so that a bug raising ValueError is not a quiet 0
        warnings.warn(
            f"tree accuracy of volume seed {getattr(vol, 'seed', '?')} scored 0: {err}",
            RuntimeWarning,
            stacklevel=2,
        )
        return 0.0, float("nan")
    return (
        float(tree_accuracy(analysis.trees, vol.trees, centerline=vol.centerline)),
        float(label_switches(analysis.trees, vol.graph)),
    )


def evaluate_volume(
    model, vol, *, threshold: float = 0.5, tile=(64, 64, 64), min_size: int = 0
) -> dict:
    """All scores of one ``(module, card)`` model on one synthetic volume.

    ``min_size`` > 0 drops mask pieces under that many voxels first, as
    :func:`napari_topo.inference.pipeline.segment` does (0: the raw model).
    """
    from .inference.pipeline import predict
    from .topology.metrics import compute_metrics

    out = predict(vol.image, model, tile=tile, device="cpu")
    mask = out["vessel"] > threshold
    if min_size > 1:
        from . import _cc3d as cc3d

        mask = cc3d.dust(mask, threshold=int(min_size), connectivity=26)
    row = {
        k: v
        for k, v in compute_metrics(mask, vol.mask, spacing=vol.spacing).items()
        if k != "Tree accuracy"
    }
    scores = _tree_scores({"vessel": out["vessel"]}, vol, threshold, min_size)
    row["Tree accuracy (skeleton)"], row["Label switches (skeleton)"] = scores
    if "embedding" in out:
        # the paper's procedure (NMS centre voxels), then the pipeline's default
        row["Tree accuracy (TopNet)"], row["Label switches (TopNet)"] = _tree_scores(
            out, vol, threshold, min_size, centerline="nms"
        )
        (
            row["Tree accuracy (TopNet, skeleton graph)"],
            row["Label switches (TopNet, skeleton graph)"],
        ) = _tree_scores(out, vol, threshold, min_size)
    return row


def summarize(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation and count of each metric over volumes (NaN left out)."""
    out = {}
    for key in rows[0]:
        values = np.array([r.get(key, np.nan) for r in rows], dtype=float)
        finite = values[np.isfinite(values)]
        out[key] = {
            "mean": float(finite.mean()) if finite.size else None,
            "std": float(finite.std()) if finite.size else None,
            "n": int(finite.size),
        }
    return out


def evaluate_models(
    names: Sequence[str] | None = None,
    *,
    n_volumes: int = 10,
    shape: Sequence[int] = (96, 96, 96),
    base_seed: int = 10_000,
    threshold: float = 0.5,
    min_size: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Evaluate models on the synthetic test set; ``{name: {"summary", "volumes"}}``."""
    from .data.synthetic import test_set
    from .models.registry import list_models, load_model

    if n_volumes < 1:
        raise ValueError(f"n_volumes must be >= 1, got {n_volumes}")
    names = list(names) if names else [c.name for c in list_models()]
    if not names:
        raise ValueError("no models to evaluate: none is installed and none was named")
    models = {name: load_model(name) for name in names}
    volumes = test_set(n=n_volumes, shape=tuple(shape), base_seed=base_seed)
    results: dict[str, dict] = {name: {"volumes": []} for name in names}
    for i in range(n_volumes):
        vol = volumes[i]
        for name, model in models.items():
            t0 = time.perf_counter()
            row = evaluate_volume(model, vol, threshold=threshold, min_size=min_size)
            results[name]["volumes"].append(row)
            log(
                f"[{name}] test volume {i + 1}/{n_volumes} (seed {vol.seed}): Dice "
                f"{row['Dice']:.3f} clDice {row['clDice']:.3f} Betti-0 err "
                f"{row['Betti-0 error']:.0f} ({time.perf_counter() - t0:.1f} s)"
            )
    for name in names:
        results[name]["summary"] = summarize(results[name]["volumes"])
        results[name]["test_set"] = {
            "n_volumes": n_volumes,
            "shape": list(shape),
            "base_seed": base_seed,
            "threshold": threshold,
            "min_size": min_size,
        }
    return results


def format_table(results: dict[str, dict], columns=TABLE_COLUMNS) -> str:
    """A Markdown table of mean ± std per model."""
    cols = [c for c in columns if any(c in r["summary"] for r in results.values())]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, res in results.items():
        cells = []
        for c in cols:
            s = res["summary"].get(c)
            if not s or s["mean"] is None:
                cells.append("–")
            else:
                cells.append(f"{s['mean']:.3f} ± {s['std']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(results: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``model_comparison.json`` (every volume) and ``model_comparison.md``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / "model_comparison.json", out_dir / "model_comparison.md"

    def clean(x):
        if isinstance(x, float) and not np.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    js.write_text(json.dumps(clean(results), indent=1, sort_keys=True))
    any_res = next(iter(results.values()))["test_set"]
    md.write_text(
        f"Synthetic test set: {any_res['n_volumes']} volumes of {any_res['shape']} "
        f"(seeds {any_res['base_seed']}..{any_res['base_seed'] + any_res['n_volumes'] - 1}), "
        f"threshold {any_res['threshold']}"
        + (
            f", mask pieces under {any_res['min_size']} voxels dropped"
            if any_res.get("min_size")
            else ""
        )
        + "; mean ± std over volumes.\n\n"
        + format_table(results)
        + "\n"
    )
    return js, md
