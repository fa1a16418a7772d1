"""Run napari-topo's models (and a Frangi baseline) on converted real data and score them.

Usage::

    python benchmarks/real/run.py CONVERTED_DIR --results DIR \
        [--models unet-dice unet-cldice unet-projpool topnet frangi] [--cases NAME ...]

``CONVERTED_DIR`` is the ``OUT_DIR`` of ``convert.py`` (every folder under it holding a
``meta.json`` is a case; ``--cases`` keeps those whose case name, or ``data/case``,
is listed). For each case and model:

* the model runs as a user would run it, with the defaults:
  ``napari_topo.inference.segment(volume, model, spacing=spacing, sources=roots)`` - the
  volume as stored in the NIfTI (HU for CT), its spacing, and the tree roots of
  ``roots.csv`` when the case has them; nothing else, so whatever defaults ``segment``
  has (input windowing, polarity, zoom, threshold, min_size) are what is measured;
* ``frangi`` is the classical baseline of ``frangi_baseline.py``;
* the scores (``scoring.py``) are computed inside the case's region of interest: the
  liver grown by 10 mm for 3D-IRCADb, the whole stack for vesselNN. Tree accuracy (CT,
  roots given) compares the predicted trees with 1 = portal vein, 2 = hepatic veins.

``results.json`` (every number, the settings, the inputs and the commands) and
``results.md`` (one table) are rewritten in ``--results`` after each model, so an
interrupted run keeps what it finished. Run time per case is the wall time of the
``segment`` call (or of the Frangi baseline), scoring excluded.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from frangi_baseline import frangi_segment  # noqa: E402
from scoring import ROI_MARGIN_MM, roi_from_mask, score  # noqa: E402

MODELS = ("unet-dice", "unet-cldice", "unet-projpool", "topnet", "frangi")
#: Columns of results.md: (header, key in a row, format).
COLUMNS = (
    ("Dice", "Dice", "{:.3f}"),
    ("clDice", "clDice", "{:.3f}"),
    ("Precision", "Precision", "{:.3f}"),
    ("Sensitivity", "Sensitivity", "{:.3f}"),
    ("Betti-0 err (pred / true comps)", None, None),
    ("Tree acc.", "Tree accuracy", "{:.3f}"),
    ("Core sens. (EDT>5)", "Core sensitivity", "{:.3f}"),
    ("Trees", "Trees", "{:d}"),
    ("Time (s)", "Time (s)", "{:.0f}"),
    ("CPU (s)", "CPU time (s)", "{:.0f}"),
)


def _command(argv=None) -> str:
    """The command line that ran ``main(argv)`` (``sys.argv`` when ``argv`` is None)."""
    args = sys.argv if argv is None else ["benchmarks/real/run.py", *argv]
    return shlex.join(["python", *args])


def _git_commit(folder) -> str | None:
    """Short commit of the git checkout holding ``folder`` (+ "-dirty" if it has edits)."""

    def git(*a):
        return subprocess.run(
            ["git", "-C", str(folder), *a], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--", ".") else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def find_cases(root, names=None) -> list[Path]:
    """Case folders (holding meta.json) under ``root``, sorted; filtered by ``names``."""
    root = Path(root)
    dirs = sorted({p.parent for p in root.rglob("meta.json")})
    if (root / "meta.json").is_file():
        dirs = [root]
    if names:
        keep = []
        for d in dirs:
            meta = json.loads((d / "meta.json").read_text())
            tags = {meta.get("case"), f"{meta.get('data')}/{meta.get('case')}", meta.get("data")}
            if tags & set(names):
                keep.append(d)
        dirs = keep
    return dirs


def load_case(folder) -> dict:
    """Image, spacing, ground truth, trees, roots and ROI of one converted case."""
    from napari_topo.data.io import read_volume

    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    files = meta["files"]
    img = read_volume(folder / files["image"])
    spacing = tuple(float(s) for s in (img.spacing or meta["spacing"]))
    gt = np.asarray(read_volume(folder / files["vessels"]).data) > 0
    case = {
        "meta": meta,
        "folder": folder,
        "image": np.asarray(img.data),
        "spacing": spacing,
        "gt": gt,
        "trees": None,
        "roots": None,
        "roi": None,
    }
    if files.get("trees"):
        case["trees"] = np.asarray(read_volume(folder / files["trees"]).data)
    if files.get("roots") and (folder / files["roots"]).is_file():
        with open(folder / files["roots"]) as fh:
            rows = [[int(r["z"]), int(r["y"]), int(r["x"])] for r in csv.DictReader(fh)]
        case["roots"] = np.asarray(rows, dtype=np.int64).reshape(-1, 3) if rows else None
    roi = meta.get("roi")
    if roi:
        organ = np.asarray(read_volume(folder / roi["mask"]).data) > 0
        case["roi"] = roi_from_mask(organ, spacing, float(roi.get("margin", ROI_MARGIN_MM)))
    return case


def run_model(case: dict, model: str, **settings):
    """(VesselAnalysis, settings) of ``model`` on ``case``, exactly as a user runs it.

    ``settings``: sliding-window options a user can give ``segment`` (``tile``,
    ``overlap``); none by default.
    """
    if model == "frangi":
        return frangi_segment(
            case["image"],
            spacing=case["spacing"],
            sources=case["roots"],
            radius_range=case["meta"].get("radius_range", (1.0, 5.0)),
        )
    import torch

    from napari_topo.inference import segment

    torch.manual_seed(0)
    # As a user would: the volume, the model, the spacing and (when known) the roots.
    # ``spacing`` in settings: the voxel size a user gave instead (e.g. 1 1 1 when they
    # forgot it); the scores keep the case's own.
    settings = dict(settings)
    spacing = settings.pop("spacing", None) or case["spacing"]
    try:
        return segment(case["image"], model, spacing=spacing, sources=case["roots"], **settings), {
            **settings,
            **({"spacing": spacing} if spacing != case["spacing"] else {}),
        }
    except ValueError as exc:
        # segment refuses roots it cannot place (e.g. an empty mask): score the mask the
        # model gives without them rather than losing the row (tree accuracy is then 0).
        if case["roots"] is None or "source" not in str(exc).lower():
            raise
        analysis = segment(case["image"], model, spacing=spacing, **settings)
        return analysis, {**settings, "roots": f"not usable ({exc}); trees found without them"}


def score_case(case: dict, analysis) -> dict:
    with_trees = case["trees"] is not None and case["roots"] is not None
    return score(
        analysis.mask,
        case["gt"],
        roi=case["roi"],
        spacing=case["spacing"],
        pred_trees=analysis.trees if with_trees else None,
        gt_trees=case["trees"] if with_trees else None,
    )


def _fmt(row: dict, key, fmt) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def markdown(report: dict) -> str:
    lines = [
        "# napari-topo on real data",
        "",
        f"Last run {report['date']} on {report['platform']}; code: "
        + ", ".join(sorted({r.get("code", "?") for r in report["rows"]}))
        + " (`code` of each row in results.json).",
        "",
        "| Data | Case | Model | " + " | ".join(c[0] for c in COLUMNS) + " |",
        "|---|---|---|" + "---|" * len(COLUMNS),
    ]

    def order(r):
        m = MODELS.index(r["model"]) if r["model"] in MODELS else len(MODELS)
        return r["data"], r["case"], m, r["model"]

    for r in sorted(report["rows"], key=order):
        if r.get("error"):
            lines.append(
                f"| {r['dataset']} | {r['case']} | {r['model']} | "
                f"failed: {r['error']} |" + " |" * (len(COLUMNS) - 1)
            )
            continue
        cells = []
        for _, key, fmt in COLUMNS:
            if key is None:
                cells.append(
                    f"{r['Betti-0 error']} ({r['Components (pred)']} / {r['Components (gt)']})"
                )
            else:
                cells.append(_fmt(r, key, fmt))
        lines.append(f"| {r['dataset']} | {r['case']} | {r['model']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Regions of interest: 3D-IRCADb, the liver mask grown by "
        f"{ROI_MARGIN_MM:g} mm; vesselNN, the whole stack. Tree accuracy: 3D-IRCADb "
        "portal vs hepatic veins with the two roots given. Core sensitivity: share of "
        "ground-truth voxels deeper than 5 finest-axis voxels that are predicted "
        "(near 0 = hollow vessels). Time: wall time of the `segment` call (or the Frangi "
        "filter), scoring excluded; CPU: its CPU seconds over all threads.",
        "",
        "Inputs and commands:",
        "",
    ]
    for c in report["cases"]:
        lines.append(
            f"- {c['dataset']} `{c['case']}`: {c['source']}; spacing "
            f"{' x '.join(f'{v:.4g}' for v in c['spacing'])} {c['unit']} (z, y, x); "
            f"converted with `{c['command']}`"
        )
    lines += ["", "Scored with:", ""]
    lines += [f"- `{c.strip()}`" for c in report["command"].split(" ; ")]
    lines.append("")
    return "\n".join(lines)


def card_entry(report: dict, model: str, rows=None) -> dict | None:
    """``metrics["real"]`` of ``model``'s card: per dataset of ``rows`` (default: the
    report's), the means over its cases of
    :data:`napari_topo.models.registry.REAL_SCORES` (failed rows left out; each score's
    own count where some case has none, e.g. tree accuracy without tree labels), with
    the date, commit and command that measured them; None without a scored row."""
    from napari_topo.models.registry import REAL_SCORES

    cases = {(c["data"], c["case"]): c for c in report["cases"]}
    by_data: dict = {}
    for r in report["rows"] if rows is None else rows:
        if r["model"] == model and not r.get("error"):
            by_data.setdefault(r["dataset"], []).append(r)
    if not by_data:
        return None
    datasets = []
    for name, group in by_data.items():
        entry = {
            "dataset": name,
            "n_cases": len(group),
            "cases": [r["case"] for r in group],
            "date": report["date"],
            "commit": report["commit"],
            "command": report["command"],
        }
        roi = (cases.get((group[0]["data"], group[0]["case"])) or {}).get("roi")
        if isinstance(roi, dict) and roi.get("mask"):
            organ = str(roi["mask"]).split(".")[0]
            entry["region"] = f"inside the {organ} grown by {float(roi.get('margin', 0)):g} mm"
        for k in REAL_SCORES:
            vals = [r[k] for r in group if isinstance(r.get(k), int | float) and np.isfinite(r[k])]
            if vals:
                entry[k] = float(np.mean(vals))
                if len(vals) != len(group):
                    entry[f"{k} cases"] = len(vals)
        datasets.append(entry)
    return {"datasets": datasets}


def update_cards(report: dict, models, rows=None) -> list[Path]:
    """Write :func:`card_entry` into the card of each model (registry name or card
    path; 'frangi' has none): a dataset measured now replaces that dataset's entry,
    the card's other datasets stay. The weights and their SHA-256 are untouched."""
    from napari_topo.models.registry import model_card

    written = []
    for model in models:
        if model == "frangi":
            continue
        entry = card_entry(report, model, rows)
        if entry is None:
            continue
        card = model_card(model)
        old = card.metrics.get("real") if isinstance(card.metrics, dict) else None
        kept = [
            d
            for d in (old or {}).get("datasets", [])
            if isinstance(d, dict)
            and d.get("dataset") not in {e["dataset"] for e in entry["datasets"]}
        ]
        card.metrics["real"] = {"datasets": kept + entry["datasets"]}
        card.to_json(card.path)
        written.append(Path(card.path))
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("converted", help="OUT_DIR of convert.py (or one case folder)")
    ap.add_argument("--results", required=True, help="folder for results.json / results.md")
    ap.add_argument(
        "--models",
        nargs="+",
        default=list(MODELS),
        help=f"registry names and/or 'frangi' (default: {' '.join(MODELS)})",
    )
    ap.add_argument("--cases", nargs="+", help="case names (or data/case, or data) to run")
    ap.add_argument(
        "--append",
        action="store_true",
        help="keep the rows of an existing results.json in --results (a row of "
        "the same data, case and model is replaced)",
    )
    ap.add_argument(
        "--tile", type=int, help="sliding-window tile edge (segment's default if not given)"
    )
    ap.add_argument(
        "--overlap", type=float, help="sliding-window overlap (segment's default if not given)"
    )
    ap.add_argument(
        "--tta", type=int, help="mirrored copies averaged (segment's tta; default 1, off)"
    )
    ap.add_argument(
        "--threshold",
        type=float,
        help="mask threshold on the vessel probability (segment's threshold; default 0.5)",
    )
    ap.add_argument(
        "--empty-tiles",
        choices=("skip", "run"),
        help="run: every tile goes through the network (segment's skip_empty_tiles=False); "
        "default: segment's own, skip tiles of noise alone",
    )
    ap.add_argument(
        "--vessel-range",
        nargs="+",
        metavar="off|LOW HIGH",
        help="segment's vessel_range (default: segment's own, 'auto': 100 300 HU on a CT)",
    )
    ap.add_argument(
        "--spacing",
        nargs=3,
        type=float,
        metavar=("Z", "Y", "X"),
        help="the voxel size segment is given instead of the case's own (e.g. 1 1 1: a "
        "user who forgot --spacing); scores keep the case's own",
    )
    ap.add_argument(
        "--zoom",
        type=float,
        help="segment's zoom (the resampling factor after the voxel grid; default: "
        "segment's own, 'auto')",
    )
    ap.add_argument(
        "--update-cards",
        action="store_true",
        help="write each model's per-dataset means into its card (metrics['real'], "
        "shown by 'napari-topo models NAME'); run it with every case of the README's table",
    )
    args = ap.parse_args(argv)
    options = (
        "tile",
        "overlap",
        "tta",
        "threshold",
        "vessel_range",
        "empty_tiles",
        "spacing",
        "zoom",
    )
    settings = {k: v for k in options if (v := getattr(args, k)) is not None}
    if args.update_cards and settings:
        ap.error(
            "--update-cards records a model's scores with segment's defaults; run it "
            f"without {', '.join('--' + k.replace('_', '-') for k in settings)}"
        )
    if "empty_tiles" in settings:
        settings["skip_empty_tiles"] = settings.pop("empty_tiles") == "skip"
    if "spacing" in settings:
        settings["spacing"] = tuple(settings["spacing"])
    if "vessel_range" in settings:
        given = settings["vessel_range"]
        settings["vessel_range"] = None if given == ["off"] else tuple(map(float, given))

    import napari_topo

    cases = find_cases(args.converted, args.cases)
    if not cases:
        print(
            f"no converted case (meta.json) under {args.converted}"
            + (f" matching {args.cases}" if args.cases else ""),
            file=sys.stderr,
        )
        return 2
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "napari_topo": getattr(napari_topo, "__version__", "?"),
        "commit": _git_commit(os.path.dirname(napari_topo.__file__)),
        "napari_topo_path": os.path.dirname(napari_topo.__file__),
        "platform": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "command": _command(argv),
        "models": args.models,
        "cases": [],
        "rows": [],
    }
    if args.append and (out / "results.json").is_file():
        old = json.loads((out / "results.json").read_text())
        report["rows"] = old.get("rows", [])
        report["cases"] = old.get("cases", [])
        report["command"] = " ; ".join(filter(None, [old.get("command"), report["command"]]))
    print(f"command: {_command(argv)}")
    ran = []  # this run's rows (--append keeps earlier ones in the report)

    def save():
        (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "results.md").write_text(markdown(report))

    for folder in cases:
        t0 = time.perf_counter()
        case = load_case(folder)
        meta = case["meta"]
        report["cases"] = [
            c for c in report["cases"] if (c["data"], c["case"]) != (meta["data"], meta["case"])
        ]
        report["cases"].append(
            {
                k: meta.get(k)
                for k in (
                    "dataset",
                    "data",
                    "case",
                    "source",
                    "series",
                    "command",
                    "shape",
                    "spacing",
                    "unit",
                    "roi",
                    "roots",
                    "structures",
                    "licence",
                )
            }
        )
        print(
            f"\n== {meta['dataset']} / {meta['case']}: {tuple(case['image'].shape)} "
            f"{case['image'].dtype}, spacing {case['spacing']} {meta.get('unit', '')}\n"
            f"   input: {meta['source']}\n   converted with: {meta['command']}\n"
            f"   roi: {'whole volume' if case['roi'] is None else meta['roi']}; roots: "
            f"{None if case['roots'] is None else case['roots'].tolist()} "
            f"(loaded in {time.perf_counter() - t0:.0f} s)"
        )
        for model in args.models:
            row = {
                "code": f"napari-topo {report['napari_topo']} @ {report['commit']}",
                "dataset": meta["dataset"],
                "data": meta["data"],
                "case": meta["case"],
                "model": model,
            }
            try:
                t0, c0 = time.perf_counter(), time.process_time()
                analysis, used = run_model(case, model, **({} if model == "frangi" else settings))
                row["Time (s)"] = time.perf_counter() - t0
                # CPU seconds of all threads: the fair number on a shared machine
                row["CPU time (s)"] = time.process_time() - c0
                row["Trees"] = int(analysis.result.n_trees)
                t1 = time.perf_counter()
                row.update(score_case(case, analysis))
                row["Scoring time (s)"] = time.perf_counter() - t1
                row["settings"] = used
                del analysis
            except Exception as exc:  # keep going: one failure must not lose the others
                row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
                row["traceback"] = traceback.format_exc()
            report["rows"] = [
                r
                for r in report["rows"]
                if (r["data"], r["case"], r["model"]) != (row["data"], row["case"], row["model"])
            ] + [row]
            ran.append(row)
            save()
            if row.get("error"):
                print(f"   {model:14s} FAILED {row['error']}")
            else:
                ta = row.get("Tree accuracy")
                cs = row.get("Core sensitivity")
                print(
                    f"   {model:14s} Dice {row['Dice']:.3f} clDice {row['clDice']:.3f} "
                    f"prec {row['Precision'] or 0:.3f} sens {row['Sensitivity'] or 0:.3f} "
                    f"B0err {row['Betti-0 error']} ({row['Components (pred)']}/"
                    f"{row['Components (gt)']}) "
                    + (f"tree acc {ta:.3f} " if ta is not None else "")
                    + (f"core sens {cs:.3f} " if cs is not None else "")
                    + f"trees {row['Trees']} time {row['Time (s)']:.0f}s "
                    f"(CPU {row['CPU time (s)']:.0f}s) "
                    f"(+{row['Scoring time (s)']:.0f}s scoring)"
                )
    save()
    print(f"\nwrote {out / 'results.json'} and {out / 'results.md'}")
    if args.update_cards:  # this run's rows only, not those --append kept
        for path in update_cards(report, args.models, ran):
            print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
