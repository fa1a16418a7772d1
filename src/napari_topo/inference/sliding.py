"""Sliding-window inference over 3D volumes (numpy, dask or zarr) in bounded memory.

:func:`sliding_window_inference` cuts a ``(z, y, x)`` volume into overlapping tiles, runs a
predictor on batches of tiles and blends the tile predictions with a Gaussian (or flat)
importance map. It is written for the napari worker that runs the segmentation:

* **Lazy input.** Tiles are read one batch at a time with ``volume[slices]`` followed by
  ``np.asarray``; a dask or zarr volume is never materialised (dask tiles of one batch are
  computed together so that they share chunk reads). For non-numpy inputs the next batch
  is read on a background thread while the current one runs through the network.
* **Bounded memory.** Tiles are visited in z-major order, so every output plane whose
  last tile is done can be finished and written out. Weighted sums are accumulated in a
  rolling float32 slab of about ``tile_z`` to ``2 * tile_z`` planes per output, and the
  normaliser (the sum of tile weights) is never stored: tile positions form a grid and the
  weight map is separable, so the sum of weights is the outer product of three 1-D sums.
  Peak memory is the output (or nothing, with a zarr ``out``), the slab, and two batches.
* **Progress and cancel.** ``progress(done, total)`` is called after each batch (and once
  with ``done=0`` at the start); ``cancel`` is checked before each batch and raises
  :class:`Cancelled`. Nothing here touches Qt.

Intensity normalisation is the caller's business (the pipeline applies the model card's
recipe before the network); :func:`normalize_percentile` estimates robust percentiles
from a bounded, strided sample of a possibly lazy volume.

Tile placement follows the usual convention (the one of MONAI's sliding window): along
each axis, starts are spaced ``floor(tile * (1 - overlap))`` apart and the last tile is
moved back to lie flush with the border. An axis shorter than the tile gets a single tile
padded at its far end (constant zeros or a reflection) and cropped back.
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import torch

from .device import pick_device

__all__ = [
    "Cancelled",
    "PercentileNormalizer",
    "gaussian_weights",
    "normalize_percentile",
    "sliding_window_inference",
    "tile_starts",
]

#: Floor of the 1-D Gaussian profile, so that the 3-D product (at least 1e-18) stays a
#: comfortably normal, strictly positive float32 even for very small ``sigma_scale``.
_GAUSSIAN_FLOOR = 1e-6
#: Rounding slack when turning ``tile * (1 - overlap)`` into an integer step.
_STEP_EPS = 1e-9
_BLENDS = ("gaussian", "constant")
_PAD_MODES = ("constant", "reflect")


class Cancelled(Exception):
    """Raised by :func:`sliding_window_inference` when its ``cancel`` flag is set."""


# --------------------------------------------------------------------------- validation


def _positive_int_triple(value: Any, name: str) -> tuple[int, int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value),) * 3
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(
            f"{name} must be a positive int or a sequence of 3 positive ints (z, y, x); "
            f"got {value!r}"
        ) from None
    ok = len(items) == 3 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in items
    )
    if not ok:
        raise ValueError(
            f"{name} must be a positive int or a sequence of 3 positive ints (z, y, x); "
            f"got {value!r}"
        )
    return tuple(int(v) for v in items)  # type: ignore[return-value]


def _overlap_triple(value: Any) -> tuple[float, float, float]:
    items = (value,) * 3 if isinstance(value, (int, float, np.number)) else value
    try:
        items = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise ValueError(
            f"overlap must be a float in [0, 1) or a sequence of 3 such floats; got {value!r}"
        ) from None
    if len(items) != 3 or not all(0.0 <= v < 1.0 for v in items):
        raise ValueError(
            f"overlap must be a float in [0, 1) or a sequence of 3 such floats; got {value!r}"
        )
    return items  # type: ignore[return-value]


def _volume_info(volume: Any) -> tuple[Any, tuple[int, int, int], np.dtype]:
    """Check that ``volume`` is a non-empty real 3D array-like; return it, shape, dtype."""
    if isinstance(volume, (list, tuple)):
        volume = np.asarray(volume)
    shape = getattr(volume, "shape", None)
    if shape is None or not hasattr(volume, "__getitem__"):
        raise ValueError(
            "volume must be a 3D array-like supporting slicing (numpy, dask or zarr array); "
            f"got {type(volume).__name__}"
        )
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        if len(shape) == 2:
            hint = (
                "This is a 2D image; add a z axis (volume[np.newaxis]) and use a tile of "
                "depth 1 only if the model accepts it."
            )
        elif len(shape) == 4 and shape[-1] in (3, 4):
            hint = (
                "This looks like an RGB(A) volume (last axis of size 3 or 4); convert it to "
                "a single intensity channel first."
            )
        elif len(shape) == 4:
            hint = "For a multi-channel or time series, pass one 3D volume (volume[i])."
        else:
            hint = ""
        raise ValueError(
            f"expected a 3D (z, y, x) volume; got a {len(shape)}D array of shape {shape}. " + hint
        )
    if min(shape) == 0:
        raise ValueError(f"volume is empty: shape {shape}")
    dtype = np.asarray(volume[0:1, 0:1, 0:1]).dtype
    if dtype.kind not in "biuf":
        raise ValueError(
            f"volume must hold real numbers (bool, integer or float); got dtype {dtype}"
        )
    return volume, shape, dtype


def _check_finite_numpy(volume: np.ndarray, slab_voxels: int = 1 << 22) -> None:
    """Raise if a float numpy volume holds NaN/inf; scans z-slabs to bound temporaries."""
    plane = max(1, volume.shape[1] * volume.shape[2])
    step = max(1, slab_voxels // plane)
    for z in range(0, volume.shape[0], step):
        if not np.isfinite(volume[z : z + step]).all():
            bad = np.argwhere(~np.isfinite(volume[z : z + step]))[0]
            where = (int(bad[0]) + z, int(bad[1]), int(bad[2]))
            raise ValueError(
                f"volume contains NaN or infinite values (first at voxel {where}); "
                "fill or mask them before inference"
            )


def _is_set(cancel: Any) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def _resolve_device(device: Any, predictor: Any) -> torch.device:
    if device is not None:
        return pick_device(device)
    if isinstance(predictor, torch.nn.Module):
        for tensor in itertools.chain(predictor.parameters(), predictor.buffers()):
            return tensor.device
    return torch.device("cpu")


# --------------------------------------------------------------------------- tiling


def _gaussian_1d(n: int, sigma_scale: float) -> np.ndarray:
    """Float64 Gaussian profile of length ``n`` centred at ``(n - 1) / 2``, sigma ``s * n``."""
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    sigma = sigma_scale * n
    return np.maximum(np.exp(-0.5 * (x / sigma) ** 2), _GAUSSIAN_FLOOR)


def _sigma_tuple(sigma_scale: Any, ndim: int) -> tuple[float, ...]:
    items = (sigma_scale,) * ndim if np.isscalar(sigma_scale) else tuple(sigma_scale)
    try:
        items = tuple(float(s) for s in items)
    except (TypeError, ValueError):
        items = ()
    if len(items) != ndim or not all(math.isfinite(s) and s > 0 for s in items):
        raise ValueError(
            f"sigma_scale must be a positive float or a sequence of {ndim} positive floats; "
            f"got {sigma_scale!r}"
        )
    return items


def gaussian_weights(
    tile: int | Sequence[int], sigma_scale: float | Sequence[float] = 0.125, dtype=np.float32
) -> np.ndarray:
    """Gaussian importance map of a tile, for blending overlapping predictions.

    The map is the outer product of 1-D Gaussians centred on the tile, with standard
    deviation ``sigma_scale * tile`` along each axis (0.125 as in nnU-Net and MONAI), so the
    centre of a tile, where the network sees the most context, counts most. Values are
    strictly positive (each 1-D factor is floored at 1e-6), so every voxel has a weight.

    Parameters
    ----------
    tile : int or sequence of int
        Tile shape; an int means a cube (3D).
    sigma_scale : float or sequence of float
        Standard deviation as a fraction of the tile size, per axis or for all axes.
    dtype : numpy dtype
        Output dtype (float32 by default).

    Returns
    -------
    numpy.ndarray
        Array of shape ``tile``, peak value ~1 at the centre.

    Examples
    --------
    >>> w = gaussian_weights((16, 16, 16))
    >>> w.shape, bool(w.min() > 0), bool(w[8, 8, 8] > w[0, 0, 0])
    ((16, 16, 16), True, True)
    """
    if isinstance(tile, (int, np.integer)) and not isinstance(tile, bool):
        tile = (int(tile),) * 3
    tile = tuple(tile)
    if not tile or not all(
        isinstance(t, (int, np.integer)) and not isinstance(t, bool) and t > 0 for t in tile
    ):
        raise ValueError(f"tile must be a positive int or a sequence of positive ints; got {tile}")
    sigmas = _sigma_tuple(sigma_scale, len(tile))
    weights = np.ones((), dtype=np.float64)
    for n, s in zip(tile, sigmas, strict=True):
        weights = np.multiply.outer(weights, _gaussian_1d(int(n), s))
    return weights.astype(dtype)


def _axis_starts(n: int, t: int, overlap: float) -> list[int]:
    if n <= t:
        return [0]
    step = max(1, int(math.floor(t * (1.0 - overlap) + _STEP_EPS)))
    count = math.ceil((n - t) / step) + 1
    return sorted({min(i * step, n - t) for i in range(count)})


def tile_starts(
    shape: Sequence[int], tile: int | Sequence[int], overlap: float | Sequence[float] = 0.25
) -> list[tuple[int, int, int]]:
    """Start corners of the tiles that cover a 3D volume, in z-major (C) order.

    Along each axis, starts are ``0, step, 2 * step, ...`` with
    ``step = max(1, floor(tile * (1 - overlap)))``, and the last tile is moved back so that
    it ends exactly at the border. An axis shorter than (or equal to) the tile gets the
    single start 0; :func:`sliding_window_inference` pads that tile and crops it back.

    Parameters
    ----------
    shape : sequence of 3 int
        Volume shape ``(z, y, x)``.
    tile : int or sequence of 3 int
        Tile shape.
    overlap : float or sequence of 3 float
        Fraction of a tile shared with its neighbour, in ``[0, 1)``.

    Returns
    -------
    list of (int, int, int)

    Examples
    --------
    >>> sorted({s[0] for s in tile_starts((128, 128, 128), 64, 0.25)})
    [0, 48, 64]
    >>> tile_starts((10, 20, 20), (16, 16, 16), 0.0)
    [(0, 0, 0), (0, 0, 4), (0, 4, 0), (0, 4, 4)]
    """
    shape = _positive_int_triple(tuple(shape), "shape")
    tile = _positive_int_triple(tile, "tile")
    overlap = _overlap_triple(overlap)
    per_axis = [_axis_starts(n, t, o) for n, t, o in zip(shape, tile, overlap, strict=True)]
    return list(itertools.product(*per_axis))


def _axis_weight_sum(n: int, t: int, starts: Sequence[int], profile: np.ndarray) -> np.ndarray:
    total = np.zeros(n, dtype=np.float64)
    for s in starts:
        d = min(t, n - s)
        total[s : s + d] += profile[:d]
    return total


# --------------------------------------------------------------------------- reading


def _is_dask_array(volume: Any) -> bool:
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(volume, da.Array)


def _read_batch(
    volume: Any,
    starts: Sequence[tuple[int, int, int]],
    tile: tuple[int, int, int],
    shape: tuple[int, int, int],
    pad_mode: str,
    check_finite: bool,
) -> np.ndarray:
    """Read the tiles at ``starts`` into a new float32 array (n, 1, *tile)."""
    regions = [
        tuple(slice(s, min(s + t, n)) for s, t, n in zip(st, tile, shape, strict=True))
        for st in starts
    ]
    if _is_dask_array(volume):
        import dask

        parts = dask.compute(*[volume[r] for r in regions])
    else:
        parts = [volume[r] for r in regions]
    batch = np.empty((len(starts), 1, *tile), dtype=np.float32)
    for i, (part, st) in enumerate(zip(parts, starts, strict=True)):
        part = np.asarray(part)
        if check_finite and part.dtype.kind == "f" and not np.isfinite(part).all():
            raise ValueError(
                f"volume contains NaN or infinite values (in the tile starting at voxel {st}); "
                "fill or mask them before inference"
            )
        if part.shape == tile:
            batch[i, 0] = part
        elif pad_mode == "constant":
            batch[i, 0] = 0.0
            batch[i, 0, : part.shape[0], : part.shape[1], : part.shape[2]] = part
        else:
            pad = [(0, t - d) for t, d in zip(tile, part.shape, strict=True)]
            batch[i, 0] = np.pad(part.astype(np.float32, copy=False), pad, mode="reflect")
    return batch


# --------------------------------------------------------------------------- outputs


def _as_outputs(
    prediction: Any, n: int, tile: tuple[int, int, int]
) -> tuple[dict[Any, torch.Tensor], bool]:
    """Normalise a predictor's return value to ``{key: (n, C, *tile) tensor}``."""
    if isinstance(prediction, Mapping):
        items, single = list(prediction.items()), False
        if not items:
            raise ValueError("predictor returned an empty dict")
    elif isinstance(prediction, (torch.Tensor, np.ndarray)):
        items, single = [(None, prediction)], True
    else:
        raise ValueError(
            "predictor must return a torch.Tensor of shape (B, C, tz, ty, tx) or a dict of "
            f"such tensors; got {type(prediction).__name__}"
        )
    outputs = {}
    for key, value in items:
        value = torch.as_tensor(value)
        if value.ndim != 5 or value.shape[0] != n or tuple(value.shape[2:]) != tile:
            name = "output" if single else f"output {key!r}"
            raise ValueError(
                f"predictor {name} has shape {tuple(value.shape)}; expected "
                f"({n}, C, {tile[0]}, {tile[1]}, {tile[2]}) for a batch of {n} tiles"
            )
        outputs[key] = value
    return outputs, single


def _check_out_spatial(out: Any, shape: tuple[int, int, int]) -> None:
    """Validate ``out`` before any work: (C, z, y, x), floating dtype, writeable numpy."""
    arrays = out.items() if isinstance(out, Mapping) else [(None, out)]
    for key, arr in arrays:
        name = "out" if key is None else f"out[{key!r}]"
        arr_shape = tuple(getattr(arr, "shape", ()))
        if len(arr_shape) != 4 or arr_shape[1:] != shape:
            raise ValueError(
                f"{name} must have shape (C, {shape[0]}, {shape[1]}, {shape[2]}); got {arr_shape}"
            )
        if np.dtype(arr.dtype).kind != "f":
            raise ValueError(f"{name} must have a floating dtype; got {arr.dtype}")
        if isinstance(arr, np.ndarray) and not arr.flags.writeable:
            raise ValueError(f"{name} is a read-only numpy array")


def _prepare_destinations(
    out: Any,
    out_channels: Any,
    channels: dict[Any, int],
    single: bool,
    shape: tuple[int, int, int],
) -> dict[Any, Any]:
    if out_channels is not None:
        expected = {None: out_channels} if single else out_channels
        if (
            not isinstance(expected, Mapping)
            or {k: int(v) for k, v in expected.items()} != channels
        ):
            got = channels[None] if single else channels
            raise ValueError(f"out_channels={out_channels!r} but the predictor returned {got}")
    if out is None:
        return {k: np.empty((c, *shape), dtype=np.float32) for k, c in channels.items()}
    if single:
        if isinstance(out, Mapping):
            raise ValueError("predictor returned a single tensor; out must be one array")
        dests = {None: out}
    else:
        if not isinstance(out, Mapping) or set(out) != set(channels):
            raise ValueError(
                f"predictor returned outputs {sorted(map(str, channels))}; out must be a "
                "dict with exactly these keys"
            )
        dests = dict(out)
    for key, arr in dests.items():
        if arr.shape[0] != channels[key]:
            name = "out" if key is None else f"out[{key!r}]"
            raise ValueError(
                f"{name} has {arr.shape[0]} channel(s) but the predictor returned {channels[key]}"
            )
    return dests


# --------------------------------------------------------------------------- inference


def sliding_window_inference(
    volume: Any,
    predictor: Callable[[torch.Tensor], torch.Tensor | Mapping[str, torch.Tensor]],
    *,
    tile: int | Sequence[int] = (64, 64, 64),
    overlap: float | Sequence[float] = 0.25,
    batch_size: int = 2,
    blend: str = "gaussian",
    sigma_scale: float | Sequence[float] = 0.125,
    pad_mode: str = "constant",
    device: str | torch.device | None = None,
    out_channels: int | Mapping[str, int] | None = None,
    progress: Callable[[int, int], Any] | None = None,
    cancel: Callable[[], bool] | threading.Event | None = None,
    out: Any = None,
    skip: Callable[[torch.Tensor], Any] | None = None,
    stats: dict | None = None,
) -> np.ndarray | dict[str, np.ndarray]:
    """Run ``predictor`` over overlapping tiles of a 3D volume and blend the results.

    Parameters
    ----------
    volume : array-like (z, y, x)
        numpy, dask or zarr array (anything with ``shape`` and slicing) of bool, integer
        or float voxels. Only tile-sized regions are read. Already normalised as the model
        expects; NaN or infinite voxels raise ``ValueError``.
    predictor : callable
        Takes a float32 tensor ``(B, 1, tz, ty, tx)`` on ``device`` and returns a tensor
        ``(B, C, tz, ty, tx)`` or a dict of such tensors (e.g. TopNet's
        ``{"vessel", "centerness", "embedding"}``). Called under
        :func:`torch.inference_mode`. Half-precision outputs are accumulated in float32;
        wrap the call in :func:`~napari_topo.inference.device.autocast_context` for mixed
        precision.
    tile : int or sequence of 3 int
        Tile shape ``(tz, ty, tx)``; must suit the network (e.g. divisible by 16 for a
        four-level U-Net).
    overlap : float or sequence of 3 float
        Fraction of a tile shared with its neighbour, in ``[0, 1)``; see :func:`tile_starts`.
    batch_size : int
        Tiles per predictor call (>= 1).
    blend : {"gaussian", "constant"}
        Weighting of overlapping predictions: :func:`gaussian_weights` or a plain mean.
    sigma_scale : float or sequence of 3 float
        Gaussian standard deviation as a fraction of the tile size.
    pad_mode : {"constant", "reflect"}
        How a tile is padded along an axis shorter than the tile (zeros or a mirror).
    device : str or torch.device, optional
        Where tiles are sent, validated by
        :func:`~napari_topo.inference.device.pick_device`. Default: the device of the
        predictor's parameters if it is a :class:`torch.nn.Module`, else CPU (pass
        ``device="auto"`` to pick CUDA, then MPS, then CPU).
    out_channels : int or dict of str to int, optional
        Expected channel count(s); checked against the first prediction.
    progress : callable, optional
        ``progress(done, total)`` in tiles: once with ``done=0``, then after each batch
        (the last call has ``done == total`` and the output is then complete).
    cancel : callable returning bool, or threading.Event, optional
        Checked before each batch; when set, :class:`Cancelled` is raised.
    out : array or dict of arrays, optional
        Destination of shape ``(C, z, y, x)`` (a dict keyed like the predictor's output for
        dict outputs) with a floating dtype: numpy (float16 halves the memory), zarr, or
        anything supporting ``out[:, z0:z1] = block``. Finished z-slabs are written as
        soon as they are complete, so a zarr ``out`` allows results larger than RAM.
        If the run is cancelled or fails, a numpy ``out`` is zero-filled (no partial
        result is left behind); other arrays (zarr) are left partly written and their
        content is undefined: delete or overwrite them.
    skip : callable, optional
        Called with each batch of tiles (as ``predictor`` would get it) before the
        predictor; returns one bool per tile (array-like of shape ``(B,)``). A tile
        marked True is not run and takes no part in the blend: neither its values nor
        its weight, so its neighbours' predictions are unchanged in the overlap, and a
        voxel that only skipped tiles cover is 0. While the outputs' shapes are unknown
        (no tile has run yet and ``out_channels`` is not given), the predictor is called
        once on the first tile of a batch whose tiles are all marked, to learn them, and
        that prediction is thrown away. E.g.
        :func:`~napari_topo.inference.empty_tiles.empty_tiles`.
    stats : dict, optional
        Filled with ``"tiles"`` (the tile count) and ``"skipped"`` (tiles not run).

    Returns
    -------
    numpy.ndarray or dict of numpy.ndarray
        float32 ``(C, z, y, x)`` per output (or ``out`` itself when given).

    Raises
    ------
    ValueError
        Bad volume (not 3D, empty, non-numeric, NaN/inf), bad tile / overlap / batch size /
        blend / pad mode / out / skip, or a predictor or ``skip`` output of the wrong shape.
    Cancelled
        If ``cancel`` was set.

    Notes
    -----
    Memory: besides the output, a float32 slab of ``C x L x y x x`` per output with
    ``tile_z <= L <= 2 * tile_z`` (more if one batch spans several z rows of tiles), one
    more of ``L x y x x`` for the weights with ``skip``, and two batches of tiles and
    predictions.

    Examples
    --------
    >>> vol = np.random.default_rng(0).random((40, 50, 60), dtype=np.float32)
    >>> res = sliding_window_inference(vol, lambda x: 2 * x, tile=32, overlap=0.25)
    >>> res.shape, bool(np.allclose(res[0], 2 * vol, rtol=1e-5))
    ((1, 40, 50, 60), True)
    """
    volume, shape, dtype = _volume_info(volume)
    tile = _positive_int_triple(tile, "tile")
    overlap = _overlap_triple(overlap)
    if (
        not isinstance(batch_size, (int, np.integer))
        or isinstance(batch_size, bool)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
    if blend not in _BLENDS:
        raise ValueError(f"blend must be one of {_BLENDS}; got {blend!r}")
    if pad_mode not in _PAD_MODES:
        raise ValueError(f"pad_mode must be one of {_PAD_MODES}; got {pad_mode!r}")
    sigmas = _sigma_tuple(sigma_scale, 3)
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be callable or None; got {type(progress).__name__}")
    if cancel is not None and not (hasattr(cancel, "is_set") or callable(cancel)):
        raise ValueError(
            "cancel must be a callable returning bool, a threading.Event or None; "
            f"got {type(cancel).__name__}"
        )
    if not callable(predictor):
        raise ValueError(f"predictor must be callable; got {type(predictor).__name__}")
    if skip is not None and not callable(skip):
        raise ValueError(f"skip must be callable or None; got {type(skip).__name__}")
    if isinstance(predictor, torch.nn.Module) and predictor.training:
        warnings.warn(
            "predictor is a torch.nn.Module in training mode (batch norm and dropout behave "
            "as in training); call .eval() on it first",
            stacklevel=2,
        )
    if out is not None:
        _check_out_spatial(out, shape)
    device = _resolve_device(device, predictor)

    is_numpy = isinstance(volume, np.ndarray)
    if is_numpy and dtype.kind == "f":
        _check_finite_numpy(volume)
    check_tiles = not is_numpy

    # Tile grid, separable weights and their separable sum (the normaliser).
    per_axis = [_axis_starts(n, t, o) for n, t, o in zip(shape, tile, overlap, strict=True)]
    starts = list(itertools.product(*per_axis))
    if blend == "gaussian":
        profiles = [_gaussian_1d(t, s) for t, s in zip(tile, sigmas, strict=True)]
        w3 = np.multiply.outer(np.multiply.outer(profiles[0], profiles[1]), profiles[2])
        weight = w3.astype(np.float32)
    else:
        profiles = [np.ones(t) for t in tile]
        weight = None
    # On an accelerator the tiles are weighted there; on the CPU, accumulation runs in numpy:
    # single-threaded and memory-bound, it stays fast when torch's thread pool is busy or the
    # machine is oversubscribed (torch's multi-threaded small in-place ops then stall).
    weight_dev = None
    if weight is not None and device.type != "cpu":
        weight_dev = torch.from_numpy(weight).to(device)[None, None]
    sums = [
        _axis_weight_sum(n, t, s, p)
        for n, t, s, p in zip(shape, tile, per_axis, profiles, strict=True)
    ]
    inv_wz = (1.0 / sums[0]).astype(np.float32)
    inv_wyx = (1.0 / np.multiply.outer(sums[1], sums[2])).astype(np.float32)
    # With ``skip``, the weights of the tiles that ran are summed voxel by voxel instead.
    tile_weight = None
    if skip is not None:
        tile_weight = weight if weight is not None else np.ones(tile, np.float32)

    nz = shape[0]
    tz = tile[0]
    batches = [starts[i : i + batch_size] for i in range(0, len(starts), batch_size)]
    slab_len = max(max(s[0] + min(tz, nz - s[0]) for s in b) - b[0][0] for b in batches)
    total = len(starts)
    wslab = (
        np.zeros((slab_len, shape[1], shape[2]), dtype=np.float32)
        if tile_weight is not None
        else None
    )
    n_skipped = 0

    user_numpy_outs = []
    if out is not None:
        arrays = out.values() if isinstance(out, Mapping) else [out]
        user_numpy_outs = [a for a in arrays if isinstance(a, np.ndarray)]

    dests: dict[Any, Any] | None = None
    slabs: dict[Any, np.ndarray] = {}
    scratch: dict[Any, np.ndarray] = {}
    single = True
    base = 0  # first z plane held by the slabs (everything below is written out)
    hi_end = 0  # one past the last z plane touched so far
    done = 0

    def read(index: int) -> np.ndarray:
        return _read_batch(volume, batches[index], tile, shape, pad_mode, check_tiles)

    def start(channels: dict[Any, int], is_single: bool):
        """Destinations, blending slabs and weighting scratch, once the outputs are known."""
        new_dests = _prepare_destinations(out, out_channels, channels, is_single, shape)
        new_slabs = {
            k: np.zeros((c, slab_len, shape[1], shape[2]), dtype=np.float32)
            for k, c in channels.items()
        }
        new_scratch = {}
        if weight is not None and weight_dev is None:
            new_scratch = {k: np.empty((c, *tile), np.float32) for k, c in channels.items()}
        return new_dests, new_slabs, new_scratch

    executor = None if is_numpy else ThreadPoolExecutor(1, thread_name_prefix="napari-topo-read")
    try:
        if progress is not None:
            progress(0, total)
        pending: Future | None = executor.submit(read, 0) if executor else None
        with torch.inference_mode():
            for bi, batch_starts in enumerate(batches):
                if _is_set(cancel):
                    raise Cancelled(f"inference cancelled after {done} of {total} tiles")
                x = pending.result() if pending is not None else read(bi)
                if executor is not None and bi + 1 < len(batches):
                    pending = executor.submit(read, bi + 1)
                xt = torch.from_numpy(x).to(device)
                run_starts = batch_starts
                if skip is not None:
                    flags = np.asarray(torch.as_tensor(skip(xt)).detach().cpu(), dtype=bool)
                    if flags.shape != (len(batch_starts),):
                        raise ValueError(
                            f"skip returned shape {flags.shape}; expected ({len(batch_starts)},)"
                        )
                    if flags.all() and dests is None and out_channels is None:
                        # the outputs' shapes are not known yet: one tile is run to learn
                        # them and its prediction thrown away
                        probe, probe_single = _as_outputs(predictor(xt[:1]), 1, tile)
                        single = probe_single
                        dests, slabs, scratch = start(
                            {k: int(v.shape[1]) for k, v in probe.items()}, single
                        )
                    n_skipped += int(flags.sum())
                    if flags.any():
                        keep = np.flatnonzero(~flags)
                        run_starts = [batch_starts[i] for i in keep]
                        xt = xt[torch.as_tensor(keep, device=xt.device)]
                if not run_starts:
                    outputs = {}
                    if dests is None:  # every tile so far skipped: shapes from out_channels
                        single = not isinstance(out_channels, Mapping)
                        channels = (
                            {None: int(out_channels)}
                            if single
                            else {k: int(v) for k, v in out_channels.items()}
                        )
                        dests, slabs, scratch = start(channels, single)
                else:
                    prediction = predictor(xt)
                    outputs, is_single = _as_outputs(prediction, len(run_starts), tile)
                    if dests is None:
                        single = is_single
                        channels = {k: int(v.shape[1]) for k, v in outputs.items()}
                        dests, slabs, scratch = start(channels, single)
                    elif is_single != single or outputs.keys() != slabs.keys():
                        raise ValueError(
                            "predictor returned different outputs for different batches"
                        )

                for key, pred in outputs.items():
                    if pred.shape[1] != slabs[key].shape[0]:
                        raise ValueError(
                            "predictor returned a different number of channels for "
                            "different batches"
                        )
                    pred = pred.detach().to(dtype=torch.float32)
                    if weight_dev is not None:
                        pred = pred.to(device) * weight_dev
                    pred = pred.cpu().numpy()
                    slab = slabs[key]
                    for i, (z0, y0, x0) in enumerate(run_starts):
                        dz, dy, dx = (
                            min(t, n - s) for t, n, s in zip(tile, shape, (z0, y0, x0), strict=True)
                        )
                        src = pred[i]
                        if key in scratch:
                            src = np.multiply(src, weight, out=scratch[key])
                        dst = slab[:, z0 - base : z0 - base + dz, y0 : y0 + dy, x0 : x0 + dx]
                        dst += src[:, :dz, :dy, :dx]
                if wslab is not None and outputs:
                    for z0, y0, x0 in run_starts:
                        dz, dy, dx = (
                            min(t, n - s) for t, n, s in zip(tile, shape, (z0, y0, x0), strict=True)
                        )
                        wslab[z0 - base : z0 - base + dz, y0 : y0 + dy, x0 : x0 + dx] += (
                            tile_weight[:dz, :dy, :dx]
                        )
                for z0, _, _ in batch_starts:
                    hi_end = max(hi_end, z0 + min(tz, nz - z0))
                done += len(batch_starts)

                # Planes below the next tile's z start are final: normalise, write, shift.
                next_z = batches[bi + 1][0][0] if bi + 1 < len(batches) else nz
                if next_z > base:
                    d = next_z - base
                    live = max(0, hi_end - next_z)
                    filled = hi_end - base
                    for key, slab in slabs.items():
                        block = slab[:, :d]
                        if wslab is None:
                            block *= inv_wz[base:next_z, None, None]
                            block *= inv_wyx
                        else:  # voxels no tile that ran covers stay 0
                            np.divide(block, wslab[:d], out=block, where=wslab[:d] > 0)
                        dests[key][:, base:next_z] = block
                        if live:  # numpy copies overlapping slices correctly
                            slab[:, :live] = slab[:, d : d + live]
                        slab[:, live:filled] = 0.0
                    if wslab is not None:
                        if live:
                            wslab[:live] = wslab[d : d + live]
                        wslab[live:filled] = 0.0
                    base = next_z
                if progress is not None:
                    progress(done, total)
    except BaseException:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
            executor = None
        for arr in user_numpy_outs:
            arr[...] = 0
        raise
    finally:
        if executor is not None:
            executor.shutdown(wait=True)

    assert dests is not None and base == nz
    if stats is not None:
        stats.update(tiles=total, skipped=n_skipped)
    if out is not None:
        return out
    return dests[None] if single else dests


# --------------------------------------------------------------------------- normalisation


class PercentileNormalizer(NamedTuple):
    """Linear intensity rescaling ``(x - lo) / (hi - lo)``; unpacks as ``(lo, hi)``.

    Calling it works on numpy arrays and torch tensors alike, so it can be applied tile by
    tile, e.g. ``predictor = lambda t: model(norm(t))``. When ``hi == lo`` (a constant
    image) it returns ``x - lo``. ``clip=True`` clips the result to ``[0, 1]``.
    """

    lo: float
    hi: float

    def __call__(self, x: Any, clip: bool = False) -> Any:
        scale = self.hi - self.lo if self.hi > self.lo else 1.0
        y = (x - self.lo) / scale
        return y.clip(0.0, 1.0) if clip else y


def normalize_percentile(
    volume: Any, low: float = 0.5, high: float = 99.5, sample: int = 1_000_000
) -> PercentileNormalizer:
    """Robust intensity range of a (possibly lazy) volume from a bounded sample.

    The percentiles are computed on a regular strided view
    ``volume[o::s, o::s, o::s]`` with the smallest stride ``s`` that keeps at most
    ``sample`` voxels (offset ``o = s // 2`` to avoid the border). Only the sample is held
    in memory: a numpy view costs nothing, a dask or zarr array streams its chunks (a zarr
    array decodes only the chunks that the strided view touches). NaN and infinite
    voxels are ignored.

    Parameters
    ----------
    volume : array-like
        numpy, dask or zarr array of any dimensionality.
    low, high : float
        Percentiles in ``[0, 100]``, ``low < high``.
    sample : int
        Maximum number of voxels read (>= 1).

    Returns
    -------
    PercentileNormalizer
        ``(lo, hi)`` named tuple, callable to rescale an array or tensor.

    Examples
    --------
    >>> vol = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    >>> norm = normalize_percentile(vol, 0, 100)
    >>> norm
    PercentileNormalizer(lo=0.0, hi=999.0)
    >>> float(norm(vol).max())
    1.0
    """
    if not (0.0 <= float(low) < float(high) <= 100.0):
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100; got {low}, {high}")
    if not isinstance(sample, (int, np.integer)) or isinstance(sample, bool) or sample < 1:
        raise ValueError(f"sample must be an int >= 1; got {sample!r}")
    from .intensity import strided_sample  # the one strided sampler (the input plan's too)

    view, _ = strided_sample(volume, int(sample))
    values = np.asarray(view).astype(np.float64, copy=False).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError(
            "the volume holds no finite value where sampled (NaN or infinite): nothing to segment"
        )
    lo, hi = np.percentile(values, [float(low), float(high)])
    return PercentileNormalizer(float(lo), float(hi))
