"""The ``napari-topo`` command line.

* ``demo``: builds a synthetic vessel volume, shows what each metric and loss says about
  the mistakes segmentation models make (a broken vessel, a false bridge, spurious
  blobs), then runs the whole pipeline (model, mask, skeleton, trees) on it and scores
  what it found against the generator's ground truth: the README's "main job".
* ``segment INPUT --out DIR``: a volume file (NIfTI, TIFF, NumPy, zarr) to probability,
  mask, skeleton, vessel trees and the vessel graph; ``--gt`` adds the metrics table.
  ``--modality``, ``--window``, ``--polarity`` and ``--zoom`` override the input policy
  (:mod:`napari_topo.inference.intensity`: a CT in HU is windowed, other images scaled by
  percentiles, dark vessels inverted, the zoom chosen from the spacing or the vessel
  size); one ``input: ...`` line says what was chosen.
  ``--format ome-zarr`` (the default for an OME-Zarr input) streams instead: probability,
  mask, skeleton and tree labels written chunk by chunk as OME-Zarr pyramids, nothing of
  volume size in memory (:mod:`napari_topo.inference.chunked`); trees are the connected
  pieces of the mask named by ``--sources``, and no graph is written on that path.
  ``--workers N`` (a LocalCluster here) or ``--scheduler ADDRESS`` runs its network and
  the skeleton's thinning on a dask.distributed cluster
  (:mod:`napari_topo.inference.distributed`).
* ``evaluate PRED GT [--out DIR]``: the metrics table of a segmentation, written as JSON and
  CSV (``<PRED stem>_metrics.json``/``.csv``, in DIR or beside PRED).
* ``models``, ``train``, ``evaluate-models``: the pretrained models.
* ``finetune IMAGE LABELS``: fine-tune a model on your own (corrected, possibly sparse)
  labels and save it where ``models`` and ``segment --model`` find it.

Geometry (:mod:`napari_topo.geometry`): every volume ``segment`` writes carries the
input's affine, axes and unit (NIfTI qform/sform codes too), so it overlays the scan;
``evaluate`` and ``segment --gt`` compare two volumes in world space, reordering one onto
the other's grid when they differ by axis flips or permutations only, and refuse with
one line naming the difference (orientation, spacing, shape, origin) otherwise. A file
with several channels, time points or RGB samples needs ``--channel``.

Errors the user can fix (missing file, 2D or RGB input, several channels, NaN voxels, an
empty volume, a ground truth on another grid, an unknown model, tampered weights) are
reported as one line on stderr with exit status 2; an interrupted run exits with 130 and
writes nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

from . import __version__
from .evaluation import TABLE_COLUMNS
from .geometry import METRES_PER_UNIT
from .training.finetune import DEFAULT_LAYERS, LAYERS

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


def run_demo(
    size: int = 64, seed: int = 0, out=sys.stdout, model: str | None = None
) -> list[tuple[str, dict]]:
    """Print metrics and losses of each demo case, then segment the volume with ``model``.

    Returns the metric rows: the demo cases, then ``("<model> segmentation", metrics)``
    (with ``"Tree accuracy"``) unless ``model`` is ``""``.
    """
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
        "\nA one-voxel break or bridge hardly moves Dice or clDice (both are voxel "
        "overlaps), nor the soft losses; the Betti/Euler errors and the CCEs count each "
        "one.",
        file=out,
    )
    if model != "":
        rows.append(_demo_segmentation(vol, model, out))
    print(f"\nDone in {time.perf_counter() - t0:.1f} s.", file=out)
    return rows


def _demo_segmentation(vol, model: str | None, out) -> tuple[str, dict]:
    """Run the shipped model on the demo volume; print what it found and how right it is."""
    from .inference.pipeline import DEFAULT_MODEL, segment
    from .topology.metrics import compute_metrics

    name = model or DEFAULT_MODEL
    t = time.perf_counter()
    analysis = segment(vol.image, name, spacing=vol.spacing, device="auto")
    took = time.perf_counter() - t
    summary = analysis.summary()
    metrics = compute_metrics(analysis.mask, vol.trees, spacing=vol.spacing, labels=analysis.trees)
    print(
        f"\nThe whole pipeline with the pretrained model {name!r} ({took:.1f} s): "
        f"{summary['n_voxels']} vessel voxels, {summary['n_branches']} branches, "
        f"{summary['n_points']} centerline points, {summary['n_trees']} trees "
        f"(sources found automatically; the generator made {vol.n_trees}).",
        file=out,
    )
    for tree in summary["trees"]:
        print(
            f"  tree {tree['id']}: {tree['n_voxels']} voxels, "
            f"centerline length {tree['length']:.0f}",
            file=out,
        )
    row = (f"{name} segmentation", metrics)
    columns = [*DEMO_METRICS, "Tree accuracy"] if "Tree accuracy" in metrics else DEMO_METRICS
    print("Against the generator's ground truth:", file=out)
    print(_format_table([row], columns), file=out)
    return row


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error style: one line, what to do, exit status 2.

    argparse's own ``error`` prints the whole usage block before the message; a user
    who mistyped one option reads one line that names it and where the usage is.
    """

    def error(self, message: str):  # noqa: D102 (argparse API)
        raise _UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


class _UsageError(Exception):
    """A command line argparse refused; :func:`main` prints it and returns 2."""


def _unknown_options(parser: argparse.ArgumentParser, args, extra: list[str]) -> None:
    """Refuse ``extra`` through the subcommand's parser (its help is the one to read),
    with the nearest option when one is close (``--treshold`` -> ``--threshold``)."""
    import difflib

    sub = parser
    for action in parser._actions:  # argparse keeps its subparsers here only
        if isinstance(action, argparse._SubParsersAction):
            sub = action.choices.get(getattr(args, "command", None), parser)
    options = [o for a in sub._actions for o in a.option_strings]
    hint = ""
    first = next((e for e in extra if e.startswith("-")), None)
    if first is not None:
        close = difflib.get_close_matches(first.split("=")[0], options, n=1, cutoff=0.7)
        hint = f"; did you mean {close[0]}?" if close else ""
    sub.error(f"unrecognized arguments: {' '.join(extra)}{hint}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``napari-topo``."""
    parser = _Parser(
        prog="napari-topo",
        description="Topology-aware segmentation of tubular structures (headless tools).",
    )
    parser.add_argument("--version", action="version", version=f"napari-topo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="metrics and losses on built-in synthetic data")
    demo.add_argument("--size", type=int, default=64, help="edge of the cubic volume (>= 32)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic volume")
    demo.add_argument(
        "--model", help="model of the pipeline part (default: unet-dice, see the README)"
    )
    demo.add_argument(
        "--gui",
        action="store_true",
        help="open napari with the sample volume and the three widgets docked instead",
    )
    seg = sub.add_parser(
        "segment",
        help="segment a volume file: probability, mask, skeleton, trees and vessel graph",
        description=(
            "Segment INPUT (.nii, .nii.gz, .tif, .tiff, .npy, .npz, .zarr; read only: a "
            "folder of DICOM files or a CD export holding one, .nrrd, .nhdr, .mha, .mhd) "
            "with a pretrained model and write the probability, mask, skeleton and tree "
            "labels (in --format) and the vessel graph (GraphML, SWC, CSV) to --out."
        ),
    )
    seg.add_argument(
        "input", help="volume file (z, y, x), or a DICOM series' folder (--key picks a series)"
    )
    seg.add_argument("--out", required=True, help="output folder (created if missing)")
    seg.add_argument("--model", help="registry name or .safetensors path (default: unet-dice)")
    seg.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu")
    seg.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help=(
            "network arithmetic: auto (default: float16 on CUDA, bfloat16 on a CPU with "
            "native bfloat16 except for TopNet, else float32), float32, bfloat16 or "
            "float16 (CUDA)"
        ),
    )
    seg.add_argument("--tile", type=int, default=64, help="tile edge in voxels (default 64)")
    seg.add_argument("--overlap", type=float, default=0.25, help="tile overlap (default 0.25)")
    seg.add_argument("--batch-size", type=int, default=2, help="tiles per batch (default 2)")
    seg.add_argument(
        "--tta",
        type=int,
        default=1,
        choices=(1, 2, 4, 8),
        help="test-time mirroring: average the predictions of 2, 4 or 8 mirrored copies of "
        "each tile (that many times the network time; default 1, off)",
    )
    seg.add_argument(
        "--empty-tiles",
        choices=("skip", "run"),
        default="skip",
        help="skip (default): the network is not run on a tile that holds nothing but "
        "white noise or is constant (the air around a body); its voxels get probability 0 "
        "unless a tile that ran covers them. Each tile is normalised on its own inside "
        "the networks, so noise alone can look like vessel. A thin vessel at the edge of "
        "visibility (radius 1 voxel, about 1.5 noise standard deviations) can fall in a "
        "skipped tile and is then cut there: run every tile with 'run'",
    )
    seg.add_argument(
        "--threshold",
        type=float,
        help="mask threshold on the vessel probability (default: the model's own: 0.5 for "
        "the shipped models, the one a fine-tuned model chose on your held-out labels)",
    )
    seg.add_argument(
        "--min-size",
        type=int,
        help="drop mask pieces (26-connected) smaller than this many voxels (default: the "
        "model's own: 64 for topnet, 32 for the others; 0 keeps all)",
    )
    seg.add_argument(
        "--sources",
        help="CSV of tree roots, one row per tree: world coordinates (z_physical,y_physical,"
        "x_physical: napari-topo's Points writer and _graph.csv), napari's own Points CSV "
        "(axis-0,axis-1,axis-2: the image layer's voxels as napari-topo's reader shows it) "
        "or z,y,x voxel indices of INPUT (see --sources-space)",
    )
    seg.add_argument(
        "--sources-space",
        choices=SOURCES_SPACES,
        default="auto",
        help="what the --sources coordinates are: auto (default: by the columns, as "
        "above), world (physical, the input's unit, z y x order), napari (voxels of the "
        "image as napari-topo's reader shows it: flipped/transposed to +z+y+x) or voxel "
        "(indices into INPUT's array, z y x)",
    )
    seg.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="voxel size in z y x order, instead of the file's; in the file's own unit "
        "(the one lengths and HD95 are reported in)",
    )
    seg.add_argument(
        "--unit",
        choices=UNIT_CHOICES,
        help="the unit of the voxel size when the file states none (a TIFF or .npy "
        "stack: um for microscopy, mm for CT/MRI); lengths, HD95 and every file "
        "written then carry it. A file that states another unit is refused",
    )
    seg.add_argument(
        "--zoom",
        type=_zoom_arg,
        default="auto",
        metavar="auto|FLOAT",
        help="resampling factor for thick (< 1) or thin (> 1) vessels; auto (default): "
        "a CT at its finest spacing (at least 0.5 mm), "
        "large vessels to ~8 voxels in radius otherwise",
    )
    seg.add_argument(
        "--modality",
        choices=["auto", "ct", "microscopy"],
        default="auto",
        help="auto (default) recognises a CT in Hounsfield units from its values; "
        "microscopy covers every non-CT image (MRA included)",
    )
    seg.add_argument(
        "--window",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="intensity window mapped to 0..1 (HU for a CT; default -100 300 for a CT, "
        "0.5-99.5 percentiles otherwise)",
    )
    seg.add_argument(
        "--polarity",
        choices=["auto", "bright", "dark"],
        default="auto",
        help="vessels brighter or darker than their surroundings; auto (default): bright "
        "for a CT, otherwise from the intensity distribution",
    )
    seg.add_argument("--gt", help="ground-truth labels (mask or tree ids): adds the metrics")
    seg.add_argument(
        "--roi",
        metavar="MASK",
        help="region of interest on the input's grid (nonzero inside, e.g. a liver mask): "
        "nothing is segmented outside it; the model still sees the whole volume",
    )
    seg.add_argument(
        "--vessel-range",
        nargs="+",
        default=["auto"],
        metavar=("auto|off|LOW", "HIGH"),
        help="drop each piece of the mask whose median intensity (input units, HU for a "
        "CT) is outside LOW..HIGH; auto (default): 100 300 for a CT in HU (a portal-venous "
        "lumen; drops the muscle and bone the models also mark), nothing otherwise; off. "
        "A piece that fails is first cut where it is thin and its parts inside the range "
        "kept, and so is the part each of --sources lies on",
    )
    seg.add_argument(
        "--sheets",
        choices=["drop", "keep"],
        default=None,
        help="drop (default): each piece of the mask shaped like a sheet rather than a tube "
        "(Frangi's plate-versus-line ratio of the mask, median under 0.15) is dropped: bone "
        "plates, the scalp of a TOF-MRA, which the models also mark; a failing piece is "
        "cut where it is thin first, its tube-like parts and the part each of --sources "
        "lies on kept. keep: off",
    )
    seg.add_argument(
        "--roi-margin",
        type=float,
        default=0.0,
        metavar="D",
        help="grow --roi by this distance, in the input's unit (voxels without a voxel "
        "size), so vessels entering it are kept that far (default 0)",
    )
    seg.add_argument(
        "--format",
        choices=["nii.gz", "nii", "tif", "npy", "zarr", "ome-zarr"],
        help="format of the volumes written (default: the input's; NIfTI for .npz, for "
        ".npy given a --spacing, which .npy cannot store, and for DICOM, NRRD and "
        "MetaImage, which napari-topo reads only); "
        "ome-zarr streams chunk by chunk for volumes larger than memory: probability, "
        "mask, skeleton and trees as connected pieces, no graph (see the README, "
        "'Large volumes')",
    )
    seg.add_argument(
        "--max-radius",
        type=float,
        default=8.0,
        metavar="VOXELS",
        help="--format ome-zarr: largest vessel radius the skeleton's chunk halo is sized "
        "for (default 8; the halo is this + 4 voxels)",
    )
    seg.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="--format ome-zarr: run the network on a dask LocalCluster of N worker "
        "processes on this machine (pip install 'napari-topo[distributed]')",
    )
    seg.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="--format ome-zarr: run the network on the dask.distributed cluster at "
        "ADDRESS (tcp://host:8786); see the README, 'On a dask cluster'",
    )
    seg.add_argument(
        "--key",
        help="array name inside an .npz file or zarr group, the image series (0, 1, ...) "
        "of a bioformats2raw OME-Zarr, or the SeriesInstanceUID of one series in a DICOM "
        "folder that holds several",
    )
    seg.add_argument(
        "--channel",
        type=int,
        metavar="N",
        help="index of the channel (or time point, or RGB sample) to segment when INPUT "
        "has more than one (ImageJ/OME hyperstacks, NIfTI 4D, RGB); refused without it",
    )
    evl = sub.add_parser(
        "evaluate",
        help="topology metrics of a segmentation against a ground truth",
        description="Print the metrics table of PRED against GT and write it as JSON and CSV.",
    )
    evl.add_argument("pred", help="prediction: mask, tree labels or probability")
    evl.add_argument("gt", help="ground truth: mask or tree labels")
    evl.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="voxel size (HD95) of both files, instead of what their headers say",
    )
    evl.add_argument(
        "--unit",
        choices=UNIT_CHOICES,
        help="the unit of the voxel size when the files state none (.npy, a TIFF "
        "without it): HD95 and the region's margin are then said in it. A file that "
        "states another unit is refused",
    )
    evl.add_argument("--threshold", type=float, default=0.5, help="for a probability PRED")
    evl.add_argument(
        "--roi",
        metavar="MASK",
        help="score inside this region only (nonzero inside; e.g. the liver mask a "
        "segment --roi run was cut to), as segment --gt --roi scores",
    )
    evl.add_argument(
        "--roi-margin",
        type=float,
        default=0.0,
        metavar="D",
        help="grow --roi by this distance, in the ground truth's unit (default 0)",
    )
    evl.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (created if missing), as for segment: writes <PRED stem>_metrics"
        ".json and .csv into it (default: beside PRED). A path ending in .json or .csv names "
        "the files instead (both written, with a note)",
    )
    train = sub.add_parser("train", help="train a model from a config (seeded, resumable)")
    train.add_argument(
        "--config",
        required=True,
        help="a YAML config file, or the name of a shipped config (e.g. unet-cldice)",
    )
    train.add_argument("--out", help="output directory (default: runs/<name>)")
    train.add_argument("--steps", type=int, help="override the config's number of steps")
    md = sub.add_parser(
        "models",
        help="list the installed models; with a name, print that model's card",
        description="List the installed models (shipped and your own) with their synthetic "
        "test scores; with NAME (a model name, a card or weights path, or a folder holding "
        "one model), print that model's card: what it is fed, how its mask is cut, how it "
        "was trained or fine-tuned, its scores and its weights' SHA-256.",
    )
    md.add_argument("name", nargs="?", help="a model to describe (default: list them all)")
    ev = sub.add_parser("evaluate-models", help="score models on the synthetic test set")
    ev.add_argument("names", nargs="*", help="models (default: every installed model)")
    ev.add_argument("--volumes", type=int, default=10, help="test volumes (default 10)")
    ev.add_argument("--size", type=int, default=96, help="edge of each cubic test volume")
    ev.add_argument("--out", default="benchmarks/results", help="folder for the JSON/Markdown")
    ev.add_argument(
        "--min-size",
        type=int,
        default=0,
        help="drop mask pieces under this many voxels first (default 0: raw; segment's "
        "default is each model's own: 64 for topnet, 32 for the others)",
    )
    ev.add_argument(
        "--update-cards",
        action="store_true",
        help="also write the test summary into each model's card",
    )
    _add_finetune_parser(sub)
    return parser


def _zoom_arg(text: str):
    """``--zoom``: "auto" or a number (its sign and size are checked with the policy)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a positive number (0.5 shrinks the volume 2x), got {text!r}"
        )
    return value


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

    results = run(
        args.names or None,
        n_volumes=args.volumes,
        shape=(args.size,) * 3,
        min_size=args.min_size,
    )
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


#: The plugin's dock widgets, as named in napari.yaml, in docking order.
WIDGETS = ("Segment vessels", "Topology metrics", "Tree editor")
#: Shares of the right column's height for :data:`WIDGETS` (``QMainWindow.resizeDocks``
#: weights): the metrics table shows all its rows at 1600 x 1000, and Segment's
#: image, model, Run, status and legend at 1366 x 768; the rest of each dock scrolls.
DOCK_SHARES = (6, 11, 3)


def open_demo_viewer(viewer=None, say=None):
    """A napari viewer with the sample vessels and the three widgets docked.

    What ``napari-topo demo --gui`` shows: File > Open Sample > napari-topo's synthetic
    vessels (image, ground-truth mask and trees), then Plugins > napari-topo > each
    widget, stacked in the right column with room shared between them (each scrolls
    what it cannot show). Returns the viewer (a new one unless given) and the widgets.
    ``say``, if given, is called with a line before each step that takes a while.
    """
    say = say or (lambda _line: None)
    say("starting napari…")
    import napari

    if viewer is None:
        viewer = napari.Viewer(title="napari-topo demo")
    say("making the sample volume (96³ synthetic vessels with their ground truth)…")
    viewer.open_sample("napari-topo", "synthetic_vessels")
    docked, docks = {}, []
    for name in WIDGETS:
        say(f"docking '{name}'…")
        dock, widget = viewer.window.add_plugin_dock_widget("napari-topo", name, tabify=False)
        docked[name] = widget
        docks.append(dock)
    window = docks[0].parent() if docks else None
    if window is not None and hasattr(window, "resizeDocks"):
        from qtpy.QtCore import Qt, QTimer
        from qtpy.QtWidgets import QApplication

        # napari gives the first dock most of the column; share it (once laid out)
        share = partial(window.resizeDocks, docks, list(DOCK_SHARES), Qt.Orientation.Vertical)
        QApplication.processEvents()
        share()
        QTimer.singleShot(0, share)
    viewer.layers.selection.active = viewer.layers["synthetic vessels"]
    return viewer, docked


def _progress_printer(label: str, stream=None):
    """``progress(done, total)`` printing a one-line bar with the share done (a line per
    10 % without a tty)."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    state = {"last": -10}

    # a share, not "done/total tiles": with several zooms the pipeline counts
    # thousandths of the whole run, which read as "0/1000 tiles" (a newcomer's stack had
    # 166 tiles)
    def progress(done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if tty:
            bar = "#" * (pct // 5)
            stream.write(f"\r{label}: [{bar:<20}] {pct:3d} %")
            if done == total:
                stream.write("\n")
            stream.flush()
        elif done == total or pct >= state["last"] + 10:
            print(f"{label}: {pct} %", file=stream, flush=True)
            state["last"] = pct

    return progress


def _read(path: str, key: str | None = None):
    from .data.io import read_volume

    return read_volume(path, key=key)


def _spacing(args, vol) -> tuple[float, float, float] | None:
    if args.spacing is not None:
        if not all(math.isfinite(s) and s > 0 for s in args.spacing):
            raise ValueError(f"--spacing must be 3 positive numbers; got {args.spacing}")
        given = tuple(float(s) for s in args.spacing)
        stored = tuple(float(s) for s in (vol.spacing or ()))
        if (
            len(stored) == 3
            and not _same_sizes(given, stored)
            and _same_sizes(sorted(given), sorted(stored))
        ):
            # x y z (NIfTI's and Fiji's order) given for z y x: accepted silently, it
            # stretched the wrong axis (found in a newcomer trial)
            print(
                f"napari-topo: note: --spacing {_sizes(given)} is the file's voxel size "
                f"{_sizes(stored)} in another order; napari-topo reads it as z y x (leave "
                "--spacing out to use the file's)",
                file=sys.stderr,
            )
        elif len(stored) != 3:
            _note_spacing_order(given, tuple(int(n) for n in vol.data.shape))
        return given
    if vol.spacing is not None and len(vol.spacing) == 3:
        return tuple(float(s) for s in vol.spacing)
    return None


def _note_spacing_order(given: tuple[float, ...], shape: tuple[int, ...]) -> None:
    """A note when ``--spacing`` (for a file stating none) puts its coarsest size on
    another axis than a stack's few slices: a newcomer's ``--spacing 0.994 0.994 5`` on a
    14 x 512 x 512 two-photon stack ran in silence and its sheet filter dropped 81 % of
    the mask. A microscope's slices are its coarse axis and there are few of them."""
    if len(given) != 3 or len(shape) != 3:
        return
    coarse = max(range(3), key=lambda a: given[a])
    few = min(range(3), key=lambda a: shape[a])
    if (
        coarse != few
        and given[coarse] >= 2.0 * given[few]
        and shape[few] * 4 <= max(shape)
        and shape.count(shape[few]) == 1
    ):
        axes = "zyx"
        print(
            f"napari-topo: note: --spacing {_sizes(given)} is read as z y x: the coarsest "
            f"voxel size ({given[coarse]:g}) lies along {axes[coarse]}, yet the volume has "
            f"its fewest voxels ({shape[few]}) along {axes[few]}, where a stack's slices "
            "usually are: check the order",
            file=sys.stderr,
        )


def _probe_out_dir(out_dir: Path) -> None:
    """Refuse, in one line and before any model runs, an ``--out`` folder that cannot be
    created or written (a read-only disk, a system folder); leaves nothing behind."""

    made = []
    try:
        missing = [out_dir, *out_dir.parents]
        missing = [d for d in missing if not d.exists()][::-1]  # outermost first
        for d in missing:
            try:
                d.mkdir()
            except FileExistsError:
                if d.is_dir():  # "a/.." once "a" exists
                    continue
                if d.is_symlink():
                    raise ValueError(f"--out {out_dir}: {d} is a broken link") from None
                raise
            made.append(d)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ValueError(f"--out {out_dir}: cannot write there ({reason})") from None
    finally:
        for d in reversed(made):
            try:
                d.rmdir()
            except OSError:
                pass


def _same_sizes(a, b) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-3) for x, y in zip(a, b, strict=True))


def _sizes(values) -> str:
    return " ".join(f"{v:g}" for v in values)


def _spatial(
    vol,
    channel: int | None,
    what: str,
    spacing_override=None,
    option="--channel",
    ndim=None,
    unit=None,
):
    """``(data, geometry)`` of one spatial volume of ``vol`` (a channel chosen), with
    ``--spacing`` applied; refusals (an axis of length 0, several channels, RGB, not
    ``ndim``-D) are one-line ValueErrors. ``unit``: the unit ``--spacing`` is in (the
    input's), for a second file whose own unit differs: its placement is converted
    first, then the spacing set (labels in um beside a CT in mm were refused with
    ``--spacing``)."""
    from .geometry import select_channel

    if 0 in tuple(vol.data.shape):
        # a (0, 64, 64) .npy was called "one voxel thick ... a 2D image"
        raise ValueError(
            f"{what} {vol.path.name} is empty: its shape {tuple(vol.data.shape)} holds no voxels"
        )
    data, geometry = select_channel(
        vol.data, vol.geometry, channel, name=f"{what} {vol.path.name}", option=option, ndim=ndim
    )
    if ndim == 3 and min(data.shape) < 2:
        # a (1, 512, 512) .npy ran for 96 s and exited 0 with its mask dropped as a sheet
        raise ValueError(
            f"{what} {vol.path.name} has the shape {tuple(data.shape)}: one voxel thick "
            "along an axis, a 2D image, and napari-topo segments 3D volumes"
        )
    if spacing_override is not None and geometry.ndim == len(spacing_override):
        geometry = geometry.in_unit(unit).with_spacing(spacing_override)
    return data, geometry


#: Units ``--unit`` takes (those :meth:`napari_topo.geometry.Geometry.in_unit` converts).
UNIT_CHOICES = tuple(METRES_PER_UNIT)


def _with_unit(geometry, unit: str | None, what: str):
    """``geometry`` with ``--unit`` stated where the file stated none; the same unit
    again is accepted; another unit than the file's is a one-line refusal (the voxel
    size would be read a thousand times off)."""
    if unit is None or geometry.unit == unit:
        return geometry
    if geometry.unit is not None:
        raise ValueError(
            f"{what} states its voxel size in {geometry.unit}, but --unit says {unit}: "
            "leave --unit out (give --spacing in the file's unit to change the size)"
        )
    return geometry.replace(unit=unit)


def _geometry_spacing(geometry) -> tuple[float, ...] | None:
    return None if geometry.known == "none" else tuple(float(s) for s in geometry.spacing)


def _aligned(data, geometry, ref_geometry, ref_shape, names):
    """``(data on the reference grid, note)`` (flips/permutations only), or a one-line
    refusal; the note ("" or what was assumed or reordered) is printed with the results."""
    from .geometry import align

    return align(data, geometry, ref_geometry, ref_shape, names=names)


#: What the coordinates of a ``--sources`` CSV can be (see :func:`sources_in_voxels`).
SOURCES_SPACES = ("auto", "world", "napari", "voxel")
#: Columns that say which: world coordinates (napari-topo's Points writer, the
#: ``_graph.csv`` nodes table), a napari Points layer's data coordinates (napari's own
#: CSV writer), voxel indices of the input. The first match wins.
_SOURCE_COLUMNS = (
    ("world", ("z_physical", "y_physical", "x_physical")),
    ("napari", ("axis-0", "axis-1", "axis-2")),
    ("voxel", ("z", "y", "x")),
)


def read_sources_table(path) -> tuple:
    """``(points, space)``: tree roots from a CSV and what their coordinates are.

    Columns, by header (the first match wins): ``z_physical, y_physical, x_physical``
    gives ``space="world"`` (napari-topo's Points writer and the ``_graph.csv`` of
    ``segment`` write them); napari's own Points CSV (``index, axis-0, axis-1,
    axis-2, ...``; the last three ``axis-*`` columns of a layer with more axes) gives
    ``"napari"``; ``z, y, x`` gives ``"voxel"``. Without a header the first three
    columns are ``z, y, x`` voxel indices. :func:`sources_in_voxels` turns them into
    voxel indices of the input.
    """
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no such sources file: {p}")
    with p.open(newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{p}: no source points")
    header = [c.strip().lower() for c in rows[0]]
    cols, space = [0, 1, 2], "voxel"
    body = rows
    try:
        [float(c) for c in rows[0][:3]]
    except ValueError:
        body = rows[1:]
        axis_cols = sorted(
            (int(h[5:]), i) for i, h in enumerate(header) if h[5:].isdigit() and h[:5] == "axis-"
        )
        for kind, names in _SOURCE_COLUMNS:
            if kind == "napari" and len(axis_cols) >= 3:
                cols, space = [i for _, i in axis_cols[-3:]], kind
                break
            if all(n in header for n in names):
                cols, space = [header.index(n) for n in names], kind
                break
        else:
            raise ValueError(
                f"{p}: expected columns z_physical,y_physical,x_physical (world), "
                f"axis-0,axis-1,axis-2 (napari's Points CSV) or z,y,x (voxels); got {rows[0]}"
            ) from None
    try:
        pts = np.array([[float(r[c]) for c in cols] for r in body], dtype=float)
    except (ValueError, IndexError):
        raise ValueError(f"{p}: every row needs three numeric coordinates") from None
    if len(pts) == 0 or not np.isfinite(pts).all():
        raise ValueError(f"{p}: no usable (finite) source points")
    return pts, space


def read_sources(path):
    """Tree roots from a CSV as stored (``(K, 3)`` floats); see :func:`read_sources_table`."""
    return read_sources_table(path)[0]


_SPACE_WORDS = {
    "world": "world coordinates (z, y, x{unit})",
    "napari": "voxels of the image as napari-topo's reader shows it (napari's Points CSV)",
    "voxel": "voxel indices of the input (z, y, x)",
}


def sources_in_voxels(points, space: str, geometry, shape, name: str = "--sources"):
    """Tree roots as voxel indices of the input's array (z, y, x), or a one-line refusal.

    Parameters
    ----------
    points : (K, 3) array_like of float
    space : {"world", "napari", "voxel"}
        ``"world"``: world coordinates in napari's axis order and ``geometry``'s unit
        (what napari shows as a layer's world position; for a NIfTI the scanner's
        S, A, R millimetres); ``"napari"``: data coordinates of a napari layer with the
        placement napari-topo's reader gives the image (its voxels flipped and
        transposed to run along +z, +y, +x: :func:`napari_topo.geometry.displayed`);
        ``"voxel"``: indices into the input's array as ``read_volume`` returns it.
    geometry : Geometry
        The input's (spatial) geometry, ``--spacing`` applied.
    shape : tuple of int
        The input's spatial shape.

    Returns
    -------
    (K, 3) ndarray of float
        Voxel indices of the input's array.

    Raises
    ------
    ValueError
        A root outside the volume (one line: which, where, in which coordinates), or two
        roots in one voxel.
    """
    import numpy as np

    from .geometry import displayed

    pts = np.asarray(points, dtype=float)
    if space == "world":
        vox = geometry.voxel(pts)
    elif space == "napari":
        vox = geometry.voxel(displayed(geometry, shape).world(pts))
    elif space == "voxel":
        vox = pts
    else:
        raise ValueError(f"--sources-space must be one of {', '.join(SOURCES_SPACES)}")
    vox = np.where(np.abs(vox - np.round(vox)) < 1e-6, np.round(vox), vox)
    inside = np.all((vox >= -0.5) & (vox <= np.asarray(shape) - 0.5), axis=1)
    if not inside.all():
        k, n_out = int(np.flatnonzero(~inside)[0]), int((~inside).sum())
        unit = f" {geometry.unit}" if geometry.unit and space == "world" else ""
        words = _SPACE_WORDS[space].format(unit=unit and f",{unit}")
        others = [s for s in SOURCES_SPACES[1:] if s != space]
        raise ValueError(
            f"{n_out} of the {name} points {'lies' if n_out == 1 else 'lie'} outside "
            f"the volume {tuple(shape)} "
            f"(row {k + 1}: {pts[k].tolist()} read as {words} is voxel "
            f"{np.round(vox[k], 2).tolist()}); check the file, or say what its coordinates "
            f"are with --sources-space {' or '.join(others)}"
        )
    voxel = np.round(vox).astype(np.int64)
    _, first, counts = np.unique(voxel, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        # refused before the model runs: two roots in one voxel grow one tree
        j = int(first[np.flatnonzero(counts > 1)[0]])
        k = int(np.flatnonzero((voxel == voxel[j]).all(axis=1))[1])
        raise ValueError(
            f"rows {j + 1} and {k + 1} of the {name} points are in the same voxel "
            f"{voxel[j].tolist()}: give each tree one root"
        )
    return vox


def _as_labels(arr, name: str, threshold: float | None = None):
    """A mask or label volume from a file's array: float files often hold integer labels.

    Floats that are all non-negative whole numbers become int32 labels (a NIfTI of tree
    ids is often stored as float32); other floats are probabilities, thresholded at
    ``threshold``, or refused when no threshold applies.
    """
    import numpy as np

    from .geometry import writable

    # a writable, contiguous copy where needed: read-only memory maps (.npy), zarr and
    # dask arrays go to cc3d/scikit-image, which refuse read-only buffers
    a = writable(arr)
    if a.dtype.kind != "f":
        return a
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    if (a >= 0).all() and (a == np.round(a)).all():
        return a.astype(np.int32)
    if threshold is None:
        raise ValueError(
            f"{name} holds fractional values; a ground truth must be a mask or integer labels"
        )
    return a > threshold


def _write_metrics(metrics: dict, prefix: Path) -> tuple[Path, Path]:
    js = prefix.with_name(prefix.name + ".json")
    cs = prefix.with_name(prefix.name + ".csv")
    clean = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in metrics.items()
    }
    js.write_text(json.dumps(clean, indent=2) + "\n")
    with cs.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["metric", "value"])
        for k, v in metrics.items():
            w.writerow([k, v])
    return js, cs


def _length_unit(spacing, geometry) -> str:
    """Unit of lengths measured with ``spacing``: the geometry's ("mm", "um"), "units"
    when the spacing states none, "voxels" without a spacing."""
    if spacing is None:
        return "voxels"
    return (getattr(geometry, "unit", None) or "units") if geometry is not None else "units"


def _metrics_table(metrics: dict, unit: str | None = None) -> str:
    """The metrics, one per line; distances (HD95) carry ``unit`` ("voxels" if None)."""
    from .topology.metrics import DISTANCE_METRICS

    width = max(len(k) for k in metrics)
    lines = []
    for k, v in metrics.items():
        counts = "error" in k or k == "CCE 3D"
        text = (
            "nan"
            if not math.isfinite(v)
            else (f"{v:.0f}" if counts and float(v).is_integer() else f"{v:.4f}")
        )
        line = f"  {k:<{width}}  {text:>10}"
        if k in DISTANCE_METRICS:
            line += f" {unit or 'voxels'}"
        lines.append(line)
    return "\n".join(lines)


#: ``segment`` lists this many trees (the largest) on the terminal; summary.json has all.
MAX_TREE_LINES = 10
#: Trees listed in a streamed summary.json (all of them go to the _trees.csv).
MAX_SUMMARY_TREES = 1000

_FORMAT_OF_SUFFIX = {
    ".nii": "nii",
    ".nii.gz": "nii.gz",
    ".tif": "tif",
    ".tiff": "tif",
    ".npy": "npy",
    ".npz": "nii.gz",
    ".zarr": "zarr",
    ".ome.zarr": "ome-zarr",
}


def _move_into(tmp: Path, out_dir: Path) -> list[str]:
    """Move every file (or zarr folder) of ``tmp`` into ``out_dir``, replacing what is
    there; the names moved. The last step of a run that wrote into ``tmp`` first, so
    an interrupted run leaves no partial outputs."""
    written = []
    for f in sorted(tmp.iterdir()):
        dest = out_dir / f.name
        if dest.is_dir():
            shutil.rmtree(dest)
        f.replace(dest)
        written.append(dest.name)
    return written


#: the volumes the streamed path writes (the whole-volume path: the first four)
_STREAMED_VOLUMES = ("probability", "mask", "skeleton", "trees", "centerness", "embedding")
#: what segment names its outputs, STEM_KIND.SUFFIX (both paths)
_OUTPUT_KINDS = frozenset((*_STREAMED_VOLUMES, "graph", "summary", "metrics"))


def _stale_line(out_dir: Path, stem: str, written: list[str]) -> str | None:
    """A note naming the files in ``out_dir`` named as segment names its outputs
    (``STEM_KIND.SUFFIX``, :data:`_OUTPUT_KINDS`) that this run did not write: a re-run
    with other options (no ``--gt``) left an earlier run's metrics beside the new masks
    without a word. A user's ``STEM_liver.nii.gz`` is not named."""
    done = set(written)
    stale = []
    for f in out_dir.iterdir():  # not a glob: a stem may hold [ ] * ?
        kind, dot, _ = f.name.removeprefix(f"{stem}_").partition(".")
        if f.name.startswith(f"{stem}_") and dot and kind in _OUTPUT_KINDS and f.name not in done:
            stale.append(f.name)
    stale.sort()
    if not stale:
        return None
    return (
        f"note: {out_dir} also holds {len(stale)} file{'s' if len(stale) != 1 else ''} named "
        f"like this run's that it did not write (an earlier run's?), left as they were: "
        + ", ".join(stale)
    )


def _compute_words(compute) -> str:
    """``"cpu, bfloat16, "`` from a ``compute`` record (empty when there is none)."""
    if not compute:
        return ""
    words = f"{compute.get('device', '?')}, {compute.get('precision', '?')}, "
    if compute.get("tta"):
        words += f"{compute['tta']}, "
    from .inference.pipeline import skipped_tiles_words

    skipped = skipped_tiles_words(compute)
    if skipped:
        words += f"{skipped}, "
    return words


#: Printed with the results when :func:`_no_voxel_size_note` was said with the input
#: line (the whole note twice read as noise to a newcomer).
_VOXEL_SIZE_REMINDER = "note: these results assume the voxel size noted after the input line"


def _no_voxel_size_note(name: str, geometry, given, assumed: str = "") -> str | None:
    """The note for an input that states no voxel size, or not along ``assumed`` axes
    (:attr:`Volume.assumed`, e.g. a TIFF's missing z step); None when it does or
    ``--spacing`` gave one. 1 was assumed silently before: a 5 um z step read as 1 um
    took a newcomer's vesselNN plaqueVessels Dice from 0.61 to 0.13 (the zoom follows
    it)."""
    if given is not None:
        return None
    if geometry.known != "none" and assumed:
        unit = f" {geometry.unit}" if geometry.unit else ""
        axes = " and ".join(assumed)
        step, verb = ("step", "is") if len(assumed) == 1 else ("steps", "are")
        hint = (
            " (a microscope's z step is usually larger than its pixel size)"
            if assumed == "z"
            else ""
        )
        return (
            f"{name} states a voxel size but no {axes} {step}; {axes} {verb} taken as "
            f"1{unit}: give --spacing Z Y X if not{hint}, since the model's zoom and "
            "resampling follow it"
        )
    if geometry.known != "none":
        return None
    return (
        f"{name} states no voxel size; its voxels are taken as cubes of 1 x 1 x 1: give "
        "--spacing Z Y X if they are not (most microscopy stacks have a larger z step), "
        "since the model's zoom follows the voxel size"
    )


def _assumed_axes(args, vol, geometry) -> str:
    """Spatial axes (letters of ``"zyx"``) whose voxel size the input did not state and
    that were taken as 1: all of them for a file that states none, the
    :attr:`~napari_topo.data.io.Volume.assumed` ones (a TIFF's missing z step), none
    when ``--spacing`` gave them."""
    if args.spacing is not None:
        return ""
    if geometry.known == "none":
        return "zyx"[-geometry.ndim :]
    return "".join(ch for ch in "zyx"[-geometry.ndim :] if ch in (vol.assumed or ""))


def _spacing_record(args, assumed: str, ndim: int = 3) -> dict:
    """The summary's ``spacing_assumed`` (axes taken as 1, a list) and ``spacing_source``
    (per axis: ``"file"``, ``"--spacing"`` or ``"assumed"``)."""
    space = "zyx"[-ndim:]
    given = "--spacing" if args.spacing is not None else "file"
    return {
        "spacing_assumed": [ch for ch in space if ch in assumed],
        "spacing_source": {ch: "assumed" if ch in assumed else given for ch in space},
    }


def _mark_swc_assumed(path: Path, assumed: str) -> None:
    """Say in an SWC's header that its ``# spacing`` line holds assumed axes."""
    if not assumed:
        return
    lines = path.read_text().splitlines(keepends=True)
    note = f"# spacing assumed: {','.join(assumed)} (not stated by the input; taken as 1)\n"
    at = next((i + 1 for i, ln in enumerate(lines) if ln.lower().startswith("# spacing")), 1)
    path.write_text("".join(lines[:at] + [note] + lines[at:]))


def _write_graphml(analysis, path: Path, assumed: str) -> None:
    """``analysis.to_graphml`` with a ``spacing_assumed`` graph attribute (the axes, as
    ``"z"``) when the input stated no voxel size for them: GraphML's ``spacing_z`` etc.
    would otherwise read as the file's own."""
    import networkx as nx

    graph = analysis.to_networkx()
    if assumed:
        graph.graph["spacing_assumed"] = ",".join(assumed)
    nx.write_graphml(graph, path)


def _npy_loses(geometry) -> str | None:
    """What of the input's placement ``.npy`` volumes cannot hold (``"voxel size 2 x
    0.7 x 0.7 mm, origin and oblique orientation"``), or None when it states none."""
    if geometry.known == "none":
        return None
    unit = f" {geometry.unit}" if geometry.unit else ""
    lost = [f"voxel size {' x '.join(f'{v:.4g}' for v in geometry.spacing)}{unit}"]
    if any(abs(o) > 0 for o in geometry.origin):
        lost.append("origin")
    if not geometry.is_plain:
        lost.append("oblique orientation" if not geometry.is_axis_aligned else "axis flips")
    return ", ".join(lost[:-1]) + " and " + lost[-1] if len(lost) > 1 else lost[0]


def _segment_settings(
    args, name: str, unit: str | None = None, note: str | None = None, hint: str | None = None
) -> dict:
    """The ``segment`` options both paths (in memory, streamed) hand to the pipeline
    (``unit``: the input's length unit, for the ``input:`` line's voxel size; ``note``:
    said right after that line, before the network runs; ``hint``: the modality the
    file states, :attr:`~napari_topo.data.io.Volume.modality`)."""
    return {
        "header_hint": hint,
        "threshold": args.threshold,
        "min_size": args.min_size,
        "modality": args.modality,
        "window": args.window,
        "polarity": args.polarity,
        "tile": args.tile,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "tta": args.tta,
        "skip_empty_tiles": args.empty_tiles == "skip",
        "device": args.device,
        "precision": args.precision,
        "progress": _progress_printer(f"segmenting {name}"),
        # said before the model runs: a wrong modality or zoom is seen at once, not
        # after minutes of inference
        "on_policy": lambda policy: _say_policy(policy, unit, note),
    }


def _vessel_range_arg(values) -> str | tuple[float, float] | None:
    """``--vessel-range``: "auto", None ("off") or ``(low, high)``; one line if bad."""
    if len(values) == 1 and values[0] in ("auto", "off"):
        return None if values[0] == "off" else "auto"
    try:
        low, high = (float(v) for v in values)
    except ValueError:
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(
            f"--vessel-range takes auto, off or LOW HIGH with LOW < HIGH; got {' '.join(values)}"
        )
    return low, high


def _say_policy(policy, unit: str | None = None, note: str | None = None) -> None:
    """The ``input:`` line (and a note on the voxel size that belongs with it, in full:
    a newcomer waited 72 s for it when it came only with the results, which now recall
    it in one line, :data:`_VOXEL_SIZE_REMINDER`)."""
    print(f"input: {policy.describe(unit)}", flush=True)
    if note:
        print(f"note: {note}", flush=True)


def _segment(args) -> None:
    import numpy as np

    from .data.io import is_dicom_folder, suffix_of, volume_stem, write_volume
    from .inference.pipeline import DEFAULT_MODEL, percent_text, segment
    from .topology.metrics import compute_metrics
    from .trees.reconstruct import CoincidingSourcesError

    if args.tile < 16 or args.tile % 16:
        raise ValueError(f"--tile must be a multiple of 16 (16, 32, 48, ...); got {args.tile}")
    if not 0.0 <= args.overlap < 1.0:  # before the input is read and analysed
        raise ValueError(f"--overlap must be at least 0 and below 1; got {args.overlap:g}")
    vol = _read(args.input, args.key)
    override = _spacing(args, vol) if args.spacing is not None else None
    # One 3D spatial volume (a channel chosen, or a one-line refusal: a 2D image, RGB or
    # not, is refused as such before any channel question) before anything runs; its
    # geometry goes to every file written, so they overlay the input.
    data, geometry = _spatial(vol, args.channel, "the input", override, ndim=3)
    geometry = _with_unit(geometry, args.unit, f"the input {vol.path.name}")
    if isinstance(data, np.ndarray) and data.dtype.kind == "f":
        # refused before the input and voxel-size lines, so the refusal is one line
        from .inference.sliding import _check_finite_numpy

        _check_finite_numpy(data)
    spacing = _geometry_spacing(geometry)
    shape = tuple(data.shape)
    sources = None
    if args.sources:
        # roots as voxel indices of the input, whatever coordinates the CSV holds (a
        # napari export of a flipped or translated file is not in the file's order)
        pts, space = read_sources_table(args.sources)
        if args.sources_space != "auto":
            space = args.sources_space
        sources = sources_in_voxels(pts, space, geometry, shape)

    def on_input_grid(path, what):
        """A file's volume on the input's grid (flips/permutations only), its note."""
        other = _read(path)
        data, other_geometry = _spatial(other, None, what, override, None, unit=geometry.unit)
        names = (f"{what} {other.path.name}", f"the input {vol.path.name}")
        return _aligned(data, other_geometry, geometry, shape, names)

    gt, gt_note = None, ""
    if args.gt:
        gt_data, gt_note = on_input_grid(args.gt, "the ground truth")
        gt = _as_labels(gt_data, "the ground truth")
    vessel_range = _vessel_range_arg(args.vessel_range)
    roi, roi_note = _roi_arg(args, on_input_grid)
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise ValueError(f"--threshold must be between 0 and 1; got {args.threshold}")
    out_dir = Path(args.out)
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():  # checked before the model runs, not after
        raise ValueError(f"--out {out_dir}: {existing} is a file, not a folder")
    _probe_out_dir(out_dir)
    if args.min_size is not None and args.min_size < 0:
        raise ValueError(f"--min-size must be a number of voxels >= 0; got {args.min_size}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1; got {args.batch_size}")
    # DICOM series, NRRD and MetaImage are read only: their outputs are NIfTI
    fmt = args.format or (
        "nii.gz"
        if is_dicom_folder(vol.path)
        else _FORMAT_OF_SUFFIX.get(suffix_of(vol.path), "nii.gz")
    )
    if args.format is None and fmt == "zarr":
        from .data.ngff import is_ome_zarr

        fmt = "ome-zarr" if is_ome_zarr(vol.path) else fmt
    if args.format is None and fmt == "npy" and geometry.known != "none":
        fmt = "nii.gz"  # .npy cannot carry the voxel size the outputs are measured in
    # a CD export's series is named after the export too (its folder is SE000000 or alike)
    stem = volume_stem(args.input, vol.path)
    lost = _npy_loses(geometry) if fmt == "npy" else None
    if lost:
        # said before the run: an oblique NIfTI's placement was dropped silently
        print(
            f"napari-topo: note: --format npy holds the arrays only, not the input's {lost}: "
            f"{stem}_summary.json records them (geometry) and the graph files are in world "
            "coordinates; --format nii.gz (or tif, zarr) keeps them in the volumes",
            file=sys.stderr,
        )
    model = args.model or DEFAULT_MODEL
    if (args.workers is not None or args.scheduler) and fmt != "ome-zarr":
        raise ValueError(
            "--workers/--scheduler run the streaming pipeline on a dask cluster: add "
            "--format ome-zarr"
        )
    if args.workers is not None and args.scheduler:
        raise ValueError("give --workers (a cluster on this machine) or --scheduler, not both")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1; got {args.workers}")
    if fmt == "ome-zarr":
        for flag, value in (
            ("--gt", args.gt),
            ("--roi", args.roi),
            ("--vessel-range", vessel_range not in ("auto", None)),
            ("--sheets drop", args.sheets == "drop"),
        ):
            if value:
                raise ValueError(
                    f"{flag} needs the whole-volume pipeline; --format ome-zarr streams "
                    "without it: choose another --format"
                )
        if not (math.isfinite(args.max_radius) and args.max_radius > 0):
            raise ValueError(f"--max-radius must be a positive number; got {args.max_radius}")
        _segment_streaming(args, vol, data, geometry, out_dir, stem, model, sources)
        return

    no_size = _no_voxel_size_note(vol.path.name, geometry, args.spacing, vol.assumed)
    assumed = _assumed_axes(args, vol, geometry)
    t0 = time.perf_counter()
    try:
        analysis = segment(
            data,
            model,
            sources=sources,
            spacing=spacing,
            geometry=geometry,
            zoom=args.zoom,
            roi=roi,
            roi_margin=args.roi_margin,
            vessel_range=vessel_range,
            sheets=args.sheets or "drop",
            on_message=lambda m: print(f"napari-topo: note: {m}", file=sys.stderr),
            **_segment_settings(args, vol.path.name, geometry.unit, no_size, vol.modality),
        )
    except CoincidingSourcesError as exc:
        j, k = exc.first_pair()
        raise ValueError(
            f"rows {j + 1} and {k + 1} of the --sources points snap to the same centerline "
            "point of the segmentation (two roots on one vessel, or off the mask beside the "
            "same vessel): move one or drop it; nothing was written"
        ) from exc
    took = time.perf_counter() - t0
    policy = getattr(analysis, "input_policy", None)
    metrics = None
    if gt is not None:
        region = getattr(analysis, "region", None)
        if region is not None:  # scored where it segmented: the region of interest
            gt = np.where(region, gt, 0)
        # the mask is scored, its trees for tree accuracy: a mask no root reached (pieces
        # outside every tree) is still the segmentation the user gets
        metrics = compute_metrics(analysis.mask, gt, spacing=spacing, labels=analysis.trees)

    placement = _root_placement(analysis, sources)

    # Everything is computed; write into a temporary folder and move the files in at the
    # end, so an interrupted or failed run leaves no partial outputs behind.
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".napari-topo-", dir=out_dir))
    try:
        volumes = {
            "probability": analysis.probability.astype(np.float32),
            "mask": analysis.mask.astype(np.uint8),
            "skeleton": analysis.skeleton.astype(np.uint8),
            "trees": analysis.trees.astype(np.int32),
        }
        for name, arr in volumes.items():
            # an assumed voxel size is written as assumed where the format can say so
            path = tmp / f"{stem}_{name}.{fmt}"
            write_volume(path, arr, geometry=geometry, spacing_assumed=assumed)
        _write_graphml(analysis, tmp / f"{stem}_graph.graphml", assumed)
        analysis.save(tmp / f"{stem}_graph.swc")
        _mark_swc_assumed(tmp / f"{stem}_graph.swc", assumed)
        analysis.save(tmp / f"{stem}_graph.csv")
        branch_table = analysis.branch_table()
        branch_table.to_csv(tmp / f"{stem}_branches.csv", index=False)
        summary = analysis.summary()
        per_tree = branch_table.groupby("tree")
        n_branches = per_tree.size().to_dict()
        depth = per_tree["generation"].max().to_dict()
        for tree in summary["trees"]:  # from the branch table: the same branches
            tree["n_branches"] = int(n_branches.get(tree["id"], 0))
            tree["max_generation"] = int(depth.get(tree["id"], 0))
        summary.update({"input": str(vol.path), "model": model, "seconds": round(took, 2)})
        summary["min_size"] = int(analysis.min_size)
        if args.channel is not None:
            summary["channel"] = args.channel
        if placement:
            # "moved" is in the spacing's unit (voxels without a spacing)
            length_unit = "voxels" if spacing is None else (geometry.unit or None)
            summary["roots"] = [{**r, "unit": length_unit} for r in placement]
        applied = getattr(analysis, "vessel_range", None)
        summary["vessel_range"] = None if applied is None else [float(v) for v in applied]
        summary["pieces_dropped"] = int(getattr(analysis, "pieces_dropped", 0))
        summary["dropped_share"] = float(getattr(analysis, "dropped_share", 0.0))
        summary["sheets"] = args.sheets or "drop"
        summary["sheets_dropped"] = int(getattr(analysis, "sheets_dropped", 0))
        summary["sheets_share"] = float(getattr(analysis, "sheets_share", 0.0))
        if roi is not None:
            summary["roi"] = {
                "file": str(args.roi),
                "margin": args.roi_margin,
                "voxels": int(np.count_nonzero(roi)),
            }
        # where the voxel coordinates of the graph files lie (the plugin's reader uses
        # it); the analysis carries the input's geometry, so these are the same
        summary["shape"] = list(shape)
        summary["geometry"] = analysis.geometry.to_dict()
        summary.update(_spacing_record(args, assumed, geometry.ndim))
        # whether the volume files carry it too (.npy holds the array alone)
        summary["volumes"] = {"format": fmt, "hold_geometry": fmt != "npy"}
        if policy is not None:
            summary["input_policy"] = policy.to_dict()
        compute = getattr(analysis, "compute", None)
        if compute:
            summary["compute"] = dict(compute)
        (tmp / f"{stem}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if metrics is not None:
            _write_metrics(metrics, tmp / f"{stem}_metrics")
        written = _move_into(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        # the branches of the trees (the branch table's, which the tree lines count),
        # not skan's skeleton branches: those count cycles and pieces no tree took
        f"{vol.path.name}: {summary['n_voxels']} vessel voxels, "
        f"{_counted(summary['n_branches'], 'branch', 'branches')}, "
        f"{_counted(summary['n_points'], 'centerline point')}, "
        f"{_counted(summary['n_trees'], 'tree')} "
        f"({_model_words(model)}, {_compute_words(getattr(analysis, 'compute', None))}"
        f"{took:.1f} s)"
    )
    trees = sorted(summary["trees"], key=lambda t: -t["n_voxels"])
    # centerline lengths are in the spacing's unit (voxels when there is no spacing)
    unit = " voxels" if spacing is None else (f" {geometry.unit}" if geometry.unit else "")
    for tree in trees[:MAX_TREE_LINES]:
        print(
            f"  tree {tree['id']}: {tree['n_voxels']} voxels, centerline {tree['length']:.1f}"
            f"{unit} in {tree['n_branches']} branch{'' if tree['n_branches'] == 1 else 'es'}"
        )
    if len(trees) > MAX_TREE_LINES:
        print(
            f"  ... and {len(trees) - MAX_TREE_LINES} smaller trees "
            f"(every tree in {stem}_summary.json)"
        )
    if summary["n_points"] == 0:
        # the graph files are written as the all-0 volumes are, header alone; the
        # plugin's reader opens them as empty layers (it refused them before)
        what = (
            "no vessels found: the mask, skeleton and trees are all 0, and"
            if summary["n_voxels"] == 0
            else f"no centerline found in the {summary['n_voxels']} vessel voxels:"
        )
        print(
            f"note: {what} {stem}_graph.csv, .swc and .graphml hold no points (the .csv "
            "and .swc open in napari as empty layers)"
        )
    for root in placement:
        if not root["in_mask"]:
            where = ",".join(f"{v:g}" for v in root["given"])
            print(
                f"note: root {root['tree']} (z,y,x {where}) lies off the vessel mask: tree "
                f"{root['tree']} ({root['n_voxels']} voxels) grew from the nearest centerline "
                f"point, {root['moved']:.1f}{unit} away. Check the root; or its vessel was "
                "missed."
            )
    own = _own_threshold_line(args, model, analysis.threshold)
    if own:
        print(own)
    own = _own_min_size_line(args, model, analysis.min_size)
    if own:
        print(own)
    if no_size:  # said in full with the input line; a reminder beside the results
        print(_VOXEL_SIZE_REMINDER)
    applied = getattr(analysis, "vessel_range", None)
    if applied is not None:
        hu = " HU" if policy is not None and policy.intensity.modality == "ct" else ""
        share = percent_text(getattr(analysis, "dropped_share", 0.0))
        roots = "; the parts --sources lie on kept" if sources is not None else ""
        # judged on the whole scan before --roi cuts the mask (a newcomer read the same
        # counts with and without --roi as the region's)
        whole = "the whole scan's mask" if roi is not None else "the mask"
        print(
            f"dropped {getattr(analysis, 'pieces_dropped', 0)} pieces of {whole} "
            f"({share} of its voxels) whose median is outside "
            f"{applied[0]:g}..{applied[1]:g}{hu} (--vessel-range; 'off' keeps them{roots})"
        )
    n_sheets = int(getattr(analysis, "sheets_dropped", 0))
    if n_sheets:
        share = percent_text(getattr(analysis, "sheets_share", 0.0))
        one = n_sheets == 1
        print(
            f"dropped {n_sheets} sheet-like piece{'' if one else 's'} ({share} of the "
            f"mask's voxels; --sheets keep keeps {'it' if one else 'them'}; a vessel lying "
            "along a sheet goes with it)"
        )
        if assumed:
            # a newcomer's TIFF without a z step lost 78 % of its mask here (Dice 0.50
            # -> 0.13): squashed along z, its vessels looked like sheets
            if len(assumed) == 3:
                size, larger, along = "voxel size was taken as 1 x 1 x 1", "the z step is", "z"
            else:
                axes = " and ".join(assumed)
                one = len(assumed) == 1
                unit1 = f" {geometry.unit}" if geometry.unit else ""
                step_word = "step was" if one else "steps were"
                size = f"{axes} {step_word} taken as 1{unit1}"
                larger, along = ("it is" if one else "they are"), axes
            print(
                f"note: the {size}; if {larger} larger (a microscope's z step usually "
                f"is), vessels look flattened along {along} and can be dropped as sheets: "
                "give --spacing Z Y X"
            )
    if roi is not None:
        margin = f" grown by {args.roi_margin:g}{unit}" if args.roi_margin else ""
        print(f"only inside the region of interest {Path(args.roi).name}{margin}")
        if roi_note:
            print(f"note: {roi_note}")
    elif policy is not None and policy.intensity.modality == "ct":
        # a newcomer's liver CT: 87 % of the mask, and a 22 m "portal tree", lay outside
        # the liver, and nothing said how to keep one organ's vessels
        print(
            "note: on a CT the mask and the trees cover the whole scan (every organ's "
            "vessels and what looks like them); --roi ORGAN_MASK [--roi-margin MM] keeps "
            "one organ's"
        )
    if metrics is not None:
        if gt_note:
            print(f"note: {gt_note}")
        where = "inside the region of interest" if roi is not None else "whole volume"
        print(f"metrics against the ground truth ({where}):")
        print(_metrics_table(metrics, _length_unit(spacing, geometry)))
    print(f"wrote {len(written)} files to {out_dir}: " + ", ".join(written))
    stale = _stale_line(out_dir, stem, written)
    if stale:
        print(stale)


def _counted(n: int, one: str, many: str | None = None) -> str:
    """``"1 tree"``, ``"3 trees"``."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _root_placement(analysis, sources) -> list[dict]:
    """Where each ``--sources`` root landed (:meth:`VesselAnalysis.root_placement`); [] if none."""
    if sources is None or analysis.result.n_trees != len(sources):
        return []
    return analysis.root_placement(sources)


def _model_words(model) -> str:
    """The model as the result line names it: its card's name, and the path it was
    given by when that is not the name (a fine-tuned model's folder)."""
    from .models.registry import model_card

    try:
        name = model_card(model).name
    except Exception:  # noqa: BLE001 - the line falls back to what was given
        return str(model)
    return name if name == str(model) else f"{name} from {model}"


def _own_threshold_line(args: argparse.Namespace, model, used: float) -> str | None:
    """The line saying what the mask was cut at when it is not the plain 0.5: the
    model's own threshold, or a ``--threshold`` other than the model's own (None when
    the cut is the model's own 0.5, or the model's own given again)."""
    from .models.registry import DEFAULT_THRESHOLD, model_card

    if args.threshold is not None:
        own = model_card(model).mask_threshold
        return None if own == used else f"threshold {used:g} (given; the model's own is {own:g})"
    if used == DEFAULT_THRESHOLD:
        return None

    card = model_card(model)
    metrics = card.metrics if isinstance(card.metrics, dict) else {}
    origin = (
        "chosen on the held-out part of the labels it was fine-tuned on"
        if "threshold_choice" in metrics
        else f"from its card, {card.path or card.name}"
    )
    return f"threshold {used:g}: the model's own ({origin}; --threshold overrides)"


def _own_min_size_line(args: argparse.Namespace, model, used: int) -> str | None:
    """The line saying which mask pieces were dropped when the model's card sets its own
    smallest piece (None for the package default or a ``--min-size`` given)."""
    from .inference.pipeline import DEFAULT_MIN_SIZE

    if args.min_size is not None or used == DEFAULT_MIN_SIZE:
        return None
    if used == 0:
        return (
            "no mask piece dropped for its size: the model's own (from its card; "
            "--min-size overrides)"
        )
    return (
        f"mask pieces under {used} voxels dropped: the model's own (from its card; "
        "--min-size overrides)"
    )


def _segment_streaming(
    args, vol, data, geometry, out_dir: Path, stem: str, model, sources=None
) -> None:
    """``segment --format ome-zarr``: every volume streamed chunk by chunk.

    Nothing of volume size is held in memory (:mod:`napari_topo.inference.chunked`):
    probability, mask, skeleton (per chunk with a halo) and tree labels (connected
    pieces of the mask, joined across chunks, named by ``sources``) as OME-Zarr, the
    pieces as a CSV, and a summary. Written into a temporary folder inside ``out_dir``
    and moved in at the end, as the whole-volume path does. No graph files (one note on
    stderr says so).
    """
    from .data.io import note_spacing_assumed
    from .inference.chunked import segment_to_ome_zarr, streaming_factors

    spacing = _geometry_spacing(geometry)
    zoom = args.zoom
    numeric = None if isinstance(zoom, str) else zoom
    if numeric is not None and not (math.isfinite(numeric) and numeric > 0):
        raise ValueError(f"--zoom must be 'auto' or a positive number; got {numeric}")
    # outside CT an axis over 3x the finest is not resampled; a CT's is (decided from a
    # sample of the values, before anything is written)
    factors = streaming_factors(
        data,
        spacing,
        numeric,
        model,
        modality=args.modality,
        window=args.window,
        polarity=args.polarity,
        header_hint=vol.modality,  # a DICOM series' Modality tag, as segment takes it
    )
    if any(abs(f - 1.0) > 0.05 for f in factors):
        why = (
            f"--zoom {numeric:g} resamples the volume"
            if numeric is not None and abs(numeric - 1.0) > 0.05
            else f"its voxels {tuple(spacing)} are anisotropic and the model needs them resampled"
        )
        raise ValueError(
            f"--format ome-zarr streams on the input grid, but {why}: use another --format "
            "for a volume that fits in memory (it resamples for the model and maps the "
            "results back); streaming does not resample yet"
        )
    note = lambda m: print(f"napari-topo: note: {m}", file=sys.stderr)  # noqa: E731
    note(
        "--format ome-zarr streams chunk by chunk: trees are the connected pieces of the "
        "mask (named by --sources), and the vessel graph is not computed (use another "
        "--format for those)"
    )
    from .inference.pipeline import DEFAULT_MODEL
    from .models.registry import model_card

    # before any folder is made (a newcomer found an empty --out left by the refusal)
    card = model_card(model or DEFAULT_MODEL)
    if card.architecture == "unet3d-voxel-head":
        raise ValueError(
            f"model {card.name!r} carries a voxel head, which runs on the "
            "whole volume: it cannot stream chunk by chunk (--format ome-zarr); choose "
            "another --format"
        )
    client = cluster = None
    if args.workers is not None or args.scheduler:
        from .inference.distributed import cluster_slots, connect

        client, cluster = connect(args.workers, args.scheduler)
        where = args.scheduler or f"a LocalCluster of {args.workers} workers"
        note(
            f"the network and the skeleton's thinning run on {where} "
            f"({cluster_slots(client)} worker threads)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".napari-topo-", dir=out_dir))
    names = _STREAMED_VOLUMES
    no_size = _no_voxel_size_note(vol.path.name, geometry, args.spacing, vol.assumed)
    assumed = _assumed_axes(args, vol, geometry)
    t0 = time.perf_counter()
    try:
        result = segment_to_ome_zarr(
            data,
            geometry,
            {n: tmp / f"{stem}_{n}.ome.zarr" for n in names},
            model,
            sources=sources,
            max_radius=args.max_radius,
            spacing=spacing,
            zoom=zoom,
            on_message=note,
            stage=lambda s: print(f"napari-topo: {s} ...", file=sys.stderr, flush=True),
            client=client,
            **_segment_settings(args, vol.path.name, geometry.unit, no_size, vol.modality),
        )
        took = time.perf_counter() - t0
        trees = result["trees"]
        summary = {
            "input": str(vol.path),
            "model": model,
            "streamed": True,
            "n_voxels": result["n_voxels"],
            "seconds": round(took, 2),
            "stage_seconds": result["seconds"],
            "chunk": result["chunk"],
            "threshold": result["threshold"],
            "min_size": result["min_size"],
            "shape": list(data.shape),
            "geometry": geometry.to_dict(),
            "volumes": {"format": "ome-zarr", "hold_geometry": True},
            **_spacing_record(args, assumed, geometry.ndim),
            "input_policy": result["input_policy"],
            "compute": result["compute"],
            "n_skeleton_voxels": result["n_skeleton"],
            "halo": result["halo"],
            "max_radius": args.max_radius,
            "trees_are": "connected pieces of the mask (26-connected), named by the sources",
            "n_trees": trees["n_components"],
            "roots": trees["roots"],
            "trees": [
                {"id": i + 1, "n_voxels": n, "first_voxel": f}
                for i, (n, f) in enumerate(zip(trees["sizes"], trees["first"], strict=True))
                if i < MAX_SUMMARY_TREES
            ],
            "not_computed": ["graph"],
        }
        for n in names:  # the voxel size the input did not state, said as assumed
            if (tmp / f"{stem}_{n}.ome.zarr").exists():  # (a model without centerness)
                note_spacing_assumed(tmp / f"{stem}_{n}.ome.zarr", assumed)
        if trees["n_ids"] > MAX_SUMMARY_TREES:
            summary["trees_truncated"] = f"first {MAX_SUMMARY_TREES}; all in {stem}_trees.csv"
        with (tmp / f"{stem}_trees.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "n_voxels", "first_z", "first_y", "first_x"])
            for i, (n, f) in enumerate(zip(trees["sizes"], trees["first"], strict=True)):
                w.writerow([i + 1, n, *f])
        if args.channel is not None:
            summary["channel"] = args.channel
        (tmp / f"{stem}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        written = _move_into(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result["seconds"].items())
    print(
        f"{vol.path.name}: {result['n_voxels']} vessel voxels, {result['n_skeleton']} "
        f"centerline voxels, {trees['n_components']} trees (streamed in chunks of "
        f"{result['chunk']}, halo {result['halo']}; {model}, "
        + "".join(f"{v}, " for v in result["compute"].values())
        + f"{took:.1f} s: {stages})"
    )
    own = _own_threshold_line(args, model, result["threshold"])
    if own:
        print(own)
    own = _own_min_size_line(args, model, result["min_size"])
    if own:
        print(own)
    if no_size:
        print(_VOXEL_SIZE_REMINDER)
    for root in trees["roots"]:
        if root["voxel"] is None:
            print(f"  root {root['id']} {root['source']}: no vessel within reach, id unused")
        elif root["same_as"] is not None:
            print(f"  root {root['id']}: on the same piece as root {root['same_as']}")
    print(f"wrote {len(written)} files to {out_dir}: " + ", ".join(written))
    stale = _stale_line(out_dir, stem, written)
    if stale:
        print(stale)


#: Suffixes that make ``evaluate --out`` a file name (the metrics' own), not a folder.
_METRICS_SUFFIXES = (".json", ".csv")


def _metrics_prefix(out, stem: str, beside: Path) -> tuple[Path, str | None]:
    """Where ``evaluate`` writes ``<prefix>.json`` and ``<prefix>.csv``, and a note.

    ``out`` None: ``<beside>/<stem>_metrics`` (next to the prediction, not wherever the
    shell is). A folder (existing or not): ``<out>/<stem>_metrics``, as ``segment --out``
    names its metrics. A path ending in ``.json`` or ``.csv``: that name without the
    suffix, as before ``--out`` took a folder, with a note saying so.

    Raises
    ------
    ValueError
        When the folder, or the one the files go in, is an existing file (checked
        before anything is computed, so nothing is written).
    """
    if not out:
        return beside / f"{stem}_metrics", None
    path = Path(out).expanduser()
    as_file = path.suffix.lower() in _METRICS_SUFFIXES and not path.is_dir()
    folder = path.parent if as_file else path
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out {out}: {existing} is a file, not a folder")
    if not as_file:
        return folder / f"{stem}_metrics", None
    prefix = path.with_suffix("")
    return prefix, (
        f"--out {out} names a file: writing {prefix}.json and {prefix}.csv "
        "(--out takes a folder, as for segment)"
    )


def _roi_arg(args, read) -> tuple:
    """``(roi, note)`` of ``--roi MASK`` (``read(path, what)``: the file on the input's
    grid, and the note saying how), ``(None, "")`` without it; a bad ``--roi-margin``, a
    margin without a region, a fractional or an empty region: one-line errors. The
    margin is applied by the caller."""
    import numpy as np

    if not (math.isfinite(args.roi_margin) and args.roi_margin >= 0):
        raise ValueError(f"--roi-margin must be a distance >= 0; got {args.roi_margin:g}")
    if args.roi_margin and not args.roi:
        raise ValueError("--roi-margin grows the --roi region: give --roi MASK too")
    if not args.roi:
        return None, ""
    roi, note = read(args.roi, "the region of interest")
    roi = np.asarray(roi)
    name = Path(args.roi).name
    if roi.dtype.kind == "f" and not np.all(np.isin(roi, (0.0, 1.0))):
        raise ValueError(
            f"the region of interest {name} holds fractional values: give a mask "
            "(0 outside, nonzero inside)"
        )
    if not roi.any():
        raise ValueError(f"the region of interest {name} is empty (all 0)")
    return roi, note


def _evaluation_region(args, geometry, shape, gt_name: str = "the ground truth"):
    """``(region, note)`` of ``evaluate --roi``: the mask on the ground truth's grid,
    grown by ``--roi-margin``, or ``(None, "")``; bad regions are one-line errors.
    ``gt_name`` names the ground truth in the note as the prediction's note names it
    (a note about the ground truth alone is then printed once)."""
    from .inference.pipeline import grow_roi

    def read(path, what):
        vol = _read(path)
        data, roi_geometry = _spatial(vol, None, what, None, None)
        return _aligned(data, roi_geometry, geometry, shape, (f"{what} {vol.path.name}", gt_name))

    data, note = _roi_arg(args, read)  # margin, fractional and empty regions refused
    if data is None:
        return None, ""
    spacing = _geometry_spacing(geometry)
    return grow_roi(data, args.roi_margin, spacing=spacing, shape=shape), note


def _evaluate(args) -> None:
    import numpy as np

    from .data.io import volume_stem
    from .topology.metrics import compute_metrics

    pred_vol = _read(args.pred)
    gt_vol = _read(args.gt)
    override = _spacing(args, pred_vol) if args.spacing is not None else None
    pred_data, pred_geometry = _spatial(pred_vol, None, "the prediction", override, None)
    # a newcomer's .npy files with --spacing 5 0.994 0.994 gave "HD95 ... units"
    pred_geometry = _with_unit(pred_geometry, args.unit, f"the prediction {pred_vol.path.name}")
    gt_data, gt_geometry = _spatial(
        gt_vol, None, "the ground truth", override, None, unit=pred_geometry.unit
    )
    gt_geometry = _with_unit(gt_geometry, args.unit, f"the ground truth {gt_vol.path.name}")
    # the prediction on the ground truth's grid (same voxels reordered), or a refusal
    # naming the difference: never a score of two volumes that do not overlay
    pred_data, note = _aligned(
        pred_data,
        pred_geometry,
        gt_geometry,
        gt_data.shape,
        (f"the prediction {pred_vol.path.name}", f"the ground truth {gt_vol.path.name}"),
    )
    pred = _as_labels(pred_data, pred_vol.path.name, threshold=args.threshold)
    gt = _as_labels(gt_data, gt_vol.path.name)
    region, roi_note = _evaluation_region(
        args, gt_geometry, gt.shape, f"the ground truth {gt_vol.path.name}"
    )
    if pred.dtype == bool and pred_data.dtype.kind == "f":
        # a newcomer's probability map scored Dice 0.6955 without a word of the cut; said
        # once every input is read (a refusal stays one line)
        print(
            f"napari-topo: note: the prediction {pred_vol.path.name} holds fractional values "
            f"(a probability): scored as its voxels above {args.threshold:g} (--threshold)",
            file=sys.stderr,
        )
    if region is not None:  # both cut to it, as segment --gt --roi scores
        pred, gt = np.where(region, pred, 0), np.where(region, gt, 0)
    from ._plugin import is_label_volume

    # the reader's rule: an image, not labels (still scored). A prediction of integer
    # grey levels (the input image given as PRED) was scored in silence: Recall 1.0
    for what, vol_, labels in (("ground truth", gt_vol, gt), ("prediction", pred_vol, pred)):
        if not is_label_volume(labels):
            print(
                f"napari-topo: note: the {what} {vol_.path.name} looks like an intensity "
                f"image ({labels.dtype}, many grey levels or negative values), not a mask "
                "or labels; every value below is scored as a tree id (nonzero: vessel)",
                file=sys.stderr,
            )
        elif not np.any(labels):
            # a newcomer's empty ground truth scored Dice 0 and nan, without a word
            undefined = (
                "Recall, Tsens and HD95 are undefined (nan) and Dice is 0 unless both are empty"
                if what == "ground truth"
                else "Precision, Tprec and HD95 are undefined (nan)"
            )
            where_ = "" if region is None else " inside the region of interest"
            print(
                f"napari-topo: note: the {what} {vol_.path.name} holds no vessel{where_}: "
                f"{undefined}",
                file=sys.stderr,
            )
    spacing = (
        tuple(args.spacing)
        if args.spacing is not None
        else (_geometry_spacing(gt_geometry) or _geometry_spacing(pred_geometry))
    )
    if args.unit is not None and spacing is None:
        # HD95 stays in voxels without a voxel size: --unit alone named nothing
        raise ValueError(
            f"--unit {args.unit} names the unit of a voxel size, and neither file states "
            "one: give --spacing Z Y X too"
        )
    prefix, out_note = _metrics_prefix(args.out, volume_stem(pred_vol.path), pred_vol.path.parent)
    metrics = compute_metrics(pred, gt, spacing=spacing)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    # a second evaluate of the same prediction (another ground truth, --roi), or one after
    # segment wrote them, writes the same names: say so, or those scores go without a word
    replaced = prefix.with_name(prefix.name + ".json").exists()
    js, cs = _write_metrics(metrics, prefix)
    sp = "" if spacing is None else f" (spacing {tuple(float(s) for s in spacing)})"
    for text in dict.fromkeys((note, roi_note, out_note)):  # each note once
        if text:
            print(f"note: {text}")
    where = "whole volume" if region is None else f"inside the region of interest {args.roi}"
    unit = " " + _length_unit(_geometry_spacing(gt_geometry), gt_geometry)  # as grow_roi
    margin = (
        f" grown by {args.roi_margin:g}{unit}" if region is not None and args.roi_margin else ""
    )
    print(f"{pred_vol.path.name} against {gt_vol.path.name}{sp}, {where}{margin}:")
    unit_of = gt_geometry if _geometry_spacing(gt_geometry) else pred_geometry
    print(_metrics_table(metrics, _length_unit(spacing, unit_of)))
    again = " (replacing the scores written there before; --out ANOTHER_FOLDER keeps both)"
    print(f"wrote {js} and {cs}" + (again if replaced else ""))


def _weights_check(card) -> str:
    """One line: whether the weights file beside ``card`` has the SHA-256 it records
    (what loading checks; a newcomer's changed byte was only refused at segment)."""
    from .models.registry import sha256_file

    weights = card.weights_path
    if weights is None or not weights.is_file():
        return f"weights: missing ({weights}): this model cannot be loaded"
    if not card.sha256:
        return f"weights: {weights} (the card records no SHA-256: loading is refused)"
    if sha256_file(weights) != card.sha256:
        return (
            f"weights: {weights} DIFFERS from the SHA-256 its card records: the file was "
            "changed or replaced, and loading it is refused"
        )
    return f"weights: {weights} (its SHA-256 matches the card)"


def _models(name: str | None = None) -> None:
    from .inference.pipeline import DEFAULT_MODEL
    from .models.registry import (
        ModelCard,
        ModelNotFoundError,
        describe_card,
        list_models,
        model_card,
    )

    if name is not None:
        try:
            card = model_card(name)
        except ModelNotFoundError:
            # a card whose weights are missing is still described (the weights line
            # says they are missing); anything else is refused as segment refuses it
            path = Path(name).expanduser()
            if path.suffix != ".json" or not path.is_file():
                raise
            card = ModelCard.from_json(path)
        lines = describe_card(card)
        if card.name == DEFAULT_MODEL:  # a user's model cannot take a shipped name
            lines[0] += " (default)"
        lines.append(_weights_check(card))
        print("\n".join(lines))
        return
    cards = list_models()
    if not cards:
        print("no pretrained models are installed")
    # unet3d-voxel-head (a fine-tuned voxel head) is wider than the shipped models' names
    arch_width = max([8] + [len(c.architecture) for c in cards])
    for card in cards:
        metrics = card.metrics if isinstance(card.metrics, dict) else {}
        test = (metrics.get("test") or {}).get("summary") or {}
        if test:  # the held-out synthetic test set (napari-topo evaluate-models)
            means = {k: (test.get(k) or {}).get("mean") for k in ("Dice", "clDice")}
            label = "synthetic test"
        else:
            means = {k: metrics.get("validation", {}).get(k) for k in ("Dice", "clDice")}
            label = "validation"
        scores = ", ".join(f"{k} {v:.3f}" for k, v in means.items() if v is not None)
        default = " (default)" if card.name == DEFAULT_MODEL else ""
        print(
            f"{card.name:<16} {card.architecture:<{arch_width}} {card.summary}"
            + (f" [{label}: {scores}]" if scores else "")
            + default
        )
    from .models.registry import user_models_dir

    sys.stdout.flush()  # the list first, then the notes (both on one terminal)
    print(
        "(synthetic test: the held-out generated volumes of 'napari-topo evaluate-models'; "
        "they rank differently on a real CT and two-photon stacks: 'napari-topo models "
        "NAME' gives a model's scores there, the README's 'On real data' the details)",
        file=sys.stderr,
    )
    print(
        f"(your own models, e.g. from 'napari-topo finetune', go in {user_models_dir()}; "
        "'napari-topo models NAME' prints a model's card)",
        file=sys.stderr,
    )


def main(argv=None) -> int:
    """Entry point of the ``napari-topo`` script."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            _unknown_options(parser, args, extra)
    except _UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        if args.command == "demo":
            if args.size < 32:
                raise ValueError(f"--size must be at least 32, got {args.size}")
            if args.gui:
                print("napari-topo: importing napari…", file=sys.stderr, flush=True)
                import napari

                def say(line: str) -> None:
                    print(f"napari-topo: {line}", file=sys.stderr, flush=True)

                open_demo_viewer(say=say)
                say("ready: the napari window is open (close it to quit).")
                napari.run()
            else:
                run_demo(args.size, args.seed, model=args.model)
        elif args.command == "segment":
            _segment(args)
        elif args.command == "evaluate":
            _evaluate(args)
        elif args.command == "train":
            _train(args)
        elif args.command == "evaluate-models":
            _evaluate_models(args)
        elif args.command == "models":
            _models(args.name)
        elif args.command == "finetune":
            _finetune(args)
    except (ValueError, OSError, MemoryError) as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"napari-topo: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nnapari-topo: interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0


# --------------------------------------------------------------------------------------
# finetune (issue 10): a self-contained block
# --------------------------------------------------------------------------------------


def _add_finetune_parser(sub) -> None:
    ft = sub.add_parser(
        "finetune",
        help="fine-tune a model on your own (corrected) labels",
        description=(
            "Fine-tune --base on IMAGE with your LABELS (0 = background, > 0 vessel). Only "
            "the annotated voxels count: --annotated MASK, or by default the slices in "
            "which LABELS has any label (or their bounding box when most slices have one). "
            "A held-out part of the annotation checks the result, which is never worse "
            "than the base there. Saved as <name>.safetensors + <name>.json into --out "
            "(default: your models folder, see 'napari-topo models'); then "
            "'napari-topo segment IMAGE --model DIR|NAME' uses it."
        ),
    )
    ft.add_argument(
        "image",
        help="volume file (z, y, x): NIfTI, TIFF, NumPy, zarr, NRRD, MetaImage, or a DICOM "
        "series' folder",
    )
    ft.add_argument("labels", help="labels of the same voxels (mask or tree ids)")
    ft.add_argument("--base", default="unet-dice", help="model to start from (default unet-dice)")
    ft.add_argument("--minutes", type=float, help="time budget in minutes (default 5)")
    ft.add_argument("--steps", type=int, help="step budget (stops at whichever comes first)")
    ft.add_argument("--out", help="folder to save into (default: your models folder)")
    ft.add_argument(
        "--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), help="override voxel size"
    )
    ft.add_argument("--annotated", help="binary mask of the voxels you labelled")
    ft.add_argument(
        "--roi",
        metavar="MASK",
        help="region of interest on the image's grid (nonzero inside): only the annotated "
        "voxels inside it count. Give it only when the labels outside it cannot be "
        "trusted (uncorrected model output); a CT mask cut to the liver by segment --roi "
        "did better without it (the tissue outside taught as background)",
    )
    ft.add_argument(
        "--roi-margin",
        type=float,
        default=0.0,
        metavar="D",
        help="grow --roi by this distance, in the image's unit (voxels when it states "
        "none; default 0), as segment's",
    )
    ft.add_argument("--name", help="name of the new model (default <base>-ft-<date>-<time>)")
    ft.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu")
    ft.add_argument(
        "--threads",
        type=int,
        help="CPU threads (default: OMP_NUM_THREADS if set, else every core this process may use)",
    )
    ft.add_argument("--seed", type=int, default=0, help="seed of sampling and augmentation")
    ft.add_argument(
        "--layers",
        choices=(DEFAULT_LAYERS, *LAYERS),
        default=DEFAULT_LAYERS,
        help="what trains: head (the network frozen; a voxel classifier on its output "
        "and image features of the whole volume, in two stages, the second reading the "
        "first's output around each voxel; a few minutes at most; segmenting with the "
        "result takes longer, and it cannot be segmented chunk by chunk to OME-Zarr), "
        "all (every weight, with the base model's own loss), decoder (the encoder "
        "frozen: the base model's features are kept; much worse than all when the "
        "labels are a few slices at one end) or auto (default: head on a U-Net base, "
        "which did better than all on every real volume measured, all on a TopNet)",
    )
    ft.add_argument(
        "--unit",
        choices=UNIT_CHOICES,
        help="the unit of the voxel size when the image states none (.npy, a TIFF "
        "without it), as segment's --unit: the card then says it. An image that states "
        "another unit is refused",
    )
    ft.add_argument(
        "--key",
        help="array name inside an .npz file or zarr group, or the SeriesInstanceUID of "
        "a series in a DICOM folder (IMAGE)",
    )


def _finetune_result_lines(card) -> list[str]:
    """What ``napari-topo finetune`` says about a fine-tuned model's ``card``: held-out
    scores before and after, whether training or only the threshold made the change,
    the threshold chosen and any note."""
    from .models.registry import DEFAULT_THRESHOLD, steps_text

    before, after = card.metrics["validation_before"], card.metrics["validation"]
    t = card.training
    steps = steps_text(t)
    lines = [
        f"held-out annotation, segmented as segment does: Dice {before['Dice']:.3f} -> "
        f"{after['Dice']:.3f}, clDice {before['clDice']:.3f} -> {after['clDice']:.3f} "
        f"(threshold {before.get('threshold', DEFAULT_THRESHOLD):g} -> "
        f"{card.mask_threshold:g}; base {t['fine_tuned_from']['name']}; {steps} "
        f"in {t['wall_time_s']:.0f} s, "
        + (
            "the base model's weights kept"
            if t.get("kept_base")
            else f"best on the held-out "
            f"{'part' if t.get('layers') == 'head' else 'patches'} at step {t['best_step']}"
        )
        + f"; stopped: {t['stopped']})"
    ]
    from .training.head import made_by_head

    made = made_by_head(t)  # a newcomer could not tell what --layers head had made
    if made:
        lines.append(f"the new model is {made}; segment runs both")
    tuned = card.threshold not in (None, DEFAULT_THRESHOLD)
    if t.get("kept_base"):
        # the step the patches preferred is named: the progress lines called it the best
        lines.append(t["kept_base"] + (", the change is the mask threshold's" if tuned else ""))
    elif t["best_step"] == 0:
        # a newcomer read a 0.603 -> 0.621 after one step as a training gain
        lines.append(
            "no training step beat the base model on the held-out part: the weights are "
            "the base model's" + (", the change is the mask threshold's" if tuned else "")
        )
    if tuned:
        # the choice is by the mean of Dice and clDice: a newcomer read "edges best (0.5:
        # Dice 0.728)" beside a Dice of 0.714 at the chosen cut as a contradiction
        at, half = card.metrics.get("validation") or {}, card.metrics["validation_at_0.5"]
        lines.append(
            f"mask threshold {card.threshold:g}: the best mean of Dice and clDice on the "
            f"held-out part (Dice {at.get('Dice', math.nan):.3f}, clDice "
            f"{at.get('clDice', math.nan):.3f}; at 0.5: {half.get('Dice', math.nan):.3f}, "
            f"{half.get('clDice', math.nan):.3f}); segment uses it unless you give --threshold"
        )
    from .training.finetune import one_score_fell

    fell = one_score_fell(card)  # a newcomer read "Dice 0.710 -> 0.702 ... saved" as worse
    if fell:
        lines.append(fell)
    within = ((t.get("data") or {}).get("validation_part") or {}).get("within")
    if within:
        # a newcomer read a gain on bands of the one painted slice as a gain everywhere
        ks = ", ".join(str(k) for k in within["slices"])
        plural = "s" if len(within["slices"]) > 1 else ""
        others = "".join(
            f" and of those along axis {a} ({', '.join(str(i) for i in ix)})"
            for a, ix in (within.get("other_axes") or {}).items()
        )
        lines.append(
            f"held-out part: bands of rows of the labelled slice{plural} "
            f"{ks} (axis {within['axis']}){others}, which tell little of the other slices: "
            "label more slices, or look at the others after segment"
        )
    if t.get("note"):
        lines.append(f"note: {t['note']}")
    return lines


def _finetune_printer(stream=None):
    """``progress(FinetuneProgress)``: a line per validation, a bar on a terminal."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    bar_open = [False]  # a terminal's training bar (written with \r) needs its line ended

    def end_bar() -> str:
        prefix, bar_open[0] = ("\n" if bar_open[0] else ""), False
        return prefix

    def progress(p) -> None:
        if p.phase == "train" and tty:
            pct = int(100 * p.fraction)
            bar = "#" * (pct // 5)
            stream.write(f"\rfine-tuning: [{bar:<20}] step {p.step} loss {p.loss:.4f}")
            stream.flush()
            bar_open[0] = True
        elif p.phase == "validate" and p.validation is not None:
            v, best = p.validation, p.best or p.validation
            prefix = end_bar()
            what = "base model" if p.step == 0 else f"step {p.step}"
            if v.get("stage") == 2:  # a voxel head's second stage (steps counted on)
                what = f"stage 2, {what}"
            print(
                f"{prefix}{what}: held-out Dice {v['Dice']:.3f}, clDice "
                f"{v['clDice']:.3f} "
                f"(best so far, by their mean: Dice {best['Dice']:.3f}, clDice "
                f"{best['clDice']:.3f}) [{p.elapsed_s:.0f} s]",
                file=stream,
                flush=True,
            )
        elif p.phase == "validate" and p.message:  # the held-out part segmented at the end
            print(f"{end_bar()}fine-tuning: {p.message}", file=stream, flush=True)
        elif p.phase == "prepare" and p.input is not None:
            print(f"input: {p.input}", flush=True)  # stdout, as segment's
        elif p.phase == "prepare":  # also the minimum steps' notice, after the bar's steps
            print(f"{end_bar()}fine-tuning: {p.message}", file=stream, flush=True)

    return progress


def _finetune(args) -> None:
    import os
    import shlex

    import numpy as np

    from .inference.device import pick_device
    from .models.registry import (
        WEIGHTS_DIR,
        ModelCard,
        get_card,
        user_models_dir,
    )
    from .training.finetune import (
        annotated_region,
        check_labels,
        check_layers_for,
        env_threads,
        finetune,
        save_finetuned,
        unchanged_from_base,
        usable_cores,
    )

    # every input is checked before anything is trained or written
    if args.minutes is not None and not (math.isfinite(args.minutes) and args.minutes > 0):
        raise ValueError(f"--minutes must be a positive number; got {args.minutes}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be at least 1; got {args.steps}")
    # the base model before any volume is read (a newcomer's TopNet base with --layers
    # head was refused only after the image and labels were read)
    base_path = args.base
    if not (
        os.sep in base_path or "/" in base_path or base_path.endswith((".json", ".safetensors"))
    ):
        try:
            base_card = get_card(base_path)
        except ValueError:
            if not Path(base_path).is_dir():
                raise
        else:
            check_layers_for(args.layers, base_card)
    elif not Path(base_path).exists():
        raise ValueError(f"no such base model file or folder: {base_path}")
    vol = _read(args.image, args.key)
    spacing = _spacing(args, vol)
    shape = tuple(vol.data.shape)
    if len(shape) != 3:
        raise ValueError(f"{vol.path.name} is not a 3D (z, y, x) volume: shape {shape}")
    override = spacing if args.spacing is not None else None
    if args.unit is not None and override is None and _geometry_spacing(vol.geometry) is None:
        raise ValueError(
            f"--unit {args.unit} names the unit of a voxel size, and {vol.path.name} states "
            "none: give --spacing Z Y X too"
        )
    # the unit first, so that --spacing is read in it (as segment reads them)
    image_geometry = _with_unit(vol.geometry, args.unit, f"the image {vol.path.name}")
    if override is not None:
        image_geometry = image_geometry.with_spacing(override)

    def on_image_grid(path, what):
        """A file's volume on the image's grid (lengths in the image's unit, flips and
        permutations undone) and the note saying so, or a one-line refusal, as
        ``segment --gt`` does: labels in mm beside an image in um were refused."""
        other = _read(path)
        data, geometry = _spatial(other, None, what, override, None, unit=image_geometry.unit)
        names = (f"{what} {other.path.name}", f"the image {vol.path.name}")
        return _aligned(data, geometry, image_geometry, shape, names)

    lab_data, lab_note = on_image_grid(args.labels, "the labels")
    notes = [lab_note]  # said once every input passed (a refusal stays one line)
    labels = check_labels(lab_data, shape)
    annotated = None
    if args.annotated:
        annotated, ann_note = on_image_grid(args.annotated, "the annotated mask")
        notes.append(ann_note)
    region, info = annotated_region(labels, annotated)  # empty / non-binary: one line
    # only the annotated voxels inside the region of interest count (labels that cannot be
    # trusted outside it; a CT mask cut to the liver did better without it). On the
    # image's grid as the labels are (--spacing and --unit applied)
    inside, roi_note = _roi_arg(args, on_image_grid)
    notes.append(roi_note)
    if inside is not None:
        from .inference.pipeline import grow_roi

        roi_name = Path(args.roi).name
        inside = np.asarray(grow_roi(inside, args.roi_margin, spacing=spacing, shape=shape), bool)
        margin = f" grown by {args.roi_margin:g}" if args.roi_margin else ""
        if not np.any((labels > 0) & region & inside):
            raise ValueError(
                "none of the labelled vessel voxels of the annotated region lies inside the "
                f"region of interest {roi_name}{margin}: give the region the labels belong to"
            )
        kept = int(np.count_nonzero(region & inside))
        info = {
            **info,
            "description": f"{info['description']}, inside the region of interest "
            f"{roi_name}{margin} ({kept} voxels)",
        }
    del region
    pick_device(args.device)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1; got {args.threads}")
    base_name = Path(base_path).stem if ("/" in base_path or os.sep in base_path) else base_path
    name = args.name or f"{base_name}-ft-{time.strftime('%Y%m%d-%H%M%S')}"
    ModelCard(name=name, architecture="unet3d")  # the name is checked here
    if (WEIGHTS_DIR / f"{name}.json").is_file():
        raise ValueError(f"{name!r} is the name of a shipped model; choose another --name")
    out_dir = Path(args.out).expanduser() if args.out else user_models_dir()
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file, not a folder")
    if (out_dir / f"{name}.json").exists():
        raise ValueError(f"a model {name!r} already exists in {out_dir}; choose another --name")

    # as segment says it: the model's zoom follows the voxel size, and the saved model
    # then expects the same one (a newcomer's .npy fine-tuned with no word of it)
    notes.append(_no_voxel_size_note(vol.path.name, vol.geometry, args.spacing, vol.assumed))
    for note in filter(None, notes):
        print(f"note: {note}")
    print(
        f"annotated region: {info['description']}"
        + (
            "; pass --annotated MASK if they are not labelled"
            if info.get("method") == "box"
            else ""
        )
    )
    command = shlex.join(
        ["napari-topo", "finetune", args.image, args.labels, "--base", args.base]
        + [
            item
            for flag, value in (
                ("--minutes", args.minutes),
                ("--steps", args.steps),
                ("--out", args.out),
                ("--annotated", args.annotated),
                ("--roi", args.roi),
                ("--roi-margin", args.roi_margin or None),
                ("--name", name),
                ("--device", args.device),
                ("--seed", args.seed),
                ("--layers", args.layers),
            )
            if value is not None
            for item in (flag, str(value))
        ]
        + (["--spacing", *map(str, args.spacing)] if args.spacing else [])
        + (["--unit", args.unit] if args.unit else [])
    )
    module, card = finetune(
        vol.data,
        labels,
        args.base,
        annotated=annotated,
        roi=inside,
        spacing=spacing,
        minutes=args.minutes,
        steps=args.steps,
        device=args.device,
        progress=_finetune_printer(),
        seed=args.seed,
        layers=args.layers,
        name=name,
        threads=args.threads or env_threads() or usable_cores(),
        command=command,
        unit=getattr(image_geometry, "unit", None),
    )
    unchanged = unchanged_from_base(card)
    if unchanged:
        # as the Fine-tune dock does: a copy of the base model is not a fine-tuned one
        for line in _finetune_result_lines(card) if card.training.get("steps") else ():
            print(line)
        raise ValueError(f"{unchanged}. Nothing was written (it would be the base model).")
    saved = save_finetuned(module, card, out_dir)
    for line in _finetune_result_lines(card):
        print(line)
    # a folder is a model only while it holds one: name the card when it holds more
    alone = len(list(out_dir.glob("*.json"))) == 1
    use = name if not args.out else out_dir if alone else saved.path
    print(
        f"saved {saved.path.with_suffix('.safetensors').name} and {saved.path.name} to "
        f"{out_dir}; segment with: napari-topo segment IMAGE --model {use} --out DIR"
    )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
