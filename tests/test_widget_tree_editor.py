"""GUI tests of the "Tree editor" dock widget (napari_topo.widgets.tree_editor).

The layers are made as the Segment widget makes them (``VesselAnalysis.to_layers`` with
the analysis in the trees layer's metadata) from the exact mask of a synthetic volume,
then edited through the same code paths a user's click and key presses take. Run under
Xvfb (pytest-xvfb starts it automatically).

Run as a script to regenerate the screenshot used in the docs:
    xvfb-run -a python tests/test_widget_tree_editor.py docs/images/tree_editor_widget.png
"""

from __future__ import annotations

import csv
from types import SimpleNamespace

import networkx as nx
import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari.layers import Layer  # noqa: E402
from napari.utils.key_bindings import coerce_keybinding  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402

from napari_topo.analysis import VesselAnalysis  # noqa: E402
from napari_topo.data import make_vessel_volume  # noqa: E402
from napari_topo.layers import layer_kind  # noqa: E402
from napari_topo.trees import propagate_labels  # noqa: E402
from napari_topo.trees.edit import TreeEditor  # noqa: E402
from napari_topo.widgets.tree_editor import TreeEditorWidget, first_labelled_on_ray  # noqa: E402

SHAPE = (40, 40, 40)
SCALE = (2.0, 1.0, 1.0)
TIMEOUT_MS = 60_000

gui = pytest.mark.gui
no_private_access = pytest.mark.filterwarnings("error:Private attribute access")


# ------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def volume():
    return make_vessel_volume(SHAPE, n_trees=2, seed=2, randomize_image=False)


def make_analysis(volume) -> VesselAnalysis:
    return VesselAnalysis.from_outputs(
        {"vessel": volume.mask.astype(np.float32)}, sources=volume.sources, spacing=SCALE
    )


def add_analysis_layers(viewer, analysis, name="vessels"):
    """Add the layers as the Segment widget does; returns {kind: layer}."""
    out = {}
    for data, meta, kind in analysis.to_layers(name, scale=SCALE):
        meta["metadata"]["napari_topo"]["widget"] = "segment"  # the plugin's own layers
        if layer_kind(meta["metadata"]) == "trees":
            meta["metadata"]["napari_topo"]["analysis"] = analysis
        layer = viewer.add_layer(Layer.create(data, meta, kind))
        out[layer_kind(layer)] = layer
    return out


def editing(viewer, qtbot, analysis=None, volume=None):
    layers = add_analysis_layers(
        viewer, analysis if analysis is not None else make_analysis(volume)
    )
    widget = TreeEditorWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.layer_picker.value is layers["trees"]  # trees kind preferred
    # the idle prompt names the picked layer (it said "Pick a trees layer" beside one)
    assert widget.status_label.text() == f"Press Start editing to edit '{layers['trees'].name}'."
    assert widget.start_editing() is True
    assert widget.is_editing  # with an analysis: at once, no worker
    return widget, layers


def press(layer, key):
    """Call what ``key`` is bound to on the layer, as napari's key handler does."""
    func = layer.keymap[coerce_keybinding(key)]
    return func(layer)


def branch_of_tree(editor, tree, *, junction=False, min_len=3):
    for b in editor.branches:
        if b.tree != tree or len(b) < min_len:
            continue
        below = editor.points_of(b, subtree=True)
        if junction == (below.size > len(b)):
            return b
    raise AssertionError("no such branch in the fixture")


def record_paint(layer):
    got = []
    layer.events.paint.connect(lambda event: got.append(event.value))
    return got


def replay(data, atoms, *, undo=False):
    """Apply napari paint atoms (indices, old, new) as Labels._load_history does."""
    out = data.copy()
    for indices, old, new in atoms:
        out[indices] = old if undo else new
    return out


def click(widget, layer, position, *, view_direction=(1.0, 0.0, 0.0), dims=(1, 2), moves=0):
    """Drive the layer's mouse-drag callback with a press, ``moves`` moves, a release."""
    event = SimpleNamespace(
        type="mouse_press",
        button=1,
        position=tuple(position),
        view_direction=view_direction,
        dims_displayed=list(dims),
    )
    gen = widget._on_mouse_drag(layer, event)
    next(gen)
    for _ in range(moves):
        event.type = "mouse_move"
        next(gen)
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(gen)


# ------------------------------------------------------------------------------ tests
@gui
@no_private_access
def test_select_assign_undo_redo(make_napari_viewer, qtbot, volume):
    viewer = make_napari_viewer()
    widget, layers = editing(viewer, qtbot, volume=volume)
    trees = layers["trees"]
    ed = widget.editor
    assert ed.trees is trees.data  # edited in place
    before = trees.data.copy()
    b = branch_of_tree(ed, 1)
    mid = ed.points[b.points[len(b) // 2]]

    # select through the same code path a click takes
    assert widget.select_at(mid).index == b.index
    hl = viewer.layers[f"{trees.name} selected branch"]
    assert np.allclose(hl.data, b.path(ed.points)) and hl.scale.tolist() == list(SCALE)
    assert f"Branch {b.index}: tree 1" in widget.status_label.text()
    assert viewer.layers.selection.active is trees  # keys and clicks stay on the layer

    # key "2" gives the branch to tree 2: exactly its voxels change, all to 2
    paints = record_paint(trees)
    press(trees, "2")
    after = trees.data.copy()
    labels = layers["centerline"].features["tree"].to_numpy()
    assert np.array_equal(labels, ed.labels)  # the centerline points follow
    expected_labels = trees.metadata["napari_topo"]["analysis"].result.labels.copy()
    expected_labels[b.points] = 2
    assert np.array_equal(ed.labels, expected_labels)
    changed = after != before
    assert changed.any() and (after[changed] == 2).all()
    assert np.array_equal(
        after, propagate_labels(expected_labels, ed.points, trees.data > 0, spacing=SCALE)
    )
    # listeners get napari's paint atoms; replaying them gives the edited volume
    assert len(paints) == 1
    assert np.array_equal(replay(before, paints[0]), after)
    assert paints[0][0][0][0].size == np.count_nonzero(changed)

    # Ctrl+Z / Ctrl+Shift+Z on the layer: undo bit for bit, redo
    press(trees, "Control-Z")
    assert np.array_equal(trees.data, before) and trees.data.dtype == before.dtype
    assert np.array_equal(replay(after, paints[1]), before)
    assert (layers["centerline"].features["tree"].to_numpy() == ed.labels).all()
    # the branches' morphometry stays; what was counted from the old roots goes
    feats = layers["branches"].features
    assert {"length", "tortuosity", "radius_mean"} <= set(feats.columns)
    assert not {"parent", "generation"} & set(feats.columns)
    press(trees, "Control-Shift-Z")
    assert np.array_equal(trees.data, after)
    assert widget.undo() == "tree" and np.array_equal(trees.data, before)
    assert widget.undo() is None
    assert widget.redo() == "tree" and np.array_equal(trees.data, after)


@gui
def test_subtree_new_tree_and_merge(make_napari_viewer, qtbot, volume):
    viewer = make_napari_viewer()
    widget, layers = editing(viewer, qtbot, volume=volume)
    trees, ed = layers["trees"], widget.editor
    before = trees.data.copy()
    b = branch_of_tree(ed, 1, junction=True)
    below = ed.points_of(b, subtree=True)
    widget.select_at(ed.points[b.points[0]])
    assert widget.selected.index == b.index
    widget.subtree_checkbox.setChecked(True)
    delta = widget.assign(2)
    assert np.array_equal(np.sort(delta.points), below) and below.size > len(b)
    assert (ed.labels[below] == 2).all()
    assert np.array_equal(np.flatnonzero(trees.data != before), np.sort(delta.voxels))
    widget.undo()
    assert np.array_equal(trees.data, before)

    # new tree: the selection goes to tree 3, which gets its own colour and key
    new = widget.new_tree()
    assert new == 3 and (ed.labels[below] == 3).all()
    assert (trees.data == 3).any()
    assert trees.metadata["napari_topo"]["n_trees"] == 3
    grey = trees.colormap.map(99)
    assert not np.allclose(trees.colormap.map(3), grey)
    assert widget.tree_picker.currentData() == 3
    centre = layers["centerline"]
    assert np.allclose(centre.face_color[below], centre.face_color[below[0]])

    # merge 3 into 1: back to the start, bit for bit
    widget.merge(1, 3)
    assert np.array_equal(trees.data, before)
    assert not (ed.labels == 3).any()
    with pytest.raises(ValueError, match="nothing to merge"):
        widget.merge(1, 3)

    # one undo timeline with napari's own brush: the stroke is undone first, by napari
    widget.assign(2)
    edited = trees.data.copy()
    trees.brush_size = 1
    spot = np.argwhere(edited == 0)[0]
    trees.paint(spot, 9)
    assert trees.data[tuple(spot)] == 9
    assert widget.undo() == "paint" and np.array_equal(trees.data, edited)
    assert widget.undo() == "tree" and np.array_equal(trees.data, before)
    assert widget.redo() == "tree" and widget.redo() == "paint"
    assert trees.data[tuple(spot)] == 9
    widget._guard(widget.merge, 1, 3)  # a button press shows the message instead
    assert "nothing to merge" in widget.status_label.text()


@gui
def test_repartition_from_a_moved_source(make_napari_viewer, qtbot, volume):
    viewer = make_napari_viewer()
    analysis = make_analysis(volume)
    reference = TreeEditor(make_analysis(volume))
    widget, layers = editing(viewer, qtbot, analysis=analysis)
    trees, ed = layers["trees"], widget.editor
    before = trees.data.copy()
    src = widget.add_sources_layer()
    assert src.features["tree"].tolist() == [1, 2]
    assert np.allclose(src.data, ed.points[ed.sources])
    assert widget.sources_picker.value is src
    # move tree 2's root onto a tip of tree 1: part of tree 1 goes to tree 2
    tip = (
        ed.branches[-1].points[-1]
        if ed.branches[-1].tree == 1
        else next(b.points[-1] for b in reversed(ed.branches) if b.tree == 1)
    )
    moved = src.data.copy()
    moved[1] = ed.points[tip]
    src.data = moved
    paints = record_paint(trees)
    delta = widget.repartition()
    expected = reference.repartition(moved, tree_ids=[1, 2])
    assert np.array_equal(ed.labels, reference.labels)
    assert np.array_equal(trees.data, reference.trees)
    assert np.array_equal(np.sort(delta.voxels), np.sort(expected.voxels))
    assert ed.labels[tip] == 2 and (delta.old_labels == 1).any()
    assert np.array_equal(replay(before, paints[-1]), trees.data)
    widget.undo()
    assert np.array_equal(trees.data, before)
    assert np.array_equal(ed.sources, analysis.result.sources)
    # an added source with no tree id starts a new tree
    more = np.vstack([ed.points[ed.sources], ed.points[tip]])
    src.data = more
    src.features = {"tree": [1, 2, 0]}
    widget.repartition(src)
    assert set(np.unique(ed.labels).tolist()) == {1, 2, 3}
    assert src.features["tree"].tolist() == [1, 2, 3]


@gui
def test_save_trees_and_graph(make_napari_viewer, qtbot, volume, tmp_path):
    from napari_topo.data.io import read_volume

    viewer = make_napari_viewer()
    widget, layers = editing(viewer, qtbot, volume=volume)
    ed = widget.editor
    widget.select_at(ed.points[branch_of_tree(ed, 1).points[1]])
    widget.assign(2)
    saved = widget.save_trees(tmp_path / "trees.nii.gz")
    back = read_volume(saved)
    assert np.array_equal(np.asarray(back.data), layers["trees"].data)
    assert tuple(back.spacing) == SCALE

    (graphml,) = widget.save_graph(tmp_path / "graph.graphml")
    g = nx.read_graphml(graphml, node_type=int)
    assert [g.nodes[i]["tree"] for i in range(len(ed.labels))] == ed.labels.tolist()
    (swc,) = widget.save_graph(tmp_path / "graph.swc")
    rows = [ln for ln in swc.read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(rows) == len(ed.labels)
    nodes, edges = widget.save_graph(tmp_path / "graph.csv")
    with nodes.open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [int(r["tree"]) for r in table] == ed.labels.tolist()
    assert edges.exists()


@gui
def test_user_labels_layer_through_from_labels(make_napari_viewer, qtbot, volume):
    viewer = make_napari_viewer()
    user = viewer.add_labels(volume.trees.astype(np.int32), name="painted", scale=SCALE)
    before = user.data.copy()
    widget = TreeEditorWidget(viewer)
    qtbot.addWidget(widget)
    # not the plugin's layer: edited itself only when asked (the default edits a copy)
    assert widget.start_editing(user, in_place=True) is True
    assert widget.is_starting and not widget.start_button.isEnabled()
    qtbot.waitUntil(lambda: widget.is_editing, timeout=TIMEOUT_MS)
    ed = widget.editor
    assert ed.trees is user.data and np.array_equal(user.data, before)
    assert np.array_equal(ed.labels, before[tuple(ed.points.T)])
    b = branch_of_tree(ed, 2)
    widget.select_at(ed.points[b.points[1]])
    # real key presses on the canvas (napari's key handler, app shortcuts and all)
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, Qt.Key.Key_1)
    changed = user.data != before
    assert changed.any() and (user.data[changed] == 1).all() and (before[changed] == 2).all()
    assert user.mode == "pan_zoom"  # "1" assigned instead of switching to the eraser
    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(user.data, before)
    # stopping unbinds the keys and the click, and keeps the edited state for later
    widget.stop_editing()
    assert coerce_keybinding("1") not in user.keymap
    assert widget._on_mouse_drag not in user.mouse_drag_callbacks
    assert "analysis" in user.metadata["napari_topo"]
    qtbot.keyClick(canvas, Qt.Key.Key_2)
    assert user.mode == "paint"  # napari's own shortcut is back
    assert widget.start_editing(user, in_place=True) and widget.is_editing  # at once now


@gui
def test_a_tiny_piece_is_one_branch_of_one_point(make_napari_viewer, qtbot):
    # a newcomer's 8-voxel cube: scikit-image thins it to nothing, and the editor said
    # "0 branches, 0 centerline points. Click a vessel..."; every piece keeps a
    # centerline now, so the cube is one branch of one point, and the counts agree
    viewer = make_napari_viewer()
    cube = np.zeros((16, 16, 16), np.int32)
    cube[6:8, 6:8, 6:8] = 1
    layer = viewer.add_labels(cube, name="cube")
    widget = TreeEditorWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.start_editing(layer, in_place=True) is True
    qtbot.waitUntil(lambda: widget.is_editing, timeout=TIMEOUT_MS)
    text = widget.status_label.text()
    assert len(widget.editor.labels) == 1 and len(widget.editor.branches) == 1
    assert "1 branch, 1 centerline point." in text and "Click a vessel" in text


@gui
def test_clicks_in_2d_and_3d_and_drags(make_napari_viewer, qtbot, volume):
    viewer = make_napari_viewer()
    widget, layers = editing(viewer, qtbot, volume=volume)
    trees, ed = layers["trees"], widget.editor
    b = branch_of_tree(ed, 2)
    p = ed.points[b.points[len(b) // 2]].astype(float)
    world = p * np.asarray(SCALE)

    click(widget, trees, world, dims=(1, 2))  # 2D: the clicked data coordinate
    assert widget.selected is not None and widget.selected.index == b.index

    widget.selected = None
    click(widget, trees, world, dims=(1, 2), moves=10)  # a drag pans, selects nothing
    assert widget.selected is None

    # 3D: a ray along z through the point's (y, x) hits the first labelled voxel
    viewer.dims.ndisplay = 3
    start = (-5.0, world[1], world[2])
    click(widget, trees, start, view_direction=(1.0, 0.0, 0.0), dims=(0, 1, 2))
    hit = first_labelled_on_ray(trees.data, (0, p[1], p[2]), (SHAPE[0] - 1, p[1], p[2]))
    assert hit is not None
    assert widget.selected is not None
    assert widget.selected.index == ed.branch_at(hit).index
    # a ray that misses every vessel clears the selection
    empty = np.argwhere(~trees.data.astype(bool).any(axis=0))[0]
    click(widget, trees, (-5.0, *empty.astype(float)), view_direction=(1.0, 0, 0), dims=(0, 1, 2))
    assert widget.selected is None


@gui
def test_start_editing_does_the_heavy_parts_off_the_gui_thread(
    make_napari_viewer, qtbot, volume, monkeypatch
):
    """Start editing used to stall the GUI 1-3 s: the tree picker's colour swatches
    mapped an int64 array through the layer's DirectLabelColormap, which made napari
    compile a numba typed dictionary; and the first edit built the voxel ownership (a
    distance transform of the mask) on the GUI thread. Now a swatch is a look-up of one
    int, and the ownership is built in a worker as editing starts."""
    from napari.utils.colormaps.colormap import DirectLabelColormap

    compiled = []
    original = DirectLabelColormap._get_typed_dict_mapping

    def spy(self, *args, **kwargs):
        compiled.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DirectLabelColormap, "_get_typed_dict_mapping", spy)
    viewer = make_napari_viewer()
    layers = add_analysis_layers(viewer, make_analysis(volume))
    widget = TreeEditorWidget(viewer)
    qtbot.addWidget(widget)
    qtbot.wait(50)
    compiled.clear()  # napari's own drawing of the layers is not what is tested
    assert widget.start_editing() is True and widget.is_editing
    assert compiled == []
    # the swatches still show each tree's colour in the layer
    trees = layers["trees"]
    for row in range(widget.tree_picker.count()):
        tree_id = widget.tree_picker.itemData(row)
        if not isinstance(tree_id, int) or tree_id <= 0:
            continue
        image = widget.tree_picker.itemIcon(row).pixmap(14, 14).toImage()
        got = image.pixelColor(7, 7)
        want = np.asarray(trees.colormap.color_dict[tree_id])[:3] * 255
        # (atol: pytest-xvfb's screen may have 16-bit colour, 5 bits for red and blue)
        assert np.allclose([got.red(), got.green(), got.blue()], want, atol=8), tree_id
    # the ownership the first edit needs is built without an edit, in a worker
    qtbot.waitUntil(lambda: widget.editor.prepared, timeout=TIMEOUT_MS)


def test_the_widget_modules_do_not_import_networkx():
    """Opening the Tree editor dock imported networkx (0.3 s, 2.6 s on a loaded machine)
    on the GUI thread, for a graph view it never uses."""
    import subprocess
    import sys

    code = (
        "import sys, napari_topo.widgets.segment, napari_topo.widgets.metrics, "
        "napari_topo.widgets.tree_editor; print('networkx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_first_labelled_on_ray():
    vol = np.zeros((6, 6, 6), np.uint8)
    vol[4, 3, 3] = 1
    vol[2, 3, 3] = 5
    assert first_labelled_on_ray(vol, (0, 3, 3), (5, 3, 3)).tolist() == [2, 3, 3]
    assert first_labelled_on_ray(vol, (5, 3, 3), (0, 3, 3)).tolist() == [4, 3, 3]
    assert first_labelled_on_ray(vol, (0, 0, 0), (5, 0, 0)) is None
    assert first_labelled_on_ray(vol, (-9, -9, -9), (-8, -8, -8)) is None


@gui
def test_bad_layers_and_no_editor(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = TreeEditorWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.start_editing() is False
    assert "Pick a Labels layer" in widget.status_label.text()
    assert not widget.assign_button.isEnabled()
    with pytest.raises(ValueError, match="Start editing"):
        widget.select_at((1, 2, 3))
    lay = viewer.add_labels(np.zeros((4, 5, 6, 7), np.uint8), name="4d")
    assert widget.start_editing(lay) is False
    assert "4D" in widget.status_label.text()


@gui
def test_sources_picker_and_roots_messages(make_napari_viewer, qtbot, volume):
    viewer = make_napari_viewer()
    widget, layers = editing(viewer, qtbot, volume=volume)
    ed, centre = widget.editor, layers["centerline"]
    idx = np.linspace(0, len(ed.points) - 1, 9).astype(int)
    assert len(set(idx.tolist())) == 9
    nine = ed.points[idx].astype(float)
    roots = viewer.add_points(np.vstack([nine, nine[:3]]), name="roots", scale=SCALE)
    # the plugin's own centerline (hundreds of points) is not offered as roots
    assert centre not in widget.sources_picker.choices
    assert roots in widget.sources_picker.choices
    widget.sources_picker.value = roots

    # roots repeating one another: a count, and what to do
    before = layers["trees"].data.copy()
    widget.repartition_button.click()
    assert widget.status_label.text() == (
        "Error: roots must be distinct points: 3 of the 12 points of 'roots' are "
        "duplicates; remove them or pick another Points layer"
    )
    # distinct roots that snap to the same centerline points: the first two are named
    # (rows of the layer, from 1), with how many in all, and nothing changes
    roots.data = np.vstack([nine, nine[:3] + 0.25])
    widget.repartition_button.click()
    status = widget.status_label.text()
    assert status == (
        "Error: roots 1 and 10 of 'roots' snap to the same centerline point (3 of the 12 "
        "roots land on a point another root took): two roots on one vessel, or beside the "
        "same vessel where the mask missed it; move or delete one"
    ), status
    np.testing.assert_array_equal(layers["trees"].data, before)
    # the centerline handed in anyway (a script): one line, no indices
    widget._guard(widget.repartition, centre)
    status = widget.status_label.text()
    assert status.startswith("Error: 'vessels centerline' is a centerline layer, not tree roots")
    assert len(status) < 200
    np.testing.assert_array_equal(layers["trees"].data, before)  # nothing changed


@gui
def test_save_into_a_missing_folder_says_so(make_napari_viewer, qtbot, volume, tmp_path):
    from qtpy.QtWidgets import QFileDialog

    viewer = make_napari_viewer()
    widget, _ = editing(viewer, qtbot, volume=volume)
    missing = tmp_path / "no" / "such"
    for button, name in (
        (widget.save_trees_button, "trees.nii.gz"),
        (widget.save_graph_button, "graph.graphml"),
        (widget.save_graph_button, "graph.csv"),
    ):
        target = str(missing / name)
        original = QFileDialog.getSaveFileName
        QFileDialog.getSaveFileName = staticmethod(lambda *a, t=target, **k: (t, ""))
        try:
            button.click()
        finally:
            QFileDialog.getSaveFileName = original
        status = widget.status_label.text()
        assert status == (
            f"Error: cannot write {target}: no such folder {missing}; pick an existing folder."
        )
        assert "Errno" not in status and "\n" not in status
    assert not missing.exists()


@gui
def test_an_empty_trees_layer_says_there_is_nothing_to_edit(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    empty = VesselAnalysis.from_outputs({"vessel": np.zeros(SHAPE, np.float32)}, spacing=SCALE)
    layers = add_analysis_layers(viewer, empty)
    widget = TreeEditorWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.layer_picker.value is layers["trees"]
    assert widget.start_editing() is False
    assert widget.status_label.text() == (
        "Error: 'vessels trees' has no vessels to edit (every voxel is 0); run Segment "
        "with a lower Threshold or paint vessels, then press Start editing."
    )
    assert not widget.is_editing and not widget.assign_button.isEnabled()
    # vessels painted since: editing starts from the painted labels
    painted = layers["trees"].data
    painted[10:30, 20, 20] = 1
    layers["trees"].refresh()
    assert widget.start_editing() is True
    qtbot.waitUntil(lambda: widget.is_editing, timeout=TIMEOUT_MS)
    assert len(widget.editor.points) > 0


# ------------------------------------------------------------------------------ screenshot
def save_screenshot(path: str) -> None:
    """A viewer with the trees in 3D, a selected branch and the docked widget."""
    import napari
    from qtpy.QtWidgets import QApplication

    vol = make_vessel_volume((64, 64, 64), n_trees=2, seed=3, randomize_image=False)
    viewer = napari.Viewer(show=True, title="napari-topo: tree editor")
    viewer.window.resize(1400, 860)
    layers = add_analysis_layers(viewer, make_analysis(vol))
    for kind in ("branches", "centerline", "probability"):
        layers[kind].visible = False
    layers["trees"].opacity = 0.5
    widget = TreeEditorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Tree editor", area="right")
    widget.start_editing()
    ed = widget.editor
    widget.add_sources_layer()
    # split a subtree of tree 1 off into a new tree (green), and keep it selected
    b = next(
        b
        for b in ed.branches
        if b.tree == 1 and b.upstream >= 0 and ed.points_of(b, subtree=True).size > 2 * len(b)
    )
    widget.select_at(ed.points[b.points[len(b) // 2]])
    widget.subtree_checkbox.setChecked(True)
    widget.new_tree()
    app = QApplication.instance()
    viewer.dims.ndisplay = 3
    for _ in range(20):
        app.processEvents()
    viewer.reset_view()
    camera = viewer.scene.camera
    camera.angles = (-15, 35, 60)
    camera.zoom *= 0.65
    for _ in range(20):
        app.processEvents()
    viewer.screenshot(path, canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    import sys

    save_screenshot(sys.argv[1] if len(sys.argv) > 1 else "docs/images/tree_editor_widget.png")


@gui
def test_a_rerun_of_segment_stops_editing_its_old_trees(make_napari_viewer, qtbot):
    # found by the random-use soak (issue 14): Segment ran again on the image while its
    # trees were being edited; the editor kept writing into the replaced array (edits
    # invisible) and Stop editing wrote the old result over the new run's analysis
    from test_widget_segment import add_vessels, make_widget, ours, run_and_wait

    viewer = make_napari_viewer()
    add_vessels(viewer)
    segment = make_widget(viewer, qtbot, tile=32)
    assert run_and_wait(qtbot, segment) == "done"
    trees = ours(viewer)["trees"]
    editor = TreeEditorWidget(viewer)
    qtbot.addWidget(editor)
    assert editor.start_editing(trees) and editor.is_editing
    segment.threshold_box.value = 0.7
    assert run_and_wait(qtbot, segment) == "done"
    new = segment.last_analysis
    assert ours(viewer)["trees"] is trees  # updated in place, as before
    assert not editor.is_editing
    assert "was replaced" in editor.status_label.text()
    # the new run's result is what the layer holds and describes
    assert trees.metadata["napari_topo"]["analysis"] is new
    np.testing.assert_array_equal(trees.data, new.trees)
    assert editor.start_editing(trees) and np.shares_memory(editor.editor.trees, trees.data)


@gui
def test_sources_picker_offers_the_roots_layer_first(make_napari_viewer, qtbot, volume):
    # a newcomer segmented with a 'roots' Points layer; the Tree editor's Sources showed
    # '-----' and Re-run partition needed a pick first
    from napari_topo.widgets.metrics import error_layer_tuples

    viewer = make_napari_viewer()
    # the Metrics dock's error points (added first, so they came first) are never roots:
    # a newcomer's Sources had filled itself with 'trees missed centerline'
    none = np.zeros((0, 3))
    errors = {f"{k}_{w}": none for k in ("missed", "false") for w in ("centerline",)}
    errors.update({f"{k}_{w}": [] for k in ("missed", "false") for w in ("locations", "sizes")})
    errors["missed_centerline"] = np.array([[4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    for data, meta, kind in error_layer_tuples(errors, "vessels trees"):
        viewer._add_layer_from_data(data, meta, kind)
    missed = viewer.layers["vessels trees missed centerline"]
    roots = viewer.add_points(np.array([[1.0, 2.0, 3.0]]), name="roots")
    widget, layers = editing(viewer, qtbot, volume=volume)
    assert missed not in widget.sources_picker.choices
    assert widget.sources_picker.value is roots
    # the user's own choice stays, even "none", as layers come and go
    widget.sources_picker.value = None
    viewer.add_points(np.array([[2.0, 2.0, 2.0]]), name="more roots")
    assert widget.sources_picker.value is None
