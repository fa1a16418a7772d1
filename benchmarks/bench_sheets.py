"""Calibrate and check the sheet filter (``segment(..., sheets="drop")``) on synthetic data.

Usage::

    python benchmarks/bench_sheets.py [--model unet-dice] [--seeds 8] [--results DIR]
    python benchmarks/bench_sheets.py --time-mask MASK [--spacing Z Y X]   # its cost

The default model segments (vessel range off, so the CT sheets reach the filter):

* generator volumes of the four styles (``make_vessel_volume(appearance=...)``: ct,
  microscopy, generic, classic; 96^3, radii 1-8 voxels; seeds 20000 on, none of them in
  the synthetic test set);
* three CT phantoms (:func:`~napari_topo.data.phantoms.ct_phantom`: a bone plate) and a
  time-of-flight MRA-like head (:func:`~napari_topo.data.phantoms.tof_mra_head`: the
  scalp).

Every mask piece of at least :data:`~napari_topo.inference.sheets.SHEET_MIN_SIZE` voxels
is a *vessel piece* when at least half of it is vessel in the ground truth, else a
*false piece*; the table gives, per threshold, the share of vessel-piece and
false-piece voxels whose piece has a median ``R_A`` below it (what the filter would
drop), and the lowest medians of each kind. Then Dice with ``sheets="keep"`` and
``"drop"`` on each phantom. Nothing real is used: the threshold shipped
(:data:`~napari_topo.inference.sheets.SHEET_RATIO`) comes from this table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def piece_rows(name, mask, truth, spacing):
    from scipy import ndimage as ndi

    from napari_topo.inference.sheets import SHEET_MIN_SIZE, line_ratio

    lab, n = ndi.label(mask, np.ones((3, 3, 3)))
    if n == 0:
        return []
    idx = np.arange(1, n + 1)
    size = ndi.sum(mask, lab, idx)
    hit = ndi.sum(truth & mask, lab, idx)
    r = line_ratio(mask, spacing)
    med = ndi.median(r, lab, idx)
    return [
        {"case": name, "voxels": int(s), "vessel_share": float(h / s), "median": float(m)}
        for s, h, m in zip(size, hit, med, strict=True)
        if s >= SHEET_MIN_SIZE
    ]


def time_mask(path: Path, spacing=None) -> int:
    """Time :func:`~napari_topo.inference.sheets.drop_sheets` on a saved mask."""
    import tracemalloc

    from napari_topo.data.io import read_volume
    from napari_topo.inference.sheets import drop_sheets

    vol = read_volume(path)
    mask = np.asarray(vol.data) > 0
    sp = spacing or vol.spacing
    out = {"vessel": mask.astype(np.float32)}
    tracemalloc.start()
    t0 = time.perf_counter()
    n = drop_sheets(out, 0.5, spacing=sp)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    print(
        f"{path.name}: {mask.shape}, {int(mask.sum())} mask voxels, spacing {sp}: "
        f"sheet-like pieces dropped: {n}, in {seconds:.1f} s; peak traced memory "
        f"{peak / 2**30:.2f} GiB"
    )
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet-dice")
    ap.add_argument("--seeds", type=int, default=8, help="generator seeds per style")
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/sheets"))
    ap.add_argument(
        "--time-mask",
        type=Path,
        help="only time drop_sheets (seconds, peak traced memory) on this saved mask "
        "(any volume napari-topo reads; nonzero = vessel), e.g. a segment run's _mask file",
    )
    ap.add_argument("--spacing", type=float, nargs=3, help="voxel size for --time-mask")
    args = ap.parse_args(argv)
    if args.time_mask is not None:
        return time_mask(args.time_mask, args.spacing)

    import torch

    from napari_topo.data.phantoms import ct_phantom, tof_mra_head
    from napari_topo.data.synthetic import make_vessel_volume
    from napari_topo.inference import segment
    from napari_topo.topology.metrics import dice

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    rows, phantoms = [], []
    for seed in range(20000, 20000 + args.seeds):
        for style in ("ct", "microscopy", "generic", "classic"):
            v = make_vessel_volume(
                (96, 96, 96), n_trees=2, seed=seed, radius_range=(1.0, 8.0), appearance=style
            )
            a = segment(v.image, args.model, device="cpu", vessel_range=None, sheets="keep")
            rows += piece_rows(f"{style}-{seed}", a.mask, v.mask, (1.0, 1.0, 1.0))
        print(f"seed {seed} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    cases = [
        (f"ct_phantom-{s}", ct_phantom(seed=s), "hu", "vessels", (1.0, 0.7, 0.7)) for s in range(3)
    ]
    mra = tof_mra_head()
    cases.append(("tof_mra_head", mra, "image", "vessels", mra["spacing"]))
    for name, p, key, truth_key, sp in cases:
        img, truth = p[key], p[truth_key]
        row = {"case": name}
        for mode in ("keep", "drop"):
            a = segment(img, args.model, device="cpu", spacing=sp, vessel_range=None, sheets=mode)
            row[f"Dice ({mode})"] = float(dice(a.mask, truth))
            if mode == "keep":
                rows += piece_rows(name, a.mask, truth, sp)
            else:
                row["sheets dropped"] = int(a.sheets_dropped)
        phantoms.append(row)
        print(name, row, flush=True)

    med = np.array([r["median"] for r in rows])
    vox = np.array([r["voxels"] for r in rows])
    ves = np.array([r["vessel_share"] >= 0.5 for r in rows])
    lines = [
        f"# Sheet filter calibration ({args.model}, {len(rows)} pieces, "
        f"{time.perf_counter() - t0:.0f} s)",
        "",
        f"`python benchmarks/bench_sheets.py --model {args.model} --seeds {args.seeds}`",
        "",
        "| median R_A below | vessel-piece voxels dropped | false-piece voxels dropped |",
        "|---|---|---|",
    ]
    for th in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35):
        v = vox[ves & (med < th)].sum() / max(vox[ves].sum(), 1)
        f = vox[~ves & (med < th)].sum() / max(vox[~ves].sum(), 1)
        lines.append(f"| {th:g} | {v:.4f} | {f:.3f} |")
    low_v = sorted((r for r in rows if r["vessel_share"] >= 0.5), key=lambda r: r["median"])[:8]
    low_f = sorted((r for r in rows if r["vessel_share"] < 0.5), key=lambda r: r["median"])[:12]
    lines += [
        "",
        "Lowest medians, vessel pieces: "
        + ", ".join(f"{r['median']:.3f} ({r['case']}, {r['voxels']} vx)" for r in low_v),
    ]
    lines += [
        "",
        "Lowest medians, false pieces: "
        + ", ".join(f"{r['median']:.3f} ({r['case']}, {r['voxels']} vx)" for r in low_f),
    ]
    lines += ["", "| phantom | Dice (keep) | Dice (drop) | sheets dropped |", "|---|---|---|---|"]
    for r in phantoms:
        lines.append(
            f"| {r['case']} | {r['Dice (keep)']:.3f} | {r['Dice (drop)']:.3f} | "
            f"{r['sheets dropped']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "sheets.md").write_text(text)
    (args.results / "sheets.json").write_text(json.dumps({"pieces": rows, "phantoms": phantoms}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
