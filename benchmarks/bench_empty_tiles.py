"""The empty-tile test (``napari_topo.inference.empty_tiles``): calibration, effect, census.

Usage::

    python benchmarks/bench_empty_tiles.py --results DIR [--converted CONVERTED --cases ...]

1. **Calibration**: scores of 96 tiles of 64^3 per kind of noise (white Gaussian,
   Poisson of mean 0.5, 3 and 20, Laplace, uniform, Gaussian smoothed with sigma 1.5)
   and of 24 tiles per tube through the tile's centre (along x or oblique; radius 1-6
   voxels, contrast 0.3-2 noise standard deviations) in white noise; what share the
   test calls empty.
2. **Effect** on :func:`~napari_topo.data.phantoms.sparse_tubes` (four tubes in one
   quarter, i.i.d. noise elsewhere), every shipped model with the test on and off:
   voxels of probability > 0.5 more than 3 voxels from a tube, tube voxels found, tiles
   skipped, network time.
3. **Overhead** where nothing is skipped: unet-dice on a 128^3 volume of the synthetic
   test set (vessels everywhere), the test on and off in turn, three runs each after a
   warm-up (median wall time), and the test alone per 64^3 tile (one thread).
4. **Census** on converted real data (``benchmarks/real/convert.py``; optional): each
   case is mapped as ``predict`` maps it for unet-dice (input policy, zooms, resampling),
   cut into the same 64^3 tiles (reflect-padded where the volume is thinner), and the
   tiles the test calls empty are counted with the annotated voxels inside them.

Writes ``empty_tiles.md`` and ``empty_tiles.json`` in ``--results``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from napari_topo.data.phantoms import sparse_tubes
from napari_topo.inference.empty_tiles import Z_THRESHOLD, tile_structure_scores
from napari_topo.inference.intensity import plan_input
from napari_topo.inference.pipeline import _resampled, predict, resample_factors
from napari_topo.inference.sliding import tile_starts
from napari_topo.models.registry import load_model

MODELS = ("unet-dice", "unet-cldice", "unet-projpool", "topnet")


def _scores(tiles: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(tiles, np.float32))[:, None]
    return tile_structure_scores(t).numpy()


def _distance_to_line(direction, shift=(0.0, 0.0)) -> np.ndarray:
    """Distance (voxels) of each voxel of a 64^3 tile from the line through its centre,
    moved by ``shift`` along z and y, running along ``direction`` (z, y, x)."""
    zz, yy, xx = (a - 31.5 for a in np.mgrid[:64, :64, :64].astype(np.float32))
    zz, yy = zz - shift[0], yy - shift[1]
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    along = zz * d[0] + yy * d[1] + xx * d[2]
    return np.sqrt((zz - along * d[0]) ** 2 + (yy - along * d[1]) ** 2 + (xx - along * d[2]) ** 2)


def calibration(rng) -> list[dict]:
    kinds = {
        "white Gaussian": lambda: rng.normal(0, 1, (8, 64, 64, 64)),
        "Poisson, mean 0.5": lambda: rng.poisson(0.5, (8, 64, 64, 64)),
        "Poisson, mean 3": lambda: rng.poisson(3, (8, 64, 64, 64)),
        "Poisson, mean 20": lambda: rng.poisson(20, (8, 64, 64, 64)),
        "Laplace": lambda: rng.laplace(0, 1, (8, 64, 64, 64)),
        "uniform": lambda: rng.random((8, 64, 64, 64)),
        "Gaussian smoothed (sigma 1.5)": lambda: ndi.gaussian_filter(
            rng.normal(0, 1, (8, 64, 64, 64)), (0, 1.5, 1.5, 1.5)
        ),
    }
    rows = []
    for name, make in kinds.items():
        s = np.concatenate([_scores(make()) for _ in range(12)])
        rows.append(_row(name, s))
    for name, direction in (("along x", (0.0, 0.0, 1.0)), ("oblique", (1.0, 2.0, 3.0))):
        dist = _distance_to_line(direction)
        for radius, contrast in (
            (1.0, 1.0),
            (1.0, 1.5),
            (1.0, 2.0),
            (1.5, 1.5),
            (2.0, 1.0),
            (3.0, 1.0),
            (4.0, 0.5),
            (6.0, 0.4),
            (6.0, 0.3),
        ):
            tube = ndi.gaussian_filter((dist <= radius).astype(np.float32), 0.5)
            tiles = np.stack([rng.normal(0, 1, (64, 64, 64)) + contrast * tube for _ in range(24)])
            rows.append(
                _row(f"tube {name}, r {radius:g}, contrast {contrast:g} sd", _scores(tiles))
            )
    # the same thin faint tubes off the tile's centre (a random shift of up to 15 voxels
    # across the tube, so the voxels it covers vary along it)
    for name, direction in (("along x", (0.0, 0.0, 1.0)), ("oblique", (1.0, 2.0, 3.0))):
        for contrast in (1.5, 2.0):
            tiles = []
            for _ in range(24):
                dist = _distance_to_line(direction, shift=rng.uniform(-15, 15, 2))
                tube = ndi.gaussian_filter((dist <= 1.0).astype(np.float32), 0.5)
                tiles.append(rng.normal(0, 1, (64, 64, 64)) + contrast * tube)
            rows.append(
                _row(
                    f"tube {name} off-centre, r 1, contrast {contrast:g} sd",
                    _scores(np.stack(tiles)),
                )
            )
    return rows


def _row(name: str, s: np.ndarray) -> dict:
    return {
        "tiles": name,
        "n": int(len(s)),
        "score min": float(s.min()),
        "score mean": float(s.mean()),
        "score max": float(s.max()),
        "empty": float((s < Z_THRESHOLD).mean()),
    }


def effect() -> list[dict]:
    big, labels = sparse_tubes()
    truth = labels > 0
    far = ndi.distance_transform_edt(~truth) > 3
    rows = []
    for model in MODELS:
        for skip in (True, False):
            predict(big, model, device="cpu", skip_empty_tiles=skip)  # warm-up, not timed
            t0 = time.perf_counter()
            out = predict(big, model, device="cpu", skip_empty_tiles=skip)
            seconds = time.perf_counter() - t0
            p = out["vessel"] > 0.5
            rows.append(
                {
                    "model": model,
                    "empty-tile test": "on" if skip else "off",
                    "far false positives": int((p & far).sum()),
                    "tube voxels found": f"{int((p & truth).sum())} of {int(truth.sum())}",
                    "tiles skipped": out.compute.get("empty tiles", "none"),
                    "precision": out.compute.get("precision"),
                    "time (s)": round(seconds, 1),
                }
            )
            print(rows[-1], flush=True)
    return rows


def overhead() -> list[dict]:
    from napari_topo.data.synthetic import test_set

    vol = test_set(n=1, shape=(128, 128, 128))[0].image
    times: dict[bool, list[float]] = {True: [], False: []}
    predict(vol, "unet-dice", device="cpu")  # warm-up
    skipped = None
    for _ in range(3):
        for skip in (True, False):
            t0 = time.perf_counter()
            out = predict(vol, "unet-dice", device="cpu", skip_empty_tiles=skip)
            times[skip].append(time.perf_counter() - t0)
            if skip:
                skipped = out.compute.get("empty tiles", "none")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tiles = torch.from_numpy(np.random.default_rng(1).normal(0, 1, (4, 1, 64, 64, 64)))
        structured = tiles.float() + 0  # noise: the line scale runs too
        structured[:, :, 28:36, 28:36, :] += 3.0  # a bar: the blob scales suffice
        per_tile = {}
        for name, batch in (("noise (all three scales)", tiles.float()), ("a bar", structured)):
            tile_structure_scores(batch)
            t0 = time.perf_counter()
            for _ in range(5):
                tile_structure_scores(batch)
            per_tile[name] = (time.perf_counter() - t0) / 20 * 1000
    finally:
        torch.set_num_threads(threads)
    rows = [
        {
            "what": "unet-dice, synthetic 128^3 (seed 10000), median of 3 (s)",
            "test on": round(float(np.median(times[True])), 2),
            "test off": round(float(np.median(times[False])), 2),
            "tiles skipped": skipped,
        }
    ]
    for name, ms in per_tile.items():
        rows.append(
            {
                "what": f"the test alone, one 64^3 tile, 1 thread: {name} (ms)",
                "test on": round(ms, 1),
                "test off": "",
                "tiles skipped": "",
            }
        )
    for r in rows:
        print(r, flush=True)
    return rows


def census(converted: Path, cases: list[str]) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "real"))
    from run import load_case

    _, card = load_model("unet-dice")
    rows = []
    folders = sorted(p.parent for p in converted.rglob("meta.json"))
    for folder in folders:
        name = f"{folder.parent.name}/{folder.name}"
        if cases and folder.name not in cases and name not in cases:
            continue
        case = load_case(folder)
        img, gt, spacing = case["image"], case["gt"], case["spacing"]
        policy = plan_input(img, card.normalization, spacing=spacing)
        keep = policy.keep_coarse_axes
        for zoom in policy.zoom.zooms:
            factors = resample_factors(spacing, zoom, keep_coarse=keep)
            vol = np.asarray(_resampled(img, img.shape, factors), np.float32)
            x = np.asarray(policy.normalizer(vol), np.float32)
            g = gt
            if vol.shape != gt.shape:
                g = (
                    ndi.zoom(
                        gt.astype(np.uint8),
                        [a / b for a, b in zip(vol.shape, gt.shape, strict=True)],
                        order=0,
                    )
                    > 0
                )
            n_tiles = skipped = gt_in = 0
            for start in tile_starts(vol.shape, (64, 64, 64), 0.25):
                sl = tuple(slice(a, a + 64) for a in start)
                tile = x[sl]
                if min(tile.shape) < 64:
                    tile = np.pad(tile, [(0, 64 - n) for n in tile.shape], mode="reflect")
                n_tiles += 1
                if _scores(tile[None])[0] < Z_THRESHOLD:
                    skipped += 1
                    gt_in += int(g[sl].sum())
            rows.append(
                {
                    "case": name,
                    "zoom": round(float(zoom), 3),
                    "tiles": n_tiles,
                    "empty": skipped,
                    "annotated voxels in empty tiles": gt_in,
                    "annotated voxels": int(g.sum()),
                }
            )
            print(rows[-1], flush=True)
    return rows


def _table(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", required=True, type=Path)
    ap.add_argument("--converted", type=Path, help="OUT_DIR of benchmarks/real/convert.py")
    ap.add_argument("--cases", nargs="*", default=[], help="case names (default: all)")
    ap.add_argument("--skip-effect", action="store_true", help="leave out parts 2 and 3")
    args = ap.parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    out = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threshold": Z_THRESHOLD,
        "calibration": calibration(np.random.default_rng(0)),
        "effect": [] if args.skip_effect else effect(),
        "overhead": [] if args.skip_effect else overhead(),
        "census": census(args.converted, args.cases) if args.converted else [],
    }
    (args.results / "empty_tiles.json").write_text(json.dumps(out, indent=2) + "\n")
    md = [
        f"# Empty-tile test ({out['date']}; `{out['command']}`; {out['machine']})\n",
        f"A tile is empty when its score is under {Z_THRESHOLD:g}.\n",
        "## Calibration (64^3 tiles)\n",
        _table(out["calibration"]),
        "## Sparse tubes (four tubes in one quarter, i.i.d. noise elsewhere)\n",
        _table(out["effect"]),
        "## Overhead where nothing is skipped\n",
        _table(out["overhead"]),
        "## Census on converted real data (unet-dice's input mapping, 64^3 tiles)\n",
        _table(out["census"]),
    ]
    (args.results / "empty_tiles.md").write_text("\n".join(md))
    print(f"wrote {args.results / 'empty_tiles.md'}")


if __name__ == "__main__":
    main()
