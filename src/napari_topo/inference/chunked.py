"""Segment volumes larger than memory: every result written chunk by chunk.

:func:`segment_to_ome_zarr` is the streaming counterpart of
:func:`napari_topo.inference.pipeline.segment` for a lazy (dask, zarr, memmap) volume:

1. **probability**: :func:`~napari_topo.inference.pipeline.predict` with ``out=`` fills
   level 0 of an OME-Zarr image slab by slab as the sliding window finishes it (TopNet's
   centerness and embedding likewise);
2. **mask and trees**: ``probability > threshold``, one chunk at a time, with pieces
   smaller than ``min_size`` voxels removed exactly as the whole-volume pipeline does
   (26-connected components, ``cc3d.dust``), and every kept piece given one global id,
   by :func:`label_components_chunked`: components are labelled per chunk, joined across
   chunk faces, edges and corners (a union-find over the chunks' boundary planes), sized
   and ordered over the whole volume; roots given once for the whole volume name the
   piece they lie in;
3. **skeleton**: :func:`skeletonize_chunked` thins each chunk of the mask with a halo
   (:func:`skeleton_halo`, sized by the largest vessel radius) and keeps its core (with
   ``client=``, each chunk is thinned on a dask worker:
   :mod:`napari_topo.inference.distributed`);
4. **pyramids**: :meth:`~napari_topo.data.ngff.OmeZarrTarget.finish` builds the lower
   levels block by block and writes the OME-Zarr metadata with the input's geometry.

Memory is set by the chunk and the tile, not the volume: a rolling slab of the sliding
window (about ``tile`` planes of the output), a few chunks (a chunk plus its halo for the
skeleton), the labels of at most three chunk-boundary planes per axis (8 bytes per voxel
of a (y, x) plane for z), and per-label tables (sizes, first voxels, the union-find) of
the pieces found in the chunks. tests/test_chunked.py checks with ``tracemalloc`` that no
stage allocates a volume-sized array.

What equals the whole-volume pipeline, on a volume that fits in memory
(tests/test_chunked.py): the probability (same tiles, same blending), the mask
(``VesselAnalysis.from_outputs(...).mask``), the skeleton (``skeletonize(mask)``, when
the halo covers the thickest vessel; see :func:`skeletonize_chunked`), and the component
ids (``scipy.ndimage.label`` of the mask with 26-connectivity, same numbering). The tree
labels are the border rule: **a tree is a connected piece of the mask**. The
whole-volume pipeline instead splits a piece holding several roots by geodesic distance
along the skeleton (multi-source Dijkstra) and gives a piece holding no root the label
of the nearest tree; streaming gives such a piece to the first of its roots (the others
are reported, ``same_as``) and its own id after the roots' ids. Where every piece holds
one root the two agree. Not streamed: the skeleton graph (graphml/swc/csv) and
branch statistics. Resampling (a CT's anisotropic voxels, axes that differ by at most 3x,
a ``zoom`` other than 1) is refused: the outputs are written on the input grid; a
microscopy stack's z step over 3x its pixel size is not resampled, so it streams.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MAX_RADIUS",
    "StreamingResult",
    "label_components_chunked",
    "remove_small_components_chunked",
    "segment_to_ome_zarr",
    "skeleton_halo",
    "skeletonize_chunked",
]


class _ColumnWriter:
    """Where ``predict(out=)`` writes: a zarr array, filled one (y, x) chunk column at a time.

    The sliding window hands over slabs of ``(C, dz, y, x)`` (all of y and x, ``dz``
    planes that do not line up with the chunks). Given whole, zarr merges every chunk the
    slab touches at once (up to ``async.concurrency`` chunks, each read, copied, merged
    and encoded: about 40 MiB per 128^3 float32 chunk, 0.3 GiB at 512^3); split by chunk
    column it holds one column of chunks at a time. ``leading=True``: the array is
    ``(z, y, x)`` and is seen as ``(1, z, y, x)``.
    """

    def __init__(self, arr, leading: bool = False):
        self.arr = arr
        self.leading = leading
        self.shape = (1, *tuple(arr.shape)) if leading else tuple(arr.shape)
        self.dtype = arr.dtype

    def __setitem__(self, key, value):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (len(self.shape) - len(key))
        value = np.asarray(value)
        if self.leading:
            key, value = key[1:], value[0]
        ndim = len(key)
        (y0, y1, _), (x0, x1, _) = (
            k.indices(n) for k, n in zip(key[-2:], self.arr.shape[-2:], strict=True)
        )
        cy, cx = self.arr.chunks[-2:]
        for ys in range(y0 - y0 % cy, y1, cy):
            for xs in range(x0 - x0 % cx, x1, cx):
                ya, yb = max(ys, y0), min(ys + cy, y1)
                xa, xb = max(xs, x0), min(xs + cx, x1)
                part = (Ellipsis, slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))
                self.arr[key[: ndim - 2] + (slice(ya, yb), slice(xa, xb))] = value[part]


def _chunk_slices(shape: Sequence[int], chunks: Sequence[int]):
    """Every chunk of a grid as a tuple of slices, in C order, with its grid index."""
    grid = [range(0, n, c) for n, c in zip(shape, chunks, strict=True)]
    for starts in itertools.product(*grid):
        sl = tuple(slice(s, min(s + c, n)) for s, c, n in zip(starts, chunks, shape, strict=True))
        yield tuple(s // c for s, c in zip(starts, chunks, strict=True)), sl


class _ChunkLabels:
    """Pass 1 of the chunked labelling: per-chunk labels joined into global components.

    Global label ``g`` (1-based) is local label ``g - offsets[idx]`` of chunk ``idx``;
    ``comp[g - 1]`` is its component (0-based), ``size[c]`` and ``first[c]`` the voxel
    count and the smallest C-order flat index of component ``c`` over the whole volume.

    Two 26-neighbours in different chunks are joined at the first axis ``a`` (in z, y, x
    order) along which their chunks differ: along the axes before ``a`` they share a chunk,
    so they meet on the two planes either side of a chunk boundary along ``a`` within that
    one row of chunks (a whole (y, x) plane for ``a`` = z, ``chunk_z`` x ``x`` for y, one
    chunk face for x), at an in-plane offset of -1, 0 or 1 on each axis. Those planes are
    filled as the chunks are labelled in C order and joined and dropped as soon as the
    last chunk of their row is labelled: at most three planes per axis are held, never
    all the boundaries of the volume.
    """

    def __init__(self, read_mask, shape, chunks):
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        self.read_mask = read_mask
        self.shape = shape = tuple(int(s) for s in shape)
        self.chunks = chunks = tuple(int(c) for c in chunks)
        nb = [-(-n // c) for n, c in zip(shape, chunks, strict=True)]
        # (axis, boundary k, chunk indices along the axes before it) -> [lo, hi] planes:
        # lo the last plane of chunk k along the axis, hi the first plane of chunk k + 1
        planes: dict[tuple, list[np.ndarray]] = {}
        self.offsets: dict[tuple[int, ...], int] = {}
        sizes, firsts = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        pairs: list[np.ndarray] = []
        total = 0
        for idx, sl in _chunk_slices(shape, chunks):
            labels, n = self.local_labels(sl)
            self.offsets[idx] = total
            if n:
                # sizes and first voxels from the vessel voxels only (no chunk-sized int64)
                flat = labels.reshape(-1)
                where = np.flatnonzero(flat)
                vals = flat[where]
                sizes.append(np.bincount(vals, minlength=n + 1)[1:].astype(np.int64))
                # first voxel of each local label in the chunk's C order, which is the
                # whole volume's C order restricted to the chunk
                _, first_pos = np.unique(vals, return_index=True)  # labels 1..n, in order
                local = np.unravel_index(where[first_pos], labels.shape)
                glob_idx = [loc + s.start for loc, s in zip(local, sl, strict=True)]
                firsts.append(np.ravel_multi_index(glob_idx, shape).astype(np.int64))
                del flat, where, vals
            for a in range(3):
                for k, side, end in ((idx[a], 0, -1), (idx[a] - 1, 1, 0)):
                    if not 0 <= k < nb[a] - 1:
                        continue
                    key = (a, k, idx[:a])
                    if key not in planes:
                        pshape = [sl[i].stop - sl[i].start if i < a else shape[i] for i in range(3)]
                        del pshape[a]
                        planes[key] = [np.zeros(pshape, np.int64) for _ in "lh"]
                    region = tuple(slice(None) if i < a else sl[i] for i in range(3) if i != a)
                    face = np.take(labels, end, axis=a).astype(np.int64)
                    face[face > 0] += total
                    planes[key][side][region] = face
            total += int(n)
            # boundaries whose hi side is complete: the last chunk of their row was this one
            for a in range(3):
                if idx[a] > 0 and all(idx[i] == nb[i] - 1 for i in range(a + 1, 3)):
                    lo, hi = planes.pop((a, idx[a] - 1, idx[:a]))
                    pairs.extend(_touching(lo, hi))
        self.total = total
        size_g = np.concatenate(sizes)  # per global label
        first_g = np.concatenate(firsts)
        if total:
            edges = np.zeros((0, 2), np.int64)
            if pairs:
                edges = np.unique(np.concatenate(pairs), axis=0)
            graph = coo_matrix(
                (np.ones(len(edges), np.int8), (edges[:, 0] - 1, edges[:, 1] - 1)),
                shape=(total, total),
            )
            n_comp, comp = connected_components(graph, directed=False)
        else:
            n_comp, comp = 0, np.zeros(0, np.int64)
        self.comp = comp.astype(np.int64)
        self.size = np.bincount(self.comp, weights=size_g, minlength=n_comp).astype(np.int64)
        first = np.full(n_comp, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(first, self.comp, first_g)
        self.first = first

    def local_labels(self, sl) -> tuple[np.ndarray, int]:
        """26-connected labels of chunk ``sl`` (``cc3d``, uint16/uint32) and their count."""
        from .. import _cc3d as cc3d

        block = np.ascontiguousarray(self.read_mask(sl), dtype=bool)
        labels, n = cc3d.connected_components(block, connectivity=26, return_N=True)
        return labels, int(n)

    def global_labels(self, idx, sl) -> np.ndarray:
        """Global labels (int64, 0 = background) of chunk ``idx``: labelled again."""
        labels, _ = self.local_labels(sl)
        out = labels.astype(np.int64)
        out[out > 0] += self.offsets[idx]
        return out

    def mapped_labels(self, idx, sl, lut: np.ndarray) -> np.ndarray:
        """``lut[global label]`` over chunk ``idx`` (``lut[0]`` background), ``lut``'s dtype.

        The chunk is labelled again and looked up through the slice of ``lut`` that
        belongs to it: no chunk-sized int64 array is made.
        """
        labels, n = self.local_labels(sl)
        off = self.offsets[idx]
        local = np.empty(n + 1, lut.dtype)
        local[0] = lut[0]
        local[1:] = lut[off + 1 : off + n + 1]
        return local[labels]


def _touching(lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
    """Label pairs ``(lo, hi)`` that touch across a boundary (offsets -1, 0, 1 in-plane)."""
    out = []
    h, w = lo.shape
    for d1, d2 in itertools.product((-1, 0, 1), repeat=2):
        a_sl = (slice(max(0, -d1), h - max(0, d1)), slice(max(0, -d2), w - max(0, d2)))
        b_sl = (slice(max(0, d1), h - max(0, -d1)), slice(max(0, d2), w - max(0, -d2)))
        u, v = lo[a_sl], hi[b_sl]
        both = (u > 0) & (v > 0)
        if both.any():
            out.append(np.unique(np.stack([u[both], v[both]], axis=1), axis=0))
    return out


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
    cross chunk borders. :func:`label_components_chunked` without the labels.

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
    """
    res = label_components_chunked(read_mask, shape, chunks, min_size=min_size, write_mask=write)
    return res["n_voxels"]


def label_components_chunked(
    read_mask: Callable[[tuple[slice, ...]], np.ndarray],
    shape: Sequence[int],
    chunks: Sequence[int],
    *,
    min_size: int = 0,
    sources: Any = None,
    snap: float = 8.0,
    write_mask: Callable[[tuple[slice, ...], np.ndarray], Any] | None = None,
    write_labels: Callable[[tuple[slice, ...], np.ndarray], Any] | None = None,
) -> dict:
    """Global 26-connected component labels of a mask read chunk by chunk.

    Pieces of fewer than ``min_size`` voxels are dropped (as ``cc3d.dust``); the kept
    pieces are numbered 1, 2, ... in the order of their first voxel in a C-order scan
    of the whole volume, which is the numbering of
    ``scipy.ndimage.label(mask, structure=np.ones((3, 3, 3)))`` on the whole (dusted)
    mask, however the pieces cross chunk faces, edges and corners. With ``sources``
    (K roots), ids 1..K are reserved for the roots: the piece holding root ``k`` (row
    ``k``, snapped to the nearest kept mask voxel) is numbered ``k + 1``, and the other
    pieces ``K + 1, K + 2, ...`` in first-voxel order.

    Parameters
    ----------
    read_mask : callable(slices) -> bool ndarray
        The mask of one chunk (called twice per chunk, plus once per chunk near a root).
    shape, chunks : sequence of 3 int
        Volume shape and chunk shape (z, y, x).
    min_size : int
        Smallest piece kept, in voxels (0 or 1 keeps all).
    sources : (K, 3) array_like, optional
        Tree roots, voxel coordinates (z, y, x), for the whole volume.
    snap : float
        A root outside the mask is moved to the nearest kept mask voxel within this many
        voxels (Chebyshev box, Euclidean nearest; ties to the first in C order); none
        there leaves the root unplaced (its id unused).
    write_mask : callable(slices, uint8 ndarray), optional
        Receives the kept mask of each chunk.
    write_labels : callable(slices, uint16 or uint32 ndarray), optional
        Receives the component ids of each chunk (uint16 when every id fits, else uint32;
        the same dtype for every chunk).

    Returns
    -------
    dict
        ``n_voxels`` (kept voxels), ``n_components`` (kept pieces), ``n_ids`` (largest
        id), ``sizes`` (int64 array, voxels of id ``i + 1``; 0 for an unused root id),
        ``first`` ((n_ids, 3) int64, first voxel of each id in C order; -1 if unused),
        ``roots`` (one dict per source: ``id``, ``source``, ``voxel`` it snapped to or
        None, ``same_as`` the id of an earlier root holding the same piece, or None).

    Notes
    -----
    Pass 1 labels each chunk (``cc3d.connected_components``, 26-connectivity) and
    records the size and first voxel of each label and the labels on both sides of every
    chunk boundary (planes spanning the row of chunks on each side, so that diagonal
    neighbours across edges and corners of chunks are seen; see :class:`_ChunkLabels`).
    Labels touching across a boundary (any of the 9 offsets of a 26-neighbourhood) are
    joined with :func:`scipy.sparse.csgraph.connected_components` (the union-find). Pass
    2 labels each chunk again (the labelling is deterministic) and writes the joined ids.
    Memory: a chunk's labels, at most three boundary planes per axis (8 bytes per voxel;
    a whole (y, x) plane for the z boundaries), tables with one entry per piece found in
    a chunk, plus the chunks within ``snap`` of a root.
    """
    min_size = int(min_size)
    cl = _ChunkLabels(read_mask, shape, chunks)
    shape, chunks = cl.shape, cl.chunks
    keep = cl.size >= max(min_size, 1)
    kept = np.flatnonzero(keep)
    order = kept[np.argsort(cl.first[kept], kind="stable")]
    roots: list[dict] = []
    named = np.zeros(len(cl.size), np.int64)  # component -> id (0 = not yet)
    n_roots = 0
    if sources is not None:
        src = np.asarray(sources, dtype=np.float64)
        if src.ndim != 2 or src.shape[1] != 3:
            raise ValueError(
                f"sources must be a (K, 3) array of voxel coordinates; got {src.shape}"
            )
        n_roots = len(src)
        cache: dict[tuple[int, ...], np.ndarray] = {}
        for k, point in enumerate(src):
            voxel, comp = _snap_root(cl, keep, point, snap, cache)
            entry = {"id": k + 1, "source": point.tolist(), "voxel": voxel, "same_as": None}
            if comp is not None:
                if named[comp]:
                    entry["same_as"] = int(named[comp])
                else:
                    named[comp] = k + 1
            roots.append(entry)
        del cache
    rest = order[named[order] == 0]
    named[rest] = n_roots + 1 + np.arange(len(rest))
    n_ids = n_roots + len(rest)
    lut = np.zeros(cl.total + 1, np.int64)
    lut[1:] = np.where(keep[cl.comp], named[cl.comp], 0)
    sizes = np.zeros(n_ids, np.int64)
    first = np.full((n_ids, 3), -1, np.int64)
    ids = named[kept] - 1
    sizes[ids] = cl.size[kept]
    first[ids] = np.stack(np.unravel_index(cl.first[kept], shape), axis=1)
    dtype = np.uint16 if n_ids <= np.iinfo(np.uint16).max else np.uint32
    lut = lut.astype(dtype)
    n_voxels = 0
    if write_mask is not None or write_labels is not None:
        for idx, sl in _chunk_slices(shape, chunks):
            out = cl.mapped_labels(idx, sl, lut)
            n_voxels += int(np.count_nonzero(out))
            if write_mask is not None:
                write_mask(sl, (out > 0).view(np.uint8))
            if write_labels is not None:
                write_labels(sl, out)
    else:
        n_voxels = int(sizes.sum())
    return {
        "n_voxels": n_voxels,
        "n_components": int(len(kept)),
        "n_ids": int(n_ids),
        "sizes": sizes,
        "first": first,
        "roots": roots,
    }


def _snap_root(cl: _ChunkLabels, keep, point, snap, cache):
    """Nearest kept mask voxel to ``point`` within ``snap`` voxels: (voxel, component)."""
    shape = np.asarray(cl.shape)
    centre = np.rint(point).astype(np.int64)
    r = int(np.ceil(max(float(snap), 0.0)))
    lo = np.clip(centre - r, 0, shape)
    hi = np.clip(centre + r + 1, 0, shape)
    if (hi <= lo).any():
        return None, None
    window = np.zeros(tuple(hi - lo), np.int64)
    box = tuple(slice(int(x), int(y)) for x, y in zip(lo, hi, strict=True))
    for idx, sl in _chunk_slices(cl.shape, cl.chunks):
        # the part of this chunk inside the window, in chunk and in window coordinates
        part = [(max(s.start, b.start), min(s.stop, b.stop)) for s, b in zip(sl, box, strict=True)]
        if any(x >= y for x, y in part):
            continue
        if idx not in cache:
            cache[idx] = cl.global_labels(idx, sl)
        src_sl = tuple(slice(x - c.start, y - c.start) for (x, y), c in zip(part, sl, strict=True))
        in_win = tuple(slice(x - w.start, y - w.start) for (x, y), w in zip(part, box, strict=True))
        window[in_win] = cache[idx][src_sl]
    comp = np.where(window > 0, cl.comp[np.maximum(window, 1) - 1], -1)
    ok = np.zeros(window.shape, bool)
    ok[window > 0] = keep[comp[window > 0]]
    cand = np.argwhere(ok)
    if not len(cand):
        return None, None
    d2 = (((cand + lo) - np.asarray(point)) ** 2).sum(axis=1)
    best = cand[int(np.argmin(d2))]  # argmin: the first in C order among ties
    return (best + lo).tolist(), int(comp[tuple(best)])


def _halo_boxes(shape: Sequence[int], chunks: Sequence[int], halo: int):
    """Each chunk, the box read around it and the chunk within that box, in C order.

    Yields ``(chunk, box, core)``: the chunk's slices in the volume, the chunk grown by
    ``halo`` voxels on every side (clipped at the volume), and the chunk's slices within
    the box.
    """
    for _, sl in _chunk_slices(shape, chunks):
        box = tuple(
            slice(max(0, s.start - halo), min(n, s.stop + halo))
            for s, n in zip(sl, shape, strict=True)
        )
        core = tuple(
            slice(s.start - b.start, s.stop - b.start) for s, b in zip(sl, box, strict=True)
        )
        yield sl, box, core


def skeletonize_chunked(
    read_mask: Callable[[tuple[slice, ...]], np.ndarray],
    shape: Sequence[int],
    chunks: Sequence[int],
    halo: int,
    write: Callable[[tuple[slice, ...], np.ndarray], Any],
    *,
    client: Any = None,
) -> int:
    """Skeleton of a mask read chunk by chunk: each chunk thinned with a halo, core kept.

    Each chunk is read with ``halo`` extra voxels on every side (clipped at the volume),
    thinned by :func:`napari_topo.topology.skeleton.skeletonize_box` (Lee's 3D
    thinning), and its core (the chunk itself) written. A chunk with no mask voxel is written as
    zeros without being thinned. What scikit-image's thinning loses (2-5 voxel wide
    axis-aligned runs, its issue #3757) is put back in the pieces that lie wholly inside
    the box (:func:`~napari_topo.topology.skeleton.skeletonize_box`), as the whole
    volume's :func:`~napari_topo.topology.skeleton.skeletonize` does; a piece that
    crosses the box's cut faces (a vessel network spanning chunks) keeps the plain
    thinning there, since its repair would need it whole.

    Parameters
    ----------
    read_mask : callable(slices) -> bool ndarray
        The mask of a box (a chunk plus its halo).
    shape, chunks : sequence of 3 int
        Volume shape and chunk shape (z, y, x).
    halo : int
        Voxels read around each chunk. See :func:`skeleton_halo` for the rule.
    write : callable(slices, uint8 ndarray)
        Receives the skeleton of each chunk (1 on the skeleton).
    client : distributed.Client, optional
        Thin on this dask cluster
        (:func:`~napari_topo.inference.distributed.thin_on_cluster`): the boxes are still
        read here and the cores written here, in the order the workers finish them, with
        at most two boxes per worker thread on their way at a time. The same function on
        the same boxes: the skeleton is the one without a cluster, bit for bit.

    Returns
    -------
    int
        Skeleton voxels.

    Notes
    -----
    A thinning decides each voxel from its 26-neighbourhood over successive passes, so a
    voxel's fate depends on voxels further away only through the layers thinned before
    it: with a halo larger than the thickest vessel's radius the cut at the halo's
    outer wall (treated as background) no longer reaches the core, and the stitched
    skeleton equals the whole volume's. This is checked, not proven: scikit-image
    re-checks candidate voxels sequentially in C order within a pass, and the restriction
    of the whole volume's C order to a box is the box's own C order, so only a chain of
    deletions longer than the halo could differ. tests/test_chunked.py compares the two
    on tubes crossing chunk faces and corners.
    """
    halo = int(halo)
    if halo < 0:
        raise ValueError(f"halo must be an integer >= 0; got {halo!r}")

    def boxes():
        """(chunk, box, core, cut faces) of every chunk with mask voxels; the others
        written as zeros."""
        for sl, outer, core in _halo_boxes(shape, chunks, halo):
            block = np.asarray(read_mask(outer)).astype(bool, copy=False)
            if not block[core].any():  # the skeleton lies inside the mask
                write(sl, np.zeros(tuple(s.stop - s.start for s in sl), np.uint8))
                continue
            cut = tuple((b.start > 0, b.stop < n) for b, n in zip(outer, shape, strict=True))
            yield sl, block, core, cut

    if client is None:
        from ..topology.skeleton import skeletonize_box

        thinned = ((sl, skeletonize_box(block, cut)[core]) for sl, block, core, cut in boxes())
    else:
        from .distributed import thin_on_cluster

        thinned = thin_on_cluster(client, boxes())
    total = 0
    for sl, skel in thinned:
        total += int(np.count_nonzero(skel))
        write(sl, skel.astype(np.uint8))
    return total


#: Default largest vessel radius (voxels) that the skeleton halo is sized for.
DEFAULT_MAX_RADIUS = 8


def skeleton_halo(max_radius: float) -> int:
    """Halo (voxels) that :func:`skeletonize_chunked` needs for vessels up to ``max_radius``.

    ``ceil(max_radius) + 4``: the thinning's reach is about the radius of the thickest
    vessel (the layers peeled off before its centerline is decided), plus a margin of
    four voxels for the 26-neighbourhood checks of the last passes. Measured on random
    tubes of radius 1-12 voxels crossing 16^3 chunks: a halo of the largest radius
    gave the whole-volume skeleton in every case, two voxels fewer did not always.
    """
    r = float(max_radius)
    if not np.isfinite(r) or r <= 0:
        raise ValueError(f"max_radius must be a positive number of voxels; got {max_radius!r}")
    return int(np.ceil(r)) + 4


def _local_dask(client):
    """With a cluster, dask reads of the input run here (threads), not on the cluster.

    A ``distributed.Client`` makes itself dask's default scheduler; the workers are
    there for the network and the thinning only, and need not see the data.
    """
    if client is None:
        return contextlib.nullcontext()
    import dask

    return dask.config.set(scheduler="threads")


class StreamingResult(dict):
    """What :func:`segment_to_ome_zarr` wrote and measured (a JSON-able dict).

    Keys: ``"paths"`` (output name -> folder), ``"n_voxels"`` (mask voxels),
    ``"seconds"`` (stage -> wall time), ``"input_policy"`` (its ``to_dict()``),
    ``"policy_line"`` (one line for the user) and ``"compute"`` (where and in what
    arithmetic the network ran, as :attr:`PredictOutputs.compute`; on a dask cluster
    ``{"device": "dask workers", "precision": <the request, resolved on each worker>}``).
    """


def streaming_factors(volume, spacing, zoom=None, model=None, **predict_kwargs) -> tuple:
    """The resampling factors ``predict`` would apply to ``volume`` (before any work).

    Streaming writes on the input grid, so it needs factors of 1. Outside CT an axis more
    than 3x coarser than the finest is not resampled
    (:attr:`~napari_topo.inference.intensity.InputPolicy.keep_coarse_axes`); whether the
    volume is a CT is decided here as ``predict`` will decide it, from a strided sample,
    the model's card and the ``modality`` / ``window`` / ``polarity`` in
    ``predict_kwargs``, so a CT is refused before any output exists. ``zoom``: a number,
    or None for 1.
    """
    from .intensity import plan_input
    from .pipeline import DEFAULT_MODEL, _needs_resampling, resample_factors

    lenient = resample_factors(spacing, zoom, keep_coarse=True)
    if _needs_resampling(lenient) or not _needs_resampling(resample_factors(spacing, zoom)):
        return lenient  # the modality does not matter
    from ..models.registry import model_card

    policy = plan_input(
        volume,
        model_card(model or DEFAULT_MODEL).normalization,
        modality=predict_kwargs.get("modality", "auto"),
        window=predict_kwargs.get("window"),
        polarity=predict_kwargs.get("polarity", "auto"),
        zoom=None,
        header_hint=predict_kwargs.get("header_hint"),
    )
    return resample_factors(spacing, zoom, keep_coarse=policy.keep_coarse_axes)


def segment_to_ome_zarr(
    volume: Any,
    geometry,
    out: Mapping[str, str | Path],
    model: Any = None,
    *,
    threshold: float | None = None,
    min_size: int | None = None,
    sources: Any = None,
    max_radius: float = DEFAULT_MAX_RADIUS,
    chunk: int | None = None,
    zoom: str | float | None = "auto",
    spacing: Sequence[float] | None = None,
    progress: Callable[[int, int], Any] | None = None,
    on_message: Callable[[str], Any] | None = None,
    stage: Callable[[str], Any] | None = None,
    client: Any = None,
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
        Output folder per output: ``"probability"`` and ``"mask"`` (required), for
        TopNet ``"centerness"`` and ``"embedding"`` (``(E, z, y, x)``, axes ``czyx``),
        and optionally ``"skeleton"`` (uint8, :func:`skeletonize_chunked`) and
        ``"trees"`` (uint16/uint32 component ids named by ``sources``,
        :func:`label_components_chunked`).
    model : str, path or (module, card)
        As :func:`~napari_topo.inference.pipeline.predict` (default: its default model).
    threshold : float, optional
        ``mask = probability > threshold``. Default: the model's own
        (:attr:`~napari_topo.models.registry.ModelCard.mask_threshold`).
    min_size : int, optional
        Mask pieces with fewer voxels are dropped, across chunk borders
        (:func:`remove_small_components_chunked`); default: the model's own
        (:attr:`~napari_topo.models.registry.ModelCard.mask_min_size`); 0 keeps all.
    sources : (K, 3) array_like, optional
        Tree roots (voxel coordinates) for the whole volume: the piece of the mask
        holding root ``k`` gets tree id ``k + 1`` in ``"trees"``.
    max_radius : float
        Largest vessel radius (voxels) the skeleton's halo is sized for
        (:func:`skeleton_halo`).
    chunk : int, optional
        Chunk edge of the outputs (default: the input's chunk along x when it has
        chunks, else :data:`~napari_topo.data.ngff.OME_ZARR_CHUNK`).
    zoom : "auto", float or None
        Only 1 (or None) is done; "auto" is reported as not applied (``on_message``).
    spacing : sequence of 3 float, optional
        Voxel size used by the input policy (a CT's window); isotropic, or (not for a
        CT) with axes more than 3 times the finest, which are not resampled
        (:data:`~napari_topo.inference.intensity.ANISOTROPY_THRESHOLD`).
    progress, on_message
        As :func:`predict`.
    stage : callable(str), optional
        Told the name of each stage as it starts ("probability", "mask" (with the
        tree labels), "skeleton", "pyramids").
    client : distributed.Client, optional
        Run the two costly per-block computations on this dask cluster
        (:mod:`napari_topo.inference.distributed`): the network's forward passes (the
        weights travel with the tasks, checked by SHA-256 on each worker; the tiles and
        their batches of ``batch_size`` are those of the run without a cluster) and the
        thinning of each chunk of the skeleton stage (the chunk and its halo, read here,
        one task each). Everything else runs here: reading the input and the mask,
        blending, writing every output, the mask and tree labels (a union-find over the
        chunk borders, sequential and cheap next to the network) and the pyramids
        (block means and copies, bound by reading and writing the outputs, which the
        workers need not see). The outputs are those of the run without a cluster.
    **predict_kwargs
        Other :func:`predict` arguments (tile, overlap, batch_size, device, modality,
        window, polarity, cancel, ...).

    Returns
    -------
    StreamingResult

    Raises
    ------
    ValueError
        Resampling would be needed (:func:`streaming_factors`: anisotropic ``spacing``
        that the input policy resamples, or a ``zoom`` other than 1), before any output
        is created; a missing output path, a bad threshold or min_size; one line each.
    """
    from ..data.ngff import OME_ZARR_CHUNK, create_ome_zarr
    from .pipeline import (
        DEFAULT_MODEL,
        _needs_resampling,
        predict,
        resolve_model,
    )
    from .sliding import _volume_info

    with _local_dask(client):
        volume, shape, _ = _volume_info(volume)
    if threshold is None or min_size is None:
        from ..models.registry import model_card

        card = model_card(model or DEFAULT_MODEL)
        threshold = card.mask_threshold if threshold is None else threshold
        min_size = card.mask_min_size if min_size is None else min_size
    if not np.isfinite(threshold) or not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be between 0 and 1; got {threshold!r}")
    min_size = int(min_size)
    if min_size < 0:
        raise ValueError(f"min_size must be an integer >= 0; got {min_size!r}")
    halo = skeleton_halo(max_radius) if "skeleton" in out else 0
    if sources is not None:
        sources = np.asarray(sources, dtype=np.float64)
        if sources.ndim != 2 or sources.shape[1] != 3:
            raise ValueError(
                f"sources must be a (K, 3) array of voxel coordinates; got {sources.shape}"
            )
    numeric_zoom = None if zoom is None or isinstance(zoom, str) else zoom
    factors = streaming_factors(volume, spacing, numeric_zoom, model, **predict_kwargs)
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
    if card.architecture == "unet3d-voxel-head":
        # its second stage needs the whole volume (and a cluster's workers would run the
        # bare network: a review measured Dice 0.29 for the head's 0.88)
        raise ValueError(
            f"model {card.name!r} carries a voxel head, which runs on the whole volume: "
            "it cannot stream chunk by chunk (segment --format ome-zarr); segment to a "
            "whole-volume format instead, or fine-tune its base U-Net with --layers all "
            "(the network's weights)"
        )
    if client is not None:
        import inspect

        from .distributed import cluster_model, cluster_slots, model_payload

        weights_path = None
        if not isinstance(model, tuple):
            from ..models.registry import _resolve

            weights_path = _resolve(model or DEFAULT_MODEL, None)[1]
        data, sha = model_payload(module, card, weights_path)
        per_batch = predict_kwargs.get("batch_size")
        if per_batch is None:
            per_batch = inspect.signature(predict).parameters["batch_size"].default
        module = cluster_model(
            client,
            card,
            data,
            sha,
            int(per_batch),
            device=predict_kwargs.get("device", "auto"),
            precision=predict_kwargs.get("precision", "auto"),
        )
        # batches of per_batch tiles, one task each: two per worker thread at once (the
        # scheduler hands a 1-thread worker up to 2 tasks, so fewer can leave one idle)
        predict_kwargs["batch_size"] = int(per_batch) * 2 * cluster_slots(client)
        predict_kwargs["device"] = "cpu"  # here: tiles read, blended and written
        cluster_precision = predict_kwargs.get("precision", "auto")
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
            dests[key] = _ColumnWriter(t.level0, leading=True)
        else:
            from ..geometry import Geometry

            gc = Geometry(g.affine, "c" + g.axes, unit=g.unit, known=g.known)
            t = create_ome_zarr(out[name], (channels, *shape), np.float32, gc, chunk=chunk)
            dests[key] = _ColumnWriter(t.level0)
        targets[name] = t

    t0 = begin("probability")
    with _local_dask(client):
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
    if client is not None:
        compute = {"device": "dask workers", "precision": str(cluster_precision)}
        for key in ("tta", "empty tiles"):  # decided here, not on the workers: said
            if (result.compute or {}).get(key):
                compute[key] = result.compute[key]
    else:
        compute = dict(result.compute or {})

    t0 = begin("mask")
    prob = targets["probability"].level0
    mask_t = create_ome_zarr(out["mask"], shape, np.uint8, g, chunk=chunk)
    chunks = tuple(int(c) for c in prob.chunks)

    def read_mask(sl):
        return np.asarray(prob[sl]) > threshold

    def write(sl, block):
        mask_t.level0[sl] = block

    tree_info = None
    if "trees" in out:
        lab_t: dict[str, Any] = {}

        def write_labels(sl, block):
            if "t" not in lab_t:  # created once the number of ids (the dtype) is known
                lab_t["t"] = create_ome_zarr(out["trees"], shape, block.dtype, g, chunk=chunk)
            lab_t["t"].level0[sl] = block

        tree_info = label_components_chunked(
            read_mask,
            shape,
            chunks,
            min_size=min_size,
            sources=sources,
            snap=max(8.0, 2.0 * float(max_radius)),
            write_mask=write,
            write_labels=write_labels,
        )
        n_voxels = tree_info["n_voxels"]
        if "t" not in lab_t:  # an empty volume has no chunks to write
            lab_t["t"] = create_ome_zarr(out["trees"], shape, np.uint16, g, chunk=chunk)
    elif min_size > 1:
        n_voxels = remove_small_components_chunked(read_mask, shape, chunks, min_size, write)
    else:
        n_voxels = 0
        for _, sl in _chunk_slices(shape, chunks):
            block = read_mask(sl)
            n_voxels += int(block.sum())
            write(sl, block.astype(np.uint8))
    times["mask"] = time.perf_counter() - t0
    targets["mask"] = mask_t
    if tree_info is not None:
        targets["trees"] = lab_t["t"]

    n_skeleton = None
    if "skeleton" in out:
        t0 = begin("skeleton")
        skel_t = create_ome_zarr(out["skeleton"], shape, np.uint8, g, chunk=chunk)

        def write_skel(sl, block):
            skel_t.level0[sl] = block

        n_skeleton = skeletonize_chunked(
            lambda sl: np.asarray(mask_t.level0[sl]) > 0,
            shape,
            chunks,
            halo,
            write_skel,
            client=client,
        )
        times["skeleton"] = time.perf_counter() - t0
        targets["skeleton"] = skel_t

    t0 = begin("pyramids")
    paths = {name: str(t.finish()) for name, t in targets.items()}
    times["pyramids"] = time.perf_counter() - t0
    return StreamingResult(
        paths=paths,
        n_voxels=n_voxels,
        seconds={k: round(v, 3) for k, v in times.items()},
        input_policy=policy.to_dict() if policy is not None else None,
        policy_line=policy.describe() if policy is not None else "",
        compute=compute,
        chunk=chunk,
        threshold=float(threshold),
        min_size=min_size,
        halo=halo,
        n_skeleton=n_skeleton,
        trees=None
        if tree_info is None
        else {
            "n_components": tree_info["n_components"],
            "n_ids": tree_info["n_ids"],
            "sizes": tree_info["sizes"].tolist(),
            "first": tree_info["first"].tolist(),
            "roots": tree_info["roots"],
        },
    )
