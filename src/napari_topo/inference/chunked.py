"""Segment volumes larger than memory: probability and mask written chunk by chunk.

:func:`segment_to_ome_zarr` is the streaming counterpart of
:func:`napari_topo.inference.pipeline.segment` for a lazy (dask, zarr, memmap) volume:

1. **probability**: :func:`~napari_topo.inference.pipeline.predict` with ``out=`` fills
   level 0 of an OME-Zarr image slab by slab as the sliding window finishes it (TopNet's
   centerness and embedding likewise);
2. **mask**: ``probability > threshold``, one chunk at a time, with pieces smaller than
   ``min_size`` voxels removed exactly as the whole-volume pipeline does (26-connected
   components, ``cc3d.dust``), by :func:`remove_small_components_chunked`: components are
   labelled per chunk, joined across chunk faces, edges and corners (a union-find over the
   chunks' boundary planes), and sized over the whole volume;
3. **pyramids**: :meth:`~napari_topo.data.ngff.OmeZarrTarget.finish` builds the lower
   levels block by block and writes the OME-Zarr metadata with the input's geometry.

Memory is set by the chunk and the tile, not the volume: a rolling slab of the sliding
window (about ``tile`` planes of the output), a few chunks, and the labels of the chunk
boundary planes (8 bytes per voxel of those planes).

Not in the streaming path (yet): the skeleton, vessel graph and vessel trees, which are
computed on the whole volume (:class:`~napari_topo.analysis.VesselAnalysis`); for a volume
that fits in memory use the whole-volume pipeline. Resampling (anisotropic voxels, a
``zoom`` other than 1) is refused: the outputs are written on the input grid.

On a volume that fits in memory the probability equals :func:`predict`'s (same tiles,
same blending) and the mask equals ``VesselAnalysis.from_outputs(...).mask``
(tests/test_chunked.py).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["StreamingResult", "remove_small_components_chunked", "segment_to_ome_zarr"]


class _Leading:
    """A ``(z, y, x)`` array seen as ``(1, z, y, x)``: the ``out=`` predict writes into."""

    def __init__(self, arr):
        self.arr = arr
        self.shape = (1, *tuple(arr.shape))
        self.dtype = arr.dtype

    def __setitem__(self, key, value):
        key = key if isinstance(key, tuple) else (key,)
        self.arr[key[1:]] = np.asarray(value)[0]


def _chunk_slices(shape: Sequence[int], chunks: Sequence[int]):
    """Every chunk of a grid as a tuple of slices, in C order, with its grid index."""
    grid = [range(0, n, c) for n, c in zip(shape, chunks, strict=True)]
    for starts in itertools.product(*grid):
        sl = tuple(slice(s, min(s + c, n)) for s, c, n in zip(starts, chunks, shape, strict=True))
        yield tuple(s // c for s, c in zip(starts, chunks, strict=True)), sl


def remove_small_components_chunked(
    read_mask: Callable[[tuple[slice, ...]], np.ndarray],
    shape: Sequence[int],
    chunks: Sequence[int],
    min_size: int,
    write: Callable[[tuple[slice, ...], np.ndarray], Any],
) -> int:
    """Drop 26-connected pieces of fewer than ``min_size`` voxels, chunk by chunk.

    The result equals ``cc3d.dust(mask, threshold=min_size, connectivity=26)`` on the
    whole volume (pieces with at least ``min_size`` voxels are kept), however the pieces
    cross chunk borders.

    Parameters
    ----------
    read_mask : callable(slices) -> bool ndarray
        The mask of one chunk (called twice per chunk: count, then write).
    shape, chunks : sequence of 3 int
        Volume shape and chunk shape (z, y, x).
    min_size : int
        Smallest piece kept, in voxels.
    write : callable(slices, uint8 ndarray)
        Receives the cleaned mask of each chunk.

    Returns
    -------
    int
        Vessel voxels kept.

    Notes
    -----
    Pass 1 labels each chunk (``cc3d.connected_components``, 26-connectivity), records
    the size of each label and the labels on both sides of every chunk boundary (as
    whole planes of the volume, so that diagonal neighbours across edges and corners of
    chunks are seen). Labels touching across a boundary (any of the 9 offsets of a
    26-neighbourhood) are joined with :func:`scipy.sparse.csgraph.connected_components`.
    Pass 2 labels each chunk again (the labelling is deterministic) and keeps the labels
    whose joined piece is large enough.
    """
    import cc3d
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    shape = tuple(int(s) for s in shape)
    chunks = tuple(int(c) for c in chunks)
    nb = [-(-n // c) for n, c in zip(shape, chunks, strict=True)]
    # boundary planes: axis a, boundary k (between chunk k and k + 1): the last plane of
    # chunk k ("lo") and the first of chunk k + 1 ("hi"), over the whole volume
    planes: list[dict[int, list[np.ndarray]]] = []
    for a in range(3):
        other = [shape[i] for i in range(3) if i != a]
        planes.append(
            {k: [np.zeros(other, np.int64), np.zeros(other, np.int64)] for k in range(nb[a] - 1)}
        )
    offsets: dict[tuple[int, ...], int] = {}
    sizes = [np.zeros(0, np.int64)]
    total = 0
    for idx, sl in _chunk_slices(shape, chunks):
        block = np.ascontiguousarray(read_mask(sl), dtype=bool)
        labels, n = cc3d.connected_components(block, connectivity=26, return_N=True)
        offsets[idx] = total
        if n:
            sizes.append(np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.int64))
            glob = np.where(labels > 0, labels.astype(np.int64) + total, 0)
            for a in range(3):
                rest = tuple(sl[i] for i in range(3) if i != a)
                if idx[a] > 0:  # first plane: the "hi" side of boundary idx[a] - 1
                    planes[a][idx[a] - 1][1][rest] = np.take(glob, 0, axis=a)
                if idx[a] < nb[a] - 1:  # last plane: the "lo" side of boundary idx[a]
                    planes[a][idx[a]][0][rest] = np.take(glob, -1, axis=a)
        total += int(n)
    size = np.concatenate(sizes)  # size[g - 1] for global label g
    pairs = []
    for a in range(3):
        for lo, hi in planes[a].values():
            h, w = lo.shape
            for d1, d2 in itertools.product((-1, 0, 1), repeat=2):
                a_sl = (slice(max(0, -d1), h - max(0, d1)), slice(max(0, -d2), w - max(0, d2)))
                b_sl = (slice(max(0, d1), h - max(0, -d1)), slice(max(0, d2), w - max(0, -d2)))
                u, v = lo[a_sl], hi[b_sl]
                both = (u > 0) & (v > 0)
                if both.any():
                    pairs.append(np.stack([u[both], v[both]], axis=1))
    del planes
    if total:
        edges = np.unique(np.concatenate(pairs), axis=0) if pairs else np.zeros((0, 2), np.int64)
        graph = coo_matrix(
            (np.ones(len(edges), np.int8), (edges[:, 0] - 1, edges[:, 1] - 1)),
            shape=(total, total),
        )
        _, comp = connected_components(graph, directed=False)
        piece = np.bincount(comp, weights=size)
        keep = np.r_[False, piece[comp] >= min_size]  # keep[g] for global label g
    else:
        keep = np.zeros(1, bool)
    kept = 0
    for idx, sl in _chunk_slices(shape, chunks):
        block = np.ascontiguousarray(read_mask(sl), dtype=bool)
        if not block.any():
            write(sl, np.zeros(block.shape, np.uint8))
            continue
        labels = cc3d.connected_components(block, connectivity=26).astype(np.int64)
        out = keep[np.where(labels > 0, labels + offsets[idx], 0)]
        kept += int(out.sum())
        write(sl, out.astype(np.uint8))
    return kept


class StreamingResult(dict):
    """What :func:`segment_to_ome_zarr` wrote and measured (a JSON-able dict).

    Keys: ``"paths"`` (output name -> folder), ``"n_voxels"`` (mask voxels),
    ``"seconds"`` (stage -> wall time), ``"input_policy"`` (its ``to_dict()``), and
    ``"policy_line"`` (one line for the user).
    """


def segment_to_ome_zarr(
    volume: Any,
    geometry,
    out: Mapping[str, str | Path],
    model: Any = None,
    *,
    threshold: float = 0.5,
    min_size: int | None = None,
    chunk: int | None = None,
    zoom: str | float | None = "auto",
    spacing: Sequence[float] | None = None,
    progress: Callable[[int, int], Any] | None = None,
    on_message: Callable[[str], Any] | None = None,
    stage: Callable[[str], Any] | None = None,
    **predict_kwargs,
) -> StreamingResult:
    """Probability and mask of a (lazy) volume, written as OME-Zarr chunk by chunk.

    Parameters
    ----------
    volume : array-like (z, y, x)
        dask, zarr, memmap or numpy; read tile by tile.
    geometry : Geometry
        Placement of ``volume`` (spatial axes ``zyx``): written into every output.
    out : mapping
        Output folder per output: ``"probability"`` and ``"mask"`` (required), and for
        TopNet ``"centerness"`` and ``"embedding"`` (``(E, z, y, x)``, axes ``czyx``).
    model : str, path or (module, card)
        As :func:`~napari_topo.inference.pipeline.predict` (default: its default model).
    threshold : float
        ``mask = probability > threshold``.
    min_size : int, optional
        Mask pieces with fewer voxels are dropped, across chunk borders
        (:func:`remove_small_components_chunked`); default
        :data:`~napari_topo.inference.pipeline.DEFAULT_MIN_SIZE`; 0 keeps all.
    chunk : int, optional
        Chunk edge of the outputs (default: the input's chunk along x when it has
        chunks, else :data:`~napari_topo.data.ngff.OME_ZARR_CHUNK`).
    zoom : "auto", float or None
        Only 1 (or None) is done; "auto" is reported as not applied (``on_message``).
    spacing : sequence of 3 float, optional
        Voxel size used by the input policy (a CT's window); must be isotropic.
    progress, on_message
        As :func:`predict`.
    stage : callable(str), optional
        Told the name of each stage as it starts ("probability", "mask", "pyramids").
    **predict_kwargs
        Other :func:`predict` arguments (tile, overlap, batch_size, device, modality,
        window, polarity, cancel, ...).

    Returns
    -------
    StreamingResult

    Raises
    ------
    ValueError
        Resampling would be needed (anisotropic ``spacing`` or a ``zoom`` other than
        1), a missing output path, a bad threshold or min_size; one line each.
    """
    from ..data.ngff import OME_ZARR_CHUNK, create_ome_zarr
    from .pipeline import (
        DEFAULT_MIN_SIZE,
        DEFAULT_MODEL,
        _needs_resampling,
        predict,
        resample_factors,
        resolve_model,
    )
    from .sliding import _volume_info

    volume, shape, _ = _volume_info(volume)
    if not np.isfinite(threshold) or not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be between 0 and 1; got {threshold!r}")
    min_size = DEFAULT_MIN_SIZE if min_size is None else int(min_size)
    if min_size < 0:
        raise ValueError(f"min_size must be an integer >= 0; got {min_size!r}")
    numeric_zoom = None if zoom is None or isinstance(zoom, str) else zoom
    factors = resample_factors(spacing, numeric_zoom)
    if _needs_resampling(factors):
        why = (
            f"voxels {tuple(float(s) for s in spacing)} are anisotropic"
            if numeric_zoom is None
            else f"zoom {numeric_zoom} resamples the volume"
        )
        raise ValueError(
            f"the streaming pipeline writes on the input grid, but the {why} (resampling "
            f"factors {tuple(round(f, 3) for f in factors)}); segment a volume that fits "
            "in memory with the whole-volume pipeline instead"
        )
    for key in ("probability", "mask"):
        if key not in out:
            raise ValueError(f"out must name a folder for {key!r}; got keys {sorted(out)}")
    if chunk is None:
        src_chunks = getattr(volume, "chunksize", None) or getattr(volume, "chunks", None)
        try:
            chunk = int(src_chunks[-1]) if src_chunks is not None else OME_ZARR_CHUNK
        except (TypeError, ValueError, IndexError):
            chunk = OME_ZARR_CHUNK
        chunk = max(16, min(chunk, 512))

    times: dict[str, float] = {}

    def begin(name: str) -> float:
        if stage is not None:
            stage(name)
        return time.perf_counter()

    module, card = resolve_model(model or DEFAULT_MODEL, None)
    g = geometry.spatial() if geometry.axes != "zyx" else geometry
    targets, dests = {}, {}
    names = {"vessel": "probability", "centerness": "centerness", "embedding": "embedding"}
    for key, spec in (card.outputs or {"vessel": {"channels": 1}}).items():
        name = names.get(key, key)
        if name not in out:
            raise ValueError(f"the model has an output {key!r}: out needs a folder {name!r}")
        channels = int((spec or {}).get("channels", 1))
        if channels == 1:
            t = create_ome_zarr(out[name], shape, np.float32, g, chunk=chunk)
            dests[key] = _Leading(t.level0)
        else:
            from ..geometry import Geometry

            gc = Geometry(g.affine, "c" + g.axes, unit=g.unit, known=g.known)
            t = create_ome_zarr(out[name], (channels, *shape), np.float32, gc, chunk=chunk)
            dests[key] = t.level0
        targets[name] = t

    t0 = begin("probability")
    result = predict(
        volume,
        (module, card),
        zoom=1.0 if numeric_zoom is not None else zoom,
        spacing=spacing,
        out=dests,
        progress=progress,
        on_message=on_message,
        **predict_kwargs,
    )
    times["probability"] = time.perf_counter() - t0
    policy = result.input_policy

    t0 = begin("mask")
    prob = targets["probability"].level0
    mask_t = create_ome_zarr(out["mask"], shape, np.uint8, g, chunk=chunk)
    chunks = tuple(int(c) for c in prob.chunks)

    def read_mask(sl):
        return np.asarray(prob[sl]) > threshold

    def write(sl, block):
        mask_t.level0[sl] = block

    if min_size > 1:
        n_voxels = remove_small_components_chunked(read_mask, shape, chunks, min_size, write)
    else:
        n_voxels = 0
        for _, sl in _chunk_slices(shape, chunks):
            block = read_mask(sl)
            n_voxels += int(block.sum())
            write(sl, block.astype(np.uint8))
    times["mask"] = time.perf_counter() - t0
    targets["mask"] = mask_t

    t0 = begin("pyramids")
    paths = {name: str(t.finish()) for name, t in targets.items()}
    times["pyramids"] = time.perf_counter() - t0
    return StreamingResult(
        paths=paths,
        n_voxels=n_voxels,
        seconds={k: round(v, 3) for k, v in times.items()},
        input_policy=policy.to_dict() if policy is not None else None,
        policy_line=policy.describe() if policy is not None else "",
        chunk=chunk,
        threshold=float(threshold),
        min_size=min_size,
    )
