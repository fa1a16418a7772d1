"""What the automatic input policy (issue 9) costs on top of inference, on the CPU.

Times, on a synthetic 128^3 volume (microscopy style) and a 128^3 HU CT phantom:
the input plan alone (:func:`napari_topo.inference.intensity.plan_input`: strided sample,
HU test, skewness, Otsu + distance transform for the zoom), then ``predict`` with the
default model and every choice on ``auto``, and ``predict`` with the choices given
(no estimation). Issue 9's target: inference on 128^3 no more than 2x the time before.

    python benchmarks/bench_input_policy.py [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_topo.data.phantoms import ct_phantom
from napari_topo.data.synthetic import make_vessel_volume
from napari_topo.inference import predict
from napari_topo.inference.intensity import plan_input
from napari_topo.models.registry import get_card, load_model


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="unet-projpool")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    card = get_card(args.model)
    model = load_model(args.model, device="cpu")
    micro = make_vessel_volume((128, 128, 128), seed=1, appearance="microscopy").image
    micro = (micro * 1000).astype(np.uint16)
    ct = ct_phantom((128, 128, 128), seed=1)["hu"]
    print(f"model {args.model}, {args.threads} threads, best of {args.repeats}, 128^3, CPU")
    print("| volume | plan_input | predict, all auto | predict, choices given |")
    print("|---|---|---|---|")
    for name, vol, fixed in (
        ("microscopy (uint16)", micro, {"modality": "microscopy", "polarity": "bright"}),
        ("CT in HU (int16)", ct, {"modality": "ct", "polarity": "bright"}),
    ):
        t_plan = _best(lambda v=vol: plan_input(v, card.normalization), args.repeats)
        t_auto = _best(lambda v=vol: predict(v, model, device="cpu"), args.repeats)
        t_fix = _best(
            lambda v=vol, f=fixed: predict(v, model, device="cpu", zoom=1.0, **f), args.repeats
        )
        print(f"| {name} | {t_plan:.2f} s | {t_auto:.2f} s | {t_fix:.2f} s |")


if __name__ == "__main__":
    main()
