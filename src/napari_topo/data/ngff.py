"""OME-Zarr (OME-NGFF) volumes: read lazily, write as a multiscale pyramid, chunk by chunk.

OME-Zarr is the format of large microscopy and micro-CT volumes (light-sheet, cleared
tissue, HiP-CT): a zarr group holding one array per resolution level and ``multiscales``
metadata that names the axes (``t``, ``c``, ``z``, ``y``, ``x`` with their type and unit)
and places every level in the world by a ``scale`` and a ``translation``.

The metadata is read and written by the ``ome-zarr`` package (the OME consortium's own
implementation: :class:`ome_zarr.reader.Reader` parses and validates it, and
:func:`ome_zarr.writer.write_multiscales_metadata` writes it), the arrays by ``zarr``;
nothing here formats NGFF JSON by hand. Install them with
``pip install "napari-topo[ngff]"``.

* :func:`read_ome_zarr` returns every level as a lazy dask array with its
  :class:`~napari_topo.geometry.Geometry` (level 0's ``scale`` and ``translation``,
  composed with the multiscale-wide ones, are the spacing and origin; the axes' types
  and units become ``axes`` and ``unit``);
* :func:`create_ome_zarr` makes an empty level 0 that a producer fills in pieces (e.g.
  :func:`napari_topo.inference.pipeline.predict` with ``out=``), and
  :meth:`OmeZarrTarget.finish` then builds the lower levels block by block and writes
  the metadata: memory is one block, never the volume;
* :func:`write_ome_zarr` does both for an array (numpy, zarr, dask).

Pyramid: every level halves each spatial axis longer than 1 voxel (``ceil(n / 2)``)
until the largest spatial edge is at most :data:`PYRAMID_MIN_EDGE`. Images are
averaged over each 2x2x2 block (edge voxels repeated at an odd border); labels
(``downsample="nearest"``, the default for integer data) keep the first voxel of each
block, so no label value is invented. Level ``k``'s ``scale`` is ``2**k`` times the
spacing; its ``translation`` is the world position of its voxel 0: the centre of the
averaged block for images (``origin + (2**k - 1) / 2 * spacing``), the origin for labels.

NGFF states an axis-aligned placement only. A :class:`Geometry` with flipped or rotated
axes is written with its spacing and origin as ``scale`` and ``translation`` plus the
whole geometry in the group attribute ``napari_topo_geometry``, which :func:`read_ome_zarr`
takes back when it agrees with the NGFF scale and translation (other tools see the
voxels axis-aligned).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..geometry import Geometry

__all__ = [
    "OME_ZARR_CHUNK",
    "PYRAMID_MIN_EDGE",
    "OmeZarrImage",
    "OmeZarrTarget",
    "create_ome_zarr",
    "is_ome_zarr",
    "pyramid_shapes",
    "read_ome_zarr",
    "write_ome_zarr",
]

#: Chunk edge of the spatial axes of OME-Zarr arrays written here (128**3 voxels:
#: 8 MiB of float32, the size OME-Zarr converters commonly use).
OME_ZARR_CHUNK = 128
#: Pyramid levels are added until the largest spatial edge is at most this.
PYRAMID_MIN_EDGE = 256
#: Group attribute with the whole geometry (direction, NIfTI codes) NGFF cannot state.
GEOMETRY_KEY = "napari_topo_geometry"
#: Group attribute saying how the levels were downsampled ("mean" or "nearest").
DOWNSAMPLE_KEY = "napari_topo_downsample"
#: napari-topo's units -> NGFF (UDUNITS-2) names, and back.
_NGFF_UNITS = {
    "um": "micrometer",
    "mm": "millimeter",
    "nm": "nanometer",
    "cm": "centimeter",
    "m": "meter",
}
_UNITS_BACK = {v: k for k, v in _NGFF_UNITS.items()} | {"micron": "um"}
_AXIS_TYPES = {"space": None, "channel": "c", "time": "t"}


def _error(message: str):
    from .io import VolumeReadError

    return VolumeReadError(message)


def _libraries(path) -> tuple[Any, Any]:
    """``(zarr, ome_zarr)`` or a one-line VolumeReadError saying what to install."""
    try:
        import ome_zarr  # noqa: F401
        import ome_zarr.reader  # noqa: F401
        import ome_zarr.writer  # noqa: F401
        import zarr
    except ImportError:
        raise _error(
            f"OME-Zarr needs the ome-zarr package: pip install 'napari-topo[ngff]' (for {path})"
        ) from None
    return zarr, ome_zarr


def _group_attrs(path) -> dict | None:
    """The attributes of the zarr group at ``path`` (zarr v2 or v3), or None."""
    try:
        import zarr
    except ImportError:
        return None
    try:
        node = zarr.open(str(path), mode="r")
    except Exception:  # noqa: BLE001 - not a zarr group: not OME-Zarr
        return None
    if isinstance(node, zarr.Array):
        return None
    return dict(node.attrs)


#: The attribute of a bioformats2raw (the usual OME-Zarr converter) top-level group: its
#: images are the series ``0``, ``1``, ... below it.
BIOFORMATS2RAW_KEY = "bioformats2raw.layout"


def _has_multiscales(attrs: Mapping | None) -> bool:
    return attrs is not None and (
        "multiscales" in attrs or "multiscales" in (attrs.get("ome") or {})
    )


def bioformats2raw_series(path) -> list[str]:
    """The image series (``"0"``, ``"1"``, ...) of a bioformats2raw layout at ``path``,
    in order; [] for any other path."""
    p = Path(os.fspath(path))
    attrs = _group_attrs(p) if p.is_dir() else None
    if attrs is None or _has_multiscales(attrs):
        return []
    if BIOFORMATS2RAW_KEY not in attrs and BIOFORMATS2RAW_KEY not in (attrs.get("ome") or {}):
        return []
    names = [c.name for c in p.iterdir() if c.is_dir() and c.name.isdigit()]
    return [n for n in sorted(names, key=int) if _has_multiscales(_group_attrs(p / n))]


def image_group(path, series: str | None = None) -> Path:
    """The multiscale image group at ``path``: ``path`` itself, or, for a bioformats2raw
    layout, its series ``series`` (default the first, ``"0"``).

    Raises
    ------
    VolumeReadError
        ``series`` given for a plain image, or not a series of the layout.
    """
    p = Path(os.fspath(path))
    names = bioformats2raw_series(p)
    if not names:
        if series is not None:
            raise _error(
                f"key={series!r} given for {p}, but an OME-Zarr image holds one image "
                "(its full resolution is read)."
            )
        return p
    pick = names[0] if series is None else str(series)
    if pick not in names:
        raise _error(f"{p} (bioformats2raw layout) has no image series {pick!r}; it has {names}.")
    return p / pick


def is_ome_zarr(path) -> bool:
    """True when ``path`` is a zarr group with OME-NGFF ``multiscales`` metadata, or a
    bioformats2raw layout of such images (:func:`bioformats2raw_series`).

    Reads the group's attributes only (NGFF 0.4 keeps them at the top, 0.5 under
    ``"ome"``).
    """
    p = Path(os.fspath(path))
    if not p.is_dir():
        return False
    attrs = _group_attrs(p)
    if attrs is None:
        return False
    return _has_multiscales(attrs) or bool(bioformats2raw_series(p))


class OmeZarrImage(NamedTuple):
    """An OME-Zarr image: its levels (lazy) and where each lies.

    Attributes
    ----------
    levels : list of dask.array.Array
        Full resolution first; axes as ``geometries[0].axes``.
    geometries : list of Geometry
        Placement of each level (``geometries[k].spacing`` is level ``k``'s voxel size).
    name : str or None
        The multiscale's ``name``.
    downsample : str or None
        "mean" or "nearest" when napari-topo wrote it, else None.
    """

    levels: list
    geometries: list
    name: str | None = None
    downsample: str | None = None


def _transform(transforms, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, translation)`` of an NGFF coordinateTransformations list (``n`` axes)."""
    scale, shift = np.ones(n), np.zeros(n)
    for t in transforms or ():
        kind = t.get("type")
        if kind == "scale" and "scale" in t:
            s = np.asarray(t["scale"], dtype=float)
            scale, shift = scale * s, shift * s
        elif kind == "translation" and "translation" in t:
            shift = shift + np.asarray(t["translation"], dtype=float)
        elif kind != "identity":
            raise ValueError(f"coordinate transformation {t!r} is not supported")
    return scale, shift


def read_ome_zarr(path, series: str | None = None) -> OmeZarrImage:
    """Read an OME-Zarr multiscale image lazily with the placement of every level.

    Parameters
    ----------
    path : str or PathLike
        The image group (``.ome.zarr`` folder, or any zarr group with ``multiscales``), or
        a bioformats2raw layout (the converter's output: images ``0``, ``1``, ... under a
        group marked ``bioformats2raw.layout``).
    series : str, optional
        For a bioformats2raw layout, which image (default ``"0"``, the first).

    Returns
    -------
    OmeZarrImage
        ``levels`` (dask arrays read through :class:`ome_zarr.reader.Reader`; nothing is
        loaded) and one :class:`Geometry` per level: ``axes`` from the axes' types
        (space -> ``z``, ``y``, ``x`` in order; channel -> ``c``; time -> ``t``),
        spacing and origin from the dataset's ``scale`` and ``translation`` composed
        with the multiscale-wide transformation, ``unit`` from the spatial axes
        (``micrometer`` -> ``"um"``), ``known`` "full" with a translation and "spacing"
        without. A ``napari_topo_geometry`` attribute (written by :func:`write_ome_zarr`
        for flipped or oblique axes) is used when it agrees with the NGFF values.

    Raises
    ------
    VolumeReadError
        Not OME-Zarr, invalid metadata, an axis type napari-topo does not know, or
        ``ome-zarr`` not installed; one line naming the path.
    """
    p = image_group(Path(os.fspath(path)).expanduser(), series)
    zarr, _ = _libraries(p)
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    try:
        # ome-zarr logs "version mismatch" for every NGFF 0.4 image it then reads
        # correctly as 0.4: a stray stderr line before the one-line results
        from .io import quiet_logger

        with quiet_logger("ome_zarr.io"):
            loc = parse_url(str(p), mode="r")
        if loc is None or "multiscales" not in loc.root_attrs:
            raise _error(f"{p} is not an OME-Zarr image (no 'multiscales' metadata).")
        node = next(iter(Reader(loc)()))
        if node.load(Multiscales) is None:
            raise _error(f"{p} is not an OME-Zarr image (no 'multiscales' metadata).")
        levels = list(node.data)
        multiscale = loc.root_attrs["multiscales"][0]
        axes_meta = node.metadata.get("axes") or [
            {"name": a, "type": "space"} for a in "zyx"[-levels[0].ndim :]
        ]
        datasets = multiscale["datasets"]
        outer = multiscale.get("coordinateTransformations")
    except Exception as exc:  # noqa: BLE001 - library failures are "cannot read"
        from .io import VolumeReadError, _one_line

        if isinstance(exc, VolumeReadError):
            raise
        raise _error(f"cannot read {p} as OME-Zarr ({_one_line(exc)}).") from exc
    axes, unit = "", None
    n_space = sum(1 for a in axes_meta if a.get("type") == "space")
    if n_space > 3 or len(axes_meta) != levels[0].ndim:
        raise _error(f"cannot read {p}: {len(axes_meta)} axes {axes_meta} not supported.")
    space_letters = iter("zyx"[-n_space:] if n_space else "")
    for a in axes_meta:
        kind = a.get("type")
        if kind not in _AXIS_TYPES:
            raise _error(
                f"cannot read {p}: axis {a.get('name')!r} of type {kind!r} is not supported "
                "(space, channel and time are)."
            )
        axes += _AXIS_TYPES[kind] or next(space_letters)
        if kind == "space" and a.get("unit"):
            from .io import _unit

            unit = _UNITS_BACK.get(str(a["unit"]).lower()) or _unit(a["unit"])
    space = [i for i, ch in enumerate(axes) if ch in "zyx"]
    attrs = _group_attrs(p) or {}
    geometries = []
    try:
        for ds in datasets:
            scale, shift = _transform(ds.get("coordinateTransformations"), len(axes))
            if outer:
                s2, t2 = _transform(outer, len(axes))
                scale, shift = scale * s2, shift * s2 + t2
            stated_shift = any(
                t.get("type") == "translation"
                for t in (ds.get("coordinateTransformations") or []) + list(outer or [])
            )
            geometries.append(
                Geometry.from_spacing(
                    scale[space],
                    shift[space],
                    axes=axes,
                    unit=unit,
                    known="full" if stated_shift else "spacing",
                )
            )
    except ValueError as exc:
        raise _error(f"cannot read {p} as OME-Zarr (coordinate transformations: {exc}).") from None
    from .io import _geometry_or_none

    stored = _geometry_or_none(attrs.get(GEOMETRY_KEY), len(axes))
    if stored is not None and stored.ndim == geometries[0].ndim:
        g0 = geometries[0]
        if np.allclose(stored.spacing, g0.spacing, rtol=1e-6) and np.allclose(
            stored.origin, g0.origin, rtol=1e-6, atol=1e-9
        ):
            geometries[0] = stored
    return OmeZarrImage(levels, geometries, multiscale.get("name"), attrs.get(DOWNSAMPLE_KEY))


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
def _factors(shape: Sequence[int], axes: str) -> tuple[int, ...]:
    """Downsampling factor per axis from one level to the next: 2 on spatial axes > 1."""
    return tuple(2 if ch in "zyx" and n > 1 else 1 for n, ch in zip(shape, axes, strict=True))


def pyramid_shapes(
    shape: Sequence[int], axes: str, levels: int | None = None
) -> list[tuple[int, ...]]:
    """Shapes of the pyramid levels of an array of ``shape`` (``axes`` letters).

    ``levels`` None: halve (``ceil(n / 2)``) every spatial axis longer than 1 until the
    largest spatial edge is at most :data:`PYRAMID_MIN_EDGE` (at least one level).

    Examples
    --------
    >>> pyramid_shapes((600, 300, 40), "zyx")
    [(600, 300, 40), (300, 150, 20)]
    >>> pyramid_shapes((2, 64, 64, 64), "czyx", levels=3)
    [(2, 64, 64, 64), (2, 32, 32, 32), (2, 16, 16, 16)]
    """
    shapes = [tuple(int(s) for s in shape)]
    space = [i for i, ch in enumerate(axes) if ch in "zyx"]

    def more() -> bool:
        if levels is not None:
            return len(shapes) < levels
        return max((shapes[-1][i] for i in space), default=0) > PYRAMID_MIN_EDGE

    while more():
        f = _factors(shapes[-1], axes)
        if all(v == 1 for v in f):
            break
        shapes.append(tuple(-(-n // k) for n, k in zip(shapes[-1], f, strict=True)))
    return shapes


def _chunks_for(shape: Sequence[int], axes: str, chunk: int) -> tuple[int, ...]:
    return tuple(
        min(int(chunk), max(int(n), 1)) if ch in "zyx" else 1
        for n, ch in zip(shape, axes, strict=True)
    )


def _ngff_axes(geometry: Geometry) -> list[dict]:
    out = []
    for ch in geometry.axes:
        if ch in "zyx":
            a = {"name": ch, "type": "space"}
            if geometry.unit and geometry.unit in _NGFF_UNITS:
                a["unit"] = _NGFF_UNITS[geometry.unit]
        elif ch == "c":
            a = {"name": "c", "type": "channel"}
        elif ch == "t":
            a = {"name": "t", "type": "time"}
        else:
            raise ValueError(
                f"OME-Zarr holds t, c, z, y, x axes; got axes {geometry.axes!r} (RGB samples "
                "are not an OME-Zarr axis): write .zarr or .tif instead."
            )
        out.append(a)
    order = "tczyx"
    if [order.index(ch) for ch in geometry.axes] != sorted(order.index(ch) for ch in geometry.axes):
        raise ValueError(
            f"OME-Zarr needs its axes in t, c, z, y, x order; got {geometry.axes!r}: "
            "transpose the array first."
        )
    return out


def _level_transforms(geometry: Geometry, level: int, downsample: str, factors) -> list[dict]:
    """NGFF scale + translation of pyramid ``level`` (all axes, level 0's geometry)."""
    spacing = dict(zip(geometry.spatial_axes, geometry.spacing, strict=True))
    origin = dict(zip(geometry.spatial_axes, geometry.origin, strict=True))
    scale, shift = [], []
    for i in range(len(geometry.axes)):
        k = factors[i] ** level
        if i in spacing:
            scale.append(float(spacing[i] * k))
            off = (k - 1) / 2.0 if downsample == "mean" else 0.0
            shift.append(float(origin[i] + off * spacing[i]))
        else:
            scale.append(1.0)
            shift.append(0.0)
    return [{"type": "scale", "scale": scale}, {"type": "translation", "translation": shift}]


def _downsample_block(block: np.ndarray, factors, target_shape, method: str, dtype) -> np.ndarray:
    """One output block of the next level from the input block covering it."""
    if method == "nearest":
        return np.ascontiguousarray(block[tuple(slice(None, None, f) for f in factors)])
    pad = [(0, t * f - n) for t, f, n in zip(target_shape, factors, block.shape, strict=True)]
    if any(p[1] for p in pad):
        block = np.pad(block, pad, mode="edge")
    shape = []
    for t, f in zip(target_shape, factors, strict=True):
        shape += [t, f]
    mean = block.reshape(shape).mean(axis=tuple(range(1, 2 * len(factors), 2)), dtype=np.float64)
    if np.dtype(dtype).kind in "iub":
        info = np.iinfo(dtype) if np.dtype(dtype).kind != "b" else None
        mean = np.rint(mean)
        if info is not None:
            mean = np.clip(mean, info.min, info.max)
    return mean.astype(dtype)


def _downsample_region(prev, in_sl, out_sl, factors, method: str) -> np.ndarray:
    """One output chunk of the next level, reading ``prev[in_sl]`` one chunk at a time.

    The region under an output chunk (``2**n`` chunks of ``prev`` when the chunks are the
    same size) is cut at ``prev``'s chunk borders where they fall on a multiple of the
    factor, so each piece maps onto whole output voxels; each piece is read, reduced
    (:func:`_downsample_block`) and placed. Equal to reducing the whole region at once.
    """
    target = tuple(o.stop - o.start for o in out_sl)
    cuts = []
    for sl, f, c in zip(in_sl, factors, prev.chunks, strict=True):
        if c % f:  # a chunk border inside a block of f voxels: do not cut this axis
            cuts.append([(sl.start, sl.stop)])
            continue
        edges = [sl.start, *range(sl.start - sl.start % c + c, sl.stop, c), sl.stop]
        cuts.append(list(itertools.pairwise(edges)))
    out = np.empty(target, prev.dtype)
    for piece in itertools.product(*cuts):
        src = tuple(slice(a, b) for a, b in piece)
        dst = tuple(
            slice((a - sl.start) // f, -(-(b - sl.start) // f))
            for (a, b), sl, f in zip(piece, in_sl, factors, strict=True)
        )
        sub_target = tuple(d.stop - d.start for d in dst)
        out[dst] = _downsample_block(np.asarray(prev[src]), factors, sub_target, method, prev.dtype)
    return out


class OmeZarrTarget:
    """An OME-Zarr image being written: fill :attr:`level0`, then :meth:`finish`.

    Made by :func:`create_ome_zarr`. Until :meth:`finish` writes the ``multiscales``
    metadata the folder is a plain zarr group (readers do not take it for an image).
    """

    def __init__(
        self, path: Path, group, level0, geometry: Geometry, downsample: str, levels, chunk
    ):
        self.path = path
        self.chunk = int(chunk)
        self.group = group
        self.level0 = level0
        self.geometry = geometry
        self.downsample = downsample
        self.levels = levels

    def finish(self, *, name: str | None = None) -> Path:
        """Build the lower levels from level 0 block by block and write the metadata.

        Each output chunk of level ``k + 1`` is computed from the level-``k`` block
        under it, one level-``k`` chunk at a time (:func:`_downsample_region`), so memory
        stays about two chunks.

        Returns
        -------
        Path
            The image folder.
        """
        from ome_zarr.format import CurrentFormat
        from ome_zarr.writer import write_multiscales_metadata

        axes = self.geometry.axes
        shapes = pyramid_shapes(self.level0.shape, axes, self.levels)
        prev = self.level0
        arrays = [prev]
        for k in range(1, len(shapes)):
            shape = shapes[k]
            factors = _factors(prev.shape, axes)
            arr = self.group.create_array(
                f"s{k}",
                shape=shape,
                chunks=_chunks_for(shape, axes, self.chunk),
                dtype=prev.dtype,
                fill_value=0,
                dimension_names=list(axes) if self.group.metadata.zarr_format == 3 else None,
            )
            grid = [range(0, n, c) for n, c in zip(shape, arr.chunks, strict=True)]
            for starts in itertools.product(*grid):
                out_sl = tuple(
                    slice(s, min(s + c, n))
                    for s, c, n in zip(starts, arr.chunks, shape, strict=True)
                )
                in_sl = tuple(
                    slice(o.start * f, min(o.stop * f, n))
                    for o, f, n in zip(out_sl, factors, prev.shape, strict=True)
                )
                arr[out_sl] = _downsample_region(prev, in_sl, out_sl, factors, self.downsample)
            arrays.append(arr)
            prev = arr
        all_factors = _factors(self.level0.shape, axes)
        datasets = [
            {
                "path": f"s{k}",
                "coordinateTransformations": _level_transforms(
                    self.geometry, k, self.downsample, all_factors
                ),
            }
            for k in range(len(arrays))
        ]
        fmt = CurrentFormat()
        write_multiscales_metadata(
            self.group,
            datasets=datasets,
            fmt=fmt,
            axes=_ngff_axes(self.geometry),
            name=name or self.path.name.split(".")[0],
        )
        self.group.attrs[GEOMETRY_KEY] = self.geometry.to_dict()
        self.group.attrs[DOWNSAMPLE_KEY] = self.downsample
        return self.path


def _downsample_method(dtype, downsample: str | None) -> str:
    if downsample is None or downsample == "auto":
        return "mean" if np.dtype(dtype).kind == "f" else "nearest"
    if downsample not in ("mean", "nearest"):
        raise ValueError(f"downsample must be 'auto', 'mean' or 'nearest'; got {downsample!r}.")
    return downsample


def create_ome_zarr(
    path,
    shape: Sequence[int],
    dtype,
    geometry: Geometry,
    *,
    downsample: str | None = "auto",
    chunk: int = OME_ZARR_CHUNK,
    levels: int | None = None,
) -> OmeZarrTarget:
    """Create an OME-Zarr image whose full-resolution array is filled by the caller.

    Parameters
    ----------
    path : str or PathLike
        The folder to create (``.ome.zarr``); an existing one is replaced.
    shape : sequence of int
        Level 0's shape, axes as ``geometry.axes`` (t, c, z, y, x order).
    dtype : numpy dtype
        bool is stored as uint8.
    geometry : Geometry
        Placement of level 0 (see the module docstring for flipped or oblique axes).
    downsample : {"auto", "mean", "nearest"}
        How lower levels are made; "auto": mean for float data, nearest for integers.
    chunk : int
        Chunk edge along the spatial axes (1 along channel and time).
    levels : int, optional
        Number of pyramid levels (default: down to :data:`PYRAMID_MIN_EDGE`).

    Returns
    -------
    OmeZarrTarget
        ``target.level0[...] = block`` in any order, then ``target.finish()``.

    Raises
    ------
    ValueError
        Axes OME-Zarr cannot hold (RGB samples, an order other than t, c, z, y, x).
    VolumeReadError
        ``ome-zarr``/``zarr`` not installed, or the folder cannot be written.
    """
    p = Path(os.fspath(path)).expanduser()
    zarr, _ = _libraries(p)
    from ome_zarr.format import CurrentFormat

    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(np.uint8 if np.dtype(dtype).kind == "b" else dtype)
    if len(shape) != len(geometry.axes):
        raise ValueError(
            f"geometry has axes {geometry.axes!r} but the data has {len(shape)} axes {shape}."
        )
    _ngff_axes(geometry)  # refuses axes OME-Zarr cannot hold, before anything is written
    method = _downsample_method(dtype, downsample)
    fmt = CurrentFormat()
    try:
        group = zarr.open_group(str(p), mode="w", zarr_format=fmt.zarr_format)
        level0 = group.create_array(
            "s0",
            shape=shape,
            chunks=_chunks_for(shape, geometry.axes, chunk),
            dtype=dtype,
            fill_value=0,
            dimension_names=list(geometry.axes) if fmt.zarr_format == 3 else None,
        )
    except Exception as exc:  # noqa: BLE001
        from .io import _one_line

        raise _error(f"cannot write {p} as OME-Zarr ({_one_line(exc)}).") from exc
    return OmeZarrTarget(p, group, level0, geometry, method, levels, chunk)


def write_ome_zarr(
    path,
    data,
    geometry: Geometry,
    *,
    downsample: str | None = "auto",
    chunk: int = OME_ZARR_CHUNK,
    levels: int | None = None,
) -> Path:
    """Write ``data`` as an OME-Zarr multiscale image, a slab of chunks at a time.

    ``data`` (numpy, zarr, dask, memmap) is read one slab of ``chunk`` planes along its
    first spatial axis at a time, so a lazy source is never held whole. Parameters as
    :func:`create_ome_zarr`.

    Returns
    -------
    Path
        The image folder.
    """
    if not (hasattr(data, "shape") and hasattr(data, "dtype")):
        data = np.asarray(data)
    shape = tuple(int(s) for s in data.shape)
    target = create_ome_zarr(
        path, shape, data.dtype, geometry, downsample=downsample, chunk=chunk, levels=levels
    )
    arr = target.level0
    ax = geometry.spatial_axes[0] if geometry.spatial_axes else 0
    step = arr.chunks[ax]
    for start in range(0, shape[ax], step):
        sl = [slice(None)] * len(shape)
        sl[ax] = slice(start, min(start + step, shape[ax]))
        block = np.asarray(data[tuple(sl)])
        arr[tuple(sl)] = block.astype(arr.dtype, copy=False)
    return target.finish()
