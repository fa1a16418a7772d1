"""Speed of our sliding-window inference against MONAI's, with the same network.

Run on demand (never as a timed test)::

    python benchmarks/bench_inference.py [--size 128] [--tile 64] [--overlap 0.25]
                                         [--batch-size 2] [--repeat 3] [--no-zarr]
                                         [--threads N]

Both implementations run the same network (the shipped ``--model``, default unet-dice,
with its trained weights) over the same ``size**3`` synthetic vessel volume
(``make_vessel_volume``, mapped to the model's input by its input policy as ``predict``
does) with the same tiles,
overlap, batch size and Gaussian blending (MONAI: ``mode="gaussian", sigma_scale=0.125``),
under ``torch.inference_mode``. MONAI runs in float32; ours runs in float32 and in the
precision ``predict`` picks by default on this machine ("auto":
:func:`~napari_topo.inference.device.resolve_precision`, bfloat16 autocast on a CPU with
native bfloat16, which this benchmark says), and on the CPU also as ``predict`` runs
the network there: a copy of it in channels-last 3D fed channels-last tiles
(:func:`~napari_topo.inference.device.memory_format`; MONAI keeps the plain network).
Output quality is reported side by side: the
Dice of each case's mask (probability > 0.5) against MONAI's float32 mask and against the
volume's ground truth.

Calls alternate between the two, in alternating order, so that a noisy machine penalises
both alike. Reported: the best and median of ``--repeat`` runs, the time ratio (MONAI /
ours, > 1 means ours is faster; also per interleaved pair), voxels per second, the time
spent outside the network, and the largest absolute difference between the outputs, both
against MONAI given our Gaussian map as ``roi_weight_map`` (same weights: agreement to
float precision) and against MONAI's own map, which MONAI clamps at 1e-3 (ours is the
plain separable Gaussian, as in nnU-Net), so tile corners are blended a little differently.
MONAI's timing includes moving its result to a numpy array, since a napari layer needs
one; ours returns numpy directly. Unless ``--no-zarr``, ours also runs on a chunked
in-memory zarr copy of the volume (lazy tile reads, prefetch thread).

A first section times tiling + blending alone (identity predictor), which is what the two
implementations actually differ in; on a busy machine the network time dwarfs it and its
noise. A CUDA section follows when a GPU is present (with and without float16 autocast
for ours).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch

from napari_topo.inference import autocast_context, gaussian_weights, sliding_window_inference
from napari_topo.inference.device import cpu_bfloat16_native, memory_format, resolve_precision


def make_net(name: str) -> tuple[torch.nn.Module, str]:
    """The shipped model ``name`` (trained weights, sha256-checked) as a logits network."""
    from napari_topo.models.registry import load_model

    module, card = load_model(name)

    class Logits(torch.nn.Module):  # TopNet returns a dict: its vessel logits only
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            y = self.net(x)
            return y["vessel"] if isinstance(y, dict) else y

    return Logits(module).eval(), f"{card.name} ({card.architecture}, shipped weights)"


def make_volume(size: int, seed: int, model: str) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic vessel volume, mapped to the model's input as ``predict`` maps it
    (its input policy: percentiles, polarity), and its ground-truth mask."""
    from napari_topo.data.synthetic import make_vessel_volume
    from napari_topo.inference.intensity import plan_input
    from napari_topo.models.registry import get_card

    v = make_vessel_volume(shape=(size,) * 3, seed=seed)
    image = v.image.astype(np.float32)
    policy = plan_input(image, get_card(model).normalization, zoom=1.0)
    return np.asarray(policy.normalizer(image), np.float32), v.mask.astype(bool)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(int(a.sum()) + int(b.sum()), 1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TimedNet:
    """Wraps the network to add up the time spent inside it (the rest is overhead)."""

    def __init__(self, net: torch.nn.Module, device: torch.device, memory_format=None):
        self.net, self.device, self.seconds = net, device, 0.0
        self.memory_format = memory_format

    def __call__(self, x: torch.Tensor):
        _sync(self.device)
        t0 = time.perf_counter()
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        y = self.net(x)
        _sync(self.device)
        self.seconds += time.perf_counter() - t0
        return y


def run_ours(volume, predictor, args, device, dtype=None) -> np.ndarray:
    with autocast_context(device, dtype=dtype, enabled=dtype is not None):
        return sliding_window_inference(
            volume,
            predictor,
            tile=(args.tile,) * 3,
            overlap=args.overlap,
            batch_size=args.batch_size,
            blend="gaussian",
            sigma_scale=0.125,
            device=device,
        )


def run_monai(volume: np.ndarray, predictor, args, device, weight_map=None) -> np.ndarray:
    from monai.inferers import sliding_window_inference as monai_swi

    with torch.inference_mode():
        x = torch.from_numpy(volume)[None, None].to(device)
        y = monai_swi(
            x,
            roi_size=(args.tile,) * 3,
            sw_batch_size=args.batch_size,
            predictor=predictor,
            overlap=args.overlap,
            mode="gaussian",
            sigma_scale=0.125,
            roi_weight_map=weight_map,
        )
        return y[0].float().cpu().numpy()


def bench(device: torch.device, volume: np.ndarray, net, args, truth=None) -> None:
    net = net.to(device).eval()
    timed = TimedNet(net, device)
    cases = {"ours (numpy, float32)": lambda: run_ours(volume, timed, args, device)}
    auto = resolve_precision("auto", device)
    if device.type == "cpu":
        native = cpu_bfloat16_native()
        print(
            f"\nCPU bfloat16: {'native (AVX512-BF16/AMX)' if native else 'emulated'}; "
            f"predict's default precision here: {'bfloat16' if auto else 'float32'}"
        )
        bf16 = "ours (bfloat16, the default)" if auto else "ours (bfloat16, emulated)"
        cases[bf16] = lambda: run_ours(volume, timed, args, device, dtype=torch.bfloat16)
    # predict's own layout on the CPU (inference.device.memory_format): a copy of the
    # network in channels-last 3D, fed channels-last tiles; MONAI keeps the plain network
    fmt = memory_format(device)
    if fmt != torch.contiguous_format:
        net_cl = copy.deepcopy(net).to(memory_format=fmt)
        timed_cl = TimedNet(net_cl, device, memory_format=fmt)
        cases["ours (float32, channels-last)"] = lambda: run_ours(volume, timed_cl, args, device)
        if device.type == "cpu":
            name = "ours (bfloat16, channels-last: predict's default)" if auto else (
                "ours (bfloat16, channels-last, emulated)")
            cases[name] = lambda: run_ours(volume, timed_cl, args, device, dtype=torch.bfloat16)
    if args.zarr:
        try:
            import zarr

            zvol = zarr.array(volume, chunks=(args.tile,) * 3)
            cases["ours (zarr input)"] = lambda: run_ours(zvol, timed, args, device)
        except ImportError:
            print("(zarr not installed: zarr case skipped)")
    if device.type == "cuda":
        cases["ours (fp16 autocast)"] = lambda: run_ours(
            volume, timed, args, device, dtype=torch.float16
        )
    cases["MONAI"] = lambda: run_monai(volume, timed, args, device)

    results = {name: fn() for name, fn in cases.items()}  # warm-up, and outputs to compare
    # Same blending weights on both sides (MONAI's own map is clamped at 1e-3, see below).
    ours_map = torch.from_numpy(gaussian_weights((args.tile,) * 3)).to(device)
    same_map = run_monai(volume, net, args, device, weight_map=ours_map)

    times: dict[str, list[float]] = {name: [] for name in cases}
    overheads: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases.items())
    timers = [timed] + ([timed_cl] if fmt != torch.contiguous_format else [])
    for rep in range(args.repeat):
        # Alternate the order: whichever runs first after the other tends to be penalised.
        for name, fn in order if rep % 2 == 0 else order[::-1]:
            for t in timers:
                t.seconds = 0.0
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
            overheads[name].append(times[name][-1] - sum(t.seconds for t in timers))

    voxels = volume.size
    best_monai = min(times["MONAI"])
    print(f"\n== device: {device}  (torch threads: {torch.get_num_threads()})")
    print(
        f"{'':22s} {'best s':>8s} {'median s':>9s} {'Mvox/s':>8s} {'MONAI/ours':>11s} "
        f"{'non-network s (best, median)':>29s}"
    )
    for name, ts in times.items():
        best = min(ts)
        ov = overheads[name]
        print(
            f"{name:22s} {best:8.3f} {statistics.median(ts):9.3f} "
            f"{voxels / best / 1e6:8.3f} {best_monai / best:11.3f} "
            f"{min(ov):18.3f} {statistics.median(ov):9.3f}"
        )
    for name, ts in times.items():
        if name != "MONAI":
            paired = [m / t for m, t in zip(times["MONAI"], ts, strict=True)]
            print(
                f"{name}: MONAI/ours per interleaved pair, median {statistics.median(paired):.3f} "
                f"(range {min(paired):.3f}-{max(paired):.3f})"
            )
    ref = results["MONAI"] > 0  # logits > 0 <=> probability > 0.5
    for name, res in results.items():
        mask = res > 0
        quality = f"mask Dice vs MONAI float32 {_dice(mask, ref):.4f}"
        if truth is not None:
            quality += f", vs ground truth {_dice(mask[0], truth):.4f}"
        if name == "MONAI":
            print(f"{name}: {quality}")
            continue
        same = float(np.abs(res - same_map).max())
        own = float(np.abs(res - results["MONAI"]).max())
        print(
            f"{name}: {quality}; max |logit - MONAI|: {same:.2e} with the same Gaussian map "
            f"(roi_weight_map), {own:.2e} with MONAI's own map (clamped at 1e-3)"
        )


def bench_overhead(volume: np.ndarray, args, repeat: int = 15) -> None:
    """Everything but the network: an identity predictor, CPU, many interleaved runs."""

    def identity(x):
        return x

    ours, monai = [], []
    run_ours(volume, identity, args, torch.device("cpu"))
    run_monai(volume, identity, args, torch.device("cpu"))
    for rep in range(repeat):
        for which in ("ours", "monai") if rep % 2 == 0 else ("monai", "ours"):
            t0 = time.perf_counter()
            if which == "ours":
                a = run_ours(volume, identity, args, torch.device("cpu"))
                ours.append(time.perf_counter() - t0)
            else:
                b = run_monai(volume, identity, args, torch.device("cpu"))
                monai.append(time.perf_counter() - t0)
    print(f"\n== tiling + blending overhead only (identity predictor, CPU, best of {repeat})")
    print(f"ours  {min(ours) * 1e3:8.1f} ms (median {statistics.median(ours) * 1e3:.1f})")
    print(f"MONAI {min(monai) * 1e3:8.1f} ms (median {statistics.median(monai) * 1e3:.1f})")
    print(
        f"MONAI/ours {min(monai) / min(ours):.2f}; max |ours - MONAI| = {np.abs(a - b).max():.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-zarr", dest="zarr", action="store_false")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--model", default="unet-dice", help="shipped model (default unet-dice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    net, net_name = make_net(args.model)
    volume, truth = make_volume(args.size, args.seed, args.model)
    print(
        f"network: {net_name}, {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M params; "
        f"volume {args.size}^3, tile {args.tile}^3, overlap {args.overlap}, "
        f"batch {args.batch_size}, gaussian blending (sigma_scale 0.125), "
        f"best of {args.repeat}"
    )
    # a copy: MONAI writes into its input when a tile covers the whole volume and the
    # predictor (here the identity) returns its input
    bench_overhead(volume.copy(), args)
    bench(torch.device("cpu"), volume, net, args, truth)
    if torch.cuda.is_available():
        bench(torch.device("cuda"), volume, net, args, truth)
    else:
        print("\n(no CUDA device: GPU numbers skipped)")


if __name__ == "__main__":
    main()
