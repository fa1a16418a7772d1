"""Run a registered model on a volume: normalisation, device, sliding window, outputs.

:func:`predict` is the one call the CLI, the evaluation and the widgets go through. It
applies the intensity normalisation recorded in the model card, picks the device, runs
:func:`~napari_topo.inference.sliding.sliding_window_inference` (progress callback and
cancel included) and returns named float32 outputs: ``"vessel"`` (probability) for every
model, plus ``"centerness"`` (predicted distance to the centerline, voxels) and
``"embedding"`` (E, z, y, x) for TopNet.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MIN_SIZE",
    "DEFAULT_MODEL",
    "InferenceFallbackWarning",
    "predict",
    "resample_factors",
    "resolve_model",
    "segment",
]

#: The model used when none is named: the best of the measured comparison (README).
DEFAULT_MODEL = "unet-projpool"
#: Smallest connected piece of the mask segment() keeps, in voxels. Chosen on the
#: validation volumes (seeds 900000-900009, 96^3, unet-projpool): 32 gives the best
#: clDice and 2D CCE there (0 / 32 / 64 / 128 / 256: clDice 0.860 / 0.874 / 0.872 /
#: 0.867 / 0.863, Betti-0 error 84.4 / 14.0 / 7.8 / 4.9 / 3.1).
DEFAULT_MIN_SIZE = 32
#: Anisotropy (largest / smallest factor) below which no resampling is done.
_RESAMPLE_TOLERANCE = 0.05
#: Smallest tile edge an out-of-memory retry goes down to.
_MIN_TILE = 32


class InferenceFallbackWarning(RuntimeWarning):
    """Inference went on with other settings (smaller tiles, the CPU) after a failure."""


def resolve_model(model, device=None):
    """``(module, card)`` from a registry name, a card/weights path or such a pair."""
    from ..models.registry import load_model

    if isinstance(model, tuple) and len(model) == 2:
        module, card = model
        return (module.to(device) if device is not None else module), card
    return load_model(model, device=device or "cpu")


def resample_factors(spacing=None, zoom: float | Sequence[float] | None = None) -> tuple:
    """Per-axis resampling factors that make voxels isotropic (then scale by ``zoom``).

    The models were trained on isotropic voxels with vessel radii of 1-6 voxels
    (``card.training["radius_range_voxels"]``). An anisotropic ``spacing`` is resampled to the
    finest spacing (factor ``spacing / min(spacing)`` per axis); ``zoom`` scales further,
    e.g. 0.5 for vessels twice as thick (in voxels) as the training data.

    Examples
    --------
    >>> resample_factors((2.0, 0.5, 0.5))
    (4.0, 1.0, 1.0)
    >>> resample_factors(None, 0.5)
    (0.5, 0.5, 0.5)
    """
    if spacing is None:
        factors = np.ones(3)
    else:
        sp = np.asarray(spacing, dtype=float)
        if sp.ndim == 0:
            sp = np.full(3, float(sp))
        if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
            raise ValueError(f"spacing must be 3 positive numbers (z, y, x); got {spacing!r}")
        factors = sp / sp.min()
    if zoom is not None:
        z = np.asarray(zoom, dtype=float)
        if z.shape not in ((), (3,)) or not np.all(np.isfinite(z)) or np.any(z <= 0):
            raise ValueError(f"zoom must be a positive number or 3 of them; got {zoom!r}")
        factors = factors * z
    return tuple(float(f) for f in factors)


def _needs_resampling(factors) -> bool:
    return any(abs(f - 1.0) > _RESAMPLE_TOLERANCE for f in factors)


def _resize(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear resampling of a (z, y, x) array to ``shape`` (corners aligned as skimage)."""
    from skimage.transform import resize

    return resize(arr, shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True)


def _normalizer(volume, spec: Mapping):
    from .sliding import normalize_percentile

    norm = normalize_percentile(volume, spec.get("low", 0.5), spec.get("high", 99.5))
    if norm.hi > norm.lo:
        return norm
    # Sparse bright structures can fill fewer voxels than the upper percentile: fall back
    # to the sample's full range; a truly constant volume has nothing to segment.
    full = normalize_percentile(volume, 0.0, 100.0)
    if full.hi <= full.lo:
        raise ValueError(
            f"the volume is empty: every voxel sampled has the value {full.lo:g}, so there "
            "is nothing to segment"
        )
    return full


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    text = str(exc).lower()
    return isinstance(exc, oom) or (
        isinstance(exc, RuntimeError)
        and any(m in text for m in ("out of memory", "can't allocate memory", "cannot allocate"))
    )


def _smaller(tile: tuple[int, int, int], batch: int, device) -> tuple | None:
    """The next (tile, batch, device) to try after running out of memory, or None."""
    import torch

    if batch > 1:
        return tile, 1, device
    if max(tile) > _MIN_TILE:
        # halve the largest edges, keeping multiples of 16 (the U-Nets' down-sampling)
        new = tuple(max(_MIN_TILE, (t // 2) // 16 * 16) if t > _MIN_TILE else t for t in tile)
        return new, 1, device
    if device.type != "cpu":
        return tile, 1, torch.device("cpu")
    return None


def predict(
    volume: Any,
    model: Any = DEFAULT_MODEL,
    *,
    tile: int | Sequence[int] = (64, 64, 64),
    overlap: float = 0.25,
    batch_size: int = 2,
    device: str | None = "auto",
    progress: Callable[[int, int], Any] | None = None,
    cancel: Any = None,
    spacing: float | Sequence[float] | None = None,
    zoom: float | Sequence[float] | None = None,
    out: Mapping[str, Any] | None = None,
    on_message: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Predict vessel probability (and TopNet's extra outputs) for a 3D volume.

    Parameters
    ----------
    volume : array-like (z, y, x)
        numpy, dask or zarr; read tile by tile (never loaded whole unless resampled).
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
    spacing : float or sequence of 3 float, optional
        Physical voxel size (e.g. a napari layer's ``scale``). Anisotropic voxels are
        resampled to isotropic ones for the model and the outputs mapped back to the
        input grid (:func:`resample_factors`).
    zoom : float or sequence of 3 float, optional
        Extra resampling factor so vessel radii fall in the trained range (1-6 voxels):
        0.5 for vessels twice as thick, 2 for vessels half as thick.
    out : dict of str to array, optional
        Destinations ``(C, z, y, x)`` per output (e.g. zarr arrays, ``{"vessel": z}``
        for the U-Nets), filled slab by slab: with a dask or zarr ``volume`` nothing of
        volume size is ever held in memory. Not combinable with resampling.
    on_message : callable(str), optional
        Receives notes about fallbacks (out-of-memory retries); default: a
        :class:`InferenceFallbackWarning`.

    Returns
    -------
    dict of str to ndarray
        ``"vessel"``: probability, shape of ``volume``; for TopNet also ``"centerness"``
        (z, y, x) and ``"embedding"`` (E, z, y, x). With ``out``: the ``out`` arrays.

    Raises
    ------
    ValueError
        Bad input, each with a one-line message: not 3D (2D, RGB, time series), empty or
        constant, NaN/inf voxels, bad settings.
    Cancelled
        When ``cancel`` was set; no partial output is returned.

    Notes
    -----
    On CUDA (or any device) out-of-memory, the run is retried with one tile per batch,
    then halved tiles (down to 32), then on the CPU; each step is reported through
    ``on_message``.
    """
    import torch

    from .device import autocast_context, pick_device
    from .sliding import _positive_int_triple, _volume_info, sliding_window_inference

    def say(msg: str) -> None:
        if on_message is not None:
            on_message(msg)
        else:
            warnings.warn(msg, InferenceFallbackWarning, stacklevel=3)

    volume, shape, _ = _volume_info(volume)
    factors = resample_factors(spacing, zoom)
    resample = _needs_resampling(factors)
    if resample and out is not None:
        raise ValueError("out= cannot be combined with resampling (spacing/zoom)")
    dev = pick_device(device)
    module, card = resolve_model(model, dev)
    norm_spec = dict(card.normalization or {})
    if norm_spec.get("method", "percentile") != "percentile":
        raise ValueError(f"model {card.name!r}: unsupported normalisation {norm_spec}")
    norm = _normalizer(volume, norm_spec)

    source = volume
    if resample:
        new_shape = tuple(max(1, round(n * f)) for n, f in zip(shape, factors, strict=True))
        source = _resize(np.asarray(volume, dtype=np.float32), new_shape).astype(np.float32)

    def run(tile, batch, dev):
        mod = module.to(dev)

        def predictor(x: torch.Tensor):
            with autocast_context(dev):
                y = mod(norm(x))
            if isinstance(y, dict):
                res = {k: v.float() for k, v in y.items()}
                res["vessel"] = torch.sigmoid(res["vessel"])
                return res
            return {"vessel": torch.sigmoid(y.float())}

        return sliding_window_inference(
            source,
            predictor,
            tile=tile,
            overlap=overlap,
            batch_size=batch,
            # Mirror, not zeros, where the volume is shorter than a tile: raw zeros look
            # like vessel in dark-vessel images (Dice 0.95 -> 0.01 on a 48^3 volume with
            # 64^3 tiles before this).
            pad_mode="reflect",
            device=dev,
            progress=progress,
            cancel=cancel,
            out=out,
        )

    attempt = (_positive_int_triple(tile, "tile"), batch_size, dev)
    while True:
        try:
            raw = run(*attempt)
            break
        except Exception as exc:
            if not _is_oom(exc):
                raise
            nxt = _smaller(*attempt)
            if attempt[2].type == "cuda":
                torch.cuda.empty_cache()
            if nxt is None:
                raise MemoryError(
                    f"out of memory even with tile {attempt[0]} and batch 1 on "
                    f"{attempt[2]}; free memory or use a smaller volume"
                ) from None
            say(
                f"out of memory on {attempt[2]} with tile {attempt[0]} and batch {attempt[1]}; "
                f"retrying with tile {nxt[0]} and batch {nxt[1]} on {nxt[2]}"
            )
            attempt = nxt
    if out is not None:
        return dict(raw)
    result = {}
    for key, arr in raw.items():
        arr = np.asarray(arr, dtype=np.float32)
        if resample:
            if key == "centerness":  # a distance in resampled voxels: back to input voxels
                arr = arr / float(np.exp(np.mean(np.log(factors))))
            arr = np.stack([_resize(c, shape) for c in arr]).astype(np.float32)
        result[key] = arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr
    return result


def segment(
    volume: Any,
    model: Any = DEFAULT_MODEL,
    *,
    threshold: float = 0.5,
    sources=None,
    spacing: float | Sequence[float] | None = None,
    min_size: int = DEFAULT_MIN_SIZE,
    **predict_kwargs,
):
    """Predict, threshold, skeletonise and reconstruct the vessel trees of a volume.

    The headless equivalent of the Segment widget: :func:`predict` (all its keyword
    arguments are accepted) followed by
    :meth:`~napari_topo.analysis.VesselAnalysis.from_outputs`.

    Parameters
    ----------
    volume : array-like (z, y, x)
    model : str, path or (module, card)
    threshold : float
        Probability above which a voxel is vessel.
    sources : (K, 3) array_like, optional
        Tree roots in voxel coordinates (default: detected automatically).
    spacing : float or sequence of 3 float, optional
        Physical voxel size: used for resampling, radii, lengths and exports.
    min_size : int
        Mask pieces with fewer voxels are dropped (:data:`DEFAULT_MIN_SIZE`; 0 keeps
        everything).

    Returns
    -------
    VesselAnalysis
    """
    from ..analysis import VesselAnalysis

    outputs = predict(volume, model, spacing=spacing, **predict_kwargs)
    return VesselAnalysis.from_outputs(
        outputs, threshold=threshold, sources=sources, spacing=spacing, min_size=min_size
    )
