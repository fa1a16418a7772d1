"""Bounded memory: segment an OME-Zarr volume larger than the chunk with the streaming CLI.

Run on demand (never as a timed test)::

    python benchmarks/bench_scale.py [--size 512] [--chunk 128] [--model unet-dice]
        [--tile 64] [--workdir /tmp/bench_scale] [--keep] [--fake-network]

``--fake-network`` (**not the real figure**): the model is replaced by a cheap stand-in
(logits from a 3x3x3 mean of the normalised input), so the post-processing stages' memory
and time are measured in minutes instead of the network's quarter of an hour; the report
says ``"network": "FAKE ..."``. The issue's target is measured with the real network.

1. Writes a ``size``^3 uint16 synthetic volume (straight and bent bright tubes of radius
   2-6 voxels over a noisy background) as OME-Zarr with ``chunk``^3 chunks, slab by slab
   (the volume is never held whole, in this process either).
2. Runs ``napari-topo segment VOLUME --out OUT --format ome-zarr --zoom 1`` in a child
   process, exactly as a user would (the CLI's ``main`` with those arguments), and reports
   the child's own peak resident memory (``VmHWM`` of ``/proc/self/status``, read by the
   child as it exits), its peak per stage (resident memory sampled every 20 ms) and its
   time per stage (probability, mask with the tree labels, skeleton, pyramids: the
   ``stage_seconds`` of the summary it writes).

   Not ``getrusage(RUSAGE_CHILDREN).ru_maxrss``: Linux hands a child started by
   vfork/exec (Python's subprocess) the *parent's* high-water mark at exec, so that figure
   was this process's peak while it wrote the volume (about 2 GB at 512^3, before the
   volume was written in sub-slabs), not the segmentation's.
3. Checks the outputs: shapes, the geometry, and that the mask finds the tubes (Dice
   against the tubes the generator drew, thresholded at their radius).

Target (issue 13): peak RSS <= 2 GB at 512^3 (<= 4 GB at 1024^3) on 2 CPU cores.
Prints one JSON object with the numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

#: Planes of the synthetic volume (and of the Dice truth) computed at once in this process.
SUB_PLANES = 16
#: Tubes are drawn (and scored) within this many radii of their axis.
REACH = 3.0
#: How often the child samples its resident memory for the per-stage peaks (seconds).
SAMPLE_S = 0.02


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


def _distance_slab(z0: int, z1: int, size: int, segs) -> np.ndarray:
    """Min over the tubes of distance / radius, over planes z0..z1 (shape (z1-z0, size, size)).

    Computed only inside each tube's bounding box grown by :data:`REACH` radii (``inf``
    elsewhere): the image adds ``exp(-0.5 (1.2 d)^2)``, under 0.2 % of the contrast there,
    and the Dice truth needs ``d <= 1``. Over the whole grid each tube cost a full pass of
    float32 temporaries (1024^3: more than 35 min to write the input); a box costs its size.
    """
    best = np.full((z1 - z0, size, size), np.inf, np.float32)
    for p0, p1, r in segs:
        d = p1 - p0
        m = REACH * r + 1.0
        # the part of the segment whose z lies within m of the planes
        if abs(d[0]) > 1e-9:
            ta, tb = (z0 - m - p0[0]) / d[0], (z1 - 1 + m - p0[0]) / d[0]
            t_lo, t_hi = max(0.0, min(ta, tb)), min(1.0, max(ta, tb))
        elif z0 - m <= p0[0] <= z1 - 1 + m:
            t_lo, t_hi = 0.0, 1.0
        else:
            continue
        if t_lo > t_hi:
            continue
        a, b = p0 + t_lo * d, p0 + t_hi * d
        lo = np.clip(np.floor(np.minimum(a, b) - m).astype(int), 0, size)
        hi = np.clip(np.ceil(np.maximum(a, b) + m).astype(int) + 1, 0, size)
        (y0, x0), (y1, x1) = lo[1:], hi[1:]
        if y0 >= y1 or x0 >= x1:
            continue
        z, y, x = np.meshgrid(
            np.arange(z0, z1, dtype=np.float32),
            np.arange(y0, y1, dtype=np.float32),
            np.arange(x0, x1, dtype=np.float32),
            indexing="ij",
        )
        df = d.astype(np.float32)
        t = ((z - p0[0]) * df[0] + (y - p0[1]) * df[1] + (x - p0[2]) * df[2]) / float(d @ d)
        np.clip(t, 0.0, 1.0, out=t)
        dist = np.sqrt(
            (z - (p0[0] + t * df[0])) ** 2
            + (y - (p0[1] + t * df[1])) ** 2
            + (x - (p0[2] + t * df[2])) ** 2
        )
        box = best[:, y0:y1, x0:x1]
        np.minimum(box, dist / r, out=box)
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
        slab = np.empty((z1 - z0, size, size), np.uint16)
        # the float32 temporaries of _distance_slab in sub-slabs of SUB_PLANES planes: at
        # 512^3 a whole chunk-slab of them took this process to ~2 GB
        for s0 in range(z0, z1, SUB_PLANES):
            s1 = min(s0 + SUB_PLANES, z1)
            rel = _distance_slab(s0, s1, size, segs)
            tube = np.exp(-0.5 * (rel * 1.2) ** 2)  # ~0.5 at the wall
            img = 1000.0 + 2500.0 * tube + rng.normal(0.0, 150.0, tube.shape)
            slab[s0 - z0 : s1 - z0] = np.clip(img, 0, 65535).astype(np.uint16)
        target.level0[z0:z1] = slab
    target.finish()
    return segs


def dice_against_tubes(mask_path: Path, size: int, chunk: int, segs) -> float:
    from napari_topo.data.io import read_volume

    mask = read_volume(mask_path).data
    inter = total_pred = total_true = 0
    for z0 in range(0, size, SUB_PLANES):
        z1 = min(z0 + SUB_PLANES, size)
        truth = _distance_slab(z0, z1, size, segs) <= 1.0
        pred = np.asarray(mask[z0:z1]) > 0
        inter += int((truth & pred).sum())
        total_pred += int(pred.sum())
        total_true += int(truth.sum())
    return 2.0 * inter / max(total_pred + total_true, 1)


def _rss_bytes() -> int:
    """Resident memory of this process (Linux ``/proc/self/statm``)."""
    import os

    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _vm_hwm_bytes() -> int:
    """Peak resident memory of this process's address space (``VmHWM``, Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class _FakeNetwork:
    """Stand-in for the model (``--fake-network`` only): logits from a 3x3x3 mean."""

    def __new__(cls):
        import torch

        class Fake(torch.nn.Module):
            def forward(self, x):
                return (torch.nn.functional.avg_pool3d(x, 3, 1, 1) - 0.5) * 20.0

        return Fake().eval()


def _child(report_path: str, fake: bool, cli_args: list[str]) -> int:
    """Run the CLI in this process; write its peak memory (overall, per stage) as JSON."""
    import napari_topo.inference.chunked as chunked
    import napari_topo.inference.pipeline as pipeline
    from napari_topo import cli

    if fake:
        real_resolve = pipeline.resolve_model

        def resolve_model(model, device=None):
            _, card = real_resolve(model, device)
            return _FakeNetwork(), card

        pipeline.resolve_model = resolve_model

    state = {"stage": "start", "run": True}
    peaks: dict[str, int] = {}

    def sample():
        while state["run"]:
            s = state["stage"]
            peaks[s] = max(peaks.get(s, 0), _rss_bytes())
            time.sleep(SAMPLE_S)

    real_segment = chunked.segment_to_ome_zarr

    def segment_to_ome_zarr(*args, stage=None, **kwargs):
        def tell(name):
            state["stage"] = name
            if stage is not None:
                stage(name)

        return real_segment(*args, stage=tell, **kwargs)

    chunked.segment_to_ome_zarr = segment_to_ome_zarr
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc = 0
    try:
        cli.main(cli_args)
    except SystemExit as exc:
        rc = int(exc.code or 0)
    finally:
        state["stage"] = "end"
        time.sleep(2 * SAMPLE_S)
        state["run"] = False
        sampler.join()
        Path(report_path).write_text(
            json.dumps(
                {
                    "peak_rss_bytes": _vm_hwm_bytes(),
                    "stage_peak_rss_bytes": peaks,
                }
            )
        )
    return rc


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "--child":  # the segmenting process (see the module docstring)
        report, fake, cli_args = argv[1], argv[2] == "fake", argv[3:]
        return _child(report, fake, cli_args)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--model", default="unet-dice")
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--workdir", default="/tmp/bench_scale")
    ap.add_argument("--keep", action="store_true", help="keep the volumes written")
    ap.add_argument(
        "--fake-network",
        action="store_true",
        help="NOT the real figure: a cheap stand-in for the model, to measure the "
        "post-processing stages' memory and time quickly",
    )
    args = ap.parse_args(argv)

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = work / f"synthetic{args.size}.ome.zarr"
    t = time.perf_counter()
    segs = make_volume(src, args.size, args.chunk)
    t_make = time.perf_counter() - t

    cli_args = [
        "segment", str(src), "--out", str(work / "out"), "--format", "ome-zarr",
        "--zoom", "1", "--model", args.model, "--tile", str(args.tile), "--device", "cpu",
    ]  # fmt: skip
    mem_path = work / "child_memory.json"
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--child", str(mem_path),
        "fake" if args.fake_network else "real", *cli_args,
    ]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, file=sys.stderr)
        return proc.returncode
    mem = json.loads(mem_path.read_text())
    stem = src.name[: -len(".ome.zarr")]
    summary = json.loads((work / "out" / f"{stem}_summary.json").read_text())
    dice = dice_against_tubes(work / "out" / f"{stem}_mask.ome.zarr", args.size, args.chunk, segs)
    voxels = args.size**3
    gib = 2**30
    report = {
        "network": (
            "FAKE (3x3x3 mean stand-in; post-processing memory only, not the real figure)"
            if args.fake_network
            else f"real ({args.model})"
        ),
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
        "peak_rss_gib": round(mem["peak_rss_bytes"] / gib, 3),
        "stage_peak_rss_gib": {
            k: round(v / gib, 3) for k, v in mem["stage_peak_rss_bytes"].items()
        },
        "target_gib": 2.0 if args.size <= 512 else 4.0,
        "n_voxels_mask": summary["n_voxels"],
        "n_skeleton_voxels": summary["n_skeleton_voxels"],
        "n_trees": summary["n_trees"],
        "halo": summary["halo"],
        "dice_vs_drawn_tubes": round(dice, 3),
        "cli_stdout": proc.stdout.strip().splitlines(),
    }
    print(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
