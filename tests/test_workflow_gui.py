"""The whole workflow through the three docked widgets, as a user clicks.

One viewer, the demo (``napari-topo demo --gui``: the sample vessels and the three dock
widgets opened through napari.yaml), and the widgets used together on one result:

1. *Segment vessels*: press Run with a shipped model, wait for ``finished``, look at the
   layers (types, scale/translate of the image, one colour per tree);
2. *Topology metrics*: compare our trees layer with the ground-truth trees, Live on;
   erase a brush ball on the prediction (``Labels.paint``, what napari's brush calls) and
   see the table follow, equal to ``compute_metrics`` on the new data;
3. *Tree editor*: start on our trees layer, select a branch (``select_at``, what a click
   calls), give it to another tree: only that branch's voxels change, the Metrics table's
   Tree accuracy follows by itself; Undo restores labels and table; Redo;
4. save the trees and the centerline through napari's own ``layers.save`` with our
   writers, and read the files back.

The sample (96^3) is cropped to 48^3 (image and both ground-truth layers alike, with the
crop offset as translate) to keep the run short on a CPU. Run under Xvfb (pytest-xvfb
starts it automatically).
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari.layers import Image, Labels, Points, Shapes  # noqa: E402
from napari.utils.colormaps import DirectLabelColormap  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from napari_topo.cli import open_demo_viewer  # noqa: E402
from napari_topo.data.io import read_volume  # noqa: E402
from napari_topo.layers import tree_colors  # noqa: E402
from napari_topo.topology.metrics import compute_metrics  # noqa: E402
from napari_topo.trees.edit import TreeEditor  # noqa: E402
from napari_topo.widgets.metrics import format_metric_value  # noqa: E402

TIMEOUT_MS = 60_000
#: A 48^3 corner of the 96^3 sample where both ground-truth trees run (2 ids in the crop).
CROP_START = (24, 48, 24)
CROP = 48
SAMPLE = "synthetic vessels"
KINDS = {
    "probability": Image,
    "mask": Labels,
    "skeleton": Labels,
    "trees": Labels,
    "branches": Shapes,
    "centerline": Points,
}

gui = pytest.mark.gui


# ------------------------------------------------------------------------------ helpers
def crop_sample(viewer) -> tuple[slice, ...]:
    """Crop the three sample layers alike; the offset goes into their translate."""
    box = tuple(slice(s, s + CROP) for s in CROP_START)
    for name in (SAMPLE, "ground truth mask", "ground truth trees"):
        layer = viewer.layers[name]
        offset = np.asarray(CROP_START) * np.asarray(layer.scale)
        layer.data = np.ascontiguousarray(layer.data[box])
        layer.translate = tuple(offset)
    return box


def our_layers(viewer) -> dict:
    """The Segment widget's layers for the sample image, by kind (from metadata)."""
    found = {}
    for layer in viewer.layers:
        info = layer.metadata.get("napari_topo", {})
        if info.get("widget") == "segment" and info.get("source") == SAMPLE:
            found[info["kind"]] = layer
    return found


def settled(widget) -> bool:
    """The Metrics table shows the current layers: nothing running, queued or stale."""
    return (
        not widget.is_running
        and widget.results != {}
        and not widget.stale_metrics
        and widget.compute_button.isEnabled()
    )


def table(widget) -> dict[str, str]:
    t = widget.table
    # a name without its unit ("HD95 (mm)" -> "HD95")
    t = t
    return {t.item(r, 0).text().split(" (")[0]: t.item(r, 1).text() for r in range(t.rowCount())}


def assert_table_matches(widget, pred, gt) -> dict:
    """The widget's numbers and text equal ``compute_metrics`` on the layers' data now."""
    spacing = tuple(float(s) for s in gt.scale)
    expected = compute_metrics(pred.data, gt.data, spacing=spacing)
    assert widget.results == pytest.approx(expected, nan_ok=True)
    assert table(widget) == {k: format_metric_value(v) for k, v in expected.items()}
    return expected


def pick_branch(editor, min_len: int = 6):
    """The longest branch of the tree with the most centerline points (not all of it)."""
    ids, counts = np.unique(editor.labels[editor.labels > 0], return_counts=True)
    tree = int(ids[np.argmax(counts)])
    own = [b for b in editor.branches if editor.branch(b).tree == tree and len(b) >= min_len]
    own = [b for b in own if len(b) < counts.max()]
    assert own, "the segmentation of the crop has no branch to move"
    return max(own, key=len), tree, [int(i) for i in ids if i != tree]


# ------------------------------------------------------------------------------ test
@gui
def test_segment_measure_edit_undo_and_save(make_napari_viewer, qtbot, tmp_path):
    def press(button) -> None:
        assert button.isEnabled(), button.text()
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)

    viewer, docked = open_demo_viewer(make_napari_viewer())
    segment = docked["Segment vessels"]
    metrics = docked["Topology metrics"]
    trees_editor = docked["Tree editor"]
    # Test setup, not a user step: with Live on, replacing the data of the layers the
    # Metrics pickers hold by default (the image and the mask) would start a background
    # comparison of the image with the mask, which fails with an error message.
    metrics.live_checkbox.setChecked(False)
    crop_sample(viewer)
    metrics.live_checkbox.setChecked(True)
    image = viewer.layers[SAMPLE]
    gt = viewer.layers["ground truth trees"]
    assert image.data.shape == gt.data.shape == (CROP,) * 3
    assert len(np.unique(gt.data)) == 3  # background and both trees

    # ---- 1. Segment: the sample image is offered; Run with a shipped model ----------
    assert segment.image_picker.value is image
    qtbot.waitUntil(lambda: segment.is_ready, timeout=TIMEOUT_MS)  # models listed
    segment.model_picker.value = "unet-dice"
    segment.device_picker.value = "cpu"
    segment.tile_box.value = 32
    with qtbot.waitSignal(segment.finished, timeout=TIMEOUT_MS) as blocker:
        press(segment.run_button)
    assert blocker.args == ["done"], segment.status_label.text()
    assert not segment.is_running and segment.run_button.isEnabled()

    ours = our_layers(viewer)
    assert set(ours) == set(KINDS)
    for kind, cls in KINDS.items():
        layer = ours[kind]
        assert isinstance(layer, cls), kind
        np.testing.assert_allclose(layer.scale, image.scale, err_msg=kind)
        np.testing.assert_allclose(layer.translate, image.translate, err_msg=kind)
    trees, centerline = ours["trees"], ours["centerline"]
    analysis = segment.last_analysis
    assert trees.metadata["napari_topo"]["analysis"] is analysis
    assert trees.data.shape == image.data.shape
    np.testing.assert_array_equal(trees.data > 0, ours["mask"].data > 0)
    n_trees = analysis.result.n_trees
    ids = np.unique(trees.data)
    assert n_trees >= 2 and set(ids[ids > 0].tolist()) <= set(range(1, n_trees + 1))
    # one colour per tree, the same in the volume and on the centerline points
    assert isinstance(trees.colormap, DirectLabelColormap)
    palette = tree_colors(n_trees)
    for k in range(1, n_trees + 1):
        np.testing.assert_allclose(trees.colormap.map(k), palette[k - 1], atol=1e-6)
    assert trees.colormap.map(0)[3] == 0  # background transparent
    point_tree = centerline.features["tree"].to_numpy()
    np.testing.assert_array_equal(point_tree, analysis.result.labels)
    np.testing.assert_allclose(centerline.face_color, palette[point_tree - 1], atol=1e-6)
    assert f"{n_trees} trees" in segment.status_label.text()

    # ---- 2. Metrics: our trees against the ground-truth trees, Live on ---------------
    metrics.prediction_picker.value = trees
    metrics.ground_truth_picker.value = gt
    assert metrics.prediction_picker.value is trees
    assert metrics.ground_truth_picker.value is gt
    assert metrics.live_checkbox.isChecked()
    # (with Live on it may already be computing this pair by itself: Compute is
    # disabled until that ends)
    qtbot.waitUntil(metrics.compute_button.isEnabled, timeout=TIMEOUT_MS)
    press(metrics.compute_button)
    qtbot.waitUntil(lambda: settled(metrics), timeout=TIMEOUT_MS)
    first = assert_table_matches(metrics, trees, gt)
    assert "Tree accuracy" in first  # both layers hold two or more trees

    # A 3D eraser stroke across a vessel, through the call napari's brush makes: on the
    # branch that the tree editor will move below (so the edit must keep it erased).
    branch, _, _ = pick_branch(TreeEditor(analysis))  # the same branches as the widget's
    middle = analysis.result.points[branch.points[len(branch) // 2]]
    trees.n_edit_dimensions = 3
    trees.brush_size = 5
    painted_before = trees.data.copy()
    trees.paint(tuple(int(v) for v in middle), 0)
    erased = (painted_before > 0) & (trees.data == 0)
    assert erased.sum() > 10
    assert metrics.stale_metrics  # greyed until the live update lands
    qtbot.waitUntil(lambda: settled(metrics), timeout=TIMEOUT_MS)
    after_stroke = assert_table_matches(metrics, trees, gt)
    assert after_stroke["Dice"] < first["Dice"]
    assert after_stroke != first

    # ---- 3. Tree editor on our trees layer: select, reassign, undo, redo -------------
    # both "trees" layers are offered first (the ground truth is one too): pick ours
    offered = [c for c in trees_editor.layer_picker.choices if c is not None]
    assert {trees.name, gt.name} == {c.name for c in offered[:2]}
    trees_editor.layer_picker.value = trees
    press(trees_editor.start_button)
    assert trees_editor.is_editing and trees_editor.layer is trees
    editor = trees_editor.editor
    branch, old_tree, others = pick_branch(editor)
    target = others[0]
    mid = editor.points[branch.points[len(branch) // 2]]
    selected = trees_editor.select_at(mid)  # what a click on the vessel there calls
    assert selected is not None and selected.index == branch.index
    assert f"Branch {branch.index}: tree {old_tree}" in trees_editor.status_label.text()

    before = trees.data.copy()
    accuracy_before = metrics.results["Tree accuracy"]
    idx = trees_editor.tree_picker.findData(target)
    assert idx >= 0
    trees_editor.tree_picker.setCurrentIndex(idx)
    press(trees_editor.assign_button)
    edited = trees.data.copy()
    changed = edited != before
    assert changed.any()
    assert (before[changed] == old_tree).all() and (edited[changed] == target).all()
    # every changed voxel is nearer (physically) to the branch than to any other point
    spacing = np.asarray(trees.scale, dtype=float)
    on_branch = np.zeros(len(editor.points), bool)
    on_branch[branch.points] = True
    near_branch = cKDTree(editor.points[on_branch] * spacing)
    near_other = cKDTree(editor.points[~on_branch] * spacing)
    vox = np.argwhere(changed) * spacing
    d_branch, _ = near_branch.query(vox)
    d_other, _ = near_other.query(vox)
    assert (d_branch <= d_other + 1e-6).all()
    # the eraser stroke made before editing is not undone by the tree edit
    assert (edited[erased] == 0).all(), "a tree edit brought back voxels the brush erased"
    # the centerline points follow the edit (colour and tree feature)
    point_tree = centerline.features["tree"].to_numpy()
    assert (point_tree[branch.points] == target).all()
    np.testing.assert_array_equal(point_tree, editor.labels)

    # The Metrics table follows the edit by itself (Live): Tree accuracy changes.
    qtbot.waitUntil(
        lambda: settled(metrics) and metrics.results["Tree accuracy"] != accuracy_before,
        timeout=TIMEOUT_MS,
    )
    after_edit = assert_table_matches(metrics, trees, gt)
    assert after_edit["Tree accuracy"] < accuracy_before
    assert after_edit["Dice"] == after_stroke["Dice"]  # the mask did not change

    press(trees_editor.undo_button)
    np.testing.assert_array_equal(trees.data, before)
    np.testing.assert_array_equal(centerline.features["tree"].to_numpy(), editor.labels)
    qtbot.waitUntil(
        lambda: settled(metrics) and metrics.results["Tree accuracy"] == accuracy_before,
        timeout=TIMEOUT_MS,
    )
    assert assert_table_matches(metrics, trees, gt) == pytest.approx(after_stroke, nan_ok=True)

    press(trees_editor.redo_button)
    np.testing.assert_array_equal(trees.data, edited)
    qtbot.waitUntil(
        lambda: settled(metrics) and metrics.results["Tree accuracy"] != accuracy_before,
        timeout=TIMEOUT_MS,
    )
    assert_table_matches(metrics, trees, gt)

    # ---- 4. Save through napari's writers (File > Save Selected Layers) -------------
    viewer.layers.selection = {trees}
    nii = tmp_path / "trees.nii.gz"
    written = viewer.layers.save(str(nii), selected=True, plugin="napari-topo")
    assert [str(p) for p in written] == [str(nii)]
    vol = read_volume(nii)
    np.testing.assert_array_equal(vol.data, trees.data)
    np.testing.assert_allclose(vol.spacing, trees.scale)

    viewer.layers.selection = {centerline}
    table_csv = tmp_path / "centerline.csv"
    viewer.layers.save(str(table_csv), selected=True, plugin="napari-topo")
    with table_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(editor.points)
    voxels = np.array([[float(r[a]) for a in "zyx"] for r in rows])
    np.testing.assert_allclose(voxels, centerline.data)
    world = np.array([[float(r[f"{a}_physical"]) for a in "zyx"] for r in rows])
    np.testing.assert_allclose(world, voxels * spacing + np.asarray(trees.translate))
    np.testing.assert_array_equal([int(r["tree"]) for r in rows], editor.labels)

    swc = tmp_path / "centerline.swc"
    viewer.layers.save(str(swc), selected=True, plugin="napari-topo")
    nodes = np.loadtxt(swc, comments="#", ndmin=2)
    assert nodes.shape == (len(editor.points), 7)
    node_ids = nodes[:, 0].astype(int)
    parents = nodes[:, 6].astype(int)
    assert sorted(node_ids.tolist()) == list(range(1, len(nodes) + 1))
    position = {n: i for i, n in enumerate(node_ids.tolist())}
    assert all(p == -1 or position[p] < i for i, p in enumerate(parents.tolist()))
    # the header's trees are the editor's tree ids; its roots are the SWC's roots
    tree_lines = [ln for ln in swc.read_text().splitlines() if ln.startswith("# tree ")]
    assert {int(ln.split(":")[0].split()[-1]) for ln in tree_lines} == set(editor.labels.tolist())
    roots = [r for ln in tree_lines if "root" in ln for r in ln.split("root")[1][1:].split(",")]
    assert len(roots) == int((parents == -1).sum()) >= 2
    # SWC is x y z in physical units: the same points as the CSV's physical columns
    np.testing.assert_allclose(
        np.sort(nodes[:, 2:5][:, ::-1], axis=0), np.sort(world, axis=0), atol=1e-4
    )
