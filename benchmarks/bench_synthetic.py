"""Speed of the synthetic vessel generator (:mod:`napari_topo.data.synthetic`).

Run on demand (never as a timed test)::

    python benchmarks/bench_synthetic.py [--sizes 64 96 128] [--repeat 5] [--trees 2]

For each cubic size it generates ``--repeat`` volumes with consecutive seeds (after one
warm-up volume) and prints, per size, the median and worst wall-clock time, the median
CPU time of this process (less sensitive to other load on a shared machine), and the
median time of each stage: growing the trees, rasterising tubes and centerline,
rendering the image and building the centerline graph.  It also prints the vessel
fraction, the branch count and the number of near-touches, to show what was built.
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

import numpy as np

from napari_topo.data import synthetic
from napari_topo.data.synthetic import make_vessel_volume

_STAGES = {
    "grow": "_grow_forest",
    "raster": ("_rasterise", "_centerline"),
    "render": ("_branch_appearance", "_render_image"),
    "graph": "_centerline_graph",
}


@contextmanager
def _stage_timers(totals: dict[str, float]):
    """Wrap the module's stage functions so that their wall time adds up in ``totals``."""
    originals = {}
    for stage, names in _STAGES.items():
        for name in (names,) if isinstance(names, str) else names:
            fn = getattr(synthetic, name)
            originals[name] = fn

            def timed(*args, _fn=fn, _stage=stage, **kwargs):
                t0 = time.perf_counter()
                try:
                    return _fn(*args, **kwargs)
                finally:
                    totals[_stage] = totals.get(_stage, 0.0) + time.perf_counter() - t0

            setattr(synthetic, name, timed)
    try:
        yield totals
    finally:
        for name, fn in originals.items():
            setattr(synthetic, name, fn)


def bench(size: int, repeat: int, n_trees: int) -> dict[str, float]:
    shape = (size,) * 3
    make_vessel_volume(shape, n_trees=n_trees, seed=0)  # warm-up (imports, caches)
    walls, cpus, fracs, branches, touches = [], [], [], [], []
    stages: dict[str, list[float]] = {s: [] for s in _STAGES}
    for seed in range(1, repeat + 1):
        totals: dict[str, float] = {}
        with _stage_timers(totals):
            w0, c0 = time.perf_counter(), time.process_time()
            vol = make_vessel_volume(shape, n_trees=n_trees, seed=seed)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        for s in _STAGES:
            stages[s].append(totals.get(s, 0.0))
        fracs.append(float(vol.mask.mean()))
        branches.append(sum(vol.params["n_branches"]))
        touches.append(vol.params["n_near_touches"])
    row = {
        "wall_median": float(np.median(walls)),
        "wall_max": float(np.max(walls)),
        "cpu_median": float(np.median(cpus)),
        "vessel_fraction": float(np.median(fracs)),
        "branches": float(np.median(branches)),
        "near_touches": float(np.median(touches)),
    }
    row.update({f"{s}_median": float(np.median(v)) for s, v in stages.items()})
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--trees", type=int, default=2)
    args = parser.parse_args(argv)
    cols = ["wall med", "wall max", "cpu med", "grow", "raster", "render", "graph"]
    print(f"make_vessel_volume, n_trees={args.trees}, {args.repeat} seeds per size (seconds)")
    print("size   " + "  ".join(c.rjust(8) for c in cols) + "   vessel%  branches  touches")
    for size in args.sizes:
        r = bench(size, args.repeat, args.trees)
        vals = [r["wall_median"], r["wall_max"], r["cpu_median"]]
        vals += [r[f"{s}_median"] for s in _STAGES]
        tail = f"{100 * r['vessel_fraction']:6.1f}  {r['branches']:8.0f}  {r['near_touches']:7.0f}"
        print(f"{size:>3}^3  " + "  ".join(f"{v:8.3f}" for v in vals) + "   " + tail)


if __name__ == "__main__":
    main()
