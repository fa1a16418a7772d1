"""Speed of the segmentation metrics on synthetic tubular volumes.

Run on demand (never as a timed test)::

    python benchmarks/bench_metrics.py [--sizes 64 128 256] [--repeat 3] [--seed 0]

For each cubic size it draws a few random curved tubes (the ground truth), derives a
prediction with typical errors (two gaps, a spurious blob, a thinner branch), times every
metric of :mod:`napari_topo.topology.metrics` and :func:`compute_metrics`, and, for
reference, ``scipy.ndimage.label`` against cc3d and ``skimage.measure.euler_number``
against our closed-cell Euler count. Prints the best of ``--repeat`` runs in ms.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def tubes(size: int, n_tubes: int = 5, seed: int = 0) -> np.ndarray:
    """Binary (size, size, size) volume of ``n_tubes`` smooth random curved tubes.

    Each tube follows a random sum of sines between two random points; its radius
    varies between about 1.5 % and 3 % of ``size`` (at least 1.5 voxels). Balls are
    stamped along the curve, so this is numpy only and fast.
    """
    rng = np.random.default_rng(seed)
    vol = np.zeros((size,) * 3, dtype=bool)
    n_pts = 4 * size
    t = np.linspace(0.0, 1.0, n_pts)[:, None]
    for _ in range(n_tubes):
        a, b = rng.uniform(0.1, 0.9, (2, 3)) * size
        path = a + (b - a) * t
        for _ in range(2):  # two random wiggles per axis
            amp = rng.uniform(0.05, 0.15, 3) * size
            freq = rng.uniform(0.5, 2.0, 3)
            phase = rng.uniform(0, 2 * np.pi, 3)
            path += amp * np.sin(2 * np.pi * freq * t + phase) * np.sin(np.pi * t)
        radius = max(1.5, rng.uniform(0.015, 0.03) * size)
        r = int(np.ceil(radius))
        zz, yy, xx = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1]
        ball = zz**2 + yy**2 + xx**2 <= radius**2
        for c in np.round(path).astype(int)[:: max(1, r // 2)]:
            lo = c - r
            src = [
                slice(max(0, -lo[d]), 2 * r + 1 - max(0, lo[d] + 2 * r + 1 - size))
                for d in range(3)
            ]
            dst = [slice(max(0, lo[d]), min(size, lo[d] + 2 * r + 1)) for d in range(3)]
            if all(s.stop > s.start for s in src):
                vol[tuple(dst)] |= ball[tuple(src)]
    return vol


def perturb(gt: np.ndarray, seed: int = 1) -> np.ndarray:
    """A plausible prediction: gt with two cut gaps, a spurious blob and an eroded band."""
    rng = np.random.default_rng(seed)
    pred = gt.copy()
    size = gt.shape[0]
    pts = np.argwhere(gt)
    w = max(2, size // 32)
    for c in pts[rng.choice(len(pts), 2, replace=False)]:
        sl = tuple(slice(max(0, x - w), x + w) for x in c)
        pred[sl] = False
    c = rng.integers(w, size - w, 3)
    pred[tuple(slice(x - w, x + w) for x in c)] = True
    band = slice(size // 3, size // 3 + size // 8)
    sub = pred[band]
    inner = sub.copy()
    inner[1:-1, 1:-1, 1:-1] &= (
        sub[:-2, 1:-1, 1:-1]
        & sub[2:, 1:-1, 1:-1]
        & sub[1:-1, :-2, 1:-1]
        & sub[1:-1, 2:, 1:-1]
        & sub[1:-1, 1:-1, :-2]
        & sub[1:-1, 1:-1, 2:]
    )
    pred[band] = inner
    return pred


def best_ms(fn, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best


def _cases(pred: np.ndarray, gt: np.ndarray, spacing) -> dict:
    """Name -> zero-argument callable timed by :func:`main`."""
    import cc3d
    from scipy import ndimage as ndi
    from skimage.measure import euler_number

    from napari_topo.topology import metrics as m
    from napari_topo.topology.skeleton import skeletonize

    s26 = np.ones((3, 3, 3), bool)
    return {
        "dice+precision+recall+volume_error": lambda: (
            m.dice(pred, gt),
            m.precision(pred, gt),
            m.recall(pred, gt),
            m.volume_error(pred, gt),
        ),
        "skeletonize (gt)": lambda: skeletonize(gt),
        "cldice (2 skeletons)": lambda: m.cldice(pred, gt),
        "betti_numbers (gt)": lambda: m.betti_numbers(gt),
        "euler_characteristic (gt)": lambda: m.euler_characteristic(gt),
        "cce_3d": lambda: m.cce_3d(pred, gt),
        "cce_2d (axis 0)": lambda: m.cce_2d(pred, gt),
        "hd95": lambda: m.hd95(pred, gt, spacing=spacing),
        "compute_metrics": lambda: m.compute_metrics(pred, gt, spacing=spacing),
        "ref: cc3d 26-conn (gt)": lambda: cc3d.connected_components(
            gt, connectivity=26, return_N=True
        ),
        "ref: scipy.ndimage.label 26-conn": lambda: ndi.label(gt, structure=s26),
        "ref: skimage euler_number conn=3": lambda: euler_number(gt, connectivity=3),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from skimage.measure import euler_number

    from napari_topo.topology import metrics as m

    spacing = (2.0, 1.0, 1.0)
    rows: dict[str, dict[int, float]] = {}
    facts: dict[int, str] = {}
    for size in args.sizes:
        gt = tubes(size, seed=args.seed)
        pred = perturb(gt, seed=args.seed + 1)
        cases = _cases(pred, gt, spacing)
        for name, fn in cases.items():
            rep = (
                1 if ("skelet" in name or "cldice" in name or "compute" in name) else (args.repeat)
            )
            rows.setdefault(name, {})[size] = best_ms(fn, rep)
        b = m.betti_numbers(gt)
        facts[size] = (
            f"{size}^3: gt {100 * gt.mean():.1f}% fg, betti {b}, "
            f"euler ours {m.euler_characteristic(gt)} / skimage "
            f"{euler_number(gt, connectivity=3)}"
        )

    width = max(len(k) for k in rows)
    header = f"{'metric (ms, best of runs)':<{width}}" + "".join(
        f"{f'{s}^3':>10}" for s in args.sizes
    )
    print(header)
    print("-" * len(header))
    for name, by_size in rows.items():
        print(f"{name:<{width}}" + "".join(f"{by_size[s]:>10.1f}" for s in args.sizes))
    print()
    for s in args.sizes:
        print(facts[s])
    print(f"\ncompute_metrics at {args.sizes[-1]}^3 (spacing {spacing}):")
    res = m.compute_metrics(pred, gt, spacing=spacing)
    for k, v in res.items():
        print(f"  {k:<14} {v:.4f}")


if __name__ == "__main__":
    main()
