"""Read and write volumes with their geometry: NIfTI, TIFF, NumPy and zarr.

One entry point each way, chosen by the file suffix:

* :func:`read_volume` returns a :class:`Volume` ``(data, spacing, path, geometry)``:
  ``data`` holds the file's axes in napari-topo's order (``(z, y, x)`` for a volume,
  channel/time/RGB axes where the file has them), ``geometry`` a
  :class:`~napari_topo.geometry.Geometry` saying which axes are space, channel, time
  or RGB sample and where every voxel lies (affine, unit, what the file stated), and
  ``spacing`` the voxel size of the spatial axes ``(z, y, x)`` (None where the file
  does not say);
* :func:`write_volume` writes an array with its geometry (or a plain spacing) so that
  reading it back gives the same values, axes and placement.

Formats, and the well-kept libraries that read them (rather than parsers of our own):

========== ============ ===================================================================
suffix     library      axes and placement
========== ============ ===================================================================
.nii(.gz)  nibabel      stored (x, y, z[, t[, c]]); returned reversed. Placement: the
                        affine nibabel chooses (sform, else qform) with its codes, axes
                        reversed to (z, y, x); header zooms only when both codes are 0.
                        Scaling slope/intercept applied as nibabel does.
.tif(f)    tifffile     axes from ``series[0].axes`` (ImageJ hyperstacks TZCYXS, OME
                        dimension order, RGB samples). Placement: ImageJ ``spacing`` (z),
                        ``unit``, ``x/y/zorigin`` and X/YResolution; OME PhysicalSize;
                        the geometry JSON napari-topo writes for other cases.
.npy       numpy        memory-mapped (read-only); nothing stated
.npz       numpy        the array under ``key`` (or the only one); nothing stated
.zarr      zarr         an array, or one array of a group; stays lazy; the ``spacing``
                        and ``napari_topo_geometry`` attributes
.ome.zarr  ome-zarr     OME-NGFF multiscale image (also a ``.zarr`` group with
                        ``multiscales``): level 0 as a lazy dask array; spacing and origin
                        from its scale and translation, axes from their types, unit
                        (:mod:`napari_topo.data.ngff`). Written as a pyramid.
DICOM      SimpleITK    read only: a folder holding a DICOM series (files with or without
                        ``.dcm``), or one ``.dcm`` file of it (its series is read). The
                        series is assembled by ITK/GDCM (sorted along the slice normal,
                        rescale slope/intercept applied: HU for CT); placement from
                        ImagePositionPatient/ImageOrientationPatient/PixelSpacing, in mm.
                        A folder of several series needs ``key`` (a SeriesInstanceUID).
.nrrd      SimpleITK    read only (also ``.nhdr``, MetaImage ``.mha``/``.mhd``: 3D Slicer's
                        and ITK's formats): spacing, origin and direction, in mm.
========== ============ ===================================================================

ITK's physical space is LPS (DICOM's); the placement of DICOM, NRRD and MetaImage
volumes is turned into RAS, NIfTI's (nibabel's) convention, so that a series and the
NIfTI written from it lie in the same place.

Arrays without axis metadata are taken as ``(y, x)``, ``(z, y, x)``, ``(c, z, y, x)``
and ``(t, c, z, y, x)``, except that a 3D/4D array whose last axis has 3 or 4 entries
is RGB(A) (``(y, x, s)``, ``(z, y, x, s)``): its own colour samples, not a volume 3
voxels wide. :func:`napari_topo.geometry.select_channel` then picks one channel or
refuses with one line.

Every failure a user can cause (missing file, unknown suffix, corrupt file, ambiguous
``.npz``/zarr group, zarr not installed) raises :class:`VolumeReadError`, a
:class:`ValueError` with a one-line message that names the path. Content is not checked
here (2D, NaN are the callers' business): a reader returns what the file holds.

This module imports numpy only; nibabel, tifffile, zarr and SimpleITK are imported when
used. No Qt, no napari.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
>>> p = write_volume(d / "a.nii.gz", a, spacing=(2.0, 0.5, 0.5))
>>> vol = read_volume(p)
>>> vol.data.shape, vol.spacing, vol.geometry.axes
((2, 3, 4), (2.0, 0.5, 0.5), 'zyx')
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..geometry import METRES_PER_UNIT, Geometry

__all__ = [
    "READ_ONLY_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "Geometry",
    "Volume",
    "VolumeReadError",
    "default_axes",
    "holds_dicom",
    "is_dicom_folder",
    "read_volume",
    "suffix_of",
    "volume_stem",
    "write_volume",
]

#: File suffixes :func:`read_volume` and :func:`write_volume` understand (lower case).
SUPPORTED_SUFFIXES = (".nii", ".nii.gz", ".tif", ".tiff", ".npy", ".npz", ".zarr", ".ome.zarr")
#: Suffixes :func:`read_volume` reads (with SimpleITK) and :func:`write_volume` does not:
#: a DICOM file of a series, NRRD and MetaImage. A folder of DICOM files has none.
READ_ONLY_SUFFIXES = (".dcm", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Files of a folder looked at for DICOM's ``DICM`` marker before it is called no series.
_DICOM_PROBE_FILES = 64
#: How deep below a folder without a DICOM series of its own its subfolders are searched
#: for one (a DICOMDIR export: PATIENT/STUDY/SERIES/IMAGE), and how many folders at most.
_DICOM_SEARCH_DEPTH = 6
_DICOM_SEARCH_FOLDERS = 500
_FORMAT = {
    ".dcm": "DICOM",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
    "dicom": "DICOM series",
    ".nii": "NIfTI",
    ".nii.gz": "NIfTI",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".npy": "NumPy .npy",
    ".npz": "NumPy .npz",
    ".zarr": "zarr",
    ".ome.zarr": "OME-Zarr",
}
#: dtypes ImageJ can hold; other dtypes go to a plain (tifffile "shaped") TIFF.
_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.int16, np.float32)
#: Chunk edge of zarr arrays written here (64**3 voxels, 1 MiB of float32).
ZARR_CHUNK = 64
#: Key of the geometry in TIFF metadata (ImageJ description, tifffile JSON) and zarr
#: attributes, and the marker of the NIfTI header extension that holds the axes.
GEOMETRY_KEY = "napari_topo_geometry"
#: Key of the spatial axes whose voxel size the source did not state (taken as 1), e.g.
#: ``"z"``, in TIFF metadata and zarr / OME-Zarr attributes (see :func:`write_volume`).
SPACING_ASSUMED_KEY = "napari_topo_spacing_assumed"
#: NIfTI ``descrip`` (80 bytes) saying the same: ``"napari-topo: z spacing assumed 1, not
#: stated by the input"`` (axes comma-separated: ``z,y,x``).
_ASSUMED_DESCRIP = "napari-topo: {} spacing assumed 1, not stated by the input"
_ASSUMED_RE = re.compile(r"napari-topo: ([zyx](?:,[zyx])*) spacing assumed")
#: NIfTI extension code for the axes record (6 = "comment", text).
_NIFTI_COMMENT = 6
#: NIfTI units (nibabel's names) for the units napari-topo uses, and back.
_NIFTI_UNITS = {"mm": "mm", "um": "micron", "m": "meter"}
_UNIT_ALIASES = {
    "mm": "mm",
    "millimeter": "mm",
    "millimetre": "mm",
    "um": "um",
    "µm": "um",
    "μm": "um",
    "\\u00b5m": "um",
    "micron": "um",
    "microns": "um",
    "micrometer": "um",
    "micrometre": "um",
    "m": "m",
    "meter": "m",
    "metre": "m",
    "nm": "nm",
    "nanometer": "nm",
    "cm": "cm",
}


class VolumeReadError(ValueError):
    """A volume could not be read or written; the message is one line naming the path."""


class Volume(NamedTuple):
    """A volume read from a file.

    Attributes
    ----------
    data : ndarray, numpy.memmap or zarr.Array
        The array, axes as ``geometry.axes`` (``(z, y, x)`` for a plain volume). zarr
        arrays are returned unloaded, ``.npy`` memory-mapped read-only.
    spacing : tuple of float or None
        Physical voxel size of the spatial axes (``(z, y, x)`` order; channel and time
        axes have none), or None if the file does not give it.
    path : Path
        The file read (for a DICOM series, its folder).
    geometry : Geometry
        Axes and placement (affine, unit, what was stated); see
        :mod:`napari_topo.geometry`.
    assumed : str
        Spatial axes (letters of ``"zyx"``) whose voxel size the file does not state and
        that were taken as 1 while the others were stated: ``"z"`` for a TIFF with a
        pixel size but no z step (no ImageJ ``spacing``, no OME ``PhysicalSizeZ``).
        Empty otherwise (a file that states no voxel size at all has ``spacing`` None).
    modality : str or None
        The acquisition modality the file states, lower case (DICOM's Modality tag:
        ``"ct"``, ``"mr"``, ...), else None. ``segment(header_hint=...)`` takes it, so a
        CT crop without air is still windowed as CT.
    """

    data: Any
    spacing: tuple[float, ...] | None
    path: Path
    geometry: Geometry | None = None
    assumed: str = ""
    modality: str | None = None

    @property
    def axes(self) -> str:
        """One letter per axis of ``data``: z, y, x, c (channel), t (time), s (RGB)."""
        return self.geometry.axes if self.geometry is not None else default_axes(self.data.shape)

    @property
    def unit(self) -> str | None:
        """Length unit of :attr:`spacing` (``"mm"``, ``"um"``, ...) when the file states
        one, else None; ``write_volume(path, crop, spacing=v.spacing, unit=v.unit)`` keeps
        it (a newcomer's crop written with the spacing alone lost it)."""
        return None if self.geometry is None else (self.geometry.unit or None)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def suffix_of(path) -> str:
    """Lower-case suffix of ``path``, ``".nii.gz"`` and ``".ome.zarr"`` counted as one.

    Examples
    --------
    >>> suffix_of("scan.NII.GZ"), suffix_of("a/b.tif"), suffix_of("noext")
    ('.nii.gz', '.tif', '')
    >>> suffix_of("big.ome.zarr/")
    '.ome.zarr'
    """
    name = Path(os.fspath(path)).name.lower()
    for double in (".nii.gz", ".ome.zarr"):
        if name.endswith(double):
            return double
    return Path(name).suffix


#: DICOM value representations (PS3.5 6.2); those in the second set have a 4-byte length
#: after 2 reserved bytes in explicit-VR encoding.
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC "
    b"UI UL UN UR US UT UV".split()
)
_VRS_LONG = frozenset(b"OB OD OF OL OV OW SQ UC UN UR UT UV".split())


def _raw_dataset(head: bytes) -> bool:
    """A raw (no Part-10 preamble) little-endian data set: two well-formed elements, the
    first of group 0008 and the next after it (group 0008 with a larger element, or a
    later group up to 0028), implicit or explicit VR."""
    if len(head) < 12 or head[:2] != b"\x08\x00":
        return False
    element = int.from_bytes(head[2:4], "little")
    vr = head[4:6]
    if vr in _VRS_LONG and head[6:8] == b"\x00\x00":
        length, start = int.from_bytes(head[8:12], "little"), 12
    elif vr in _VRS:
        length, start = int.from_bytes(head[6:8], "little"), 8
    else:  # implicit VR: a 4-byte length
        length, start = int.from_bytes(head[4:8], "little"), 8
    nxt = start + length
    if length > 1024 or length % 2 or nxt + 4 > len(head):
        return False
    group2 = int.from_bytes(head[nxt : nxt + 2], "little")
    element2 = int.from_bytes(head[nxt + 2 : nxt + 4], "little")
    return (group2 == 0x0008 and element2 > element) or (
        0x0008 < group2 <= 0x0028 and group2 % 2 == 0
    )


def _is_dicom_file(path: Path) -> bool:
    """A DICOM file: the Part 10 marker (``DICM`` after a 128-byte preamble), or a raw
    data set as older scanners write it (no preamble; :func:`_raw_dataset`)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1100)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return _raw_dataset(head)


def is_dicom_folder(path) -> bool:
    """True for a folder (not ``.zarr``) that holds a DICOM file (the Part-10 ``DICM``
    marker, or a raw data set without it) among the first :data:`_DICOM_PROBE_FILES`
    files listed; subfolders are not searched (:func:`holds_dicom` does). An unreadable
    folder is no DICOM folder."""
    p = Path(os.fspath(path)).expanduser()
    if suffix_of(p) in (".zarr", ".ome.zarr"):
        return False
    try:
        if not p.is_dir():
            return False
        seen = 0
        with os.scandir(p) as entries:  # no stat or sort of a folder of 20,000 files
            for entry in entries:
                if entry.is_file():
                    if _is_dicom_file(Path(entry.path)):
                        return True
                    seen += 1
                    if seen >= _DICOM_PROBE_FILES:
                        break
    except OSError:
        return False
    return False


class _Found(list):
    """Folders found by :func:`_dicom_subfolders`; ``truncated`` when its cap stopped it."""

    truncated = False


def _dicom_subfolders(root: Path, first_only: bool = False) -> _Found:
    """Subfolders of ``root`` (not ``root`` itself) that :func:`is_dicom_folder`,
    breadth first and sorted by name: at most :data:`_DICOM_SEARCH_DEPTH` levels down
    and :data:`_DICOM_SEARCH_FOLDERS` folders looked at (then ``truncated`` is set);
    hidden folders, ``.zarr`` and symbolic links are skipped, unreadable folders too.
    Below a folder that holds DICOM files the search goes on (a series folder may hold
    others). ``first_only`` stops at the first found."""
    found = _Found()
    queue, looked = [(root, 0)], 0
    while queue:
        folder, depth = queue.pop(0)
        try:
            with os.scandir(folder) as entries:
                subs = sorted(
                    e.path
                    for e in entries
                    if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
                )
        except OSError:
            continue
        for sub in map(Path, subs):
            looked += 1
            if looked > _DICOM_SEARCH_FOLDERS:
                found.truncated = True
                return found
            if suffix_of(sub) in (".zarr", ".ome.zarr"):
                continue
            if is_dicom_folder(sub):
                found.append(sub)
                if first_only:
                    return found
            if depth + 1 < _DICOM_SEARCH_DEPTH:
                queue.append((sub, depth + 1))
    return found


def holds_dicom(path) -> bool:
    """True for a folder that :func:`is_dicom_folder`, or whose subfolders hold DICOM
    files (a DICOMDIR export: PATIENT/STUDY/SERIES folders), searched as
    :func:`read_volume` searches them."""
    p = Path(os.fspath(path)).expanduser()
    if is_dicom_folder(p):
        return True
    try:
        if not p.is_dir() or suffix_of(p) in (".zarr", ".ome.zarr"):
            return False
    except OSError:
        return False
    return bool(_dicom_subfolders(p, first_only=True))


def volume_stem(path, read_from=None) -> str:
    """The name outputs are named after: a file's name without its suffix, a DICOM
    folder's whole name (``3Dircadb1.1``, not ``3Dircadb1``). ``read_from``: the
    :attr:`Volume.path` that ``path`` was read from, when it is a series folder below
    ``path`` (a CD export, or its ``DICOMDIR``): then ``<export's name>_<series
    folder's name>`` (every export's first series folder is called ``SE000000`` or
    alike); otherwise the stem of ``read_from`` (a ``.dcm`` file reads its folder)."""
    p = Path(os.fspath(path)).expanduser()
    if read_from is not None:
        r = Path(os.fspath(read_from)).expanduser()
        top = p.parent if p.name.upper() == "DICOMDIR" else p
        if r != top and top in r.parents:
            return f"{top.name}_{r.name}"
        p = r
    if is_dicom_folder(p):
        return p.name
    suffix = suffix_of(p)
    stem = p.name[: -len(suffix)] if suffix else p.name
    if suffix in (".tif", ".tiff") and stem.lower().endswith(".ome"):
        stem = stem[:-4]  # an OME-TIFF's "scan.ome.tif": "scan", not "scan.ome"
    return stem


def default_axes(shape) -> str:
    """Axes of an array that states none: ``yx``, ``zyx``, ``czyx``, ``tczyx``; a last
    axis of 3 or 4 entries in a 3D/4D array is RGB(A) (``yxs``, ``zyxs``).

    Examples
    --------
    >>> default_axes((584, 565, 3)), default_axes((8, 32, 32)), default_axes((2, 8, 9, 9))
    ('yxs', 'zyx', 'czyx')
    """
    shape = tuple(int(s) for s in shape)
    n = len(shape)
    if n in (3, 4) and shape[-1] in (3, 4) and min(shape[:-1]) > 4:
        return "zyxs"[-n:] if n == 4 else "yxs"
    if n <= 3:
        return "zyx"[-n:] if n else ""
    if n <= 5:
        return "tczyx"[-n:]
    raise VolumeReadError(f"arrays of {n} axes are not supported (shape {shape}).")


def _unit(text) -> str | None:
    if text is None:
        return None
    t = str(text).strip()
    if not t or t.lower() in ("pixel", "pixels", "unknown", "none", "inch"):
        return None
    return _UNIT_ALIASES.get(t.lower(), _UNIT_ALIASES.get(t, t))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0].strip() if text else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _corrupt(path: Path, suffix: str, exc: BaseException) -> VolumeReadError:
    text = f"cannot read {path} as a {_FORMAT[suffix]} file ({_one_line(exc)})"
    if "imagecodecs" in str(exc):  # a compressed TIFF (LZW, zstd, JPEG ...) without it
        text += "; install it: pip install imagecodecs"
    return VolumeReadError(text + ".")


def _check_suffix(path: Path, allowed=SUPPORTED_SUFFIXES) -> str:
    suffix = suffix_of(path)
    if suffix not in allowed:
        shown = f"'{suffix}'" if suffix else "no suffix"
        read_only = suffix in READ_ONLY_SUFFIXES
        raise VolumeReadError(
            f"unsupported file type {shown} for {path}: "
            + ("napari-topo reads it but writes " if read_only else "use one of ")
            + ", ".join(allowed)
            + ("" if read_only or allowed is SUPPORTED_SUFFIXES else ", or a DICOM folder")
            + "."
        )
    return suffix


def _spacing_tuple(spacing, ndim: int) -> tuple[float, ...] | None:
    """Validated spacing (``ndim`` finite positive floats) or None."""
    if spacing is None:
        return None
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        sp = ()
    if len(sp) != ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(
            f"spacing must be None or {ndim} finite positive numbers (one per axis); "
            f"got {spacing!r}."
        )
    return sp


def _as_writable_array(data) -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim == 0 or arr.dtype.kind not in "biuf":
        raise ValueError(
            f"data must be an array of numbers with at least one axis; "
            f"got {arr.dtype} of shape {arr.shape}."
        )
    return arr


def _import(module: str, suffix: str):
    try:
        return __import__(module)
    except ImportError:
        raise VolumeReadError(
            f"reading/writing {suffix} needs the {module} package: pip install {module}"
        ) from None


def _volume(data, geometry: Geometry, p: Path, assumed: str = "") -> Volume:
    spacing = None if geometry.known == "none" else geometry.spacing
    return Volume(data, spacing, p, geometry, assumed if spacing is not None else "")


def _reverse(affine: np.ndarray) -> np.ndarray:
    """Swap the order of the spatial axes of a homogeneous affine, in and out."""
    n = affine.shape[0] - 1
    idx = [*range(n - 1, -1, -1), n]
    return np.asarray(affine, dtype=float)[np.ix_(idx, idx)]


def _clean_affine(affine: np.ndarray) -> np.ndarray:
    """float32-stored entries as the decimals written (0.6, not 0.6000000238418579)."""
    from ..geometry import _clean

    return np.vectorize(_clean, otypes=[float])(np.asarray(affine, dtype=float))


def _geometry_or_none(d, ndim: int) -> Geometry | None:
    """A Geometry from stored JSON (str or dict) if it fits ``ndim`` axes, else None."""
    if d is None:
        return None
    try:
        if isinstance(d, str):
            d = json.loads(d)
        g = Geometry.from_dict(d)
    except (TypeError, ValueError, KeyError, AttributeError):
        return None
    return g if len(g.axes) == ndim else None


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------
def read_volume(path, *, key: str | None = None) -> Volume:
    """Read a volume with its axes and placement; the format follows the suffix.

    Parameters
    ----------
    path : str or PathLike
        A ``.nii``, ``.nii.gz``, ``.tif``, ``.tiff``, ``.npy``, ``.npz`` file or a
        ``.zarr`` directory (see :data:`SUPPORTED_SUFFIXES`); read only: a folder holding
        a DICOM series (or, holding none itself, whose subfolders hold one: a DICOMDIR
        export, searched as :func:`holds_dicom` says), a ``.dcm`` file of one,
        ``.nrrd``/``.nhdr``, ``.mha``/``.mhd`` (:data:`READ_ONLY_SUFFIXES`; these need
        SimpleITK).
    key : str, optional
        Name of the array in a ``.npz`` file or a zarr group, or the SeriesInstanceUID of
        the series in a DICOM folder that holds several. Default: the only one there.
        Not allowed for single-array formats.

    Returns
    -------
    Volume
        ``(data, spacing, path, geometry)``; ``data`` axes as ``geometry.axes``
        (``(z, y, x)`` for a plain volume), ``spacing`` of the spatial axes or None.
        ``.npy`` files come memory-mapped (read-only) and zarr arrays unloaded; other
        formats are read into memory (an uncompressed, unscaled NIfTI may come as a
        memmap).

    Raises
    ------
    VolumeReadError
        Missing path, unsupported suffix, unreadable or corrupt file, ``key`` missing or
        needed, zarr or SimpleITK not installed, a folder without DICOM files. The
        message is one line that names the path.
    """
    p = Path(os.fspath(path)).expanduser()
    if not p.exists() and not suffix_of(p):
        raise VolumeReadError(f"no such file or folder: {p}")
    if p.is_dir() and suffix_of(p) not in (".zarr", ".ome.zarr"):
        if not is_dicom_folder(p) and _is_ome_zarr(p):
            # an OME-Zarr image group without the suffix: a bioformats2raw series
            # ("converted.ome.zarr/0") or a zarr store named otherwise
            return _read_ome_zarr(p, key)
        if not is_dicom_folder(p):
            below = _dicom_subfolders(p, first_only=True)
            if not below:
                raise VolumeReadError(
                    f"cannot read {p}: a folder is read as a DICOM series (or a .zarr), "
                    f"and none of its first {_DICOM_PROBE_FILES} files is a DICOM file, "
                    f"nor do its subfolders hold any (searched {_DICOM_SEARCH_DEPTH} levels "
                    + (
                        f"down, stopped after {_DICOM_SEARCH_FOLDERS} folders)."
                        if below.truncated
                        else "down)."
                    )
                )
        return _read_dicom(p, key)
    if p.is_file() and p.name.upper() == "DICOMDIR":
        return read_volume(p.parent, key=key)  # a CD's index: its folder's series
    if (
        p.is_file()
        and suffix_of(p) not in (*SUPPORTED_SUFFIXES, *READ_ONLY_SUFFIXES)
        and _is_dicom_file(p)
    ):
        # a CD's image files have no suffix (IM000001) or a UID's digits as one
        return _read_dicom(p.parent, key, member=p)
    suffix = _check_suffix(p, (*SUPPORTED_SUFFIXES, *READ_ONLY_SUFFIXES))
    if not p.exists():
        raise VolumeReadError(f"no such file: {p}")
    if suffix == ".dcm":
        return _read_dicom(p.parent, key, member=p)
    if suffix in READ_ONLY_SUFFIXES:
        if key is not None:
            raise VolumeReadError(
                f"key={key!r} given for {p}, but a {_FORMAT[suffix]} file holds one image."
            )
        return _read_itk_file(p, suffix)
    if suffix == ".ome.zarr" or (suffix == ".zarr" and _is_ome_zarr(p)):
        # key: a bioformats2raw layout's image series (refused for a plain image)
        return _read_ome_zarr(p, key)
    if key is not None and suffix not in (".npz", ".zarr"):
        raise VolumeReadError(
            f"key={key!r} given for {p}, but only .npz files, zarr groups and DICOM folders "
            "hold several arrays."
        )
    if suffix in (".nii", ".nii.gz"):
        return _read_nifti(p, suffix)
    if suffix in (".tif", ".tiff"):
        return _read_tiff(p, suffix)
    if suffix == ".npy":
        try:
            data = np.load(p, mmap_mode="r", allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any library failure is "corrupt"
            raise _corrupt(p, suffix, exc) from exc
        return _volume(data, _plain(data.shape, p), p)
    if suffix == ".npz":
        return _read_npz(p, suffix, key)
    return _read_zarr(p, suffix, key)


def _sitk(what: str):
    try:
        import SimpleITK as sitk
    except ImportError:
        raise VolumeReadError(
            f"reading {what} needs the SimpleITK package: pip install SimpleITK "
            "(or napari-topo[medical])"
        ) from None
    # ITK's multi-line WARNING blocks on stderr (uneven series, corrupt files) beside
    # our one-line errors: the checks below say what matters, once
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    return sitk


def _itk_error(exc: BaseException) -> str:
    """The reason in an ITK exception, not its first line, which only names the source
    file of ITK that threw: its last line, without ITK's ``ERROR: Class(0x...):`` or a
    library's ``[nrrd] function:`` prefix."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if len(lines) < 2:
        return _one_line(exc)
    reason = lines[-1]
    if "ERROR:" in reason and "): " in reason:
        reason = reason.split("): ", 1)[1]
    elif reason.startswith("[") and "] " in reason:
        reason = reason.split("] ", 1)[1]
        head, sep, tail = reason.partition(": ")
        reason = tail if sep and " " not in head else reason
    return reason


def _itk_corrupt(p: Path, what: str, exc: BaseException) -> VolumeReadError:
    return VolumeReadError(f"cannot read {p} as {what} ({_itk_error(exc)}).")


def _nrrd_header(p: Path) -> str:
    """The text header of a NRRD file (up to its blank line; a ``.nhdr`` is all header)."""
    with open(p, "rb") as fh:
        head = fh.read(65536)
    return head.split(b"\n\n", 1)[0].decode("latin-1", "replace")


def _nrrd_placement(p: Path) -> tuple[str | None, bool]:
    """``(unit, stated)`` of a NRRD: its ``space units`` (ITK reads none: mm is assumed
    without them) and whether it states a voxel size at all (``space directions`` or
    ``spacings``; without, ITK's spacing of 1 is no measurement)."""
    unit, stated = "mm", False
    for line in _nrrd_header(p).splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("space directions", "spacings"):
            stated = stated or any(c.isdigit() for c in value)
        elif key == "space units":
            units = {_unit(u.strip().strip('"')) for u in value.split('" "')} - {None}
            unit = units.pop() if len(units) == 1 else unit
    return unit, stated


def _itk_volume(
    sitk, img, p: Path, modality: str | None = None, unit: str = "mm", known: str = "full"
) -> Volume:
    """A :class:`Volume` from an ITK image: array ``([c,] [z,] y, x)``, placement in RAS
    (ITK's LPS with x and y negated), lengths in ``unit``."""
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]  # one multi-frame file read as a series of one
    n = int(img.GetDimension())
    if n not in (2, 3):
        raise VolumeReadError(f"cannot read {p}: {n}D images are not supported (2D or 3D).")
    data = sitk.GetArrayFromImage(img)  # (z, y, x[, c]): ITK's index order reversed
    axes = "zyx"[-n:]
    if img.GetNumberOfComponentsPerPixel() > 1:
        data, axes = np.moveaxis(data, -1, 0), "c" + axes
    xyz = np.eye(n + 1)
    xyz[:n, :n] = np.asarray(img.GetDirection(), float).reshape(n, n) @ np.diag(img.GetSpacing())
    xyz[:n, n] = img.GetOrigin()
    xyz[:2] *= -1.0  # LPS -> RAS: world x and y negated (the homogeneous row untouched)
    xyz += 0.0  # no -0.0 entries in the affine shown
    try:
        geometry = Geometry(_clean_affine(_reverse(xyz)), axes, unit=unit, known=known)
    except ValueError as exc:
        raise VolumeReadError(f"cannot read {p}: unusable placement ({exc})") from None
    return _volume(data, geometry, p)._replace(modality=modality)


def _read_itk_file(p: Path, suffix: str) -> Volume:
    sitk = _sitk(f"{_FORMAT[suffix]} files")
    try:
        img = sitk.ReadImage(str(p))
        unit, stated = _nrrd_placement(p) if suffix in (".nrrd", ".nhdr") else ("mm", True)
    except Exception as exc:  # noqa: BLE001 - ITK raises RuntimeError for anything
        raise _itk_corrupt(p, f"a {_FORMAT[suffix]} file", exc) from exc
    if not stated:
        return _itk_volume(sitk, img, p, unit=None, known="none")
    return _itk_volume(sitk, img, p, unit=unit)


#: DICOM Modality values that say CT or not (``header_hint``); others (OT, SC: a CT
#: exported as a secondary capture) leave the decision to the values.
_TELLING_MODALITIES = ("ct", "mr", "pt", "nm", "us", "xa")


def _slice_check(reader, img, folder: Path) -> None:
    """Refuse a series whose slices are not evenly spaced or share a position (several
    echoes or phases under one SeriesInstanceUID), as the benchmark's converter does:
    ITK stacks them with a mean spacing and only warns."""
    n = img.GetSize()[2] if img.GetDimension() == 3 else 1
    tag = "0020|0032"
    if n < 3 or not all(reader.HasMetaDataKey(k, tag) for k in range(n)):
        return
    pos = np.array([[float(v) for v in reader.GetMetaData(k, tag).split("\\")] for k in range(n)])
    normal = np.asarray(img.GetDirection(), float).reshape(3, 3)[:, 2]
    steps = np.diff(pos @ normal)
    if np.any(np.abs(steps) <= 1e-6):
        raise VolumeReadError(
            f"cannot read {folder}: two slices share one position (several echoes, "
            "phases or times in one series?); split them into folders"
        )
    step = float(np.median(steps))
    if np.max(np.abs(steps - step)) > 0.01 * abs(step):
        raise VolumeReadError(
            f"cannot read {folder}: its slices are not evenly spaced (steps "
            f"{np.abs(steps).min():g}-{np.abs(steps).max():g} mm; a slice missing?): "
            "resample it first"
        )


def _damaged_check(sitk, reader, folder: Path, uid: str, ids) -> None:
    """Refuse a series with a file GDCM left out (damaged or truncated): files of
    ``folder`` in no series that are DICOM files whose header cannot be read or says
    they are of ``uid``, or that are named like the series' files (same suffix, or none)
    but hold no DICOM (GDCM drops such files silently: a damaged last slice made a
    shorter volume, a damaged middle one an uneven spacing)."""
    listed = set()
    for other in ids:
        listed.update(
            os.path.normpath(f) for f in reader.GetGDCMSeriesFileNames(str(folder), other)
        )
    try:
        with os.scandir(folder) as entries:
            left = [
                Path(e.path)
                for e in entries
                if e.is_file()
                and e.name.upper() != "DICOMDIR"
                and os.path.normpath(e.path) not in listed
            ]
    except OSError:
        return

    def kind(name: str) -> str:  # IM000001, 1.2.840.1136 and image_7 alike: no suffix
        suffix = Path(name).suffix.lower()
        return "" if suffix[1:].isdigit() else suffix

    kinds = {kind(f) for f in listed}
    bad = []
    for f in left:
        if not _is_dicom_file(f):
            if kind(f.name) in kinds and f.stat().st_size > 0:
                bad.append(f.name)  # named like the series' files, no DICOM inside
            continue
        one = sitk.ImageFileReader()
        one.SetFileName(str(f))
        try:
            one.ReadImageInformation()
            same = one.HasMetaDataKey("0020|000e") and one.GetMetaData("0020|000e").strip() == uid
        except Exception:  # noqa: BLE001 - ITK raises RuntimeError for anything
            same = True
        if same:
            bad.append(f.name)
            if len(bad) >= 3:
                break
    if bad:
        raise VolumeReadError(
            f"cannot read {folder}: {', '.join(bad)} could not be read as part of its "
            "series (damaged or truncated?): replace or remove "
            + ("it" if len(bad) == 1 else "them")
        )


def _read_dicom(folder: Path, key: str | None, member: Path | None = None) -> Volume:
    """The DICOM series in ``folder`` (the one ``member`` belongs to, or ``key``)."""
    sitk = _sitk("DICOM series")
    reader = sitk.ImageSeriesReader()
    try:
        ids = list(reader.GetGDCMSeriesIDs(str(folder)))
        if member is not None and key is None:
            fr = sitk.ImageFileReader()
            fr.SetFileName(str(member))
            fr.ReadImageInformation()
            key = fr.GetMetaData("0020|000e").strip() if fr.HasMetaDataKey("0020|000e") else None
    except Exception as exc:  # noqa: BLE001
        raise _itk_corrupt(member or folder, "DICOM", exc) from exc
    if not ids and member is None:
        return _read_nested_dicom(sitk, reader, folder, key)
    if not ids:
        raise VolumeReadError(f"cannot read {folder}: no DICOM image series in it.")
    if key is None and len(ids) > 1:
        listed = ", ".join(
            f"{uid} ({len(reader.GetGDCMSeriesFileNames(str(folder), uid))} files)"
            for uid in ids[:5]
        )
        raise VolumeReadError(
            f"{folder} holds {len(ids)} DICOM series: choose one by its SeriesInstanceUID "
            f"(key=..., --key on the command line): {listed}" + (" ..." if len(ids) > 5 else "")
        )
    uid = ids[0] if key is None else str(key)
    if uid not in ids:
        raise VolumeReadError(
            f"no DICOM series {uid!r} in {folder}; it holds: " + ", ".join(ids[:5])
        )
    try:
        files = reader.GetGDCMSeriesFileNames(str(folder), uid)
        tag = "0008|0060"
        if len(files) == 1:  # one file: a slice, or a multi-frame (enhanced) image
            one = sitk.ImageFileReader()
            one.SetFileName(files[0])
            img = one.Execute()
            modality = one.GetMetaData(tag) if one.HasMetaDataKey(tag) else ""
        else:
            reader.SetFileNames(files)
            reader.MetaDataDictionaryArrayUpdateOn()  # positions and Modality, below
            img = reader.Execute()
            modality = reader.GetMetaData(0, tag) if reader.HasMetaDataKey(0, tag) else ""
    except Exception as exc:  # noqa: BLE001
        raise _itk_corrupt(folder, "a DICOM series", exc) from exc
    if len(files) > 1:
        _damaged_check(sitk, reader, folder, uid, ids)
        _slice_check(reader, img, folder)
    modality = modality.strip().lower()
    # one slice stays (1, y, x): its orientation (sagittal, coronal) is the 3D affine's
    return _itk_volume(sitk, img, folder, modality if modality in _TELLING_MODALITIES else None)


def _read_nested_dicom(sitk, reader, folder: Path, key: str | None) -> Volume:
    """The DICOM series in ``folder``'s subfolders (a DICOMDIR export): the only one, or
    the one whose SeriesInstanceUID is ``key``; several are listed in one line, and a
    series whose files lie in several folders (split, or copied twice) is refused with
    the folders named rather than read in part."""
    try:
        subs = _dicom_subfolders(folder)
        where: dict[str, list[Path]] = {}
        for sub in subs:
            for uid in reader.GetGDCMSeriesIDs(str(sub)):
                where.setdefault(uid, []).append(sub)
    except Exception as exc:  # noqa: BLE001
        raise _itk_corrupt(folder, "DICOM", exc) from exc
    cut = f" (the search stopped after {_DICOM_SEARCH_FOLDERS} folders)" if subs.truncated else ""
    if not where:
        raise VolumeReadError(
            f"cannot read {folder}: no DICOM image series in it or its subfolders{cut}."
        )

    def rel(sub: Path) -> str:
        return sub.relative_to(folder).as_posix()

    if key is not None and str(key) not in where:
        listed = ", ".join(f"{rel(f[0])} ({uid})" for uid, f in list(where.items())[:6])
        raise VolumeReadError(
            f"no DICOM series {key!r} in {folder} or its subfolders{cut}; they hold: "
            + listed
            + (" ..." if len(where) > 6 else "")
        )
    if key is None and len(where) > 1:

        def files(uid: str) -> str:
            n = sum(len(reader.GetGDCMSeriesFileNames(str(s), uid)) for s in where[uid])
            return f"{n} file" if n == 1 else f"{n} files"

        listed = ", ".join(
            f"{' + '.join(rel(s) for s in f)} ({files(uid)}, {uid})"
            for uid, f in list(where.items())[:6]
        )
        raise VolumeReadError(
            f"{folder} holds {len(where)} DICOM series in its subfolders{cut}: open one of "
            "those folders, or choose a series by its SeriesInstanceUID (key=..., --key on "
            f"the command line): {listed}" + (" ..." if len(where) > 6 else "")
        )
    uid = str(key) if key is not None else next(iter(where))
    if len(where[uid]) > 1:
        raise VolumeReadError(
            f"cannot read {folder}: the DICOM series {uid} lies in {len(where[uid])} "
            f"folders ({', '.join(rel(s) for s in where[uid][:6])}): split or copied "
            "twice; put its files in one folder and open that"
        )
    return _read_dicom(where[uid][0], uid)


def _plain(shape, p: Path) -> Geometry:
    try:
        return Geometry.identity(default_axes(shape))
    except VolumeReadError as exc:
        raise VolumeReadError(f"cannot read {p}: {exc}") from None


def _nifti_axes(img, ndim: int) -> str:
    """Axes of the reversed NIfTI array: ``[c][t]zyx``, or what napari-topo recorded."""
    for ext in img.header.extensions:
        if int(ext.get_code()) != _NIFTI_COMMENT:
            continue
        text = ext.get_content()
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        if text.startswith(GEOMETRY_KEY + " axes="):
            axes = text.split("=", 1)[1].strip().rstrip("\x00")
            if len(axes) == ndim:
                return axes
    return "ctzyx"[-ndim:] if ndim > 3 else "zyx"[-ndim:]


@contextlib.contextmanager
def quiet_logger(name: str, level: int = logging.ERROR):
    """Silence a library's logger below ``level`` for the block (nibabel, tifffile and
    ome-zarr log what napari-topo says itself, or repairs it reads correctly, as stray
    stderr lines before the one-line result or error)."""
    log = logging.getLogger(name)
    before = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(before)


def _raw_pixdim(img, p: Path, n: int) -> list[float] | None:
    """The voxel sizes the header states (``pixdim[1:1+n]``, x first), before nibabel's
    check sets a zero one to 1; None when the header cannot be read again."""
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(p)) as fh:
            raw = type(img.header).from_fileobj(fh, check=False)
        return [float(v) for v in raw["pixdim"][1 : 1 + n]]
    except Exception:  # noqa: BLE001 - keep nibabel's reading
        return None


def _read_nifti(p: Path, suffix: str) -> Volume:
    nib = _import("nibabel", suffix)
    # nibabel logs "pixdim[1,2,3] should be non-zero; setting 0 dims to 1" to stderr and
    # goes on with 1: said here instead, as a voxel size the file does not state
    try:
        with quiet_logger("nibabel.global"):
            img = nib.load(p)
        # asanyarray applies scl_slope / scl_inter exactly as nibabel's get_fdata would
        # (keeping the stored dtype when there is no scaling) and reads the whole
        # (possibly gzipped) payload, so a truncated file fails here.
        raw = np.asanyarray(img.dataobj)
        hdr = img.header
        codes = (int(hdr["qform_code"]), int(hdr["sform_code"]))
        zooms = [float(z) for z in hdr.get_zooms()]
        affine = np.asarray(img.affine, dtype=float)
        qform = np.asarray(hdr.get_qform(), dtype=float) if all(codes) else None
        unit = _unit(hdr.get_xyzt_units()[0])
        descrip = bytes(hdr["descrip"].tobytes()).split(b"\0")[0].decode("latin-1")
    except Exception as exc:  # noqa: BLE001
        raise _corrupt(p, suffix, exc) from exc
    if raw.ndim > 5:
        raise VolumeReadError(
            f"cannot read {p}: NIfTI arrays of {raw.ndim} axes are not supported."
        )
    data = raw.transpose(tuple(range(raw.ndim))[::-1])  # (x, y, z[, t[, c]]) -> ([c, t,] z, y, x)
    n = min(raw.ndim, 3)
    axes = _nifti_axes(img, raw.ndim)
    assumed = ""
    if codes == (0, 0):
        # Neither qform nor sform: the file states the voxel size only (nibabel's
        # fallback affine would invent a flip and a centred origin).
        sp = _raw_pixdim(img, p, n) or zooms[:n]
        stated = [math.isfinite(z) and z > 0 for z in sp]
        noted = _ASSUMED_RE.search(descrip)
        if noted:  # written by napari-topo from an input that did not state these
            gone = set(noted.group(1).split(","))
            stated = [ok and a not in gone for a, ok in zip("xyz"[:n], stated, strict=True)]
        if any(stated):
            # an axis of size 0 or NaN is taken as 1, and said so (x, y, z: pixdim order)
            sp = [z if ok else 1.0 for z, ok in zip(sp, stated, strict=True)]
            assumed = "".join(a for a, ok in zip("xyz"[:n], stated, strict=True) if not ok)[::-1]
            xyz = np.eye(n + 1)
            xyz[:n, :n] = np.diag(sp)
            known = "spacing"
        else:
            xyz, known = np.eye(n + 1), "none"
    else:
        xyz = np.eye(n + 1)
        xyz[:n, :n] = affine[:n, :n]
        xyz[:n, n] = affine[:n, 3]
        known = "full"
    kept_qform = None
    if qform is not None and n == 3 and not np.allclose(qform, affine, atol=1e-6):
        # qform and sform differ (a scanner and an aligned space): nibabel places the
        # voxels by the sform; the qform is kept for the files written from this one
        kept_qform = _clean_affine(_reverse(qform))
    try:
        geometry = Geometry(
            _clean_affine(_reverse(xyz)),
            axes,
            unit=unit,
            known=known,
            nifti_codes=codes,
            nifti_qform=kept_qform,
        )
    except ValueError as exc:
        raise VolumeReadError(f"cannot read {p}: unusable NIfTI affine ({exc})") from None
    return _volume(data, geometry, p, assumed)


def _resolution_spacing(page) -> tuple[float, float] | None:
    """(dy, dx) from the Y/XResolution tags (pixels per unit), None if absent."""
    out = []
    for name in ("YResolution", "XResolution"):
        tag = page.tags.get(name)
        if tag is None:
            return None
        num, den = tag.value
        if num <= 0 or den <= 0:
            return None
        out.append(float(Fraction(int(den), int(num))))
    return out[0], out[1]


#: tifffile axis codes -> napari-topo's (others: a stack of planes, see _tiff_axes).
_TIFF_AXES = {"Z": "z", "Y": "y", "X": "x", "C": "c", "T": "t", "S": "s"}


def _tiff_axes(axes: str, shape) -> str:
    """napari-topo axes of a tifffile series: Z, Y, X, C, T, S kept; one other leading
    axis (tifffile's I, Q: pages of unknown meaning) is z, further ones channels."""
    out = []
    for ch in axes.upper():
        letter = _TIFF_AXES.get(ch)
        if letter is None:
            letter = "z" if "z" not in out and "Z" not in axes.upper() else "c"
            if letter in out:
                letter = "t"
        out.append(letter)
    text = "".join(out)
    try:
        Geometry.identity(text)
    except ValueError:
        return default_axes(shape)
    return text


def _ome_spacing(tifffile, xml: str) -> tuple[dict, str | None]:
    """``{"z": dz, "y": dy, "x": dx}`` (those stated) and the unit, from OME-XML."""
    d = tifffile.xml2dict(xml).get("OME", {})
    image = d.get("Image", {})
    if isinstance(image, list):
        image = image[0] if image else {}
    px = image.get("Pixels", {}) if isinstance(image, dict) else {}
    out, units = {}, {}
    for ax in "ZYX":
        v = px.get(f"PhysicalSize{ax}")
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f) and f > 0:
            out[ax.lower()] = f
            # OME's default unit is the micrometre
            units[ax.lower()] = _unit(px.get(f"PhysicalSize{ax}Unit", "um"))
    stated = set(units.values())
    if len(stated) <= 1:
        return out, next(iter(stated), None)
    # each axis in its own unit (z in um, y and x in nm): all in um
    if not stated <= set(METRES_PER_UNIT):
        return {}, None  # units napari-topo cannot convert: no usable voxel size
    return {
        ax: v * METRES_PER_UNIT[units[ax]] / METRES_PER_UNIT["um"] for ax, v in out.items()
    }, "um"


def _read_tiff(p: Path, suffix: str) -> Volume:
    tifffile = _import("tifffile", suffix)
    try:
        # a truncated file: tifffile logs "invalid page offset" (as an error) before the
        # one-line error below says the file cannot be read
        with quiet_logger("tifffile", logging.CRITICAL), tifffile.TiffFile(p) as tif:
            series = tif.series[0]
            data = series.asarray()
            tif_axes = series.axes
            page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
            yx = _resolution_spacing(page)
            res_unit = page.tags.get("ResolutionUnit")
            res_unit = int(res_unit.value) if res_unit is not None else None
            ij = tif.imagej_metadata or {}
            shaped = tif.shaped_metadata or ()
            ome = _ome_spacing(tifffile, tif.ome_metadata) if tif.is_ome else None
    except Exception as exc:  # noqa: BLE001
        raise _corrupt(p, suffix, exc) from exc
    meta = shaped[0] if shaped and isinstance(shaped[0], dict) else {}
    stored = _geometry_or_none(meta.get(GEOMETRY_KEY) or ij.get(GEOMETRY_KEY), data.ndim)
    if stored is not None:  # written by write_volume: the whole geometry
        return _volume(data, stored, p)
    if meta.get("axes") and len(str(meta["axes"])) == data.ndim:
        axes = _tiff_axes(str(meta["axes"]), data.shape)
    else:
        axes = _tiff_axes(tif_axes, data.shape)
    n = sum(ch in "zyx" for ch in axes)
    if "spacing" in meta and not ij:  # an older napari-topo file: spacing per array axis
        try:
            sp_all = _spacing_tuple(meta["spacing"], data.ndim)
        except ValueError:
            sp_all = None
        if sp_all is not None:
            sp = [s for s, ch in zip(sp_all, axes, strict=True) if ch in "zyx"]
            return _volume(data, Geometry.from_spacing(sp, axes=axes), p)
    spacing = {"z": 1.0, "y": 1.0, "x": 1.0}
    unit, known = None, "none"
    stated: set[str] = set()
    if ome is not None and ome[0]:
        spacing.update(ome[0])
        stated.update(ome[0])
        unit, known = ome[1], "spacing"
    elif ij or yx is not None:
        # ImageJ writes "spacing" (z) and the resolution tags (y, x). A file that states
        # nothing (no ImageJ spacing, 1 pixel per unit, no unit) has unknown spacing.
        if "spacing" in ij:
            try:
                spacing["z"] = float(ij["spacing"])
                known = "spacing"
                stated.add("z")
            except (TypeError, ValueError):
                pass
        ij_unit = _unit(ij.get("unit")) if ij else None
        # Resolution tags in inches (ResolutionUnit 2, TIFF's default) without an
        # ImageJ unit are a print resolution (72 dpi from most image writers), not a
        # voxel size: taking them would make y and x 1/72 of z.
        physical = not (res_unit == 2 and ij_unit is None)
        if (
            yx is not None
            and physical
            and (yx != (1.0, 1.0) or (res_unit is not None and res_unit > 1))
        ):
            spacing["y"], spacing["x"] = yx
            known = "spacing"
            stated.update("yx")
        elif yx is not None and ij_unit is not None:
            stated.update("yx")  # ImageJ's 1 pixel per unit in um: a 1 um pixel, stated
        unit = ij_unit if ij else {3: "cm"}.get(res_unit or 0)
        if unit == "cm" and {"y", "x"} <= stated:
            # pixels per centimetre (TIFF's ResolutionUnit 3, or ImageJ's unit cm): a
            # microscope's 0.3 um pixel is 3e-5 cm, and an unstated z step, taken as 1 in
            # the file's unit, would be 1 cm; in um (mm for pixels of 0.1 mm and more)
            # both read sensibly. Every stated axis is converted (ImageJ's z too).
            factor, unit = (1e4, "um") if max(spacing["y"], spacing["x"]) < 0.01 else (10.0, "mm")
            for axis in stated:
                spacing[axis] *= factor
    sp = [spacing[ch] for ch in "zyx"[-n:]] if n else []
    if not all(math.isfinite(s) and s > 0 for s in sp):
        sp, known = [1.0] * n, "none"
    origin = None
    if ij and any(f"{a}origin" in ij for a in "zyx"[-n:]):
        try:
            origin = [
                -float(ij.get(f"{a}origin", 0.0)) * s for a, s in zip("zyx"[-n:], sp, strict=True)
            ]
            known = "full"
        except (TypeError, ValueError):
            origin = None
    try:
        geometry = Geometry.from_spacing(sp, origin, axes=axes, unit=unit, known=known)
    except ValueError:
        geometry = Geometry.identity(default_axes(data.shape))
    assumed = "".join(ch for ch in "zyx"[-n:] if ch not in stated) if stated else ""
    return _volume(data, geometry, p, assumed if geometry.known != "none" else "")


def _read_npz(p: Path, suffix: str, key: str | None) -> Volume:
    try:
        with np.load(p, allow_pickle=False) as npz:
            keys = list(npz.files)
            if key is None and len(keys) == 1:
                key = keys[0]
            if key is None or key not in keys:
                raise VolumeReadError(
                    f"{p} holds arrays {keys}: "
                    + (
                        "pass key= one of them (--key on the command line)."
                        if key is None
                        else f"no array {key!r}."
                    )
                )
            data = npz[key]
    except VolumeReadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _corrupt(p, suffix, exc) from exc
    return _volume(data, _plain(data.shape, p), p)


def _is_ome_zarr(p: Path) -> bool:
    from .ngff import is_ome_zarr

    return is_ome_zarr(p)


def _read_ome_zarr(p: Path, series: str | None = None) -> Volume:
    """Level 0 of an OME-Zarr image, lazily (dask), with its geometry."""
    from .ngff import _group_attrs, read_ome_zarr

    image = read_ome_zarr(p, series)
    geometry = image.geometries[0]
    return _volume(image.levels[0], geometry, p, _assumed_attr(_group_attrs(p) or {}, geometry))


def _assumed_attr(attrs, geometry: Geometry) -> str:
    """The spatial axes :data:`SPACING_ASSUMED_KEY` names (letters of ``"zyx"``), those
    of ``geometry`` only; "" when absent or malformed."""
    value = attrs.get(SPACING_ASSUMED_KEY)
    space = "zyx"[-geometry.ndim :] if geometry.ndim else ""
    if not isinstance(value, str):
        return ""
    return "".join(ch for ch in space if ch in value)


def _check_assumed(spacing_assumed, geom: Geometry) -> str:
    """``spacing_assumed`` as letters of the geometry's spatial axes, z y x order."""
    text = str(spacing_assumed or "").replace(",", "").replace(" ", "")
    space = "zyx"[-geom.ndim :] if geom.ndim else ""
    if any(ch not in space for ch in text) or len(set(text)) != len(text):
        raise ValueError(
            f"spacing_assumed must be letters of the spatial axes {space!r}; got "
            f"{spacing_assumed!r}."
        )
    return "".join(ch for ch in space if ch in text)


def note_spacing_assumed(path, spacing_assumed: str) -> None:
    """Record in a written ``.zarr`` / ``.ome.zarr`` (its array's or group's attributes,
    :data:`SPACING_ASSUMED_KEY`) that the voxel size along ``spacing_assumed`` (letters
    of ``"zyx"``, e.g. ``"z"``) was assumed, not stated by the source. Nothing when
    ``spacing_assumed`` is empty.

    Raises
    ------
    VolumeReadError
        ``path`` is not a zarr array or group that can be written.
    """
    if not spacing_assumed:
        return
    zarr = _import("zarr", ".zarr")
    try:
        node = zarr.open(str(path), mode="r+")
        node.attrs[SPACING_ASSUMED_KEY] = str(spacing_assumed)
    except Exception as exc:  # noqa: BLE001
        raise VolumeReadError(f"cannot write to {path} ({_one_line(exc)}).") from exc


def _read_zarr(p: Path, suffix: str, key: str | None) -> Volume:
    try:
        import zarr
    except ImportError:
        raise VolumeReadError(
            f"reading .zarr needs the zarr package: pip install zarr (for {p})"
        ) from None
    try:
        node = zarr.open(str(p), mode="r")
        if isinstance(node, zarr.Array):
            if key is not None:
                raise VolumeReadError(f"{p} is a single zarr array; key={key!r} is not used.")
            arr = node
        else:
            names = sorted(name for name, _ in node.arrays())
            if key is None and len(names) == 1:
                key = names[0]
            if key is None or key not in names:
                raise VolumeReadError(
                    f"zarr group {p} holds arrays {names}: "
                    + ("pass key= one of them." if key is None else f"no array {key!r}.")
                )
            arr = node[key]
        attrs = dict(arr.attrs)
    except VolumeReadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _corrupt(p, suffix, exc) from exc
    stored = _geometry_or_none(attrs.get(GEOMETRY_KEY), arr.ndim)
    if stored is not None:
        return _volume(arr, stored, p, _assumed_attr(attrs, stored))
    geometry = _plain(arr.shape, p)
    try:
        spacing = _spacing_tuple(attrs.get("spacing"), arr.ndim)
    except ValueError:
        spacing = None  # a foreign, malformed attribute: treat as unknown
    if spacing is not None:
        sp = [s for s, ch in zip(spacing, geometry.axes, strict=True) if ch in "zyx"]
        geometry = Geometry.from_spacing(sp, axes=geometry.axes)
    return _volume(arr, geometry, p)


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
def _geometry_for(shape, spacing, geometry, unit: str | None = None) -> Geometry:
    """The geometry to write: the one given, or one made from a plain spacing (and
    ``unit``)."""
    ndim = len(shape)
    if geometry is not None:
        if spacing is not None or unit is not None:
            raise ValueError("give spacing (and unit) or geometry, not both.")
        if len(geometry.axes) != ndim:
            raise ValueError(
                f"geometry has axes {geometry.axes!r} but the data has {ndim} axes {tuple(shape)}."
            )
        return geometry
    axes = default_axes(shape) if ndim else ""
    n = sum(ch in "zyx" for ch in axes)
    if spacing is None:
        if unit is not None:
            raise ValueError(f"unit {unit!r} needs a spacing (the voxel size in that unit).")
        return Geometry.identity(axes)
    if unit is not None:
        known = _unit(unit)
        if known not in METRES_PER_UNIT:
            raise ValueError(
                f"unit must be one of {', '.join(METRES_PER_UNIT)} (or a spelling of one, "
                f"such as 'micron' or 'µm'); got {unit!r}."
            )
        unit = known
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        sp = ()
    if len(sp) == ndim and ndim != n:  # one per array axis (the older convention)
        sp = tuple(s for s, ch in zip(sp, axes, strict=True) if ch in "zyx")
    if len(sp) != n or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(
            f"spacing must be None or {n} finite positive numbers (one per axis); got {spacing!r}."
        )
    return Geometry.from_spacing(sp, axes=axes, unit=unit)


def write_volume(
    path,
    data,
    *,
    spacing=None,
    unit: str | None = None,
    geometry: Geometry | None = None,
    spacing_assumed: str = "",
) -> Path:
    """Write ``data`` with its geometry (or a plain spacing); format by suffix.

    Parameters
    ----------
    path : str or PathLike
        Target with one of :data:`SUPPORTED_SUFFIXES`; parent folders must exist. An
        existing file (or ``.zarr`` directory) is replaced.
    data : array_like of bool, int or float
        The volume, axes as ``geometry.axes`` (default :func:`default_axes`). bool is
        written as uint8; other dtypes are kept (NIfTI takes the dtype as given, ImageJ
        TIFF for uint8/uint16/int16/float32, a plain tifffile TIFF with JSON metadata
        for the rest). A lazy array (zarr, dask) is read in full here, except when
        writing ``.zarr``, which is filled chunk by chunk.
    spacing : sequence of float, optional
        Voxel size of the spatial axes (or, as before, one per array axis): an
        axis-aligned geometry at the origin. Not together with ``geometry``.
    unit : str, optional
        The length unit of ``spacing`` (``"mm"``, ``"um"``, ...), written where the
        format can say it (NIfTI ``xyzt_units``, ImageJ ``unit``, zarr attributes), so
        that reading the file back gives lengths in that unit; without it the voxel size
        is unitless. Needs ``spacing``.
    geometry : Geometry, optional
        Axes and placement, e.g. ``read_volume(input).geometry`` so that the file
        overlays the input. NIfTI: the affine as qform and sform with the input's
        codes, unit, and (when not NIfTI's own x, y, z, t, c) the axes in a header
        extension. TIFF: ImageJ ``spacing``, ``unit``, ``x/y/zorigin`` and
        X/YResolution, plus the whole geometry as JSON where ImageJ cannot say it
        (flips, rotations, dtypes or axes ImageJ does not take). zarr: attributes
        ``spacing`` and ``napari_topo_geometry``. ``.npy``/``.npz`` hold the array only.
    spacing_assumed : str, optional
        Spatial axes (letters of ``"zyx"``, e.g. ``"z"``, or ``"zyx"`` for all) whose
        voxel size the source did not state and that were taken as 1
        (:attr:`Volume.assumed`; all axes for a file that states none), so that the
        file does not state them as known. NIfTI: ``descrip`` says so (``"napari-topo:
        z spacing assumed 1, not stated by the input"``; the header still holds 1, as
        NIfTI needs a voxel size); TIFF: ImageJ ``spacing`` (z) and the resolution
        (y and x) are left out and the axes recorded as ``napari_topo_spacing_assumed``;
        zarr and OME-Zarr: that attribute. :func:`read_volume` of such a file assumes
        the same axes again (a NIfTI with all three: no voxel size, as the source).
        ``.npy``/``.npz`` cannot say it.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    VolumeReadError
        Unsupported suffix, missing parent folder, the library failed to write, or a
        needed package is not installed.
    ValueError
        ``data`` is not numeric, ``spacing``/``geometry`` do not match its axes,
        ``unit`` is given without ``spacing`` or with ``geometry``, or
        ``spacing_assumed`` names an axis the data does not have.
    """
    p = Path(os.fspath(path)).expanduser()
    suffix = _check_suffix(p)
    if not p.parent.is_dir():
        raise VolumeReadError(f"cannot write {p}: no such folder {p.parent}")
    if suffix == ".zarr":
        return _write_zarr(p, suffix, data, spacing, geometry, unit, spacing_assumed)
    if suffix == ".ome.zarr":
        from .ngff import write_ome_zarr

        if not (hasattr(data, "shape") and hasattr(data, "dtype")):
            data = np.asarray(data)
        if data.dtype.kind not in "biuf" or not data.shape:
            raise ValueError(
                f"data must be an array of numbers with at least one axis; "
                f"got {data.dtype} of shape {tuple(data.shape)}."
            )
        geom = _geometry_for(data.shape, spacing, geometry, unit)
        assumed = _check_assumed(spacing_assumed, geom)
        out = write_ome_zarr(p, data, geom)
        note_spacing_assumed(out, assumed)
        return out
    arr = _as_writable_array(data)
    geom = _geometry_for(arr.shape, spacing, geometry, unit)
    assumed = _check_assumed(spacing_assumed, geom)
    try:
        if suffix in (".nii", ".nii.gz"):
            _write_nifti(p, suffix, arr, geom, assumed)
        elif suffix in (".tif", ".tiff"):
            _write_tiff(p, suffix, arr, geom, assumed)
        elif suffix == ".npy":
            np.save(p, arr, allow_pickle=False)
        else:
            np.savez_compressed(p, data=arr)
    except VolumeReadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise VolumeReadError(
            f"cannot write {p} as a {_FORMAT[suffix]} file ({_one_line(exc)})."
        ) from exc
    return p


def _write_nifti(p: Path, suffix: str, arr: np.ndarray, geom: Geometry, assumed: str = "") -> None:
    nib = _import("nibabel", suffix)
    if arr.ndim > 5:
        raise ValueError(f"napari-topo writes NIfTI of at most 5 axes; got shape {arr.shape}.")
    # NIfTI's own order is (x, y, z, t, c); other axes orders are kept as they are
    # (reversed) and recorded in a header extension.
    xyz = np.ascontiguousarray(arr.transpose(tuple(range(arr.ndim))[::-1]))
    if geom.unit in METRES_PER_UNIT and geom.unit not in _NIFTI_UNITS:
        # NIfTI states mm, um or m only: cm and nm lengths are converted, not left
        # unitless; a unit over an unknown voxel size (1 assumed) is dropped instead
        near = "mm" if METRES_PER_UNIT[geom.unit] >= METRES_PER_UNIT["mm"] else "um"
        geom = geom.in_unit(near) if geom.known != "none" else geom.replace(unit=None)
    n = geom.ndim
    a4 = np.eye(4)
    rev = _reverse(geom.affine)
    a4[:n, :n] = rev[:n, :n]
    a4[:n, 3] = rev[:n, n]
    # An explicit dtype keeps e.g. int64 labels as they are (nibabel refuses to guess).
    img = nib.Nifti1Image(xyz, a4, dtype=arr.dtype)
    if geom.nifti_codes is not None:
        qcode, scode = geom.nifti_codes
    elif geom.known == "full":
        qcode, scode = 1, 1  # scanner coordinates, as stated by the source
    else:
        qcode, scode = 0, 0  # a voxel size only: no placement is claimed
    qform = a4
    if geom.nifti_qform is not None and n == 3:
        qform = _reverse(geom.nifti_qform)  # the input's own qform (it differed)
    img.set_qform(qform, code=int(qcode))
    img.set_sform(a4, code=int(scode))
    sp = list(geom.spacing[::-1]) + [1.0] * (arr.ndim - n)
    img.header.set_zooms(sp[: arr.ndim])
    img.header.set_xyzt_units(xyz=_NIFTI_UNITS.get(geom.unit or "", "unknown"))
    if assumed:  # NIfTI needs a voxel size: 1 is written, and said to be assumed
        img.header["descrip"] = _ASSUMED_DESCRIP.format(",".join(assumed)).encode()
    default = "ctzyx"[-arr.ndim :] if arr.ndim > 3 else "zyx"[-arr.ndim :]
    if geom.axes != default:
        ext = nib.nifti1.Nifti1Extension(
            _NIFTI_COMMENT, f"{GEOMETRY_KEY} axes={geom.axes}".encode()
        )
        img.header.extensions.append(ext)
    nib.save(img, p)


_IMAGEJ_ORDER = "TZCYXS"


def _write_tiff(p: Path, suffix: str, arr: np.ndarray, geom: Geometry, assumed: str = "") -> None:
    tifffile = _import("tifffile", suffix)
    axes = geom.axes.upper()
    n = geom.ndim
    sp = dict(zip("zyx"[-n:], geom.spacing, strict=True)) if n else {}
    resolution = None
    if geom.known != "none" and "y" in sp and "x" in sp and not {"y", "x"} <= set(assumed):
        resolution = (1.0 / sp["x"], 1.0 / sp["y"])  # pixels per unit along x, y
    rgb = axes.endswith("S") and arr.shape[-1] in (3, 4)
    order = [_IMAGEJ_ORDER.index(ch) for ch in axes]
    if arr.dtype.kind in "iu" and arr.dtype.type not in _IMAGEJ_DTYPES and arr.size:
        # label images (tree ids are int32): ImageJ / Fiji read 16-bit, with the voxel
        # size; a wider type went to tifffile's own format, which they read without it
        lo, hi = int(arr.min()), int(arr.max())
        if 0 <= lo and hi <= np.iinfo(np.uint16).max:
            arr = arr.astype(np.uint16)
        elif np.iinfo(np.int16).min <= lo and hi <= np.iinfo(np.int16).max:
            arr = arr.astype(np.int16)
    imagej = (
        arr.dtype.type in _IMAGEJ_DTYPES
        and order == sorted(order)
        and "Y" in axes
        and "X" in axes
        and (not axes.endswith("S") or (rgb and arr.dtype == np.uint8))
    )
    if imagej:
        metadata: dict[str, Any] = {"axes": axes}
        if geom.known != "none" and "z" in sp and "z" not in assumed:
            metadata["spacing"] = sp["z"]  # an assumed z step is left out, as it came
        if geom.unit:
            metadata["unit"] = "micron" if geom.unit == "um" else geom.unit
        if geom.known == "full" and geom.is_plain:
            for ax, o in zip("zyx"[-n:], geom.origin, strict=True):
                metadata[f"{ax}origin"] = -o / sp[ax]  # ImageJ: origin in pixels
        elif geom.known == "full" or geom.nifti_codes is not None:
            # ImageJ has no direction: the whole geometry, as JSON, for napari-topo
            metadata[GEOMETRY_KEY] = geom.to_json()
        if assumed:
            metadata[SPACING_ASSUMED_KEY] = assumed
        tifffile.imwrite(
            p,
            arr,
            imagej=True,
            resolution=resolution,
            metadata=metadata,
            photometric="rgb" if rgb else "minisblack",
        )
    else:
        # ImageJ cannot hold this dtype (or axis order): tifffile's own format keeps the
        # array as it is and the geometry as JSON in the ImageDescription.
        metadata = {"axes": axes, GEOMETRY_KEY: geom.to_dict()}
        if assumed:
            metadata[SPACING_ASSUMED_KEY] = assumed
        tifffile.imwrite(
            p,
            arr,
            photometric="rgb" if rgb else "minisblack",
            resolution=resolution,
            metadata=metadata,
        )


def _write_zarr(p: Path, suffix: str, data, spacing, geometry, unit=None, assumed="") -> Path:
    try:
        import zarr
    except ImportError:
        raise VolumeReadError(
            f"writing .zarr needs the zarr package: pip install zarr (for {p})"
        ) from None
    if not (hasattr(data, "shape") and hasattr(data, "dtype")):
        data = np.asarray(data)
    shape = tuple(int(s) for s in data.shape)
    dtype = np.dtype(data.dtype)
    if dtype.kind == "b":
        dtype = np.dtype(np.uint8)
    if not shape or dtype.kind not in "biuf":
        raise ValueError(
            f"data must be an array of numbers with at least one axis; "
            f"got {dtype} of shape {shape}."
        )
    geom = _geometry_for(shape, spacing, geometry, unit)
    assumed = _check_assumed(assumed, geom)
    chunks = tuple(min(ZARR_CHUNK, max(s, 1)) for s in shape)
    try:
        out = zarr.open(str(p), mode="w", shape=shape, chunks=chunks, dtype=dtype)
        if geom.known != "none":
            out.attrs["spacing"] = [
                geom.spacing[geom.spatial_axes.index(i)] if ch in "zyx" else 1.0
                for i, ch in enumerate(geom.axes)
            ]
        out.attrs[GEOMETRY_KEY] = geom.to_dict()
        if assumed:
            out.attrs[SPACING_ASSUMED_KEY] = assumed
        # Copy a slab of chunks along the first axis at a time: bounded memory for lazy
        # (zarr, dask, memmap) sources.
        step = chunks[0]
        for start in range(0, shape[0], step):
            block = np.asarray(data[start : start + step])
            out[start : start + step] = block.astype(dtype, copy=False)
    except Exception as exc:  # noqa: BLE001
        raise VolumeReadError(f"cannot write {p} as a zarr array ({_one_line(exc)}).") from exc
    return p
