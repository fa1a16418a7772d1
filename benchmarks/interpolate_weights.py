"""Interpolate the weights of two models of one architecture (WiSE-FT / model soups).

``theta = (1 - alpha) * theta_a + alpha * theta_b``, tensor by tensor, for two models that
share an architecture and a common ancestor (here: an earlier and a later training stage
of the same run). Weight-space ensembling of a model and its fine-tuned descendant
(Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022, eq. 1; "Model
soups", ICML 2022) often keeps most of what each end point is good at, at no extra
inference cost. ``alpha = 1`` gives model ``b`` exactly, ``alpha = 0`` model ``a``.

The new card copies ``b``'s card (input policy, threshold, smallest piece), drops its
measured metrics (they belong to ``b``'s weights, not to these), and records both parents
(name and SHA-256), ``alpha`` and this command under ``training["interpolation"]``.

    python benchmarks/interpolate_weights.py A_CARD B_CARD --alpha 0.5 --name NAME --out DIR

Both weights files are checked against their cards' SHA-256 (``load_model``); nothing is
unpickled. Integer tensors (none in the shipped U-Nets) must be equal in both parents.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from napari_topo.models.registry import load_model, save_model


def interpolate(a, b, alpha: float, name: str, out: str | Path):
    """Write the interpolated model ``name`` into ``out``; return its card.

    Raises
    ------
    ValueError
        ``alpha`` outside [0, 1], different architectures or arguments, different
        tensor names or shapes, or integer tensors that differ.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    model_a, card_a = load_model(a)
    model_b, card_b = load_model(b)
    if (card_a.architecture, card_a.arch_kwargs) != (card_b.architecture, card_b.arch_kwargs):
        raise ValueError(
            f"{card_a.name} ({card_a.architecture} {card_a.arch_kwargs}) and {card_b.name} "
            f"({card_b.architecture} {card_b.arch_kwargs}) are not the same architecture"
        )
    sa, sb = model_a.state_dict(), model_b.state_dict()
    if sa.keys() != sb.keys():
        raise ValueError("the two models' tensors have different names")
    mixed = {}
    for key, ta in sa.items():
        tb = sb[key]
        if ta.shape != tb.shape:
            raise ValueError(f"{key}: shapes {tuple(ta.shape)} and {tuple(tb.shape)} differ")
        if ta.is_floating_point():
            mixed[key] = torch.lerp(ta.double(), tb.double(), alpha).to(ta.dtype)
        elif torch.equal(ta, tb):
            mixed[key] = ta.clone()
        else:
            raise ValueError(f"{key}: integer tensors differ and cannot be interpolated")
    model_b.load_state_dict(mixed, strict=True)
    card = card_b.to_dict()
    card["name"] = name
    card["metrics"] = {}
    training = dict(card.get("training") or {})
    training["interpolation"] = {
        "method": "linear weight interpolation (WiSE-FT, Wortsman et al. CVPR 2022, eq. 1)",
        "alpha": alpha,
        "a": {"name": card_a.name, "sha256": card_a.sha256},
        "b": {"name": card_b.name, "sha256": card_b.sha256},
        "command": "python benchmarks/interpolate_weights.py " + shlex.join(sys.argv[1:]),
    }
    card["training"] = training
    return save_model(model_b, card, out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", help="model at alpha = 0 (name, card or folder)")
    p.add_argument("b", help="model at alpha = 1; its card is the template")
    p.add_argument("--alpha", type=float, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    card = interpolate(args.a, args.b, args.alpha, args.name, args.out)
    print(f"wrote {card.path} (sha256 {card.sha256[:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
