"""Where a model's misses are on converted real data: vessel rims, deep cores or whole pieces.

Usage::

    python benchmarks/real/misses.py CONVERTED_DIR --results DIR \
        [--models unet-dice ...] [--cases NAME ...]

Each model runs as in ``run.py`` (``segment`` with the defaults, the case's spacing and
roots). Inside the case's region of interest, the annotated vessel voxels are binned by
their depth inside the annotation (Euclidean distance to the background, in voxels of
the finest axis, as ``scoring.py``'s core depth): a model that misses mostly the
outermost bin draws the vessels narrower than the annotators did; one that misses the
deep bins draws them hollow or not at all. Also reported: how far a missed voxel lies
from the prediction (physical units), the median image value of found, missed and
background voxels, and the share of annotated voxels in 26-connected annotated pieces
the model does not touch at all.

``misses.json`` and ``misses.md`` are written in ``--results``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

#: depth bins (finest-axis voxels) of the annotated voxels: (low, high]
DEPTH_BINS = ((0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 5.0), (5.0, np.inf))


def miss_profile(pred, gt, image, roi=None, spacing=None) -> dict:
    """Where the missed annotated voxels are.

    Parameters
    ----------
    pred, gt : (z, y, x) array_like of bool
        Prediction and annotation.
    image : (z, y, x) array_like
        The intensities (medians of found, missed and background voxels).
    roi : (z, y, x) array_like of bool, optional
        Only voxels inside count (default: all).
    spacing : sequence of 3 float, optional
        Voxel size; depths are in voxels of the finest axis, distances in its units.

    Returns
    -------
    dict
        ``depth_bins``: one ``{"depth": [low, high], "share": float, "sensitivity":
        float}`` per :data:`DEPTH_BINS` (share of the annotated voxels in the bin, and the
        fraction of them found); ``missed_distance``: 25th, 50th, 75th and 90th
        percentiles of a missed voxel's distance to the nearest predicted voxel (spacing
        units; None without a miss or a prediction); ``median_found``,
        ``median_missed``, ``median_background``; ``untouched_share`` (annotated voxels
        in pieces with no predicted voxel); ``sensitivity``.

    Raises
    ------
    ValueError
        Arrays of different shapes.
    """
    import cc3d
    from scipy import ndimage as ndi

    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    img = np.asarray(image)
    r = np.ones(g.shape, bool) if roi is None else np.asarray(roi, bool)
    if not (p.shape == g.shape == img.shape == r.shape):
        raise ValueError(
            f"pred, gt, image and roi must have one shape; got {p.shape}, {g.shape}, "
            f"{img.shape}, {r.shape}"
        )
    sp = np.ones(3) if spacing is None else np.asarray(spacing, float)
    depth = ndi.distance_transform_edt(g, sampling=sp / sp.min())
    inside = g & r
    n = max(int(inside.sum()), 1)
    bins = []
    for lo, hi in DEPTH_BINS:
        sel = inside & (depth > lo) & (depth <= hi)
        k = int(sel.sum())
        bins.append(
            {
                "depth": [lo, None if np.isinf(hi) else hi],
                "share": k / n,
                "sensitivity": float(p[sel].mean()) if k else None,
            }
        )
    missed = inside & ~p
    distance = None
    if missed.any() and p.any():
        to_pred = ndi.distance_transform_edt(~p, sampling=sp)
        distance = [float(v) for v in np.percentile(to_pred[missed], [25, 50, 75, 90])]
    labels = cc3d.connected_components(g, connectivity=26)
    touched = np.unique(labels[p & g])
    untouched = inside & ~np.isin(labels, touched)

    def median(mask):
        return float(np.median(img[mask])) if mask.any() else None

    return {
        "depth_bins": bins,
        "missed_distance": distance,
        "median_found": median(inside & p),
        "median_missed": median(missed),
        "median_background": median(r & ~g),
        "untouched_share": float(untouched.sum() / n),
        "sensitivity": float(p[inside].mean()) if inside.any() else None,
    }


def _markdown(rows) -> str:
    head = ["case", "model", "sens."]
    head += [
        f"depth {lo:g}-{'' if np.isinf(hi) else f'{hi:g}'} vox: share / sens."
        for lo, hi in DEPTH_BINS
    ]
    head += [
        "missed: distance to pred., spacing units (p25/50/75/90)",
        "median found / missed / bg",
        "untouched",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        m = row["profile"]
        cells = [row["case"], row["model"], f"{m['sensitivity']:.3f}"]
        for b in m["depth_bins"]:
            s = "-" if b["sensitivity"] is None else f"{b['sensitivity']:.2f}"
            cells.append(f"{b['share']:.2f} / {s}")
        d = m["missed_distance"]
        cells.append("-" if d is None else "/".join(f"{v:.1f}" for v in d))
        cells.append(
            " / ".join(
                "-" if m[k] is None else f"{m[k]:.0f}"
                for k in ("median_found", "median_missed", "median_background")
            )
        )
        cells.append(f"{m['untouched_share']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("converted", help="OUT_DIR of convert.py (or one case folder)")
    ap.add_argument("--results", required=True, help="folder for misses.json / misses.md")
    ap.add_argument("--models", nargs="+", default=["unet-dice"], help="registry names or cards")
    ap.add_argument("--cases", nargs="+", help="case names (or data/case, or data) to run")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import find_cases, load_case  # the benchmark's own reading of a case

    from napari_topo.inference import segment

    cases = find_cases(args.converted, args.cases)
    if not cases:
        print(f"no converted case (meta.json) under {args.converted}", file=sys.stderr)
        return 2
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for folder in cases:
        case = load_case(folder)
        name = f"{case['meta'].get('data', '?')}/{case['meta'].get('case', folder.name)}"
        for model in args.models:
            t0 = time.perf_counter()
            res = segment(case["image"], model, spacing=case["spacing"], sources=case["roots"])
            seconds = time.perf_counter() - t0
            profile = miss_profile(
                res.mask, case["gt"], case["image"], case["roi"], case["spacing"]
            )
            rows.append({"case": name, "model": str(model), "seconds": seconds, "profile": profile})
            print(f"{name} {model}: sensitivity {profile['sensitivity']:.3f}", flush=True)
            (out / "misses.json").write_text(json.dumps(rows, indent=1))
            (out / "misses.md").write_text(_markdown(rows))
    print(_markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
