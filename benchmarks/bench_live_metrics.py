"""How fast do the live metrics follow brush strokes at 256^3? (run on demand)

Simulates what the Topology metrics widget does while a user edits a prediction:
brush strokes (radius-5 balls, as napari's 3D brush paints) alternately paint and erase
at random centerline locations of a synthetic vessel volume. For each stroke it times

* **fast**: ``IncrementalMetrics.update`` + ``values()`` -- Dice, precision, recall,
  volume error, Betti-0/1/2 and Euler errors, CCE 3D and mean 2D CCE;

and every ``--slow-every`` strokes, on the same arrays,

* **slow (live)**: ``slow_metrics`` with a ``SkeletonCache`` -- what the widget's
  background worker recomputes after the strokes settle (clDice, Tprec, Tsens, HD95);
* **full**: ``compute_metrics`` from scratch -- the fallback (a new segmentation).

At those points it also checks that the incremental values equal ``compute_metrics``.
Erasing a radius-5 ball on a thin vessel cuts it, so the strokes include true splits
(the slow case of the incremental Betti-0); the table counts the whole-volume relabels.

Targets (issue): fast p95 <= 50 ms; slow metrics <= 1.5 s after the strokes settle.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_live_metrics.py [--shape 256] [--strokes 200]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from napari_topo.data.perturb import break_vessel
from napari_topo.data.synthetic import make_vessel_volume
from napari_topo.topology.incremental import (
    FAST_METRICS,
    IncrementalMetrics,
    SkeletonCache,
    slow_metrics,
)
from napari_topo.topology.metrics import compute_metrics


def ball_offsets(radius: float) -> np.ndarray:
    r = int(math.ceil(radius))
    grid = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1].reshape(3, -1).T
    return grid[(grid**2).sum(axis=1) <= radius**2]


def percentiles(values) -> tuple[float, float, float]:
    a = np.asarray(values) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 95)), float(a.max())


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", type=int, default=256, help="edge of the cubic volume")
    ap.add_argument("--strokes", type=int, default=200)
    ap.add_argument("--radius", type=float, default=5.0, help="brush radius in voxels")
    ap.add_argument("--slow-every", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--upscale",
        type=int,
        default=1,
        help="generate at shape/upscale and repeat each voxel (thicker, denser vessels)",
    )
    args = ap.parse_args(argv)

    shape = (args.shape,) * 3
    t0 = time.perf_counter()
    k = args.upscale
    vessels = make_vessel_volume(shape=(args.shape // k,) * 3, seed=args.seed)
    small_pred = break_vessel(vessels.mask, vessels.centerline, vessels.radius, rng=args.seed)

    def up(a):
        for ax in range(3):
            a = np.repeat(a, k, axis=ax)
        return np.ascontiguousarray(a)

    gt = up(vessels.mask)
    pred = up(small_pred).astype(np.uint8)
    centres = np.argwhere(vessels.centerline) * k + k // 2
    shape = gt.shape
    print(
        f"volume {shape} (generated at {args.shape // k}^3, upscaled x{k}), "
        f"{gt.mean() * 100:.2f}% vessel, generated in "
        f"{time.perf_counter() - t0:.1f} s"
    )

    t0 = time.perf_counter()
    live = IncrementalMetrics(pred, gt)
    build = time.perf_counter() - t0

    rng = np.random.default_rng(args.seed)
    ball = ball_offsets(args.radius)
    cache = SkeletonCache()
    fast, paint_t, erase_t, slow, full = [], [], [], [], []
    relabels_before = live.relabels
    mismatches = 0
    for i in range(args.strokes):
        centre = centres[rng.integers(len(centres))] + rng.integers(-3, 4, size=3)
        pts = centre + ball
        pts = pts[np.all((pts >= 0) & (pts < np.array(shape)), axis=1)]
        idx = tuple(pts.T)
        value = 1 if i % 2 == 0 else 0
        pred[idx] = value
        t0 = time.perf_counter()
        live.update(idx, value)
        live.values()
        dt = time.perf_counter() - t0
        fast.append(dt)
        (paint_t if value else erase_t).append(dt)
        if (i + 1) % args.slow_every == 0:
            t0 = time.perf_counter()
            slow_metrics(pred, gt, cache=cache)
            slow.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            reference = compute_metrics(pred, gt)
            full.append(time.perf_counter() - t0)
            values = live.values()
            mismatches += sum(not same(values[k], reference[k]) for k in FAST_METRICS)

    rows = [
        ("fast metrics, per stroke (all)", *percentiles(fast)),
        ("  paint strokes", *percentiles(paint_t)),
        ("  erase strokes", *percentiles(erase_t)),
        ("slow metrics, live (GT skeleton cached)", *percentiles(slow)),
        ("full compute_metrics (fallback)", *percentiles(full)),
        ("IncrementalMetrics build (once)", build * 1000, build * 1000, build * 1000),
    ]
    print(
        f"\n{args.strokes} strokes, brush radius {args.radius:g} "
        f"({len(ball)} voxels), alternating paint/erase at centerline points\n"
    )
    print(f"{'':42s} {'p50 ms':>9s} {'p95 ms':>9s} {'max ms':>9s}")
    for name, p50, p95, top in rows:
        print(f"{name:42s} {p50:9.1f} {p95:9.1f} {top:9.1f}")
    print(
        f"\nwhole-volume relabels (true splits of large pieces): "
        f"{live.relabels - relabels_before}; "
        f"incremental vs compute_metrics mismatches: {mismatches} "
        f"(over {len(full)} checks x {len(FAST_METRICS)} metrics)"
    )
    fast_p95, slow_p95 = percentiles(fast)[1], percentiles(slow)[1]
    print(
        f"targets: fast p95 {fast_p95:.1f} ms (<= 50: {'ok' if fast_p95 <= 50 else 'MISSED'}), "
        f"slow p95 {slow_p95 / 1000:.2f} s (<= 1.5: {'ok' if slow_p95 <= 1500 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
