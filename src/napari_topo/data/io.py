"""Read and write volumes with their voxel spacing: NIfTI, TIFF, NumPy and zarr.

One entry point each way, chosen by the file suffix:

* :func:`read_volume` returns a :class:`Volume` ``(data, spacing, path)`` whose ``data``
  is in napari-topo's axis order, ``(z, y, x)`` for 3D, and whose ``spacing`` is the
  physical voxel size per axis of ``data`` (same order), or None where the file does not
  say;
* :func:`write_volume` writes an array (and its spacing) so that
  ``read_volume(write_volume(path, a, spacing=s))`` gives ``a`` (same values, shape and
  dtype, bool aside) and ``s`` back.

Formats, and the well-kept libraries that read them (rather than parsers of our own):

========== ============ ===================================================================
suffix     library      axes and spacing
========== ============ ===================================================================
.nii(.gz)  nibabel      stored (x, y, z[, t]); returned reversed, spacing = header zooms
                        reversed; the scaling slope/intercept applied as nibabel does
.tif(f)    tifffile     stored (z, y, x); spacing from ImageJ metadata (``spacing`` = z)
                        and the X/YResolution tags, or from tifffile's JSON metadata
.npy       numpy        memory-mapped (read-only), spacing None
.npz       numpy        the array under ``key`` (or the only one), spacing None
.zarr      zarr         an array, or one array of a group; stays lazy; spacing from the
                        ``spacing`` attribute
========== ============ ===================================================================

Every failure a user can cause (missing file, unknown suffix, corrupt file, ambiguous
``.npz``/zarr group, zarr not installed) raises :class:`VolumeReadError`, a
:class:`ValueError` with a one-line message that names the path. Content is not checked
here (2D, RGB, NaN are the callers' business): a reader returns what the file holds.

This module imports numpy only; nibabel, tifffile and zarr are imported when used. No Qt,
no napari.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
>>> p = write_volume(d / "a.nii.gz", a, spacing=(2.0, 0.5, 0.5))
>>> vol = read_volume(p)
>>> vol.data.shape, vol.spacing
((2, 3, 4), (2.0, 0.5, 0.5))
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "SUPPORTED_SUFFIXES",
    "Volume",
    "VolumeReadError",
    "read_volume",
    "suffix_of",
    "write_volume",
]

#: File suffixes :func:`read_volume` and :func:`write_volume` understand (lower case).
SUPPORTED_SUFFIXES = (".nii", ".nii.gz", ".tif", ".tiff", ".npy", ".npz", ".zarr")
_FORMAT = {
    ".nii": "NIfTI",
    ".nii.gz": "NIfTI",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".npy": "NumPy .npy",
    ".npz": "NumPy .npz",
    ".zarr": "zarr",
}
#: dtypes ImageJ can hold; other dtypes go to a plain (tifffile "shaped") TIFF.
_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.int16, np.float32)
#: Chunk edge of zarr arrays written here (64**3 voxels, 1 MiB of float32).
ZARR_CHUNK = 64


class VolumeReadError(ValueError):
    """A volume could not be read or written; the message is one line naming the path."""


class Volume(NamedTuple):
    """A volume read from a file.

    Attributes
    ----------
    data : ndarray, numpy.memmap or zarr.Array
        The array, axes ``(z, y, x)`` for 3D (``(t, z, y, x)`` for a 4D NIfTI). zarr
        arrays are returned unloaded.
    spacing : tuple of float or None
        Physical voxel size per axis of ``data``, or None if the file does not give it.
    path : Path
        The file read.
    """

    data: Any
    spacing: tuple[float, ...] | None
    path: Path


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def suffix_of(path) -> str:
    """Lower-case suffix of ``path``, ``".nii.gz"`` counted as one.

    Examples
    --------
    >>> suffix_of("scan.NII.GZ"), suffix_of("a/b.tif"), suffix_of("noext")
    ('.nii.gz', '.tif', '')
    """
    name = Path(os.fspath(path)).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0].strip() if text else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _corrupt(path: Path, suffix: str, exc: BaseException) -> VolumeReadError:
    return VolumeReadError(f"cannot read {path} as a {_FORMAT[suffix]} file ({_one_line(exc)}).")


def _check_suffix(path: Path) -> str:
    suffix = suffix_of(path)
    if suffix not in SUPPORTED_SUFFIXES:
        shown = f"'{suffix}'" if suffix else "no suffix"
        raise VolumeReadError(
            f"unsupported file type {shown} for {path}: use one of "
            + ", ".join(SUPPORTED_SUFFIXES)
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


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------
def read_volume(path, *, key: str | None = None) -> Volume:
    """Read a volume and its voxel spacing; the format follows the suffix.

    Parameters
    ----------
    path : str or PathLike
        A ``.nii``, ``.nii.gz``, ``.tif``, ``.tiff``, ``.npy``, ``.npz`` file or a
        ``.zarr`` directory (see :data:`SUPPORTED_SUFFIXES`).
    key : str, optional
        Name of the array in a ``.npz`` file or a zarr group. Default: the only array
        there. Not allowed for single-array formats.

    Returns
    -------
    Volume
        ``(data, spacing, path)``; ``data`` axes ``(z, y, x)`` for 3D, ``spacing`` in the
        same order or None. ``.npy`` files come memory-mapped (read-only) and zarr arrays
        unloaded; other formats are read into memory (an uncompressed, unscaled NIfTI
        may come as a memmap).

    Raises
    ------
    VolumeReadError
        Missing path, unsupported suffix, unreadable or corrupt file, ``key`` missing or
        needed, zarr not installed. The message is one line that names the path.
    """
    p = Path(os.fspath(path)).expanduser()
    suffix = _check_suffix(p)
    if not p.exists():
        raise VolumeReadError(f"no such file: {p}")
    if key is not None and suffix not in (".npz", ".zarr"):
        raise VolumeReadError(
            f"key={key!r} given for {p}, but only .npz files and zarr groups hold several arrays."
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
        return Volume(data, None, p)
    if suffix == ".npz":
        return _read_npz(p, suffix, key)
    return _read_zarr(p, suffix, key)


def _read_nifti(p: Path, suffix: str) -> Volume:
    nib = _import("nibabel", suffix)
    try:
        img = nib.load(p)
        # asanyarray applies scl_slope / scl_inter exactly as nibabel's get_fdata would
        # (keeping the stored dtype when there is no scaling) and reads the whole
        # (possibly gzipped) payload, so a truncated file fails here.
        raw = np.asanyarray(img.dataobj)
        # The header stores zooms as float32: take the shortest decimal that gives the
        # same float32 (0.6, not 0.6000000238418579), i.e. what was written.
        zooms = tuple(float(str(np.float32(z))) for z in img.header.get_zooms())
    except Exception as exc:  # noqa: BLE001
        raise _corrupt(p, suffix, exc) from exc
    data = raw.transpose(tuple(range(raw.ndim))[::-1])  # (x, y, z[, t]) -> ([t,] z, y, x)
    zooms = zooms[: raw.ndim][::-1]
    spacing = zooms if len(zooms) == raw.ndim and all(z > 0 for z in zooms) else None
    return Volume(data, spacing, p)


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


def _read_tiff(p: Path, suffix: str) -> Volume:
    tifffile = _import("tifffile", suffix)
    try:
        with tifffile.TiffFile(p) as tif:
            data = tif.asarray()
            page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
            yx = _resolution_spacing(page)
            unit = page.tags.get("ResolutionUnit")
            ij = tif.imagej_metadata or {}
            shaped = tif.shaped_metadata or ()
    except Exception as exc:  # noqa: BLE001
        raise _corrupt(p, suffix, exc) from exc
    spacing = None
    stored = shaped[0].get("spacing") if shaped and isinstance(shaped[0], dict) else None
    if stored is not None:  # written by write_volume for dtypes ImageJ cannot hold
        try:
            spacing = _spacing_tuple(stored, data.ndim)
        except ValueError:
            spacing = None
    elif data.ndim >= 2:
        # ImageJ writes "spacing" (z) and the resolution tags (y, x). A file that states
        # nothing (no ImageJ spacing, 1 pixel per unit, no unit) has unknown spacing.
        stated = "spacing" in ij or (
            yx is not None and (yx != (1.0, 1.0) or (unit is not None and int(unit.value) > 1))
        )
        if stated:
            dy, dx = yx if yx is not None else (1.0, 1.0)
            lead = [1.0] * (data.ndim - 2)
            if lead and "spacing" in ij:
                try:
                    lead[-1] = float(ij["spacing"])
                except (TypeError, ValueError):
                    pass
            spacing = (*lead, dy, dx)
            if not all(math.isfinite(s) and s > 0 for s in spacing):
                spacing = None
    return Volume(data, spacing, p)


def _read_npz(p: Path, suffix: str, key: str | None) -> Volume:
    try:
        with np.load(p, allow_pickle=False) as npz:
            keys = list(npz.files)
            if key is None and len(keys) == 1:
                key = keys[0]
            if key is None or key not in keys:
                raise VolumeReadError(
                    f"{p} holds arrays {keys}: "
                    + ("pass key= one of them." if key is None else f"no array {key!r}.")
                )
            data = npz[key]
    except VolumeReadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _corrupt(p, suffix, exc) from exc
    return Volume(data, None, p)


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
    try:
        spacing = _spacing_tuple(attrs.get("spacing"), arr.ndim)
    except ValueError:
        spacing = None  # a foreign, malformed attribute: treat as unknown
    return Volume(arr, spacing, p)


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
def write_volume(path, data, *, spacing=None) -> Path:
    """Write ``data`` (axes ``(z, y, x)`` for 3D) and its spacing; format by suffix.

    Parameters
    ----------
    path : str or PathLike
        Target with one of :data:`SUPPORTED_SUFFIXES`; parent folders must exist. An
        existing file (or ``.zarr`` directory) is replaced.
    data : array_like of bool, int or float
        The volume. bool is written as uint8; other dtypes are kept (NIfTI takes the
        dtype as given, ImageJ TIFF for uint8/uint16/int16/float32, a plain tifffile
        TIFF with JSON metadata for the rest). A zarr array or other lazy array is read
        in full here, except when writing ``.zarr``, which is filled chunk by chunk.
    spacing : sequence of float, optional
        Physical voxel size per axis of ``data``. NIfTI: header zooms (reversed to
        x, y, z). TIFF: ImageJ ``spacing`` (z) and X/YResolution (y, x), plus the full
        tuple in tifffile's metadata for non-ImageJ dtypes. zarr: ``attrs["spacing"]``.
        ``.npy``/``.npz`` cannot hold it (the array is written; spacing is dropped).

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
        ``data`` is not numeric or ``spacing`` does not match its dimensions.
    """
    p = Path(os.fspath(path)).expanduser()
    suffix = _check_suffix(p)
    if not p.parent.is_dir():
        raise VolumeReadError(f"cannot write {p}: no such folder {p.parent}")
    if suffix == ".zarr":
        return _write_zarr(p, suffix, data, spacing)
    arr = _as_writable_array(data)
    sp = _spacing_tuple(spacing, arr.ndim)
    try:
        if suffix in (".nii", ".nii.gz"):
            _write_nifti(p, suffix, arr, sp)
        elif suffix in (".tif", ".tiff"):
            _write_tiff(p, suffix, arr, sp)
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


def _write_nifti(p: Path, suffix: str, arr: np.ndarray, sp) -> None:
    nib = _import("nibabel", suffix)
    if arr.ndim > 7:
        raise ValueError(f"NIfTI holds at most 7 axes; got shape {arr.shape}.")
    xyz = np.ascontiguousarray(arr.transpose(tuple(range(arr.ndim))[::-1]))
    zooms = (1.0,) * arr.ndim if sp is None else sp[::-1]
    affine = np.eye(4)
    for i, z in enumerate(zooms[:3]):
        affine[i, i] = z
    # An explicit dtype keeps e.g. int64 labels as they are (nibabel refuses to guess).
    img = nib.Nifti1Image(xyz, affine, dtype=arr.dtype)
    img.header.set_zooms(zooms)
    img.header.set_xyzt_units(xyz="unknown")
    nib.save(img, p)


def _write_tiff(p: Path, suffix: str, arr: np.ndarray, sp) -> None:
    tifffile = _import("tifffile", suffix)
    resolution = None
    if sp is not None and arr.ndim >= 2:
        resolution = (1.0 / sp[-1], 1.0 / sp[-2])  # pixels per unit along x, y
    if arr.dtype.type in _IMAGEJ_DTYPES and arr.ndim in (2, 3):
        metadata: dict = {"axes": "ZYX" if arr.ndim == 3 else "YX"}
        if sp is not None and arr.ndim == 3:
            metadata["spacing"] = sp[0]
        tifffile.imwrite(p, arr, imagej=True, resolution=resolution, metadata=metadata)
    else:
        # ImageJ cannot hold this dtype (or shape): tifffile's own format keeps the
        # array as it is and the spacing as JSON in the ImageDescription.
        metadata = {} if sp is None else {"spacing": list(sp)}
        tifffile.imwrite(p, arr, photometric="minisblack", resolution=resolution, metadata=metadata)


def _write_zarr(p: Path, suffix: str, data, spacing) -> Path:
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
    sp = _spacing_tuple(spacing, len(shape))
    chunks = tuple(min(ZARR_CHUNK, max(s, 1)) for s in shape)
    try:
        out = zarr.open(str(p), mode="w", shape=shape, chunks=chunks, dtype=dtype)
        if sp is not None:
            out.attrs["spacing"] = list(sp)
        # Copy a slab of chunks along the first axis at a time: bounded memory for lazy
        # (zarr, dask, memmap) sources.
        step = chunks[0]
        for start in range(0, shape[0], step):
            block = np.asarray(data[start : start + step])
            out[start : start + step] = block.astype(dtype, copy=False)
    except Exception as exc:  # noqa: BLE001
        raise VolumeReadError(f"cannot write {p} as a zarr array ({_one_line(exc)}).") from exc
    return p
