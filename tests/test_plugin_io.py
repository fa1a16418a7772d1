"""Tests of napari_topo._plugin: NIfTI reader, Labels/centerline writers, sample data.

The core tests build layers from the tuples with ``napari.layers.Layer.create`` (no
viewer). The ``gui`` tests open files through a viewer; those that go through the
manifest (``viewer.open(..., plugin="napari-topo")``, sample data, writers) are skipped
until ``napari.yaml`` declares the contribution.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_topo import layers as L
from napari_topo._plugin import (
    MAX_LABEL_VALUES,
    get_reader,
    is_label_volume,
    make_sample_data,
    read_graph,
    read_nifti,
    read_volumes,
    write_graph,
    write_labels,
)
from napari_topo.analysis import VesselAnalysis
from napari_topo.data.io import read_volume, write_volume
from napari_topo.data.synthetic import make_vessel_volume

napari = pytest.importorskip("napari")
from napari.layers import Layer  # noqa: E402

PLUGIN = "napari-topo"
SPACING = (2.0, 0.6, 0.5)


def _manifest_contributions():
    """The installed manifest's contributions; a manifest that npe2 cannot find or read
    fails the test (these tests used to be skipped then, so a broken napari.yaml passed)."""
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    return pm.get_manifest(PLUGIN).contributions


def test_manifest_declares_readers_writers_and_sample_data():
    c = _manifest_contributions()
    assert c.readers and c.writers and c.sample_data


# ------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def vessels():
    return make_vessel_volume((40, 40, 40), n_trees=2, seed=3)


@pytest.fixture(scope="module")
def analysis(vessels):
    return VesselAnalysis.from_outputs(
        {"vessel": vessels.mask.astype(np.float32)}, sources=vessels.sources, spacing=SPACING
    )


@pytest.fixture
def nifti_files(tmp_path, vessels):
    """An anisotropic image and its tree labels, written as NIfTI."""
    image = write_volume(tmp_path / "scan.nii.gz", vessels.image, spacing=SPACING)
    trees = write_volume(tmp_path / "trees.nii", vessels.trees, spacing=SPACING)
    return image, trees


# ------------------------------------------------------------------------------ reader
def test_get_reader_claims_volumes_and_graphs(tmp_path):
    assert get_reader(str(tmp_path / "a.nii.gz")) is read_nifti
    assert get_reader(str(tmp_path / "A.NII")) is read_nifti
    assert get_reader([str(tmp_path / "a.nii"), str(tmp_path / "b.nii.gz")]) is read_nifti
    for volume in ("a.tif", "a.TIFF", "a.npy", "a.zarr"):
        assert get_reader(str(tmp_path / volume)) is read_volumes, volume
    assert get_reader([str(tmp_path / "a.nii"), str(tmp_path / "b.tif")]) is read_volumes
    assert get_reader(str(tmp_path / "g.swc")) is read_graph
    # a CSV only when it is napari-topo's nodes table
    (tmp_path / "g_graph.csv").write_text("id,z,y,x,radius,tree\n0,1,2,3,0.5,1\n")
    (tmp_path / "other.csv").write_text("index,axis-0,axis-1\n0,1,2\n")
    assert get_reader(str(tmp_path / "g_graph.csv")) is read_graph
    for other in ("other.csv", "missing.csv", "a.gz", "a", "a.nii.zip", "a.png"):
        assert get_reader(str(tmp_path / other)) is None, other
    assert get_reader([str(tmp_path / "a.nii"), str(tmp_path / "g.swc")]) is None
    assert get_reader([]) is None


def test_a_dicom_series_opens_as_one_image_in_hu(tmp_path):
    # a contrast CT arrives as a folder of DICOM files (names without .dcm): napari hands
    # the folder, or the .dcm files selected together, to the reader
    pytest.importorskip("SimpleITK")
    from _dicom import DX, DY, DZ, SHAPE, write_series

    hu = (np.arange(np.prod(SHAPE)).reshape(SHAPE) - 200).astype(np.int16)
    write_series(tmp_path / "CT 0001", hu, stored_offset=1024)
    assert get_reader(str(tmp_path / "CT 0001")) is read_volumes
    assert get_reader(str(tmp_path / "CT 0001" / "..")) is read_volumes  # an export's top
    ((_, top_meta, _),) = read_volumes(str(tmp_path))
    assert top_meta["name"] == f"{tmp_path.name}_CT 0001"
    (tmp_path / "empty").mkdir()
    assert get_reader(str(tmp_path / "empty")) is None
    ((data, meta, kind),) = read_volumes(str(tmp_path / "CT 0001"))
    assert kind == "image" and meta["name"] == "CT 0001"
    assert meta["metadata"]["format"] == "DICOM series"
    assert meta["metadata"]["modality"] == "ct"
    np.testing.assert_allclose(np.abs(meta["scale"]), (DZ, DY, DX))
    assert np.asarray(data).min() == -200  # HU, the rescale applied
    write_series(tmp_path / "dcm", hu, stored_offset=1024, suffix=".dcm")
    files = sorted(str(p) for p in (tmp_path / "dcm").iterdir())
    assert get_reader(files) is read_volumes
    ((data2, meta2, _),) = read_volumes(files)  # one volume, not one per file
    np.testing.assert_array_equal(np.asarray(data2), np.asarray(data))


def test_reader_image_and_labels(nifti_files, vessels):
    image_path, trees_path = nifti_files
    [(data, meta, kind)] = read_nifti(str(image_path))
    assert kind == "image"
    assert meta["name"] == "scan"
    assert meta["scale"] == SPACING
    assert meta["metadata"]["path"] == str(image_path)
    np.testing.assert_array_equal(data, vessels.image)  # (z, y, x), not (x, y, z)

    layers = read_nifti([str(image_path), str(trees_path)])
    assert [t[2] for t in layers] == ["image", "labels"]
    data, meta, kind = layers[1]
    assert meta["name"] == "trees"
    np.testing.assert_array_equal(data, vessels.trees)
    # napari accepts the tuples as they are, and the scale reaches the layer
    for tup in layers:
        layer = Layer.create(*tup)
        assert tuple(layer.scale) == pytest.approx(SPACING)
    assert isinstance(Layer.create(*layers[1]), napari.layers.Labels)
    assert "colormap" not in layers[1][1]  # several trees: napari's label colours
    # the dims sliders are named as for the plugin's own layers (a newcomer saw "-3")
    assert Layer.create(*layers[0]).axis_labels == ("z", "y", "x")


def test_a_mask_file_opens_in_a_neutral_grey_not_in_a_tree_colour(tmp_path, vessels):
    # a newcomer's liver mask, in napari's red-brown for label 1, hid Segment's tree 1
    # (red) drawn over it
    from napari_topo._plugin import MASK_FILE_COLOUR, MASK_FILE_OPACITY
    from napari_topo.layers import tree_colors

    write_volume(tmp_path / "liver.nii.gz", vessels.mask.astype(np.uint8), spacing=SPACING)
    [(data, meta, kind)] = read_volumes(str(tmp_path / "liver.nii.gz"))
    layer = Layer.create(data, meta, kind)
    assert isinstance(layer, napari.layers.Labels) and layer.opacity == MASK_FILE_OPACITY
    np.testing.assert_allclose(layer.colormap.map(1), MASK_FILE_COLOUR, atol=1e-6)
    assert layer.colormap.map(0)[3] == 0
    # a label painted on it later (a tree given in the Tree editor) shows in its colour
    np.testing.assert_allclose(layer.colormap.map(2), tree_colors(2)[1], atol=1e-6)
    assert layer.colormap.map(200)[3] == 1
    saturated = tree_colors(12)[:, :3]
    assert np.linalg.norm(saturated - np.asarray(MASK_FILE_COLOUR[:3]), axis=1).min() > 0.35
    # 0/255, as DICOM and TIFF masks often are (3D-IRCADb's, vesselNN's): the same grey
    write_volume(tmp_path / "liver255.nii.gz", vessels.mask.astype(np.uint8) * 255, spacing=SPACING)
    [(data, meta, kind)] = read_volumes(str(tmp_path / "liver255.nii.gz"))
    layer = Layer.create(data, meta, kind)
    assert layer.opacity == MASK_FILE_OPACITY and int(np.asarray(data).max()) == 255
    np.testing.assert_allclose(layer.colormap.map(255), MASK_FILE_COLOUR, atol=1e-6)
    np.testing.assert_allclose(layer.colormap.map(2), tree_colors(2)[1], atol=1e-6)


@pytest.mark.parametrize("values", [(0, 1), (0, 1, 2)])
def test_the_reader_samples_a_label_file_once(tmp_path, vessels, monkeypatch, values):
    # whether it is labels and whether a mask came from two reads of the (possibly
    # lazy) volume; one is enough
    import napari_topo._plugin as plugin

    calls = []
    real = plugin._strided_sample
    monkeypatch.setattr(plugin, "_strided_sample", lambda d, n: calls.append(n) or real(d, n))
    labels = vessels.mask.astype(np.uint8)
    if values[-1] == 2:  # labels 1 and 2: not a mask
        labels[: labels.shape[0] // 2] *= 2
    assert set(np.unique(labels).tolist()) == set(values)
    write_volume(tmp_path / "labels.nii.gz", labels, spacing=SPACING)
    [(data, meta, kind)] = read_volumes(str(tmp_path / "labels.nii.gz"))
    assert kind == "labels" and len(calls) == 1
    assert ("opacity" in meta) == (values == (0, 1))  # a mask's neutral grey


def test_reader_refuses_volumes_of_complex_or_structured_values(tmp_path):
    # bad-input probe: napari then raised an empty NotImplementedError (complex) or the
    # reader a raw TypeError (structured); segment already refused them in one line
    from napari_topo.data.io import VolumeReadError

    complex_ = (np.ones((4, 5, 6)) * (1 + 1j)).astype(np.complex64)
    struct = np.zeros((4, 5, 6), dtype=[("a", "<f4"), ("b", "<f4")])
    for name, arr in (("c.npy", complex_), ("s.npy", struct)):
        np.save(tmp_path / name, arr)
        with pytest.raises(VolumeReadError, match="real numbers"):
            read_volumes(str(tmp_path / name))


def test_reader_axis_order_asymmetric(tmp_path):
    nib = pytest.importorskip("nibabel")
    xyz = np.random.default_rng(1).random((6, 5, 4)).astype(np.float32)
    img = nib.Nifti1Image(xyz, np.diag([0.5, 0.6, 2.0, 1.0]))
    img.header.set_zooms((0.5, 0.6, 2.0))
    p = tmp_path / "xyz.nii"
    nib.save(img, p)
    [(data, meta, kind)] = get_reader(str(p))(str(p))
    assert data.shape == (4, 5, 6)
    assert meta["scale"] == pytest.approx((2.0, 0.6, 0.5))
    assert data[3, 2, 1] == xyz[1, 2, 3]
    assert kind == "image"


def test_is_label_volume_rule():
    rng = np.random.default_rng(0)
    assert is_label_volume(np.zeros((4, 4, 4), bool))
    assert is_label_volume(rng.integers(0, 2, (8, 8, 8)).astype(np.uint8))  # mask
    assert is_label_volume(rng.integers(0, 7, (8, 8, 8)).astype(np.int32))  # trees
    assert is_label_volume(rng.integers(0, MAX_LABEL_VALUES, (16, 16, 16)))
    assert not is_label_volume(rng.integers(0, 256, (16, 16, 16)).astype(np.uint8))  # 8-bit image
    assert not is_label_volume(rng.integers(-3, 3, (8, 8, 8)))  # negative ids
    assert not is_label_volume(rng.random((8, 8, 8)).astype(np.float32))
    # a large volume is judged from a subsample: still right, and it does not load it all
    big = np.zeros((256, 256, 256), np.uint16)
    big[::4, ::4, ::4] = rng.integers(0, 3000, big[::4, ::4, ::4].shape)
    assert not is_label_volume(big)


# ------------------------------------------------------------------------------ writers
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".tif", ".tiff"])
def test_write_labels_round_trip(tmp_path, vessels, suffix):
    tup = L.trees_layer(vessels.trees.astype(np.int64), name="v", scale=SPACING)
    layer = Layer.create(*tup)
    data, meta, _ = layer.as_layer_data_tuple()
    [out] = write_labels(str(tmp_path / f"labels{suffix}"), data, meta)
    assert out == str(tmp_path / f"labels{suffix}")
    vol = read_volume(out)
    np.testing.assert_array_equal(vol.data, vessels.trees)
    assert vol.data.dtype == np.uint8  # ids 0..2: stored compactly
    assert vol.spacing == pytest.approx(SPACING)


def test_write_labels_keeps_large_and_negative_ids(tmp_path):
    a = np.zeros((3, 4, 5), np.int64)
    a[0, 0, 0] = 70_000
    vol = read_volume(write_labels(str(tmp_path / "big.nii.gz"), a, {"scale": (1, 1, 1)})[0])
    assert vol.data.dtype == np.uint32 and vol.data[0, 0, 0] == 70_000
    a[1, 1, 1] = -1
    vol = read_volume(write_labels(str(tmp_path / "neg.nii"), a, {})[0])
    assert vol.data.dtype == np.int64 and vol.data[1, 1, 1] == -1
    assert vol.spacing == (1.0, 1.0, 1.0)
    # multiscale layers: the full-resolution level is written
    vol = read_volume(write_labels(str(tmp_path / "ms.tif"), [a.clip(0), a[:, ::2, ::2]], {})[0])
    assert vol.data.shape == (3, 4, 5)


def test_write_labels_refuses_other_suffixes(tmp_path):
    with pytest.raises(ValueError, match=r"\.nii, \.nii\.gz, \.tif, \.tiff"):
        write_labels(str(tmp_path / "a.png"), np.zeros((2, 2, 2), np.uint8), {})


def _points_tuple(analysis):
    [points] = [t for t in analysis.to_layers("v") if t[2] == "points"]
    return points


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_write_graph_csv(tmp_path, analysis):
    tup = _points_tuple(analysis)
    assert L.layer_kind(tup[1]["metadata"]) == "centerline"
    layer = Layer.create(*tup)
    layer.translate = (10.0, 0.0, -5.0)
    data, meta, layer_type = layer.as_layer_data_tuple()
    assert layer_type == "points"
    [out] = write_graph(str(tmp_path / "centerline.csv"), data, meta)
    rows = _read_csv(out)
    assert list(rows[0]) == [
        "id", "z", "y", "x", "z_physical", "y_physical", "x_physical", "radius", "tree",
        "parent",
    ]  # fmt: skip
    pts = np.asarray(analysis.points, dtype=float)
    assert len(rows) == len(pts) > 10
    got_vox = np.array([[float(r[a]) for a in "zyx"] for r in rows])
    got_phys = np.array([[float(r[f"{a}_physical"]) for a in "zyx"] for r in rows])
    np.testing.assert_array_equal(got_vox, pts)
    np.testing.assert_allclose(got_phys, pts * np.asarray(SPACING) + (10.0, 0.0, -5.0))
    np.testing.assert_allclose([float(r["radius"]) for r in rows], analysis.radius)
    np.testing.assert_array_equal([int(r["tree"]) for r in rows], analysis.result.labels)
    # the same nodes as VesselAnalysis.to_csv writes
    nodes, _ = analysis.to_csv(tmp_path / "nodes.csv", tmp_path / "edges.csv")
    ref = _read_csv(nodes)
    assert [(r["id"], r["z"], r["y"], r["x"], r["tree"]) for r in ref] == [
        (r["id"], r["z"], r["y"], r["x"], r["tree"]) for r in rows
    ]


def test_write_graph_any_points_layer(tmp_path):
    """A plain Points layer (no napari-topo features) still writes its coordinates."""
    layer = napari.layers.Points([[1.0, 2.0], [3.0, 4.5]], scale=(2.0, 0.5), size=4)
    [out] = write_graph(str(tmp_path / "p.csv"), *layer.as_layer_data_tuple()[:2])
    rows = _read_csv(out)
    assert list(rows[0]) == ["id", "y", "x", "y_physical", "x_physical", "radius"]
    assert [float(rows[1][k]) for k in ("y", "x", "y_physical", "x_physical")] == [
        3.0,
        4.5,
        6.0,
        2.25,
    ]
    assert float(rows[0]["radius"]) == pytest.approx(4 / 2 * 0.5)  # from the marker size
    with pytest.raises(ValueError, match="finite coordinates"):
        write_graph(str(tmp_path / "bad.csv"), np.zeros((3, 5)), {})
    with pytest.raises(ValueError, match=r"\.csv, \.swc"):
        write_graph(str(tmp_path / "p.graphml"), np.zeros((3, 3)), {})


def _swc_edges(path):
    """{child xyz: parent xyz (or None)} of an SWC file."""
    rows = {}
    for line in open(path).read().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        n, _t, x, y, z, r, par = line.split()
        rows[int(n)] = ((float(x), float(y), float(z)), float(r), int(par))
    seen = set()
    out = {}
    for n, (xyz, r, par) in rows.items():
        assert par == -1 or par in seen  # parents come first
        seen.add(n)
        out[xyz] = (round(r, 4), rows[par][0] if par > 0 else None)
    return out


def test_write_graph_swc_needs_parents(tmp_path, analysis):
    data, meta, _ = Layer.create(*_points_tuple(analysis)).as_layer_data_tuple()
    # the centerline layer of VesselAnalysis.to_layers carries id and parent links:
    # saving it as SWC gives the same forest as to_swc
    [out] = write_graph(str(tmp_path / "c.swc"), data, meta)
    ref = analysis.to_swc(tmp_path / "ref.swc")
    assert _swc_edges(out) == _swc_edges(ref)
    meta = dict(meta)
    features = meta["features"].copy()
    no_parents = dict(meta, features=features.drop(columns=["parent"]))
    with pytest.raises(ValueError, match="SWC needs parent links"):
        write_graph(str(tmp_path / "c.swc"), data, no_parents)
    # a deleted point (its id missing) makes its children roots; ids are kept
    features["id"] = np.arange(len(data)) + 100
    features["parent"] = np.where(analysis.parents >= 0, analysis.parents + 100, -1)
    removed = int(np.flatnonzero(analysis.parents >= 0)[0])
    keep = np.ones(len(data), bool)
    keep[removed] = False
    meta["features"] = features[keep].reset_index(drop=True)
    [out] = write_graph(str(tmp_path / "cut.swc"), data[keep], meta)
    n_roots = sum(p is None for _, p in _swc_edges(out).values())
    assert n_roots == int((analysis.parents < 0).sum() + (analysis.parents == removed).sum())
    assert len(_swc_edges(out)) == keep.sum()


def test_swc_tree_ids_round_trip(tmp_path, analysis):
    """The Points layer's tree ids are the SWC header's trees and read back as the same
    ids; an older file (``# root N: tree T`` lines) still reads."""
    data, meta, _ = Layer.create(*_points_tuple(analysis)).as_layer_data_tuple()
    tree = np.asarray(meta["features"]["tree"])
    [out] = write_graph(str(tmp_path / "c.swc"), data, meta)
    text = open(out).read().splitlines()
    heads = [ln.split(":")[0] for ln in text if ln.startswith("# tree ")]
    ids = sorted(set(tree[tree > 0].tolist()))
    assert heads == [f"# tree {t}" for t in ids] + (["# tree 0"] if (tree == 0).any() else [])
    for written in (out, analysis.to_swc(tmp_path / "a.swc")):
        back = Layer.create(*read_graph(str(written))[1])
        order = np.lexsort(back.data.T)
        mine = np.lexsort(np.asarray(data).T)
        assert np.array_equal(np.asarray(back.features["tree"])[order], tree[mine])
    old = [ln for ln in text if not ln.startswith("# tree")]
    rows = [ln.split() for ln in old if not ln.startswith("#")]
    node_tree = {}
    for t, first, last in (
        (int(h.split()[2].rstrip(":")), *map(int, h.split("nodes ")[1].split(",")[0].split("-")))
        for h in text
        if h.startswith("# tree ") and "nodes " in h
    ):
        node_tree.update({n: t for n in range(first, last + 1)})
    old += [f"# root {r[0]}: tree {node_tree[int(r[0])]}" for r in rows if r[6] == "-1"]
    (tmp_path / "old.swc").write_text("\n".join(old) + "\n")
    back = Layer.create(*read_graph(str(tmp_path / "old.swc"))[1])
    assert sorted(np.asarray(back.features["tree"]).tolist()) == sorted(tree.tolist())


# ------------------------------------------------------------------------------ sample
def test_sample_data():
    import time

    t0 = time.perf_counter()
    layers = make_sample_data()
    elapsed = time.perf_counter() - t0
    assert [(m["name"], k) for _, m, k in layers] == [
        ("synthetic vessels", "image"),
        ("ground truth mask", "labels"),
        ("ground truth trees", "labels"),
    ]
    ref = make_vessel_volume((96, 96, 96), seed=0)
    image, mask, trees = (t[0] for t in layers)
    assert image.shape == mask.shape == trees.shape == (96, 96, 96)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, ref.image)  # fixed seed: the same every time
    np.testing.assert_array_equal(mask, ref.mask)
    np.testing.assert_array_equal(trees, ref.trees)
    for _, meta, _ in layers:
        assert tuple(meta["scale"]) == tuple(ref.spacing)
    # trees coloured as layers.trees_layer colours a reference (apart from a result's)
    made = L.create_layers(layers)
    n = int(ref.trees.max())
    reference = L.tree_colors(n, "reference")
    for k in range(1, n + 1):
        np.testing.assert_allclose(
            made[2].colormap.map(np.array([k]))[0], reference[k - 1], atol=1e-6
        )
    assert not np.allclose(reference[:, :3], L.tree_colors(n)[:, :3], atol=0.2)
    assert made[2].contour >= 1  # drawn as outlines, a result's trees filled
    assert trees.dtype == np.uint8 and made[2].axis_labels == ("z", "y", "x")
    assert L.layer_kind(made[2]) == "trees"
    assert elapsed < 5.0, f"sample data took {elapsed:.1f} s"


# ------------------------------------------------------------------------------ GUI
@pytest.mark.gui
def test_viewer_adds_reader_layers(make_napari_viewer, nifti_files):
    viewer = make_napari_viewer()
    for tup in read_nifti([str(p) for p in nifti_files]):
        viewer._add_layer_from_data(*tup)
    assert [type(ly).__name__ for ly in viewer.layers] == ["Image", "Labels"]
    assert tuple(viewer.layers["scan"].scale) == pytest.approx(SPACING)
    assert viewer.layers["trees"].data.shape == (40, 40, 40)


@pytest.mark.gui
def test_viewer_open_nifti_with_plugin(make_napari_viewer, nifti_files, vessels, tmp_path):
    viewer = make_napari_viewer()
    image_path, trees_path = nifti_files
    viewer.open(str(image_path), plugin=PLUGIN)
    viewer.open(str(trees_path), plugin=PLUGIN)
    scan, trees = viewer.layers["scan"], viewer.layers["trees"]
    assert isinstance(scan, napari.layers.Image)
    assert isinstance(trees, napari.layers.Labels)
    assert tuple(scan.scale) == pytest.approx(SPACING)
    np.testing.assert_array_equal(trees.data, vessels.trees)
    if hasattr(scan, "units"):  # napari >= 0.6: the scale bar reads mm, not pixels
        assert [str(u) for u in scan.units] == ["pixel"] * 3  # the file states no unit
        mm = write_volume(tmp_path / "mm.nii.gz", vessels.image, spacing=SPACING, unit="mm")
        (layer,) = viewer.open(str(mm), plugin=PLUGIN)
        assert [str(u) for u in layer.units] == ["millimeter"] * 3


@pytest.mark.gui
def test_viewer_open_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    c = _manifest_contributions()
    viewer.open_sample(PLUGIN, c.sample_data[0].key)
    assert [ly.name for ly in viewer.layers] == [
        "synthetic vessels",
        "ground truth mask",
        "ground truth trees",
    ]


@pytest.mark.gui
def test_viewer_save_layers_with_plugin(make_napari_viewer, tmp_path, analysis):
    viewer = make_napari_viewer()
    for tup in analysis.to_layers("v"):
        viewer._add_layer_from_data(*tup)
    [trees_out] = napari.save_layers(
        str(tmp_path / "trees.nii.gz"), [viewer.layers["v trees"]], plugin=PLUGIN
    )
    vol = read_volume(trees_out)
    np.testing.assert_array_equal(vol.data, analysis.trees)
    assert vol.spacing == pytest.approx(SPACING)
    [csv_out] = napari.save_layers(
        str(tmp_path / "centerline.csv"), [viewer.layers["v centerline"]], plugin=PLUGIN
    )
    assert len(_read_csv(csv_out)) == len(analysis.points)


@pytest.mark.gui
def test_viewer_opens_cli_outputs_with_plugin(make_napari_viewer, tmp_path, analysis, vessels):
    """What ``napari-topo segment`` writes opens right: volumes as Labels where they lie,
    the graph table as branches and centerline points."""
    from napari_topo.geometry import Geometry

    geometry = Geometry.from_spacing(SPACING, origin=(5.0, -3.0, 2.5))
    mask = write_volume(tmp_path / "v_mask.tif", analysis.mask.astype(np.uint8), geometry=geometry)
    analysis.replace(geometry=geometry).save(tmp_path / "v_graph.csv")  # as segment does
    summary = {"shape": list(analysis.mask.shape), "geometry": geometry.to_dict()}
    (tmp_path / "v_summary.json").write_text(json.dumps(summary))
    viewer = make_napari_viewer()
    viewer.open(str(mask), plugin=PLUGIN)
    viewer.open(str(tmp_path / "v_graph.csv"), plugin=PLUGIN)
    kinds = {ly.name: type(ly).__name__ for ly in viewer.layers}
    assert kinds["v_mask"] == "Labels"
    assert sorted(kinds.values()) == ["Labels", "Points", "Shapes"]
    layer = viewer.layers["v_mask"]
    assert tuple(layer.translate) == pytest.approx((5.0, -3.0, 2.5))
    points = next(ly for ly in viewer.layers if type(ly).__name__ == "Points")
    np.testing.assert_allclose(points.data, analysis.points)
    assert tuple(points.translate) == pytest.approx(tuple(layer.translate))


def test_reader_shows_a_dim_stack_with_its_own_contrast(tmp_path):
    # a newcomer's two-photon stack (uint8, voxels up to ~51) opened nearly black: napari
    # shows uint8 over 0-255 unless told otherwise (here: 90 grey levels, up to 89)
    from napari_topo.data.io import write_volume

    rng = np.random.default_rng(0)
    stack = rng.integers(0, 20, size=(6, 40, 40)).astype(np.uint8)
    stack[:, 16:24, :] = rng.integers(20, 90, size=(6, 8, 40))  # a faint vessel
    write_volume(tmp_path / "dim.nii.gz", stack, spacing=(5.0, 1.0, 1.0))
    [(data, meta, kind)] = read_nifti(str(tmp_path / "dim.nii.gz"))
    assert kind == "image"
    low, high = meta["contrast_limits"]
    assert 0 <= low < 20 and 60 < high <= 89
    layer = Layer.create(data, meta, kind)
    assert tuple(layer.contrast_limits) == pytest.approx((low, high))


def test_reader_opens_a_ct_in_hounsfield_units_in_the_vessel_window(tmp_path):
    # a newcomer's contrast CT opened on its 0.5-99.5 percentiles (air to bone, about
    # -1000..1000 HU), so the liver and its vessels (100-200 HU) were one grey; a CT in HU
    # opens in the window the models see, where the vessels stand out
    import subprocess
    import sys

    from napari_topo.data.io import write_volume
    from napari_topo.inference.intensity import DEFAULT_CT_WINDOW

    rng = np.random.default_rng(0)
    ct = np.full((12, 48, 48), -1000, np.int16)  # air around the body
    ct[:, 6:42, 6:42] = rng.normal(60, 15, size=(12, 36, 36)).astype(np.int16)  # tissue
    ct[:, 20:24, 10:40] = 190  # a contrast-filled vessel
    ct[:, 40:42, 6:42] = 900  # a rib
    write_volume(tmp_path / "ct.nii.gz", ct, spacing=(2.0, 0.7, 0.7))
    [(data, meta, kind)] = read_nifti(str(tmp_path / "ct.nii.gz"))
    assert kind == "image"
    assert meta["contrast_limits"] == list(DEFAULT_CT_WINDOW)
    assert "Hounsfield" in meta["metadata"]["display"]
    # the same values as floats that are not whole numbers are not HU: percentiles
    write_volume(tmp_path / "mr.nii.gz", ct.astype(np.float32) + 0.25, spacing=(1.0, 1.0, 1.0))
    [(_, meta, _)] = read_nifti(str(tmp_path / "mr.nii.gz"))
    assert meta["contrast_limits"][0] < -900 and "display" not in meta["metadata"]
    # and opening a file still does not import torch (napari calls the reader at startup)
    code = (
        "import sys; from napari_topo._plugin import read_volumes; "
        f"read_volumes({str(tmp_path / 'ct.nii.gz')!r}); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_graph_files_of_a_run_that_found_no_vessels_open_as_empty_layers(tmp_path):
    """A run that finds 0 trees writes header-only graph files (as its masks are all 0);
    the reader opened neither ("the table has no rows", "no SWC points")."""
    empty = VesselAnalysis.from_outputs(
        {"vessel": np.zeros((16, 16, 16), np.float32)}, spacing=SPACING
    )
    assert len(empty.points) == 0
    summary = {"shape": [16, 16, 16], "geometry": empty.geometry.to_dict()}  # as segment's
    (tmp_path / "e_summary.json").write_text(json.dumps(summary))
    for name in ("e_graph.csv", "e_graph.swc"):
        empty.save(tmp_path / name)
        p = tmp_path / name
        assert get_reader(str(p)) is read_graph
        with pytest.warns(UserWarning, match="no centerline points"):
            layers = read_graph(str(p))
        assert [kind for _, _, kind in layers] == ["shapes", "points"], name
        shapes, points = (Layer.create(*t) for t in layers)
        assert len(shapes.data) == 0 and points.data.shape == (0, 3), name
        assert tuple(points.scale) == pytest.approx(SPACING), name
    # an empty Points layer saved by the plugin opens too
    data, meta, _ = Layer.create(*L.points_layer(np.zeros((0, 3)))).as_layer_data_tuple()
    [out] = write_graph(str(tmp_path / "none.csv"), data, meta)
    with pytest.warns(UserWarning, match="no centerline points"):
        assert [k for _, _, k in read_graph(out)] == ["shapes", "points"]
