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
    code, out, err = _run(["evaluate", las, ras, "--out", tmp_path / "m"], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["Dice"] == 1.0 and metrics["clDice"] == 1.0
    assert "reordered" in out  # said, not silent
    # the other way round, too
    code, out, err = _run(["evaluate", ras, las, "--out", tmp_path / "n"], capsys)
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
    code, out, err = _run(["evaluate", other, ras, "--out", tmp_path / "m"], capsys)
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
    code, out, err = _run(["evaluate", other, ras, "--out", tmp_path / "m"], capsys)
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
        ["evaluate", tmp_path / "gt.npy", tmp_path / "gt.npy", "--out", tmp_path / "m"], capsys
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
