"""Convert a local copy of a public vessel dataset to NIfTI for the real-data benchmark.

Nothing is downloaded: point the command at a copy you already have. Nothing it writes
belongs in the repository (the licences forbid redistribution).

Usage::

    python benchmarks/real/convert.py ircadb   PATH/3Dircadb1.X        OUT_DIR [--case NAME]
    python benchmarks/real/convert.py vesselnn PATH/vesselNN_dataset   OUT_DIR [--cases ...]

3D-IRCADb (liver CT, https://www.ircad.fr/research/data-sets/, CC BY-NC-ND)
    ``PATH`` is one patient folder holding ``PATIENT_DICOM/`` and ``MASKS_DICOM/<structure>/``
    (folders, or the ``PATIENT_DICOM.zip`` / ``MASKS_DICOM.zip`` of the original
    distribution). Slices are ordered by their position along the slice normal
    (``ImagePositionPatient`` . (row x column direction)), else by ``InstanceNumber``;
    ``RescaleSlope`` / ``RescaleIntercept`` are applied (HU, stored as int16). The spacing
    is ``PixelSpacing`` in-plane and the distance between consecutive slice positions
    (``SpacingBetweenSlices`` / ``SliceThickness`` only when positions are missing). The
    NIfTI affine maps voxels to RAS millimetres (DICOM LPS with x and y negated). Written
    to ``OUT_DIR/ircadb/<case>/``:

    * ``image.nii.gz`` (int16 HU);
    * ``vessels.nii.gz`` (uint8 0/1): portal vein | hepatic veins (``venoussystem``, which in
      3D-IRCADb includes the vena cava) | artery when the patient has an artery mask
      (recorded in ``meta.json``);
    * ``liver.nii.gz`` (uint8 0/1), the region of interest of the scores;
    * ``trees.nii.gz`` (uint8): 1 = portal vein, 2 = hepatic veins; voxels in both masks
      are left 0 (ambiguous, not scored; their number is recorded);
    * ``roots.csv`` (``z,y,x`` voxel indices, one row per tree in label order) - see
      :func:`pick_root`: the thickest point of each tree inside the liver grown by 10 mm,
      which is what a user asked to click "the trunk" of each tree would click;
    * ``meta.json``: source, command, spacing, structures used, voxel counts, roots.

    Structure folders are matched by name (case-insensitive): portal = ``portalvein*``,
    hepatic = ``venoussystem`` (else ``hepaticvein*`` + ``venacava*``), artery =
    ``artery*``, liver = ``liver``; ``--portal/--hepatic/--artery/--liver`` override
    (comma-separated folder names; ``--artery none`` leaves the artery out).

vesselNN (two-photon mouse cortex, https://github.com/petteriTeikari/vesselNN_dataset)
    ``PATH`` holds ``denoised/<case>_BM4D_denoised.tif`` (or any ``<case>_*.tif``) and
    ``labels/<case>_*.tif``; every image with a matching label becomes a case (``--cases``
    filters). Placement: what the image TIFF states, read with
    :func:`napari_topo.data.io.read_volume` (ImageJ spacing, unit and origin, OME
    PhysicalSize, X/YResolution in a physical unit: tifffile's metadata), kept whole in
    the NIfTI affine; ``--spacing Z Y X`` (micrometres) overrides it. The poon2015 stacks
    state nothing (their 72 dpi is a print resolution), so they get ``5 0.994 0.994`` um,
    the poon2015 voxel size. A label TIFF that states another placement than its image
    is refused. Labels > 0 are vessel. Written to ``OUT_DIR/vesselnn/<case>/``:
    ``image.nii.gz`` (the TIFF's dtype), ``vessels.nii.gz`` (uint8 0/1), ``meta.json``.

All outputs read back with :func:`napari_topo.data.io.read_volume` as ``(z, y, x)`` arrays
with the spacing above.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shlex
import sys
import zipfile
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scoring import ROI_MARGIN_MM, roi_from_mask  # noqa: E402

#: Default voxel size of the poon2015 vesselNN stacks, (z, y, x) micrometres.
VESSELNN_SPACING = (5.0, 0.994, 0.994)
#: Tree labels written to trees.nii.gz and the order of the rows of roots.csv.
TREE_NAMES = {1: "portal", 2: "hepatic"}
#: Plausible vessel radius range (physical units of the data) written to meta.json; the
#: Frangi baseline turns it into its scales. Prior knowledge a user has, not tuned.
RADIUS_RANGE = {"ircadb": [1.0, 5.0], "vesselnn": [2.0, 15.0]}


# --------------------------------------------------------------------------- helpers
def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _command() -> str:
    return " ".join(shlex.quote(a) for a in ["python", *sys.argv])


def _write_nifti(path: Path, zyx: np.ndarray, affine: np.ndarray, unit: str) -> None:
    """Write a (z, y, x) array as NIfTI (stored (x, y, z), as napari_topo.data.io reads)."""
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(zyx.transpose(2, 1, 0)), affine)
    img.header.set_data_dtype(zyx.dtype)
    img.header.set_xyzt_units(xyz=unit)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def _diag_affine(spacing_zyx) -> np.ndarray:
    aff = np.eye(4)
    aff[0, 0], aff[1, 1], aff[2, 2] = spacing_zyx[2], spacing_zyx[1], spacing_zyx[0]
    return aff


# ----------------------------------------------------------------------------- DICOM
class _Source:
    """Files of one DICOM series: a folder or a folder inside a zip archive."""

    def __init__(self, root: Path, name: str):
        self.root, self.name = root, name
        folder, archive = root / name, root / f"{name}.zip"
        self.zip = None
        if folder.is_dir():
            self.kind = "folder"
            self.where = str(folder)
        elif archive.is_file():
            self.kind = "zip"
            self.where = str(archive)
            self.zip = zipfile.ZipFile(archive)
        else:
            raise FileNotFoundError(f"{root} has neither {name}/ nor {name}.zip")

    def subfolders(self) -> list[str]:
        if self.kind == "folder":
            return sorted(p.name for p in Path(self.where).iterdir() if p.is_dir())
        names = set()
        for n in self.zip.namelist():
            parts = [p for p in n.split("/") if p]
            if parts and parts[0] == self.name:
                parts = parts[1:]  # archives usually repeat the folder name
            if len(parts) >= 2:
                names.add(parts[0])
        return sorted(names)

    def files(self, sub: str | None = None) -> list[tuple[str, object]]:
        """(display name, path or bytes) of the files of the series (or of a subfolder)."""
        if self.kind == "folder":
            d = Path(self.where) / sub if sub else Path(self.where)
            return [
                (p.name, p)
                for p in sorted(d.iterdir(), key=lambda p: _natural_key(p.name))
                if p.is_file() and not p.name.startswith(".")
            ]
        out = []
        for n in self.zip.namelist():
            if n.endswith("/"):
                continue
            parts = [p for p in n.split("/") if p]
            if parts and parts[0] == self.name:
                parts = parts[1:]
            if (
                sub is None
                and len(parts) == 1
                or sub is not None
                and parts[:1] == [sub]
                and len(parts) == 2
            ):
                if not parts[-1].startswith("."):
                    out.append((parts[-1], n))
        out.sort(key=lambda t: _natural_key(t[0]))
        return [(name, self.zip.read(n)) for name, n in out]


def _read_dicom(item):
    import pydicom
    from pydicom.errors import InvalidDicomError

    name, src = item
    try:
        ds = pydicom.dcmread(io.BytesIO(src) if isinstance(src, bytes) else src)
    except (InvalidDicomError, OSError):
        return None
    if "PixelData" not in ds:
        return None
    return name, ds


def read_dicom_series(files) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray, dict]:
    """Stack a DICOM series into a (z, y, x) array of modality values (HU for CT).

    Returns
    -------
    volume : ndarray of float64
        ``pixel_array * RescaleSlope + RescaleIntercept`` per slice, slices ordered along
        the slice normal.
    spacing : (dz, dy, dx)
    affine : (4, 4) ndarray
        Voxel ``(x=column, y=row, z=slice)`` to RAS millimetres (NIfTI convention).
    info : dict
        How the order and spacing were found, the slice positions and file names.
    """
    dss = [d for d in map(_read_dicom, files) if d is not None]
    if not dss:
        raise ValueError("no DICOM image found")
    first = dss[0][1]
    iop = first.get("ImageOrientationPatient")
    have_pos = iop is not None and all("ImagePositionPatient" in d for _, d in dss)
    if have_pos:
        row = np.asarray(iop[:3], float)  # direction of increasing column index
        col = np.asarray(iop[3:], float)  # direction of increasing row index
        normal = np.cross(row, col)
        pos = np.array([np.asarray(d.ImagePositionPatient, float) for _, d in dss])
        key = pos @ normal
        order = np.argsort(key, kind="stable")
        how = "ImagePositionPatient along the slice normal"
    elif all("InstanceNumber" in d for _, d in dss):
        key = np.array([float(d.InstanceNumber) for _, d in dss])
        order = np.argsort(key, kind="stable")
        how = "InstanceNumber"
    else:
        key = np.arange(len(dss), dtype=float)
        order = np.arange(len(dss))
        how = "file name"
    dss = [dss[i] for i in order]
    key = key[order]
    if have_pos and len(dss) > 1 and np.any(np.diff(key) <= 1e-6):
        raise ValueError("two slices share one position: not a single series")

    ps = first.get("PixelSpacing")
    dy, dx = (float(ps[0]), float(ps[1])) if ps is not None else (1.0, 1.0)
    if have_pos and len(dss) > 1:
        steps = np.diff(key)
        dz = float(np.median(steps))
        if np.max(np.abs(steps - dz)) > 0.01 * dz:
            raise ValueError(
                f"slice positions are not evenly spaced (steps {steps.min():g}-{steps.max():g}"
                " mm): resample before converting"
            )
        spacing_src = "ImagePositionPatient"
    else:
        sbs = first.get("SpacingBetweenSlices") or first.get("SliceThickness")
        dz = float(sbs) if sbs else 1.0
        spacing_src = "SpacingBetweenSlices/SliceThickness" if sbs else "none (1.0)"

    slices = []
    for name, d in dss:
        arr = d.pixel_array.astype(np.float64)
        if arr.ndim != 2:
            raise ValueError(f"{name}: expected one 2D frame per file, got shape {arr.shape}")
        slope = float(d.get("RescaleSlope", 1) or 1)
        inter = float(d.get("RescaleIntercept", 0) or 0)
        slices.append(arr * slope + inter)
    shapes = {s.shape for s in slices}
    if len(shapes) != 1:
        raise ValueError(f"slices differ in size: {sorted(shapes)}")
    vol = np.stack(slices)

    if have_pos:
        origin = pos[order[0]]
        slice_vec = (pos[order[-1]] - origin) / (len(dss) - 1) if len(dss) > 1 else normal * dz
    else:
        row, col, origin = np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.zeros(3)
        slice_vec = np.array([0, 0, dz])
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * dx, col * dy, slice_vec, origin
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    info = {
        "order": how,
        "spacing_from": spacing_src,
        "positions": [float(k) for k in key],
        "files": [n for n, _ in dss],
    }
    return vol, (dz, dy, dx), affine, info


# -------------------------------------------------------------------------- IRCADb
def _match(names: list[str], spec: str | None, default) -> list[str]:
    lower = {n.lower(): n for n in names}
    if spec is not None:
        if spec.lower() == "none":
            return []
        wanted = [s.strip() for s in spec.split(",") if s.strip()]
        missing = [w for w in wanted if w.lower() not in lower]
        if missing:
            raise ValueError(f"no mask folder named {missing}; available: {names}")
        return [lower[w.lower()] for w in wanted]
    return default(lower)


def _default_portal(lower):
    return [v for k, v in sorted(lower.items()) if k.startswith("portalvein")]


def _default_hepatic(lower):
    if "venoussystem" in lower:
        return [lower["venoussystem"]]
    return [v for k, v in sorted(lower.items()) if k.startswith(("hepaticvein", "venacava"))]


def _default_artery(lower):
    return [v for k, v in sorted(lower.items()) if k.startswith("artery")]


def _default_liver(lower):
    return [lower["liver"]] if "liver" in lower else []


def pick_root(structure, spacing, region=None) -> tuple[int, int, int]:
    """The thickest point of ``structure`` (inside ``region`` when they meet).

    The voxel of ``structure & region`` with the largest Euclidean distance to the
    structure's background, distances in physical units (``spacing``) and measured in the
    whole structure (so the ROI's edge does not thin the vessel). Ties: the first voxel
    in C order. For a vessel tree that is the trunk where it is widest near the organ:
    the point a user clicks as the tree's root.
    """
    s = np.asarray(structure, bool)
    if not s.any():
        raise ValueError("empty structure: no root")
    edt = ndimage.distance_transform_edt(s, sampling=spacing)
    cand = s if region is None or not (s & region).any() else s & region
    edt = np.where(cand, edt, -1.0)
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(edt)), s.shape))


def convert_ircadb(
    path,
    out_dir,
    *,
    case=None,
    portal=None,
    hepatic=None,
    artery=None,
    liver=None,
    verbose=True,
    command=None,
) -> Path:
    """Convert one 3D-IRCADb patient folder; return the case's output folder.

    ``command`` is recorded in meta.json (the command line when run as a script).
    """
    root = Path(path)
    ct_src = _Source(root, "PATIENT_DICOM")
    ct_hu, spacing, affine, info = read_dicom_series(ct_src.files())
    lo, hi = np.iinfo(np.int16).min, np.iinfo(np.int16).max
    ct = np.clip(np.rint(ct_hu), lo, hi).astype(np.int16)

    mask_src = _Source(root, "MASKS_DICOM")
    names = mask_src.subfolders()
    chosen = {
        "portal": _match(names, portal, _default_portal),
        "hepatic": _match(names, hepatic, _default_hepatic),
        "artery": _match(names, artery, _default_artery),
        "liver": _match(names, liver, _default_liver),
    }
    if not chosen["portal"] and not chosen["hepatic"]:
        raise ValueError(f"no portal or hepatic vein mask among {names}")

    cache: dict[str, np.ndarray] = {}

    def mask_of(folder: str) -> np.ndarray:
        if folder not in cache:
            m, _, _, minfo = read_dicom_series(mask_src.files(folder))
            if m.shape != ct.shape:
                raise ValueError(f"mask {folder} has shape {m.shape}, the CT {ct.shape}")
            if info["order"] == minfo["order"] != "file name" and not np.allclose(
                minfo["positions"], info["positions"], atol=1e-3
            ):
                raise ValueError(f"mask {folder}: slice positions differ from the CT's")
            cache[folder] = m > 0
        return cache[folder]

    def union(folders):
        out = np.zeros(ct.shape, bool)
        for f in folders:
            out |= mask_of(f)
        return out

    portal_m, hepatic_m = union(chosen["portal"]), union(chosen["hepatic"])
    artery_m = union(chosen["artery"])
    vessels = portal_m | hepatic_m | artery_m
    trees = np.zeros(ct.shape, np.uint8)
    trees[portal_m] = 1
    trees[hepatic_m] = 2
    both = portal_m & hepatic_m
    trees[both] = 0
    liver_m = union(chosen["liver"]) if chosen["liver"] else None
    region = roi_from_mask(liver_m, spacing, ROI_MARGIN_MM) if liver_m is not None else None

    roots = []
    for label, m in ((1, portal_m), (2, hepatic_m)):
        if m.any():
            roots.append((label, pick_root(m, spacing, region)))

    case = case or root.name
    out = Path(out_dir) / "ircadb" / case
    out.mkdir(parents=True, exist_ok=True)
    _write_nifti(out / "image.nii.gz", ct, affine, "mm")
    _write_nifti(out / "vessels.nii.gz", vessels.astype(np.uint8), affine, "mm")
    _write_nifti(out / "trees.nii.gz", trees, affine, "mm")
    if liver_m is not None:
        _write_nifti(out / "liver.nii.gz", liver_m.astype(np.uint8), affine, "mm")
    with open(out / "roots.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["z", "y", "x"])
        for _, zyx in roots:
            w.writerow(zyx)
    meta = {
        "dataset": "3D-IRCADb-01",
        "data": "ircadb",
        "case": case,
        "modality": "CT",
        "source": str(root.resolve()),
        "series": {"ct": ct_src.where, "masks": mask_src.where},
        "licence": "CC BY-NC-ND (research only; do not redistribute)",
        "command": command or "(called from Python)",
        "shape": list(ct.shape),
        "spacing": [float(s) for s in spacing],
        "unit": "mm",
        "affine": affine.tolist(),
        "slice_order": info["order"],
        "spacing_from": info["spacing_from"],
        "hu_range": [int(ct.min()), int(ct.max())],
        "structures": chosen,
        "mask_folders": names,
        "voxels": {
            "vessels": int(vessels.sum()),
            "portal": int(portal_m.sum()),
            "hepatic": int(hepatic_m.sum()),
            "artery": int(artery_m.sum()),
            "portal_and_hepatic (unlabelled in trees)": int(both.sum()),
            "liver": int(liver_m.sum()) if liver_m is not None else None,
        },
        "trees": {str(k): v for k, v in TREE_NAMES.items()},
        "roots": [{"tree": lab, "name": TREE_NAMES[lab], "zyx": list(z)} for lab, z in roots],
        "root_rule": "per tree: the voxel with the largest physical distance to the tree's "
        f"background (thickest point) inside the liver grown by {ROI_MARGIN_MM:g} mm",
        "roi": {"mask": "liver.nii.gz", "margin": ROI_MARGIN_MM} if liver_m is not None else None,
        "radius_range": RADIUS_RANGE["ircadb"],
        "files": {
            "image": "image.nii.gz",
            "vessels": "vessels.nii.gz",
            "trees": "trees.nii.gz",
            "roots": "roots.csv",
            "liver": "liver.nii.gz" if liver_m is not None else None,
        },
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    if verbose:
        print(
            f"{case}: CT {ct.shape} spacing {tuple(round(s, 4) for s in spacing)} mm, "
            f"HU {ct.min()}..{ct.max()}; vessels {vessels.sum()} voxels "
            f"({', '.join(f'{k}={v}' for k, v in chosen.items())}); "
            f"roots {[z for _, z in roots]} -> {out}"
        )
    return out


# ------------------------------------------------------------------------ vesselNN
_IMAGE_SUFFIX = re.compile(r"(_BM4D)?(_denoised)?$", re.IGNORECASE)


def _tiffs(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff")),
        key=lambda p: _natural_key(p.name),
    )


def find_vesselnn_cases(path) -> list[tuple[str, Path, Path, list[str]]]:
    """(case, image, label, label candidates) for every image of ``path`` with a label.

    The case name is the image's stem without ``_BM4D_denoised``; its label is the file of
    ``labels/`` whose stem starts with ``<case>_`` (several: the last in natural order,
    e.g. ``..._v2`` over ``..._v1``; all are recorded).
    """
    root = Path(path)
    img_dir = root / "denoised" if (root / "denoised").is_dir() else root
    lab_dir = root / "labels"
    if not lab_dir.is_dir():
        raise FileNotFoundError(f"{root} has no labels/ folder")
    labels = _tiffs(lab_dir)
    out = []
    for img in _tiffs(img_dir):
        case = _IMAGE_SUFFIX.sub("", img.stem)
        cands = [p for p in labels if p.stem.lower().startswith(case.lower() + "_")]
        if cands:
            out.append((case, img, cands[-1], [p.name for p in cands]))
    return out


def _tiff_placement(image_path, label_path, spacing):
    """``(xyz affine for NIfTI, unit, spacing (z, y, x), where it came from)`` of a TIFF
    pair: ``spacing`` when given, else what the image TIFF states (its whole geometry,
    through napari_topo's reader), else :data:`VESSELNN_SPACING` um at the origin."""
    from napari_topo.data.io import read_volume
    from napari_topo.geometry import compare, select_channel

    if spacing is not None:
        sp = tuple(float(s) for s in spacing)
        return _diag_affine(sp), "micron", sp, "given (--spacing)"
    vol = read_volume(image_path)
    data, g = select_channel(vol.data, vol.geometry, name=f"image {Path(image_path).name}")
    if g.known == "none" or g.ndim != 3:
        sp = VESSELNN_SPACING
        return _diag_affine(sp), "micron", sp, "default (poon2015 voxel size; the TIFF states none)"
    lab = read_volume(label_path)
    lab_data, lg = select_channel(lab.data, lab.geometry, name=f"label {Path(label_path).name}")
    if lg.known != "none":  # one line (GeometryError) when the two disagree
        compare(
            lg,
            lab_data.shape,
            g,
            data.shape,
            names=(f"label {Path(label_path).name}", f"image {Path(image_path).name}"),
        )
    if g.unit not in ("mm", "um", "m"):  # NIfTI units: metre, mm, micron
        g = g.in_unit("um") if g.unit else g
    unit = {"mm": "mm", "um": "micron", "m": "meter"}.get(g.unit or "", "unknown")
    n = g.ndim
    xyz = np.eye(4)
    rev = [*range(n - 1, -1, -1)]
    xyz[:3, :3] = g.affine[np.ix_(rev, rev)]
    xyz[:3, 3] = g.affine[rev, n]
    return xyz, unit, tuple(float(s) for s in g.spacing), "TIFF metadata (napari_topo read_volume)"


def convert_vesselnn(
    path, out_dir, *, cases=None, spacing=None, verbose=True, command=None
) -> list[Path]:
    """Convert every image/label pair of a vesselNN copy; return the case folders.

    ``spacing`` (z, y, x, um) overrides what the TIFFs state (default: their own
    placement, or :data:`VESSELNN_SPACING` when they state none). ``command`` is recorded
    in meta.json (the command line when run as a script).
    """
    import tifffile

    found = find_vesselnn_cases(path)
    if cases:
        found = [f for f in found if f[0] in cases]
        missing = set(cases) - {f[0] for f in found}
        if missing:
            raise ValueError(f"no image/label pair for {sorted(missing)} in {path}")
    if not found:
        raise ValueError(f"no image with a matching label in {path}")
    outs = []
    for case, img_p, lab_p, cands in found:
        aff, unit, sp, spacing_from = _tiff_placement(img_p, lab_p, spacing)
        img = tifffile.imread(img_p)
        lab = tifffile.imread(lab_p)
        img, lab = np.squeeze(img), np.squeeze(lab)
        if img.ndim != 3 or lab.shape != img.shape:
            raise ValueError(
                f"{case}: expected a (z, y, x) image and a label of the same shape; got "
                f"{img.shape} and {lab.shape}"
            )
        vessels = (lab > 0).astype(np.uint8)
        out = Path(out_dir) / "vesselnn" / case
        out.mkdir(parents=True, exist_ok=True)
        _write_nifti(out / "image.nii.gz", img, aff, unit)
        _write_nifti(out / "vessels.nii.gz", vessels, aff, unit)
        meta = {
            "dataset": "vesselNN (two-photon, mouse cortex)",
            "data": "vesselnn",
            "case": case,
            "modality": "two-photon microscopy",
            "source": str(Path(path).resolve()),
            "series": {
                "image": str(img_p.resolve()),
                "label": str(lab_p.resolve()),
                "label_candidates": cands,
            },
            "command": command or "(called from Python)",
            "shape": list(img.shape),
            "dtype": str(img.dtype),
            "spacing": list(sp),
            "unit": {"micron": "um", "meter": "m"}.get(unit, unit),
            "affine": aff.tolist(),
            "spacing_from": spacing_from,
            "voxels": {"vessels": int(vessels.sum())},
            "roi": None,
            "roots": [],
            "radius_range": RADIUS_RANGE["vesselnn"],
            "files": {"image": "image.nii.gz", "vessels": "vessels.nii.gz"},
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if verbose:
            print(
                f"{case}: {img.shape} {img.dtype} spacing {sp} {unit} ({spacing_from}), "
                f"label {lab_p.name}: "
                f"{int(vessels.sum())} vessel voxels ({vessels.mean():.1%}) -> {out}"
            )
        outs.append(out)
    return outs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="data", required=True)
    a = sub.add_parser("ircadb", help="one 3D-IRCADb patient folder (DICOM)")
    a.add_argument("path")
    a.add_argument("out_dir")
    a.add_argument("--case", help="case name (default: the folder's name)")
    for s in ("portal", "hepatic", "artery", "liver"):
        a.add_argument(
            f"--{s}", help=f"comma-separated mask folders for the {s} (default: by name)"
        )
    v = sub.add_parser("vesselnn", help="a vesselNN dataset folder (denoised/, labels/)")
    v.add_argument("path")
    v.add_argument("out_dir")
    v.add_argument("--cases", nargs="+", help="case names (default: all with a label)")
    v.add_argument(
        "--spacing",
        nargs=3,
        type=float,
        default=None,
        metavar=("Z", "Y", "X"),
        help="voxel size in um, overriding the TIFF's placement (default: what the TIFF "
        "states, else 5 0.994 0.994, the poon2015 stacks')",
    )
    args = ap.parse_args(argv)
    print(f"input: {Path(args.path).resolve()}\ncommand: {_command()}")
    if args.data == "ircadb":
        convert_ircadb(
            args.path,
            args.out_dir,
            case=args.case,
            portal=args.portal,
            hepatic=args.hepatic,
            artery=args.artery,
            liver=args.liver,
            command=_command(),
        )
    else:
        convert_vesselnn(
            args.path, args.out_dir, cases=args.cases, spacing=args.spacing, command=_command()
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
