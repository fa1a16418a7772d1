"""Tile size and overlap of the sliding window on the CPU: time against output quality.

Run on demand (never as a timed test)::

    python benchmarks/bench_tiles.py [--size 160] [--model unet-dice] [--threads 2]
        [--repeat 2] [--image IMAGE --truth MASK [--spacing Z Y X]]
        [--tiles 48:0.25 64:0.25 96:0.25 96:16 128:16 ...]

Runs :func:`napari_topo.inference.predict` as a user would (the model's input policy,
default precision and zoom) once per ``TILE:OVERLAP`` setting, on a ``size``^3 synthetic
vessel volume (``make_vessel_volume``, microscopy look, seed 0) or on ``--image`` (any file
``read_volume`` opens, scored against ``--truth``). An overlap given as an integer is a
width in voxels (turned into the fraction of the tile that ``predict`` takes); a float is
that fraction. Settings run interleaved, ``--repeat`` rounds, so a noisy machine
penalises all alike; the best time per setting is reported.

Reported per setting: seconds, Mvoxel/s, the number of tile evaluations per output voxel
(tile volume x tiles / volume, on the input grid: not the model's when ``predict``
resamples or runs several zooms), Dice of the mask (probability > 0.5) against the ground
truth and against the first setting's mask, and the largest absolute difference in
probability from the first setting. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def _parse(spec: str) -> tuple[int, float, str]:
    tile_s, ov_s = spec.split(":")
    tile = int(tile_s)
    overlap = int(ov_s) / tile if "." not in ov_s else float(ov_s)
    return tile, overlap, spec


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--model", default="unet-dice")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--image")
    ap.add_argument("--truth")
    ap.add_argument("--spacing", type=float, nargs=3)
    ap.add_argument(
        "--tiles",
        nargs="+",
        default=["64:0.25", "48:0.25", "96:0.25", "128:0.25", "96:16", "128:16", "128:8"],
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from napari_topo.inference import predict
    from napari_topo.inference.sliding import tile_starts

    if args.image:
        from napari_topo.data.io import read_volume

        vol = read_volume(args.image)
        volume = np.ascontiguousarray(vol.data)
        truth = np.asarray(read_volume(args.truth).data) > 0 if args.truth else None
        spacing = args.spacing or getattr(vol, "spacing", None)
        source = args.image
    else:
        from napari_topo.data.synthetic import make_vessel_volume

        syn = make_vessel_volume((args.size,) * 3, n_trees=3, seed=0, appearance="microscopy")
        volume, truth, spacing = syn.image, syn.trees > 0, None
        source = f"synthetic {args.size}^3 (make_vessel_volume, microscopy look, seed 0)"
    settings = [_parse(s) for s in args.tiles]
    times: dict[str, list[float]] = {s[2]: [] for s in settings}
    probs: dict[str, np.ndarray] = {}
    policy = None
    for r in range(args.repeat):
        order = settings if r % 2 == 0 else settings[::-1]
        for tile, overlap, name in order:
            t = time.perf_counter()
            out = predict(volume, args.model, tile=tile, overlap=overlap, spacing=spacing)
            times[name].append(time.perf_counter() - t)
            probs.setdefault(name, np.asarray(out["vessel"]))
            policy = out.input_policy.describe()
    ref_name = settings[0][2]
    ref = probs[ref_name]
    rows = []
    for tile, overlap, name in settings:
        p = probs[name]
        best = min(times[name])
        # counted on the input grid: where predict resamples (spacing, automatic zoom)
        # the model's grid differs, and with a multi-zoom plan it runs more than once
        shape = p.shape
        n_tiles = len(tile_starts(shape, (tile,) * 3, overlap))
        evals = n_tiles * np.prod([min(tile, s) for s in shape]) / np.prod(shape)
        rows.append(
            {
                "setting": name,
                "tile": tile,
                "overlap": round(overlap, 4),
                "seconds": round(best, 2),
                "mvoxel_per_s": round(p.size / 1e6 / best, 2),
                "evaluations_per_voxel": round(float(evals), 2),
                "dice_vs_truth": None if truth is None else round(_dice(p > 0.5, truth), 4),
                f"dice_vs_{ref_name}": round(_dice(p > 0.5, ref > 0.5), 4),
                f"max_abs_diff_vs_{ref_name}": round(float(np.abs(p - ref).max()), 4),
            }
        )
    print(
        json.dumps(
            {
                "data": source,
                "shape": list(volume.shape),
                "model": args.model,
                "input_policy": policy,
                "threads": torch.get_num_threads(),
                "repeat": args.repeat,
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
