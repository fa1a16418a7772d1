"""Run a registered model on a volume: input policy, device, sliding window, outputs.

:func:`predict` is the one call the CLI, the evaluation and the widgets go through. It
plans how the volume reaches the model from the model card and the caller's choices
(:func:`~napari_topo.inference.intensity.plan_input`: CT window or percentiles, vessel
polarity, zoom), picks the device, runs
:func:`~napari_topo.inference.sliding.sliding_window_inference` (progress callback and
cancel included) with that normalisation applied tile by tile, and returns named float32
outputs: ``"vessel"`` (probability) for every model, plus ``"centerness"`` (predicted
distance to the centerline, voxels) and ``"embedding"`` (E, z, y, x) for TopNet, in a
:class:`PredictOutputs` dict whose ``input_policy`` attribute is the
:class:`~napari_topo.inference.intensity.InputPolicy` it applied.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "CT_VESSEL_RANGE",
    "DEFAULT_MIN_SIZE",
    "DEFAULT_MODEL",
    "InferenceFallbackWarning",
    "Notice",
    "PredictOutputs",
    "drop_pieces_outside",
    "grow_roi",
    "mirror_flips",
    "predict",
    "predict_mirrored",
    "resample_factors",
    "resolve_model",
    "segment",
    "voxel_size",
]

#: The model used when none is named (README, *On real data*): of the shipped models,
#: unet-dice draws thick vessels solid (core sensitivity 0.62 on the vesselNN stacks and
#: 0.72 on 3D-IRCADb-01, against 0.43 and 0.57 for unet-projpool, whose projected-pooling
#: loss leaves vessel interiors unconstrained) at the same two-photon Dice (0.572) and a
#: CT Dice 0.017 lower (0.328 vs 0.345).
DEFAULT_MODEL = "unet-dice"
#: Smallest connected piece of the mask segment() keeps, in voxels, for a model whose
#: card names none (:attr:`~napari_topo.models.registry.ModelCard.min_size`). Chosen on
#: the validation volumes (seeds 900000-900009, 96^3, unet-projpool): 32 gives the best
#: clDice and 2D CCE there (0 / 32 / 64 / 128 / 256: clDice 0.860 / 0.874 / 0.872 /
#: 0.867 / 0.863, Betti-0 error 84.4 / 14.0 / 7.8 / 4.9 / 3.1).
DEFAULT_MIN_SIZE = 32
#: Share of ``predict``'s progress given to a voxel head
#: (:meth:`~napari_topo.models.voxel_head.VoxelHeadNet.refine`), by its stages: on the
#: development CT's crop (2 CPU cores) the network took 20-26 s, one stage about 17 s more
#: and two stages 40-50 s more.
HEAD_PROGRESS_SHARE = {1: 0.4, 2: 0.65}
#: Anisotropy (largest / smallest factor) below which no resampling is done.
_RESAMPLE_TOLERANCE = 0.05
#: Smallest tile edge an out-of-memory retry goes down to.
_MIN_TILE = 32


class InferenceFallbackWarning(RuntimeWarning):
    """Inference went on with other settings (smaller tiles, the CPU) after a failure."""


class Notice(str):
    """A message of :func:`predict`'s ``on_message`` that informs and warns of nothing
    (the Segment dock shows it as information, not as a warning: a newcomer read the
    voxel head's "read as when it was fine-tuned" as an alarm)."""


class PredictOutputs(dict):
    """:func:`predict`'s outputs: a dict of output name -> array, plus the input policy.

    The keys are the model's outputs only (``"vessel"``, and ``"centerness"`` and
    ``"embedding"`` for TopNet), so code that loops over them sees arrays alone; what
    was decided about the input travels beside them.

    Attributes
    ----------
    input_policy : InputPolicy or None
        :class:`~napari_topo.inference.intensity.InputPolicy` applied: intensity mapping
        (CT window or percentiles, polarity), zoom and the per-axis resampling factors,
        each with the reason (``describe()`` for one line, ``to_dict()`` for JSON).
    compute : dict or None
        Where and in what arithmetic the network ran: ``{"device": "cpu", "precision":
        "bfloat16"}`` (:func:`~napari_topo.inference.device.resolve_precision`; the
        device after any out-of-memory fallback), with ``"tta"`` (e.g. ``"2 mirrored
        copies"``) when test-time mirroring ran, and ``"empty tiles"``: e.g. ``"16 of 25
        tiles empty, not run"`` (``"0 of ..."`` when none was), or ``"not tested: every
        tile run"`` with ``skip_empty_tiles=False``.
    """

    def __init__(
        self, arrays: Mapping[str, Any] = (), input_policy: Any = None, compute: Any = None
    ):
        super().__init__(arrays)
        self.input_policy = input_policy
        self.compute = compute


def resolve_model(model, device=None):
    """``(module, card)`` from a registry name, a card/weights path or such a pair."""
    from ..models.registry import load_model

    if isinstance(model, tuple) and len(model) == 2:
        module, card = model
        return (module.to(device) if device is not None else module), card
    return load_model(model, device=device or "cpu")


def resample_factors(
    spacing=None, zoom: float | Sequence[float] | None = None, *, keep_coarse: bool = False
) -> tuple:
    """Per-axis resampling factors that make voxels isotropic (then scale by ``zoom``).

    The models were trained on isotropic voxels with vessel radii in
    ``card.training["radius_range_voxels"]`` (1-6 voxels for the first models, 1-12 for
    those with an "auto" normalisation). An anisotropic ``spacing`` is resampled to the
    finest spacing (factor ``spacing / min(spacing)`` per axis); ``zoom`` scales further,
    e.g. 0.5 for vessels twice as thick (in voxels) as the training data
    (:func:`~napari_topo.inference.intensity.plan_zoom` chooses it for ``zoom="auto"``).

    ``keep_coarse`` (:attr:`~napari_topo.inference.intensity.InputPolicy.keep_coarse_axes`:
    every modality but CT) leaves an axis more than
    :data:`~napari_topo.inference.intensity.ANISOTROPY_THRESHOLD` (3) times the finest at
    its own voxel size (factor 1, then ``zoom`` like the others): a two-photon stack's
    5 um z step is not upsampled 5x (measured gain and the reason: that constant's
    comment).

    Examples
    --------
    >>> resample_factors((2.0, 0.5, 0.5))
    (4.0, 1.0, 1.0)
    >>> resample_factors((5.0, 1.0, 1.0), keep_coarse=True)
    (1.0, 1.0, 1.0)
    >>> resample_factors((2.0, 1.0, 1.0), 0.5, keep_coarse=True)  # 2x: resampled
    (1.0, 0.5, 0.5)
    >>> resample_factors(None, 0.5)
    (0.5, 0.5, 0.5)
    """
    from .intensity import ANISOTROPY_THRESHOLD

    if spacing is None:
        ratio = np.ones(3)
    else:
        sp = np.asarray(spacing, dtype=float)
        if sp.ndim == 0:
            sp = np.full(3, float(sp))
        if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
            raise ValueError(f"spacing must be 3 positive numbers (z, y, x); got {spacing!r}")
        ratio = sp / sp.min()
    # a kept axis starts at its own voxel size; the zoom then scales every axis alike
    # (not zooming it: vesselNN plaqueVessels, zoom 0.265, Dice 0.735 -> 0.611)
    factors = np.where(ratio > ANISOTROPY_THRESHOLD, 1.0, ratio) if keep_coarse else ratio
    if zoom is not None:
        z = np.asarray(zoom, dtype=float)
        if z.shape not in ((), (3,)) or not np.all(np.isfinite(z)) or np.any(z <= 0):
            raise ValueError(f"zoom must be a positive number or 3 of them; got {zoom!r}")
        factors = factors * z
    return tuple(float(f) for f in factors)


def spacing_triple(spacing) -> tuple[float, float, float] | None:
    """``spacing`` (None, one number or 3) as 3 floats (z, y, x), or None."""
    if spacing is None:
        return None
    sp = np.broadcast_to(np.asarray(spacing, dtype=float), (3,))
    return tuple(float(v) for v in sp)


def _needs_resampling(factors) -> bool:
    return any(abs(f - 1.0) > _RESAMPLE_TOLERANCE for f in factors)


def _resize(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear resampling of a (z, y, x) array to ``shape`` (corners aligned as skimage)."""
    from skimage.transform import resize

    return resize(arr, shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True)


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    text = str(exc).lower()
    return isinstance(exc, oom) or (
        isinstance(exc, RuntimeError)
        and any(m in text for m in ("out of memory", "can't allocate memory", "cannot allocate"))
    )


#: Mirrorings averaged by ``tta=N`` (tensor dims of a ``(B, C, z, y, x)`` tile).
_MIRRORS = {
    1: [()],
    2: [(), (4,)],
    4: [(), (4,), (3,), (3, 4)],
    8: [(), (4,), (3,), (3, 4), (2,), (2, 4), (2, 3), (2, 3, 4)],
}


def mirror_flips(tta: int) -> list[tuple[int, ...]]:
    """The mirrorings that test-time augmentation with ``tta`` copies averages.

    1: none; 2: x; 4: every combination of y and x; 8: of z, y and x (as nnU-Net's
    test-time mirroring, Isensee et al. 2021, Nat. Methods 18:203). Each copy costs one
    more forward pass per tile.

    Raises
    ------
    ValueError
        ``tta`` not one of 1, 2, 4, 8.
    """
    if isinstance(tta, bool) or tta not in _MIRRORS:
        raise ValueError(f"tta must be 1 (off), 2, 4 or 8 mirrored copies; got {tta!r}")
    return _MIRRORS[int(tta)]


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


def fine_tuned_reading(card: Any) -> dict | None:
    """How a voxel head model (``finetune(layers="head")``, architecture
    ``"unet3d-voxel-head"``) was fed its image: ``{"modality", "window", "polarity",
    "summary"}`` from its card's ``training["input_policy"]`` (the window: the values
    mapped to 0 and 1), or None for any other card or one that records none.

    The head's features are the normalised intensities themselves, so a volume read
    another way breaks it: a newcomer fine-tuned on a CT crop without air (read as
    microscopy, percentiles -116..459) and segmented a crop with air (read as CT, window
    -100..300): Dice 0.000, against 0.694 with the fine-tune's window. :func:`predict`
    pins them when the caller chose none (modality, window and polarity all automatic).
    """
    if getattr(card, "architecture", None) != "unet3d-voxel-head":
        return None
    intensity = ((card.training or {}).get("input_policy") or {}).get("intensity") or {}
    try:
        lo, hi = float(intensity.get("lo")), float(intensity.get("hi"))
    except (TypeError, ValueError):
        return None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        return None
    modality = "ct" if intensity.get("modality") == "ct" else "microscopy"
    polarity = "dark" if intensity.get("invert") else "bright"
    what = "CT" if modality == "ct" else "microscopy/other"
    return {
        "modality": modality,
        "window": (lo, hi),
        "polarity": polarity,
        # the CT window's unit named (a newcomer's card read "-100..300 -> [0, 1]")
        "summary": f"{what}, {lo:g}..{hi:g}{' HU' if modality == 'ct' else ''} -> [0, 1], "
        f"{polarity} vessels",
    }


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
    zoom: str | float | Sequence[float] | None = "auto",
    out: Mapping[str, Any] | None = None,
    on_message: Callable[[str], Any] | None = None,
    modality: str = "auto",
    window: Sequence[float] | None = None,
    polarity: str = "auto",
    header_hint: str | None = None,
    on_policy: Callable[[Any], Any] | None = None,
    precision: str = "auto",
    intensity_from: Any = None,
    intensity_from_name: str = "the whole image",
    tta: int = 1,
    skip_empty_tiles: bool = True,
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
        Called after every batch of tiles: tiles run of all, or, when several zooms run,
        thousandths of the whole run (``total`` 1000).
    cancel : callable or threading.Event, optional
        Checked before every batch; raises :class:`~.sliding.Cancelled` when set.
    spacing : float or sequence of 3 float, optional
        Physical voxel size (e.g. a napari layer's ``scale``). Anisotropic voxels are
        resampled to isotropic ones for the model and the outputs mapped back to the
        input grid (:func:`resample_factors`), except, outside CT, an axis more than 3x
        coarser than the finest, which the model sees as it is
        (:attr:`~napari_topo.inference.intensity.InputPolicy.keep_coarse_axes`).
    zoom : "auto", float, sequence of 3 float or None
        Extra resampling factor so vessel radii fall in the trained range: 0.5 for
        vessels twice as thick, 2 for vessels half as thick; None is 1. "auto"
        (:func:`~napari_topo.inference.intensity.plan_zoom`): a CT goes to about 1 mm
        voxels (needs ``spacing`` in mm), other images are shrunk until their large
        vessels have a radius of about 8 voxels (0.25-1); cards with a "percentile"
        normalisation (the earlier models) are not zoomed. A
        :class:`~napari_topo.inference.intensity.ZoomPlan` (an earlier input policy's
        ``zoom``) is used as it is, with every zoom of its ensemble.
    out : dict of str to array, optional
        Destinations ``(C, z, y, x)`` per output (e.g. zarr arrays, ``{"vessel": z}``
        for the U-Nets), filled slab by slab: with a dask or zarr ``volume`` nothing of
        volume size is ever held in memory. Not combinable with resampling (spacing or a
        given zoom); an automatic zoom is then not applied (said through ``on_message``).
    on_message : callable(str), optional
        Receives notes about fallbacks (out-of-memory retries, an automatic zoom left
        out), and :class:`Notice` strings that only inform (a voxel head's image read as
        when it was fine-tuned); default: a :class:`InferenceFallbackWarning`.
    modality : {"auto", "ct", "microscopy"}
        "auto" recognises a CT in Hounsfield units from the values (or ``header_hint``).
    window : (low, high), optional
        Intensity window (HU for a CT) mapped to [0, 1], instead of the card's.
    polarity : {"auto", "bright", "dark"}
        Vessels brighter or darker than their surroundings; "auto": bright for a CT,
        otherwise from the skewness of the intensities. Dark vessels are inverted for
        models that expect bright ones.
    header_hint : str, optional
        The modality a file header states ("ct", "mr", ...).
    on_policy : callable(InputPolicy), optional
        Called once with the input policy (modality, intensity mapping, zoom) when it is
        decided, before the model runs: a user sees what was chosen at once.
    precision : {"auto", "float32", "bfloat16", "float16"}
        Arithmetic of the network (:func:`~napari_topo.inference.device.resolve_precision`):
        "auto" runs float16 on CUDA, bfloat16 on a CPU with native bfloat16 instructions
        (2-3x faster there, masks agreeing with float32 to a Dice of 0.999), float32
        elsewhere and for TopNet on the CPU (its embedding decides the trees). Blending
        and every output stay float32.
    intensity_from : array-like (z, y, x), optional
        Decide the modality, intensity mapping and polarity from this array (a strided
        sample of at most ~1M voxels) instead of ``volume``: for a crop of a larger
        image, the whole image or a coarser level of its pyramid, so that the crop is
        scaled as the whole would be
        (:func:`~napari_topo.inference.intensity.plan_input`). The zoom still comes from
        ``volume``. ``intensity_from_name`` names it in the input policy's line.
    tta : {1, 2, 4, 8}
        Test-time augmentation by mirroring (:func:`mirror_flips`): each tile is also
        run mirrored along x (2), y and x (4) or z, y and x (8), each prediction mirrored
        back and the probabilities averaged, as nnU-Net does (Isensee et al. 2021). The
        network time grows that many times; 1 (default) is off. TopNet's centerness is
        averaged too; its embedding (not mirror-symmetric) comes from the unmirrored
        pass. Recorded in ``compute["tta"]``.
    skip_empty_tiles : bool
        Do not run the network on a tile that holds nothing but white noise or is
        constant (the air around a body after a CT window): such a tile takes no part in
        the blend, so a voxel that only such tiles cover has probability 0
        (:mod:`~napari_topo.inference.empty_tiles`: the tile, as the network sees it,
        against its own noise level at three scales). Each tile is normalised on its own
        inside the networks, so such a tile otherwise reaches them at a vessel's
        contrast. Default True; the count is recorded in ``compute["empty tiles"]``.
        False runs every tile. A thin vessel at the edge of visibility (radius 1 voxel
        at about 1.5 noise standard deviations) can fall in a skipped tile (up to a third
        of such tiles on synthetic tests) and is then cut there.

    Returns
    -------
    PredictOutputs
        A dict: ``"vessel"``: float32 probability, shape of ``volume``; for TopNet also
        ``"centerness"`` (z, y, x) and ``"embedding"`` (E, z, y, x). With ``out``: the
        ``out`` arrays. Its ``input_policy`` attribute is the
        :class:`~napari_topo.inference.intensity.InputPolicy` applied (``describe()`` is
        one line for the user, ``to_dict()`` JSON).

    Raises
    ------
    ValueError
        Bad input, each with a one-line message: not 3D (2D, RGB, time series), empty or
        constant, NaN/inf voxels, bad settings (modality, window, polarity, zoom,
        spacing), a model card with an unknown normalisation.
    Cancelled
        When ``cancel`` was set; no partial output is returned.

    Notes
    -----
    On CUDA (or any device) out-of-memory, the run is retried with one tile per batch,
    then halved tiles (down to 32), then on the CPU; each step is reported through
    ``on_message``.
    """
    import torch

    from .device import autocast_context, memory_format, pick_device, resolve_precision
    from .empty_tiles import empty_tiles
    from .intensity import ZoomPlan, plan_input
    from .sliding import (
        Cancelled,
        _is_set,
        _positive_int_triple,
        _volume_info,
        sliding_window_inference,
    )

    def say(msg: str) -> None:
        if on_message is not None:
            on_message(msg)
        else:
            warnings.warn(msg, InferenceFallbackWarning, stacklevel=3)

    volume, shape, _ = _volume_info(volume)
    given_zoom = None if isinstance(zoom, str) or zoom is None else zoom
    # before any work: a resampling no modality avoids (the exact check follows the plan)
    if out is not None and _needs_resampling(
        resample_factors(spacing, given_zoom, keep_coarse=True)
    ):
        raise ValueError("out= cannot be combined with resampling (spacing/zoom)")
    dev = pick_device(device)
    resolve_precision(precision, dev)  # a bad precision is refused before any work
    mirror_flips(tta)  # so is a bad tta
    if not isinstance(skip_empty_tiles, (bool, np.bool_)):
        raise ValueError(f"skip_empty_tiles must be True or False; got {skip_empty_tiles!r}")
    module, card = resolve_model(model, dev)
    if modality == "auto" and window is None and polarity == "auto":
        pinned = fine_tuned_reading(card)
        if pinned is not None:
            modality, window, polarity = pinned["modality"], pinned["window"], pinned["polarity"]
            if on_message is not None:
                on_message(
                    Notice(
                        f"model {card.name!r} carries a voxel head: the image is read as "
                        f"when it was fine-tuned ({pinned['summary']}); give a modality, "
                        "window or polarity to read it otherwise"
                    )
                )
    policy = plan_input(
        volume,
        card.normalization,
        modality=modality,
        window=window,
        polarity=polarity,
        zoom=zoom,
        spacing=spacing,
        header_hint=header_hint,
        intensity_from=intensity_from,
        intensity_from_name=intensity_from_name,
    )
    if out is not None and policy.zoom.source != "user" and policy.zoom.zoom != 1.0:
        say(
            f"automatic zoom {policy.zoom.zoom:.3g} not applied: out= writes on the "
            "input grid (pass zoom=1 to silence this)"
        )
        kept = ZoomPlan(
            1.0,
            "none",
            "not zoomed: out= writes on the input grid (automatic zoom would be "
            f"{policy.zoom.zoom:.3g})",
        )
        policy = dataclasses.replace(policy, zoom=kept)
    keep = policy.keep_coarse_axes
    if out is not None and _needs_resampling(resample_factors(spacing, None, keep_coarse=keep)):
        raise ValueError(
            f"out= cannot be combined with resampling: the voxels {spacing_triple(spacing)} are "
            "resampled to isotropic ones for a CT (or for a model with a percentile card)"
        )
    factors = resample_factors(spacing, policy.zoom.zoom, keep_coarse=keep)
    policy = dataclasses.replace(policy, factors=factors, spacing=spacing_triple(spacing))
    if on_policy is not None:
        on_policy(policy)
    norm = policy.normalizer
    zooms = policy.zoom.zooms
    # progress over every zoom the model runs at, weighted by the voxels each one sees
    weights = [float(np.prod(resample_factors(spacing, z, keep_coarse=keep))) for z in zooms]
    head = getattr(module, "refine", None)  # a voxel head (finetune(layers="head"))
    if (head is not None or card.architecture == "unet3d-voxel-head") and out is not None:
        raise ValueError(
            f"model {card.name!r} carries a voxel head, which runs on the whole volume: "
            "out= cannot be used with it (nor segment --format ome-zarr, which streams "
            "chunk by chunk); segment to a whole-volume format instead"
        )
    # the voxel head's features take about as long as the network on 2 CPU cores
    share = HEAD_PROGRESS_SHARE[getattr(module, "stages", 1)] if head is not None else 0.0
    weights = [(1.0 - share) * w / sum(weights) for w in weights]

    compute: dict[str, str] = {}
    # TopNet's embedding is not mirror-equivariant: it comes from the unmirrored pass.
    flips = mirror_flips(tta)
    # tiles skipped as empty and tiles, per zoom (of the attempt that finished)
    tallies: dict[int, dict] = {}

    def run(source, tile, batch, dev, progress, zoom_index=0):
        fmt = memory_format(dev)
        mod = module.to(dev).to(memory_format=fmt)
        dtype = resolve_precision(precision, dev, embedding="embedding" in (card.outputs or {}))
        compute.update(device=str(dev), precision=str(dtype or torch.float32).split(".")[-1])
        if len(flips) > 1:
            compute["tta"] = f"{len(flips)} mirrored copies"

        def forward(xn: torch.Tensor) -> dict[str, torch.Tensor]:
            with autocast_context(dev, dtype=dtype, enabled=dtype is not None):
                y = mod(xn.contiguous(memory_format=fmt))
            if isinstance(y, dict):
                res = {k: v.float() for k, v in y.items()}
                res["vessel"] = torch.sigmoid(res["vessel"])
                return res
            return {"vessel": torch.sigmoid(y.float())}

        def predictor(x: torch.Tensor):
            xn = norm(x)
            res = forward(xn)
            keys = [k for k in ("vessel", "centerness") if k in res]
            for dims in flips[1:]:
                y = forward(torch.flip(xn, dims))
                for key in keys:
                    res[key] += torch.flip(y[key], dims)
            for key in keys:
                res[key] /= len(flips)
            return res

        def skip(x: torch.Tensor) -> torch.Tensor:
            return empty_tiles(norm(x))

        tallies[zoom_index] = stats = {}

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
            skip=skip if skip_empty_tiles else None,
            stats=stats,
        )

    attempt = (_positive_int_triple(tile, "tile"), batch_size, dev)
    result = PredictOutputs(input_policy=policy, compute=compute)
    for i, z in enumerate(zooms):
        z_factors = resample_factors(spacing, z, keep_coarse=keep)
        raw, attempt = _run_with_fallbacks(
            lambda *a, f=z_factors, i=i: run(_resampled(volume, shape, f), *a, zoom_index=i),
            attempt,
            _scaled_progress(progress, sum(weights[:i]), weights[i]),
            say,
        )
        _note_empty_tiles(compute, tallies, skip_empty_tiles)
        if out is not None:
            return PredictOutputs(raw, input_policy=policy, compute=compute)
        resample = _needs_resampling(z_factors)
        scale = {}
        for key, arr in raw.items():
            arr = np.asarray(arr, dtype=np.float32)
            if resample:
                if key == "centerness":  # a distance in resampled voxels: back to input voxels
                    arr = arr / float(np.exp(np.mean(np.log(z_factors))))
                arr = np.stack([_resize(c, shape) for c in arr]).astype(np.float32)
            scale[key] = arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr
        _fuse_max(result, scale)
    if head is not None:
        # After the network: the voxel head on the assembled probability and the whole
        # volume's features on the input grid (models/voxel_head.py: a tile's differ).
        def stop() -> None:
            if _is_set(cancel):
                raise Cancelled()

        result["vessel"] = head(
            volume,
            result["vessel"],
            spacing_triple(spacing),
            normalize=norm,
            progress=_scaled_progress(progress, 1.0 - share, share),
            cancel=stop,
        )
        compute["voxel head"] = "on the whole volume (CPU, float32)"
    return result


#: ``compute["empty tiles"]`` when ``skip_empty_tiles=False``.
EMPTY_TILES_OFF = "not tested: every tile run"


def _note_empty_tiles(
    compute: dict, tallies: Mapping[int, Mapping[str, int]], tested: bool
) -> None:
    """``compute["empty tiles"]``: how many tiles :func:`predict` skipped, or that the
    test was off."""
    empty = sum(t.get("skipped", 0) for t in tallies.values())
    total = sum(t.get("tiles", 0) for t in tallies.values())
    compute["empty tiles"] = (
        f"{empty} of {total} tiles empty, not run" if tested else EMPTY_TILES_OFF
    )


def skipped_tiles_words(compute) -> str | None:
    """``compute["empty tiles"]`` when a tile was skipped, else None (what a closing line
    or a status says; a record of :class:`PredictOutputs` keeps the value either way)."""
    words = (compute or {}).get("empty tiles")
    if not words or words == EMPTY_TILES_OFF or words.startswith("0 of "):
        return None
    return words


def predict_mirrored(
    volume: Any, flips: Sequence[int], model: Any = DEFAULT_MODEL, **kwargs: Any
) -> PredictOutputs:
    """:func:`predict` on ``volume`` mirrored along the spatial axes ``flips``, with the
    outputs mirrored back onto ``volume``'s grid.

    The networks are not mirror-symmetric (see ``tta``), so a volume shown mirrored
    gives another mask than the file it came from. napari-topo's reader shows every
    file with its axes along +z, +y, +x of the world: an LPS CT (DICOM's order) appears
    mirrored in y and x. The Segment dock runs the network through this function in
    the file's own voxel order, so that it gives the command line's result (on
    3D-IRCADb-01 patient 01, unet-dice: Dice 0.461 as shown against 0.543 from the
    command line before this; README, *On real data*).

    Parameters
    ----------
    volume : array-like (z, y, x)
        As for :func:`predict`; numpy arrays are mirrored as views, dask lazily, zarr
        arrays (no negative steps) are read first.
    flips : sequence of int
        Spatial axes (0, 1, 2) to mirror; empty: :func:`predict` as it is.
    model, **kwargs
        As for :func:`predict` (not ``out``).

    Returns
    -------
    PredictOutputs
        The outputs on ``volume``'s grid (contiguous float arrays; TopNet's embedding
        keeps its leading channel axis), with the input policy and compute record.

    Raises
    ------
    ValueError
        A flip axis outside 0..2, or anything :func:`predict` raises.
    """
    flips = sorted({int(a) for a in flips})
    if any(a not in (0, 1, 2) for a in flips):
        raise ValueError(f"flips must be spatial axes 0, 1 or 2; got {flips}")
    if "out" in kwargs:
        raise ValueError("predict_mirrored writes in memory: out= is not supported")
    if not flips:
        return predict(volume, model, **kwargs)
    index = tuple(slice(None, None, -1) if a in flips else slice(None) for a in range(3))
    try:
        mirrored = volume[index]
    except (TypeError, ValueError, IndexError):  # zarr takes no negative steps: read it
        mirrored = np.asarray(volume)[index]
    outputs = predict(mirrored, model, **kwargs)
    back = {}
    for key in list(outputs):  # popped: each original is freed once its copy is made
        back[key] = np.ascontiguousarray(np.asarray(outputs.pop(key))[(..., *index)])
    return PredictOutputs(back, input_policy=outputs.input_policy, compute=outputs.compute)


def _resampled(volume, shape, factors):
    """``volume`` resampled by per-axis ``factors`` (float32), or as it is."""
    if not _needs_resampling(factors):
        return volume
    new_shape = tuple(max(1, round(n * f)) for n, f in zip(shape, factors, strict=True))
    return _resize(np.asarray(volume, dtype=np.float32), new_shape).astype(np.float32)


def _scaled_progress(progress, start: float, width: float):
    """Map one run's ``progress(done, total)`` onto ``[start, start + width]`` of 1000."""
    if progress is None:
        return None
    if start == 0.0 and width == 1.0:
        return progress

    def report(done, total):
        return progress(int(round(1000 * (start + width * done / max(total, 1)))), 1000)

    return report


def _fuse_max(result: dict, scale: dict) -> None:
    """Fold one zoom's outputs into ``result``: the voxel-wise maximum of ``"vessel"``;
    TopNet's other outputs taken, voxel by voxel, from the zoom with the higher vessel
    probability (a multi-scale ensemble, as in multi-scale sliding-window inference)."""
    if not result:
        result.update(scale)
        return
    better = scale["vessel"] > result["vessel"]
    for key, arr in scale.items():
        if key == "vessel":
            continue
        cur = result[key]
        if cur.ndim == better.ndim + 1:
            cur[:, better] = arr[:, better]
        else:
            cur[better] = arr[better]
    np.maximum(result["vessel"], scale["vessel"], out=result["vessel"])


def _run_with_fallbacks(run, attempt, progress, say):
    """``run(tile, batch, device, progress)``, retried smaller on out-of-memory.

    Returns the outputs and the settings that worked (the next zoom starts from them).
    """
    import torch

    while True:
        try:
            return run(*attempt, progress), attempt
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


#: ``segment(vessel_range="auto")`` on a CT in HU: the lumen range the models were
#: trained on (110-280 HU, ``napari_topo.data.appearance``) widened to the top of their
#: CT window (300 HU). On 3D-IRCADb-01 patient 01 it raised unet-dice's Dice from 0.334
#: to 0.544 (README, *On real data*).
CT_VESSEL_RANGE = (100.0, 300.0)


def _intensity_range(value) -> tuple[float, float]:
    """``(low, high)`` as two finite floats with ``low < high``, or a one-line error."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"vessel_range must be two numbers (low, high); got {value!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"vessel_range must be finite with low < high; got {value!r}")
    return low, high


def drop_pieces_outside(
    outputs, volume, vessel_range, threshold: float = 0.5, *, keep=None, spacing=None
) -> int:
    """Drop the pieces of the mask whose median intensity lies outside ``vessel_range``.

    The mask ``outputs["vessel"] > threshold`` is cut into 26-connected pieces
    (:func:`cc3d.connected_components`); a piece whose median ``volume`` value is below
    ``vessel_range[0]`` or above ``vessel_range[1]`` gets probability (and TopNet's
    centerness) 0, in place, except the parts described below.

    A piece outside the range is first split where it is thin
    (:func:`_split_where_thin`): its parts deeper than :data:`SPLIT_DEPTH` finest-axis
    voxels are its cores, every voxel of the piece joins its nearest core, and a part
    whose lower quartile and median both lie inside the range is kept. A vessel tree
    that the network joined through a thin bridge to a large false piece (muscle, the
    body wall) would otherwise go with it whole: on a crop of the development CT
    (3D-IRCADb-01 patient 01, the lower half of the liver) unet-dice's Dice fell from
    0.26 to 0.04 that way, and is 0.45 with the split. The quartile asks more of a part
    than the median asks of a whole piece: the part comes from a piece that failed.

    Parameters
    ----------
    outputs : dict of str to ndarray
        :func:`predict`'s outputs on the grid of ``volume`` (float32 (z, y, x) arrays).
    volume : array-like (z, y, x)
        The intensities, in the input's units (HU for a CT).
    vessel_range : (low, high)
    threshold : float
        The mask threshold :func:`segment` uses.
    keep : (K, 3) array_like, optional
        Voxel coordinates (z, y, x) of tree roots. In the piece holding each, or the
        nearest piece within :data:`KEEP_REACH` voxels of the finest axis (a click beside
        the vessel), the part the root lies on (after the split where thin) is kept
        whatever its intensities, with the parts inside the range; a piece too small to
        split, or with one core, is kept whole. A user who marks where a tree starts says
        that vessel is one: when the network joins a tree to a false piece outside the
        range (a muscle sheet), the range would otherwise drop the tree with it. Keeping
        the root's whole piece instead kept a 1.6 million-voxel piece of bone, skin and
        muscle (median 88 HU) on the development CT read as napari shows it (y and x
        reversed), where the portal root lies beside it: 13 % of the mask dropped
        instead of 78 %, Dice 0.31 instead of 0.53. A root farther from any piece (its
        vessel was missed) keeps nothing: the nearest piece could be the bone beside it.
    spacing : float or sequence of 3 float, optional
        Voxel size, for the distance to ``keep`` points outside the mask. Default 1.

    Returns
    -------
    int
        Pieces dropped.

    Raises
    ------
    ValueError
        A range that is not two finite numbers with ``low < high``, or ``keep`` not of
        shape (K, 3).
    """
    from scipy import ndimage as ndi

    from .. import _cc3d as cc3d

    low, high = _intensity_range(vessel_range)
    prob = outputs["vessel"]
    labels, n = cc3d.connected_components(prob > threshold, connectivity=26, return_N=True)
    if n == 0:
        return 0
    values = np.asarray(volume)
    medians = np.asarray(ndi.median(values, labels, index=np.arange(1, n + 1)), dtype=float)
    bad = np.zeros(n + 1, dtype=bool)
    bad[1:] = (medians < low) | (medians > high)
    if not bad.any():
        return 0
    return _drop_failing_pieces(outputs, labels, bad, values, low, high, spacing, keep=keep)


def _drop_failing_pieces(
    outputs, labels, bad, values, low, high, spacing=None, lower_percentile=25.0, keep=None
) -> int:
    """Zero the pieces of ``labels`` marked ``bad`` (bool per label, 0 first) in
    ``outputs``, keeping the parts of those of :data:`SPLIT_MIN_SIZE` voxels or more
    that :func:`_split_where_thin` finds inside ``low..high`` of ``values``, and, in the
    pieces that ``keep`` points (tree roots) hold or lie within :data:`KEEP_REACH` of,
    the part each root lies on (the whole piece where it cannot be split). Returns how
    many ``bad`` pieces lost voxels (those a root kept whole did not)."""
    from scipy import ndimage as ndi

    drop = bad[labels]
    sizes = np.bincount(labels.ravel(), minlength=len(bad))
    boxes = ndi.find_objects(labels)
    anchors: dict[int, list[np.ndarray]] = {}
    if keep is not None:
        for lab, voxel in zip(*_pieces_nearest(labels, keep, spacing, voxels=True), strict=True):
            anchors.setdefault(int(lab), []).append(voxel)
    whole = 0  # bad pieces a root kept whole
    for lab in np.flatnonzero(bad):
        rooted = lab in anchors
        if sizes[lab] < SPLIT_MIN_SIZE and not rooted:
            continue
        box = boxes[lab - 1]
        if sizes[lab] < SPLIT_MIN_SIZE:  # too small to split: a root keeps it whole
            drop[box] &= labels[box] != lab
            whole += 1
            continue
        piece = labels[box] == lab
        start = np.array([b.start for b in box])
        roots = [v - start for v in anchors.get(lab, ())]
        kept = _split_where_thin(
            piece, values[box], low, high, spacing, lower_percentile, roots=roots
        )
        if kept is None:
            if rooted:  # one core: nothing to cut away from the root's vessel
                drop[box] &= ~piece
                whole += 1
            continue
        drop[box] &= ~kept
    _zero_outside(outputs, drop)
    return int(bad.sum()) - whole


#: How far (voxels of the finest axis) a root may lie from the piece it keeps.
KEEP_REACH = 3.0
#: Depth (voxels of the finest axis) of a core when a piece outside the vessel range is
#: split where it is thin: 1.75 in-plane voxels of the development CT is 1 mm.
SPLIT_DEPTH = 1.75
#: Pieces smaller than this (voxels) are dropped whole, not split.
SPLIT_MIN_SIZE = 200


def _split_where_thin(
    piece: np.ndarray,
    values: np.ndarray,
    low,
    high,
    spacing=None,
    lower_percentile=25.0,
    roots=(),
):
    """Voxels of ``piece`` (bool, its bounding box) in parts that lie inside the range.

    Cores: the voxels deeper than :data:`SPLIT_DEPTH` finest-axis voxels (no background
    voxel within that Euclidean distance, voxel size taken into account: an erosion by
    that ball); each voxel of the piece joins its nearest core (Euclidean, the feature
    transform of :func:`scipy.ndimage.distance_transform_edt`); a part is kept when its
    ``lower_percentile`` (25th by default) is at least ``low`` and its median at most
    ``high``, or when it holds one of the ``roots`` (voxels of the piece, box
    coordinates). None when the piece has fewer than two cores (nothing to split).
    """
    from scipy import ndimage as ndi

    from .. import _cc3d as cc3d

    sp = np.broadcast_to(np.asarray(1.0 if spacing is None else spacing, float), (piece.ndim,))
    sp = sp / sp.min()
    # deeper than SPLIT_DEPTH <=> no background voxel within that distance: an erosion by
    # the ball of that radius (in voxels of the finest axis; outside the box is background)
    reach = np.floor(SPLIT_DEPTH / sp).astype(int)
    offsets = np.indices(2 * reach + 1).reshape(piece.ndim, -1).T - reach
    ball = np.zeros(2 * reach + 1, dtype=bool)
    ball[tuple((offsets + reach).T)] = np.sqrt(((offsets * sp) ** 2).sum(axis=1)) <= SPLIT_DEPTH
    core = ndi.binary_erosion(piece, structure=ball, border_value=0)
    cores, m = cc3d.connected_components(core, connectivity=26, return_N=True)
    if m < 2:
        return None
    nearest = ndi.distance_transform_edt(
        cores == 0, sampling=sp, return_distances=False, return_indices=True
    )
    parts = np.where(piece, cores[tuple(nearest)], 0)
    del nearest

    def in_range(v: np.ndarray) -> bool:
        q_low, q50 = np.percentile(v, (lower_percentile, 50))
        return bool(q_low >= low and q50 <= high)

    good = np.zeros(m + 1, dtype=bool)
    good[1:] = ndi.labeled_comprehension(
        np.asarray(values), parts, np.arange(1, m + 1), in_range, bool, False
    )
    for r in roots:
        good[parts[tuple(np.asarray(r, dtype=int))]] = True
    good[0] = False
    return good[parts] & piece


def _pieces_nearest(labels: np.ndarray, points, spacing=None, *, voxels: bool = False):
    """Labels of the pieces of ``labels`` nearest to the points (voxel coordinates),
    for the points within :data:`KEEP_REACH` finest-axis voxels of one; with
    ``voxels``, also the nearest voxel of each such piece ((N, ndim) int array)."""
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != labels.ndim:
        raise ValueError(f"keep must be (K, {labels.ndim}) voxel coordinates; got {pts.shape}")
    if len(pts) == 0:
        empty = np.zeros(0, dtype=int)
        return (empty, np.zeros((0, labels.ndim), dtype=int)) if voxels else empty
    sp = np.broadcast_to(np.asarray(1.0 if spacing is None else spacing, float), (labels.ndim,))
    sp = sp / sp.min()  # distances in voxels of the finest axis
    # only the box that can hold a piece within reach of the point
    pad = np.ceil(KEEP_REACH / sp).astype(int) + 1
    found, where = [], []
    for p in pts:
        lo = np.clip(np.floor(p).astype(int) - pad, 0, labels.shape)
        hi = np.clip(np.ceil(p).astype(int) + pad + 1, 0, labels.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        vox = np.argwhere(labels[box] > 0)
        if len(vox) == 0:
            continue
        distance, i = cKDTree((vox + lo) * sp).query(p * sp)
        if distance <= KEEP_REACH:
            found.append(int(labels[tuple(vox[i] + lo)]))
            where.append(vox[i] + lo)
    found_arr = np.asarray(found, dtype=int)
    if voxels:
        return found_arr, np.asarray(where, dtype=int).reshape(-1, labels.ndim)
    return found_arr


def percent_text(fraction: float) -> str:
    """A share for the user: ``"12 %"``, ``"0.4 %"`` under 1 %, ``"< 0.1 %"`` above 0
    (pieces dropped from a mask read "0 %" when they were 0.4 % of it)."""
    p = 100.0 * float(fraction)
    if p == 0.0 or p == 100.0 or 1.0 <= round(p, 1) and p < 99.5:
        return f"{p:.0f} %"
    if p >= 99.95:
        return "> 99.9 %"
    return f"{p:.1f} %" if p >= 0.05 else "< 0.1 %"


def _unpack_volume(volume: Any, geometry: Any, predict_kwargs: dict) -> tuple[Any, Any]:
    """``(array, geometry)`` of what :func:`segment` was given: a
    :class:`~napari_topo.data.io.Volume` gives its data, geometry (unless ``geometry``
    is given) and stated modality (``predict_kwargs["header_hint"]`` unless set)."""
    from ..data.io import Volume

    if not isinstance(volume, Volume):
        return volume, geometry
    axes = volume.axes
    if axes not in ("zyx", "yx"):
        raise ValueError(
            f"{volume.path.name} has the axes {axes!r} (c: channel, t: time, s: RGB "
            "sample); segment takes one spatial volume: choose it with "
            "napari_topo.geometry.select_channel(vol.data, vol.geometry, channel)"
        )
    if volume.modality and predict_kwargs.get("header_hint") is None:
        predict_kwargs["header_hint"] = volume.modality
    return volume.data, volume.geometry if geometry is None else geometry


def voxel_size(spacing: Any = None, geometry: Any = None) -> tuple[Any, Any]:
    """The ``(spacing, geometry)`` that :func:`segment` works with: the geometry's voxel
    size when ``spacing`` is None (and the geometry states one), else ``spacing``, which
    then also replaces the geometry's (its origin and direction stay). Call
    :func:`predict` with this ``spacing`` to make a ``prediction`` for :func:`segment`."""
    if geometry is not None:
        if spacing is None:
            spacing = None if geometry.known == "none" else geometry.spacing
        else:  # an explicit voxel size wins; origin and direction stay
            sp = np.broadcast_to(np.asarray(spacing, dtype=float), (geometry.ndim,))
            geometry = geometry.with_spacing(sp.tolist())
    return spacing, geometry


def _reusable(prediction: Any, shape: tuple[int, ...]) -> PredictOutputs:
    """A :class:`PredictOutputs` for :func:`segment` to edit, from an earlier
    prediction left as it is: the arrays :func:`segment` edits in place (the probability,
    TopNet's centerness) copied, the others (TopNet's embedding) shared."""
    if not isinstance(prediction, Mapping) or "vessel" not in prediction:
        raise ValueError(
            "prediction must be the output of predict() (a mapping with a 'vessel' "
            f"probability); got {type(prediction).__name__}"
        )
    got = tuple(np.shape(prediction["vessel"]))
    if got != tuple(shape):
        raise ValueError(
            f"prediction is of a volume of shape {got}, not of this one {tuple(shape)}: "
            "run predict on this volume (or leave prediction out)"
        )
    edited = ("vessel", "centerness")
    return PredictOutputs(
        {k: (np.array(v, copy=True) if k in edited else v) for k, v in prediction.items()},
        input_policy=getattr(prediction, "input_policy", None),
        compute=getattr(prediction, "compute", None),
    )


def _zero_outside(outputs, where: np.ndarray) -> None:
    """Probability (and TopNet's centerness) 0 at ``where``, in place."""
    for key in ("vessel", "centerness"):
        if key in outputs:
            outputs[key][where] = 0.0


def grow_roi(
    roi: Any,
    margin: float = 0.0,
    *,
    spacing: float | Sequence[float] | None = None,
    shape: Sequence[int] | None = None,
) -> np.ndarray:
    """A region of interest as a bool array, grown by ``margin``.

    Parameters
    ----------
    roi : array-like (z, y, x)
        Nonzero inside (bool, integer labels or a 0/1 float mask).
    margin : float
        Distance (units of ``spacing``; voxels without one) by which the region grows:
        a voxel is inside when its Euclidean distance to ``roi`` is at most ``margin``
        (:func:`scipy.ndimage.distance_transform_edt` with ``sampling=spacing``).
    spacing : float or sequence of 3 float, optional
        Voxel size (z, y, x).
    shape : sequence of 3 int, optional
        The volume's shape, which ``roi`` must have.

    Returns
    -------
    numpy.ndarray
        bool, the shape of ``roi``.

    Raises
    ------
    ValueError
        ``roi`` not 3D, of another shape than ``shape``, empty (no voxel inside), with
        NaN values, or a negative or non-finite ``margin``; one line each.
    """
    from scipy import ndimage as ndi

    region = np.asarray(roi)
    if region.ndim != 3:
        raise ValueError(f"roi must be a 3D (z, y, x) array; got shape {region.shape}")
    if shape is not None and tuple(region.shape) != tuple(shape):
        raise ValueError(
            f"roi has shape {region.shape} but the volume has {tuple(shape)}: give a "
            "region of interest on the volume's grid"
        )
    if region.dtype.kind == "f" and np.isnan(region).any():
        raise ValueError("roi holds NaN values; give a mask (nonzero inside)")
    region = region != 0
    if not region.any():
        raise ValueError("roi is empty (no voxel inside): nothing would be segmented")
    margin = float(margin)
    if not np.isfinite(margin) or margin < 0:
        raise ValueError(f"roi_margin must be a distance >= 0; got {margin!r}")
    if margin > 0:
        sampling = None if spacing is None else spacing_triple(spacing)
        region = ndi.distance_transform_edt(~region, sampling=sampling) <= margin
    return region


def segment(
    volume: Any,
    model: Any = DEFAULT_MODEL,
    *,
    threshold: float | None = None,
    sources=None,
    spacing: float | Sequence[float] | None = None,
    min_size: int | None = None,
    modality: str = "auto",
    window: Sequence[float] | None = None,
    polarity: str = "auto",
    zoom: str | float | Sequence[float] | None = "auto",
    geometry=None,
    roi=None,
    roi_margin: float = 0.0,
    vessel_range: str | Sequence[float] | None = "auto",
    sheets: str = "drop",
    prediction: PredictOutputs | None = None,
    **predict_kwargs,
):
    """Predict, threshold, skeletonise and reconstruct the vessel trees of a volume.

    The headless equivalent of the Segment widget: :func:`predict` (all its keyword
    arguments are accepted) followed by
    :meth:`~napari_topo.analysis.VesselAnalysis.from_outputs`.

    Parameters
    ----------
    volume : array-like (z, y, x), or a :class:`~napari_topo.data.io.Volume`
        A volume read with :func:`~napari_topo.data.io.read_volume` brings its geometry
        (unless ``geometry`` is given) and the modality its file states (``header_hint``
        of :func:`predict`); one with channel or time axes is refused (choose one with
        :func:`~napari_topo.geometry.select_channel`).
    model : str, path or (module, card)
    threshold : float, optional
        Probability above which a voxel is vessel. Default: the model's own
        (:attr:`~napari_topo.models.registry.ModelCard.mask_threshold`: 0.5 for the
        shipped models; a fine-tuned model's was chosen on the held-out part of the
        user's annotation).
    sources : (K, 3) array_like, optional
        Tree roots in voxel coordinates (default: detected automatically).
    spacing : float or sequence of 3 float, optional
        Physical voxel size: used for resampling, radii, lengths and exports.
    min_size : int, optional
        Mask pieces (26-connected) with fewer voxels are dropped; 0 keeps everything.
        Default: the model's own
        (:attr:`~napari_topo.models.registry.ModelCard.mask_min_size`:
        :data:`DEFAULT_MIN_SIZE` unless its card names another, as TopNet's does).
    modality, window, polarity, zoom
        The input policy (:func:`predict`).
    geometry : napari_topo.geometry.Geometry, optional
        Where the voxels lie (the input file's, after a channel was chosen): carried
        by the result so its graph exports are in the input's world coordinates; its
        spacing is used when ``spacing`` is None (and it states one).
    roi : array-like (z, y, x) of bool or int, optional
        Region of interest on the volume's grid (nonzero inside), e.g. a liver mask for
        hepatic vessels: the probability is set to 0 outside it (grown by
        ``roi_margin``) before the mask, skeleton and trees are made, so nothing is
        found outside. The network still sees the whole volume (its context). See
        :func:`grow_roi`.
    roi_margin : float
        Grow ``roi`` by this distance, in the units of ``spacing`` (voxels without
        one), so vessels entering the region are kept up to it (the portal vein at the
        liver's hilum).
    vessel_range : "auto", (low, high) or None
        Intensities (the input's units: HU for a CT) a vessel can have: each piece of
        the mask (26-connected, before ``min_size``) whose median intensity lies outside
        ``[low, high]`` is dropped (its probability set to 0), except the pieces that
        hold (or lie within 3 voxels of) the ``sources`` and the parts of a dropped
        piece, cut where it is thin, that lie inside the range (a tree joined to a
        muscle sheet by a thin bridge), see :func:`drop_pieces_outside`.
        "auto" (default): :data:`CT_VESSEL_RANGE` (100 to 300 HU) when the input
        policy recognised a CT in HU, nothing otherwise; None: off. 100-300 HU is the
        lumen range the models were trained on (110-280 HU) and the top of their CT
        window, above which lumen and bone look the same to them;
        it drops what the networks mark by shape alone (a muscle sheet at 40-60 HU,
        ribs and vertebrae above 300). Pieces (cut only where thin), not voxels: gating
        voxel by voxel left noise holes that broke the centerlines. An arterial-phase
        CTA (lumen above 300 HU) or a non-contrast CT (none above 100) needs another
        range or None.
    sheets : {"drop", "keep"}
        "drop" (default): each piece of the mask (26-connected, at least 100 voxels) that
        is shaped like a sheet rather than a tube (median Frangi plate-versus-line ratio
        ``R_A`` of the mask under 0.15) is dropped, except the pieces holding the
        ``sources``; a failing piece is first cut where it is thin and its tube-like
        parts kept. The U-Nets mark bright sheets as vessels: bone plates, the scalp of a
        time-of-flight MRA. See
        :mod:`napari_topo.inference.sheets`. "keep": off.
    prediction : PredictOutputs, optional
        The output of an earlier :func:`predict` on this volume with this model and the
        same input settings (``modality``, ``window``, ``polarity``, ``zoom``,
        ``spacing``, tiles, ``tta``, ``skip_empty_tiles``): the network is then not run
        again, so a new ``threshold``, ``sources``, ``roi``, ``vessel_range``, ``sheets``
        or ``min_size`` costs only the steps after the network. Left unchanged (the
        arrays edited are copied). Only its shape is checked against ``volume``; the
        rest is the caller's to keep consistent (the Segment widget keys it by image,
        model and input settings). Make it with
        :func:`predict` and the ``spacing`` of :func:`voxel_size`.
    **predict_kwargs
        Any other :func:`predict` argument (tile, device, progress, cancel, ...);
        ignored with ``prediction``.

    Returns
    -------
    VesselAnalysis
        With an ``input_policy`` attribute: the
        :class:`~napari_topo.inference.intensity.InputPolicy` that :func:`predict`
        applied (``analysis.input_policy.describe()`` says what was chosen), a
        ``compute`` attribute (:class:`PredictOutputs`), ``vessel_range`` (the range
        applied, or None), ``pieces_dropped`` (mask pieces it removed),
        ``dropped_share`` (the fraction of the mask's voxels in them, 0..1),
        ``sheets_dropped`` and ``sheets_share`` (the same for the sheet-like pieces;
        0 with ``sheets="keep"``) and ``region`` (the region of interest as grown, bool,
        or None).

    Raises
    ------
    ValueError
        As :func:`predict`, and a bad ``roi``, ``roi_margin`` or ``vessel_range`` (one
        line each, before the model runs).
    """
    from ..analysis import VesselAnalysis

    volume, geometry = _unpack_volume(volume, geometry, predict_kwargs)
    spacing, geometry = voxel_size(spacing, geometry)
    region = None
    if roi is not None:
        region = grow_roi(roi, roi_margin, spacing=spacing, shape=np.shape(volume))
    if isinstance(vessel_range, str):
        if vessel_range != "auto":
            raise ValueError(
                f"vessel_range must be 'auto', (low, high) or None; got {vessel_range!r}"
            )
    elif vessel_range is not None:
        vessel_range = _intensity_range(vessel_range)
    if sheets not in ("drop", "keep"):
        raise ValueError(f"sheets must be 'drop' or 'keep'; got {sheets!r}")
    if threshold is None or min_size is None:
        from ..models.registry import model_card

        card = model_card(model)
        threshold = card.mask_threshold if threshold is None else threshold
        min_size = card.mask_min_size if min_size is None else min_size
    if prediction is not None:
        outputs = _reusable(prediction, np.shape(volume))
    else:
        outputs = predict(
            volume,
            model,
            spacing=spacing,
            modality=modality,
            window=window,
            polarity=polarity,
            zoom=zoom,
            **predict_kwargs,
        )
    if vessel_range == "auto":
        is_ct = outputs.input_policy is not None and outputs.input_policy.intensity.modality == "ct"
        vessel_range = CT_VESSEL_RANGE if is_ct else None

    def mask_voxels() -> int:
        return int(np.count_nonzero(outputs["vessel"] > threshold))

    dropped, dropped_share = 0, 0.0
    sheets_dropped, sheets_share = 0, 0.0
    if vessel_range is not None or sheets == "drop":
        # on the whole mask, before any region cuts its pieces: a muscle sheet crossing
        # the region's border is judged (and dropped) whole, not by its inside part
        before = mask_voxels()
        if vessel_range is not None:
            dropped = drop_pieces_outside(
                outputs, volume, vessel_range, threshold, keep=sources, spacing=spacing
            )
            after = mask_voxels() if dropped else before
            dropped_share = (before - after) / before if before else 0.0
            before = after
        if sheets == "drop":
            from .sheets import drop_sheets

            sheets_dropped = drop_sheets(outputs, threshold, spacing=spacing, keep=sources)
            after = mask_voxels() if sheets_dropped else before
            sheets_share = (before - after) / before if before else 0.0
    if region is not None:
        _zero_outside(outputs, ~region)
    analysis = VesselAnalysis.from_outputs(
        outputs,
        threshold=threshold,
        sources=sources,
        spacing=None if geometry is not None else spacing,
        min_size=min_size,
        geometry=geometry,
    )
    # VesselAnalysis has no field for them (yet): carried as attributes.
    analysis.input_policy = outputs.input_policy
    analysis.compute = outputs.compute
    analysis.min_size = min_size  # the smallest mask piece kept (voxels)
    # the range applied (None: none) and how many pieces of the mask it dropped
    analysis.vessel_range = None if vessel_range is None else tuple(vessel_range)
    analysis.pieces_dropped = dropped
    analysis.dropped_share = dropped_share  # of the mask's voxels, 0..1
    analysis.sheets_dropped = sheets_dropped  # sheet-like pieces dropped
    analysis.sheets_share = sheets_share  # of the mask's voxels (after the range), 0..1
    analysis.region = region  # the region of interest as grown (bool), or None
    return analysis
