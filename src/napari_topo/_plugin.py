"""napari (npe2) contributions for files: volume/graph reader, Labels/centerline writers, sample.

Thin adapters between napari's plugin interface and the Qt-free core:

* :func:`get_reader` opens volume files (NIfTI, TIFF, ``.npy``, ``.zarr``) through
  :func:`napari_topo.data.io.read_volume` (OME-Zarr images lazily, as multiscale
  layers of their pyramid levels), placed in world space from their geometry
  (``scale``, ``translate``, ``affine`` for oblique scans; channels as
  ``channel_axis``, RGB as ``rgb``), as Image or Labels by :func:`is_label_volume`,
  and napari-topo's vessel graph files (``.csv``, ``.swc``) as Shapes and Points;
* :func:`write_labels` writes a Labels layer where it lies (its scale, translate,
  rotation and affine as the file's geometry; NIfTI or ImageJ TIFF) through
  :func:`napari_topo.data.io.write_volume`;
* :func:`write_graph` writes a centerline Points layer (as made by
  :func:`napari_topo.layers.points_layer`) as a CSV table, or as SWC when the layer
  carries parent links;
* :func:`make_sample_data` returns a synthetic vessel volume with its ground truth.

No Qt here, and napari itself is not imported: everything is plain layer data tuples
``(data, meta, layer_type)``.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_topo.data.io import (
    READ_ONLY_SUFFIXES,
    VolumeReadError,
    holds_dicom,
    is_dicom_folder,
    read_volume,
    suffix_of,
    volume_stem,
    write_volume,
)
from napari_topo.topology.shape import strided_sample

__all__ = [
    "MAX_LABEL_VALUES",
    "get_reader",
    "is_label_volume",
    "make_sample_data",
    "read_graph",
    "read_nifti",
    "read_volumes",
    "write_graph",
    "write_labels",
]

#: Volume suffixes the napari reader claims (napari-topo's graph files besides); DICOM
#: folders too (they have no suffix).
VOLUME_SUFFIXES = (
    ".nii",
    ".nii.gz",
    ".tif",
    ".tiff",
    ".npy",
    ".npz",
    ".zarr",
    ".ome.zarr",
    *READ_ONLY_SUFFIXES,
)
#: Every suffix the napari reader claims (``.csv`` only for napari-topo's node tables).
READER_SUFFIXES = (*VOLUME_SUFFIXES, ".csv", ".swc")
_FORMAT_NAMES = {
    ".nii": "NIfTI",
    ".nii.gz": "NIfTI",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".npy": "NumPy",
    ".zarr": "zarr",
    ".ome.zarr": "OME-Zarr",
    ".dcm": "DICOM series",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
}
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
def _strided_sample(data, max_voxels: int) -> np.ndarray:
    """``data`` read on one regular stride along every axis, at most about
    ``max_voxels`` voxels (:func:`napari_topo.topology.shape.strided_sample`)."""
    return strided_sample(data, max_voxels)[0]


def is_label_volume(data) -> bool:
    """Whether ``data`` looks like a label volume (mask, tree ids) rather than an image.

    The rule, cheap on any size: bool data is labels; float data is an image; integer
    data is labels when a strided subsample of at most ``2**21`` voxels holds no
    negative value and either at most :data:`MAX_LABEL_VALUES` distinct values or a
    32/64-bit type (tree labels, napari's own label arrays: images are 8/16-bit, and a
    CT in HU has negative values).

    Examples
    --------
    >>> is_label_volume(np.array([[0, 1], [2, 0]], np.uint8))
    True
    >>> is_label_volume(np.arange(200, dtype=np.uint8))  # many grey levels
    False
    >>> is_label_volume(np.zeros((2, 2), np.float32))
    False
    """
    return _label_values(data) is not None


def _label_values(data) -> np.ndarray | None:
    """The distinct values of :func:`is_label_volume`'s sample of ``data`` when it is a
    label volume, else None: the reader tells labels and masks apart from one read."""
    dtype = np.dtype(data.dtype)
    if dtype.kind not in "biu":
        return None
    sample = _strided_sample(data, _LABEL_SAMPLE)
    if sample.size == 0:
        return np.unique(sample)
    if dtype.kind == "i" and sample.min() < 0:
        return None
    values = np.unique(sample)
    if dtype.kind == "b" or dtype.itemsize >= 4 or values.size <= MAX_LABEL_VALUES:
        return values
    return None


def _is_graph_csv(path) -> bool:
    """A napari-topo centerline nodes table (``id, [z,] y, x, radius, tree``)?"""
    try:
        with open(os.fspath(path), newline="") as fh:
            header = [c.strip().lower() for c in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError):
        return False
    return header[:1] == ["id"] and {"y", "x", "radius", "tree"} <= set(header)


def _kind(path) -> str | None:
    if not isinstance(path, str | os.PathLike):
        return None
    if holds_dicom(path):  # a DICOM series, or a DICOMDIR export's folders of them
        return "volume"
    suffix = suffix_of(path)
    if suffix in VOLUME_SUFFIXES:
        return "volume"
    if suffix == ".swc":
        return "graph"
    if suffix == ".csv" and _is_graph_csv(path):
        return "graph"
    return None


def get_reader(path) -> Callable | None:
    """npe2 reader: :func:`read_volumes` for volume files (NIfTI, TIFF, ``.npy``,
    ``.zarr``), :func:`read_graph` for napari-topo's vessel graph files (``.swc``, and
    ``.csv`` tables with napari-topo's columns); else None.

    ``path`` may be one path or a list of them; a list is claimed only if every entry
    is of the same kind.
    """
    paths = path if isinstance(path, list | tuple) else [path]
    kinds = {_kind(p) for p in paths}
    if not paths or len(kinds) != 1 or None in kinds:
        return None
    return read_volumes if kinds == {"volume"} else read_graph


def _layer_transform(geometry, axes: str) -> dict[str, Any]:
    """napari ``scale``/``translate`` (and ``affine``) for a layer whose axes are
    ``axes`` (the geometry's, minus a channel axis napari splits off or RGB samples):
    the spatial ones from the geometry, unit scale and no shift on time axes; ``units``
    (napari >= 0.6) when the file states its length unit."""
    from napari_topo.geometry import napari_units

    spatial = geometry.layer_kwargs()
    idx = [i for i, ch in enumerate(axes) if ch in "zyx"]
    nd = len(axes)
    scale, translate = [1.0] * nd, [0.0] * nd
    for k, i in enumerate(idx):
        scale[i] = float(spatial["scale"][k])
        translate[i] = float(spatial["translate"][k])
    out: dict[str, Any] = {"scale": tuple(scale), "translate": tuple(translate)}
    units = napari_units(geometry.unit, axes)
    if units is not None:  # napari >= 0.6 shows them on the scale bar and status bar
        out["units"] = units
    if "affine" in spatial:
        aff = np.eye(nd + 1)
        n = len(idx)
        src = np.asarray(spatial["affine"])
        aff[np.ix_(idx, idx)] = src[:n, :n]
        aff[idx, nd] = src[:n, n]
        out["affine"] = aff
    return out


def _display_orientation(data, geometry):
    """The array with its spatial axes flipped/transposed to run along +z, +y, +x of the
    world (nearest axes for an oblique affine), and its geometry.

    napari then needs a positive ``scale`` and a ``translate`` (plus an ``affine`` only
    for the rotation an oblique scan has left): layers from files stored in different
    orders (RAS, LAS, LPS, ...) overlay voxel for voxel, widgets that copy ``scale`` and
    ``translate`` place their results right, and ``scale`` stays the voxel size.
    numpy arrays are reordered as views.
    """
    from napari_topo.geometry import canonical_orientation, reorient

    if geometry.ndim == 0 or geometry.is_plain:
        return data, geometry
    return reorient(data, geometry, canonical_orientation(geometry.ndim))


def read_volumes(path) -> list[tuple[Any, dict, str]]:
    """Read volume files as napari layer data tuples, placed in world space.

    Each file (through :func:`napari_topo.data.io.read_volume`) becomes
    ``(data, meta, layer_type)``:

    * ``data``: the file's array with its spatial axes reordered to run along the
      world's +z, +y, +x (see :func:`_display_orientation`; a view for numpy arrays);
    * ``meta["scale"]`` the voxel size, ``meta["translate"]`` the origin, and
      ``meta["affine"]`` only for the rotation of an oblique scan, so that
      ``layer.data_to_world`` gives the file's world coordinates of every voxel;
    * a channel axis (ImageJ/OME hyperstacks, NIfTI 5D) becomes ``channel_axis`` (one
      Image layer per channel); RGB(A) samples ``rgb=True``; time axes stay as sliders;
    * ``layer_type``: ``"labels"`` for bool and integer volumes that look like labels
      (:func:`is_label_volume`: masks, skeletons and trees from ``napari-topo
      segment``), ``"image"`` otherwise;
    * an OME-Zarr image (:mod:`napari_topo.data.ngff`): ``data`` is the list of its
      pyramid levels, lazy dask arrays, with ``meta["multiscale"] = True`` (one level:
      that array); Image or Labels decided on its smallest level;
    * a DICOM series (a folder, or its ``.dcm`` files selected together: one volume)
      in HU for CT, placed by its ImagePositionPatient/Orientation;
    * ``meta["name"]`` the file name without suffix; ``meta["metadata"]`` the path,
      spacing, format and the file's geometry (``"napari_topo_geometry"``, JSON-able),
      which :func:`write_labels` uses to write the unit and NIfTI codes back.

    Raises
    ------
    napari_topo.data.io.VolumeReadError
        One-line message for a missing or corrupt file (napari shows it).
    """
    paths = path if isinstance(path, list | tuple) else [path]
    # the files of a DICOM series, selected together, are one volume: its folder
    dicom = [Path(os.fspath(p)) for p in paths if suffix_of(p) == ".dcm"]
    if len(dicom) > 1 and len(dicom) == len(paths) and len({p.parent for p in dicom}) == 1:
        paths = [dicom[0]]
    out = []
    for p in paths:
        levels = _ome_zarr_levels(p)
        if levels is not None:
            vol, pyramid = levels
            shown_levels = [_display_orientation(lv, vol.geometry) for lv in pyramid]
            data, shown = shown_levels[0][0], shown_levels[0][1]
            sample = shown_levels[-1][0]
        else:
            vol = read_volume(p)
            data, shown = _display_orientation(vol.data, vol.geometry)
            sample = data
        if np.dtype(data.dtype).kind not in "biuf":
            # napari shows complex or structured arrays not at all (an empty
            # NotImplementedError) or with a raw TypeError; segment refuses them too
            raise VolumeReadError(
                f"{Path(os.fspath(p)).name}: napari-topo reads volumes of real numbers "
                f"(bool, integer or float); this one holds {np.dtype(data.dtype)}"
            )
        geometry = vol.geometry
        meta: dict[str, Any] = {
            "name": volume_stem(p, vol.path),
            "metadata": {
                "path": str(vol.path),
                "spacing": vol.spacing,
                "format": "DICOM series"
                if is_dicom_folder(vol.path)
                else _FORMAT_NAMES.get(suffix_of(vol.path), suffix_of(vol.path)),
                "napari_topo_geometry": geometry.to_dict(),
                # a DICOM series' Modality tag: the Segment dock windows a CT crop
                # without air as CT (segment's header_hint)
                **({"modality": vol.modality} if vol.modality else {}),
            },
        }
        if levels is not None and len(shown_levels) > 1:
            meta["multiscale"] = True
        axes = geometry.axes
        channel = [i for i, ch in enumerate(axes) if ch == "c" and data.shape[i] > 1]
        rgb = axes.endswith("s") and data.shape[-1] in (3, 4)
        layer_axes = axes
        if channel:
            meta["channel_axis"] = channel[0]
            layer_axes = axes[: channel[0]] + axes[channel[0] + 1 :]
        if rgb:
            meta["rgb"] = True
            layer_axes = layer_axes[:-1]
        if geometry.known != "none" or not shown.is_plain:
            meta.update(_layer_transform(shown, layer_axes))
        # the dims sliders read "z" (as for the plugin's own layers), not "-3"
        meta["axis_labels"] = tuple(layer_axes)
        if channel or rgb:
            kind = "image"
        else:
            values = _label_values(sample)
            kind = "image" if values is None else "labels"
        if kind == "labels" and data.dtype == bool:
            data = (data if isinstance(data, np.ndarray) else np.asarray(data)).view(np.uint8)
        nonzero = [] if kind != "labels" else [int(v) for v in values.tolist() if v]
        if len(nonzero) == 1:
            # a mask (an organ for Segment's Inside, a ground truth), 0/1 or 0/255 as
            # DICOM and TIFF masks often are: one light grey, so that it is not taken
            # for a tree (a newcomer's liver, in napari's default red-brown for label 1,
            # hid Segment's tree 1, drawn in red over it; a 0/255 liver did the same)
            meta["colormap"] = _mask_file_colormap(nonzero[0])
            meta["opacity"] = MASK_FILE_OPACITY
        if kind == "image" and not (channel or rgb):
            limits, why = _display_window(sample)
            if limits is not None:
                meta["contrast_limits"] = limits
            if why:
                meta["metadata"]["display"] = why
        if meta.get("multiscale"):
            data = [lv for lv, _ in shown_levels]
        out.append((data, meta, kind))
    return out


#: Colour and opacity of a binary mask file opened as Labels (:func:`read_volumes`):
#: neutral, so that none of the trees' saturated colours is mistaken for it.
MASK_FILE_COLOUR = (0.82, 0.82, 0.82, 1.0)
MASK_FILE_OPACITY = 0.3


def _mask_file_colormap(value: int = 1):
    """The mask's ``value`` (1, or 255 in a 0/255 file) in :data:`MASK_FILE_COLOUR`;
    labels painted on the mask afterwards (2, 3, ...: trees given in the Tree editor, a
    brush's new label) in the trees' colours, so they show; 0 transparent."""
    from napari_topo.layers import _TRANSPARENT, _direct_colormap, tree_colors

    colours = tree_colors(64)
    table = {None: colours[1], 0: np.asarray(_TRANSPARENT)}
    table.update({k: colours[k - 1] for k in range(2, 65)})
    table[int(value)] = np.asarray(MASK_FILE_COLOUR)
    return _direct_colormap(table)


#: Voxels read (at most, on a regular stride) to choose an Image layer's contrast limits.
_LIMITS_SAMPLE = 1_000_000


def display_limits(data) -> list[float] | None:
    """Contrast limits for showing ``data``: a CT's vessel window, else percentiles.

    * A CT in Hounsfield units (:func:`napari_topo.inference.intensity.looks_like_hu`:
      signed whole numbers with air at -1000) opens in the vessel/soft-tissue window
      :data:`~napari_topo.inference.intensity.DEFAULT_CT_WINDOW` (-100..300 HU), the
      window the models see: on its percentiles (air to bone) the liver and its
      contrast-filled vessels were one grey.
    * Anything else: its 0.5th and 99.5th percentiles. napari's default for uint8 is
      the dtype's range (0-255), so a two-photon stack whose voxels reach 51 opened
      nearly black; a CT's few metal or bone voxels would likewise squeeze the soft
      tissue.

    At most :data:`_LIMITS_SAMPLE` voxels are read, on a regular stride (a lazy array
    reads only those).

    Parameters
    ----------
    data : array-like (z, y, x), numpy, dask or zarr

    Returns
    -------
    [low, high] (floats, high > low), or None when the sample is empty or not finite
    anywhere.
    """
    return _display_window(data)[0]


def _display_window(data) -> tuple[list[float] | None, str | None]:
    """:func:`display_limits` and, for a CT in HU, a sentence saying why (else None)."""
    # intensity is numpy only; the package's lazy __init__ keeps torch out of the reader
    from napari_topo.inference.intensity import DEFAULT_CT_WINDOW, looks_like_hu

    shape = tuple(int(n) for n in getattr(data, "shape", ()))
    if not shape or min(shape) == 0:
        return None, None
    sample = _strided_sample(data, _LIMITS_SAMPLE)
    dtype = sample.dtype
    sample = sample.astype(np.float64, copy=False)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return None, None
    is_hu, reason = looks_like_hu(sample, dtype)
    if is_hu:
        lo, hi = DEFAULT_CT_WINDOW
        return [lo, hi], f"{reason}: shown in the vessel window {lo:g}..{hi:g} HU"
    lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    if hi <= lo:
        hi = lo + 1.0
    return [lo, hi], None


def _ome_zarr_levels(path):
    """``(Volume of level 0, [every level])`` for an OME-Zarr image, else None.

    The levels stay lazy (dask); napari shows the one that fits the view.
    """
    from napari_topo.data.io import Volume
    from napari_topo.data.ngff import is_ome_zarr, read_ome_zarr

    p = Path(os.fspath(path)).expanduser()
    if suffix_of(p) not in (".zarr", ".ome.zarr") or not is_ome_zarr(p):
        return None
    image = read_ome_zarr(p)
    g = image.geometries[0]
    spacing = None if g.known == "none" else g.spacing
    return Volume(image.levels[0], spacing, p, g), image.levels


#: The former name of :func:`read_volumes` (it read NIfTI only).
read_nifti = read_volumes


def _summary_geometry(path: Path):
    """``(geometry, shape)`` from ``<stem>_summary.json`` next to ``<stem>_graph.*``
    (written by ``napari-topo segment``), or ``(None, None)``."""
    import json

    from napari_topo.geometry import Geometry

    stem = volume_stem(path)
    if stem.endswith("_graph"):
        stem = stem[: -len("_graph")]
    summary = path.with_name(f"{stem}_summary.json")
    try:
        d = json.loads(summary.read_text())
        return Geometry.from_dict(d["geometry"]), tuple(int(s) for s in d["shape"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def _read_nodes_csv(path: Path):
    """Points (voxel columns), world points (``*_physical`` columns, or None), radius,
    tree, parent (or None) and edges of a napari-topo nodes table."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        columns = [c.strip() for c in reader.fieldnames or ()]
    axes = [a for a in ("z", "y", "x") if a in columns]
    physical = [f"{a}_physical" for a in axes]
    if not rows:
        # a run that found no vessels writes the header alone: no points, not an error
        n = len(axes)
        world = np.zeros((0, n)) if all(c in columns for c in physical) else None
        none = np.zeros(0, dtype=np.int64)
        return np.zeros((0, n)), world, np.zeros(0), none, none.copy(), []
    try:
        pts = np.array([[float(r[a]) for a in axes] for r in rows], dtype=float)
        world = None
        if all(c in rows[0] for c in physical):
            world = np.array([[float(r[c]) for c in physical] for r in rows], dtype=float)
        ids = np.array([int(float(r["id"])) for r in rows], dtype=np.int64)
        radius = np.array([float(r.get("radius") or 0.0) for r in rows], dtype=float)
        tree = np.array([int(float(r.get("tree") or 0)) for r in rows], dtype=np.int64)
    except (KeyError, ValueError):
        raise ValueError(
            f"{path.name}: every row needs numeric id, {', '.join(axes)}, radius and tree."
        ) from None
    if world is not None and not np.isfinite(world).all():
        raise ValueError(f"{path.name}: the *_physical columns must be finite numbers.")
    row_of = {int(i): k for k, i in enumerate(ids.tolist())}
    parent = None
    if "parent" in rows[0]:
        parent = np.array([row_of.get(int(float(r["parent"])), -1) for r in rows], dtype=np.int64)
    edges: list[tuple[int, int]] = []
    edges_path = path.with_name(f"{volume_stem(path)}_edges.csv")
    if edges_path.is_file():
        with edges_path.open(newline="") as fh:
            for r in csv.DictReader(fh):
                try:
                    a, b = row_of[int(float(r["source"]))], row_of[int(float(r["target"]))]
                except (KeyError, ValueError):
                    continue
                edges.append((a, b))
    elif parent is not None:
        edges = [(k, int(q)) for k, q in enumerate(parent.tolist()) if q >= 0]
    if parent is None and edges:
        parent = _parents_from_edges(len(pts), edges)
    return pts, world, radius, tree, parent, edges


def _parents_from_edges(m: int, edges) -> np.ndarray:
    """Parent per node of the forest the (child, parent) edges make (-1 for roots)."""
    parent = np.full(m, -1, dtype=np.int64)
    for child, par in edges:
        if parent[child] < 0:
            parent[child] = par
    return parent


def _read_swc(path: Path):
    """Points (z, y, x as written), radius, tree, parent, edges, the header spacing, and
    the header's geometry and shape (napari-topo's SWC files since they hold world
    coordinates; None before)."""
    import json

    from napari_topo.geometry import Geometry
    from napari_topo.trees.swc import parse_tree_line

    rows, spacing, root_tree, tree_spans = [], None, {}, []
    geometry, shape = None, None
    for line in path.read_text().splitlines():
        text = line.strip()
        if text.startswith("#"):
            low = text.lower()
            if low.startswith("# geometry:"):
                try:
                    geometry = Geometry.from_dict(json.loads(text.split(":", 1)[1]))
                except (ValueError, KeyError, TypeError):
                    geometry = None
            elif low.startswith("# shape (z, y, x):"):
                try:
                    shape = tuple(int(v) for v in text.split(":", 1)[1].split(","))
                except ValueError:
                    shape = None
            elif "spacing (z, y, x):" in low or "scale (z, y, x):" in low:
                try:
                    spacing = tuple(float(v) for v in text.split(":", 1)[1].split(","))
                except ValueError:
                    spacing = None
            elif (found := parse_tree_line(text)) is not None:
                tree_spans.append(found)
            elif low.startswith("# root") and ": tree" in low:  # files before tree lines
                try:
                    node, t = low[len("# root") :].split(": tree")
                    root_tree[int(node)] = int(t)
                except ValueError:
                    pass
            continue
        if not text:
            continue
        parts = text.split()
        if len(parts) < 7:
            raise ValueError(f"{path.name}: SWC lines need 7 fields (n T x y z R P): {text!r}")
        rows.append(parts[:7])
    if not rows:  # a run that found no vessels: its header alone, no points
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros((0, 3)), np.zeros(0), empty, empty.copy(), [], spacing, geometry, shape
    try:
        ids = [int(r[0]) for r in rows]
        xyz = np.array([[float(r[2]), float(r[3]), float(r[4])] for r in rows], dtype=float)
        radius = np.array([float(r[5]) for r in rows], dtype=float)
        par_ids = [int(r[6]) for r in rows]
    except ValueError:
        raise ValueError(f"{path.name}: SWC fields must be numbers.") from None
    row_of = {n: k for k, n in enumerate(ids)}
    parent = np.array([row_of.get(q, -1) for q in par_ids], dtype=np.int64)
    tree = np.zeros(len(rows), dtype=np.int64)
    if tree_spans:  # "# tree T: nodes A-B" (napari-topo's SWC layout, trees/swc.py)
        node = np.asarray(ids, dtype=np.int64)
        for t, a, b in tree_spans:
            tree[(node >= a) & (node <= b)] = t
    elif root_tree:  # older files: the tree of each point is its root's ("# root N: tree T")
        for k in range(len(rows)):
            r, seen = k, 0
            while parent[r] >= 0 and seen <= len(rows):
                r, seen = int(parent[r]), seen + 1
            tree[k] = root_tree.get(ids[r], 0)
    edges = [(k, int(q)) for k, q in enumerate(parent.tolist()) if q >= 0]
    return xyz[:, ::-1].copy(), radius, tree, parent, edges, spacing, geometry, shape


def _chains(m: int, edges) -> list[list[int]]:
    """The edges as unbranched paths between nodes of degree != 2 (and loops)."""
    adj: list[list[int]] = [[] for _ in range(m)]
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    seen: set[tuple[int, int]] = set()
    paths = []
    starts = [v for v in range(m) if len(adj[v]) != 2] + list(range(m))
    for s in starts:
        for nb in adj[s]:
            if (s, nb) in seen:
                continue
            path, prev, cur = [s], s, nb
            seen.update({(s, nb), (nb, s)})
            while True:
                path.append(cur)
                if len(adj[cur]) != 2 or cur == s:
                    break
                nxt = adj[cur][0] if adj[cur][0] != prev else adj[cur][1]
                if (cur, nxt) in seen:
                    break
                seen.update({(cur, nxt), (nxt, cur)})
                prev, cur = cur, nxt
            paths.append(path)
    return paths


def read_graph(path) -> list[tuple[Any, dict, str]]:
    """Read napari-topo vessel graph files (``.csv`` nodes table, ``.swc``) as layers.

    Each file gives a Shapes layer of the branches (paths between branch points and
    ends, coloured by tree) and a Points layer of the centerline (sized by radius,
    coloured by tree, with ``id``/``parent`` features so it saves back as SWC through
    :func:`write_graph`).

    Placement: the points go to world coordinates first, then onto the voxel grid
    the image of the same run shows in napari, with its ``scale``/``translate``, so
    they overlay the image and the volumes :func:`read_volumes` opens.

    * World coordinates: an ``.swc`` written by napari-topo holds them (and its
      geometry and shape in header comments); a ``.csv`` nodes table its
      ``z_physical, y_physical, x_physical`` columns. Older files: ``.swc`` voxel x
      spacing, ``.csv`` voxel indices of the input (``z, y, x``), placed with
      ``<stem>_summary.json``.
    * The grid: the geometry and shape of the input in ``<stem>_summary.json`` (written
      by ``napari-topo segment`` beside ``<stem>_graph.*``), else the SWC's header,
      reordered as :func:`read_volumes` shows that input
      (:func:`napari_topo.geometry.displayed`). Without any, a ``.csv`` opens in world
      coordinates (or unplaced voxels) and an old ``.swc`` with the spacing its header
      states at the origin.

    A file without points (the header alone: ``napari-topo segment`` found no vessels,
    or an empty Points layer was saved) gives the two layers empty, on the same grid,
    with ``metadata["note"]`` saying so and a :class:`UserWarning` (a notification in
    napari).

    Raises
    ------
    ValueError
        A table or SWC file that cannot be parsed (one line naming it).
    """
    from napari_topo.geometry import Geometry, displayed

    paths = path if isinstance(path, list | tuple) else [path]
    out = []
    for p in map(lambda q: Path(os.fspath(q)), paths):
        geometry, shape = _summary_geometry(p)
        if suffix_of(p) == ".swc":
            pts, radius, tree, parent, edges, sp, swc_geometry, swc_shape = _read_swc(p)
            if swc_geometry is not None:  # world coordinates
                world = pts
                if geometry is None:
                    geometry, shape = swc_geometry, swc_shape
            elif geometry is not None and geometry.ndim == 3:
                # an older napari-topo SWC: voxel * spacing
                world = geometry.world(pts / np.asarray(geometry.spacing))
            else:
                world = pts
                if sp is not None and len(sp) == 3 and all(v > 0 for v in sp):
                    geometry = Geometry.from_spacing(sp)
        else:
            vox, world, radius, tree, parent, edges = _read_nodes_csv(p)
            if world is None:  # voxel indices of the input (an older table)
                world = (
                    geometry.world(vox)
                    if geometry is not None and geometry.ndim == vox.shape[1]
                    else vox
                )
        nd = world.shape[1]
        if geometry is not None and geometry.ndim != nd:
            geometry = None
        transform: dict[str, Any] = {}
        pts = world
        if geometry is not None:
            if shape is not None and len(shape) == nd:
                geometry = displayed(geometry, shape)
            pts = geometry.voxel(world)
            pts = np.where(np.abs(pts - np.round(pts)) < 1e-6, np.round(pts), pts)
            transform = _layer_transform(geometry, "zyx"[-nd:])
        name = volume_stem(p)
        kw = {
            "name": name,
            "scale": transform.get("scale"),
            "translate": transform.get("translate"),
        }
        if "affine" in transform:
            kw["affine"] = transform["affine"]
        from napari_topo import layers as _layers  # here: the reader module stays light

        chains = _chains(len(pts), edges)
        chain_tree = [int(tree[c[0]]) if tree[c[0]] else int(tree[c[-1]]) for c in chains]
        shapes = _layers.branches_layer(
            [pts[c] for c in chains], np.asarray(chain_tree, dtype=np.int64), ndim=nd, **kw
        )
        points = _layers.points_layer(pts, radius, tree, parent, **kw)
        for tup in (shapes, points):
            tup[1]["metadata"]["path"] = str(p)
        if not len(pts):
            # written by a run that found no vessels (or from an empty Points layer):
            # empty layers, and a notification saying why (napari shows warnings)
            note = f"{p.name} holds no centerline points (no vessels found): empty layers"
            for tup in (shapes, points):
                tup[1]["metadata"]["note"] = note
            warnings.warn(note, UserWarning, stacklevel=2)
        out += [shapes, points]
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


def _geometry_from(meta: Mapping, ndim: int):
    """The layer's placement (scale, translate, rotate, shear, affine) as a Geometry,
    with the unit and NIfTI codes of the file it was read from when it came through
    :func:`read_volumes`."""
    from napari_topo.geometry import Geometry, geometry_from_layer_meta

    geometry = geometry_from_layer_meta(meta, ndim)
    source = (meta.get("metadata") or {}).get("napari_topo_geometry")
    if isinstance(source, Mapping):
        try:
            src = Geometry.from_dict(source)
        except (KeyError, TypeError, ValueError):
            src = None
        if src is not None and geometry.known != "none":
            geometry = geometry.replace(unit=src.unit, nifti_codes=src.nifti_codes)
    return geometry


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer: a Labels layer to NIfTI or TIFF where it lies.

    The layer's placement (``scale``, ``translate``, ``rotate``, ``shear``,
    ``affine``, composed as napari does) becomes the file's geometry
    (:func:`napari_topo.data.io.write_volume`): the NIfTI affine (qform and sform), or
    ImageJ spacing, resolution and origin (plus napari-topo's JSON where ImageJ cannot
    hold a rotation). Opening the file again (:func:`read_volumes`) puts the layer
    exactly where it was. Ids are stored in the smallest unsigned integer type that
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
    return [str(write_volume(p, arr, geometry=_geometry_from(meta, arr.ndim)))]


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
    from napari_topo.geometry import geometry_from_layer_meta

    m, nd = pts.shape
    scale = meta.get("scale")
    sc = np.ones(nd) if scale is None else np.asarray(scale, dtype=float)[-nd:]
    # the layer's whole placement (scale, translate, rotate, shear, affine), as napari
    # composes it: the world coordinates napari shows for each point
    geometry = geometry_from_layer_meta(meta, nd)
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
        "world": geometry.world(pts),
        "geometry": geometry,
        "scale": sc,
        "radius": None if radius is None else radius.astype(float),
        "tree": None if tree is None else tree.astype(np.int64),
        "parent": None if parent is None else parent.astype(np.int64),
        "id": np.arange(m, dtype=np.int64) if ids is None else ids.astype(np.int64),
    }


def _swc_parent_rows(ids: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """Each row's parent row (-1 = root), from parents given as node ids (``ids``).

    A parent id that is not there (a deleted point) makes its child a root.
    """
    row_of = {int(i): r for r, i in enumerate(ids.tolist())}
    if len(row_of) != len(ids):
        raise ValueError("the 'id' feature of the Points layer must be unique.")
    return np.array([row_of.get(int(q), -1) for q in parent.tolist()], dtype=np.int64)


def write_graph(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer: a centerline Points layer to CSV or SWC.

    CSV (one row per point, with header): ``id``; ``z, y, x`` the voxel (data)
    coordinates (written as integers where they are whole), as in
    :meth:`napari_topo.analysis.VesselAnalysis.to_csv`;
    ``z_physical, y_physical, x_physical`` the world coordinates (the layer's scale,
    translate, rotate, shear and affine, as napari composes them: what ``napari-topo
    segment --sources`` reads); then ``radius`` (physical), ``tree`` and ``parent`` where the layer
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
        from napari_topo.trees.swc import ParentCycleError, swc_text

        prow = _swc_parent_rows(cols["id"], cols["parent"])
        radius = cols["radius"] if cols["radius"] is not None else np.zeros(len(prow))
        header = [
            "# napari-topo vessel centerline forest (from a napari Points layer)",
            "# scale ("
            + ", ".join(axes)
            + "): "
            + ", ".join(repr(float(s)) for s in cols["scale"]),
            "# geometry: " + cols["geometry"].to_json(),
            "# coordinates: world (the layer's placement), x y z order; type 3; parent -1 = root",
        ]
        try:
            text = swc_text(cols["world"], radius, prow, cols["tree"], header)
        except ParentCycleError:
            raise ValueError(
                "the 'parent' feature of the Points layer has a cycle; cannot write SWC."
            ) from None
        p.write_text(text)
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
