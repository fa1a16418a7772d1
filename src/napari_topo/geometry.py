"""Where the voxels are: one geometry model for every file, layer and comparison.

A :class:`Geometry` says, for an array read from a file (or held by a napari layer),

* which of its axes are space (``z``, ``y``, ``x``), and which are channels (``c``),
  time points (``t``) or RGB(A) samples (``s``): ``axes``, one letter per array axis;
* where each voxel lies in the world: ``affine``, an ``(n + 1, n + 1)`` matrix (``n``
  spatial axes, 3 for a volume) taking a voxel index, in the array's order of its
  spatial axes, to world coordinates in napari's order. For NIfTI the world is the
  scanner's RAS+ space with the axes reversed (``S, A, R``), so a file with an identity
  affine has ``affine == diag(spacing, 1)`` here, and napari's ``scale``/``translate``
  are its diagonal and last column;
* how much of that the file stated (``known``): ``"full"`` (spacing, origin and
  direction), ``"spacing"`` (the voxel size only; origin 0 and axes along the world's
  are assumed) or ``"none"`` (nothing: unit voxels at the origin);
* the length unit (``unit``, e.g. ``"mm"`` or ``"um"``) and, for NIfTI, the
  qform/sform codes, so a file written from it says what the input said.

Comparisons go through :func:`align`: two arrays on the same grid up to axis flips and
permutations (the same voxels stored in another order, e.g. a LAS and a RAS file) are
brought onto one grid with nibabel's orientation tools (``io_orientation``,
``ornt_transform``, ``inv_ornt_aff``); anything else (another origin, spacing, shape,
or an oblique rotation) is refused with a one-line :class:`GeometryError` that names
the difference. Nothing here resamples: a wrong number is never computed silently.

Only numpy and nibabel (imported when used); no Qt, no napari (napari layers are read
duck-typed by :func:`layer_geometry`).

Examples
--------
>>> g = Geometry.from_spacing((2.0, 0.5, 0.5), origin=(40.0, -12.5, 7.0))
>>> g.spacing, g.origin, g.layer_kwargs()["translate"]
((2.0, 0.5, 0.5), (40.0, -12.5, 7.0), (40.0, -12.5, 7.0))
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "KNOWN",
    "Aligned",
    "Geometry",
    "GeometryError",
    "align",
    "canonical_orientation",
    "compare",
    "compare_layers",
    "displayed",
    "geometry_from_layer_meta",
    "layer_geometry",
    "layer_length_unit",
    "napari_units",
    "file_geometry",
    "reader_flips",
    "reorient",
    "select_channel",
    "shape_mismatch",
    "volume_refusal",
    "writable",
]

#: Letters of spatial axes, in napari-topo's order.
SPACE = "zyx"
#: Letters of the other axes: channel, time, RGB(A) sample.
OTHER = {"c": "channel", "t": "time", "s": "RGB(A) sample"}
#: What a file may state about placement, from least to most.
KNOWN = ("none", "spacing", "full")
#: Relative tolerance on spacing (NIfTI stores float32: ~1e-7; 1e-4 leaves room for
#: round trips through other tools).
SPACING_RTOL = 1e-4
#: Tolerance on origins, as a fraction of the smallest voxel edge.
ORIGIN_VOXELS = 1e-2
#: Tolerance on direction cosines.
DIRECTION_ATOL = 1e-4
#: Length units napari-topo converts between (metres per unit).
METRES_PER_UNIT = {"m": 1.0, "cm": 1e-2, "mm": 1e-3, "um": 1e-6, "nm": 1e-9}


class GeometryError(ValueError):
    """Two volumes are not on the same grid, or an axis cannot be chosen (one line)."""


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def _default_axes(n: int) -> str:
    if n <= 3:
        return SPACE[-n:] if n > 0 else ""
    return "tczyx"[-n:] if n <= 5 else "q" * (n - 3) + SPACE


def _clean(value: float) -> float:
    """The shortest decimal of ``value`` as float32 when that is the same float32.

    NIfTI headers hold float32: 0.6 comes back as 0.6000000238418579; this gives 0.6
    back (what was written) and leaves float64-only values alone.
    """
    v = float(value)
    f32 = np.float32(v)
    if not math.isfinite(v) or abs(float(f32) - v) > 1e-6 * max(abs(v), 1e-30):
        return v
    short = float(str(f32))
    return short if np.float32(short) == f32 else v


# --------------------------------------------------------------------------------------
# the value type
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class Geometry:
    """Axes and world placement of an array (see the module docstring).

    Attributes
    ----------
    affine : (n + 1, n + 1) ndarray of float
        Voxel index of the ``n`` spatial axes (array order) -> world coordinates
        (napari order). Read-only.
    axes : str
        One letter per array axis: ``z``, ``y``, ``x`` (space, in this order among
        themselves), ``c`` (channel), ``t`` (time), ``s`` (RGB(A) sample).
    unit : str or None
        Length unit of the world coordinates, if stated.
    known : {"none", "spacing", "full"}
        What the source stated (see :data:`KNOWN`).
    nifti_codes : (int, int) or None
        NIfTI ``(qform_code, sform_code)`` of the file read, written back as they were.
    nifti_qform : (n + 1, n + 1) ndarray or None
        A NIfTI file's qform, in this class's axis order, when it differs from the
        ``affine`` (its sform, which nibabel places the voxels by): written back as the
        qform, so that a viewer that reads the qform (ITK-based ones) overlays the
        outputs as it shows the input. Dropped by :meth:`replace` when the affine
        changes. Not part of equality.
    """

    affine: np.ndarray
    axes: str
    unit: str | None = None
    known: str = "full"
    nifti_codes: tuple[int, int] | None = None
    nifti_qform: np.ndarray | None = None

    def __post_init__(self):
        a = np.array(self.affine, dtype=float)
        n = sum(ch in SPACE for ch in self.axes)
        if a.shape != (n + 1, n + 1):
            raise ValueError(
                f"affine must be {(n + 1, n + 1)} for axes {self.axes!r}; got shape {a.shape}."
            )
        if any(ch not in SPACE and ch not in OTHER for ch in self.axes) or any(
            self.axes.count(ch) > 1 for ch in self.axes
        ):
            raise ValueError(f"axes must be distinct letters of 'zyxcts'; got {self.axes!r}.")
        space = "".join(ch for ch in self.axes if ch in SPACE)
        if space != SPACE[-n:] if n else space != "":
            raise ValueError(f"spatial axes must come in z, y, x order; got {self.axes!r}.")
        if not np.all(np.isfinite(a)) or not np.allclose(a[n], np.eye(n + 1)[n]):
            raise ValueError(
                f"affine must be finite with last row (0, ..., 0, 1); got {a.tolist()}"
            )
        if n and abs(np.linalg.det(a[:n, :n])) < 1e-12:
            raise ValueError(f"affine is singular (a zero spacing?): {a.tolist()}")
        if self.known not in KNOWN:
            raise ValueError(f"known must be one of {KNOWN}; got {self.known!r}.")
        a.setflags(write=False)
        object.__setattr__(self, "affine", a)
        if self.nifti_qform is not None:
            q = np.array(self.nifti_qform, dtype=float)
            if q.shape != a.shape or not np.all(np.isfinite(q)):
                raise ValueError(f"nifti_qform must be a finite {a.shape} matrix; got {q.shape}.")
            q.setflags(write=False)
            object.__setattr__(self, "nifti_qform", q)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def identity(cls, ndim_or_axes: int | str = 3) -> Geometry:
        """Unit voxels at the origin, nothing stated (``known="none"``)."""
        axes = ndim_or_axes if isinstance(ndim_or_axes, str) else _default_axes(int(ndim_or_axes))
        n = sum(ch in SPACE for ch in axes)
        return cls(np.eye(n + 1), axes, known="none")

    @classmethod
    def from_spacing(
        cls,
        spacing: Sequence[float] | None,
        origin: Sequence[float] | None = None,
        *,
        axes: str | None = None,
        unit: str | None = None,
        known: str | None = None,
    ) -> Geometry:
        """Axis-aligned geometry: ``world = origin + index * spacing``.

        ``known`` defaults to ``"full"`` with an origin, ``"spacing"`` with a spacing
        only and ``"none"`` with neither.
        """
        if axes is None:
            n = len(spacing) if spacing is not None else len(origin) if origin is not None else 3
            axes = _default_axes(n)
        n = sum(ch in SPACE for ch in axes)
        a = np.eye(n + 1)
        if spacing is not None:
            sp = [float(s) for s in spacing]
            if len(sp) != n or not all(math.isfinite(s) and s > 0 for s in sp):
                raise ValueError(
                    f"spacing must be {n} finite positive numbers; got {tuple(spacing)!r}."
                )
            a[:n, :n] = np.diag(sp)
        if origin is not None:
            o = [float(v) for v in origin]
            if len(o) != n or not all(math.isfinite(v) for v in o):
                raise ValueError(f"origin must be {n} finite numbers; got {tuple(origin)!r}.")
            a[:n, n] = o
        if known is None:
            known = "full" if origin is not None else "spacing" if spacing is not None else "none"
        return cls(a, axes, unit=unit, known=known)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Geometry:
        """Inverse of :meth:`to_dict` (JSON: zarr attributes, TIFF metadata, summaries)."""
        codes = d.get("nifti_codes")
        return cls(
            np.asarray(d["affine"], dtype=float),
            str(d["axes"]),
            unit=d.get("unit"),
            known=str(d.get("known", "full")),
            nifti_codes=None if codes is None else (int(codes[0]), int(codes[1])),
            nifti_qform=None if d.get("nifti_qform") is None else np.asarray(d["nifti_qform"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (``affine`` as nested lists)."""
        out: dict[str, Any] = {
            "affine": self.affine.tolist(),
            "axes": self.axes,
            "known": self.known,
        }
        if self.unit:
            out["unit"] = self.unit
        if self.nifti_codes is not None:
            out["nifti_codes"] = list(self.nifti_codes)
        if self.nifti_qform is not None:
            out["nifti_qform"] = self.nifti_qform.tolist()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def replace(self, **changes) -> Geometry:
        """A copy with some fields changed (``dataclasses.replace``); a new ``affine``
        drops ``nifti_qform`` (unless given): it described the old grid."""
        if "affine" in changes and "nifti_qform" not in changes:
            changes["nifti_qform"] = None
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ properties
    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return self.affine.shape[0] - 1

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        """Indices of the spatial axes in the array."""
        return tuple(i for i, ch in enumerate(self.axes) if ch in SPACE)

    @property
    def other_axes(self) -> tuple[int, ...]:
        """Indices of the channel/time/sample axes in the array."""
        return tuple(i for i, ch in enumerate(self.axes) if ch not in SPACE)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel edge per spatial axis (array order): the affine's column norms."""
        n = self.ndim
        return tuple(_clean(v) for v in np.linalg.norm(self.affine[:n, :n], axis=0))

    @property
    def origin(self) -> tuple[float, ...]:
        """World coordinates of voxel 0 (the centre of the first voxel)."""
        n = self.ndim
        return tuple(_clean(v) for v in self.affine[:n, n])

    @property
    def direction(self) -> np.ndarray:
        """``(n, n)`` unit columns: the world direction of each array axis."""
        n = self.ndim
        return self.affine[:n, :n] / np.asarray(self.spacing)

    @property
    def is_axis_aligned(self) -> bool:
        """True when every array axis runs along one world axis (flips allowed)."""
        d = np.abs(self.direction)
        return bool(np.allclose(np.sort(d, axis=0)[-1], 1.0, atol=DIRECTION_ATOL))

    @property
    def is_plain(self) -> bool:
        """True when the direction is the identity (napari scale + translate suffice)."""
        return bool(np.allclose(self.direction, np.eye(self.ndim), atol=DIRECTION_ATOL))

    def with_spacing(self, spacing: Sequence[float]) -> Geometry:
        """The same origin and direction with another voxel size (``--spacing``)."""
        sp = [float(s) for s in spacing]
        n = self.ndim
        if len(sp) != n or not all(math.isfinite(s) and s > 0 for s in sp):
            raise ValueError(f"spacing must be {n} finite positive numbers; got {tuple(spacing)}.")
        a = self.affine.copy()
        a[:n, :n] = self.direction * np.asarray(sp)
        known = "spacing" if self.known == "none" else self.known
        return self.replace(affine=a, known=known)

    def cropped(self, start: Sequence[float]) -> Geometry:
        """The geometry of a crop from voxel ``start`` on (spatial axes, array order):
        voxel ``i`` of the crop lies where voxel ``start + i`` of this grid lies (the
        origin moves to :meth:`world` of ``start``; spacing and direction are kept)."""
        a = self.affine.copy()
        a[: self.ndim, self.ndim] = self.world(start)
        return self.replace(affine=a)

    def spatial(self) -> Geometry:
        """This geometry for the spatial axes alone (after a channel was chosen)."""
        return self.replace(axes="".join(ch for ch in self.axes if ch in SPACE))

    def world(self, index) -> np.ndarray:
        """World coordinates of voxel indices ``(..., n)`` (spatial axes, array order)."""
        idx = np.asarray(index, dtype=float)
        n = self.ndim
        return idx @ self.affine[:n, :n].T + self.affine[:n, n]

    def voxel(self, world) -> np.ndarray:
        """Voxel indices (float, ``(..., n)``, array order) of world coordinates: the
        inverse of :meth:`world`."""
        w = np.asarray(world, dtype=float)
        n = self.ndim
        inv = np.linalg.inv(self.affine)
        return w @ inv[:n, :n].T + inv[:n, n]

    def in_unit(self, unit: str | None) -> Geometry:
        """The same placement with world coordinates in ``unit`` (``"mm"``, ``"um"``, ...).

        Unchanged when either unit is unknown or they are the same; otherwise the
        affine (voxel size and origin) is scaled by the ratio of the units
        (:data:`METRES_PER_UNIT`).

        Raises
        ------
        ValueError
            A unit napari-topo does not know how to convert.
        """
        if unit is None or self.unit is None or unit == self.unit:
            return self
        for u in (unit, self.unit):
            if u not in METRES_PER_UNIT:
                raise ValueError(
                    f"cannot convert lengths between {self.unit!r} and {unit!r}; known "
                    f"units: {', '.join(METRES_PER_UNIT)}."
                )
        factor = METRES_PER_UNIT[self.unit] / METRES_PER_UNIT[unit]
        a = self.affine.copy()
        a[: self.ndim, :] *= factor
        return self.replace(affine=a, unit=unit)

    def describe(self) -> str:
        """A short text: spacing, origin, direction and unit."""
        unit = f" {self.unit}" if self.unit else ""
        text = f"spacing {_fmt(self.spacing)}{unit}, origin {_fmt(self.origin)}"
        if not self.is_plain:
            text += f", axes along {orientation_codes(self)}"
        return text

    def layer_kwargs(self) -> dict[str, Any]:
        """napari layer ``scale``, ``translate`` (and ``affine``) for this placement.

        ``scale`` is always the spacing (positive, what widgets use as voxel size). When
        the direction is the identity the origin is the ``translate``; otherwise the
        direction and origin go to ``affine`` (``world = affine @ (scale * index)``)
        and ``translate`` is 0.
        """
        n = self.ndim
        if self.is_plain:
            return {"scale": self.spacing, "translate": self.origin}
        aff = np.eye(n + 1)
        aff[:n, :n] = self.direction
        aff[:n, n] = self.affine[:n, n]
        return {"scale": self.spacing, "translate": (0.0,) * n, "affine": aff}

    def __repr__(self) -> str:
        return (
            f"Geometry(axes={self.axes!r}, known={self.known!r}, {self.describe()}"
            + (f", nifti_codes={self.nifti_codes}" if self.nifti_codes else "")
            + ")"
        )

    def __eq__(self, other) -> bool:
        if not isinstance(other, Geometry):
            return NotImplemented
        return (
            self.axes == other.axes
            and self.known == other.known
            and self.unit == other.unit
            and np.allclose(self.affine, other.affine, rtol=1e-9, atol=1e-9)
        )

    __hash__ = None  # type: ignore[assignment]


def orientation_codes(geometry: Geometry) -> str:
    """Direction of each array axis as world letters: ``"+z+y-x"`` style."""
    from nibabel.orientations import io_orientation

    n = geometry.ndim
    ornt = io_orientation(geometry.affine)
    letters = SPACE[-n:]
    return "".join(
        ("+" if s > 0 else "-") + letters[int(a)] if np.isfinite(a) else "?" for a, s in ornt
    )


# --------------------------------------------------------------------------------------
# arrays
# --------------------------------------------------------------------------------------
def writable(data) -> np.ndarray:
    """``data`` as a C-contiguous, writable numpy array (a copy only when needed).

    Read-only memory maps (``.npy``), zarr and dask arrays and strided views go to
    Cython code (cc3d, scikit-image) through this: they refuse read-only buffers
    ("buffer source array is read-only").
    """
    arr = np.asarray(data)
    if not (arr.flags.writeable and arr.flags.c_contiguous):
        arr = np.array(arr, order="C", copy=True)
    return arr


def _apply_ornt(data, ornt: np.ndarray, axes: Sequence[int]):
    """Flip and transpose the ``axes`` of ``data`` as nibabel's ``apply_orientation``.

    ``ornt[i] = (new position, flip)`` for the i-th of ``axes``. numpy (and memmap)
    arrays give views, dask arrays stay lazy; zarr arrays are read first.
    """
    if not hasattr(data, "transpose"):
        data = np.asarray(data)
    index = [slice(None)] * len(data.shape)
    for i, ax in enumerate(axes):
        if ornt[i, 1] == -1:
            index[ax] = slice(None, None, -1)
    data = data[tuple(index)]
    perm = list(range(len(data.shape)))
    dest = [axes[int(k)] for k in ornt[:, 0]]
    for i, ax in enumerate(axes):
        perm[dest[i]] = ax
    return data.transpose(perm)


def reorient(data, geometry: Geometry, target: np.ndarray) -> tuple[Any, Geometry]:
    """Flip/transpose the spatial axes of ``data`` to the orientation ``target``.

    Parameters
    ----------
    data : array-like
        Axes as ``geometry.axes``.
    geometry : Geometry
    target : (n, 2) ndarray
        nibabel orientation (``io_orientation`` form) the array axes should have.

    Returns
    -------
    (data, geometry)
        The same voxels in the new order and the geometry that places them (world
        coordinates of every voxel unchanged).
    """
    from nibabel.orientations import inv_ornt_aff, io_orientation, ornt_transform

    start = io_orientation(geometry.affine)
    if np.isnan(start).any():
        raise GeometryError("the affine has no clear orientation (degenerate axes).")
    transform = ornt_transform(start, np.asarray(target, dtype=float))
    if np.array_equal(transform, np.c_[np.arange(len(transform)), np.ones(len(transform))]):
        return data, geometry
    axes = geometry.spatial_axes
    shape = [int(data.shape[a]) for a in axes]
    new = geometry.affine @ inv_ornt_aff(transform, shape)
    return _apply_ornt(data, transform, axes), geometry.replace(affine=new)


def canonical_orientation(ndim: int = 3) -> np.ndarray:
    """nibabel orientation of array axes running along +world axes in order."""
    return np.c_[np.arange(ndim), np.ones(ndim)]


def displayed(geometry: Geometry, shape: Sequence[int]) -> Geometry:
    """The geometry of the spatial array as napari-topo's reader shows it.

    The reader (``napari_topo._plugin.read_volumes``) flips and transposes a file's
    spatial axes to run along +z, +y, +x of the world (the nearest world axes for an
    oblique scan), so that layers of files stored in different orders overlay voxel
    for voxel. A napari layer made over that image (napari's *New Points layer* with
    the image selected copies its placement) has its data coordinates in this grid.

    Parameters
    ----------
    geometry : Geometry
        The file's geometry (spatial axes only, or the array's: only the spatial axes
        and ``shape``'s entries for them are used).
    shape : sequence of int
        The spatial shape (array order), or the whole array's shape.

    Returns
    -------
    Geometry
        Spatial axes only; ``displayed(g, s).world(i)`` is the world position of the
        shown voxel ``i``. ``geometry`` itself (spatial) when it needs no reordering.
    """
    from nibabel.orientations import inv_ornt_aff, io_orientation, ornt_transform

    g = geometry.spatial()
    shape = tuple(int(s) for s in shape)
    if len(shape) != g.ndim:
        shape = tuple(shape[i] for i in geometry.spatial_axes)
    if g.ndim == 0 or g.is_plain:
        return g
    start = io_orientation(g.affine)
    if np.isnan(start).any():
        raise GeometryError("the affine has no clear orientation (degenerate axes).")
    transform = ornt_transform(start, canonical_orientation(g.ndim))
    return g.replace(affine=g.affine @ inv_ornt_aff(transform, shape))


# --------------------------------------------------------------------------------------
# channels
# --------------------------------------------------------------------------------------
def volume_refusal(shape, axes: str, name: str = "the input") -> str:
    """One line refusing an image that is not a 3D volume, what it is and what to do.

    Parameters
    ----------
    shape : sequence of int
        The array's shape.
    axes : str
        One letter per axis (:data:`SPACE` letters, ``"c"``, ``"t"``, ``"s"`` for RGB(A)
        samples), e.g. ``"yxs"`` for a 2D RGB image.
    name : str
        How the message names the image (``"the input photo.tif"``, ``"image 'x'"``).

    Returns
    -------
    str
        E.g. ``"the input photo.tif is an RGB 2D image (584 x 565 pixels, 3 colour
        samples); napari-topo segments 3D (z, y, x) volumes: open a z-stack (3D TIFF,
        NIfTI, OME-Zarr) instead."``

    Examples
    --------
    >>> volume_refusal((584, 565, 3), "yxs", "the input a.tif")[:40]
    'the input a.tif is an RGB 2D image (584 '
    """
    shape = tuple(int(s) for s in shape)
    space = [n for n, ch in zip(shape, axes, strict=False) if ch in SPACE]
    others = [
        f"{n} {'colour sample' if ch == 's' else OTHER.get(ch, 'channel')}s"
        for n, ch in zip(shape, axes, strict=False)
        if ch not in SPACE and n > 1
    ]
    size = " x ".join(str(n) for n in space) or "no"
    unit = "pixels" if len(space) == 2 else "voxels"
    rgb = "RGB " if any(ch == "s" and n > 1 for n, ch in zip(shape, axes, strict=False)) else ""
    article = "an" if rgb else "a"
    what = f"{article} {rgb}{len(space)}D image ({', '.join([f'{size} {unit}', *others])})"
    return (
        f"{name} is {what}; napari-topo segments 3D (z, y, x) volumes: open a z-stack "
        "(3D TIFF, NIfTI, OME-Zarr) instead."
    )


def shape_mismatch(a: str, a_shape, b: str, b_shape, note: str = "") -> str:
    """One line saying that ``a`` and ``b`` do not cover the same voxels, and what to do.

    Each shape is named once (with its dimensionality when the two differ in it);
    ``note`` (e.g. how ``a`` reads in ``b``'s axis order) follows in brackets.

    Examples
    --------
    >>> shape_mismatch("the prediction", (2, 3), "the ground truth", (2, 4))[:72]
    'shape differs: (2, 3) for the prediction but (2, 4) for the ground truth'
    """
    a_shape, b_shape = (tuple(int(s) for s in x) for x in (a_shape, b_shape))
    a_dims, b_dims = (
        (f"{len(a_shape)}D ", f"{len(b_shape)}D ") if len(a_shape) != len(b_shape) else ("", "")
    )
    notes = [note] if note else []
    if a_shape != b_shape and sorted(a_shape) == sorted(b_shape):
        # a newcomer's (200, 200, 25) beside (25, 200, 200) got the generic advice only
        notes.append("the same sizes in another order: an array saved transposed?")
    extra = f" ({'; '.join(notes)})" if notes else ""
    return (
        f"shape differs: {a_dims}{a_shape} for {a} but {b_dims}{b_shape} for {b}{extra}; use "
        "the image the other was made from, or crop or resample one onto the other's grid."
    )


def select_channel(
    data,
    geometry: Geometry,
    channel: int | None = None,
    *,
    name: str = "the input",
    option: str | None = "--channel",
    ndim: int | None = None,
) -> tuple[Any, Geometry]:
    """The spatial volume of ``data``: one channel (time point, RGB sample) chosen.

    Axes of size 1 that are not spatial are dropped. One other axis of size > 1 is
    indexed with ``channel``; without it the call is refused (napari-topo segments one
    intensity volume), as are several such axes at once. ``option`` names how the user
    chooses (``"--channel"`` in the CLI); None when they cannot (save one first).
    ``ndim`` (3 to segment) refuses other spatial dimensionalities first, in one step
    (:func:`volume_refusal`: a 2D RGB photo is refused as such, not asked for a channel).

    Raises
    ------
    GeometryError
        One line: what the axes are and what to pass (``option``).
    """
    shape = tuple(int(s) for s in data.shape)
    if len(shape) != len(geometry.axes):
        raise GeometryError(
            f"{name} has {len(shape)} axes {shape} but its geometry names {geometry.axes!r}."
        )
    if ndim is not None and geometry.ndim != ndim:
        raise GeometryError(volume_refusal(shape, geometry.axes, name))
    others = [i for i in geometry.other_axes if shape[i] > 1]
    described = ", ".join(
        f"{shape[i]} {OTHER[geometry.axes[i]]}s" for i in geometry.other_axes if shape[i] > 1
    )
    if len(others) > 1:
        raise GeometryError(
            f"{name} has several non-spatial axes ({described}; shape {shape}, axes "
            f"{geometry.axes.upper()}); save one {geometry.ndim}D volume of it first."
        )
    index: list[Any] = [slice(None)] * len(shape)
    for i in geometry.other_axes:
        index[i] = 0
    if others:
        ax = others[0]
        kind = OTHER[geometry.axes[ax]]
        if channel is None:
            what = (
                f"an RGB(A) image ({shape[ax]} colour samples, shape {shape})"
                if geometry.axes[ax] == "s"
                else f"{shape[ax]} {kind}s (shape {shape}, axes {geometry.axes.upper()})"
            )
            how = (
                f"choose one with {option} N (0..{shape[ax] - 1})"
                if option
                else f"save one {kind} as its own file first"
            )
            raise GeometryError(f"{name} holds {what}; napari-topo takes one volume: {how}.")
        if not 0 <= int(channel) < shape[ax]:
            raise GeometryError(
                f"{option or 'channel'} {channel} is out of range: {name} has {shape[ax]} "
                f"{kind}s (0..{shape[ax] - 1})."
            )
        index[ax] = int(channel)
    elif channel not in (None, 0):
        raise GeometryError(
            f"{option or 'channel'} {channel} given, but {name} has one channel (shape "
            f"{shape}, axes {geometry.axes.upper()})."
        )
    if not geometry.other_axes:
        return data, geometry
    return data[tuple(index)], geometry.spatial()


# --------------------------------------------------------------------------------------
# comparing two placements
# --------------------------------------------------------------------------------------
class Aligned(NamedTuple):
    """What :func:`align` returns."""

    data: Any
    #: One line on what was done ("" when the grids were the same).
    note: str


def _level(a: Geometry, b: Geometry) -> str:
    return KNOWN[min(KNOWN.index(a.known), KNOWN.index(b.known))]


def compare(
    moving: Geometry,
    moving_shape: Sequence[int],
    reference: Geometry,
    reference_shape: Sequence[int],
    *,
    names: tuple[str, str] = ("the prediction", "the ground truth"),
) -> tuple[np.ndarray | None, str]:
    """How ``moving`` maps onto ``reference``: ``(orientation transform or None, note)``.

    Only what both state is compared (:data:`KNOWN`): with one side ``"none"`` the
    shapes must agree; with ``"spacing"`` the spacing too; with ``"full"`` on both
    sides the affines, after reordering ``moving``'s axes (flips, permutations) onto
    ``reference``'s. Lengths in different units (an OME-TIFF in mm against one in um)
    are converted to ``reference``'s unit first (:meth:`Geometry.in_unit`).

    Raises
    ------
    GeometryError
        One line naming the first difference: unit, orientation, spacing, shape or
        origin.
    """
    a, b = names
    unit_note = ""
    if (
        moving.unit
        and reference.unit
        and moving.unit != reference.unit
        and "none" not in (moving.known, reference.known)
    ):
        try:
            converted = moving.in_unit(reference.unit)
        except ValueError:
            raise GeometryError(
                f"unit differs: {a} is in {moving.unit} but {b} in {reference.unit}, and "
                "napari-topo cannot convert between them; save both in one unit."
            ) from None
        unit_note = f"{a}'s lengths were converted from {moving.unit} to {reference.unit}"
        moving = converted
    transform, note = _compare(moving, moving_shape, reference, reference_shape, names)
    return transform, "; ".join(t for t in (unit_note, note) if t)


def _spacing_differs(a, a_spacing, a_unit, b, b_spacing, b_unit, extra: str = "") -> str:
    """One line: the voxel sizes of ``a`` and ``b`` differ (a newcomer's labels of
    another shape and spacing were told the spacing alone, as "the labels has voxels")."""
    return (
        f"spacing differs: the voxels of {a} are {_fmt(a_spacing)}{a_unit} but those of {b} "
        f"{_fmt(b_spacing)}{b_unit}{extra}; resample one onto the other's grid (or "
        "override a wrong header's voxel size)."
    )


def _compare(moving, moving_shape, reference, reference_shape, names):
    ms = tuple(int(s) for s in moving_shape)
    rs = tuple(int(s) for s in reference_shape)
    a, b = names
    if moving.ndim != reference.ndim or len(ms) != len(rs):
        raise GeometryError(shape_mismatch(a, ms, b, rs))
    level = _level(moving, reference)
    unit = f" {reference.unit}" if reference.unit else ""
    moving_unit = f" {moving.unit}" if moving.unit else ""
    if level != "full":
        if ms != rs:
            raise GeometryError(shape_mismatch(a, ms, b, rs))
        if level == "spacing" and not np.allclose(
            moving.spacing, reference.spacing, rtol=SPACING_RTOL
        ):
            raise GeometryError(
                _spacing_differs(a, moving.spacing, moving_unit, b, reference.spacing, unit)
            )
        if (moving.known == "none") != (reference.known == "none"):
            unplaced = a if moving.known == "none" else b
            return None, f"{unplaced} states no voxel placement; taken on the other's grid"
        if level == "spacing" and not (moving.is_plain and reference.is_plain):
            partial = a if moving.known == "spacing" else b
            return None, (
                f"{partial} states its voxel size but not its orientation or origin; the "
                "two were compared voxel by voxel as stored"
            )
        return None, ""
    # nibabel only for full affines: importing it costs ~0.4 s the first time, which
    # the metrics widget would pay on the GUI thread for layers placed by scale alone.
    from nibabel.orientations import inv_ornt_aff, io_orientation, ornt_transform

    start, end = io_orientation(moving.affine), io_orientation(reference.affine)
    if np.isnan(start).any() or np.isnan(end).any():
        raise GeometryError(f"orientation differs: {a} or {b} has a degenerate affine.")
    transform = ornt_transform(start, end)
    perm = [0] * len(ms)
    for i, (k, _) in enumerate(transform):
        perm[int(k)] = i
    moved_shape = tuple(ms[perm[j]] for j in range(len(ms)))
    moved = moving.affine @ inv_ornt_aff(transform, ms)
    n = reference.ndim
    md, rd = moved[:n, :n], reference.affine[:n, :n]
    m_sp, r_sp = np.linalg.norm(md, axis=0), np.linalg.norm(rd, axis=0)
    if not np.allclose(md / m_sp, rd / r_sp, atol=DIRECTION_ATOL * 10):
        raise GeometryError(
            f"orientation differs: {a} has axes along {orientation_codes(moving)} but {b} "
            f"along {orientation_codes(reference)}, not a flip or reordering of one "
            "another (rotated); resample one onto the other's grid."
        )
    if not np.allclose(m_sp, r_sp, rtol=SPACING_RTOL):
        shapes = f" (and the shape: {moved_shape} against {tuple(rs)})" if moved_shape != rs else ""
        raise GeometryError(
            _spacing_differs(a, moving.spacing, moving_unit, b, reference.spacing, unit, shapes)
        )
    if moved_shape != rs:
        # the shape in the other's axis order only when reordering changed it
        extra = f"{moved_shape} in {b}'s axis order" if moved_shape != ms else ""
        raise GeometryError(shape_mismatch(a, ms, b, rs, extra))
    tol = ORIGIN_VOXELS * float(min(r_sp))
    if not np.allclose(moved[:n, n], reference.affine[:n, n], rtol=0, atol=tol):
        shift = moved[:n, n] - reference.affine[:n, n]
        raise GeometryError(
            f"origin differs: {a}'s first voxel lies at {_fmt(moving.origin)} and {b}'s "
            f"at {_fmt(reference.origin)}{unit} (shift {_fmt(shift)} in {b}'s axes); they "
            "do not cover the same voxels."
        )
    identity = np.c_[np.arange(n), np.ones(n)]
    if np.array_equal(transform, identity):
        return None, ""
    return transform, (
        f"{a} is stored with axes along {orientation_codes(moving)} and {b} along "
        f"{orientation_codes(reference)}; {a} was reordered onto {b}'s grid"
    )


def align(
    moving,
    moving_geometry: Geometry,
    reference_geometry: Geometry,
    reference_shape: Sequence[int],
    *,
    names: tuple[str, str] = ("the prediction", "the ground truth"),
) -> Aligned:
    """``moving`` on ``reference``'s grid (axis flips/permutations only) or a refusal.

    Parameters
    ----------
    moving : array-like
        Spatial axes only (after :func:`select_channel`), in ``moving_geometry``'s order.
    moving_geometry, reference_geometry : Geometry
    reference_shape : sequence of int
    names : (str, str)
        How the two are called in messages.

    Returns
    -------
    Aligned
        ``(data, note)``: the same voxels reordered so that ``data[i]`` lies where the
        reference's voxel ``i`` does (a view for numpy arrays), and a one-line note
        ("" when nothing was done).

    Raises
    ------
    GeometryError
        The two are not the same grid (see :func:`compare`).

    Examples
    --------
    >>> ras = Geometry.from_spacing((1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    >>> flip = np.diag([1.0, 1.0, -1.0, 1.0])
    >>> flip[2, 3] = 1.0  # x reversed; voxel 0 at x = 1
    >>> a = np.arange(8).reshape(2, 2, 2)
    >>> aligned = align(a[..., ::-1], Geometry(flip, "zyx"), ras, a.shape)
    >>> bool((aligned.data == a).all())
    True
    """
    transform, note = compare(
        moving_geometry,
        moving.shape,
        reference_geometry,
        reference_shape,
        names=names,
    )
    if transform is None:
        return Aligned(moving, note)
    return Aligned(_apply_ornt(moving, transform, list(range(len(moving.shape)))), note)


# --------------------------------------------------------------------------------------
# napari layers
# --------------------------------------------------------------------------------------
def _shear_matrix(shear, n: int) -> np.ndarray:
    """napari's shear (upper-triangular values, or a matrix) for the last ``n`` axes."""
    if shear is None:
        return np.eye(n)
    s = np.asarray(shear, dtype=float)
    if s.ndim == 2:
        return _embed(s, n)
    m = int(round((1 + math.sqrt(1 + 8 * s.size)) / 2))  # s.size == m (m - 1) / 2
    tri = np.eye(m)
    tri[np.triu_indices(m, 1)] = s
    return _embed(tri, n)


def _embed(matrix, n: int) -> np.ndarray:
    """Last ``n`` axes of a square (or homogeneous) matrix, or it embedded in eye(n)."""
    m = np.asarray(matrix, dtype=float)
    out = np.eye(n)
    k = min(m.shape[0], n)
    out[-k:, -k:] = m[-k:, -k:]
    return out


def geometry_from_layer_meta(meta: Mapping[str, Any], ndim: int, *, axes: str | None = None):
    """The :class:`Geometry` of a layer from its ``scale``/``translate``/``rotate``/
    ``shear``/``affine`` (a layer data tuple's ``meta``; missing keys are napari's
    defaults), for the layer's last ``ndim`` axes.

    ``world = affine @ (rotate @ shear @ diag(scale) @ index + translate)`` as napari
    composes it. ``known`` is ``"none"`` when every part is napari's default (the
    layer was never placed), ``"full"`` otherwise. Layers of more than 3 axes: the
    last 3 are space, the others time (``tzyx``) or time and channel (``tczyx``).
    """
    total = int(ndim)
    n = min(total, 3)
    if axes is None:
        axes = ("tc"[: total - 3] if total > 3 else "") + SPACE[-n:]

    def vec(key, default):
        v = meta.get(key)
        if v is None:
            return np.full(n, default, dtype=float)
        v = np.asarray(v, dtype=float).ravel()
        return v[-n:] if v.size >= n else np.r_[np.full(n - v.size, default), v]

    scale, translate = vec("scale", 1.0), vec("translate", 0.0)
    rotate = meta.get("rotate")
    rot = np.eye(n) if rotate is None or np.ndim(rotate) != 2 else _embed(rotate, n)
    if rotate is not None and np.ndim(rotate) != 2:
        raise ValueError("rotate must be given as a matrix (napari's layer.rotate).")
    shear = _shear_matrix(meta.get("shear"), n)
    inner = np.eye(n + 1)
    inner[:n, :n] = rot @ shear @ np.diag(scale)
    inner[:n, n] = translate
    outer = np.eye(n + 1)
    affine = meta.get("affine")
    if affine is not None:
        a = np.asarray(getattr(affine, "affine_matrix", affine), dtype=float)
        k = min(a.shape[0] - 1, n)
        outer[:n, :n] = _embed(a[:-1, :-1], n)
        outer[n - k : n, n] = a[-1 - k : -1, -1]
    full = outer @ inner
    known = "none" if np.allclose(full, np.eye(n + 1)) else "full"
    return Geometry(full, axes, known=known)


def layer_geometry(layer, ndim: int | None = None) -> Geometry:
    """:func:`geometry_from_layer_meta` of a napari layer (read duck-typed)."""
    n = int(ndim if ndim is not None else layer.ndim)
    affine = getattr(layer, "affine", None)
    meta = {
        "scale": getattr(layer, "scale", None),
        "translate": getattr(layer, "translate", None),
        "rotate": getattr(layer, "rotate", None),
        "shear": getattr(layer, "shear", None),
        "affine": None if affine is None else getattr(affine, "affine_matrix", affine),
    }
    return geometry_from_layer_meta(meta, n)


def file_geometry(layer) -> Geometry | None:
    """The geometry of the file napari-topo's reader opened ``layer`` from (the file's
    voxel indices -> world; ``metadata["napari_topo_geometry"]``), when it has three
    spatial axes; else None (a layer not from the reader, or unreadable metadata)."""
    meta = getattr(layer, "metadata", None)
    stored = meta.get("napari_topo_geometry") if isinstance(meta, Mapping) else None
    if not isinstance(stored, Mapping):
        return None
    try:
        geometry = Geometry.from_dict(stored)
    except (ValueError, KeyError, TypeError, GeometryError):
        return None
    return geometry if len(geometry.spatial_axes) == 3 else None


def reader_flips(layer) -> tuple[int, ...]:
    """The spatial axes along which napari-topo's reader mirrored a layer's file.

    The reader (``napari_topo._plugin.read_volumes``) shows every file with its axes
    along +z, +y, +x of the world, so an LPS CT (DICOM's order) is shown mirrored in y
    and x. The file's own geometry travels in the layer's metadata
    (``"napari_topo_geometry"``); from it (nibabel's ``io_orientation``) this gives the
    axes to mirror back to the file's voxel order, as the Segment dock does before the
    network runs (:func:`napari_topo.inference.pipeline.predict_mirrored`).

    Parameters
    ----------
    layer : napari layer (read duck-typed: ``metadata``, ``ndim``, ``scale``, ...)

    Returns
    -------
    tuple of int
        Axes among 0, 1, 2 (an oblique file's: of its nearest world axes, as the reader
        chose them); () for a layer not from the reader, not 3D, a file stored along
        +z, +y, +x already, or one whose axes the reader also permuted (then the array
        as shown is used). The layer's own placement is not consulted: the flips relate
        its data to the file's, wherever the layer was moved.
    """
    from nibabel.orientations import io_orientation, ornt_transform

    geometry = file_geometry(layer) if getattr(layer, "ndim", 0) == 3 else None
    if geometry is None:
        return ()
    try:
        start = io_orientation(geometry.affine)  # nearest axes, as the reader's reorient
        if np.isnan(start).any():
            return ()
        transform = ornt_transform(start, canonical_orientation(3))
    except (ValueError, KeyError, TypeError, GeometryError):
        return ()
    if not np.array_equal(transform[:, 0], np.arange(3)):  # permuted: used as shown
        return ()
    return tuple(int(a) for a in np.flatnonzero(transform[:, 1] < 0))


#: napari's (pint's) names of the length units napari-topo knows
_PINT_LENGTH_NAMES = {
    "meter": "m",
    "centimeter": "cm",
    "millimeter": "mm",
    "micrometer": "um",
    "nanometer": "nm",
}


@functools.cache
def _napari_has_layer_units() -> bool:
    """Whether the installed napari takes a layer's ``units`` (napari >= 0.6)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(v) for v in version("napari").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (0, 6)


def napari_units(unit: str | None, axes: str) -> tuple[str, ...] | None:
    """napari ``units`` for a layer whose axes are ``axes``, its spatial ones in ``unit``.

    napari >= 0.6 shows a layer's units on its scale bar and in the status bar (napari
    < 0.6 has no layer units: None). The spatial axes (``z``, ``y``, ``x``) get the
    length unit, the others (time, channel) ``"pixel"``, napari's unitless default.

    Parameters
    ----------
    unit : str or None
        A length unit napari-topo knows (``"m"``, ``"cm"``, ``"mm"``, ``"um"``,
        ``"nm"``); anything else, or None, gives None.
    axes : str
        The layer's axes in order, e.g. ``"zyx"`` or ``"tzyx"``.

    Returns
    -------
    tuple of str or None
        One unit name per axis, or None: leave napari's default.

    Examples
    --------
    >>> napari_units("mm", "tzyx")  # doctest: +SKIP
    ('pixel', 'mm', 'mm', 'mm')
    >>> napari_units(None, "zyx") is None
    True
    """
    if unit not in _PINT_LENGTH_NAMES.values() or not _napari_has_layer_units():
        return None
    return tuple(unit if ax in "zyx" else "pixel" for ax in axes)


def file_unit(layer) -> str | None:
    """The length unit the file of a napari layer states: the ``"unit"`` of the geometry
    napari-topo's reader stored in its metadata (``"napari_topo_geometry"``), or None
    (a layer not from the reader, or a file stating none)."""
    geometry = (getattr(layer, "metadata", None) or {}).get("napari_topo_geometry")
    unit = geometry.get("unit") if isinstance(geometry, Mapping) else None
    return unit if isinstance(unit, str) and unit else None


def layer_length_unit(layer) -> str | None:
    """The length unit of a napari layer's scale, when it is stated.

    Read from the geometry napari-topo's reader stored in the layer's metadata
    (``"napari_topo_geometry"``, the file's own unit), else from napari's ``layer.units``
    when every spatial axis has the same known length unit (napari >= 0.6; "pixel", the
    default, is no unit).

    Parameters
    ----------
    layer : napari layer (read duck-typed: ``metadata``, ``units``)

    Returns
    -------
    str or None
        One of ``"m"``, ``"cm"``, ``"mm"``, ``"um"``, ``"nm"`` (or another unit the
        reader recorded), None when unknown.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> layer_length_unit(SimpleNamespace(metadata={"napari_topo_geometry": {"unit": "mm"}}))
    'mm'
    >>> layer_length_unit(SimpleNamespace(metadata={}, units=("pixel", "pixel")))
    """
    unit = file_unit(layer)
    if unit is not None:
        return unit
    names = {str(u) for u in (getattr(layer, "units", None) or ())}
    if len(names) == 1:
        return _PINT_LENGTH_NAMES.get(names.pop())
    return None


def compare_layers(
    moving,
    reference,
    *,
    names: tuple[str, str] = ("the prediction", "the ground truth"),
) -> str:
    """Check that two napari layers (compared voxel by voxel) lie on one world grid.

    The layers' placements (:func:`layer_geometry`: scale, translate, rotate, shear,
    affine) must be the same, except that a layer with napari's default placement
    (never placed) is taken to lie on the other's grid. Layers that hold the same grid
    in another axis order are refused too: their arrays do not correspond voxel for
    voxel (napari-topo's reader shows every file in one axis order, so files opened
    with it compare directly).

    Parameters
    ----------
    moving, reference : napari layers (or anything with ``data``, ``scale``, ...)
        Their full-resolution data must have the same number of axes (2 or 3).

    Returns
    -------
    str
        "" or a one-line note (one layer was never placed).

    Raises
    ------
    GeometryError
        One line naming the difference (orientation, spacing, shape, origin).
    """

    def shape_of(layer):
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        return tuple(int(s) for s in data.shape)

    ms, rs = shape_of(moving), shape_of(reference)
    mg, rg = layer_geometry(moving, len(ms)), layer_geometry(reference, len(rs))
    transform, note = compare(mg, ms, rg, rs, names=names)
    if transform is not None:
        raise GeometryError(
            f"{names[0]} and {names[1]} lie on the same voxels stored in another axis "
            f"order ({orientation_codes(mg)} vs {orientation_codes(rg)}); save one onto "
            "the other's grid, or open both files with napari-topo's reader."
        )
    return note
