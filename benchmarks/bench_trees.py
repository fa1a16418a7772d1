"""Speed of tree reconstruction on ~100k centerline points with an 8-d embedding.

Run on demand (never as a timed test)::

    python benchmarks/bench_trees.py [--points 100000] [--curves 100] [--repeat 3]

Points lie along ``--curves`` smooth random curves in a 512^3 box, one per voxel of arc
length (float coordinates; curves cross and pass close to each other). Each curve gets
an 8-d embedding around a random centre far from the other curves' centres, drifting by
at most 1 along the whole curve, as an ideally trained TopNet would give. The roots are
the first point of every curve.

Times (best of ``--repeat``) :func:`reconstruct_trees` with embedding, the same without
embedding, with the sparser neighbourhood used for NMS points, the lazily built
networkx view (``result.graph``), and :func:`detect_sources`, and checks that every
point went to its own curve.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.signal import lfilter

from napari_topo.trees import detect_sources, reconstruct_trees


def curves(n_points: int, n_curves: int, size: int = 512, seed: int = 0):
    """Points along random smooth curves, their curve id (1..n) and an 8-d embedding.

    Unit-speed curves sampled every voxel (float coordinates, so crossings and close
    passes create no duplicate points), folded back into the box by reflection.
    """
    rng = np.random.default_rng(seed)
    per = n_points // n_curves
    top = size - 1
    pts, ids, emb = [], [], []
    for k in range(n_curves):
        # smoothly turning directions: exponentially smoothed white noise, normalised
        d = lfilter([0.05], [1.0, -0.95], rng.normal(size=(per, 3)), axis=0)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        path = rng.uniform(0.2, 0.8, 3) * top + np.cumsum(d, axis=0)
        pts.append(top - np.abs(np.mod(path, 2 * top) - top))
        ids.append(np.full(per, k + 1))
        # far from other curves' centres, drifting by at most 1 along the whole curve
        drift = rng.normal(size=8)
        drift *= 1.0 / (per * np.linalg.norm(drift))
        emb.append(rng.normal(size=8) * 40.0 + np.arange(per)[:, None] * drift)
    return np.concatenate(pts), np.concatenate(ids), np.concatenate(emb).astype(np.float32)


def best_of(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--curves", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t = time.perf_counter()
    pts, ids, emb = curves(args.points, args.curves, seed=args.seed)
    roots = np.unique(ids, return_index=True)[1]  # first point of each curve
    print(
        f"{len(pts)} points on {args.curves} curves, embedding {emb.shape}, "
        f"made in {time.perf_counter() - t:.1f} s"
    )

    dt, res = best_of(lambda: reconstruct_trees(pts, emb, roots), args.repeat)
    n_edges = res.adjacency.nnz // 2
    correct = np.mean(res.labels == ids)
    print(
        f"reconstruct_trees, embedding, neighbourhood 3: {dt:6.3f} s  "
        f"({n_edges} edges kept, {correct:.4f} of points on their own curve)"
    )
    dt, plain = best_of(lambda: reconstruct_trees(pts, None, roots), args.repeat)
    print(
        f"reconstruct_trees, no embedding:               {dt:6.3f} s  "
        f"({plain.adjacency.nnz // 2} edges, {np.mean(plain.labels == ids):.4f} on own curve)"
    )
    dt, _ = best_of(lambda: reconstruct_trees(pts, emb, roots, neighbourhood=5.0), args.repeat)
    print(f"reconstruct_trees, embedding, neighbourhood 5: {dt:6.3f} s")
    dt, g = best_of(lambda: reconstruct_trees(pts, emb, roots).graph, 1)
    print(f"reconstruct_trees + networkx view (.graph):    {dt:6.3f} s  ({g.number_of_edges()})")
    radius = np.ones(len(pts))
    dt, found = best_of(lambda: detect_sources(pts, radius, (512,) * 3), args.repeat)
    print(f"detect_sources:                                {dt:6.3f} s  ({len(found)} roots)")


if __name__ == "__main__":
    main()
