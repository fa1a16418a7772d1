"""Bounded memory: segment an OME-Zarr volume larger than the chunk with the streaming CLI.

Run on demand (never as a timed test)::

    python benchmarks/bench_scale.py [--size 512] [--chunk 128] [--model unet-dice]
        [--tile 64] [--workdir /tmp/bench_scale] [--keep]

1. Writes a ``size``^3 uint16 synthetic volume (straight and bent bright tubes of radius
   2-6 voxels over a noisy background) as OME-Zarr with ``chunk``^3 chunks, slab by slab
   (the volume is never held whole, in this process either).
2. Runs ``napari-topo segment VOLUME --out OUT --format ome-zarr --zoom 1`` in a child
   process, exactly as a user would, and reads its peak resident memory
   (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``, the largest child) and its time per
   stage (probability, mask, pyramids: the ``stage_seconds`` of the summary it writes).
3. Checks the outputs: shapes, the geometry, and that the mask finds the tubes (Dice
   against the tubes the generator drew, thresholded at their radius).

Target (issue 13): peak RSS <= 2 GB at 512^3 (<= 4 GB at 1024^3) on 2 CPU cores.
Prints one JSON object with the numbers.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _tubes(size: int, seed: int = 0):
    """Segments (p0, p1, radius) of the synthetic tubes, in voxel coordinates."""
    rng = np.random.default_rng(seed)
    n = max(6, size // 32)
    segs = []
    for _ in range(n):
        p0 = rng.uniform(0, size, 3)
        # long tubes: crossing many chunks, some along the diagonals (chunk corners)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        p1 = p0 + direction * rng.uniform(0.5, 1.2) * size
        segs.append((p0, p1, float(rng.uniform(2.0, 6.0))))
    return segs


def _distance_slab(z0: int, z1: int, size: int, segs) -> tuple[np.ndarray, np.ndarray]:
    """(min distance / radius to any tube, radius of that tube) over planes z0..z1."""
    z, y, x = np.meshgrid(
        np.arange(z0, z1, dtype=np.float32),
        np.arange(size, dtype=np.float32),
        np.arange(size, dtype=np.float32),
        indexing="ij",
    )
    best = np.full(z.shape, np.inf, np.float32)
    for p0, p1, r in segs:
        d = (p1 - p0).astype(np.float32)
        t = ((z - p0[0]) * d[0] + (y - p0[1]) * d[1] + (x - p0[2]) * d[2]) / float(d @ d)
        np.clip(t, 0.0, 1.0, out=t)
        dist = np.sqrt(
            (z - (p0[0] + t * d[0])) ** 2
            + (y - (p0[1] + t * d[1])) ** 2
            + (x - (p0[2] + t * d[2])) ** 2
        )
        np.minimum(best, dist / r, out=best)
    return best


def make_volume(path: Path, size: int, chunk: int, seed: int = 0) -> list:
    """Write the synthetic volume as OME-Zarr, ``chunk`` planes at a time."""
    from napari_topo.data.ngff import create_ome_zarr
    from napari_topo.geometry import Geometry

    segs = _tubes(size, seed)
    geometry = Geometry.from_spacing((1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), unit="um")
    target = create_ome_zarr(path, (size,) * 3, np.uint16, geometry, chunk=chunk)
    rng = np.random.default_rng(seed + 1)
    for z0 in range(0, size, chunk):
        z1 = min(z0 + chunk, size)
        rel = _distance_slab(z0, z1, size, segs)
        tube = np.exp(-0.5 * (rel * 1.2) ** 2)  # ~0.5 at the wall
        img = 1000.0 + 2500.0 * tube + rng.normal(0.0, 150.0, tube.shape)
        target.level0[z0:z1] = np.clip(img, 0, 65535).astype(np.uint16)
    target.finish()
    return segs


def dice_against_tubes(mask_path: Path, size: int, chunk: int, segs) -> float:
    from napari_topo.data.io import read_volume

    mask = read_volume(mask_path).data
    inter = total_pred = total_true = 0
    for z0 in range(0, size, chunk):
        z1 = min(z0 + chunk, size)
        truth = _distance_slab(z0, z1, size, segs) <= 1.0
        pred = np.asarray(mask[z0:z1]) > 0
        inter += int((truth & pred).sum())
        total_pred += int(pred.sum())
        total_true += int(truth.sum())
    return 2.0 * inter / max(total_pred + total_true, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--model", default="unet-dice")
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--workdir", default="/tmp/bench_scale")
    ap.add_argument("--keep", action="store_true", help="keep the volumes written")
    args = ap.parse_args(argv)

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = work / f"synthetic{args.size}.ome.zarr"
    t = time.perf_counter()
    segs = make_volume(src, args.size, args.chunk)
    t_make = time.perf_counter() - t

    cmd = [
        sys.executable, "-m", "napari_topo.cli", "segment", str(src),
        "--out", str(work / "out"), "--format", "ome-zarr", "--zoom", "1",
        "--model", args.model, "--tile", str(args.tile), "--device", "cpu",
    ]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, file=sys.stderr)
        return proc.returncode
    stem = src.name[: -len(".ome.zarr")]
    summary = json.loads((work / "out" / f"{stem}_summary.json").read_text())
    dice = dice_against_tubes(work / "out" / f"{stem}_mask.ome.zarr", args.size, args.chunk, segs)
    voxels = args.size**3
    report = {
        "size": args.size,
        "chunk": args.chunk,
        "model": args.model,
        "tile": args.tile,
        "voxels": voxels,
        "write_input_s": round(t_make, 1),
        "segment_wall_s": round(wall, 1),
        "stage_seconds": summary["stage_seconds"],
        "mvoxel_per_s_probability": round(
            voxels / 1e6 / max(summary["stage_seconds"]["probability"], 1e-9), 3
        ),
        "peak_rss_gib": round(peak_kib / 2**20, 3),
        "target_gib": 2.0 if args.size <= 512 else 4.0,
        "n_voxels_mask": summary["n_voxels"],
        "dice_vs_drawn_tubes": round(dice, 3),
        "cli_stdout": proc.stdout.strip().splitlines(),
    }
    print(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
