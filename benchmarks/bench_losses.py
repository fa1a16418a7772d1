"""Time and peak memory of soft-skeleton and soft-clDice, ours against MONAI's reference.

Forward + backward of ``soft_skeleton`` on a 1x1xS^3 probability volume with 10 iterations
(the reference is MONAI's ``soft_skel``, same input), and of the full soft-clDice loss
(ours: target skeleton without autograd; MONAI: ``SoftclDiceLoss``). Each case runs in its
own subprocess so that its peak resident memory is measured alone.

Run:  python benchmarks/bench_losses.py [--size 128] [--iterations 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CASES = ("ours_skeleton", "monai_skeleton", "ours_cldice", "monai_cldice")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(case: str, size: int, iterations: int, repeats: int) -> dict:
    import torch

    torch.manual_seed(0)
    x = torch.rand(1, 1, size, size, size)
    target = (torch.rand(1, 1, size, size, size) > 0.7).float()
    if case == "ours_skeleton":
        from napari_topo.topology.losses import soft_skeleton

        def step(p):
            soft_skeleton(p, iterations, warn=False).sum().backward()

    elif case == "monai_skeleton":
        from monai.losses.cldice import soft_skel

        def step(p):
            soft_skel(p, iterations).sum().backward()

    elif case == "ours_cldice":
        from napari_topo.topology.losses import SoftclDiceLoss

        loss = SoftclDiceLoss(iterations)

        def step(p):
            with __import__("warnings").catch_warnings():
                __import__("warnings").simplefilter("ignore")
                loss(p, target).backward()

    elif case == "monai_cldice":
        from monai.losses import SoftclDiceLoss as MonaiCl

        loss = MonaiCl(iter_=iterations)

        def step(p):
            loss(p, target).backward()

    else:
        raise ValueError(case)
    base = _peak_rss_mib()
    times = []
    for _ in range(repeats):
        p = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        step(p)
        times.append(time.perf_counter() - t0)
    return {
        "case": case,
        "best_s": min(times),
        "median_s": sorted(times)[len(times) // 2],
        "peak_extra_mib": _peak_rss_mib() - base,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.size, args.iterations, args.repeats)))
        return 0
    import torch

    print(
        f"soft skeleton / soft clDice, input 1x1x{args.size}^3, {args.iterations} iterations, "
        f"forward+backward, best of {args.repeats}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    res = {}
    for case in CASES:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--case",
                case,
                "--size",
                str(args.size),
                "--iterations",
                str(args.iterations),
                "--repeats",
                str(args.repeats),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        res[case] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{'case':<16}{'best s':>9}{'median s':>10}{'peak +MiB':>11}")
    for case in CASES:
        r = res[case]
        print(f"{case:<16}{r['best_s']:>9.2f}{r['median_s']:>10.2f}{r['peak_extra_mib']:>11.0f}")
    for what in ("skeleton", "cldice"):
        o, m = res[f"ours_{what}"], res[f"monai_{what}"]
        print(
            f"{what}: time ratio ours/monai = {o['best_s'] / m['best_s']:.2f}, "
            f"memory ratio = {o['peak_extra_mib'] / max(m['peak_extra_mib'], 1):.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
