"""Tests of napari_topo.analysis (VesselAnalysis) and napari_topo.layers."""

from __future__ import annotations

import csv
import doctest
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_topo import analysis as analysis_module
from napari_topo import layers
from napari_topo.analysis import VesselAnalysis
from napari_topo.data import make_vessel_volume
from napari_topo.topology.metrics import tree_accuracy
from napari_topo.topology.skeleton import skeletonize
from napari_topo.trees import branches, label_switches
from napari_topo.trees import edit as edit_module

SPACING = (2.0, 1.0, 0.5)


# ------------------------------------------------------------------------------ fixtures
def _topnet_outputs(vessel, centerline, trees):
    """TopNet-like outputs: exact centerness and an oracle embedding (one-hot id * 10).

    Voxels outside ``trees`` take the id of the nearest tree voxel, so the embedding
    is right on a mask that merges trees too.
    """
    nearest = ndi.distance_transform_edt(trees == 0, return_distances=False, return_indices=True)
    tid = trees[tuple(nearest)]
    return {
        "vessel": vessel.astype(np.float32),
        "centerness": ndi.distance_transform_edt(~centerline).astype(np.float32),
        "embedding": np.moveaxis(np.eye(8, dtype=np.float32)[tid] * 10.0, -1, 0),
    }


@pytest.fixture(scope="module")
def vol():
    return make_vessel_volume((48, 48, 48), n_trees=2, seed=1, randomize_image=False)


@pytest.fixture(scope="module")
def skel_analysis(vol):
    return VesselAnalysis.from_outputs(
        {"vessel": vol.mask.astype(np.float32)}, sources=vol.sources, spacing=SPACING
    )


@pytest.fixture(scope="module")
def topnet_analysis(vol):
    outputs = _topnet_outputs(vol.mask, vol.centerline, vol.trees)
    return VesselAnalysis.from_outputs(outputs, sources=vol.sources, centerline="nms")


# ------------------------------------------------------------------------ from_outputs
def test_mask_outputs_give_the_true_trees(vol, skel_analysis):
    a = skel_analysis
    assert a.method == "skeleton" and a.spacing == SPACING and a.threshold == 0.5
    assert np.array_equal(a.mask, vol.mask)
    assert np.array_equal(a.skeleton, skeletonize(vol.mask))
    assert np.array_equal(a.points, np.argwhere(a.skeleton))
    assert a.result.n_trees == vol.n_trees
    assert tree_accuracy(a.trees, vol.trees, vol.centerline) == 1.0
    assert label_switches(a.trees, vol.graph) == 0
    # sources row k is tree k + 1 in both, so the ids agree too
    assert (a.trees == vol.trees).mean() > 0.99
    assert np.array_equal(a.trees > 0, vol.mask)
    assert a.radius.shape == (len(a.points),) and (a.radius > 0).all()


def test_topnet_outputs_give_the_true_trees(vol, topnet_analysis):
    a = topnet_analysis
    assert a.method == "embedding"
    # NMS on the exact distance keeps the whole centerline (a plateau of zeros)
    assert np.array_equal(a.points, np.argwhere(vol.centerline))
    assert np.array_equal(a.result.labels, vol.trees[tuple(a.points.T)])
    assert tree_accuracy(a.trees, vol.trees, vol.centerline) == 1.0
    assert (a.trees == vol.trees).mean() > 0.99
    true_radius = vol.radius[tuple(a.points.T)]
    assert np.median(np.abs(a.radius - true_radius)) < 1.0


def test_embedding_separates_trees_the_mask_merges():
    near = make_vessel_volume(
        (48, 48, 48), n_trees=3, seed=5, randomize_image=False, near_touch_prob=0.5
    )
    merged = ndi.binary_dilation(near.mask, iterations=2)
    assert ndi.label(merged, np.ones((3, 3, 3)))[1] == 1
    base = VesselAnalysis.from_outputs({"vessel": merged}, sources=near.sources)
    outputs = _topnet_outputs(merged, near.centerline, near.trees)
    topnet = VesselAnalysis.from_outputs(outputs, sources=near.sources, centerline="nms")
    base_acc = tree_accuracy(base.trees, near.trees, near.centerline)
    assert base_acc < 0.9
    assert tree_accuracy(topnet.trees, near.trees, near.centerline) == 1.0
    # the default skeleton graph, cut where the embedding disagrees, separates them too
    graph = VesselAnalysis.from_outputs(outputs, sources=near.sources)
    assert graph.method == "embedding-skeleton"
    assert tree_accuracy(graph.trees, near.trees, near.centerline) > max(base_acc, 0.95)
    with pytest.raises(ValueError, match="centerline"):
        VesselAnalysis.from_outputs(outputs, centerline="dense")
    assert label_switches(topnet.trees, near.graph) == 0 < label_switches(base.trees, near.graph)


def test_sources_are_detected_when_not_given(vol):
    a = VesselAnalysis.from_outputs({"vessel": vol.mask.astype(np.float32)})
    assert a.result.n_trees == vol.n_trees
    assert tree_accuracy(a.trees, vol.trees, vol.centerline) == 1.0
    one = VesselAnalysis.from_outputs({"vessel": vol.mask.astype(np.float32)}, n_trees=1)
    assert one.result.n_trees == 1 and set(np.unique(one.trees).tolist()) == {0, 1}


def test_threshold_and_an_empty_mask(vol, tmp_path):
    prob = np.where(vol.mask, 0.6, 0.1).astype(np.float32)
    a = VesselAnalysis.from_outputs({"vessel": prob}, threshold=0.5, sources=vol.sources)
    assert np.array_equal(a.mask, vol.mask)
    empty = VesselAnalysis.from_outputs({"vessel": prob}, threshold=0.7)
    assert not empty.mask.any() and len(empty.points) == 0 and not empty.trees.any()
    s = empty.summary()
    assert s["n_voxels"] == s["n_points"] == s["n_trees"] == s["n_branches"] == 0
    assert s["trees"] == []
    swc = empty.to_swc(tmp_path / "empty.swc")
    assert not [ln for ln in swc.read_text().splitlines() if not ln.startswith("#")]
    assert [t[2] for t in empty.to_layers()] == ["image", "labels", "labels", "shapes", "points"]


@pytest.mark.parametrize(
    ("outputs", "kwargs", "match"),
    [
        ({}, {}, "'vessel'"),
        ("vessel", {}, "mapping"),
        ({"vessel": np.zeros((4, 4, 4, 4))}, {}, "2D"),
        ({"vessel": np.full((4, 4, 4), np.nan)}, {}, "finite"),
        ({"vessel": np.zeros((4, 4, 4))}, {"threshold": float("nan")}, "finite"),
        ({"vessel": np.zeros((4, 4, 4))}, {"sources": [1, 2, 3]}, r"\(K, 3\)"),
        (
            {"vessel": np.zeros((4, 4, 4)), "embedding": np.zeros((2, 4, 4, 4))},
            {"centerline": "nms"},
            "centerness",
        ),
        (
            {
                "vessel": np.zeros((4, 4, 4)),
                "centerness": np.zeros((4, 4, 4)),
                "embedding": np.zeros((2, 4, 4, 5)),
            },
            {},
            r"\(E, 4, 4, 4\)",
        ),
    ],
)
def test_bad_outputs_raise_value_error(outputs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        VesselAnalysis.from_outputs(outputs, **kwargs)


# ----------------------------------------------------------------------------- summary
def test_summary_counts_are_consistent(skel_analysis):
    a = skel_analysis
    s = a.summary()
    assert s["n_voxels"] == np.count_nonzero(a.mask)
    assert s["volume"] == pytest.approx(s["n_voxels"] * np.prod(SPACING))
    assert s["n_points"] == len(a.points) == s["n_assigned_points"]
    assert s["n_trees"] == 2 and [t["id"] for t in s["trees"]] == [1, 2]
    table = branches(a.skeleton, spacing=SPACING)
    assert s["n_skeleton_branches"] == len(table) > 2
    assert s["unit"] == (a.geometry.unit or None)
    assert s["total_length"] == pytest.approx(table["length"].sum())
    assert sum(t["n_voxels"] for t in s["trees"]) == s["n_voxels"]
    assert sum(t["n_points"] for t in s["trees"]) == s["n_points"]
    _, length = a.edges("tree")
    assert sum(t["length"] for t in s["trees"]) == pytest.approx(length.sum())
    # what the trees add up to, beside the whole skeleton's length (a newcomer summed
    # the trees and did not find total_length)
    assert s["trees_length"] == pytest.approx(sum(t["length"] for t in s["trees"]))
    assert 0 < s["trees_length"] <= s["total_length"] + 1e-9
    assert s["n_branches"] == len(edit_module.tree_branches(a.result)) == len(a.branch_table())


# ------------------------------------------------------------------------------ export
def _n_roots(a):
    return int(np.count_nonzero(a.parents < 0))


def test_csv_export_reads_back(skel_analysis, tmp_path):
    a = skel_analysis
    nodes_path, edges_path = a.to_csv(tmp_path / "n.csv", tmp_path / "e.csv")
    with nodes_path.open() as f:
        nodes = list(csv.DictReader(f))
    with edges_path.open() as f:
        edges = list(csv.DictReader(f))
    assert list(nodes[0]) == [
        "id", "z", "y", "x", "z_physical", "y_physical", "x_physical", "radius", "tree"
    ]  # fmt: skip
    assert len(nodes) == len(a.points)
    coords = np.array([[int(r[k]) for k in "zyx"] for r in nodes])
    assert np.array_equal(coords, a.points)
    world = np.array([[float(r[f"{k}_physical"]) for k in "zyx"] for r in nodes])
    assert np.allclose(world, a.points * SPACING)  # placed at the origin by its spacing
    assert np.array_equal([int(r["tree"]) for r in nodes], a.result.labels)
    assert np.allclose([float(r["radius"]) for r in nodes], a.radius)
    assert len(edges) == len(a.points) - _n_roots(a)
    src = np.array([int(r["source"]) for r in edges])
    dst = np.array([int(r["target"]) for r in edges])
    assert np.array_equal(a.parents[src], dst)  # child -> parent
    steps = (a.points[src] - a.points[dst]) * SPACING
    assert np.allclose([float(r["length"]) for r in edges], np.linalg.norm(steps, axis=1))


def test_graphml_export_reads_back(skel_analysis, tmp_path):
    a = skel_analysis
    path = a.to_graphml(tmp_path / "trees.graphml")
    g = nx.read_graphml(path, node_type=int)
    assert g.number_of_nodes() == len(a.points)
    assert g.number_of_edges() == len(a.points) - _n_roots(a)
    assert nx.is_forest(g) and nx.number_connected_components(g) == _n_roots(a)
    i = len(a.points) // 2
    node = g.nodes[i]
    assert (node["z"], node["y"], node["x"]) == tuple(a.points[i].tolist())
    assert node["radius"] == pytest.approx(a.radius[i]) and node["tree"] == a.result.labels[i]
    assert node["parent"] == a.parents[i]
    assert g.graph["spacing_z"] == 2.0 and g.graph["spacing_x"] == 0.5
    assert g.graph["n_trees"] == 2
    full = nx.read_graphml(a.to_graphml(tmp_path / "g.graphml", edges="graph"), node_type=int)
    assert full.number_of_edges() == a.result.adjacency.nnz // 2


def test_swc_export_reads_back(skel_analysis, tmp_path):
    a = skel_analysis
    text = a.to_swc(tmp_path / "trees.swc").read_text().splitlines()
    rows = np.array([ln.split() for ln in text if not ln.startswith("#")], dtype=float)
    assert rows.shape == (len(a.points), 7)
    ids, types, parent = rows[:, 0].astype(int), rows[:, 1], rows[:, 6].astype(int)
    assert np.array_equal(ids, np.arange(1, len(a.points) + 1)) and (types == 3).all()
    assert np.count_nonzero(parent == -1) == _n_roots(a)
    assert ((parent == -1) | ((parent >= 1) & (parent < ids))).all()  # parents come first
    # physical x y z: the same point set as the voxels times the spacing, reversed axes
    phys = (a.points * SPACING)[:, ::-1]
    order = np.lexsort(rows[:, 2:5].T[::-1])
    expected = np.lexsort(phys.T[::-1])
    assert np.allclose(rows[order, 2:5], phys[expected], rtol=1e-5)
    assert np.allclose(rows[order, 5], a.radius[expected], rtol=1e-5)
    # each parent link is an edge of the forest: its length matches a forest edge
    xyz = rows[:, 2:5]
    child = np.flatnonzero(parent > 0)
    link = np.linalg.norm(xyz[child] - xyz[parent[child] - 1], axis=1)
    _, length = a.edges("tree")
    assert np.allclose(np.sort(link), np.sort(length), rtol=1e-4)
    # one header line per tree, in id order, tree 1 starting at node 1
    tree_lines = [ln for ln in text if ln.startswith("# tree ")]
    assert [ln.split(":")[0] for ln in tree_lines][:2] == ["# tree 1", "# tree 2"]
    assert tree_lines[0].startswith("# tree 1: nodes 1-")


def _swc_trees(text):
    """``{tree: (first, last, [roots])}`` from the header and the (M, 7) node rows."""
    spans = {}
    for ln in text:
        if ln.startswith("# tree "):
            head, rest = ln[len("# tree ") :].split(": nodes ")
            a, b = rest.split(",")[0].split("-")
            spans[int(head)] = (int(a), int(b))
    rows = np.array([ln.split() for ln in text if not ln.startswith("#")], dtype=float)
    return spans, rows


def test_swc_tree_numbers_are_the_label_volume_ids(tmp_path):
    """Tree N of the SWC header is tree N of the label volume, CSV and summary; its
    nodes are one block starting at its source, pieces cut off from it (two loose tubes,
    given to the nearest tree) as further roots inside the block. (The header used to
    list roots in point order: "root 2: tree 3".)"""
    vol = make_vessel_volume((48, 48, 48), n_trees=3, seed=1, randomize_image=False)
    mask = vol.mask.copy()
    mask[2:5, 2:5, 2:12] = True  # a tube apart from every tree
    mask[2:5, 2:5, 20:30] = True  # and another
    a = VesselAnalysis.from_outputs(
        {"vessel": mask.astype(np.float32)}, sources=vol.sources, spacing=SPACING
    )
    text = a.to_swc(tmp_path / "t.swc").read_text().splitlines()
    spans, rows = _swc_trees(text)
    summary_ids = [t["id"] for t in a.summary()["trees"]]
    assert list(spans) == summary_ids == [1, 2, 3]
    ids = rows[:, 0].astype(int)
    parent = rows[:, 6].astype(int)
    voxel = np.rint(rows[:, [4, 3, 2]] / SPACING).astype(int)  # world x y z -> voxel z y x
    label = a.trees[tuple(voxel.T)]
    start = 1
    for t, (first, last) in spans.items():
        assert first == start  # consecutive blocks, nothing skipped
        block = (ids >= first) & (ids <= last)
        assert (label[block] == t).all() and (label[~block] != t).all()
        if t > 0:  # the block opens with the tree's source, tree t = sources row t - 1
            assert parent[ids == first] == -1
            assert np.array_equal(voxel[ids == first][0], a.points[a.result.sources[t - 1]])
        start = last + 1
    assert start == len(rows) + 1
    assert np.count_nonzero(parent == -1) == 3 + 2  # the sources and the two loose tubes
    for ln in text:  # the header names every root in its tree's line
        if ln.startswith("# tree "):
            t = int(ln.split(":")[0].split()[-1])
            roots = ln.split("root")[1].lstrip("s ").split(", ")
            first, last = spans[t]
            in_block = ids[(parent == -1) & (ids >= first) & (ids <= last)]
            assert [int(r) for r in roots] == in_block.tolist()


def test_save_by_extension(skel_analysis, tmp_path):
    a = skel_analysis
    (swc,) = a.save(tmp_path / "t.swc")
    (gml,) = a.save(tmp_path / "t.GraphML")
    nodes, edges = a.save(tmp_path / "t.csv")
    assert swc.read_text().startswith("#") and nx.read_graphml(gml).number_of_nodes() > 0
    assert edges.name == "t_edges.csv" and nodes.exists() and edges.exists()
    with pytest.raises(ValueError, match="graphml"):
        a.save(tmp_path / "t.txt")


# ------------------------------------------------------------------------------ layers
def test_to_layers_types_scale_and_colours(skel_analysis):
    a = skel_analysis
    scale, translate = (4.0, 2.0, 1.0), (10.0, 0.0, -5.0)
    tuples = a.to_layers("v", scale=scale, translate=translate)
    kinds = [t[2] for t in tuples]
    assert kinds == ["image", "labels", "labels", "shapes", "points"]
    for _, meta, _ in tuples:
        assert meta["scale"] == scale and meta["translate"] == translate
        assert meta["name"].startswith("v ")
        assert layers.layer_kind(meta["metadata"]) in {
            "probability",
            "mask",
            "trees",
            "branches",
            "centerline",
        }
    by_kind = {layers.layer_kind(m["metadata"]): (d, m) for d, m, _ in tuples}
    trees, tmeta = by_kind["trees"]
    # the smallest dtype that holds the tree ids (uint8 here), same values
    assert trees.dtype == np.uint8 and np.array_equal(trees, a.trees)
    assert tmeta["name"] == "v trees"
    cmap = tmeta["colormap"]
    tree_rgba = np.array([cmap.color_dict[k] for k in (1, 2)])
    assert not np.allclose(tree_rgba[0], tree_rgba[1])  # one colour per tree
    assert cmap.color_dict[0][3] == 0  # background transparent
    pts, pmeta = by_kind["centerline"]
    assert np.array_equal(pts, a.points)
    assert np.array_equal(pmeta["features"]["tree"], a.result.labels)
    assert np.allclose(pmeta["size"], np.maximum(a.radius / scale[-1], 0.5))
    # points and labels share the palette
    for k in (1, 2):
        assert np.allclose(pmeta["face_color"][a.result.labels == k], tree_rgba[k - 1])
    paths, smeta = by_kind["branches"]
    assert smeta["shape_type"] == "path" and all(len(p) >= 2 for p in paths)
    assert len(paths) == len(smeta["features"]["tree"]) == len(smeta["edge_color"])
    # default scale: the analysis spacing
    assert all(m["scale"] == SPACING for _, m, _ in a.to_layers())
    assert "skeleton" in [
        layers.layer_kind(m["metadata"]) for _, m, _ in a.to_layers(skeleton=True)
    ]


def test_tree_colors_are_deterministic_and_distinct():
    c = layers.tree_colors(30)
    assert c.shape == (30, 4) and ((c >= 0) & (c <= 1)).all() and (c[:, 3] == 1).all()
    assert np.array_equal(layers.tree_colors(30), c)
    assert np.array_equal(layers.tree_colors(5), c[:5])  # a tree keeps its colour
    rgb = c[:, :3]
    dist = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    assert dist.min() > 0.1
    assert dist[:12, :12].min() > 0.3  # the hand-picked ones are far apart
    grey = np.asarray(layers.UNASSIGNED_COLOR[:3])
    assert np.linalg.norm(rgb - grey, axis=1).min() > 0.1
    with pytest.raises(ValueError):
        layers.tree_colors(-1)


def test_layer_functions_validate_and_carry_metadata():
    vol = np.zeros((4, 5, 6), np.int32)
    vol[1, 2, 3] = 4
    data, meta, kind = layers.trees_layer(vol, name="x", scale=(1, 2, 3))
    assert kind == "labels" and meta["scale"] == (1.0, 2.0, 3.0) and "translate" not in meta
    assert meta["metadata"]["napari_topo"] == {
        "kind": "trees",
        "name": "x",
        "n_trees": 4,
        "palette": "prediction",
    }
    assert data.dtype == np.uint8 and meta["axis_labels"] == ("z", "y", "x")
    mask = vol > 0
    mdata, _, _ = layers.mask_layer(mask)
    assert mdata.dtype == np.uint8 and np.shares_memory(mdata, mask)
    paths, smeta, _ = layers.branches_layer([[[0, 0, 0]], [[0, 0, 0], [0, 1, 1]]], [1, 2])
    assert len(paths) == 1 and smeta["features"]["branch"].tolist() == [1]
    assert smeta["features"]["tree"].tolist() == [2]
    empty, emeta, _ = layers.branches_layer([], ndim=2)
    assert empty == [] and emeta["ndim"] == 2
    p, pmeta, _ = layers.points_layer(np.zeros((0, 3)))
    # no points: no sizes, and one colour (napari fails on an empty colour array)
    assert p.shape == (0, 3) and len(pmeta["size"]) == 0 and np.shape(pmeta["face_color"]) == (4,)
    for bad in (
        lambda: layers.trees_layer(vol, scale=(1, 2)),
        lambda: layers.trees_layer(vol, scale=(1, 0, 1)),
        lambda: layers.trees_layer(vol.astype(float)),
        lambda: layers.mask_layer(vol),
        lambda: layers.probability_layer(np.zeros(5)),
        lambda: layers.points_layer(np.zeros((3, 3)), radius=[1, 2]),
        lambda: layers.points_layer(np.zeros((3, 3)), tree=[0.5, 1, 2]),
        lambda: layers.branches_layer([np.zeros((2, 3)), np.zeros((2, 2))]),
        lambda: layers.trees_layer(vol, name=""),
    ):
        with pytest.raises(ValueError):
            bad()
    assert layers.layer_kind({"napari_topo": "x"}) is None


def test_core_modules_import_neither_qt_nor_napari():
    code = (
        "import sys, napari_topo.analysis, napari_topo.layers, napari_topo.trees.edit\n"
        "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_docstring_examples():
    for module in (analysis_module, layers, edit_module):
        failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)[:2]
        assert attempted > 0 and failed == 0, module.__name__


# --------------------------------------------------------------------------------- gui
@pytest.mark.gui
def test_layer_tuples_become_napari_layers(make_napari_viewer, skel_analysis):
    from napari.layers import Labels, Layer, Points, Shapes

    viewer = make_napari_viewer()
    scale = (4.0, 2.0, 1.0)
    for data, meta, kind in skel_analysis.to_layers("v", scale=scale):
        viewer.add_layer(Layer.create(data, meta, kind))
    assert [type(lyr).__name__ for lyr in viewer.layers] == [
        "Image",
        "Labels",
        "Labels",
        "Shapes",
        "Points",
    ]
    trees = viewer.layers["v trees"]
    assert isinstance(trees, Labels) and np.array_equal(trees.scale, scale)
    assert layers.layer_kind(trees) == "trees"
    pal = layers.tree_colors(2)
    assert np.allclose(trees.get_color(1), pal[0]) and np.allclose(trees.get_color(2), pal[1])
    assert isinstance(viewer.layers["v centerline"], Points)
    assert isinstance(viewer.layers["v branches"], Shapes)
    assert np.array_equal(
        viewer.layers["v centerline"].features["tree"], skel_analysis.result.labels
    )


# ------------------------------------------------------------------------ root placement
def test_root_placement_flags_a_root_off_every_vessel():
    """A root on a tube stays put; one in the empty corner is reported as moved far, off the mask.

    Two tubes along x (radius 3) in a 24 x 48 x 64 volume, spacing 2 x 1 x 1: the first root
    on the axis of tube 1, the second 4 slices and 10 rows off tube 2 (in the background).
    """
    mask = np.zeros((24, 48, 64), bool)
    zz, yy = np.ogrid[:24, :48]
    for cz, cy in ((6, 12), (16, 36)):
        mask[((zz - cz) * 2.0) ** 2 + (yy - cy) ** 2 <= 9, 4:60] = True
    sources = np.array([[6.0, 12.0, 30.0], [20.0, 46.0, 30.0]])
    a = VesselAnalysis.from_outputs({"vessel": mask}, sources=sources, spacing=(2.0, 1.0, 1.0))
    first, second = a.root_placement(sources)
    assert first["tree"] == 1 and first["in_mask"] and first["moved"] < 1.5
    assert first["n_voxels"] is None  # counted only for a root off the mask
    assert second["n_voxels"] == int((a.trees == 2).sum()) > 0
    # the far root is snapped to tube 2's centerline, sqrt((4 * 2)^2 + 10^2) = 12.8 away
    # in physical units, and said to lie off the mask
    assert not second["in_mask"]
    assert 11.0 < second["moved"] < 15.0
    assert np.allclose(second["point"], a.points[a.result.sources[1]])
    assert second["given"] == [20.0, 46.0, 30.0]
    # a root just beside the wall (one voxel out) still counts as on the vessel
    beside = np.array([[6.0, 16.0, 30.0], [16.0, 36.0, 30.0]])
    b = VesselAnalysis.from_outputs({"vessel": mask}, sources=beside, spacing=(2.0, 1.0, 1.0))
    assert [r["in_mask"] for r in b.root_placement(beside)] == [True, True]
    # outside the volume is off the mask however near the clipped voxel is
    out = np.array([[6.0, 12.0, -5.0], [16.0, 36.0, 30.0]])
    c = VesselAnalysis.from_outputs({"vessel": mask}, sources=out, spacing=(2.0, 1.0, 1.0))
    assert [r["in_mask"] for r in c.root_placement(out)] == [False, True]
    with pytest.raises(ValueError, match="roots for 2 trees"):
        a.root_placement(sources[:1])
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        a.root_placement([1, 2, 3])


def _tube(mask, a, b, radius):
    """Voxels within ``radius`` of the segment a-b (voxel units)."""
    zz, yy, xx = np.indices(mask.shape)
    p = np.stack([zz, yy, xx], axis=-1).astype(float)
    a, b = np.asarray(a, float), np.asarray(b, float)
    t = np.clip(((p - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
    d = np.linalg.norm(p - (a + t[..., None] * (b - a)), axis=-1)
    mask |= d <= radius


def test_branch_table_measures_a_y_shaped_vessel():
    # a trunk of radius 4 splitting into two straight branches of radius 2, in a volume
    # of 2 x 1 x 1 mm voxels: lengths, radii and tortuosity in mm, parents and generations
    mask = np.zeros((24, 40, 100), bool)
    _tube(mask, (12, 20, 5), (12, 20, 50), 4.0)
    _tube(mask, (12, 20, 50), (12, 5, 90), 2.0)
    _tube(mask, (12, 20, 50), (12, 35, 90), 2.0)
    spacing = (2.0, 1.0, 1.0)
    a = VesselAnalysis.from_outputs({"vessel": mask}, spacing=spacing, sources=[[12, 20, 5]])
    table = a.branch_table()
    assert list(table.columns[:12]) == [
        "branch", "tree", "parent", "generation", "end", "n_points", "length",
        "euclidean_length", "tortuosity", "radius_mean", "radius_min", "radius_max",
    ]  # fmt: skip
    assert len(table) == len(a.branch_paths()[0])  # one row per branch of the layer
    assert set(table["tree"]) == {1}
    long = table[table["length"] > 15].sort_values("generation")
    trunk, children = long.iloc[0], long.iloc[1:]
    assert trunk["generation"] == 0 and trunk["parent"] == -1 and len(children) == 2
    assert (children["parent"] == trunk["branch"]).all() and (children["generation"] == 1).all()
    # the trunk runs along x (1 mm voxels) from near x=5 to the junction near x=50
    assert trunk["length"] == pytest.approx(45, abs=6)
    assert trunk["radius_mean"] == pytest.approx(4, abs=1)
    assert trunk["end"] == "junction" and set(children["end"]) == {"tip"}
    for _, row in children.iterrows():
        assert row["radius_mean"] == pytest.approx(2, abs=0.8)
        assert row["length"] == pytest.approx(np.hypot(15, 40), abs=6)  # straight: ~42.7
        assert 1.0 <= row["tortuosity"] < 1.15
        assert row["radius_min"] <= row["radius_mean"] <= row["radius_max"]
    # world coordinates: z in mm (2 mm slices)
    assert trunk["start_z"] == pytest.approx(24, abs=2.1)
    # lengths follow the spacing: the same mask at 1 mm x-spacing but 0.5 mm along y
    b = VesselAnalysis.from_outputs(
        {"vessel": mask}, spacing=(2.0, 0.5, 1.0), sources=[[12, 20, 5]]
    )
    t = b.branch_table()
    kids = t[(t["generation"] == 1) & (t["length"] > 15)]
    assert len(kids) == 2
    assert kids["length"].to_numpy() == pytest.approx(np.hypot(7.5, 40), abs=6)  # ~40.7


def test_the_forest_is_cut_into_branches_once_per_analysis(monkeypatch):
    # about 1 s each on a whole CT: segment's branch table, its summary and the layers
    import napari_topo.analysis as analysis_module

    mask = np.zeros((16, 32, 64), bool)
    _tube(mask, (8, 16, 4), (8, 16, 40), 3.0)
    _tube(mask, (8, 16, 40), (8, 4, 60), 2.0)
    _tube(mask, (8, 16, 40), (8, 28, 60), 2.0)
    a = VesselAnalysis.from_outputs({"vessel": mask}, sources=[[8, 16, 4]])
    calls = []
    real = analysis_module.tree_branches
    monkeypatch.setattr(
        analysis_module, "tree_branches", lambda result: calls.append(1) or real(result)
    )
    n = len(a.branch_table())
    assert a.summary()["n_branches"] == n == len(a.branch_paths()[0]) >= 3
    a.to_layers()
    assert len(calls) == 1


def test_branch_table_tortuosity_of_a_winding_vessel():
    # a sine-shaped centerline: length / chord is the arc-length ratio (Bullitt's DM)
    mask = np.zeros((12, 60, 130), bool)
    x = np.arange(10, 121)
    y = 30 + 12 * np.sin(2 * np.pi * (x - 10) / 55.5)
    for x0, x1, y0, y1 in zip(x[:-1], x[1:], y[:-1], y[1:], strict=True):
        _tube(mask[:, :, :], (6, y0, x0), (6, y1, x1), 2.0)
    a = VesselAnalysis.from_outputs({"vessel": mask}, sources=[[6, 30, 10]])
    row = a.branch_table().sort_values("length").iloc[-1]
    arc = np.sum(np.hypot(np.diff(x), np.diff(y)))
    chord = np.hypot(x[-1] - x[0], y[-1] - y[0])
    assert row["tortuosity"] == pytest.approx(arc / chord, rel=0.12)
    assert row["tortuosity"] > 1.3


def test_branch_table_of_an_empty_mask_has_the_columns():
    a = VesselAnalysis.from_outputs({"vessel": np.zeros((8, 8, 8), bool)})
    table = a.branch_table()
    assert len(table) == 0 and "tortuosity" in table.columns and "radius_mean" in table.columns


def test_the_branches_layer_carries_the_branch_table(skel_analysis):
    # napari's features table then shows, sorts and exports the morphometry per branch
    from napari_topo.analysis import BRANCH_MEASURES

    (data, meta, kind) = next(t for t in skel_analysis.to_layers() if t[2] == "shapes")
    features = meta["features"]
    table = skel_analysis.branch_table().set_index("branch")
    rows = table.loc[features["branch"]]
    assert len(data) == len(features["branch"]) > 0
    for column in BRANCH_MEASURES:
        np.testing.assert_array_equal(features[column], rows[column].to_numpy(), err_msg=column)
    with pytest.raises(ValueError, match="one value per path"):
        layers.branches_layer([np.zeros((2, 3)), np.ones((3, 3))], measures={"length": [1.0]})


def test_a_mask_whose_skeleton_is_one_voxel_is_one_tree_without_branches():
    # a bad-input probe: noise and one bright sphere made `segment` fail with skan's
    # "index pointer size 0 should be 1" (a skeleton of one voxel has no edge)
    from napari_topo.trees.graph import branches

    # (the probe's sphere thinned to one voxel; a one-voxel mask does the same here)
    ball = np.zeros((24, 24, 24), np.float32)
    ball[12, 12, 12] = 1.0
    a = VesselAnalysis.from_outputs({"vessel": ball})
    assert a.skeleton.sum() == 1 and a.result.n_trees == 1
    s = a.summary()
    assert s["n_trees"] == 1 and s["n_voxels"] == int(ball.sum())
    assert len(branches(a.skeleton)) == 0  # skan's table: a point is not a branch
    two = np.zeros((5, 9, 9), bool)
    two[1, 1, 1] = two[3, 6, 7] = True  # isolated voxels alone
    assert len(branches(two)) == 0
    two[1, 1, 2] = True  # now one edge: one branch
    assert len(branches(two)) == 1
