"""Incremental ("live") versions of the fast metrics of :func:`compute_metrics`.

A brush stroke changes a few hundred voxels of a volume of millions; the overlap counts,
the Euler characteristic, the Betti numbers and the connected-component errors change
only near them. :class:`IncrementalMetrics` keeps the state those metrics are made of
and updates it in time proportional to the stroke (plus, rarely, a relabelling when an
erasure really splits a component):

* **Overlap** (Dice, precision, recall, volume error): the counts ``|P|``, ``|G|`` and
  ``|P∩G|``, changed by the voxels that flipped.
* **Euler characteristic** (26/6 connectivity in 3D, 8/4 in 2D): a sum over the lattice
  vertices of a contribution that depends only on the ``2x2x2`` (``2x2``) block of
  voxels around the vertex -- the lookup-table method of
  :func:`skimage.measure.euler_number`, with the table derived here from the closed
  cubical complex (each k-cell incident to the vertex counts ``(-1)^k / 2^k``). A stroke
  changes only the blocks around its voxels.
* **Betti-0** (components, 26-connected): a label image plus union-find over labels.
  Painting merges the labels met in a one-voxel shell around the stroke (a local
  :func:`cc3d.connected_components` of that box). Erasing may split a component: the
  remaining voxels next to the erased ones ("seeds") are grouped by a local labelling
  in a window that grows (x4 margin) until every group of seeds is known to be one
  piece or a closed piece of its own; a true split of two large pieces ends with a
  labelling of the whole volume (cc3d), which is the slow case.
* **Betti-2** (cavities): maintained exactly with the same machinery on the background
  (6-connected, with a one-voxel frame of outside background): painting removes
  background (a potential split = a new cavity), erasing adds background (merges).
  Cavities are rare in vessels, and the background's seeds are almost always joined
  within the first small window, so this costs about as much as the foreground.
* **Betti-1** = ``b0 + b2 - chi``.
* **CCE 3D** = Betti-0 error; **mean 2D CCE**: per-slice component counts and voxel
  counts along ``axis``; only the slices a stroke touches are relabelled.

Every value equals what :func:`napari_topo.topology.metrics.compute_metrics` returns for
the same arrays (the tests check this after random paint/erase sequences). The slow
metrics (clDice, Tprec, Tsens, HD95, tree accuracy) are not maintained here.

No Qt: a napari widget calls :meth:`IncrementalMetrics.update` from a worker.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from .. import _cc3d as cc3d
from .metrics import (
    _as_labels,
    _check_axis,
    _check_same_shape,
    _cldice,
    _dice,
    _has_two_labels,
    _hd95,
    _ratio,
    _skeletonize,
    _spacing_array,
    _tree_accuracy,
)

__all__ = [
    "FAST_METRICS",
    "SLOW_METRICS",
    "IncrementalMetrics",
    "SkeletonCache",
    "euler_lut",
    "slow_metrics",
]

#: Keys of :func:`compute_metrics` that :class:`IncrementalMetrics` keeps current.
FAST_METRICS: tuple[str, ...] = (
    "Dice",
    "Precision",
    "Recall",
    "Volume error",
    "Betti-0 error",
    "Betti-1 error",
    "Betti-2 error",
    "Euler error",
    "CCE 3D",
    "CCE 2D",
)
#: Keys of :func:`compute_metrics` that need a full recompute (skeletons, distances).
SLOW_METRICS: tuple[str, ...] = ("clDice", "Tprec", "Tsens", "HD95", "Tree accuracy")

_FG_CONN = {2: 8, 3: 26}
_BG_CONN = {2: 4, 3: 6}


# ----------------------------------------------------------------------------- Euler


def _block_offsets(ndim: int) -> list[tuple[int, ...]]:
    return list(itertools.product((0, 1), repeat=ndim))


def euler_lut(ndim: int) -> np.ndarray:
    """Per-vertex Euler contributions, times ``2**ndim``, of every ``2**ndim`` block.

    Entry ``code`` (bit ``k`` set when the voxel at ``itertools.product((0, 1),
    repeat=ndim)[k]`` of the block is foreground) is ``2**ndim`` times the sum, over the
    cells of the closed-voxel complex incident to the block's centre vertex, of
    ``(-1)**dim(cell) / 2**dim(cell)`` (a k-cell has ``2**k`` vertices). A k-cell
    extending along the axes ``A`` in directions ``s`` is present when any voxel with
    index ``s`` along ``A`` is foreground. Summed over all vertices of the zero-padded
    volume this gives ``2**ndim * chi`` (``V - E + F - C``).

    Parameters
    ----------
    ndim : {2, 3}

    Returns
    -------
    ndarray of int64, shape (2 ** 2 ** ndim,)

    Examples
    --------
    >>> lut = euler_lut(2)
    >>> int(lut[0]), int(lut[1])  # empty block; one pixel: 1 vertex, 2 half-edges, 1/4 face
    (0, 1)
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3; got {ndim!r}.")
    offsets = _block_offsets(ndim)
    n = 1 << len(offsets)
    lut = np.zeros(n, dtype=np.int64)
    scale = 1 << ndim
    for code in range(n):
        block = np.zeros((2,) * ndim, dtype=bool)
        for k, off in enumerate(offsets):
            if code >> k & 1:
                block[off] = True
        total = 0
        for j in range(ndim + 1):
            for axes in itertools.combinations(range(ndim), j):
                for dirs in itertools.product((0, 1), repeat=j):
                    index = [slice(None)] * ndim
                    for a, s in zip(axes, dirs, strict=True):
                        index[a] = s
                    if block[tuple(index)].any():
                        total += (-1) ** j * (scale >> j)
        lut[code] = total
    return lut


_LUTS = {nd: euler_lut(nd) for nd in (2, 3)}


class _Euler:
    """Euler characteristic of a zero-padded bool array, updated by block deltas."""

    def __init__(self, padded: np.ndarray):
        self.padded = padded  # shared with the owner, who writes the changes
        nd = padded.ndim
        self.lut = _LUTS[nd]
        self.scale = 1 << nd
        self.offsets = _block_offsets(nd)
        strides = np.array(padded.strides) // padded.itemsize
        self.flat_offsets = np.array([int(np.dot(o, strides)) for o in self.offsets])
        self.strides = strides
        self.sum = self._full_sum()

    def _full_sum(self) -> int:
        p = self.padded
        inner = tuple(s - 1 for s in p.shape)  # vertices per axis
        code = np.zeros(inner, dtype=np.uint8)
        for k, off in enumerate(self.offsets):
            view = p[tuple(slice(o, o + n) for o, n in zip(off, inner, strict=True))]
            code |= view.view(np.uint8) << np.uint8(k)
        return int(self.lut[code].sum())

    def vertices(self, coords: np.ndarray) -> np.ndarray:
        """Flat (padded-array) indices of the block origins touching voxels ``coords``.

        ``coords`` are (N, ndim) voxel coordinates of the *unpadded* array; the voxel
        sits at ``coords + 1`` in the padded array and in the blocks starting at
        ``coords`` and ``coords + 1`` along each axis.
        """
        base = coords @ self.strides
        vs = (base[:, None] + self.flat_offsets[None, :]).ravel()
        return np.unique(vs)

    def block_sum(self, vertex_flat: np.ndarray) -> int:
        flat = self.padded.reshape(-1)
        code = np.zeros(vertex_flat.shape, dtype=np.int64)
        for k, off in enumerate(self.flat_offsets):
            code |= flat[vertex_flat + off].astype(np.int64) << k
        return int(self.lut[code].sum())

    @property
    def chi(self) -> int:
        return self.sum // self.scale


# ------------------------------------------------------------------ component tracker


def _label(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """``cc3d.connected_components`` (uint32 labels, count) of a bool array.

    Works around two cc3d 3.26 bugs: arrays with two axes of length 1 (e.g.
    ``(1, 1, 5)``, as a window at a volume's corner can be) raise, so thin arrays are
    labelled inside a background frame; and 2D *bool* input with 8-connectivity can
    return stray labels on background pixels (the count is right), so the mask is
    passed as uint8 (a view, no copy).
    """
    mask = np.ascontiguousarray(mask).view(np.uint8)
    if min(mask.shape) < 3:
        padded = np.pad(mask, 1)
        labels, n = cc3d.connected_components(
            padded, connectivity=connectivity, return_N=True, out_dtype=np.uint32
        )
        return np.ascontiguousarray(labels[tuple(slice(1, -1) for _ in mask.shape)]), int(n)
    labels, n = cc3d.connected_components(
        mask, connectivity=connectivity, return_N=True, out_dtype=np.uint32
    )
    return labels, int(n)


def _neighbour_offsets(ndim: int, connectivity: int) -> np.ndarray:
    offs = [o for o in itertools.product((-1, 0, 1), repeat=ndim) if any(o)]
    if connectivity in (6, 4):
        offs = [o for o in offs if sum(map(abs, o)) == 1]
    return np.array(offs, dtype=np.int64)


class _Components:
    """Connected components of a bool array under single-voxel flips.

    ``labels`` holds a label per foreground voxel; the component of a voxel is the
    union-find root of its label (``parent``). ``count`` is the number of components.
    """

    def __init__(self, mask: np.ndarray, connectivity: int):
        self.mask = mask  # owned (the caller may share it but must write through set())
        self.conn = connectivity
        self.shape = np.array(mask.shape, dtype=np.int64)
        self.offsets = _neighbour_offsets(mask.ndim, connectivity)
        self.relabels = 0  # whole-array labellings after the first (for benchmarks)
        self._label_all()

    def _label_all(self) -> None:
        labels, n = _label(self.mask, self.conn)
        self.labels = labels
        self.parent = np.arange(n + 1, dtype=np.int64)
        self.next_label = n + 1
        self.count = int(n)

    # -- union-find ------------------------------------------------------------------

    def _roots(self, labels: np.ndarray) -> np.ndarray:
        r = self.parent[labels]
        while True:
            up = self.parent[r]
            if np.array_equal(up, r):
                return r
            r = up

    def _find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = int(self.parent[root])
        while self.parent[a] != root:  # path compression
            self.parent[a], a = root, int(self.parent[a])
        return root

    def _fresh(self, n: int) -> np.ndarray:
        if self.next_label + n >= np.iinfo(np.uint32).max:
            raise OverflowError("too many labels")
        new = np.arange(self.next_label, self.next_label + n, dtype=np.int64)
        self.parent = np.concatenate([self.parent, new])
        self.next_label += n
        return new

    # -- geometry helpers --------------------------------------------------------------

    def _coords(self, flat: np.ndarray) -> np.ndarray:
        return np.stack(np.unravel_index(flat, self.mask.shape), axis=1)

    def _neighbours(self, coords: np.ndarray) -> np.ndarray:
        """Flat indices of the in-bounds neighbours of ``coords`` (unique)."""
        nb = (coords[:, None, :] + self.offsets[None, :, :]).reshape(-1, coords.shape[1])
        ok = np.all((nb >= 0) & (nb < self.shape), axis=1)
        return np.unique(np.ravel_multi_index(tuple(nb[ok].T), self.mask.shape))

    def _box(self, coords: np.ndarray, margin: int) -> tuple[tuple[slice, ...], np.ndarray, bool]:
        lo = np.maximum(coords.min(axis=0) - margin, 0)
        hi = np.minimum(coords.max(axis=0) + 1 + margin, self.shape)
        whole = bool(np.all(lo == 0) and np.all(hi == self.shape))
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True)), lo, whole

    def _local(self, box) -> tuple[np.ndarray, int]:
        return _label(self.mask[box], self.conn)

    # -- updates -----------------------------------------------------------------------

    def set(self, flat: np.ndarray, values: np.ndarray) -> None:
        """Set ``mask.flat[flat] = values`` (bool) and update the components."""
        old = self.mask.reshape(-1)[flat]
        removed = flat[old & ~values]
        added = flat[~old & values]
        if removed.size:
            self._remove(np.unique(removed))
        if added.size:
            self._add(np.unique(added))

    def _add(self, added: np.ndarray) -> None:
        mflat, lflat = self.mask.reshape(-1), self.labels.reshape(-1)
        mflat[added] = True
        coords = self._coords(added)
        box, lo, _ = self._box(coords, 1)
        loc, _ = self._local(box)
        sub_labels = self.labels[box]
        new_loc = loc[tuple((coords - lo).T)]
        old_sel = (sub_labels > 0) & (loc > 0)
        old_loc = loc[old_sel]
        old_roots = self._roots(sub_labels[old_sel])
        comps = np.unique(new_loc)
        wanted = np.isin(old_loc, comps)
        old_loc, old_roots = old_loc[wanted], old_roots[wanted]
        order = np.argsort(old_loc, kind="stable")
        old_loc, old_roots = old_loc[order], old_roots[order]
        assign = np.zeros(int(comps.max()) + 1, dtype=np.int64)
        for c in comps:
            a, b = np.searchsorted(old_loc, [c, c + 1])
            roots = np.unique(old_roots[a:b])
            if roots.size == 0:
                assign[c] = self._fresh(1)[0]
                self.count += 1
                continue
            target = self._find(int(roots[0]))
            for r in roots[1:]:
                r = self._find(int(r))
                if r != target:
                    self.parent[r] = target
                    self.count -= 1
            assign[c] = target
        lflat[added] = assign[new_loc].astype(np.uint32)

    def _remove(self, removed: np.ndarray) -> None:
        mflat, lflat = self.mask.reshape(-1), self.labels.reshape(-1)
        roots_removed = np.unique(self._roots(lflat[removed]))
        mflat[removed] = False
        lflat[removed] = 0
        seeds = self._neighbours(self._coords(removed))
        seeds = seeds[mflat[seeds]]
        seed_roots = self._roots(lflat[seeds]) if seeds.size else np.zeros(0, np.int64)
        pending: dict[int, np.ndarray] = {}
        pieces: dict[int, int] = {}
        for r in roots_removed:
            r = int(r)
            mine = seeds[seed_roots == r]
            if mine.size == 0:
                self.count -= 1  # the component was erased entirely
            else:
                pending[r] = mine
                pieces[r] = 0
        margin = 2
        while pending:
            coords = self._coords(np.concatenate(list(pending.values())))
            box, lo, whole = self._box(coords, margin)
            loc, n_loc = self._local(box)
            # Local components touching a face of the window that is not the array's
            # border may continue outside it ("open"); the others are closed pieces.
            touching = []
            for ax in range(loc.ndim):
                index = [slice(None)] * loc.ndim
                if box[ax].start > 0:
                    index[ax] = 0
                    touching.append(np.unique(loc[tuple(index)]))
                if box[ax].stop < self.shape[ax]:
                    index[ax] = -1
                    touching.append(np.unique(loc[tuple(index)]))
            is_open = np.zeros(n_loc + 1, dtype=bool)
            if touching and not whole:
                is_open[np.concatenate(touching)] = True
            remap = np.zeros(n_loc + 1, dtype=np.int64)
            for r in list(pending):
                seed_coords = self._coords(pending[r]) - lo
                groups = loc[tuple(seed_coords.T)]
                uniq = np.unique(groups)
                closed = uniq[~is_open[uniq]]
                opened = uniq[is_open[uniq]]
                if closed.size:
                    remap[closed] = self._fresh(closed.size)
                    pieces[r] += int(closed.size)
                if opened.size <= 1:
                    self.count += pieces[r] + int(opened.size) - 1
                    del pending[r]
                else:
                    pending[r] = pending[r][np.isin(groups, opened)]
            if remap.any():
                sel = remap[loc] > 0
                self.labels[box][sel] = remap[loc][sel].astype(np.uint32)
            if whole:
                self.relabels += 1
            margin *= 4


# -------------------------------------------------------------------------- per mask


class _MaskState:
    """Everything the fast metrics need about one binary mask."""

    def __init__(self, mask: np.ndarray, axis: int):
        nd = mask.ndim
        self.padded = np.pad(mask, 1)
        inner = tuple(slice(1, -1) for _ in range(nd))
        self.mask = self.padded[inner]  # view: the foreground, unpadded
        self.n = int(np.count_nonzero(mask))
        self.euler = _Euler(self.padded)
        self.fg = _Components(np.array(mask, dtype=bool, copy=True), _FG_CONN[nd])
        self.bg = _Components(~self.padded, _BG_CONN[nd])
        self.axis = axis
        if nd == 3:
            other = tuple(a for a in range(3) if a != axis)
            self.slice_voxels = np.count_nonzero(mask, axis=other).astype(np.int64)
            self.slice_components = np.zeros(mask.shape[axis], dtype=np.int64)
            for i in np.flatnonzero(self.slice_voxels):
                self.slice_components[i] = self._slice_count(int(i))

    def _slice_count(self, i: int) -> int:
        index = [slice(None)] * 3
        index[self.axis] = i
        return _label(self.mask[tuple(index)], 8)[1]

    @property
    def b0(self) -> int:
        return self.fg.count

    @property
    def b2(self) -> int:
        return self.bg.count - 1 if self.mask.ndim == 3 else 0

    @property
    def chi(self) -> int:
        return self.euler.chi

    def set(self, coords: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Write bool ``values`` at unique voxel ``coords``; returns (flat, old values)."""
        shape = self.mask.shape
        flat = np.ravel_multi_index(tuple(coords.T), shape)
        old = self.fg.mask.reshape(-1)[flat]
        flip = old != values
        if not flip.any():
            return flat[:0], old[:0]
        coords, flat, values, old = coords[flip], flat[flip], values[flip], old[flip]
        self.n += int(np.count_nonzero(values)) - int(np.count_nonzero(old))
        # Euler: remove the old contribution of the touched blocks, add the new one.
        vertices = self.euler.vertices(coords)
        before = self.euler.block_sum(vertices)
        pflat = np.ravel_multi_index(tuple((coords + 1).T), self.padded.shape)
        self.padded.reshape(-1)[pflat] = values
        self.euler.sum += self.euler.block_sum(vertices) - before
        # Components of the foreground (its own copy) and of the padded background.
        self.fg.set(flat, values)
        self.bg.set(pflat, ~values)
        if self.mask.ndim == 3:
            ax = coords[:, self.axis]
            delta = np.where(values, 1, -1)
            self.slice_voxels += np.bincount(ax, weights=delta, minlength=shape[self.axis]).astype(
                np.int64
            )
            for i in np.unique(ax):
                i = int(i)
                self.slice_components[i] = self._slice_count(i) if self.slice_voxels[i] else 0
        return flat, old


def _binary(arr: np.ndarray) -> np.ndarray:
    return arr if arr.dtype == bool else arr > 0


class IncrementalMetrics:
    """The fast metrics of :func:`compute_metrics`, updated stroke by stroke.

    Parameters
    ----------
    pred, gt : (M, N) or (P, M, N) array_like
        Binary masks or label volumes (``> 0`` is foreground), same shape. Copied: later
        changes reach this object only through :meth:`update`.
    spacing : float or sequence of float, optional
        Voxel size (validated and kept for the caller; none of the fast metrics uses it).
    axis : int, optional
        Slicing axis of the mean 2D CCE of a 3D input (default 0).

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.zeros((8, 8, 16), bool); gt[3:5, 3:5, 2:14] = True
    >>> live = IncrementalMetrics(gt, gt)
    >>> live.update((np.array([3, 3, 4, 4]), np.array([3, 4, 3, 4]), np.array([8] * 4)), 0)
    >>> live.values()["Betti-0 error"], live.values()["CCE 3D"]
    (1.0, 1.0)
    """

    def __init__(self, pred, gt, *, spacing: float | Sequence[float] | None = None, axis: int = 0):
        pl = _as_labels(pred, "pred")
        gl = _as_labels(gt, "gt")
        _check_same_shape(pl, gl)
        self.shape = tuple(int(s) for s in pl.shape)
        self.ndim = pl.ndim
        self.spacing = tuple(float(s) for s in _spacing_array(spacing, pl.ndim))
        self.axis = _check_axis(axis, pl.ndim) if pl.ndim == 3 else 0
        p, g = _binary(pl), _binary(gl)
        self._pred = _MaskState(p, self.axis)
        self._gt = _MaskState(g, self.axis)
        self.tp = int(np.count_nonzero(p & g))

    # -- state ------------------------------------------------------------------------

    @property
    def pred(self) -> np.ndarray:
        """The current binary prediction (a read-only view)."""
        view = self._pred.mask.view()
        view.flags.writeable = False
        return view

    @property
    def gt(self) -> np.ndarray:
        """The current binary ground truth (a read-only view)."""
        view = self._gt.mask.view()
        view.flags.writeable = False
        return view

    @property
    def relabels(self) -> int:
        """How many whole-volume relabellings updates needed so far (true splits)."""
        return sum(s.fg.relabels + s.bg.relabels for s in (self._pred, self._gt))

    # -- updates ----------------------------------------------------------------------

    def _coords(self, indices) -> np.ndarray:
        if isinstance(indices, tuple):
            if len(indices) != self.ndim:
                raise ValueError(
                    f"indices must be a tuple of {self.ndim} index arrays (one per axis) or "
                    f"flat indices; got a tuple of {len(indices)}."
                )
            arrays = np.broadcast_arrays(*(np.asarray(i, dtype=np.int64) for i in indices))
            coords = np.stack([a.ravel() for a in arrays], axis=1)
        else:
            flat = np.asarray(indices, dtype=np.int64).ravel()
            if flat.size and (flat.min() < 0 or flat.max() >= math.prod(self.shape)):
                raise ValueError(f"flat indices out of range for shape {self.shape}.")
            coords = np.stack(np.unravel_index(flat, self.shape), axis=1).astype(np.int64)
        coords = coords.reshape(-1, self.ndim)
        if coords.size and (np.any(coords < 0) or np.any(coords >= np.array(self.shape))):
            raise ValueError(
                f"indices out of bounds for shape {self.shape} (negative indices are not accepted)."
            )
        return coords

    def update(self, indices, new_values, *, which: str = "pred") -> None:
        """Apply a change of the prediction (or, with ``which="gt"``, ground truth).

        Parameters
        ----------
        indices : tuple of int arrays, or int array
            Changed voxels: one index array per axis (as ``np.nonzero`` gives), or flat
            (C-order) indices. Voxels listed twice take their last value.
        new_values : scalar or array_like
            New values (labels or bool; ``> 0`` is foreground), broadcast to the indices.
        which : {"pred", "gt"}
        """
        if which not in ("pred", "gt"):
            raise ValueError(f"which must be 'pred' or 'gt'; got {which!r}.")
        coords = self._coords(indices)
        if coords.shape[0] == 0:
            return
        values = np.broadcast_to(np.asarray(new_values), (coords.shape[0],))
        values = values > 0
        # Last write wins for duplicated voxels.
        flat = np.ravel_multi_index(tuple(coords.T), self.shape)
        _, last = np.unique(flat[::-1], return_index=True)
        keep = coords.shape[0] - 1 - last
        coords, values = coords[keep], np.asarray(values)[keep]
        state, other = (self._pred, self._gt) if which == "pred" else (self._gt, self._pred)
        flat, old = state.set(coords, values)
        if flat.size:
            other_on = other.fg.mask.reshape(-1)[flat]
            gained = int(np.count_nonzero(other_on & ~old))
            self.tp += gained - int(np.count_nonzero(other_on & old))

    def update_gt(self, indices, new_values) -> None:
        """Same as ``update(indices, new_values, which="gt")``."""
        self.update(indices, new_values, which="gt")

    # -- results ------------------------------------------------------------------------

    def topology(self, which: str = "pred") -> tuple[int, int, int, int]:
        """``(b0, b1, b2, chi)`` of the prediction or the ground truth."""
        s = self._pred if which == "pred" else self._gt
        return s.b0, s.b0 + s.b2 - s.chi, s.b2, s.chi

    def _cce_2d(self) -> float:
        p, g = self._pred, self._gt
        if self.ndim == 2:
            if p.n == 0 and g.n == 0:
                return 0.0
            return float(abs(p.b0 - g.b0))
        used = (p.slice_voxels > 0) | (g.slice_voxels > 0)
        n_used = np.count_nonzero(used)
        if n_used == 0:
            return 0.0
        diff = p.slice_components - g.slice_components
        return float(np.abs(diff[used]).sum() / n_used)

    def values(self) -> dict[str, float]:
        """The fast metrics, with the keys and values of :func:`compute_metrics`."""
        n_p, n_g, tp = self._pred.n, self._gt.n, self.tp
        b0p, b1p, b2p, chip = self.topology("pred")
        b0g, b1g, b2g, chig = self.topology("gt")
        out = {
            "Dice": _dice(n_p, n_g, tp),
            "Precision": _ratio(tp, n_p),
            "Recall": _ratio(tp, n_g),
            "Volume error": _ratio(n_p - n_g, n_g),
            "Betti-0 error": float(abs(b0p - b0g)),
            "Betti-1 error": float(abs(b1p - b1g)),
            "Betti-2 error": float(abs(b2p - b2g)),
            "Euler error": float(abs(chip - chig)),
            "CCE 3D": float(abs(b0p - b0g)),
            "CCE 2D": self._cce_2d(),
        }
        return {k: float(v) for k, v in out.items()}


# --------------------------------------------------------------------- slow metrics


class SkeletonCache:
    """Remembers the last skeleton per role so an unchanged mask is not thinned again.

    While a user paints the prediction the ground truth stays the same; thinning is the
    most expensive step of the slow metrics, so reusing the ground-truth skeleton halves
    their background recompute. Keys are compared by content (one pass over the mask).
    Not thread-safe: use one cache per worker (or one worker at a time).
    """

    def __init__(self):
        self._masks: dict[str, np.ndarray] = {}
        self._skeletons: dict[str, np.ndarray] = {}
        self.hits = 0

    def skeleton(self, role: str, mask: np.ndarray) -> np.ndarray:
        """Skeleton of bool ``mask``, reused when ``mask`` equals the last one of ``role``."""
        old = self._masks.get(role)
        if old is not None and old.shape == mask.shape and np.array_equal(old, mask):
            self.hits += 1
            return self._skeletons[role]
        skel = _skeletonize(mask)
        self._masks[role] = np.array(mask, copy=True)
        self._skeletons[role] = skel
        return skel


def slow_metrics(
    pred,
    gt,
    *,
    spacing: float | Sequence[float] | None = None,
    cache: SkeletonCache | None = None,
) -> dict[str, float]:
    """The metrics of :data:`SLOW_METRICS`, exactly as :func:`compute_metrics` gives them.

    clDice, Tprec, Tsens, HD95 and, when both inputs hold two or more labels, tree
    accuracy -- the metrics :class:`IncrementalMetrics` does not maintain, for a
    background recompute after the edits settle.

    Parameters
    ----------
    pred, gt : (M, N) or (P, M, N) array_like
        Binary masks or label volumes, same shape.
    spacing : float or sequence of float, optional
        Voxel size for HD95.
    cache : SkeletonCache, optional
        Reuse the skeleton of a mask that has not changed since the last call.

    Returns
    -------
    dict of str to float
    """
    pl = _as_labels(pred, "pred")
    gl = _as_labels(gt, "gt")
    _check_same_shape(pl, gl)
    sp = _spacing_array(spacing, pl.ndim)
    p, g = _binary(pl), _binary(gl)
    if cache is None:
        skel_p, skel_g = _skeletonize(p), _skeletonize(g)
    else:
        skel_p, skel_g = cache.skeleton("pred", p), cache.skeleton("gt", g)
    cl, tprec, tsens = _cldice(p, g, skel_p, skel_g)
    out = {"clDice": cl, "Tprec": tprec, "Tsens": tsens, "HD95": _hd95(p, g, sp)}
    if _has_two_labels(pl) and _has_two_labels(gl):
        out["Tree accuracy"] = _tree_accuracy(pl, gl, skel_g)
    return {k: float(v) for k, v in out.items()}
