"""The plainest vessel image there is: four bright tubes in noise (issue 9).

Run on demand (never as a timed test)::

    python benchmarks/bench_four_tubes.py [--models unet-dice unet-cldice unet-projpool topnet
        frangi] [--seed 0] [--results DIR]

Makes the volume of ``benchmarks/real/four_tubes.py`` (uint16, 64 x 256 x 256, four tubes of
radii 1.5-4 voxels, contrast-to-noise 6, ~0.7 % vessel, seeded), runs every model as a user
would (``napari_topo.inference.segment(volume, model)``: no spacing, no roots, the
defaults) and reports per model: precision, sensitivity, Dice, clDice, the number of trees
found (``VesselAnalysis.result.n_trees``) against the true 4, the number of connected
pieces of the mask, the false-positive voxels more than 3 voxels from any tube, and the
time of the ``segment`` call. ``frangi`` is the classical baseline of
``benchmarks/real/frangi_baseline.py`` (radius range 1.5-4 voxels).

Targets (issue 9): precision >= 0.9 and trees <= 2 x 4.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "real"))
from four_tubes import four_tubes  # noqa: E402
from frangi_baseline import frangi_segment  # noqa: E402

from napari_topo.topology.metrics import betti_numbers, cldice, dice, precision, recall  # noqa: E402,I001

MODELS = ("unet-dice", "unet-cldice", "unet-projpool", "topnet", "frangi")


def run(models, seed: int = 0) -> list[dict]:
    import torch

    from napari_topo.inference import segment

    vol = four_tubes(seed)
    far = ndimage.distance_transform_edt(~vol.mask) > 3
    print(
        f"four tubes, seed {seed}: {vol.image.shape} {vol.image.dtype}, radii {vol.radii}, "
        f"CNR {vol.cnr:g}, vessels {vol.vessel_fraction:.2%} of voxels, "
        f"true trees {vol.n_trees}"
    )
    rows = []
    for model in models:
        t0, c0 = time.perf_counter(), time.process_time()
        if model == "frangi":
            analysis, _ = frangi_segment(vol.image, radius_range=(min(vol.radii), max(vol.radii)))
        else:
            torch.manual_seed(0)
            analysis = segment(vol.image, model)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        m = analysis.mask
        row = {
            "model": model,
            "Precision": precision(m, vol.mask),
            "Sensitivity": recall(m, vol.mask),
            "Dice": dice(m, vol.mask),
            "clDice": cldice(m, vol.mask)[0],
            "Trees": int(analysis.result.n_trees),
            "True trees": vol.n_trees,
            "Components": int(betti_numbers(m)[0]),
            "FP voxels": int(np.count_nonzero(m & ~vol.mask)),
            "FP voxels > 3 from a tube": int(np.count_nonzero(m & far)),
            "Time (s)": dt,
            "CPU time (s)": cpu,
        }
        rows.append(row)
        print(
            f"{model:14s} precision {row['Precision']:.3f} sensitivity "
            f"{row['Sensitivity']:.3f} Dice {row['Dice']:.3f} clDice {row['clDice']:.3f} "
            f"trees {row['Trees']} (true {vol.n_trees}) components {row['Components']} "
            f"FP {row['FP voxels']} ({row['FP voxels > 3 from a tube']} > 3 vx away) "
            f"{dt:.1f} s (CPU {cpu:.1f} s)"
        )
    return rows


def markdown(rows, seed) -> str:
    head = (
        "| Model | Precision | Sensitivity | Dice | clDice | Trees (true 4) | Components "
        "| FP > 3 vx | Time (s) | CPU (s) |"
    )
    lines = [
        f"Four bright tubes (seed {seed}, 64 x 256 x 256 uint16, radii 1.5-4, CNR 6), "
        "`segment(volume, model)` with defaults.",
        "",
        head,
        "|---" * 10 + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['Precision']:.3f} | {r['Sensitivity']:.3f} | "
            f"{r['Dice']:.3f} | {r['clDice']:.3f} | {r['Trees']} | {r['Components']} | "
            f"{r['FP voxels > 3 from a tube']} | {r['Time (s)']:.1f} | {r['CPU time (s)']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", help="folder for four_tubes.json / four_tubes.md")
    args = ap.parse_args(argv)
    rows = run(args.models, args.seed)
    if args.results:
        out = Path(args.results)
        out.mkdir(parents=True, exist_ok=True)
        (out / "four_tubes.json").write_text(
            json.dumps(
                {"seed": args.seed, "command": " ".join(["python", *sys.argv]), "rows": rows},
                indent=2,
            )
            + "\n"
        )
        (out / "four_tubes.md").write_text(markdown(rows, args.seed))
        print(f"wrote {out / 'four_tubes.json'} and {out / 'four_tubes.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
