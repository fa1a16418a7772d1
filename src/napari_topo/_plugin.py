"""napari (npe2) contributions for files: NIfTI reader, Labels/centerline writers, sample.

Thin adapters between napari's plugin interface and the Qt-free core:

* :func:`get_reader` opens ``.nii`` / ``.nii.gz`` files through
  :func:`napari_topo.data.io.read_volume` (axes ``(z, y, x)``, voxel spacing as the
  layer ``scale``) and picks Image or Labels with :func:`is_label_volume`;
* :func:`write_labels` writes a Labels layer with its scale as voxel spacing
  (NIfTI or ImageJ TIFF) through :func:`napari_topo.data.io.write_volume`;
* :func:`write_graph` writes a centerline Points layer (as made by
  :func:`napari_topo.layers.points_layer`) as a CSV table, or as SWC when the layer
  carries parent links;
* :func:`make_sample_data` returns a synthetic vessel volume with its ground truth.

No Qt here, and napari itself is not imported: everything is plain layer data tuples
``(data, meta, layer_type)``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_topo.data.io import read_volume, suffix_of, write_volume

__all__ = [
    "MAX_LABEL_VALUES",
    "get_reader",
    "is_label_volume",
    "make_sample_data",
    "read_nifti",
    "write_graph",
    "write_labels",
]

#: Suffixes the napari reader claims.
READER_SUFFIXES = (".nii", ".nii.gz")
#: Suffixes :func:`write_labels` writes.
LABELS_SUFFIXES = (".nii", ".nii.gz", ".tif", ".tiff")
#: Suffixes :func:`write_graph` writes.
GRAPH_SUFFIXES = (".csv", ".swc")
#: An integer volume with at most this many distinct values (in a sample) opens as
#: Labels. 64 rather than 256: an 8-bit intensity image has up to 256 grey levels and
#: uses most of them, while a mask has 2 values and a tree label volume one per tree.
MAX_LABEL_VALUES = 64
#: Voxels looked at by :func:`is_label_volume` (a strided subsample beyond that).
_LABEL_SAMPLE = 1 << 21
_AXES = {2: ("y", "x"), 3: ("z", "y", "x")}


# --------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------
def is_label_volume(data) -> bool:
    """Whether ``data`` looks like a label volume (mask, tree ids) rather than an image.

    The rule, cheap on any size: bool data is labels; float data is an image; integer
    data is labels when a strided subsample of at most ``2**21`` voxels holds no
    negative value and at most :data:`MAX_LABEL_VALUES` distinct values.

    Examples
    --------
    >>> is_label_volume(np.array([[0, 1], [2, 0]], np.uint8))
    True
    >>> is_label_volume(np.arange(200, dtype=np.uint8))  # many grey levels
    False
    >>> is_label_volume(np.zeros((2, 2), np.float32))
    False
    """
    dtype = np.dtype(data.dtype)
    if dtype.kind == "b":
        return True
    if dtype.kind not in "iu":
        return False
    size = int(np.prod(data.shape, dtype=np.int64))
    step = max(1, math.ceil((size / _LABEL_SAMPLE) ** (1.0 / max(len(data.shape), 1))))
    sample = np.asarray(data[(slice(None, None, step),) * len(data.shape)])
    if sample.size == 0:
        return True
    if dtype.kind == "i" and sample.min() < 0:
        return False
    return np.unique(sample).size <= MAX_LABEL_VALUES


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(suffix_of(path))] if suffix_of(path) else name


def _claims(path) -> bool:
    return isinstance(path, str | os.PathLike) and suffix_of(path) in READER_SUFFIXES


def get_reader(path) -> Callable | None:
    """npe2 reader: :func:`read_nifti` for ``.nii``/``.nii.gz`` paths, else None.

    ``path`` may be one path or a list of them; a list is claimed only if every entry
    is a NIfTI file.
    """
    paths = path if isinstance(path, list | tuple) else [path]
    if not paths or not all(_claims(p) for p in paths):
        return None
    return read_nifti


def read_nifti(path) -> list[tuple[Any, dict, str]]:
    """Read one or more NIfTI files as napari layer data tuples.

    Each file becomes ``(data, meta, layer_type)`` with data in ``(z, y, x)`` order,
    ``meta["name"]`` the file name without suffix, ``meta["scale"]`` the voxel
    spacing (if the header gives it), ``meta["metadata"]`` the source path and
    spacing, and ``layer_type`` ``"labels"`` or ``"image"`` by :func:`is_label_volume`.

    Raises
    ------
    napari_topo.data.io.VolumeReadError
        One-line message for a missing or corrupt file (napari shows it).
    """
    paths = path if isinstance(path, list | tuple) else [path]
    out = []
    for p in paths:
        vol = read_volume(p)
        meta: dict[str, Any] = {
            "name": _stem(vol.path),
            "metadata": {
                "path": str(vol.path),
                "spacing": vol.spacing,
                "format": "NIfTI",
            },
        }
        if vol.spacing is not None:
            meta["scale"] = vol.spacing
        data = vol.data
        kind = "labels" if is_label_volume(data) else "image"
        if kind == "labels" and data.dtype == bool:
            data = data.view(np.uint8)
        out.append((data, meta, kind))
    return out


# --------------------------------------------------------------------------------------
# writers
# --------------------------------------------------------------------------------------
def _suffix_or_raise(path, allowed: Sequence[str], what: str) -> Path:
    p = Path(os.fspath(path)).expanduser()
    if suffix_of(p) not in allowed:
        raise ValueError(f"cannot write {what} to {p.name!r}: use one of {', '.join(allowed)}.")
    return p


def _compact_labels(data) -> np.ndarray:
    """Labels in the smallest unsigned dtype that holds them (uint8/16/32).

    napari makes int32/int64 label arrays; ImageJ/Fiji and many NIfTI tools read
    uint8/uint16 best, and the files are smaller. Negative ids keep the dtype.
    """
    arr = np.asarray(data)
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "iu" or arr.size == 0 or arr.min() < 0:
        return arr
    top = int(arr.max())
    for dt in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dt).max:
            return arr.astype(dt, copy=False)
    return arr


def _spacing_from(meta: Mapping, ndim: int) -> tuple[float, ...] | None:
    scale = meta.get("scale")
    if scale is None:
        return None
    sc = [abs(float(s)) for s in scale][-ndim:]
    return tuple(sc) if len(sc) == ndim and all(s > 0 for s in sc) else None


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer: a Labels layer to NIfTI or TIFF with its spacing.

    The layer ``scale`` becomes the voxel spacing (NIfTI header zooms, ImageJ
    spacing/resolution); ids are stored in the smallest unsigned integer type that
    holds them. A multiscale layer is written at full resolution.

    Returns
    -------
    list of str
        The one path written.
    """
    p = _suffix_or_raise(path, LABELS_SUFFIXES, "a Labels layer")
    if isinstance(data, list | tuple):  # multiscale: the first level is full resolution
        data = data[0]
    arr = _compact_labels(data)
    return [str(write_volume(p, arr, spacing=_spacing_from(meta, arr.ndim)))]


def _column(features, name: str, m: int):
    """Column ``name`` of a features table (DataFrame or mapping) as an array, or None."""
    if features is None:
        return None
    try:
        if name not in features:
            return None
        col = np.asarray(features[name])
    except (TypeError, KeyError):
        return None
    return col if col.shape == (m,) else None


def _graph_columns(data, meta: Mapping) -> dict[str, Any]:
    pts = np.asarray(data, dtype=float)
    if pts.ndim != 2 or pts.shape[1] not in (2, 3) or not np.isfinite(pts).all():
        raise ValueError(
            f"a centerline Points layer must hold (M, 2) or (M, 3) finite coordinates; "
            f"got shape {pts.shape}."
        )
    m, nd = pts.shape
    scale = meta.get("scale")
    translate = meta.get("translate")
    sc = np.ones(nd) if scale is None else np.asarray(scale, dtype=float)[-nd:]
    tr = np.zeros(nd) if translate is None else np.asarray(translate, dtype=float)[-nd:]
    feats = meta.get("features")
    radius = _column(feats, "radius", m)
    if radius is None and meta.get("size") is not None:
        # points_layer sizes markers as diameter / scale[-1]; invert that
        size = np.broadcast_to(np.asarray(meta["size"], dtype=float), (m,))
        radius = size / 2.0 * abs(sc[-1])
    tree = _column(feats, "tree", m)
    parent = _column(feats, "parent", m)
    ids = _column(feats, "id", m)
    return {
        "voxel": pts,
        "world": pts * sc + tr,
        "scale": sc,
        "radius": None if radius is None else radius.astype(float),
        "tree": None if tree is None else tree.astype(np.int64),
        "parent": None if parent is None else parent.astype(np.int64),
        "id": np.arange(m, dtype=np.int64) if ids is None else ids.astype(np.int64),
    }


def _swc_order(ids: np.ndarray, parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows in parent-before-child order and each row's parent row (-1 = root).

    Parents are given as node ids (``ids``); a parent id that is not there (a deleted
    point) makes its child a root.
    """
    row_of = {int(i): r for r, i in enumerate(ids.tolist())}
    if len(row_of) != len(ids):
        raise ValueError("the 'id' feature of the Points layer must be unique.")
    prow = np.array([row_of.get(int(q), -1) for q in parent.tolist()], dtype=np.int64)
    children: dict[int, list[int]] = {}
    for r, q in enumerate(prow.tolist()):
        children.setdefault(q, []).append(r)
    order: list[int] = []
    stack = list(reversed(children.get(-1, [])))
    while stack:
        r = stack.pop()
        order.append(r)
        stack.extend(reversed(children.get(r, [])))
    if len(order) != len(ids):
        raise ValueError("the 'parent' feature of the Points layer has a cycle; cannot write SWC.")
    return np.asarray(order, dtype=np.int64), prow


def write_graph(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer: a centerline Points layer to CSV or SWC.

    CSV (one row per point, with header): ``id``; ``z, y, x`` the voxel (data)
    coordinates (written as integers where they are whole), as in
    :meth:`napari_topo.analysis.VesselAnalysis.to_csv`;
    ``z_physical, y_physical, x_physical`` the world coordinates (``voxel * scale +
    translate``); then ``radius`` (physical), ``tree`` and ``parent`` where the layer
    has those features. 2D layers have ``y, x`` only.

    SWC needs a ``parent`` feature (parent node id, -1 for roots; node ids are the
    ``id`` feature or the row index): one line ``n 3 x y z R P`` per point with
    physical (world) coordinates, parents before children, as
    :meth:`~napari_topo.analysis.VesselAnalysis.to_swc`.

    Any Points layer with coordinates can be written to CSV; ``radius`` falls back to
    the marker size, ``tree`` is left out when missing.

    Returns
    -------
    list of str
        The one path written.

    Raises
    ------
    ValueError
        Unsupported suffix, coordinates not (M, 2)/(M, 3), or SWC without parents.
    """
    p = _suffix_or_raise(path, GRAPH_SUFFIXES, "a centerline Points layer")
    cols = _graph_columns(data, meta)
    nd = cols["voxel"].shape[1]
    axes = _AXES[nd]
    if suffix_of(p) == ".swc":
        if cols["parent"] is None:
            raise ValueError(
                "SWC needs parent links: this Points layer has no 'parent' feature; "
                "save it as .csv, or save the analysis result (VesselAnalysis.to_swc)."
            )
        order, prow = _swc_order(cols["id"], cols["parent"])
        swc_id = np.empty(len(order), dtype=np.int64)
        swc_id[order] = np.arange(1, len(order) + 1)
        world = cols["world"] if nd == 3 else np.c_[np.zeros(len(order)), cols["world"]]
        radius = cols["radius"] if cols["radius"] is not None else np.zeros(len(order))
        tree = cols["tree"]
        lines = [
            "# napari-topo vessel centerline forest (from a napari Points layer)",
            "# scale ("
            + ", ".join(axes)
            + "): "
            + ", ".join(repr(float(s)) for s in cols["scale"]),
            "# coordinates: physical units, x y z order; type 3; parent -1 = root",
        ]
        if tree is not None:
            lines += [f"# root {int(swc_id[r])}: tree {int(tree[r])}" for r in order if prow[r] < 0]
        lines.append("# id type x y z radius parent")
        for r in order.tolist():
            z, y, x = world[r].tolist()
            par = int(swc_id[prow[r]]) if prow[r] >= 0 else -1
            lines.append(f"{int(swc_id[r])} 3 {x:.6g} {y:.6g} {z:.6g} {radius[r]:.6g} {par}")
        p.write_text("\n".join(lines) + "\n")
        return [str(p)]
    header = ["id", *axes, *(f"{a}_physical" for a in axes)]
    extra = [k for k in ("radius", "tree", "parent") if cols[k] is not None]
    with p.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header + extra)
        for r in range(len(cols["id"])):
            vox = [int(v) if v.is_integer() else v for v in cols["voxel"][r].tolist()]
            row = [int(cols["id"][r]), *vox, *cols["world"][r].tolist()]
            row += [cols[k][r].item() for k in extra]
            w.writerow([repr(v) if isinstance(v, float) else v for v in row])
    return [str(p)]


# --------------------------------------------------------------------------------------
# sample data: in napari_topo._sample (light imports and a cache; napari calls it on its
# GUI thread), kept importable from here
# --------------------------------------------------------------------------------------
from napari_topo._sample import SAMPLE_SEED, SAMPLE_SHAPE, make_sample_data  # noqa: E402, F401
