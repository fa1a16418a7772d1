"""GUI tests of the docks' defaults: nothing the user made changes by surprise.

Issue 12: the Tree editor prefers the plugin's own trees and edits any other layer on a
copy unless told otherwise; the Topology metrics dock pairs a layer the plugin made
(a prediction) with one it did not (a reference), never two references or a layer with
itself, and computes by itself with Live on; *Show errors* leaves the camera alone.
The layers are made as the sample data and the Segment widget make them (without
running a model, to stay fast). Run under Xvfb (pytest-xvfb starts it).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari.layers import Layer  # noqa: E402

from napari_topo.analysis import VesselAnalysis  # noqa: E402
from napari_topo.data import make_vessel_volume  # noqa: E402
from napari_topo.layers import (  # noqa: E402
    REFERENCE_CONTOUR,
    layer_kind,
    mask_layer,
    trees_layer,
)
from napari_topo.widgets.metrics import MetricsWidget  # noqa: E402
from napari_topo.widgets.tree_editor import TreeEditorWidget  # noqa: E402

SHAPE = (32, 32, 32)
SCALE = (2.0, 1.0, 1.0)
TIMEOUT_MS = 60_000
gui = pytest.mark.gui


@pytest.fixture(scope="module")
def volume():
    return make_vessel_volume(SHAPE, n_trees=2, seed=2, randomize_image=False)


def add_reference(viewer, volume):
    """The sample's ground truth: a mask and trees the user did not make in a dock."""
    out = {}
    for data, meta, kind in (
        mask_layer(volume.mask, name="ground truth", scale=SCALE),
        trees_layer(volume.trees, name="ground truth", scale=SCALE, palette="reference"),
    ):
        layer = viewer.add_layer(Layer.create(data, meta, kind))  # as napari adds a tuple
        out[layer_kind(layer)] = layer
    return out


def add_prediction(viewer, volume, name="vessel"):
    """The layers as the Segment widget adds them (``widget: segment``, analysis)."""
    mask = volume.mask.copy()
    mask[:, :, SHAPE[2] // 2] = False  # not identical to the ground truth
    analysis = VesselAnalysis.from_outputs(
        {"vessel": mask.astype(np.float32)}, sources=volume.sources, spacing=SCALE
    )
    out = {}
    for data, meta, kind in analysis.to_layers(name, scale=SCALE):
        info = meta["metadata"]["napari_topo"]
        info.update(widget="segment", source=name, analysis=analysis)
        layer = viewer.add_layer(Layer.create(data, meta, kind))
        out[layer_kind(layer)] = layer
    return out


# ------------------------------------------------------------------------ tree editor
@gui
def test_tree_editor_prefers_its_own_trees_and_copies_a_reference(
    make_napari_viewer, qtbot, volume
):
    viewer = make_napari_viewer()
    ref = add_reference(viewer, volume)
    assert ref["trees"].contour == 0  # napari's Labels takes no contour argument
    widget = TreeEditorWidget(viewer)
    qtbot.addWidget(widget)
    # Opening a dock outlines the reference (apart from a result's filled trees) ...
    assert ref["trees"].contour == REFERENCE_CONTOUR >= 1
    # Only the reference exists: picked, but Start edits a copy, and the button says so.
    assert widget.layer_picker.value is ref["trees"]
    assert widget.start_button.text() == "Start editing a copy"
    assert not widget.in_place_checkbox.isHidden()

    pred = add_prediction(viewer, volume)
    assert pred["trees"].contour == 0
    # The plugin's own trees replace the widget's earlier choice (even though the
    # reference is a trees layer too, and was there first).
    assert widget.layer_picker.value is pred["trees"]
    assert widget.start_button.text() == "Start editing"
    assert widget.in_place_checkbox.isHidden()

    # The user picks the reference: Start makes "<name> edited" and edits that.
    before = ref["trees"].data.copy()
    widget.layer_picker.value = ref["trees"]
    assert widget.start_button.text() == "Start editing a copy"
    assert widget.start_editing() is True
    qtbot.waitUntil(lambda: widget.is_editing, timeout=TIMEOUT_MS)
    copy = widget.layer
    assert copy is not ref["trees"] and copy.name == "ground truth trees edited"
    assert viewer.layers.index(copy) == viewer.layers.index(ref["trees"]) + 1
    np.testing.assert_array_equal(copy.data, before)
    assert copy.contour == REFERENCE_CONTOUR  # a copy of a reference looks like one
    assert "a copy of 'ground truth trees'" in widget.status_label.text()
    editor = widget.editor
    branch = next(b for b in editor.branches if len(b) >= 3)
    widget.selected = branch
    target = 1 if branch.tree != 1 else 2
    delta = widget.assign(target)
    assert delta is not None and delta.voxels.size
    np.testing.assert_array_equal(ref["trees"].data, before)  # the reference is untouched
    assert not np.array_equal(copy.data, before)
    widget.stop_editing()

    # Editing a reference itself takes an explicit tick.
    widget.layer_picker.value = ref["trees"]
    widget.in_place_checkbox.setChecked(True)
    assert widget.start_button.text() == "Start editing"
    n_layers = len(viewer.layers)
    assert widget.start_editing() is True
    qtbot.waitUntil(lambda: widget.is_editing, timeout=TIMEOUT_MS)
    assert widget.layer is ref["trees"] and len(viewer.layers) == n_layers
    widget.stop_editing()
    # ... once: an outline the user turned off stays off when another dock opens.
    ref["trees"].contour = 0
    qtbot.addWidget(MetricsWidget(viewer))
    assert ref["trees"].contour == 0


# ------------------------------------------------------------------------ metrics
def rows(widget):
    t = widget.table
    # a name without its unit ("HD95 (mm)" -> "HD95")
    t = t
    return {t.item(r, 0).text().split(" (")[0]: t.item(r, 1).text() for r in range(t.rowCount())}


@gui
def test_metrics_pairs_a_prediction_with_a_reference_and_computes_by_itself(
    make_napari_viewer, qtbot, volume
):
    viewer = make_napari_viewer()
    ref = add_reference(viewer, volume)
    viewer.add_image(volume.image, name="image", scale=SCALE)
    widget = MetricsWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.live_checkbox.isChecked()
    # Two references (mask and trees of the ground truth) are never paired: no
    # prediction yet, nothing computed, and the status says what to do.
    assert widget.prediction_picker.value is None
    assert widget.ground_truth_picker.value is not None
    qtbot.wait(500)  # past the debounce: nothing may start
    assert not widget.is_running and widget.table.rowCount() == 0

    pred = add_prediction(viewer, volume)
    # Segment's trees against a reference, computed without pressing Compute.
    assert widget.prediction_picker.value is pred["trees"]
    assert widget.ground_truth_picker.value in (ref["trees"], ref["mask"])
    qtbot.waitUntil(lambda: "Dice" in rows(widget), timeout=TIMEOUT_MS)
    assert float(rows(widget)["Dice"]) < 1.0  # a real comparison, not a layer with itself

    # The user's own pick is kept, and a new pair is computed at once too.
    widget.ground_truth_picker.value = ref["mask"]
    widget.prediction_picker.value = pred["mask"]
    qtbot.waitUntil(
        lambda: (
            not widget.is_running
            and widget._result is not None
            and widget._result["prediction"] == pred["mask"].name
        ),
        timeout=TIMEOUT_MS,
    )
    assert widget.ground_truth_picker.value is ref["mask"]
    assert "Dice" in rows(widget)

    # With Live off nothing starts by itself.
    widget.live_checkbox.setChecked(False)
    widget.prediction_picker.value = pred["trees"]
    qtbot.wait(500)
    assert not widget.is_running and widget.table.rowCount() == 0


@gui
def test_metrics_never_takes_an_intensity_image_for_the_ground_truth(
    make_napari_viewer, qtbot, volume
):
    # a newcomer's two-photon stack (uint8, 254 grey levels) was picked as the ground
    # truth and scored (Dice 0.04) with no warning
    viewer = make_napari_viewer()
    stack = (volume.image * 200 + 20).clip(0, 255).astype(np.uint8)
    image = viewer.add_image(stack, name="stack", scale=SCALE)
    add_prediction(viewer, volume)
    widget = MetricsWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.ground_truth_picker.value is None
    qtbot.wait(500)
    assert not widget.is_running and widget.table.rowCount() == 0
    widget.ground_truth_picker.value = image  # picked by hand: refused in one line
    assert not widget.compute()
    assert "intensity image" in widget.status_label.text()
    assert widget.table.rowCount() == 0
    ref = add_reference(viewer, volume)  # a real reference is taken at once
    assert widget.ground_truth_picker.value is image  # the user's own pick is kept...
    widget.ground_truth_picker.value = ref["mask"]  # ...until they change it
    qtbot.waitUntil(lambda: "Dice" in rows(widget), timeout=TIMEOUT_MS)


@gui
def test_show_errors_leaves_the_camera_alone(make_napari_viewer, qtbot, volume):
    viewer = make_napari_viewer()
    ref = add_reference(viewer, volume)
    pred = add_prediction(viewer, volume)
    widget = MetricsWidget(viewer)
    qtbot.addWidget(widget)
    widget.prediction_picker.value = pred["mask"]
    widget.ground_truth_picker.value = ref["mask"]
    viewer.dims.set_point(0, 0)
    camera = viewer.scene.camera
    center, zoom, point = tuple(camera.center), camera.zoom, tuple(viewer.dims.point)
    assert widget.show_errors() is True
    qtbot.waitUntil(lambda: widget._errors_worker is None, timeout=TIMEOUT_MS)
    assert f"{pred['mask'].name} missed centerline" in viewer.layers
    assert widget.errors_list.count() > 0
    assert tuple(camera.center) == center and camera.zoom == zoom
    assert tuple(viewer.dims.point) == point
    # Asked for (a click on an entry): the view goes there.
    widget.errors_list.itemClicked.emit(widget.errors_list.item(0))
    assert tuple(viewer.dims.point) != point or tuple(camera.center) != center


# ------------------------------------------------------------------------ 3D, paint
@gui
def test_3d_opens_oblique_and_hidden_plugin_labels_show_when_painted(
    make_napari_viewer, qtbot, volume
):
    """napari 0.9 fails painting a Labels layer added hidden in 3D ("Data is too large"
    from vispy, through the API only); a plugin Labels layer added hidden in 3D paints
    once the user shows it (and shows itself if a paint tool is picked on it while
    hidden, where napari allows that)."""
    from napari_topo.widgets._common import OBLIQUE_ANGLES

    viewer = make_napari_viewer()
    viewer.add_image(volume.image, name="image", scale=SCALE)
    widget = MetricsWidget(viewer)  # any dock installs the view defaults
    qtbot.addWidget(widget)
    viewer.dims.ndisplay = 3
    np.testing.assert_allclose(viewer.scene.camera.angles, OBLIQUE_ANGLES)
    viewer.scene.camera.angles = (10.0, 20.0, 30.0)  # the user's own angles are kept
    viewer.dims.ndisplay = 2
    viewer.dims.ndisplay = 3
    np.testing.assert_allclose(viewer.scene.camera.angles, (10.0, 20.0, 30.0))

    pred = add_prediction(viewer, volume)  # added while in 3D
    mask = pred["mask"]
    assert not mask.visible  # made hidden, as Segment makes it
    qtbot.wait(50)
    # Painting needs a paint tool, which napari does not give a hidden layer (the
    # painting that fails is only reachable through the API); shown, it paints.
    mask.mode = "paint"
    assert mask.mode == "pan_zoom" or mask.visible
    mask.visible = True
    mask.mode = "paint"
    mask.brush_size = 3
    mask.paint((16, 16, 16), 1)
    assert mask.data[16, 16, 16] == 1


@gui
def test_reference_outline_is_filled_in_3d_without_a_warning(make_napari_viewer, qtbot, volume):
    # napari draws no contour in 3D (the reference shows filled there, as the legend
    # says) and would warn on every 3D draw: no such warning reaches the user.
    import warnings

    viewer = make_napari_viewer()
    ref = add_reference(viewer, volume)["trees"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning, each time: none may pass
        qtbot.addWidget(MetricsWidget(viewer))  # the dock's own filter goes on top
        assert ref.contour == REFERENCE_CONTOUR
        viewer.dims.ndisplay = 3
        qtbot.wait(50)
        add_reference(viewer, volume)  # added in 3D
        qtbot.wait(50)
        viewer.dims.ndisplay = 2
        viewer.dims.ndisplay = 3
        qtbot.wait(50)
    assert not [w for w in caught if "Contours are not displayed" in str(w.message)]
    assert ref.contour == REFERENCE_CONTOUR


@gui
def test_a_region_mask_is_never_the_default_ground_truth_nor_trees(
    make_napari_viewer, qtbot, volume
):
    # A newcomer opened a CT and its liver mask (for Segment's Inside): the Metrics dock
    # took the liver as the ground truth (Live then scored the vessels against it) and
    # the Tree editor offered the liver with "Start editing a copy".
    viewer = make_napari_viewer()
    viewer.add_image(volume.image, name="image", scale=SCALE)
    liver = viewer.add_labels(np.ones(SHAPE, np.uint8), name="liver", scale=SCALE)
    metrics, editor = MetricsWidget(viewer), TreeEditorWidget(viewer)
    qtbot.addWidget(metrics)
    qtbot.addWidget(editor)
    assert metrics.ground_truth_picker.value is None
    assert editor.layer_picker.value is None and not editor.start_button.isEnabled()
    assert liver in editor.layer_picker.choices  # still there to pick by hand
    organ = viewer.add_labels(np.ones(SHAPE, np.uint8), name="liver_label", scale=SCALE)
    assert metrics.ground_truth_picker.value is None  # an organ's labels, by its name
    viewer.layers.remove(organ)

    pred = add_prediction(viewer, volume)
    assert editor.layer_picker.value is pred["trees"] and editor.start_button.isEnabled()
    assert metrics.prediction_picker.value is pred["trees"]
    assert metrics.ground_truth_picker.value is None
    qtbot.wait(500)  # past the debounce: nothing may start
    assert not metrics.is_running and metrics.table.rowCount() == 0

    # a layer named like a ground truth is taken, unless Segment ran inside it
    for layer in pred.values():
        layer.metadata["napari_topo"]["inside"] = "vessels"
    viewer.add_labels(volume.mask.astype(np.uint8), name="vessels", scale=SCALE)
    assert metrics.ground_truth_picker.value is None
    gt = viewer.add_labels(volume.mask.astype(np.uint8), name="liver_vessels", scale=SCALE)
    assert metrics.ground_truth_picker.value is gt  # vessels of an organ: a ground truth
    qtbot.waitUntil(lambda: "Dice" in rows(metrics), timeout=TIMEOUT_MS)
    # any layer can still be picked by hand
    metrics.ground_truth_picker.value = liver
    assert metrics.ground_truth_picker.value is liver


@gui
def test_an_organ_mask_named_only_segmentation_is_not_the_default_ground_truth(
    make_napari_viewer, qtbot, volume
):
    # LiTS ships each CT with "segmentation-N.nii" (1 liver, 2 tumour): named like a
    # mask ("seg"), it was taken as the vessel ground truth and Live scored the vessels
    # against the liver. Its shape (a region, not tubes) now keeps it out.
    viewer = make_napari_viewer()
    viewer.add_image(volume.image, name="volume-0", scale=SCALE)
    grid = np.indices(SHAPE).astype(float)
    liver = sum(((g - 15.5) * s / 13) ** 2 for g, s in zip(grid, SCALE, strict=True)) < 1
    organ = liver.astype(np.uint8)
    organ[14:18, 14:18, 14:18] = 2  # a tumour
    lits = viewer.add_labels(organ, name="segmentation-0", scale=SCALE)
    metrics = MetricsWidget(viewer)
    qtbot.addWidget(metrics)
    pred = add_prediction(viewer, volume)
    assert metrics.prediction_picker.value is pred["trees"]
    assert metrics.ground_truth_picker.value is None
    assert lits in metrics.ground_truth_picker.choices  # still there to pick by hand
    qtbot.wait(500)  # past the debounce: the status says why the picker is empty
    assert "'segmentation-0' looks like an organ" in metrics.status_label.text()
    # a pyramid downsampled in y and x only is measured on its own voxel size
    viewer.layers.remove(lits)
    big = np.repeat(np.repeat(organ, 4, axis=1), 4, axis=2)
    pyramid = [big, big[:, ::4, ::4]]
    lits = viewer.add_labels(pyramid, name="segmentation-0", scale=(2.0, 0.25, 0.25))
    assert lits.multiscale and metrics.ground_truth_picker.value is None
    # a vessel annotation with the same kind of name is taken
    gt = viewer.add_labels(volume.mask.astype(np.uint8), name="segmentation-1", scale=SCALE)
    assert metrics.ground_truth_picker.value is gt
    qtbot.waitUntil(lambda: "Dice" in rows(metrics), timeout=TIMEOUT_MS)
    # a layer named for vessels outranks a generic name, and an empty layer comes last
    viewer.layers.remove(gt)
    viewer.add_labels(np.zeros(SHAPE, np.uint8), name="Labels", scale=SCALE)  # napari's new
    assert metrics.ground_truth_picker.value.name == "Labels"  # the only candidate
    gt = viewer.add_labels(volume.mask.astype(np.uint8), name="vessels", scale=SCALE)
    assert metrics.ground_truth_picker.value is gt
    viewer.layers.remove("Labels")
    mask = viewer.add_labels(volume.mask.astype(np.uint8), name="mask", scale=SCALE)
    assert metrics.ground_truth_picker.value is gt and mask is not gt
    tip = metrics.ground_truth_picker.native.toolTip()
    assert "'segmentation-0' looks like" in tip and tip.startswith("Reference segmentation")
    # a name that says ground truth outright is trusted whatever the shape
    viewer.layers.remove(gt)
    named = viewer.add_labels(organ, name="ground truth", scale=SCALE)
    assert metrics.ground_truth_picker.value is named


def test_voxel_size_unstated_is_one_rule_for_both_docks():
    """Segment and Fine-tune say "voxel size is not stated" on the same condition: a
    scale of 1 along every axis (either sign, as a mirrored display has) and no unit."""
    from napari_topo.widgets._common import voxel_size_unstated

    assert voxel_size_unstated((1, 1, 1), None)
    assert voxel_size_unstated((1.0, -1.0, 1.0), None)
    assert not voxel_size_unstated((1, 1, 1), "um")  # a unit states it
    assert not voxel_size_unstated((5.0, 1.0, 1.0), None)  # a scale states it
    assert not voxel_size_unstated((), None) and not voxel_size_unstated(None, None)
