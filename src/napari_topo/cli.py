"""The ``napari-topo`` command line.

``napari-topo demo`` builds a synthetic vessel volume, injects the mistakes segmentation
models make (a broken vessel, a false bridge between trees, spurious blobs) and prints
what each metric and loss says about them: the headless "main job" of the README.

Errors the user can fix are reported as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from . import __version__
from .evaluation import TABLE_COLUMNS

#: The metric columns of the demo: the segmentation and topology part of the model table.
DEMO_METRICS = TABLE_COLUMNS[:8]


def _format_table(rows: list[tuple[str, dict]], columns) -> str:
    first = max(len("case"), *(len(name) for name, _ in rows))
    widths = [max(len(c), 7) for c in columns]
    lines = [
        "case".ljust(first)
        + "  "
        + "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))
    ]
    for name, values in rows:
        cells = []
        for c, w in zip(columns, widths, strict=True):
            v = values.get(c, float("nan"))
            counts = "error" in c or c == "CCE 3D"
            cells.append((f"{v:.0f}" if counts and float(v).is_integer() else f"{v:.3f}").rjust(w))
        lines.append(name.ljust(first) + "  " + "  ".join(cells))
    return "\n".join(lines)


def demo_cases(size: int = 64, seed: int = 0):
    """The demo's ground truth and its flawed predictions: ``(volume, [(name, mask), ...])``."""
    from .data.perturb import add_spurious_blobs, break_vessel, bridge_trees
    from .data.synthetic import make_vessel_volume

    vol = make_vessel_volume(shape=(size,) * 3, n_trees=2, seed=seed)
    radius_vox = vol.radius / min(vol.spacing)
    cases = [
        ("perfect", vol.mask),
        (
            "broken vessel",
            break_vessel(vol.mask, vol.centerline, radius_vox, min_radius=1.5, rng=seed),
        ),
        ("false bridge", bridge_trees(vol.trees)),
        ("spurious blobs", add_spurious_blobs(vol.mask, n=6, rng=seed)),
    ]
    return vol, cases


def run_demo(size: int = 64, seed: int = 0, out=sys.stdout) -> list[tuple[str, dict]]:
    """Print metrics and losses of each demo case; return the metric rows."""
    import torch

    from .topology.losses import (
        ProjectedPoolingLoss,
        SkeletonIterationWarning,
        SoftclDiceLoss,
        SoftDiceLoss,
    )
    from .topology.metrics import compute_metrics

    t0 = time.perf_counter()
    vol, cases = demo_cases(size, seed)
    print(
        f"napari-topo {__version__} demo: synthetic volume {vol.shape}, {vol.n_trees} trees, "
        f"{int(vol.mask.sum())} vessel voxels (seed {seed}, built in "
        f"{time.perf_counter() - t0:.1f} s)\n",
        file=out,
    )
    rows, loss_rows = [], []
    target = torch.from_numpy(vol.mask.astype("float32"))[None, None]
    iterations = int(max(1, round(float(vol.radius.max()) / min(vol.spacing)))) + 1
    losses = {
        "soft Dice": SoftDiceLoss(),
        "soft clDice": SoftclDiceLoss(iterations),
        "proj. pooling": ProjectedPoolingLoss(lambda_dice=0.0),
    }
    for name, mask in cases:
        rows.append((name, compute_metrics(mask, vol.mask, spacing=vol.spacing)))
        pred = torch.from_numpy(mask.astype("float32"))[None, None]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SkeletonIterationWarning)
            loss_rows.append((name, {k: float(f(pred, target)) for k, f in losses.items()}))
    print("Metrics of each prediction against the ground truth:", file=out)
    print(_format_table(rows, DEMO_METRICS), file=out)
    print("\nLosses (prediction as probabilities; 0 is perfect):", file=out)
    print(_format_table(loss_rows, list(losses)), file=out)
    print(
        "\nDice barely moves for a broken vessel or a bridge; clDice, the Betti/Euler "
        "errors and the CCEs flag them.",
        file=out,
    )
    print(f"Done in {time.perf_counter() - t0:.1f} s.", file=out)
    return rows


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``napari-topo``."""
    parser = argparse.ArgumentParser(
        prog="napari-topo",
        description="Topology-aware segmentation of tubular structures (headless tools).",
    )
    parser.add_argument("--version", action="version", version=f"napari-topo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="metrics and losses on built-in synthetic data")
    demo.add_argument("--size", type=int, default=64, help="edge of the cubic volume (>= 32)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic volume")
    train = sub.add_parser("train", help="train a model from a config (seeded, resumable)")
    train.add_argument(
        "--config",
        required=True,
        help="a YAML config file, or the name of a shipped config (e.g. unet-cldice)",
    )
    train.add_argument("--out", help="output directory (default: runs/<name>)")
    train.add_argument("--steps", type=int, help="override the config's number of steps")
    sub.add_parser("models", help="list the pretrained models and their cards")
    ev = sub.add_parser("evaluate-models", help="score models on the synthetic test set")
    ev.add_argument("names", nargs="*", help="models (default: every installed model)")
    ev.add_argument("--volumes", type=int, default=10, help="test volumes (default 10)")
    ev.add_argument("--size", type=int, default=96, help="edge of each cubic test volume")
    ev.add_argument("--out", default="benchmarks/results", help="folder for the JSON/Markdown")
    ev.add_argument(
        "--update-cards",
        action="store_true",
        help="also write the test summary into each model's card",
    )
    return parser


def _train(args) -> None:
    from .training.train import load_config, train

    cfg = load_config(args.config, steps=args.steps)
    command = f"napari-topo train --config {args.config}" + (
        f" --steps {args.steps}" if args.steps else ""
    )
    train(cfg, args.out or f"runs/{cfg.name}", command=command)


def _evaluate_models(args) -> None:
    from .evaluation import evaluate_models as run
    from .evaluation import format_table, write_results

    results = run(args.names or None, n_volumes=args.volumes, shape=(args.size,) * 3)
    js, md = write_results(results, args.out)
    print(format_table(results))
    print(f"wrote {js} and {md}")
    if args.update_cards:
        from .models.registry import get_card

        for name, res in results.items():
            card = get_card(name)
            card.metrics["test"] = {"summary": res["summary"], **res["test_set"]}
            card.to_json(card.path)
            print(f"updated {card.path}")


def _models() -> None:
    from .models.registry import list_models

    cards = list_models()
    if not cards:
        print("no pretrained models are installed")
    for card in cards:
        val = card.metrics.get("validation", {}) if isinstance(card.metrics, dict) else {}
        scores = ", ".join(f"{k} {val[k]:.3f}" for k in ("Dice", "clDice") if k in val)
        print(
            f"{card.name:<16} {card.architecture:<8} {card.summary}"
            + (f" [{scores}]" if scores else "")
        )


def main(argv=None) -> int:
    """Entry point of the ``napari-topo`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            if args.size < 32:
                raise ValueError(f"--size must be at least 32, got {args.size}")
            run_demo(args.size, args.seed)
        elif args.command == "train":
            _train(args)
        elif args.command == "evaluate-models":
            _evaluate_models(args)
        elif args.command == "models":
            _models()
    except (ValueError, FileNotFoundError) as exc:
        print(f"napari-topo: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
