"""How far the brightest and darkest voxels of converted real volumes lie beyond the
percentile scaling's range, in ``hi - lo`` ranges (``lo``, ``hi``: the 0.5th and 99.5th
percentiles, as ``napari_topo.inference.intensity`` scales a non-CT volume).

Usage::

    python benchmarks/real/intensity_ranges.py CONVERTED_DIR [--cases NAME ...]

Prints a Markdown table: per case, ``lo``, ``hi``, the largest ``(max - hi) / (hi - lo)``
and ``(lo - min) / (hi - lo)``, and how many voxels lie beyond
:data:`~napari_topo.inference.intensity.OUTLIER_RANGES` ranges (which the normaliser
limits). The whole volume is read (not the strided sample ``predict`` uses).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def ranges(image) -> dict:
    """``lo``, ``hi``, the ranges above and below, and the voxels beyond the limit."""
    from napari_topo.inference.intensity import OUTLIER_RANGES

    v = np.asarray(image, dtype=np.float64)
    v = v[np.isfinite(v)]
    lo, hi = np.percentile(v, [0.5, 99.5])
    r = float(hi - lo) if hi > lo else 1.0
    return {
        "lo": float(lo),
        "hi": float(hi),
        "above": float((v.max() - hi) / r),
        "below": float((lo - v.min()) / r),
        "limited": int(((v > hi + OUTLIER_RANGES * r) | (v < lo - OUTLIER_RANGES * r)).sum()),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("converted", help="OUT_DIR of convert.py")
    ap.add_argument("--cases", nargs="+", help="case names (or data/case, or data)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import find_cases, load_case

    cases = find_cases(args.converted, args.cases)
    if not cases:
        print(f"no converted case (meta.json) under {args.converted}", file=sys.stderr)
        return 2
    print(
        "| case | modality | lo | hi | max above hi (ranges) | min below lo (ranges) "
        "| voxels limited |"
    )
    print("|---|---|---|---|---|---|---|")
    for folder in cases:
        case = load_case(folder)
        m = ranges(case["image"])
        print(
            f"| {case['meta'].get('case')} | {case['meta'].get('modality', '?')} | {m['lo']:.4g} "
            f"| {m['hi']:.4g} | {m['above']:.2f} | {m['below']:.2f} | {m['limited']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
