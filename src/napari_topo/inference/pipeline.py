"""Run a registered model on a volume: normalisation, device, sliding window, outputs.

:func:`predict` is the one call the CLI, the evaluation and the widgets go through. It
applies the intensity normalisation recorded in the model card, picks the device, runs
:func:`~napari_topo.inference.sliding.sliding_window_inference` (progress callback and
cancel included) and returns named float32 outputs: ``"vessel"`` (probability) for every
model, plus ``"centerness"`` (predicted distance to the centerline, voxels) and
``"embedding"`` (E, z, y, x) for TopNet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["predict", "resolve_model"]


def resolve_model(model, device=None):
    """``(module, card)`` from a registry name, a card/weights path or such a pair."""
    from ..models.registry import load_model

    if isinstance(model, tuple) and len(model) == 2:
        module, card = model
        return (module.to(device) if device is not None else module), card
    return load_model(model, device=device or "cpu")


def predict(
    volume: Any,
    model: Any = "unet-cldice",
    *,
    tile: int | Sequence[int] = (64, 64, 64),
    overlap: float = 0.25,
    batch_size: int = 2,
    device: str | None = "auto",
    progress: Callable[[int, int], Any] | None = None,
    cancel: Any = None,
) -> dict[str, np.ndarray]:
    """Predict vessel probability (and TopNet's extra outputs) for a 3D volume.

    Parameters
    ----------
    volume : array-like (z, y, x)
        numpy, dask or zarr; read tile by tile.
    model : str, path or (module, card)
        A registry name (``napari-topo models`` lists them), a card or weights path, or a
        loaded ``(module, ModelCard)`` pair.
    tile, overlap, batch_size
        Sliding-window settings (:func:`sliding_window_inference`).
    device : str, optional
        "auto" (CUDA, then MPS, then CPU), "cuda", "mps" or "cpu".
    progress : callable(done, total), optional
        Called after every batch of tiles.
    cancel : callable or threading.Event, optional
        Checked before every batch; raises :class:`~.sliding.Cancelled` when set.

    Returns
    -------
    dict of str to ndarray
        ``"vessel"``: probability, shape of ``volume``; for TopNet also ``"centerness"``
        (z, y, x) and ``"embedding"`` (E, z, y, x).
    """
    import torch

    from .device import autocast_context, pick_device
    from .sliding import normalize_percentile, sliding_window_inference

    dev = pick_device(device)
    module, card = resolve_model(model, dev)
    norm_spec = dict(card.normalization or {})
    if norm_spec.get("method", "percentile") != "percentile":
        raise ValueError(f"model {card.name!r}: unsupported normalisation {norm_spec}")
    norm = normalize_percentile(volume, norm_spec.get("low", 0.5), norm_spec.get("high", 99.5))

    def predictor(x: torch.Tensor):
        with autocast_context(dev):
            out = module(norm(x))
        if isinstance(out, dict):
            res = {k: v.float() for k, v in out.items()}
            res["vessel"] = torch.sigmoid(res["vessel"])
            return res
        return {"vessel": torch.sigmoid(out.float())}

    out = sliding_window_inference(
        volume,
        predictor,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        device=dev,
        progress=progress,
        cancel=cancel,
    )
    result = {}
    for key, arr in out.items():
        arr = np.asarray(arr, dtype=np.float32)
        result[key] = arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr
    return result
