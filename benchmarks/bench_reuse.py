"""What a run that reuses the network's output saves (the Segment dock's second run).

Run on demand (never as a timed test)::

    python benchmarks/bench_reuse.py [--case CONVERTED/ircadb/3Dircadb1.1] [--model unet-dice]
        [--thresholds 0.5 0.3] [--results DIR]

Without ``--case`` the volume is a synthetic one (``make_vessel_volume``, 128^3, seed 0).
With a case converted by ``benchmarks/real/convert.py`` it is that case's image, spacing
and roots, as ``benchmarks/real/run.py`` reads them. Three timings, each the wall time of
the call:

* ``full``: ``segment(volume, model, spacing=..., sources=...)``, network included, as the
  first run of the dock;
* ``predict``: ``predict(volume, model, spacing=...)`` alone (what the dock keeps);
* ``reuse``: ``segment(..., threshold=t, prediction=outputs)`` for each ``--thresholds``
  value: what a second run with a new threshold or moved roots costs.

The masks of ``full`` and of ``reuse`` at the model's own threshold are checked to be
equal. ``reuse.json`` in ``--results`` keeps every number and the command.
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "real"))

from napari_topo.inference.pipeline import predict, segment  # noqa: E402
from napari_topo.models.registry import model_card  # noqa: E402


def _volume(case: str | None):
    if case is None:
        from napari_topo.data.synthetic import make_vessel_volume

        v = make_vessel_volume(shape=(128, 128, 128), seed=0)
        return "synthetic 128^3 (make_vessel_volume, seed 0)", v.image, v.spacing, v.sources
    from run import load_case  # benchmarks/real/run.py

    c = load_case(case)
    name = f"{c['meta'].get('data')}/{c['meta'].get('case')}"
    return name, c["image"], c["spacing"], c["roots"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", help="a case folder made by benchmarks/real/convert.py")
    ap.add_argument("--model", default="unet-dice")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.3])
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/reuse"))
    args = ap.parse_args(argv)

    name, image, spacing, roots = _volume(args.case)
    kw = {"spacing": spacing, "sources": roots}
    print(f"{name}: {image.shape}, spacing {spacing}, model {args.model}", flush=True)
    t = time.perf_counter()
    full = segment(image, args.model, **kw)
    full_s = time.perf_counter() - t
    print(f"full segment: {full_s:.1f} s", flush=True)
    t = time.perf_counter()
    outputs = predict(image, args.model, spacing=spacing)
    predict_s = time.perf_counter() - t
    print(f"predict alone: {predict_s:.1f} s", flush=True)
    own = model_card(args.model).mask_threshold
    reuse = []
    for threshold in args.thresholds:
        t = time.perf_counter()
        a = segment(image, args.model, threshold=threshold, prediction=outputs, **kw)
        seconds = time.perf_counter() - t
        same = bool(np.array_equal(a.mask, full.mask)) if threshold == own else None
        reuse.append({"threshold": threshold, "seconds": round(seconds, 2), "same_mask": same})
        print(f"reuse at threshold {threshold:g}: {seconds:.1f} s (mask as full: {same})")
        if same is False:
            print("error: the reused output gave another mask than the full run")
            return 1
    args.results.mkdir(parents=True, exist_ok=True)
    record = {
        "volume": name,
        "shape": list(image.shape),
        "model": args.model,
        "full_s": round(full_s, 2),
        "predict_s": round(predict_s, 2),
        "reuse": reuse,
        "compute": outputs.compute,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "command": "python " + shlex.join(sys.argv),
    }
    (args.results / "reuse.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.results / 'reuse.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
