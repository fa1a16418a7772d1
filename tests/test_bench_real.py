"""The real-data benchmark (benchmarks/real/) on synthetic data only: no network, no dataset.

* the DICOM converter on a tiny CT series written with pydicom (slice order, HU rescale,
  spacing, affine, masks, tree labels, roots), also from zip archives;
* the vesselNN converter on tiny TIFF stacks;
* the scorer against hand-computed numbers (ROI, Betti-0, tree accuracy, thick cores);
* the Frangi baseline and run.py end to end on the converted synthetic case;
* the four-tube generator's properties.
"""

from __future__ import annotations

import csv
import importlib
import json
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _dicom import DX, DY, DZ, ORIGIN, SHAPE, write_series

REAL = Path(__file__).resolve().parents[1] / "benchmarks" / "real"


def _load(name: str):
    if str(REAL) not in sys.path:
        sys.path.insert(0, str(REAL))  # the scripts import their siblings by name
    return importlib.import_module(name)


# ------------------------------------------------------------------ synthetic DICOM


def _hu() -> np.ndarray:
    z, y, x = np.indices(SHAPE)
    return (100 * z + 10 * y + x - 1000).astype(np.int16)  # unique value per voxel


def _masks() -> dict[str, np.ndarray]:
    m = {k: np.zeros(SHAPE, bool) for k in ("liver", "portalvein", "venoussystem", "artery")}
    m["liver"][1:5, 1:11, 1:9] = True
    m["portalvein"][2, 2:7, 2:9] = True  # thickest point (2, 4, 5): see test
    m["venoussystem"][4, 8:11, 1:9] = True
    m["venoussystem"][2, 6, 3] = True  # overlaps the portal vein: unlabelled in trees
    m["artery"][1, 9, 2:8] = True
    return m


@pytest.fixture(scope="module")
def ircadb_folder(tmp_path_factory):
    pytest.importorskip("pydicom")
    root = tmp_path_factory.mktemp("ircadb") / "3Dircadb1.99"
    write_series(root / "PATIENT_DICOM", _hu(), stored_offset=1024)
    for name, m in _masks().items():
        write_series(root / "MASKS_DICOM" / name, m.astype(np.int16) * 255, stored_offset=0)
    return root


@pytest.fixture(scope="module")
def converted(ircadb_folder, tmp_path_factory):
    convert = _load("convert")
    out = tmp_path_factory.mktemp("converted")
    case = convert.convert_ircadb(ircadb_folder, out, verbose=False)
    return out, case


def test_convert_ircadb_volume_spacing_and_affine(converted):
    import nibabel as nib

    from napari_topo.data.io import read_volume

    _, case = converted
    assert case.name == "3Dircadb1.99"
    img = read_volume(case / "image.nii.gz")
    assert img.data.dtype == np.int16
    np.testing.assert_array_equal(np.asarray(img.data), _hu())  # order by position, HU
    np.testing.assert_allclose(img.spacing, (DZ, DY, DX), rtol=1e-6)
    aff = nib.load(str(case / "image.nii.gz")).affine
    # NIfTI voxel (i = column, j = row, k = slice) -> RAS mm (DICOM LPS with x, y negated)
    i, j, k = 3, 7, 4
    ras = aff @ [i, j, k, 1]
    np.testing.assert_allclose(
        ras[:3], [-(ORIGIN[0] + DX * i), -(ORIGIN[1] + DY * j), ORIGIN[2] + DZ * k], atol=1e-5
    )


def test_convert_keeps_an_oblique_dicom_placement(tmp_path):
    """A series with oblique slices (rows and columns rotated, slices along the
    normal): the NIfTI affine is the one nibabel's DICOM wrapper gives each slice (LPS
    to RAS), so the converted volume overlays the scan."""
    pytest.importorskip("pydicom")
    import nibabel as nib
    import pydicom

    with warnings.catch_warnings():  # nibabel calls its DICOM readers experimental
        warnings.simplefilter("ignore", UserWarning)
        from nibabel.nicom.dicomwrappers import wrapper_from_data

    convert = _load("convert")
    c, s = np.cos(np.radians(25)), np.sin(np.radians(25))
    row = np.array([c, s, 0.0])
    col = np.array([-s * np.cos(0.3), c * np.cos(0.3), np.sin(0.3)])
    folder = tmp_path / "obl"
    write_series(folder, _hu(), stored_offset=1024, iop=(*row, *col))
    vol, spacing, affine, info = convert.read_dicom_series(
        [(p.name, p) for p in sorted(folder.iterdir())]
    )
    np.testing.assert_array_equal(vol, _hu())  # slices sorted along the normal
    np.testing.assert_allclose(spacing, (DZ, DY, DX), rtol=1e-6)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    first = min(
        (pydicom.dcmread(p) for p in folder.iterdir()),
        key=lambda d: float(np.dot(d.ImagePositionPatient, np.cross(row, col))),
    )
    ref = lps_to_ras @ wrapper_from_data(first).affine  # voxel (row, column, slice)
    # ours: voxel (column, row, slice); the in-plane columns swap, the origin is shared
    np.testing.assert_allclose(affine[:3, 0], ref[:3, 1], atol=1e-6)
    np.testing.assert_allclose(affine[:3, 1], ref[:3, 0], atol=1e-6)
    np.testing.assert_allclose(affine[:3, 3], ref[:3, 3], atol=1e-6)
    np.testing.assert_allclose(
        affine[:3, 2], lps_to_ras[:3, :3] @ np.cross(row, col) * DZ, atol=1e-6
    )
    # written and read back whole
    convert._write_nifti(tmp_path / "obl.nii.gz", vol.astype(np.int16), affine, "mm")
    np.testing.assert_allclose(nib.load(tmp_path / "obl.nii.gz").affine, affine, atol=1e-5)


def test_convert_vesselnn_keeps_what_the_tiff_states(tmp_path):
    """An ImageJ stack with spacing and origin: its placement reaches the NIfTI; a label
    on another grid is refused; --spacing overrides."""
    pytest.importorskip("tifffile")
    import nibabel as nib

    from napari_topo.data.io import read_volume, write_volume
    from napari_topo.geometry import Geometry, GeometryError

    convert = _load("convert")
    (tmp_path / "ds" / "denoised").mkdir(parents=True)
    (tmp_path / "ds" / "labels").mkdir()
    g = Geometry.from_spacing((3.0, 0.5, 0.25), origin=(6.0, -2.0, 1.5), unit="um")
    img = np.arange(4 * 16 * 12, dtype=np.uint16).reshape(4, 16, 12)
    lab = (img % 7 == 0).astype(np.uint8)
    write_volume(tmp_path / "ds" / "denoised" / "c_BM4D_denoised.tif", img, geometry=g)
    write_volume(tmp_path / "ds" / "labels" / "c_labels.tif", lab, geometry=g)
    [out] = convert.convert_vesselnn(tmp_path / "ds", tmp_path / "out", verbose=False)
    v = read_volume(out / "image.nii.gz")
    np.testing.assert_allclose(v.geometry.affine, g.affine, atol=1e-5)
    assert (
        v.geometry.unit == "um"
        and nib.load(out / "vessels.nii.gz").header.get_xyzt_units()[0] == "micron"
    )
    assert json.loads((out / "meta.json").read_text())["spacing_from"].startswith("TIFF")
    [out] = convert.convert_vesselnn(
        tmp_path / "ds", tmp_path / "o2", spacing=(5, 1, 1), verbose=False
    )
    assert read_volume(out / "image.nii.gz").spacing == pytest.approx((5.0, 1.0, 1.0))
    write_volume(
        tmp_path / "ds" / "labels" / "c_labels.tif", lab, geometry=g.with_spacing((3.0, 0.5, 0.5))
    )
    with pytest.raises(GeometryError, match="spacing differs"):
        convert.convert_vesselnn(tmp_path / "ds", tmp_path / "o3", verbose=False)


def test_convert_ircadb_masks_trees_roots_meta(converted):
    from napari_topo.data.io import read_volume

    _, case = converted
    m = _masks()
    vessels = np.asarray(read_volume(case / "vessels.nii.gz").data)
    trees = np.asarray(read_volume(case / "trees.nii.gz").data)
    liver = np.asarray(read_volume(case / "liver.nii.gz").data)
    assert vessels.dtype == trees.dtype == np.uint8
    np.testing.assert_array_equal(vessels > 0, m["portalvein"] | m["venoussystem"] | m["artery"])
    np.testing.assert_array_equal(liver > 0, m["liver"])
    both = m["portalvein"] & m["venoussystem"]
    assert both.sum() == 1 and trees[both].tolist() == [0]
    np.testing.assert_array_equal(trees == 1, m["portalvein"] & ~both)
    np.testing.assert_array_equal(trees == 2, m["venoussystem"] & ~both)
    with open(case / "roots.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["z", "y", "x"]
    # distance to the background = the nearest face of the box, in mm:
    # portal: one slice (2.5 mm), rows 2..6 (0.7 mm each), columns 2..8 (0.6 mm each):
    # largest, 3 rows = 2.1 mm, only at (2, 4, 5) (column 4 or 6: 3 columns = 1.8 mm);
    # hepatic: one slice, rows 8..10, columns 1..8: largest 2 rows = 1.4 mm on row 9 where
    # 3+ columns (1.8 mm) lie on each side, x = 3..6; ties -> first in C order.
    assert [int(v) for v in rows[1]] == [2, 4, 5]
    assert [int(v) for v in rows[2]] == [4, 9, 3]
    meta = json.loads((case / "meta.json").read_text())
    assert meta["structures"] == {
        "portal": ["portalvein"],
        "hepatic": ["venoussystem"],
        "artery": ["artery"],
        "liver": ["liver"],
    }
    assert meta["spacing"] == pytest.approx([DZ, DY, DX])
    assert meta["slice_order"].startswith("ImagePositionPatient")
    assert meta["voxels"]["portal_and_hepatic (unlabelled in trees)"] == 1
    assert meta["roi"] == {"mask": "liver.nii.gz", "margin": 10.0}


def test_convert_ircadb_from_zip_archives_matches_folders(ircadb_folder, converted, tmp_path):
    convert = _load("convert")
    root = tmp_path / "zipped"
    root.mkdir()
    for name in ("PATIENT_DICOM", "MASKS_DICOM"):
        with zipfile.ZipFile(root / f"{name}.zip", "w") as z:
            for f in sorted((ircadb_folder / name).rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(ircadb_folder).as_posix())
    case = convert.convert_ircadb(root, tmp_path / "out", case="z", artery="none", verbose=False)
    from napari_topo.data.io import read_volume

    _, ref = converted
    for f in ("image.nii.gz", "trees.nii.gz", "liver.nii.gz"):
        np.testing.assert_array_equal(
            np.asarray(read_volume(case / f).data), np.asarray(read_volume(ref / f).data)
        )
    m = _masks()
    np.testing.assert_array_equal(
        np.asarray(read_volume(case / "vessels.nii.gz").data) > 0,
        m["portalvein"] | m["venoussystem"],
    )  # no artery
    assert json.loads((case / "meta.json").read_text())["structures"]["artery"] == []


def test_convert_vesselnn_pairs_labels_and_spacing(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    convert = _load("convert")
    from napari_topo.data.io import read_volume

    (tmp_path / "ds" / "denoised").mkdir(parents=True)
    (tmp_path / "ds" / "labels").mkdir()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (4, 16, 12), dtype=np.uint8)
    lab = np.zeros((4, 16, 12), np.uint8)
    lab[1:3, 4:9, 2:6] = 255
    for name, arr in (
        ("denoised/poonX_stack_BM4D_denoised", img),
        ("denoised/unlabelled_BM4D_denoised", img),
        ("labels/poonX_stack_manualLabels_v1", lab * 0),
        ("labels/poonX_stack_manualLabels_v2", lab),
    ):
        tifffile.imwrite(tmp_path / "ds" / f"{name}.tif", arr, photometric="minisblack")
    outs = convert.convert_vesselnn(tmp_path / "ds", tmp_path / "out", verbose=False)
    assert [o.name for o in outs] == ["poonX_stack"]
    v = read_volume(outs[0] / "image.nii.gz")
    assert v.data.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(v.data), img)
    np.testing.assert_allclose(v.spacing, (5.0, 0.994, 0.994), rtol=1e-6)
    g = np.asarray(read_volume(outs[0] / "vessels.nii.gz").data)
    np.testing.assert_array_equal(g, (lab > 0).astype(np.uint8))  # v2, the newest label
    meta = json.loads((outs[0] / "meta.json").read_text())
    assert meta["series"]["label"].endswith("_v2.tif") and meta["roi"] is None


# ------------------------------------------------------------------------ scoring
def test_score_hand_computed_overlap_components_and_roi():
    scoring = _load("scoring")
    gt = np.zeros((5, 10, 20), bool)
    gt[1:4, 1:4, 2:18] = True  # tube A, 144 voxels
    gt[1:4, 6:9, 2:18] = True  # tube B, 144 voxels
    pred = np.zeros_like(gt)
    pred[1:4, 1:4, 2:18] = True  # A
    pred[1:4, 6:9, 2:10] = True  # first half of B, 72 voxels
    pred[0, 0, 0] = True  # a speck, not touching A
    s = scoring.score(pred, gt)
    assert s["Dice"] == pytest.approx(2 * 216 / (217 + 288))
    assert s["Precision"] == pytest.approx(216 / 217)
    assert s["Sensitivity"] == pytest.approx(0.75)
    assert (s["Components (pred)"], s["Components (gt)"], s["Betti-0 error"]) == (3, 2, 1)
    from napari_topo.topology.metrics import betti_errors

    assert s["Betti-0 error"] == betti_errors(pred, gt)[0]
    assert "Tree accuracy" not in s
    roi = np.zeros_like(gt)
    roi[:, :, :10] = True  # inside: A x 2..9 (72) + B x 2..9 (72), the speck
    s = scoring.score(pred, gt, roi=roi)
    assert s["Dice"] == pytest.approx(2 * 144 / (145 + 144))
    assert s["Sensitivity"] == 1.0 and s["Tsens"] == 1.0
    assert s["Tprec"] < 1.0  # the speck's one-voxel skeleton lies off the vessels
    assert s["True voxels"] == 144 and s["Predicted voxels"] == 145


def test_score_tree_accuracy_hand_computed():
    scoring = _load("scoring")
    gt = np.zeros((5, 9, 16), np.uint8)
    gt[2, 2, 1:15] = 1  # 14 centerline voxels each
    gt[2, 6, 1:15] = 2
    pred = np.zeros_like(gt)
    pred[2, 2, 1:15] = 3
    pred[2, 6, 1:8] = 4
    pred[2, 6, 8:15] = 3  # label switch half way along tree 2
    # matching 3 <-> 1 (overlap 14), 4 <-> 2 (7): 14 + 7 of 28 correct
    s = scoring.score(pred > 0, gt > 0, pred_trees=pred, gt_trees=gt)
    assert s["Tree accuracy"] == pytest.approx(0.75)
    roi = np.zeros(gt.shape, bool)
    roi[:, :, :8] = True
    s = scoring.score(pred > 0, gt > 0, roi=roi, pred_trees=pred, gt_trees=gt)
    assert s["Tree accuracy"] == pytest.approx(1.0)
    s = scoring.score(pred > 0, gt > 0, pred_trees=np.where(pred > 0, 1, 0), gt_trees=gt)
    assert s["Tree accuracy"] == pytest.approx(0.5)  # one predicted tree for both


def test_score_core_sensitivity_flags_hollow_vessels_and_uses_spacing():
    scoring = _load("scoring")
    from scipy import ndimage

    z, y = np.indices((21, 21))
    disc = (z - 10) ** 2 + (y - 10) ** 2 <= 8**2
    gt = np.repeat(disc[:, :, None], 30, axis=2)
    shell = gt & ~ndimage.binary_erosion(gt, iterations=3, border_value=1)
    hollow = scoring.score(shell, gt)
    full = scoring.score(gt, gt)
    assert hollow["Core sensitivity"] == 0.0 and full["Core sensitivity"] == 1.0
    assert hollow["Core voxels"] == full["Core voxels"] > 0
    # a slab 3 slices thick: depth 2 slices -> no core in voxel units, 10 um > 5 at 5 um
    slab = np.zeros((5, 30, 30), bool)
    slab[1:4, 5:25, 5:25] = True
    assert scoring.score(slab, slab)["Core sensitivity"] is None
    s = scoring.score(slab, slab, spacing=(5.0, 1.0, 1.0))
    assert s["Core voxels"] == 100 and s["Core sensitivity"] == 1.0  # z=2, y, x 10..19


def test_roi_from_mask_is_physical():
    scoring = _load("scoring")
    m = np.zeros((15, 41, 41), bool)
    m[7, 20, 20] = True
    r = scoring.roi_from_mask(m, spacing=(1.6, 0.57, 0.57), margin=10.0)
    assert r[:, 20, 20].sum() == 2 * 6 + 1  # 6 slices of 1.6 mm within 10 mm
    assert r[7, 20, :].sum() == 2 * 17 + 1  # 17 pixels of 0.57 mm
    with pytest.raises(ValueError, match="empty"):
        scoring.roi_from_mask(np.zeros((3, 3, 3), bool))


# -------------------------------------------------------------- frangi and run.py
def test_frangi_baseline_finds_a_bright_tube():
    fb = _load("frangi_baseline")
    assert fb.frangi_sigmas((2.0, 16.0), (5.0, 1.0, 1.0)) == (1.0, 2.0, 4.0, 8.0)
    rng = np.random.default_rng(1)
    z, y = np.indices((24, 24))
    tube = np.repeat(((z - 12) ** 2 + (y - 12) ** 2 <= 2.5**2)[:, :, None], 32, axis=2)
    img = 100 + 60 * tube + rng.normal(0, 5, tube.shape)
    analysis, info = fb.frangi_segment(img, radius_range=(1.5, 3.0))
    from napari_topo.topology.metrics import dice

    assert dice(analysis.mask, tube) > 0.5
    assert analysis.result.n_trees == 1 and info["sigmas"][0] == 1.0


def test_run_end_to_end_on_converted_synthetic_case(converted, tmp_path, capsys):
    run = _load("run")
    out, case = converted
    assert run.find_cases(out) == [case]
    assert run.find_cases(out, ["nothing"]) == []
    loaded = run.load_case(case)
    assert loaded["roots"].tolist() == [[2, 4, 5], [4, 9, 3]]
    assert loaded["roi"].shape == SHAPE and loaded["roi"].all()  # 10 mm covers it all
    assert run.main([str(out), "--results", str(tmp_path / "res"), "--models", "frangi"]) == 0
    res = json.loads((tmp_path / "res" / "results.json").read_text())
    (row,) = res["rows"]
    assert row["model"] == "frangi" and "error" not in row, row.get("traceback")
    assert {
        "Dice",
        "clDice",
        "Precision",
        "Sensitivity",
        "Betti-0 error",
        "Tree accuracy",
        "Core sensitivity",
        "Trees",
        "Time (s)",
    } <= set(row)
    md = (tmp_path / "res" / "results.md").read_text()
    assert "| 3D-IRCADb-01 | 3Dircadb1.99 | frangi |" in md
    assert "--models frangi" in md  # the command that scored it
    printed = capsys.readouterr().out
    assert f"input: {converted_source(case)}" in printed


def test_update_cards_writes_the_real_scores_a_card_then_shows(converted, tmp_path):
    # a copy of a shipped model, run as the README's table is run, with --update-cards
    import shutil

    from napari_topo.models.registry import WEIGHTS_DIR, describe_card, load_model, model_card

    run = _load("run")
    out, _ = converted
    for suffix in (".json", ".safetensors"):
        shutil.copy(WEIGHTS_DIR / f"unet-dice{suffix}", tmp_path / f"unet-dice{suffix}")
    card_path = tmp_path / "unet-dice.json"
    shipped = (WEIGHTS_DIR / "unet-dice.json").read_text()
    blank = json.loads(shipped)
    blank["metrics"].pop("real", None)  # a card that holds no real-data scores yet
    card_path.write_text(json.dumps(blank))
    res = tmp_path / "res"
    argv = [str(out), "--results", str(res), "--models", str(card_path), "frangi"]
    assert run.main([*argv, "--update-cards"]) == 0
    rows = json.loads((res / "results.json").read_text())["rows"]
    (row,) = [r for r in rows if r["model"] == str(card_path)]
    assert "error" not in row, row.get("traceback")
    card = model_card(card_path)
    (entry,) = card.metrics["real"]["datasets"]
    assert entry["dataset"] == "3D-IRCADb-01" and entry["n_cases"] == 1
    assert entry["region"] == "inside the liver grown by 10 mm"
    assert entry["Dice"] == pytest.approx(row["Dice"])
    assert "--update-cards" in entry["command"]
    line = next(x for x in describe_card(card) if x.startswith("real data"))
    assert line.startswith(
        f"real data, 3D-IRCADb-01, inside the liver grown by 10 mm, measured "
        f"{entry['date'][:10]}: Dice {row['Dice']:.3f}"
    )
    # another dataset measured later joins the card; the CT's entry stays
    card.metrics["real"]["datasets"][0]["dataset"] = "an earlier dataset"
    card.to_json(card.path)
    assert run.main([*argv, "--update-cards"]) == 0
    names = [d["dataset"] for d in model_card(card_path).metrics["real"]["datasets"]]
    assert names == ["an earlier dataset", "3D-IRCADb-01"]
    with pytest.raises(SystemExit):  # scores with other settings are not the model's
        run.main([*argv, "--update-cards", "--threshold", "0.3"])
    load_model(card_path)  # the weights and their recorded SHA-256 are untouched
    assert (WEIGHTS_DIR / "unet-dice.json").read_text() == shipped  # not the card written


def converted_source(case) -> str:
    return json.loads((case / "meta.json").read_text())["source"]


# ------------------------------------------------------------------- four tubes
@pytest.fixture(scope="module")
def tubes():
    return _load("four_tubes").four_tubes(0)


def test_four_tubes_properties(tubes):
    import cc3d

    v = tubes
    assert v.image.dtype == np.uint16 and v.image.shape == (64, 256, 256)
    assert v.n_trees == 4 and 1.5 <= min(v.radii) and max(v.radii) <= 4.0
    assert 0.005 <= v.vessel_fraction <= 0.009
    labels, n = cc3d.connected_components(v.mask, connectivity=26, return_N=True)
    assert n == 4
    for k in range(1, 5):  # each tube one piece, crossing the whole volume
        assert cc3d.connected_components(v.labels == k, connectivity=26, return_N=True)[1] == 1
        assert v.labels[tuple(v.sources[k - 1])] == k
    from scipy import ndimage

    im = v.image.astype(float)
    bg = ~ndimage.binary_dilation(v.mask, iterations=2)
    core = ndimage.binary_erosion(v.mask) & (v.labels >= 3)
    cnr = (im[core].mean() - im[bg].mean()) / im[bg].std()
    assert cnr == pytest.approx(6.0, abs=0.3)


def test_four_tubes_is_seeded(tubes):
    ft = _load("four_tubes")
    np.testing.assert_array_equal(ft.four_tubes(0).image, tubes.image)
    assert not np.array_equal(ft.four_tubes(1).image, tubes.image)


def test_miss_profile_tells_rims_from_cores_and_untouched_pieces():
    misses = _load("misses")
    gt = np.zeros((9, 20, 30), bool)
    gt[1:8, 3:10, 2:28] = True  # a thick bar: rims and a core
    gt[2:4, 14:16, 5:9] = True  # a small piece apart
    image = np.where(gt, 30.0, 5.0)
    image[gt & ~_erode(gt)] = 11.0  # dim rims, as two-photon labels drawn wide
    narrow = _erode(gt)  # a model that draws the bar one voxel narrower
    narrow[2:4, 14:16, 5:9] = False  # and misses the small piece
    m = misses.miss_profile(narrow, gt, image)
    rim, second = m["depth_bins"][0], m["depth_bins"][1]
    assert rim["sensitivity"] == 0.0 and second["sensitivity"] == 1.0
    assert rim["share"] == pytest.approx((gt & ~_erode(gt)).sum() / gt.sum())
    assert m["missed_distance"][1] == pytest.approx(1.0)  # the rim: one voxel off
    assert (m["median_found"], m["median_missed"], m["median_background"]) == (30, 11, 5)
    assert m["untouched_share"] == pytest.approx(16 / gt.sum())  # the small piece
    # with a spacing the distances are physical, depths in finest-axis voxels
    m = misses.miss_profile(narrow, gt, image, spacing=(5.0, 1.0, 1.0))
    assert m["missed_distance"][0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one shape"):
        misses.miss_profile(narrow[1:], gt, image)


def _erode(mask):
    from scipy import ndimage as ndi

    return ndi.binary_erosion(mask)


def test_thicken_averages_slices_keeps_middle_masks_and_moves_roots(converted, tmp_path):
    from napari_topo.data.io import read_volume

    thicken = _load("thicken")
    _, case = converted
    out = thicken.thicken(case, tmp_path, 3)
    assert out == tmp_path / "ircadb" / f"{case.name}-z3"
    img = read_volume(out / "image.nii.gz")
    hu = np.asarray(read_volume(case / "image.nii.gz").data)
    expected = np.rint(hu.astype(float).reshape(2, 3, *hu.shape[1:]).mean(axis=1))
    np.testing.assert_array_equal(np.asarray(img.data), expected.astype(hu.dtype))
    assert img.spacing == pytest.approx((3 * DZ, DY, DX))
    trees = np.asarray(read_volume(out / "trees.nii.gz").data)
    full = np.asarray(read_volume(case / "trees.nii.gz").data)
    np.testing.assert_array_equal(trees, full[[1, 4]])  # the middle slice of each three
    # the portal vein (slice 2) is not in a middle slice: no root; the hepatic one moves
    # to z 4 // 3 = 1, on its own tree
    with open(out / "roots.csv") as fh:
        rows = [[int(v) for v in r] for r in list(csv.reader(fh))[1:]]
    assert len(rows) == 1 and trees[tuple(rows[0])] == 2 and rows[0][0] == 1
    meta = json.loads((out / "meta.json").read_text())
    assert meta["spacing"] == pytest.approx([3 * DZ, DY, DX]) and meta["shape"] == [2, 12, 10]
    assert meta["thickened"]["factor"] == 3 and meta["roots_dropped"] == [1]
    assert [(r["tree"], r["zyx"]) for r in meta["roots"]] == [(2, rows[0])]
    for bad in ("1", "2"):  # an even factor has no middle slice
        assert thicken.main([str(case), str(tmp_path), "--factor", bad]) == 2
    run = _load("run")
    loaded = run.load_case(out)  # run.py reads it as a case
    assert loaded["roi"].shape == (2, 12, 10) and loaded["roots"].shape == (1, 3)
