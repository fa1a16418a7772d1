"""Image geometry survives every path (issue 11): file -> CLI / napari layer -> file.

Each case of the issue with its right value, then round trips over random placements
(axis flips and permutations, origins, anisotropic spacing) for NIfTI, TIFF and zarr
through read, segment/evaluate, write and the napari reader and writers, and the same
volume as numpy, memmap, zarr and dask.

``segment`` runs with ``predict`` replaced by a threshold of the input (the model is
not what these tests are about; tests/test_cli.py runs the real ones): the mask then
equals ``input > 0.5`` exactly, so any flip or shift shows.
"""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest

from napari_topo import cli
from napari_topo.data.io import read_volume, write_volume
from napari_topo.geometry import (
    Geometry,
    GeometryError,
    align,
    compare,
    compare_layers,
    geometry_from_layer_meta,
    layer_geometry,
    select_channel,
)

nib = pytest.importorskip("nibabel")
tifffile = pytest.importorskip("tifffile")


# ------------------------------------------------------------------------------ helpers
def _tubes(shape=(12, 16, 20)) -> np.ndarray:
    """An asymmetric little vessel tree (float32, vessel 1, background 0)."""
    z, y, x = np.indices(shape)
    a = np.zeros(shape, np.float32)
    a[(np.hypot(z - 4, y - 5) <= 1.5) & (x >= 2) & (x <= shape[2] - 3)] = 1.0
    a[(np.hypot(z - 4, x - 12) <= 1.5) & (y >= 5) & (y <= shape[1] - 3)] = 1.0
    a[(np.hypot(y - 11, x - 12) <= 1.2) & (z >= 4) & (z <= shape[0] - 2)] = 1.0
    return a


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-topo: error:"), err
    return lines[0]


@pytest.fixture
def threshold_model(monkeypatch):
    """Replace the model run by ``input > 0.5``; record the volumes that reached it."""
    from napari_topo.inference import pipeline

    seen = []

    def fake_predict(volume, model=None, **kwargs):
        vol = np.asarray(volume, dtype=np.float32)
        seen.append(vol.copy())
        return pipeline.PredictOutputs({"vessel": (vol > 0.5).astype(np.float32)})

    monkeypatch.setattr(pipeline, "predict", fake_predict)
    return seen


SEG = ["--model", "unet-dice", "--device", "cpu", "--min-size", "0"]


def _save_nifti(path, xyz: np.ndarray, affine, codes=(1, 1)):
    img = nib.Nifti1Image(xyz, np.asarray(affine, dtype=float))
    img.set_qform(affine, code=codes[0])
    img.set_sform(affine, code=codes[1])
    img.header.set_xyzt_units("mm")
    nib.save(img, path)
    return path


def _random_placement(rng, n=3) -> np.ndarray:
    """A (n+1)^2 affine: random axis permutation and flips, spacing and origin."""
    perm = rng.permutation(n)
    flips = rng.choice([-1.0, 1.0], n)
    spacing = rng.choice([0.3, 0.5, 0.8, 1.0, 2.0, 3.5], n)
    direction = np.zeros((n, n))
    direction[perm, np.arange(n)] = flips
    a = np.eye(n + 1)
    a[:n, :n] = direction * spacing
    a[:n, n] = rng.uniform(-80, 80, n).round(2)
    return a


def _world_voxels(mask, geometry) -> set:
    """World coordinates (rounded) of the non-zero voxels."""
    idx = np.argwhere(np.asarray(mask) > 0)
    return {tuple(v) for v in np.round(geometry.world(idx), 3).tolist()}


# ------------------------------------------------------------------------------ case 1
def _ras_las(tmp_path, mask):
    """The same mask as RAS (identity affine) and LAS (x reversed, origin moved)."""
    xyz = mask.transpose(2, 1, 0).astype(np.uint8)  # (x, y, z) for nibabel
    ras = _save_nifti(tmp_path / "gt_ras.nii.gz", xyz, np.eye(4))
    las_aff = np.eye(4)
    las_aff[0, 0] = -1.0
    las_aff[0, 3] = xyz.shape[0] - 1  # voxel 0 now lies where the last voxel was
    las = _save_nifti(tmp_path / "pred_las.nii.gz", xyz[::-1].copy(), las_aff)
    return ras, las


def test_case1_las_against_ras_scores_dice_1(tmp_path, capsys):
    mask = _tubes() > 0
    ras, las = _ras_las(tmp_path, mask)
    code, out, err = _run(["evaluate", las, ras, "--out", tmp_path / "m.json"], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["Dice"] == 1.0 and metrics["clDice"] == 1.0
    assert "reordered" in out  # said, not silent
    # the other way round, too
    code, out, err = _run(["evaluate", ras, las, "--out", tmp_path / "n.json"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "n.json").read_text())["Dice"] == 1.0
    # without alignment the flipped arrays disagree: the test can fail
    raw = np.asarray(read_volume(las).data) > 0
    assert (raw != mask).any()


def test_case1_permuted_and_flipped_grid_scores_dice_1(tmp_path, capsys):
    """The x and y axes swapped and z reversed: still the same voxels."""
    mask = _tubes() > 0
    ras = _save_nifti(tmp_path / "ras.nii", mask.transpose(2, 1, 0).astype(np.uint8), np.eye(4))
    # stored (y, x, -z): array index (i, j, k) -> world (x=j, y=i, z=nz-1-k)
    nz = mask.shape[0]
    xyz = mask.transpose(1, 2, 0)[:, :, ::-1].astype(np.uint8)
    aff = np.zeros((4, 4))
    aff[0, 1] = aff[1, 0] = 1.0
    aff[2, 2], aff[2, 3], aff[3, 3] = -1.0, nz - 1, 1.0
    other = _save_nifti(tmp_path / "other.nii", xyz, aff)
    code, out, err = _run(["evaluate", other, ras, "--out", tmp_path / "m.json"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "m.json").read_text())["Dice"] == 1.0


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ("origin", "origin differs"),
        ("spacing", "spacing differs"),
        ("oblique", "orientation differs"),
        ("shape", "shape differs"),
    ],
)
def test_case1_other_grids_are_refused_in_one_line(tmp_path, capsys, change, needle):
    mask = _tubes() > 0
    xyz = mask.transpose(2, 1, 0).astype(np.uint8)
    ras = _save_nifti(tmp_path / "ras.nii.gz", xyz, np.eye(4))
    aff = np.eye(4)
    if change == "origin":
        aff[0, 3] = 1.0  # one voxel along x
    elif change == "spacing":
        aff[2, 2] = 2.0
    elif change == "oblique":
        c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
        aff[:2, :2] = [[c, -s], [s, c]]
    else:
        xyz = xyz[:-1]
    other = _save_nifti(tmp_path / "other.nii.gz", np.ascontiguousarray(xyz), aff)
    code, out, err = _run(["evaluate", other, ras, "--out", tmp_path / "m.json"], capsys)
    assert code == 2
    assert needle in _one_error_line(err)
    assert not (tmp_path / "m.json").exists()


def test_case1_napari_reader_overlays_the_two(tmp_path):
    from napari.layers import Layer

    from napari_topo._plugin import read_volumes

    mask = _tubes() > 0
    ras, las = _ras_las(tmp_path, mask)
    (a, meta_a, kind_a), (b, meta_b, kind_b) = read_volumes([str(ras), str(las)])
    assert kind_a == kind_b == "labels"
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert meta_a["scale"] == meta_b["scale"] and meta_a["translate"] == meta_b["translate"]
    # every voxel lands where the file's affine puts it
    layer = Layer.create(b, meta_b, kind_b)
    vox = np.argwhere(np.asarray(b) > 0)[:5]
    world = np.array([layer.data_to_world(v) for v in vox])
    las_img = nib.load(las)
    stored = np.asarray(las_img.dataobj).transpose(2, 1, 0)  # (z, y, x)
    z, y, x = np.argwhere(stored > 0)[:1][0]
    ras_world = (las_img.affine @ [x, y, z, 1])[:3][::-1]  # (S, A, R)
    assert {tuple(w) for w in np.round(world, 6).tolist()} <= {
        tuple(v) for v in np.round(np.argwhere(mask).astype(float), 6).tolist()
    }
    assert tuple(ras_world) in {tuple(v) for v in np.argwhere(mask).astype(float).tolist()}


# ------------------------------------------------------------------------------ case 2
@pytest.fixture
def hyperstack(tmp_path):
    """Two-channel ImageJ TIFF, axes ZCYX, z step 2 um, pixels 0.5 um; channel 1 holds
    the vessels, channel 0 their inverse."""
    vessels = np.zeros((12, 48, 48), np.float32)
    vessels[2:10, 20:28, 8:40] = 1.0
    data = np.stack([1.0 - vessels, vessels], axis=1).astype(np.float32)  # (12, 2, 48, 48)
    p = tmp_path / "stack.tif"
    tifffile.imwrite(
        p,
        data,
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"axes": "ZCYX", "spacing": 2.0, "unit": "um"},
    )
    return p, data


def test_case2_imagej_channels_are_channels_and_z_is_z(hyperstack):
    p, data = hyperstack
    vol = read_volume(p)
    assert vol.data.shape == (12, 2, 48, 48)
    assert vol.axes == "zcyx"
    assert vol.spacing == (2.0, 0.5, 0.5)  # z on the z axis; none on the channel axis
    assert vol.geometry.unit == "um"
    with pytest.raises(GeometryError, match=r"2 channels.*--channel N \(0\.\.1\)"):
        select_channel(vol.data, vol.geometry, name="stack.tif")
    chosen, geometry = select_channel(vol.data, vol.geometry, 1)
    np.testing.assert_array_equal(chosen, data[:, 1])
    assert geometry.axes == "zyx" and geometry.spacing == (2.0, 0.5, 0.5)


def test_case2_segment_needs_channel_and_uses_it(hyperstack, tmp_path, capsys, threshold_model):
    p, data = hyperstack
    code, out, err = _run(["segment", p, "--out", tmp_path / "o", *SEG], capsys)
    assert code == 2 and "--channel" in _one_error_line(err) and "2 channels" in err
    assert not threshold_model and not (tmp_path / "o").exists()  # before any model ran
    code, out, err = _run(["segment", p, "--out", tmp_path / "o", "--channel", "1", *SEG], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(threshold_model[0], data[:, 1])
    mask = read_volume(tmp_path / "o" / "stack_mask.tif")
    assert mask.data.shape == (12, 48, 48) and mask.spacing == (2.0, 0.5, 0.5)
    np.testing.assert_array_equal(mask.data, data[:, 1] > 0.5)
    code, out, err = _run(["segment", p, "--out", tmp_path / "q", "--channel", "2", *SEG], capsys)
    assert code == 2 and "out of range" in _one_error_line(err)


def test_case2_napari_reader_splits_channels(hyperstack):
    from napari_topo._plugin import read_volumes

    p, _ = hyperstack
    [(data, meta, kind)] = read_volumes(str(p))
    assert kind == "image" and meta["channel_axis"] == 1
    assert meta["scale"] == (2.0, 0.5, 0.5)


def test_ome_tiff_axes_and_spacing(tmp_path):
    data = np.random.default_rng(0).random((2, 5, 16, 18)).astype(np.float32)
    p = tmp_path / "a.ome.tif"
    tifffile.imwrite(
        p,
        data,
        metadata={
            "axes": "CZYX",
            "PhysicalSizeX": 0.25,
            "PhysicalSizeY": 0.3,
            "PhysicalSizeZ": 1.5,
            "PhysicalSizeXUnit": "µm",
        },
    )
    vol = read_volume(p)
    assert vol.axes == "czyx" and vol.spacing == (1.5, 0.3, 0.25) and vol.geometry.unit == "um"


def test_nifti_4d_time_needs_a_choice(tmp_path, capsys, threshold_model):
    tubes = _tubes().transpose(2, 1, 0)  # (x, y, z) = (20, 16, 12)
    xyzt = np.stack([tubes, tubes[::-1], tubes * 0.5], axis=-1).astype(np.float32)
    p = tmp_path / "series.nii.gz"
    _save_nifti(p, xyzt, np.diag([0.5, 0.5, 2.0, 1.0]))
    vol = read_volume(p)
    assert vol.axes == "tzyx" and vol.data.shape == (3, 12, 16, 20)
    assert vol.spacing == (2.0, 0.5, 0.5)
    code, out, err = _run(["segment", p, "--out", tmp_path / "o", *SEG], capsys)
    assert code == 2 and "3 times" in _one_error_line(err) and not threshold_model
    code, out, err = _run(["segment", p, "--out", tmp_path / "o", "--channel", "2", *SEG], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(threshold_model[0], xyzt[..., 2].transpose(2, 1, 0))


# ------------------------------------------------------------------------------ case 3
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".tif"])
def test_case3_labels_layer_reopens_where_it_was(tmp_path, suffix):
    from napari.layers import Labels, Layer

    from napari_topo._plugin import read_volumes, write_labels

    crop = (_tubes() > 0).astype(np.int32) * 3
    layer = Labels(crop, scale=(2, 0.5, 0.5), translate=(40, -12.5, 7))
    data, meta, _ = layer.as_layer_data_tuple()
    [out] = write_labels(str(tmp_path / f"crop{suffix}"), data, meta)
    [(back, back_meta, kind)] = read_volumes(out)
    assert kind == "labels"
    assert back_meta["scale"] == pytest.approx((2.0, 0.5, 0.5))
    assert back_meta["translate"] == pytest.approx((40.0, -12.5, 7.0))
    again = Layer.create(back, back_meta, kind)
    np.testing.assert_array_equal(again.data, crop)
    for v in ([0, 0, 0], [11, 15, 19], [3, 7, 2]):
        np.testing.assert_allclose(again.data_to_world(v), layer.data_to_world(v))
    if suffix != ".tif":  # the NIfTI header holds the origin (in RAS, x first)
        img = nib.load(out)
        np.testing.assert_allclose(img.affine[:3, 3], (7.0, -12.5, 40.0))
        assert int(img.header["sform_code"]) > 0


# ------------------------------------------------------------------------------ case 4
def test_case4_read_only_npy_ground_truth_scores(tmp_path, capsys, threshold_model):
    img = _tubes()
    np.save(tmp_path / "vol.npy", img)
    np.save(tmp_path / "gt.npy", img > 0.5)  # boolean; np.load(mmap_mode="r") is read-only
    assert not read_volume(tmp_path / "gt.npy").data.flags.writeable
    code, out, err = _run(
        ["segment", tmp_path / "vol.npy", "--gt", tmp_path / "gt.npy", "--out", tmp_path / "o"]
        + SEG,
        capsys,
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "o" / "vol_metrics.json").read_text())
    assert metrics["Dice"] == 1.0
    code, out, err = _run(
        ["evaluate", tmp_path / "gt.npy", tmp_path / "gt.npy", "--out", tmp_path / "m.json"], capsys
    )
    assert code == 0, err
    assert json.loads((tmp_path / "m.json").read_text())["Dice"] == 1.0


# ------------------------------------------------------------------------------ case 5
@pytest.mark.parametrize("suffix", [".tif", ".npy"])
def test_case5_rgb_is_refused_before_any_model_runs(tmp_path, capsys, threshold_model, suffix):
    rgb = np.random.default_rng(0).integers(0, 255, (584, 565, 3), dtype=np.uint8)
    p = tmp_path / f"fundus{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(p, rgb, photometric="rgb")
    else:
        np.save(p, rgb)
    vol = read_volume(p)
    assert vol.axes == "yxs"
    # Refused in one step as what it is (not asked for a colour first, then refused as
    # 2D), with or without --channel, before the model: one line, nothing written.
    for extra in ([], ["--channel", "1"]):
        code, out, err = _run(["segment", p, "--out", tmp_path / "o", *extra, *SEG], capsys)
        assert code == 2
        line = _one_error_line(err)
        assert "is an RGB 2D image (584 x 565 pixels, 3 colour samples)" in line, line
        assert "segments 3D (z, y, x) volumes" in line and "--channel" not in line
        assert not threshold_model and not (tmp_path / "o").exists()


def test_rgb_volume_with_a_channel_is_segmented(tmp_path, capsys, threshold_model):
    vessels = _tubes()
    rgb = np.stack([vessels * 0, vessels * 200, vessels * 0 + 10], axis=-1).astype(np.uint8)
    np.save(tmp_path / "rgbvol.npy", rgb)
    code, out, err = _run(
        ["segment", tmp_path / "rgbvol.npy", "--out", tmp_path / "o", "--channel", "1", *SEG],
        capsys,
    )
    assert code == 0, err
    np.testing.assert_array_equal(threshold_model[0], rgb[..., 1])


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("seed", range(6))
def test_random_placements_round_trip_through_every_writer(tmp_path, seed):
    """NIfTI, TIFF and zarr keep a random placement exactly; the napari reader and the
    plugin writer keep every voxel's world position."""
    from napari.layers import Layer

    from napari_topo._plugin import read_volumes, write_labels

    rng = np.random.default_rng(seed)
    geometry = Geometry(_random_placement(rng), "zyx", unit="mm")
    labels = (_tubes() > 0).astype(np.uint8) * 2
    world = _world_voxels(labels, geometry)
    for suffix in (".nii.gz", ".tif", ".zarr"):
        p = write_volume(tmp_path / f"v{seed}{suffix}", labels, geometry=geometry)
        vol = read_volume(p)
        np.testing.assert_allclose(vol.geometry.affine, geometry.affine, atol=1e-5)
        assert vol.geometry.unit == "mm" and vol.geometry.known == "full"
        np.testing.assert_array_equal(vol.data, labels)
        if suffix == ".zarr":
            continue
        # napari: read (shown in +z+y+x order), make the layer, save it, read again
        [(data, meta, kind)] = read_volumes(str(p))
        assert kind == "labels"
        layer = Layer.create(data, meta, kind)
        idx = np.argwhere(np.asarray(layer.data) > 0)
        shown = {tuple(np.round(layer.data_to_world(v), 3)) for v in idx}
        assert shown == world
        out_path = tmp_path / f"saved{seed}{suffix}"
        [saved] = write_labels(str(out_path), *layer.as_layer_data_tuple()[:2])
        back = read_volume(saved)
        assert _world_voxels(back.data, back.geometry) == world
        aligned = align(np.asarray(back.data), back.geometry, geometry, labels.shape).data
        np.testing.assert_array_equal(aligned, labels)


@pytest.mark.parametrize("seed", range(3))
def test_segment_outputs_lie_in_the_input_space(tmp_path, capsys, threshold_model, seed):
    """Every volume segment writes has the input's affine and codes; evaluate of the
    mask against a differently stored ground truth scores 1; the graph files open
    through the plugin's reader on the mask's voxels."""
    from napari.layers import Layer

    from napari_topo._plugin import read_graph, read_volumes

    rng = np.random.default_rng(100 + seed)
    img = _tubes()
    affine = _random_placement(rng)
    geometry = Geometry(affine, "zyx", unit="mm", nifti_codes=(1, 2))
    p = write_volume(tmp_path / "scan.nii.gz", img, geometry=geometry)
    # the ground truth stored in another order (RAS-like identity direction)
    from napari_topo.geometry import canonical_orientation, reorient

    gt_data, gt_geometry = reorient(img > 0.5, geometry, canonical_orientation(3))
    gt = write_volume(
        tmp_path / "gt.nii.gz", gt_data, geometry=gt_geometry.replace(nifti_codes=None)
    )
    out = tmp_path / "o"
    code, stdout, err = _run(["segment", p, "--out", out, "--gt", gt, *SEG], capsys)
    assert code == 0, err
    assert json.loads((out / "scan_metrics.json").read_text())["Dice"] == 1.0
    src = nib.load(p)
    for kind in ("probability", "mask", "skeleton", "trees"):
        f = out / f"scan_{kind}.nii.gz"
        img_out = nib.load(f)
        np.testing.assert_allclose(img_out.affine, src.affine, atol=1e-5)
        assert int(img_out.header["qform_code"]) == 1 and int(img_out.header["sform_code"]) == 2
        assert img_out.header.get_xyzt_units()[0] == "mm"
    # masks, skeletons and trees open as Labels, overlaying the scan
    layers = read_volumes([str(p), *(str(out / f"scan_{k}.nii.gz") for k in ("mask", "trees"))])
    assert [k for _, _, k in layers] == ["image", "labels", "labels"]
    made = [Layer.create(*t) for t in layers]
    assert all(tuple(m.scale) == tuple(made[0].scale) for m in made)
    assert all(tuple(m.translate) == tuple(made[0].translate) for m in made)
    # the vessel graph files: Shapes + Points on the mask's voxels, in world space
    mask_layer = made[1]
    mask_world = {
        tuple(np.round(mask_layer.data_to_world(v), 3)) for v in np.argwhere(mask_layer.data)
    }
    for graph in ("scan_graph.csv", "scan_graph.swc"):
        tuples = read_graph(str(out / graph))
        assert [t[2] for t in tuples] == ["shapes", "points"]
        points = Layer.create(*tuples[1])
        assert len(points.data) > 5
        world = {tuple(np.round(points.data_to_world(v), 3)) for v in np.round(points.data)}
        assert world <= mask_world, graph


def test_graph_csv_reader_round_trips_through_the_writer(tmp_path):
    from napari.layers import Layer

    from napari_topo._plugin import read_graph, write_graph

    (tmp_path / "v_graph.csv").write_text(
        "id,z,y,x,radius,tree\n0,1,2,3,0.5,1\n1,1,2,4,0.5,1\n2,1,2,5,0.7,1\n3,2,2,5,0.4,2\n"
    )
    (tmp_path / "v_graph_edges.csv").write_text("source,target,length\n1,0,1\n2,1,1\n3,2,1\n")
    shapes, points = read_graph(str(tmp_path / "v_graph.csv"))
    np.testing.assert_array_equal(points[0], [[1, 2, 3], [1, 2, 4], [1, 2, 5], [2, 2, 5]])
    assert list(points[1]["features"]["parent"]) == [-1, 0, 1, 2]
    assert len(shapes[0]) == 1 and len(shapes[0][0]) == 4  # one unbranched path
    layer = Layer.create(*points)
    [swc] = write_graph(str(tmp_path / "back.swc"), *layer.as_layer_data_tuple()[:2])
    _, again = read_graph(swc)
    np.testing.assert_allclose(again[0], points[0])


# ------------------------------------------------------------------------------ array kinds
def test_numpy_memmap_zarr_dask_give_the_same_result(tmp_path):
    zarr = pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    from napari_topo.topology.metrics import compute_metrics

    labels = _tubes() > 0
    pred = labels.copy()
    pred[4, 5, 2:6] = False  # a cut

    def as_kind(kind, arr, name):
        if kind == "numpy":
            return arr
        if kind == "memmap":
            np.save(tmp_path / f"{name}.npy", arr)
            return np.load(tmp_path / f"{name}.npy", mmap_mode="r")
        if kind == "zarr":
            z = zarr.open(str(tmp_path / f"{name}.zarr"), mode="w", shape=arr.shape, dtype=bool)
            z[:] = arr
            return z
        return da.from_array(arr, chunks=5)

    g = Geometry.from_spacing((2.0, 0.5, 0.5), origin=(1.0, 2.0, 3.0))
    # the same grid stored with x reversed
    reverse_x = np.eye(4)
    reverse_x[2, 2], reverse_x[2, 3] = -1.0, pred.shape[2] - 1
    flipped = g.replace(affine=g.affine @ reverse_x)
    ref = compute_metrics(pred, labels, spacing=g.spacing)
    for kind in ("numpy", "memmap", "zarr", "dask"):
        arr = as_kind(kind, pred, "p")
        got = compute_metrics(arr, labels, spacing=g.spacing)
        assert got == pytest.approx(ref, nan_ok=True), kind
        stored = as_kind(kind, pred[:, :, ::-1].copy(), "stored")
        aligned = align(stored, flipped, g, labels.shape).data
        np.testing.assert_array_equal(np.asarray(aligned), pred, err_msg=kind)
        got = compute_metrics(aligned, labels, spacing=g.spacing)
        assert got == pytest.approx(ref, nan_ok=True), kind
        vol, _ = select_channel(arr, g)
        np.testing.assert_array_equal(np.asarray(vol), pred, err_msg=kind)
        p = write_volume(tmp_path / f"{kind}.nii.gz", arr, geometry=g)
        np.testing.assert_array_equal(read_volume(p).data, pred.astype(np.uint8), err_msg=kind)


# ------------------------------------------------------------------------------ layers
def test_layer_geometry_is_what_napari_composes():
    from napari.layers import Labels

    rng = np.random.default_rng(0)
    for _ in range(5):
        affine = np.eye(4)
        affine[:3, :3] = _random_placement(rng)[:3, :3] / 2
        affine[:3, 3] = rng.uniform(-5, 5, 3)
        layer = Labels(
            np.zeros((4, 5, 6), np.uint8),
            scale=rng.uniform(0.2, 3, 3),
            translate=rng.uniform(-9, 9, 3),
            rotate=rng.uniform(-40, 40, 3),
            shear=rng.uniform(-0.3, 0.3, 3),
            affine=affine,
        )
        g = layer_geometry(layer)
        meta_g = geometry_from_layer_meta(layer.as_layer_data_tuple()[1], 3)
        for v in ([0, 0, 0], [3, 4, 5], [1, 2, 3]):
            np.testing.assert_allclose(g.world(v), layer.data_to_world(v), atol=1e-9)
            np.testing.assert_allclose(meta_g.world(v), layer.data_to_world(v), atol=1e-9)


def test_compare_layers_for_the_metrics_widget():
    from napari.layers import Labels

    a = np.zeros((4, 5, 6), np.uint8)
    gt = Labels(a, scale=(2, 0.5, 0.5), translate=(40, -12.5, 7))
    assert compare_layers(Labels(a, scale=(2, 0.5, 0.5), translate=(40, -12.5, 7)), gt) == ""
    assert "no voxel placement" in compare_layers(Labels(a), gt)  # never placed
    with pytest.raises(GeometryError, match="origin differs"):
        compare_layers(Labels(a, scale=(2, 0.5, 0.5)), gt)
    with pytest.raises(GeometryError, match="spacing differs"):
        compare_layers(Labels(a, scale=(1, 0.5, 0.5), translate=(40, -12.5, 7)), gt)


def test_compare_names_each_difference():
    g = Geometry.from_spacing((1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    shape = (4, 5, 6)
    for perm, flips in itertools.product(itertools.permutations(range(3)), [(1, -1, 1)]):
        a = np.eye(4)
        a[:3, :3] = np.eye(3)[:, perm] * flips
        # choose the origin so that the reordered grid covers the same voxels
        stored_shape = tuple(shape[p] for p in perm)
        far = (np.asarray(stored_shape) - 1) * (np.asarray(flips) < 0)
        a[:3, 3] = -(a[:3, :3] @ far)
        transform, note = compare(Geometry(a, "zyx"), stored_shape, g, shape)
        assert transform is not None or perm == (0, 1, 2) and flips == (1, 1, 1)
    unplaced = Geometry.identity(3)
    assert compare(unplaced, shape, g, shape)[1].startswith("the prediction states no")
    with pytest.raises(GeometryError, match="shape differs"):
        compare(unplaced, (4, 5, 7), g, shape)


def test_writer_and_reader_keep_nifti_codes_and_unit(tmp_path):
    aff = np.diag([-0.7, -0.7, 1.25, 1.0])
    aff[:3, 3] = (120.0, 95.5, -40.0)
    p = _save_nifti(tmp_path / "lps.nii.gz", np.zeros((8, 9, 10), np.int16), aff, codes=(1, 4))
    vol = read_volume(p)
    assert vol.geometry.nifti_codes == (1, 4) and vol.geometry.unit == "mm"
    out = write_volume(tmp_path / "copy.nii", np.asarray(vol.data), geometry=vol.geometry)
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, aff, atol=1e-6)
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 4)
    assert img.header.get_xyzt_units()[0] == "mm"
    # to TIFF (ImageJ cannot hold the flips: napari-topo's JSON does) and back
    tif = write_volume(tmp_path / "copy.tif", np.asarray(vol.data), geometry=vol.geometry)
    assert read_volume(tif).geometry == vol.geometry
    with tifffile.TiffFile(tif) as t:
        assert t.is_imagej and t.imagej_metadata["spacing"] == pytest.approx(1.25)


def test_readme_states_the_geometry_rules():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Geometry") :]
    for phrase in ("--channel", "origin", "flip", "Labels"):
        assert phrase in section.split("\n## ")[0], phrase


def test_evaluate_refuses_channels_it_cannot_choose(tmp_path, capsys):
    mask = (_tubes() > 0).astype(np.uint8)
    write_volume(tmp_path / "gt.nii.gz", mask)
    _save_nifti(tmp_path / "two.nii.gz", np.stack([mask.T, mask.T], axis=-1), np.eye(4))
    code, out, err = _run(["evaluate", tmp_path / "two.nii.gz", tmp_path / "gt.nii.gz"], capsys)
    assert code == 2 and "save one time as its own file" in _one_error_line(err)


def test_many_trees_open_as_labels_not_image(tmp_path):
    from napari_topo._plugin import is_label_volume, read_volumes

    trees = np.arange(4 * 5 * 6, dtype=np.int32).reshape(4, 5, 6)  # 120 trees
    p = write_volume(tmp_path / "scan_trees.nii.gz", trees)
    assert [k for _, _, k in read_volumes(str(p))] == ["labels"]
    assert not is_label_volume(trees.astype(np.uint16))  # a 16-bit image
    assert not is_label_volume(trees - 1024)  # a CT in HU


def test_segment_to_tiff_keeps_a_flipped_nifti_placement(tmp_path, capsys, threshold_model):
    img = _tubes()
    geometry = Geometry(_random_placement(np.random.default_rng(7)), "zyx", unit="mm")
    p = write_volume(tmp_path / "scan.nii.gz", img, geometry=geometry)
    code, out, err = _run(["segment", p, "--out", tmp_path / "o", "--format", "tif", *SEG], capsys)
    assert code == 0, err
    mask = read_volume(tmp_path / "o" / "scan_mask.tif")
    np.testing.assert_allclose(mask.geometry.affine, geometry.affine, atol=1e-5)
    np.testing.assert_array_equal(mask.data, img > 0.5)


# ------------------------------------------------------------------------------ sources
def _placed_pair(tmp_path):
    """The tubes as an anisotropic, translated RAS NIfTI and as its LAS copy (x
    reversed, origin moved): the same voxels in world space."""
    img = _tubes()
    ras_aff = np.diag([0.8, 0.5, 2.0, 1.0])  # (x, y, z) spacing
    ras_aff[:3, 3] = (7.0, -12.5, 40.0)
    xyz = img.transpose(2, 1, 0)
    ras = _save_nifti(tmp_path / "ras.nii.gz", xyz, ras_aff)
    las_aff = ras_aff.copy()
    las_aff[0, 0] = -0.8
    las_aff[0, 3] = 7.0 + 0.8 * (xyz.shape[0] - 1)
    las = _save_nifti(tmp_path / "las.nii.gz", np.ascontiguousarray(xyz[::-1]), las_aff)
    return img, ras, las


#: Two roots (z, y, x voxels of the RAS file): the left end of the first tube and the
#: far end of the third; the tree splits between them.
ROOTS = np.array([[4.0, 5.0, 3.0], [10.0, 11.0, 12.0]])


def _trees_on(path, reference):
    """Tree labels of a segment output, on ``reference``'s grid (read_volume order)."""
    vol, ref = read_volume(path), read_volume(reference)
    return np.asarray(align(np.asarray(vol.data), vol.geometry, ref.geometry, ref.data.shape).data)


def test_sources_exported_from_napari_over_a_flipped_file(tmp_path, capsys, threshold_model):
    """Roots placed on a LAS file opened in napari, saved with napari's own Points CSV
    writer or napari-topo's, give the trees the same roots give on the RAS file."""
    from napari.layers import Layer, Points
    from napari_builtins.io import napari_write_points

    from napari_topo._plugin import read_volumes, write_graph

    img, ras, las = _placed_pair(tmp_path)
    (tmp_path / "roots_ras.csv").write_text(
        "z,y,x\n" + "".join(f"{z:g},{y:g},{x:g}\n" for z, y, x in ROOTS)
    )
    code, _, err = _run(
        ["segment", ras, "--out", tmp_path / "a", "--sources", tmp_path / "roots_ras.csv", *SEG],
        capsys,
    )
    assert code == 0, err
    want = _trees_on(tmp_path / "a" / "ras_trees.nii.gz", ras)
    assert set(np.unique(want)) == {0, 1, 2}

    # napari: open the LAS file, add a Points layer with the image selected (napari
    # copies the image's placement, as File > New Points layer does), click the roots
    [image_tuple] = read_volumes(str(las))
    image = Layer.create(*image_tuple)
    world = read_volume(ras).geometry.world(ROOTS)
    clicks = np.array([image.world_to_data(w) for w in world])
    points = Points(
        clicks,
        scale=image.scale,
        translate=image.translate,
        rotate=image.rotate,
        shear=image.shear,
        affine=image.affine.affine_matrix,
    )
    # napari's own Points CSV writer (the npe2 command napari.write_points) and ours
    data, meta, _ = points.as_layer_data_tuple()
    napari_csv = napari_write_points(str(tmp_path / "roots_napari.csv"), data, meta)
    assert "axis-0" in (tmp_path / "roots_napari.csv").read_text().splitlines()[0]
    [plugin_csv] = write_graph(str(tmp_path / "roots_plugin.csv"), data, meta)
    for name, csv_path in (("n", napari_csv), ("p", plugin_csv)):
        code, _, err = _run(
            ["segment", las, "--out", tmp_path / name, "--sources", csv_path, *SEG], capsys
        )
        assert code == 0, err
        np.testing.assert_array_equal(_trees_on(tmp_path / name / "las_trees.nii.gz", ras), want)
    # read as the file's own voxel order (what was done before), the roots are mirrored
    # and the trees differ: the test can fail
    code, _, err = _run(
        ["segment", las, "--out", tmp_path / "v", "--sources", napari_csv,
         "--sources-space", "voxel", *SEG],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert (_trees_on(tmp_path / "v" / "las_trees.nii.gz", ras) != want).any()


def test_sources_outside_the_volume_are_refused_in_one_line(tmp_path, capsys, threshold_model):
    img, ras, las = _placed_pair(tmp_path)
    # world coordinates (mm) of the roots, read as napari's voxels: outside
    world = read_volume(ras).geometry.world(ROOTS)
    (tmp_path / "w.csv").write_text(
        "index,axis-0,axis-1,axis-2\n" + "".join(f"{i},{z},{y},{x}\n" for i, (z, y, x) in
                                                 enumerate(world))
    )  # fmt: skip
    code, out, err = _run(
        ["segment", las, "--out", tmp_path / "o", "--sources", tmp_path / "w.csv", *SEG], capsys
    )
    line = _one_error_line(err)
    assert code == 2 and "outside the volume" in line and "--sources-space world" in line
    assert not (tmp_path / "o").exists() and not threshold_model  # before any model run
    # told they are world coordinates, the same file gives the RAS roots' trees
    code, out, err = _run(
        ["segment", las, "--out", tmp_path / "o", "--sources", tmp_path / "w.csv",
         "--sources-space", "world", *SEG],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    _run(["segment", ras, "--out", tmp_path / "r", "--sources", tmp_path / "w.csv",
          "--sources-space", "world", *SEG], capsys)  # fmt: skip
    np.testing.assert_array_equal(
        _trees_on(tmp_path / "o" / "las_trees.nii.gz", ras),
        _trees_on(tmp_path / "r" / "ras_trees.nii.gz", ras),
    )


# ------------------------------------------------------------------------------ graph files
def test_graph_files_hold_world_coordinates_of_the_input_affine(tmp_path, capsys, threshold_model):
    """segment's SWC, CSV and GraphML give each centerline point where the input's
    affine puts it (SWC: RAS x, y, z in mm), and the plugin's reader puts the points on
    the image layer's grid, over the mask."""
    import networkx as nx
    from napari.layers import Layer

    from napari_topo._plugin import read_graph, read_volumes

    img, ras, las = _placed_pair(tmp_path)
    code, _, err = _run(["segment", las, "--out", tmp_path / "o", *SEG], capsys)
    assert code == 0, err
    out = tmp_path / "o"
    nodes = list(__import__("csv").DictReader((out / "las_graph.csv").open()))
    vox = np.array([[float(r[a]) for a in "zyx"] for r in nodes])  # the LAS file's order
    world = np.array([[float(r[f"{a}_physical"]) for a in "zyx"] for r in nodes])
    las_img = nib.load(las)
    ras_mm = (las_img.affine @ np.c_[vox[:, ::-1], np.ones(len(vox))].T).T[:, :3]
    np.testing.assert_allclose(world, ras_mm[:, ::-1], atol=1e-4)  # (S, A, R)
    swc = np.array(
        [
            [float(v) for v in line.split()[2:5]]
            for line in (out / "las_graph.swc").read_text().splitlines()
            if line and not line.startswith("#")
        ]
    )
    assert {tuple(v) for v in np.round(swc, 3).tolist()} == {
        tuple(v) for v in np.round(ras_mm, 3).tolist()
    }
    g = nx.read_graphml(out / "las_graph.graphml", node_type=int)
    assert g.nodes[0]["x_physical"] == pytest.approx(world[0, 2])
    assert Geometry.from_dict(json.loads(g.graph["geometry"])) == read_volume(las).geometry
    # the reader: the mask and the graph files overlay, on one grid
    [(m, m_meta, m_kind)] = read_volumes(str(out / "las_mask.nii.gz"))
    mask_layer = Layer.create(m, m_meta, m_kind)
    mask_world = {
        tuple(np.round(mask_layer.data_to_world(v), 3)) for v in np.argwhere(mask_layer.data)
    }
    for graph in ("las_graph.swc", "las_graph.csv"):
        for drop_summary in (False, True):
            if drop_summary:  # the SWC places itself from its header; the CSV by world
                (out / "las_summary.json").rename(out / "kept.json")
            try:
                points = Layer.create(*read_graph(str(out / graph))[1])
            finally:
                if drop_summary:
                    (out / "kept.json").rename(out / "las_summary.json")
            shown = {tuple(np.round(points.data_to_world(v), 3)) for v in points.data}
            assert shown <= mask_world, (graph, drop_summary)
            assert shown == {tuple(v) for v in np.round(world, 3).tolist()}
            if graph.endswith(".swc") or not drop_summary:
                assert tuple(points.scale) == pytest.approx(tuple(mask_layer.scale))
                assert tuple(points.translate) == pytest.approx(tuple(mask_layer.translate))


# ------------------------------------------------------------------------------ more cases
def _segment_mask_world(tmp_path, capsys, inp, *extra, name="o"):
    """Run segment on ``inp``; the world positions of its mask voxels and the mask's
    geometry, read back."""
    code, out, err = _run(["segment", inp, "--out", tmp_path / name, *extra, *SEG], capsys)
    assert code == 0, err
    [mask_path] = [p for p in (tmp_path / name).iterdir() if "_mask." in p.name]
    mask = read_volume(mask_path)
    return _world_voxels(mask.data, mask.geometry), mask


@pytest.mark.parametrize("codes", [(1, 0), (0, 2), (2, 1), (1, 4)])
def test_nifti_qform_sform_codes_round_trip_through_segment(
    tmp_path, capsys, threshold_model, codes
):
    """qform only, sform only, and both with different codes: the outputs lie where
    nibabel places the input and keep its codes."""
    img = _tubes()
    aff = _random_placement(np.random.default_rng(sum(codes)))
    xyz_aff = np.eye(4)
    xyz_aff[:3, :3] = aff[:3, :3][::-1, ::-1]
    xyz_aff[:3, 3] = aff[:3, 3][::-1]
    p = _save_nifti(tmp_path / "scan.nii.gz", img.transpose(2, 1, 0), xyz_aff, codes=codes)
    world, mask = _segment_mask_world(tmp_path, capsys, p)
    truth = Geometry(aff, "zyx")
    assert world == _world_voxels(img > 0.5, truth)
    out = nib.load(tmp_path / "o" / "scan_mask.nii.gz")
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == codes
    np.testing.assert_allclose(out.affine, nib.load(p).affine, atol=1e-5)


def test_nifti_qform_and_sform_that_differ_are_both_kept(tmp_path, capsys, threshold_model):
    """A file whose qform (scanner) and sform (aligned) differ: nibabel places it by the
    sform; the outputs keep both, so a viewer that reads the qform overlays them too."""
    img = _tubes()
    sform = np.diag([0.5, 0.5, 2.0, 1.0])
    sform[:3, 3] = (3.0, -4.0, 10.0)
    qform = np.diag([-0.5, -0.5, 2.0, 1.0])
    qform[:3, 3] = (100.0, 80.0, -20.0)
    nimg = nib.Nifti1Image(img.transpose(2, 1, 0), None)
    nimg.set_qform(qform, code=1)
    nimg.set_sform(sform, code=2)
    nib.save(nimg, tmp_path / "scan.nii.gz")
    _segment_mask_world(tmp_path, capsys, tmp_path / "scan.nii.gz")
    out = nib.load(tmp_path / "o" / "scan_trees.nii.gz")
    np.testing.assert_allclose(out.get_sform(), sform, atol=1e-5)
    np.testing.assert_allclose(out.get_qform(), qform, atol=1e-5)


def test_nifti_4d_with_one_time_point_is_a_volume(tmp_path, capsys, threshold_model):
    img = _tubes()
    aff = np.diag([0.7, 0.7, 1.5, 1.0])
    aff[:3, 3] = (-10.0, 20.0, 5.0)
    p = _save_nifti(tmp_path / "scan.nii.gz", img.transpose(2, 1, 0)[..., None], aff)
    world, mask = _segment_mask_world(tmp_path, capsys, p)
    assert mask.data.shape == img.shape and mask.geometry.axes == "zyx"
    np.testing.assert_allclose(nib.load(tmp_path / "o" / "scan_mask.nii.gz").affine, aff)


def test_ome_tiff_in_mm_and_um_and_mixed_units_agree(tmp_path, capsys):
    """The same stack described in mm, in um, and with z in um and y, x in nm."""
    mask = (_tubes() > 0).astype(np.uint8)

    def ome(name, z, y, x):
        meta = {"axes": "ZYX"}
        for ax, (v, unit) in zip("ZYX", (z, y, x), strict=True):
            meta[f"PhysicalSize{ax}"], meta[f"PhysicalSize{ax}Unit"] = v, unit
        tifffile.imwrite(tmp_path / name, mask, ome=True, metadata=meta)
        return tmp_path / name

    um = ome("um.ome.tif", (2.0, "µm"), (0.5, "µm"), (0.5, "µm"))
    mm = ome("mm.ome.tif", (0.002, "mm"), (0.0005, "mm"), (0.0005, "mm"))
    mixed = ome("mixed.ome.tif", (2.0, "µm"), (500.0, "nm"), (500.0, "nm"))
    assert read_volume(mixed).geometry.spacing == pytest.approx((2.0, 0.5, 0.5))
    assert read_volume(mixed).geometry.unit == "um"
    assert read_volume(mm).geometry.unit == "mm"
    for pred in (mm, mixed):
        code, out, err = _run(
            ["evaluate", pred, um, "--out", tmp_path / f"{pred.stem}.json"], capsys
        )
        assert code == 0, err
        assert json.loads((tmp_path / f"{pred.stem}.json").read_text())["Dice"] == 1.0
    assert (
        "converted from mm to um"
        in _run(["evaluate", mm, um, "--out", tmp_path / "m.json"], capsys)[1]
    )
    # a real difference in size is still refused
    big = ome("big.ome.tif", (2.0, "mm"), (0.5, "mm"), (0.5, "mm"))
    code, out, err = _run(["evaluate", big, um, "--out", tmp_path / "b.json"], capsys)
    assert code == 2 and "spacing differs" in _one_error_line(err)
    # each voxel size with its unit (a newcomer read "(0.005, 0.000994, 0.000994)" bare)
    assert re.search(r"voxels of .* are \([0-9., ]+\) um but", _one_error_line(err))


def test_tiff_print_resolution_is_not_a_voxel_size(tmp_path):
    """TIFF's default 72 dpi (inches), as image editors and the vesselNN stacks write
    it, says nothing about the voxels; centimetres and ImageJ's calibration do."""
    mask = (_tubes() > 0).astype(np.uint8)
    tifffile.imwrite(tmp_path / "dpi.tif", mask, resolution=(72, 72), resolutionunit="INCH")
    g = read_volume(tmp_path / "dpi.tif").geometry
    assert g.known == "none" and g.spacing == (1.0, 1.0, 1.0)
    tifffile.imwrite(
        tmp_path / "cm.tif", mask, resolution=(2000, 2000), resolutionunit="CENTIMETER"
    )
    g = read_volume(tmp_path / "cm.tif").geometry  # 5 um pixels, read in um
    assert g.known == "spacing" and g.spacing[1:] == pytest.approx((5.0, 5.0))
    assert g.unit == "um"
    p = write_volume(tmp_path / "ij.tif", mask, geometry=Geometry.from_spacing((2.0, 0.5, 0.25)))
    assert read_volume(p).geometry.spacing == pytest.approx((2.0, 0.5, 0.25))


@pytest.mark.parametrize("kind", ["zarr", "ome-zarr"])
def test_zarr_with_a_transform_through_segment_and_reader(tmp_path, capsys, threshold_model, kind):
    """A zarr array with napari-topo's geometry and an OME-Zarr with scale and
    translation: segment's outputs (NIfTI) and its graph lie where the input does."""
    from napari.layers import Layer

    from napari_topo._plugin import read_graph, read_volumes

    img = _tubes()
    if kind == "zarr":
        geometry = Geometry(_random_placement(np.random.default_rng(3)), "zyx", unit="um")
        p = write_volume(tmp_path / "scan.zarr", img, geometry=geometry)
    else:
        geometry = Geometry.from_spacing((3.0, 0.4, 0.4), origin=(-30.0, 12.0, 2.5), unit="um")
        p = write_volume(tmp_path / "scan.ome.zarr", img, geometry=geometry)
    world, mask = _segment_mask_world(tmp_path, capsys, p, "--format", "nii.gz")
    assert world == _world_voxels(img > 0.5, geometry)
    assert mask.geometry.unit == "um"
    [(data, meta, k)] = read_volumes(str(p))
    image = Layer.create(data, meta, k)
    stem = "scan"
    points = Layer.create(*read_graph(str(tmp_path / "o" / f"{stem}_graph.swc"))[1])
    assert tuple(points.scale) == pytest.approx(tuple(image.scale))
    assert tuple(points.translate) == pytest.approx(tuple(image.translate))
    shown = {tuple(np.round(points.data_to_world(v), 3)) for v in points.data}
    assert shown <= world


def test_npy_with_spacing_writes_and_reads_in_that_spacing(tmp_path, capsys, threshold_model):
    """A .npy states nothing; --spacing gives the voxel size: the outputs carry it, and
    roots given in world coordinates of that spacing land on the same voxels."""
    img = _tubes()
    np.save(tmp_path / "vol.npy", img)
    (tmp_path / "roots_vox.csv").write_text(
        "z,y,x\n" + "".join(f"{z:g},{y:g},{x:g}\n" for z, y, x in ROOTS)
    )
    sp = np.array([2.0, 0.5, 0.8])
    world = ROOTS * sp
    (tmp_path / "roots_world.csv").write_text(
        "id,z,y,x,z_physical,y_physical,x_physical\n"
        + "".join(f"{i},0,0,0,{z},{y},{x}\n" for i, (z, y, x) in enumerate(world))
    )
    results = []
    for roots in ("roots_vox.csv", "roots_world.csv"):
        _, mask = _segment_mask_world(
            tmp_path, capsys, tmp_path / "vol.npy", "--spacing", *sp, "--sources",
            tmp_path / roots, name=roots[:-4],
        )  # fmt: skip
        assert mask.geometry.spacing == pytest.approx(tuple(sp))
        results.append(np.asarray(read_volume(tmp_path / roots[:-4] / "vol_trees.nii.gz").data))
    np.testing.assert_array_equal(results[0], results[1])
    assert set(np.unique(results[0])) == {0, 1, 2}


def test_layer_length_unit_from_the_reader_or_napari():
    from types import SimpleNamespace

    from napari.layers import Image

    from napari_topo.geometry import layer_length_unit

    # the unit of the file napari-topo's reader read (kept in the layer's metadata) wins
    read = SimpleNamespace(metadata={"napari_topo_geometry": {"unit": "mm"}}, units=None)
    assert layer_length_unit(read) == "mm"
    # napari's own units (napari >= 0.6): one known length unit on every axis
    data = np.zeros((2, 3, 4))
    assert layer_length_unit(Image(data, units=("um", "um", "um"))) == "um"
    assert layer_length_unit(Image(data, units="mm")) == "mm"
    # napari's default "pixel", mixed units, or nothing at all: unknown
    assert layer_length_unit(Image(data)) is None
    assert layer_length_unit(Image(data, units=("mm", "um", "um"))) is None
    assert layer_length_unit(SimpleNamespace()) is None


def test_napari_units_name_the_spatial_axes_only_where_napari_has_units(monkeypatch):
    from napari_topo import geometry as g

    monkeypatch.setattr(g, "_napari_has_layer_units", lambda: True)
    assert g.napari_units("mm", "zyx") == ("mm", "mm", "mm")
    assert g.napari_units("um", "tczyx") == ("pixel", "pixel", "um", "um", "um")
    assert g.napari_units(None, "zyx") is None and g.napari_units("furlong", "zyx") is None
    monkeypatch.setattr(g, "_napari_has_layer_units", lambda: False)  # napari < 0.6
    assert g.napari_units("mm", "zyx") is None
    monkeypatch.undo()
    import napari

    major, minor = (int(v) for v in napari.__version__.split(".")[:2])
    assert g._napari_has_layer_units() == ((major, minor) >= (0, 6))


def test_spacing_and_shape_differing_are_both_named():
    # a newcomer's ground truth of another shape and spacing was told the spacing alone,
    # as "the labels has voxels ..."
    g = Geometry(np.diag([2.0, 0.5, 0.5, 1.0]), "zyx", unit="mm")
    other = Geometry(np.diag([1.0, 0.5, 0.5, 1.0]), "zyx", unit="mm")
    with pytest.raises(GeometryError) as err:
        compare(other, (10, 20, 30), g, (5, 20, 31), names=("the labels", "the image"))
    text = str(err.value)
    assert text.startswith("spacing differs: the voxels of the labels are (1, 0.5, 0.5) mm")
    assert "(and the shape: (10, 20, 30) against (5, 20, 31))" in text
