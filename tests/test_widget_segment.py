"""GUI tests of the "Segment vessels" dock widget (napari_topo.widgets.segment).

They drive the widget as a user would: add an image, pick choices, press Run, wait for
the worker, look at the layers. The volumes are small synthetic crops with full ground
truth, so a CPU run with the shipped models takes a second or two. Run under Xvfb
(pytest-xvfb starts it automatically).

Run as a script to regenerate the screenshot used in the docs:
    xvfb-run -a python tests/test_widget_segment.py docs/images/segment_widget.png
"""

from __future__ import annotations

import functools
import shutil
import threading
import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

import _segment_dock as _dock  # noqa: E402
from napari.layers import Image, Labels, Layer, Points, Shapes  # noqa: E402
from napari.utils.colormaps import DirectLabelColormap  # noqa: E402
from napari.utils.notifications import NotificationSeverity, notification_manager  # noqa: E402
from qtpy.QtCore import QTimer  # noqa: E402

from napari_topo import layers as L  # noqa: E402
from napari_topo.analysis import VesselAnalysis  # noqa: E402
from napari_topo.data.synthetic import make_vessel_volume  # noqa: E402
from napari_topo.inference.device import available_devices  # noqa: E402
from napari_topo.models.registry import ModelCard, get_card  # noqa: E402
from napari_topo.widgets.segment import (  # noqa: E402
    CPU_NOTE,
    INPUT_NOTE,
    SegmentWidget,
    model_tooltip,
    sources_in_voxels,
)

TIMEOUT_MS = 60_000
SCALE = (2.0, 2.0, 2.0)  # isotropic, so the pipeline does not resample
TRANSLATE = (10.0, -4.0, 6.0)
KINDS = ("probability", "mask", "skeleton", "trees", "branches", "centerline")
TYPES = {
    "probability": Image,
    "mask": Labels,
    "skeleton": Labels,
    "trees": Labels,
    "branches": Shapes,
    "centerline": Points,
}

gui = pytest.mark.gui


# ------------------------------------------------------------------------------ helpers


@functools.cache
def vessels(size: int = 48, seed: int = 3):
    return make_vessel_volume(shape=(size,) * 3, seed=seed)


def add_vessels(viewer, name: str = "vessel"):
    return viewer.add_image(vessels().image, name=name, scale=SCALE, translate=TRANSLATE)


def make_widget(viewer, qtbot, *, model: str = "unet-dice", tile: int = 48) -> SegmentWidget:
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget)
    widget.model_picker.value = model
    widget.device_picker.value = "cpu"
    widget.tile_box.value = tile
    return widget


def run_and_wait(qtbot, widget: SegmentWidget, click: bool = True) -> str:
    """Press Run (or call run()) and wait for the ``finished`` signal; its state."""
    return _dock.run_and_wait(qtbot, widget, TIMEOUT_MS, click=click)


def ours(viewer, source: str = "vessel") -> dict:
    """Our layers for ``source`` by kind (found by metadata, not by name)."""
    return _dock.ours(viewer, source)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def new_errors(start: int) -> list[str]:
    return [
        n.message
        for n in notification_manager.records[start:]
        if n.severity == NotificationSeverity.ERROR
    ]


# ------------------------------------------------------------------------------ Qt-free


def test_roots_off_the_mask_sentence():
    from types import SimpleNamespace

    from napari_topo.widgets.segment import _roots_off_the_mask

    mask = np.zeros((16, 24, 40), bool)
    mask[7:10, 7:10, 4:36] = True  # one tube along x
    on, off1, off2 = [8.0, 8.0, 20.0], [8.0, 20.0, 10.0], [1.0, 1.0, 30.0]
    a = VesselAnalysis.from_outputs({"vessel": mask}, sources=[on, off1], spacing=(1, 1, 1))
    job = SimpleNamespace(sources=np.array([on, off1]), spacing=(1.0, 1.0, 1.0), unit="um")
    moved = a.root_placement(job.sources)[1]["moved"]
    assert _roots_off_the_mask(job, a) == (
        "Root 2 lies off the vessel mask: its tree grew from the nearest centerline point, "
        f"{moved:.1f} um away. Check the root, or its vessel was missed."
    )
    b = VesselAnalysis.from_outputs({"vessel": mask}, sources=[off1, on, off2])
    job = SimpleNamespace(sources=np.array([off1, on, off2]), spacing=None, unit=None)
    d = [r["moved"] for r in b.root_placement(job.sources)]
    text = _roots_off_the_mask(job, b)
    assert text.startswith("Roots 1, 3 lie off the vessel mask: their trees grew")
    assert f"points, {d[0]:.1f} and {d[2]:.1f} voxels away." in text
    job = SimpleNamespace(sources=np.array([on]), spacing=None, unit=None)
    c = VesselAnalysis.from_outputs({"vessel": mask}, sources=[on])
    assert _roots_off_the_mask(job, c) is None
    assert _roots_off_the_mask(SimpleNamespace(sources=None), c) is None


def test_the_status_says_what_the_sheet_filter_dropped():
    # a newcomer's tube lying on a plate went with it, and the dock said "Lower the
    # Threshold": the status now names the sheet filter and how to turn it off
    from types import SimpleNamespace

    from napari_topo.widgets.segment import _empty_result_message, _sheets_sentence

    empty = np.zeros((8, 8, 8), bool)
    a = VesselAnalysis.from_outputs({"vessel": empty})
    job = SimpleNamespace(threshold=0.5, image="tp")
    assert _sheets_sentence(a) == ""
    assert _empty_result_message(job, a).startswith("Nothing found above threshold 0.5")
    a.sheets_dropped, a.sheets_share = 1, 1.0
    assert _sheets_sentence(a) == "the sheet filter dropped 1 sheet-like piece (100 % of the mask)."
    text = _empty_result_message(job, a)
    assert text.startswith("Nothing left in 'tp': the sheet filter dropped 1 sheet-like piece")
    assert "Untick 'drop sheet-like pieces' under Input" in text and "Threshold" not in text
    a.sheets_dropped, a.sheets_share = 3, 0.25
    assert _sheets_sentence(a) == "the sheet filter dropped 3 sheet-like pieces (25 % of the mask)."


def test_empty_result_messages_offer_the_models_own_threshold():
    # a fine-tuned model cuts at its own threshold (0.2 here): the messages said "0.5 is
    # the default", which sent the user back to a cut the model was never meant for
    from types import SimpleNamespace

    from napari_topo.widgets.segment import _empty_result_message

    empty = VesselAnalysis.from_outputs({"vessel": np.zeros((8, 8, 8), bool)})
    tuned = SimpleNamespace(threshold=0.6, image="tp", model_threshold=0.2)
    text = _empty_result_message(tuned, empty)
    assert text.startswith("Nothing found above threshold 0.6 in 'tp'")
    assert "Lower the Threshold (0.2 is the model's default)" in text and "0.5" not in text
    crowded = SimpleNamespace(mask=np.ones((8, 8, 8), bool), points=np.zeros((0, 3)))
    text = _empty_result_message(replace_threshold(tuned, 0.05), crowded)
    assert "Raise the Threshold (0.2 is the model's default)." in text
    # a model the dock could not read a card for: no default is named
    unknown = SimpleNamespace(threshold=0.5, image="tp")
    assert "Lower the Threshold or check" in _empty_result_message(unknown, empty)


def replace_threshold(job, threshold):
    from types import SimpleNamespace

    return SimpleNamespace(**{**vars(job), "threshold": threshold})


def test_the_status_says_what_the_vessel_range_dropped():
    # a newcomer could not tell from the dock how much of a CT's mask the range removed
    # (the CLI said 78 %)
    from types import SimpleNamespace

    from napari_topo.widgets.segment import _empty_result_message, _range_sentence

    a = VesselAnalysis.from_outputs({"vessel": np.zeros((8, 8, 8), bool)})
    a.input_policy = SimpleNamespace(intensity=SimpleNamespace(modality="ct"))
    assert _range_sentence(a) == ""  # no range applied
    a.vessel_range, a.pieces_dropped, a.dropped_share = (100.0, 300.0), 2223, 0.78
    assert _range_sentence(a) == (
        "the vessel range 100..300 HU dropped 2223 pieces of the mask (78 % of its voxels) "
        "whose median lies outside it."
    )
    a.dropped_share = 1.0
    text = _empty_result_message(SimpleNamespace(threshold=0.5, image="ct"), a)
    assert text.startswith("Nothing left in 'ct': the vessel range 100..300 HU dropped")
    assert "Set 'Vessel range' under Input to off" in text


def test_model_tooltip_has_summary_and_test_scores():
    card = get_card("unet-dice")
    text = model_tooltip(card)
    assert text.startswith(f"unet-dice: {card.summary}")
    dice_mean = card.metrics["test"]["summary"]["Dice"]["mean"]
    cl_mean = card.metrics["test"]["summary"]["clDice"]["mean"]
    assert f"Dice {dice_mean:.3f}" in text and f"clDice {cl_mean:.3f}" in text
    # what the model is fed and how its mask is cut; not the file facts
    assert "windowed to -100..300 HU" in text and "pieces under 32 voxels dropped" in text
    assert card.sha256 not in text and "recipe" not in text
    bare = ModelCard(name="bare", architecture="unet3d", summary="no metrics")
    assert model_tooltip(bare).splitlines()[0] == "bare: no metrics"
    assert "test (" not in model_tooltip(bare)
    odd = ModelCard(name="odd", architecture="unet3d", metrics={"test": {"summary": "x"}})
    assert model_tooltip(odd).splitlines()[0] == "odd" and "test (" not in model_tooltip(odd)


# ------------------------------------------------------------------------------ GUI


@gui
def test_pickers_devices_and_model_tooltips(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.image_picker.choices == ()
    assert widget.sources_picker.choices == (None,)  # "none"
    assert widget.sources_picker.native.itemText(0) == "none"
    assert widget.status_label.text() == "Pick a 3D image and press Run."

    flat = viewer.add_image(np.zeros((16, 16), np.float32), name="flat")
    vol = viewer.add_image(np.zeros((16, 16, 16), np.float32), name="vol")
    # the idle prompt follows the pick (a newcomer read "Pick a 3D image" with one picked)
    assert widget.status_label.text() == "Press Run to segment 'vol'."
    late = SegmentWidget(viewer)  # a dock opened with the image already there
    qtbot.addWidget(late)
    assert late.status_label.text() == "Press Run to segment 'vol'."
    pts = viewer.add_points(np.zeros((1, 3)), name="roots")
    viewer.add_labels(np.zeros((16, 16, 16), np.uint8), name="labels")
    assert [c.name for c in widget.image_picker.choices] == ["flat", "vol"]
    assert widget.image_picker.value is vol  # a 3D image is the default
    assert [getattr(c, "name", None) for c in widget.sources_picker.choices] == [None, "roots"]
    widget.sources_picker.value = pts
    viewer.layers.remove(flat)
    assert [c.name for c in widget.image_picker.choices] == ["vol"]
    assert widget.sources_picker.value is pts  # selection kept
    viewer.layers.remove(pts)
    assert widget.sources_picker.value is None

    # Devices: only what this machine has; a note when the run will be on the CPU.
    assert list(widget.device_picker.choices) == available_devices()
    assert widget.device_picker.value == "auto"
    import torch

    if not torch.cuda.is_available():
        assert list(widget.device_picker.choices) == ["auto", "cpu"]
        assert widget.device_note.isVisibleTo(widget)
        assert widget.device_note.text() == CPU_NOTE
    widget.device_picker.value = "cpu"
    assert widget.device_note.isVisibleTo(widget)

    # Models come from the registry, each with its card's tooltip.
    combo = widget.model_picker.native
    from qtpy.QtCore import Qt

    names = [combo.itemText(i) for i in range(combo.count())]
    assert {"unet-dice", "topnet"} <= set(names)
    for i, name in enumerate(names):
        assert combo.itemData(i, Qt.ItemDataRole.ToolTipRole) == model_tooltip(get_card(name))
    widget.model_picker.value = "topnet"
    assert widget.model_picker.tooltip == model_tooltip(get_card("topnet"))


@gui
def test_sources_in_voxels_uses_both_layers_transforms(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((10, 20, 30)), scale=(2, 1, 0.5), translate=(4, 0, 1))
    # Points with their own transform: world = data * (1, 2, 2) + (0, 0, 0).
    pts = viewer.add_points([[8.0, 5.0, 3.0], [4.0, 0.0, 0.5]], scale=(1, 2, 2))
    vox = sources_in_voxels(pts, image, (10, 20, 30))
    np.testing.assert_allclose(vox, [[2.0, 10.0, 10.0], [0.0, 0.0, 0.0]])
    assert sources_in_voxels(None, image, (10, 20, 30)) is None
    outside = viewer.add_points([[100.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="outside image"):
        sources_in_voxels(outside, image, (10, 20, 30))
    flat = viewer.add_points([[1.0, 1.0]])
    with pytest.raises(ValueError, match="2D"):
        sources_in_voxels(flat, image, (10, 20, 30))


@gui
def test_run_adds_layers_on_the_image(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = add_vessels(viewer)
    widget = make_widget(viewer, qtbot, model="unet-dice", tile=32)
    assert widget.image_picker.value is image
    assert widget.last_analysis is None
    start = len(notification_manager.records)

    # The dock's own progress bar shows while the run goes and goes away after it.
    seen_bar = []
    widget.progress_bar.valueChanged.connect(
        lambda _v: seen_bar.append(not widget.progress_bar.isHidden())
    )
    t0 = time.perf_counter()
    state = run_and_wait(qtbot, widget)
    wall = time.perf_counter() - t0
    assert state == "done", widget.status_label.text()
    assert seen_bar and all(seen_bar) and widget.progress_bar.isHidden()
    assert not widget.is_running and widget.run_button.isEnabled()
    assert not widget.cancel_button.isEnabled()
    assert new_errors(start) == []

    layers = ours(viewer)
    assert set(layers) == set(KINDS)
    assert len(viewer.layers) == 1 + len(KINDS)
    analysis = widget.last_analysis
    assert isinstance(analysis, VesselAnalysis)
    for kind, layer in layers.items():
        assert isinstance(layer, TYPES[kind]), kind
        assert layer.name == f"vessel {kind}"
        np.testing.assert_allclose(layer.scale, SCALE)
        np.testing.assert_allclose(layer.translate, TRANSLATE)
        info = layer.metadata["napari_topo"]
        assert info["analysis"] is analysis
        assert info["model"] == "unet-dice"
    assert isinstance(layers["trees"].colormap, DirectLabelColormap)
    # the branch morphometry rides on the branches layer (napari's features table)
    feats = layers["branches"].features
    assert {"length", "tortuosity", "radius_mean", "generation"} <= set(feats.columns)
    assert len(feats) == len(layers["branches"].data) and (feats["length"] > 0).all()
    assert analysis.spacing == SCALE  # the image's scale is the physical spacing
    np.testing.assert_array_equal(layers["trees"].data, analysis.trees)
    # A real segmentation: the mask overlaps the generator's ground truth.
    assert dice(layers["mask"].data, vessels().mask) > 0.6
    assert analysis.result.n_trees >= 1
    status = widget.status_label.text()
    assert status.startswith("Segmented 'vessel' with unet-dice") and "tree" in status
    assert " at threshold 0.5 in " in status  # a newcomer re-ran at another threshold
    # where and in what arithmetic the network ran ('auto': bfloat16 where the CPU has it)
    assert f"(cpu, {analysis.compute['precision']})" in status
    # the time from Run to the layers on screen (not the worker's part of it)
    said = float(status.split(" in ")[1].split(" s")[0])
    assert 0.8 * widget.elapsed <= said <= wall + 0.05
    # Layer defaults: the image and the trees show, the rest is there but hidden; the
    # trees are the active layer, in the smallest dtype; every layer names its axes.
    assert {k for k, layer in layers.items() if layer.visible} == {"trees"}
    assert image.visible and viewer.layers.selection.active is layers["trees"]
    assert layers["trees"].data.dtype == np.uint8
    for layer in layers.values():
        assert tuple(layer.axis_labels) == ("z", "y", "x")
    # centerline markers are half the vessel's width (radius in voxels of the last axis)
    centerline = layers["centerline"]
    np.testing.assert_allclose(
        centerline.size, np.maximum(analysis.radius / SCALE[-1], 0.5), rtol=1e-6
    )
    assert (centerline.size <= 2 * analysis.radius / SCALE[-1] + 1e-6).all()
    # a legend of the tree colours under the status
    # (each swatch the trees layer's own colour; the ground truth's outline colour too)
    assert not widget.legend_label.isHidden()
    legend = widget.legend_label.text()
    assert legend.startswith("Trees:")
    # where the branch measures are, on hover (a menu of this napari's)
    assert "Layers > Metadata > Features table widget" in widget.legend_label.toolTip()
    trees = layers["trees"]
    for k in range(1, min(analysis.result.n_trees, 12) + 1):
        rgb = trees.colormap.map(np.array([k]))[0][:3]
        assert f"color:#{''.join(f'{round(255 * v):02x}' for v in rgb)}" in legend.lower()
    # no ground truth open: the legend does not name one (a newcomer was puzzled)
    assert "Ground truth" not in legend and trees.contour == 0
    reference = viewer.add_layer(
        Layer.create(*L.trees_layer(vessels().trees, name="truth", palette="reference"))
    )
    widget._show_legend(analysis)  # as after a run with a reference open
    legend = widget.legend_label.text()
    ref = L.tree_colors(1, "reference")[0][:3]
    assert f"color:#{''.join(f'{round(255 * v):02x}' for v in ref)}" in legend.lower()
    assert "Ground truth" in legend and "outlines" in legend
    viewer.layers.remove(reference)
    # What the pipeline chose for the input is shown, with the reasons as a tooltip, and
    # kept with the layers.
    policy = analysis.input_policy
    assert widget.input_label.text() == f"Input: {policy.describe()}"
    assert widget.input_label.text().startswith("Input: microscopy/other (detected) percentiles")
    assert "skewness" in widget.input_label.toolTip()
    assert layers["trees"].metadata["napari_topo"]["input_policy"] == policy.to_dict()


@gui
def test_layers_are_added_one_per_event_loop_turn_all_or_none(
    make_napari_viewer, qtbot, monkeypatch
):
    # The end of a run adds its layers one per event-loop turn (no single long stall)
    # and says it is done only once the last is in; if napari refuses one midway, the
    # ones already added go again: nothing changed.
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer()
    image = add_vessels(viewer)
    widget = make_widget(viewer, qtbot)
    turns: list[int] = []  # layers in the viewer at each inserted event
    seen = {"loops": 0}
    ticker = QTimer()
    ticker.timeout.connect(lambda: seen.__setitem__("loops", seen["loops"] + 1))
    ticker.start(0)
    viewer.layers.events.inserted.connect(lambda e: turns.append(seen["loops"]))
    try:
        assert run_and_wait(qtbot, widget) == "done"
    finally:
        ticker.stop()
    assert len(ours(viewer)) == len(turns) == 6
    assert len(set(turns)) == len(turns), turns  # never two adds in one turn
    assert widget.status_label.text().startswith("Segmented 'vessel'")

    viewer.layers.clear()
    image = add_vessels(viewer)
    real_insert = type(viewer.layers).insert
    calls = {"n": 0}

    def insert_failing_third(self, index, value):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("napari refused it")
        return real_insert(self, index, value)

    monkeypatch.setattr(type(viewer.layers), "insert", insert_failing_third)
    assert run_and_wait(qtbot, widget) == "error"
    assert list(viewer.layers) == [image]  # the two added first were taken out again
    assert "adding the result layers failed" in widget.status_label.text()
    assert "napari refused it" in widget.status_label.text()
    assert widget.run_button.isEnabled() and not widget.is_running
    QApplication.processEvents()


@gui
def test_input_section_collects_the_policy_choices(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = add_vessels(viewer)
    widget = make_widget(viewer, qtbot)
    assert not widget.input_section.isExpanded()  # compact until opened
    assert widget.input_label.text() == INPUT_NOTE
    assert widget.input_choices() == {
        "modality": "auto",
        "polarity": "auto",
        "window": None,
        "vessel_range": "auto",
        "sheets": "drop",
        "zoom": "auto",
    }
    assert widget.zoom_box.native.text() == "auto"
    assert not widget.window_low.enabled and not widget.window_high.enabled
    assert not widget.range_low.enabled and not widget.range_high.enabled
    widget.modality_picker.value = "ct"
    widget.polarity_picker.value = "dark"
    widget.window_check.value = True
    assert widget.window_low.enabled and widget.window_high.enabled
    widget.window_low.value, widget.window_high.value = -50.0, 250.0
    widget.range_mode.value = "custom"  # the CLI's --vessel-range LOW HIGH
    assert widget.range_low.enabled and widget.range_high.enabled
    widget.zoom_box.value = 0.5
    widget.sheets_check.value = False  # the CLI's --sheets keep
    job, _ = widget._make_job(image)
    assert (job.modality, job.polarity, job.window, job.vessel_range, job.zoom, job.sheets) == (
        "ct",
        "dark",
        (-50.0, 250.0),
        (100.0, 300.0),
        0.5,
        "keep",
    )
    widget.zoom_box.value = 0.0
    assert widget.input_choices()["zoom"] == "auto"
    # an image added without a scale says so when it is segmented, as the CLI does
    from napari_topo.widgets.segment import _no_voxel_size_sentence

    assert _no_voxel_size_sentence(job) == ""  # scaled
    bare = viewer.add_image(np.asarray(image.data), name="bare")
    said = _no_voxel_size_sentence(widget._make_job(bare)[0])
    assert "voxel size is not stated" in said and "Set voxel size" in said
    # ... and the Input section sets it, for a user with napari alone (a two-photon
    # newcomer's TIFF states none: 5 um z steps read as 1 um)
    widget.image_picker.value = bare
    assert [b.value for b in widget.voxel_boxes] == [1.0, 1.0, 1.0]
    assert widget.voxel_unit.value == "none" and widget.voxel_unit.enabled
    # layers on its grid follow it (a newcomer's corrections layer stayed at 1 x 1 x 1,
    # its slice k drawn over the image's slice k / 5); others stay as they are
    shape = bare.data.shape
    painted = viewer.add_labels(np.zeros(shape, np.uint8), name="corrections")
    flipped = viewer.add_labels(np.zeros(shape, np.uint8), name="flipped", scale=(1, -1, 1))
    moved = viewer.add_labels(np.zeros(shape, np.uint8), name="moved", translate=(3, 0, 0))
    smaller = viewer.add_labels(np.zeros((2, *shape[1:]), np.uint8), name="smaller")
    for box, value in zip(widget.voxel_boxes, (5.0, 0.994, 0.994), strict=True):
        box.value = value
    widget.voxel_unit.value = "um"
    widget.voxel_button.native.click()
    assert np.allclose(bare.scale, (5.0, 0.994, 0.994))
    from napari_topo.geometry import layer_length_unit

    assert layer_length_unit(bare) == "um"
    assert "now has voxels of 5 x 0.994 x 0.994 um (z, y, x)" in widget.status_label.text()
    assert np.allclose(painted.scale, (5.0, 0.994, 0.994))
    assert np.allclose(flipped.scale, (5.0, -0.994, 0.994))  # its mirroring kept
    if hasattr(painted, "units"):
        assert layer_length_unit(painted) == "um"
    assert np.allclose(moved.scale, 1) and np.allclose(smaller.scale, 1)
    assert "So do the layers on its grid: 'corrections', 'flipped'." in (widget.status_label.text())
    for layer in (painted, flipped, moved, smaller):
        viewer.layers.remove(layer)
    job = widget._make_job(bare)[0]
    assert job.spacing == (5.0, 0.994, 0.994) and job.unit == "um"
    assert _no_voxel_size_sentence(job) == ""
    widget.image_picker.value = image  # the boxes follow the picked image
    assert np.allclose([b.value for b in widget.voxel_boxes], np.abs(image.scale))
    # a size the boxes round is kept exact unless edited; a size of 0 cannot be typed
    # (review: 0.12345 came back as 0.1235, and 0 raised napari's singular matrix)
    odd = viewer.add_image(np.asarray(image.data), name="odd", scale=(2.0, 1.23456789, 0.5))
    widget.image_picker.value = odd
    widget.voxel_boxes[0].value = 3.0
    assert widget.set_voxel_size()
    assert np.allclose(odd.scale, (3.0, 1.23456789, 0.5), rtol=1e-12, atol=0)
    widget.voxel_boxes[1].native.setValue(0.0)  # typed 0: Qt keeps the boxes above it
    assert widget.voxel_boxes[1].value > 0
    # a scale a script changed since the boxes were filled is kept where left as shown
    widget.image_picker.value = bare
    widget.image_picker.value = odd
    odd.scale = (3.0, 1.23456789, 0.25)
    widget.voxel_boxes[0].value = 4.0
    assert widget.set_voxel_size()
    assert np.allclose(odd.scale, (4.0, 1.23456789, 0.25), rtol=1e-12, atol=0)
    # units a script set, mixed, are left alone ("none" never wipes them)
    odd.units = ("um", "nm", "nm")
    widget.image_picker.value = bare
    widget.image_picker.value = odd
    assert widget.voxel_unit.value == "none" and not widget.voxel_unit.enabled
    widget.voxel_boxes[1].value = 2.0
    assert widget.set_voxel_size()
    assert [str(u) for u in odd.units] == ["micrometer", "nanometer", "nanometer"]
    # the modality a DICOM series states (the reader's metadata) reaches the pipeline
    assert job.header_hint is None
    image.metadata["modality"] = "CT"
    assert widget._make_job(image)[0].header_hint == "ct"


@gui
def test_ticking_window_starts_from_the_picked_images_own_range(make_napari_viewer, qtbot):
    """A microscopy user who ticks Window sees the range Run's automatic scaling uses
    for their image (its 0.5..99.5 percentiles), not the CT's -100..300 HU; a CT picked
    next gets its HU window; values the user typed are never replaced."""
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    stack = rng.normal(1000.0, 200.0, (16, 32, 32)).astype(np.float32)  # photon counts
    stack[:, 14:18, 14:18] += 2000.0
    two_photon = viewer.add_image(stack, name="stack")
    ct = np.full((16, 32, 32), -1000, np.int16)  # air around soft tissue, a bright vessel
    ct[:, 4:28, 4:28] = 60
    ct[:, 14:18, 14:18] = 200
    ct_layer = viewer.add_image(ct, name="ct")
    widget = make_widget(viewer, qtbot)
    widget.image_picker.value = two_photon
    assert widget._window_values() == (-100.0, 300.0)  # greyed until ticked
    widget.window_check.value = True
    lo, hi = np.percentile(stack, [0.5, 99.5])
    assert widget._window_values() == pytest.approx((lo, hi), abs=1e-3)
    assert widget.input_choices()["window"] == pytest.approx((lo, hi), abs=1e-3)
    widget.image_picker.value = ct_layer  # ticked and as filled in: follows the image
    assert widget._window_values() == (-100.0, 300.0)
    widget.window_check.value = False
    widget.image_picker.value = two_photon
    widget.window_check.value = True
    assert widget._window_values() == pytest.approx((lo, hi), abs=1e-3)
    widget.window_check.value = False
    widget.image_picker.value = ct_layer
    widget.window_check.value = True
    assert widget._window_values() == (-100.0, 300.0)
    widget.window_low.value = -50.0  # typed: kept from now on
    widget.window_check.value = False
    widget.image_picker.value = two_photon
    widget.window_check.value = True
    assert widget._window_values() == (-50.0, 300.0)
    # a constant image has no range to offer: the boxes stay as they are
    flat = viewer.add_image(np.ones((8, 8, 8), np.float32), name="flat")
    widget.image_picker.value = flat
    assert widget.auto_window() is None
    # nor do ranges the boxes cannot hold (review: counts of 5e6 raised; values of 1e-5 gave 0..0)
    widget.window_check.value = False
    widget.window_low.value = -100.0
    widget.window_check.value = True  # the last filled-in values are the CT's again
    for name, scale in (("bright", 5e3), ("faint", 1e-8)):
        layer = viewer.add_image(stack * scale, name=name)
        before = widget._window_values()
        widget.image_picker.value = layer
        assert widget.auto_window() is not None
        assert widget._window_values() == before


@gui
def test_input_choices_reach_the_pipeline(make_napari_viewer, qtbot, monkeypatch):
    from napari_topo.inference import pipeline

    viewer = make_napari_viewer()
    image = add_vessels(viewer)
    image.units = "um"  # napari's own units: the Input line gives the voxel size in them
    widget = make_widget(viewer, qtbot)
    calls = []
    real = pipeline.segment

    def recording_segment(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "segment", recording_segment)
    widget.polarity_picker.value = "bright"
    widget.window_check.value = True
    widget.window_low.value, widget.window_high.value = 0.0, 1.0
    widget.zoom_box.value = 1.0
    widget.sheets_check.value = False
    assert run_and_wait(qtbot, widget) == "done", widget.status_label.text()
    kw = calls[0]
    assert (kw["modality"], kw["polarity"], kw["window"], kw["zoom"], kw["sheets"]) == (
        "auto",
        "bright",
        (0.0, 1.0),
        1.0,
        "keep",
    )
    text = widget.input_label.text()
    assert "window 0..1 (chosen)" in text and "bright vessels (chosen)" in text
    assert "zoom 1 (chosen)" in text
    sizes = sorted({f"{abs(v):.3g}" for v in image.scale})
    assert len(sizes) == 1 and text.endswith(f", voxels {sizes[0]} um"), text
    # a bad window comes back as the core's one-line message
    widget.window_low.value, widget.window_high.value = 1.0, 0.0
    start = len(notification_manager.records)
    assert run_and_wait(qtbot, widget) == "error"
    assert any("window low must be below high" in m for m in new_errors(start))


@gui
def test_topnet_with_source_points(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = add_vessels(viewer)
    truth = vessels()
    # The generator's roots, in world coordinates of the image.
    world = np.asarray(truth.sources) * np.asarray(SCALE) + np.asarray(TRANSLATE)
    roots = viewer.add_points(world, name="roots")
    widget = make_widget(viewer, qtbot, model="topnet", tile=48)
    widget.image_picker.value = image
    widget.sources_picker.value = roots

    assert run_and_wait(qtbot, widget, click=False) == "done", widget.status_label.text()
    analysis = widget.last_analysis
    assert analysis.method == "embedding-skeleton"
    assert analysis.result.n_trees == len(truth.sources)
    # Each root was snapped to a centerline point near the given one (voxels).
    root_points = analysis.points[analysis.result.sources]
    assert np.linalg.norm(root_points - truth.sources, axis=1).max() < 6
    centerline = ours(viewer)["centerline"]
    assert isinstance(centerline, Points)
    assert {"radius", "tree"} <= set(centerline.features.columns)
    np.testing.assert_allclose(centerline.features["radius"], analysis.radius)
    np.testing.assert_array_equal(centerline.features["tree"], analysis.result.labels)
    assert set(np.unique(centerline.features["tree"])) <= {0, 1, 2}
    # Marker diameter is the radius (half the vessel width) over the x scale.
    np.testing.assert_allclose(
        centerline.size, np.maximum(analysis.radius / SCALE[-1], 0.5), rtol=1e-6
    )
    assert dice(ours(viewer)["mask"].data, truth.mask) > 0.6
    assert roots.data.shape == (2, 3)  # the user's points are untouched
    np.testing.assert_array_equal(roots.data, world)


@gui
def test_a_root_off_every_vessel_is_reported(make_napari_viewer, qtbot):
    """A root clicked in empty background: the status says which, how far it moved, and warns."""
    viewer = make_napari_viewer()
    image = add_vessels(viewer)
    truth = vessels()
    corner = np.array([truth.shape[0] - 1, 0, truth.shape[2] - 1])
    assert not truth.mask[tuple(corner)]
    voxels = np.array([truth.sources[0], corner], dtype=float)
    roots = viewer.add_points(voxels * np.asarray(SCALE) + np.asarray(TRANSLATE), name="roots")
    widget = make_widget(viewer, qtbot, tile=48)
    widget.image_picker.value = image
    widget.sources_picker.value = roots
    start = len(notification_manager.records)
    assert run_and_wait(qtbot, widget, click=False) == "done", widget.status_label.text()
    placement = widget.last_analysis.root_placement(voxels)
    assert placement[0]["in_mask"] and not placement[1]["in_mask"]
    text = widget.status_label.text()
    assert "Root 2 lies off the vessel mask" in text and "Root 1" not in text
    assert f"centerline point, {placement[1]['moved']:.1f} scale units away" in text
    warned = [
        n.message
        for n in notification_manager.records[start:]
        if n.severity == NotificationSeverity.WARNING
    ]
    assert any("Root 2 lies off" in m for m in warned), warned


@gui
def test_rerun_replaces_our_layers_only(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    add_vessels(viewer)
    # The user already has a layer called like one of ours.
    mine = viewer.add_labels(np.ones((4, 4, 4), np.uint8), name="vessel trees")
    widget = make_widget(viewer, qtbot, tile=32)

    assert run_and_wait(qtbot, widget) == "done"
    first = ours(viewer)
    first_analysis = widget.last_analysis
    names = [layer.name for layer in viewer.layers]
    assert first["trees"] is not mine and first["trees"].name != "vessel trees"
    assert names.count("vessel trees") == 1
    first["trees"].visible = False  # a setting the user changed on our layer

    widget.threshold_box.value = 0.8
    assert run_and_wait(qtbot, widget) == "done"
    second = ours(viewer)
    analysis = widget.last_analysis
    assert analysis is not first_analysis and analysis.threshold == pytest.approx(0.8)
    assert [layer.name for layer in viewer.layers] == names  # same layers, same order
    for kind in KINDS:
        assert second[kind].metadata["napari_topo"]["analysis"] is analysis
    # Image and Labels layers are updated in place.
    for kind in ("probability", "mask", "skeleton", "trees"):
        assert second[kind] is first[kind]
    assert second["trees"].visible is False
    np.testing.assert_array_equal(second["mask"].data, analysis.mask)
    np.testing.assert_array_equal(second["trees"].data, analysis.trees)
    assert isinstance(second["trees"].colormap, DirectLabelColormap)
    np.testing.assert_allclose(second["centerline"].data, analysis.points)
    # The user's layer is untouched.
    assert mine in viewer.layers and mine.name == "vessel trees"
    assert mine.metadata == {}
    np.testing.assert_array_equal(mine.data, 1)


@gui
def test_results_lie_on_an_oblique_image(make_napari_viewer, qtbot):
    # issue 11: an oblique scan (rotate, shear or affine on the image) -> every result
    # layer lies on it in world space, also after a re-run on a straightened image
    viewer = make_napari_viewer()
    image = add_vessels(viewer)
    image.rotate = 25.0
    image.affine = np.array(
        [[1, 0, 0, 5.0], [0, 0.9, 0.1, 0], [0, 0, 1, -3.0], [0, 0, 0, 1]], dtype=float
    )
    has_units = hasattr(image, "units")  # napari >= 0.6: the scale bar's unit
    if has_units:
        image.units = ("um", "um", "um")
    widget = make_widget(viewer, qtbot, tile=32)
    assert run_and_wait(qtbot, widget) == "done"
    voxel = np.array([7.0, 11.0, 13.0])
    want = image.data_to_world(voxel)
    layers = ours(viewer)
    for kind, layer in layers.items():
        np.testing.assert_allclose(layer.data_to_world(voxel), want, atol=1e-9, err_msg=kind)
        if has_units:  # results were in pixels beside a um image
            assert [str(u) for u in layer.units] == ["micrometer"] * 3, kind
    # the analysis carries the placement too: a graph saved from it lies on the scan
    np.testing.assert_allclose(widget.last_analysis.geometry.world(voxel), want, atol=1e-9)
    image.rotate = 0.0
    image.affine = np.eye(4)
    if has_units:
        image.units = ("mm", "mm", "mm")
    widget.precision_picker.value = "float32"  # the user's choice reaches the pipeline
    widget.tta_picker.value = 2  # so does test-time mirroring
    assert run_and_wait(qtbot, widget) == "done"
    assert widget.last_analysis.compute["precision"] == "float32"
    assert widget.last_analysis.compute["tta"] == "2 mirrored copies"
    assert "(cpu, float32, 2 mirrored copies)" in widget.status_label.text()
    for kind, layer in ours(viewer).items():
        np.testing.assert_allclose(
            layer.data_to_world(voxel), image.data_to_world(voxel), atol=1e-9, err_msg=kind
        )
        if has_units:  # layers updated in place follow the image too
            assert [str(u) for u in layer.units] == ["millimeter"] * 3, kind


@gui
def test_cancel_midway_changes_nothing(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    add_vessels(viewer)
    widget = make_widget(viewer, qtbot, tile=32)
    assert run_and_wait(qtbot, widget) == "done"
    before = list(viewer.layers)
    data_before = {kind: layer.data for kind, layer in ours(viewer).items()}
    analysis = widget.last_analysis

    widget.tile_box.value = 16  # 4 x 4 x 4 tiles on 48^3, 2 per batch
    seen = []

    def on_tiles(value):
        if isinstance(value, tuple):
            seen.append(value)
            if value[0] >= 1:
                widget.cancel()  # as a user pressing Cancel after the first tiles

    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT_MS) as blocker:
        worker = widget.run()
        assert worker is not None
        worker.yielded.connect(on_tiles)
        assert widget.is_running
        # Run is disabled while running, a second run cannot start.
        assert not widget.run_button.isEnabled()
        assert widget.cancel_button.isEnabled()
        assert widget.run() is None
    assert blocker.args == ["cancelled"]
    total = seen[0][1]
    assert total == 64
    assert max(done for done, _ in seen) < total  # it stopped before the end
    assert "cancelled" in widget.status_label.text().lower()
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert not widget.is_running
    assert list(viewer.layers) == before
    for kind, layer in ours(viewer).items():
        if isinstance(layer, Shapes):  # .data is a new list of the same arrays
            assert len(layer.data) == len(data_before[kind])
            assert all(map(np.array_equal, layer.data, data_before[kind]))
        else:
            assert layer.data is data_before[kind], kind
        assert layer.metadata["napari_topo"]["analysis"] is analysis
    assert widget.last_analysis is analysis

    # The viewer and the widget stay usable: a new run works.
    widget.tile_box.value = 32
    assert run_and_wait(qtbot, widget) == "done"


@gui
def test_run_stays_off_the_gui_thread(make_napari_viewer, qtbot, monkeypatch):
    from napari_topo.inference import pipeline

    viewer = make_napari_viewer()
    add_vessels(viewer)
    widget = make_widget(viewer, qtbot, tile=32)
    release = threading.Event()
    threads = []
    real = pipeline.predict

    def slow_predict(*args, **kwargs):
        threads.append(threading.current_thread())
        assert release.wait(TIMEOUT_MS / 1000)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "predict", slow_predict)
    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT_MS) as blocker:
        widget.run_button.click()
        qtbot.waitUntil(lambda: bool(threads), timeout=TIMEOUT_MS)
        # The GUI thread is free while the model runs: the viewer takes new layers.
        viewer.add_points(np.zeros((1, 3)), name="added while running")
        assert widget.is_running and widget.run_button.text() == "Running…"
        widget.run_button.click()  # disabled: nothing happens
        release.set()
    assert blocker.args == ["done"]
    assert len(threads) == 1 and threads[0] is not threading.main_thread()


BAD_IMAGES = {
    # case: (image data, add_image keyword arguments, words the message must hold)
    "RGB": (np.zeros((8, 32, 32, 3), np.uint8), {"rgb": True}, "RGB"),
    "empty": (np.zeros((32, 32, 32), np.float32), {}, "empty"),
    "NaN": (
        np.where(np.arange(32**3).reshape((32,) * 3) == 5, np.nan, vessels().image[:32, :32, :32]),
        {},
        "NaN",
    ),
}


@gui
@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_images_show_a_message(make_napari_viewer, qtbot, case):
    data, kwargs, words = BAD_IMAGES[case]
    viewer = make_napari_viewer()
    image = viewer.add_image(data, name="bad", **kwargs)
    widget = make_widget(viewer, qtbot, tile=32)
    widget.image_picker.value = image
    start = len(notification_manager.records)

    assert run_and_wait(qtbot, widget) == "error"
    status = widget.status_label.text()
    assert status.startswith("Error: ")
    assert words in status
    assert new_errors(start) == [status.removeprefix("Error: ")]
    assert list(viewer.layers) == [image]
    assert widget.last_analysis is None
    assert widget.run_button.isEnabled() and not widget.is_running


FLAT_IMAGES = {
    # case: (image data, add_image keyword arguments, how the message starts)
    "RGB 2D": (
        np.random.default_rng(0).integers(0, 255, (58, 56, 3), dtype=np.uint8),
        {"rgb": True},
        "Image 'flat' is an RGB 2D image (58 x 56 pixels, 3 colour samples)",
    ),
    "2D": (np.random.default_rng(0).random((64, 48)), {}, "Image 'flat' is a 2D image (64 x 48"),
}


@gui
@pytest.mark.parametrize("case", list(FLAT_IMAGES))
def test_a_2d_image_is_refused_in_one_step_before_any_model(
    make_napari_viewer, qtbot, monkeypatch, case
):
    # A 2D RGB photo is refused as what it is (not run as a 3-slice volume, nor asked
    # for a colour), in one line, before a model is even resolved.
    from napari_topo.inference import pipeline

    def no_model(*_a, **_k):
        raise AssertionError("a model was resolved for a 2D image")

    monkeypatch.setattr(pipeline, "resolve_model", no_model)
    data, kwargs, begins = FLAT_IMAGES[case]
    viewer = make_napari_viewer()
    image = viewer.add_image(data, name="flat", **kwargs)
    widget = make_widget(viewer, qtbot)
    widget.image_picker.value = image
    start = len(notification_manager.records)
    assert widget.run() is None and not widget.is_running  # refused before a worker
    status = widget.status_label.text()
    assert status.startswith(f"Error: {begins}"), status
    assert "segments 3D (z, y, x) volumes" in status and "channel" not in status.lower()
    assert new_errors(start) == [status.removeprefix("Error: ")]
    assert list(viewer.layers) == [image]


@gui
def test_no_image_and_bad_roots(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = make_widget(viewer, qtbot)
    start = len(notification_manager.records)
    assert widget.run() is None
    assert "Pick an Image layer" in widget.status_label.text()
    add_vessels(viewer)
    roots = viewer.add_points([[1e4, 0.0, 0.0]], name="far")
    widget.sources_picker.value = roots
    assert widget.run() is None
    assert "outside image 'vessel'" in widget.status_label.text()
    # a newcomer's file voxel indices landed outside a CT the reader had flipped in y, x
    assert "world coordinates" in widget.status_label.text()
    assert "napari-topo segment --sources" in widget.status_label.text()
    assert len(new_errors(start)) == 2
    assert widget.run_button.isEnabled() and not widget.is_running
    # a run that starts replaces the last error at once, not at the clock's first tick
    viewer.layers.remove(roots)
    assert widget.run() is not None
    assert widget.status_label.text().startswith("Segmenting 'vessel'")
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)


@gui
def test_closing_the_widget_while_running_is_safe(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    add_vessels(viewer)
    widget = SegmentWidget(viewer)
    widget.device_picker.value = "cpu"
    widget.model_picker.value = "unet-dice"
    widget.tile_box.value = 16
    worker = widget.run()
    done = threading.Event()
    worker.finished.connect(done.set)
    widget.close()
    widget.deleteLater()
    qtbot.wait(50)
    viewer.add_image(np.zeros((8, 8, 8)), name="added after the widget went")
    qtbot.waitUntil(done.is_set, timeout=TIMEOUT_MS)
    qtbot.wait(100)
    # The run was cancelled with the widget: no result layers appeared.
    assert [layer.name for layer in viewer.layers] == ["vessel", "added after the widget went"]


# ------------------------------------------------------------------------------ whole results


def snapshot(viewer) -> list[tuple]:
    """Each layer with what applying a result could change on it."""
    return [
        (
            layer,
            layer.name,
            [np.asarray(d) for d in layer.data] if isinstance(layer, Shapes) else layer.data,
            layer.metadata.get("napari_topo", {}).get("analysis"),
        )
        for layer in viewer.layers
    ]


def assert_unchanged(viewer, before: list[tuple]) -> None:
    after = snapshot(viewer)
    assert [a[0] for a in after] == [b[0] for b in before]  # same layers, same order
    for now, then in zip(after, before, strict=True):
        (layer, name, data, analysis), (_, name0, data0, analysis0) = now, then
        assert name == name0
        if isinstance(layer, Shapes):
            assert len(data) == len(data0) and all(map(np.array_equal, data, data0))
        else:
            assert data is data0, name
        assert analysis is analysis0, name


def one_line_error(widget) -> str:
    status = widget.status_label.text()
    assert status.startswith("Error: ") and "\n" not in status and len(status) < 320
    return status


@gui
def test_empty_result_is_a_whole_result(make_napari_viewer, qtbot):
    """Threshold 1.0 finds nothing: every result layer is there and empty, the Tree
    editor says there is nothing to edit, and a re-run replaces every layer."""
    from napari_topo.widgets.tree_editor import TreeEditorWidget

    viewer = make_napari_viewer()
    add_vessels(viewer)
    widget = make_widget(viewer, qtbot)  # one 48^3 tile
    widget.threshold_box.value = 1.0
    start = len(notification_manager.records)
    assert run_and_wait(qtbot, widget) == "done", widget.status_label.text()
    assert new_errors(start) == []
    status = widget.status_label.text()
    assert status.startswith("Nothing found above threshold 1 in 'vessel'"), status
    assert "Lower the Threshold" in status
    layers = ours(viewer)
    assert set(layers) == set(KINDS) and len(viewer.layers) == 1 + len(KINDS)
    analysis = widget.last_analysis
    for kind, layer in layers.items():
        assert isinstance(layer, TYPES[kind]), kind
        assert layer.metadata["napari_topo"]["analysis"] is analysis
    for kind in ("mask", "skeleton", "trees"):
        assert not layers[kind].data.any(), kind
    assert layers["centerline"].data.shape == (0, 3)
    assert layers["branches"].nshapes == 0
    # The roots picker never offers our centerline.
    assert layers["centerline"] not in widget.sources_picker.choices

    # The Tree editor picks the empty trees layer and says why it cannot edit it.
    editor = TreeEditorWidget(viewer)
    qtbot.addWidget(editor)
    assert editor.layer_picker.value is layers["trees"]
    assert editor.start_editing() is False
    assert "has no vessels to edit" in editor.status_label.text()
    assert not editor.is_editing and not editor.assign_button.isEnabled()

    # A normal run, then an empty one again: every layer comes from the last run.
    widget.threshold_box.value = 0.5
    assert run_and_wait(qtbot, widget) == "done", widget.status_label.text()
    assert len(ours(viewer)["centerline"].data) > 0
    assert ours(viewer)["branches"].nshapes > 0
    widget.threshold_box.value = 1.0
    assert run_and_wait(qtbot, widget) == "done", widget.status_label.text()
    last = widget.last_analysis
    layers = ours(viewer)
    assert set(layers) == set(KINDS) and len(viewer.layers) == 1 + len(KINDS)
    for kind, layer in layers.items():
        assert layer.metadata["napari_topo"]["analysis"] is last, kind
    assert layers["centerline"].data.shape == (0, 3)
    assert layers["branches"].nshapes == 0
    assert not layers["trees"].data.any() and not layers["mask"].data.any()
    assert widget.status_label.text().startswith("Nothing found above threshold 1")

    # Threshold 0.0: everything is vessel, a single centerline point at the image's
    # centre (every piece keeps one) and no vessel tree; a whole result too.
    widget.threshold_box.value = 0.0
    start = len(notification_manager.records)
    assert run_and_wait(qtbot, widget) == "done", widget.status_label.text()
    layers = ours(viewer)
    assert set(layers) == set(KINDS) and len(viewer.layers) == 1 + len(KINDS)
    for kind, layer in layers.items():
        assert layer.metadata["napari_topo"]["analysis"] is widget.last_analysis, kind
    assert len(layers["centerline"].data) <= 1 and layers["mask"].data.all()
    status = widget.status_label.text()
    assert status.startswith("No vessels found in 'vessel' at threshold 0"), status
    assert "Raise the Threshold" in status
    assert new_errors(start) == []


@gui
def test_a_layer_that_cannot_be_made_changes_nothing(make_napari_viewer, qtbot, monkeypatch):
    import napari_topo.layers as layers_module
    from napari_topo.widgets import segment as segment_module

    viewer = make_napari_viewer()
    image = add_vessels(viewer)
    widget = make_widget(viewer, qtbot)
    real_points_layer = layers_module.points_layer

    def broken_builder(*args, **kwargs):
        raise RuntimeError("builder broke")

    # First run: the centerline builder raises; no layer appears.
    monkeypatch.setattr(layers_module, "points_layer", broken_builder)
    start = len(notification_manager.records)
    assert run_and_wait(qtbot, widget) == "error"
    status = one_line_error(widget)
    assert status.startswith("Error: Nothing was changed")
    assert "RuntimeError: builder broke" in status
    assert new_errors(start) == [status.removeprefix("Error: ")]
    assert list(viewer.layers) == [image]
    assert widget.last_analysis is None
    monkeypatch.setattr(layers_module, "points_layer", real_points_layer)

    assert run_and_wait(qtbot, widget) == "done", widget.status_label.text()
    before, analysis = snapshot(viewer), widget.last_analysis

    # Re-run: napari refuses the centerline layer (as it did an empty one).
    def refused_by_napari(*args, **kwargs):
        data, meta, kind = real_points_layer(*args, **kwargs)
        return data, {**meta, "size": np.ones(len(data) + 3)}, kind

    monkeypatch.setattr(layers_module, "points_layer", refused_by_napari)
    widget.threshold_box.value = 0.8
    assert run_and_wait(qtbot, widget) == "error"
    status = one_line_error(widget)
    assert "could not make the points layer 'vessel centerline'" in status
    assert_unchanged(viewer, before)
    assert widget.last_analysis is analysis
    monkeypatch.setattr(layers_module, "points_layer", real_points_layer)

    # Re-run: adding fails on the GUI thread part-way; the steps before are undone.
    real_update = segment_module._update_in_place
    calls = []

    def fails_on_the_third(layer, data, meta):
        calls.append(layer.name)
        if len(calls) == 3:
            raise RuntimeError("viewer refused")
        return real_update(layer, data, meta)

    monkeypatch.setattr(segment_module, "_update_in_place", fails_on_the_third)
    assert run_and_wait(qtbot, widget) == "error"
    status = one_line_error(widget)
    assert "Nothing was changed" in status and "viewer refused" in status
    assert len(calls) == 3
    assert_unchanged(viewer, before)
    assert widget.last_analysis is analysis
    np.testing.assert_array_equal(ours(viewer)["mask"].data, analysis.mask)


@gui
def test_a_pipeline_notice_is_information_and_a_note_a_warning(
    make_napari_viewer, qtbot, monkeypatch
):
    """A voxel head's "read as when it was fine-tuned" came up as a warning toast after
    *Segment again* (a newcomer read it as an alarm); a fallback note still warns."""
    from napari_topo.inference.pipeline import Notice
    from napari_topo.widgets import segment as module

    viewer = make_napari_viewer()
    add_vessels(viewer)
    widget = make_widget(viewer, qtbot)
    shown = []
    monkeypatch.setattr(module, "show_info", lambda m: shown.append(("info", m)))
    monkeypatch.setattr(module, "show_warning", lambda m: shown.append(("warning", m)))
    widget._on_yielded(Notice("read as when it was fine-tuned"))
    widget._on_yielded("out of memory on the GPU: went on on the CPU")
    assert shown == [
        ("info", "read as when it was fine-tuned"),
        ("warning", "out of memory on the GPU: went on on the CPU"),
    ]


@gui
def test_a_tile_count_shown_late_never_covers_the_outcome(make_napari_viewer, qtbot, monkeypatch):
    """napari's progress bar runs the event loop when it moves, so a run's outcome (an
    error here) can be shown from inside the handler of a tile count; the count's phase
    ("Tracing the centerline…") then replaced the error (CI, under load)."""
    from napari_topo.widgets import segment as module

    viewer = make_napari_viewer()
    add_vessels(viewer)
    widget = make_widget(viewer, qtbot)

    class Reentrant:  # moving it delivers the worker's outcome, as processEvents may
        total, n = 0, 0

        def update(self, k):
            self.n += k
            widget._on_returned(module._Outcome(error="two roots on one point"))

        def close(self):
            pass

    monkeypatch.setattr(module, "napari_progress", lambda **_kw: Reentrant())
    widget._worker, widget._started = object(), time.perf_counter()  # a run under way
    try:
        widget._on_yielded((8, 8))  # the last tile: the phase would be the trees'
        assert widget.status_label.text() == "Error: two roots on one point"
        widget._show_phase()  # the clock's tick that was already queued
        assert widget.status_label.text() == "Error: two roots on one point"
    finally:
        widget._worker = None
        widget._state = None


@gui
def test_roots_errors_are_one_line(make_napari_viewer, qtbot, monkeypatch):
    from napari_topo.inference import pipeline
    from napari_topo.trees.reconstruct import reconstruct_trees

    viewer = make_napari_viewer()
    add_vessels(viewer)
    widget = make_widget(viewer, qtbot)
    # Roots that repeat one another are refused before the run.
    rng = np.random.default_rng(0)
    world = rng.uniform(20, 80, size=(9, 3))
    roots = viewer.add_points(np.vstack([world, world[:3]]), name="roots")
    widget.sources_picker.value = roots
    assert widget.run() is None
    assert widget.status_label.text() == (
        "Error: roots must be distinct points: 3 of the 12 points of 'roots' are "
        "duplicates; remove them or pick another Points layer"
    )

    # Distinct roots that snap to the same centerline point: the first two are named by
    # their rows in the layer (from 1), with how many in all.
    roots.data = rng.uniform(20, 80, size=(12, 3))

    def snapping_segment(volume, model, **kwargs):
        points = rng.uniform(0, 40, size=(30, 3))
        return reconstruct_trees(points, sources=points[[*range(9), 0, 1, 2]])

    monkeypatch.setattr(pipeline, "segment", snapping_segment)
    start = len(notification_manager.records)
    assert run_and_wait(qtbot, widget) == "error"
    status = one_line_error(widget)
    assert status == (
        "Error: roots 1 and 10 of 'roots' snap to the same centerline point (3 of the 12 "
        "roots land on a point another root took): two roots on one vessel, or beside the "
        "same vessel where the mask missed it; move or delete one."
    )
    assert new_errors(start) == [status.removeprefix("Error: ")]


# ------------------------------------------------------------------------------ screenshot


def save_screenshot(path: str) -> None:
    """Segment a 96³ synthetic volume with the docked widget and save a PNG of the viewer."""
    import napari
    from qtpy.QtWidgets import QApplication

    truth = make_vessel_volume(shape=(96, 96, 96), seed=3)
    viewer = napari.Viewer(show=True, title="napari-topo: segment vessels")
    viewer.window.resize(1400, 860)
    image = viewer.add_image(truth.image, name="vessel", colormap="gray", opacity=0.5)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment vessels", area="right")
    roots = viewer.add_points(truth.sources, name="tree roots", size=4, face_color="white")
    widget.image_picker.value = image
    widget.model_picker.value = "unet-dice"
    widget.sources_picker.value = roots
    app = QApplication.instance()
    done = []
    widget.finished.connect(done.append)
    widget.run()
    while not done:
        app.processEvents()
    if done != ["done"]:
        raise RuntimeError(widget.status_label.text())
    for kind in ("probability", "skeleton", "branches"):
        viewer.layers[f"vessel {kind}"].visible = False
    viewer.layers["vessel"].visible = False
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.angles = (-15, 35, 60)
    camera.zoom *= 0.8
    for _ in range(20):
        app.processEvents()
    viewer.screenshot(path, canvas_only=False, flash=False)
    viewer.close()


if __name__ == "__main__":
    import sys

    save_screenshot(sys.argv[1] if len(sys.argv) > 1 else "docs/images/segment_widget.png")


@gui
def test_a_threshold_set_by_hand_survives_picking_another_model(make_napari_viewer, qtbot):
    """The Threshold box follows each model's own until the user sets one; then it stays
    (a newcomer lowered it for a two-photon stack, tried another model and lost it)."""
    import dataclasses

    viewer = make_napari_viewer()
    add_vessels(viewer)
    widget = make_widget(viewer, qtbot)
    tuned = dataclasses.replace(get_card("unet-dice"), name="tuned", threshold=0.3)
    widget._cards["tuned"] = tuned
    widget.model_picker.reset_choices()

    # untouched: the box follows each picked model's own threshold
    widget.model_picker.value = "tuned"
    assert widget.threshold_box.value == pytest.approx(0.3)
    widget.model_picker.value = "unet-projpool"
    assert widget.threshold_box.value == pytest.approx(0.5)

    # set by hand: kept across picks, and the status names the model's own
    widget.threshold_box.value = 0.2
    widget.model_picker.value = "tuned"
    assert widget.threshold_box.value == pytest.approx(0.2)
    assert "0.2 kept" in widget.status_label.text() and "0.3" in widget.status_label.text()
    widget.model_picker.value = "unet-dice"
    assert widget.threshold_box.value == pytest.approx(0.2)
    job, _volume = widget._make_job(widget.image_picker.value)
    assert job.threshold == pytest.approx(0.2) and job.model_threshold == pytest.approx(0.5)

    # a hand-set value equal to a model's own is still the user's
    widget.threshold_box.value = 0.3
    widget.model_picker.value = "tuned"
    widget.model_picker.value = "unet-dice"
    assert widget.threshold_box.value == pytest.approx(0.3)
    # set back to what the box last took from a card: it follows the models again
    widget.threshold_box.value = 0.5  # the box last followed unet-projpool's 0.5
    widget.model_picker.value = "tuned"
    assert widget.threshold_box.value == pytest.approx(0.3)

    # a model just fine-tuned (or loaded from a file) brings its own, even over a hand-set one
    widget.threshold_box.value = 0.7
    widget._on_model_changed(own_threshold=True)
    assert widget.threshold_box.value == pytest.approx(0.3)
    assert "'tuned''s own (was 0.7)" in widget.status_label.text()


@gui
def test_a_file_the_reader_mirrors_gets_the_command_lines_mask(make_napari_viewer, qtbot, tmp_path):
    """An LPS file (DICOM's order) is shown mirrored in y and x by the reader; the
    network runs on the file's own voxel order, so the dock's mask is the command
    line's (a newcomer's CT: Dice 0.461 in the dock against 0.543 from the CLI)."""
    from napari_topo.data.io import write_volume
    from napari_topo.geometry import Geometry, reader_flips
    from napari_topo.inference.pipeline import segment

    image = vessels().image.astype(np.float32)
    lps = Geometry(np.diag([2.0, -2.0, -2.0, 1.0]), "zyx", unit="mm")
    path = write_volume(tmp_path / "lps.nii.gz", image, geometry=lps)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-topo")
    np.testing.assert_array_equal(layer.data, image[:, ::-1, ::-1])  # shown mirrored
    assert reader_flips(layer) == (1, 2)
    widget = make_widget(viewer, qtbot, tile=48)
    job, _volume = widget._make_job(layer)
    assert job.flips == (1, 2)
    assert run_and_wait(qtbot, widget) == "done"
    shown = ours(viewer, layer.name)["mask"].data
    cli = segment(image, "unet-dice", spacing=(2.0, 2.0, 2.0), tile=48, device="cpu").mask
    np.testing.assert_array_equal(shown, cli[:, ::-1, ::-1])
    # the network alone on the array as shown draws another mask: the test can fail
    as_shown = segment(layer.data, "unet-dice", spacing=(2.0, 2.0, 2.0), tile=48, device="cpu")
    assert not np.array_equal(as_shown.mask, shown)


@gui
def test_load_your_own_model_file(make_napari_viewer, qtbot, tmp_path):
    """Load model file…: a .safetensors with its card, hash-checked, joins the picker."""
    viewer = make_napari_viewer()
    add_vessels(viewer)
    widget = make_widget(viewer, qtbot)
    card = get_card("unet-dice")
    weights = tmp_path / "mine.safetensors"
    shutil.copy(card.weights_path, weights)
    shutil.copy(card.path, tmp_path / "mine.json")

    worker = widget.load_model_file(weights)
    assert worker is not None and not widget.load_model_button.isEnabled()
    qtbot.waitUntil(widget.load_model_button.isEnabled, timeout=TIMEOUT_MS)
    key = str(weights.resolve())
    assert widget.model_picker.value == key
    assert widget.model_picker.native.currentText() == "unet-dice (mine.safetensors)"
    assert "matches its card" in widget.status_label.text()
    job, _volume = widget._make_job(widget.image_picker.value)
    assert job.model == key and job.model_name == "unet-dice"

    # A file that is not the one its card describes is refused, with one line.
    bad = tmp_path / "bad.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    shutil.copy(card.path, tmp_path / "bad.json")
    start = len(notification_manager.records)
    widget.load_model_file(bad)
    qtbot.waitUntil(widget.load_model_button.isEnabled, timeout=TIMEOUT_MS)
    errors = new_errors(start)
    assert len(errors) == 1 and "SHA-256" in errors[0] and "\n" not in errors[0]
    assert str(bad.resolve()) not in [v for v in widget.model_picker.choices]
    assert widget.model_picker.value == key  # the earlier choice stays

    # weights without a card beside them: refused, saying what is missing
    lone = tmp_path / "lone.safetensors"
    shutil.copy(card.weights_path, lone)
    start = len(notification_manager.records)
    widget.load_model_file(lone)
    qtbot.waitUntil(widget.load_model_button.isEnabled, timeout=TIMEOUT_MS)
    assert any("lone.json" in e for e in new_errors(start))


def test_a_script_ending_while_the_dock_lists_its_models_exits_cleanly():
    """A script (or test) that closed the viewer within a second of opening the Segment
    dock in a fresh process aborted at exit: the model list, loading in a worker while
    torch imported, ended after Qt had deleted its signals."""
    import subprocess
    import sys

    code = "\n".join(
        [
            "import time, napari",
            "from qtpy.QtWidgets import QApplication",
            "v = napari.Viewer(show=False)",
            "_, w = v.window.add_plugin_dock_widget('napari-topo', 'Segment vessels')",
            "t = time.time()",
            "while time.time() - t < 1.0:",
            "    QApplication.processEvents(); time.sleep(0.01)",
            "print('listing' if not w.is_ready else 'listed', flush=True)",
            "v.close()",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "WorkerBaseSignals" not in out.stderr
    assert out.stdout.strip() == "listing"  # the case that aborted: the list still loading


@gui
def test_inside_keeps_the_results_in_a_region_of_interest(make_napari_viewer, qtbot):
    # the CLI's --roi in the dock: a liver mask (here the image's left half) confines
    # every result layer; a mask of another grid is refused in one line
    viewer = make_napari_viewer()
    image = add_vessels(viewer)
    shape = image.data.shape
    inside = np.zeros(shape, np.uint8)
    inside[:, :, : shape[2] // 2] = 1
    liver = viewer.add_labels(inside, name="liver", scale=SCALE, translate=TRANSLATE)
    widget = make_widget(viewer, qtbot, tile=32)
    assert run_and_wait(qtbot, widget) == "done"
    assert ours(viewer)["mask"].data[:, :, shape[2] // 2 + 2 :].any()  # vessels there
    widget.roi_picker.value = liver
    assert run_and_wait(qtbot, widget) == "done"
    for kind in ("mask", "trees", "skeleton"):
        data = np.asarray(ours(viewer)[kind].data)
        assert not data[:, :, shape[2] // 2 :].any() and data.any(), kind
        # recorded, so that the Metrics dock never offers the region as a ground truth
        assert ours(viewer)[kind].metadata["napari_topo"]["inside"] == "liver"
    # grown by the margin (scale units)
    widget.roi_margin_box.value = 2.0 * SCALE[2]
    assert run_and_wait(qtbot, widget) == "done"
    assert ours(viewer)["mask"].data[:, :, shape[2] // 2 : shape[2] // 2 + 2].any()
    liver.translate = (0.0, 0.0, 7.0)  # another grid
    assert widget.run() is None
    assert "Inside 'liver'" in widget.status_label.text()
    # the Input section's vessel range reaches the pipeline: a range no piece of this
    # image (intensities 0..1) has drops them all
    widget.roi_picker.value = None
    widget.range_mode.value = "custom"
    widget.range_low.value, widget.range_high.value = 2.0, 3.0
    run_and_wait(qtbot, widget)
    assert widget.last_analysis is not None and not widget.last_analysis.mask.any()


def test_the_status_says_how_many_tiles_of_noise_alone_were_not_run(make_napari_viewer, qtbot):
    from napari_topo.data.phantoms import sparse_tubes

    viewer = make_napari_viewer()
    big, labels = sparse_tubes()
    viewer.add_image(big[:, :128], name="vessel")  # the tubes' half and a noise quarter
    widget = make_widget(viewer, qtbot, model="unet-cldice", tile=64)
    assert run_and_wait(qtbot, widget) == "done"
    assert widget.last_analysis.compute["empty tiles"] == "6 of 15 tiles empty, not run"
    assert "6 of 15 tiles empty, not run)" in widget.status_label.text()
    mask = np.asarray(ours(viewer)["mask"].data, bool)
    assert mask[:, :, 160:].sum() == 0  # the noise that unet-cldice used to read as vessel
    assert dice(mask, labels[:, :128] > 0) > 0.8
    # unticked: every tile runs (and the network's earlier output is not reused)
    widget.empty_tiles_check.value = False
    assert run_and_wait(qtbot, widget) == "done"
    assert widget.last_analysis.compute["empty tiles"] == "not tested: every tile run"
    assert "tiles empty" not in widget.status_label.text()
    assert "not tested" not in widget.status_label.text()
    assert "reused" not in widget.status_label.text()


def test_the_status_says_how_long_the_tiles_left_will_take(make_napari_viewer, qtbot, monkeypatch):
    # a fixed "~20 s per 128^3" note was 7x off on a newcomer's CT (130 s, said ~15 min):
    # the status now says the time left from the run's own pace
    from napari_topo.widgets import segment as segment_module

    clock = [0.0]
    monkeypatch.setattr(SegmentWidget, "elapsed", property(lambda self: clock[0]))
    widget = make_widget(make_napari_viewer(), qtbot)
    assert widget._time_left(0, 100) == ""  # the pace is measured from here
    clock[0] = 1.0
    assert widget._time_left(5, 100) == ""  # under 3 s: no guess yet
    clock[0] = 10.0
    assert widget._time_left(10, 100) == ", about 90 s left"  # 1 tile/s, 90 to go
    clock[0] = 31.0
    assert widget._time_left(20, 100) == ", about 2 min left"  # 80 tiles at 1.5 s
    clock[0] = 40.0
    assert widget._time_left(0, 40) == ""  # another pass (a finer zoom): measured anew
    clock[0] = 50.0
    assert widget._time_left(20, 40) == ", about 10 s left"
    words = segment_module._duration_words
    assert [words(s) for s in (0, 12, 89, 101, 3599, 4200)] == [
        "5 s",
        "10 s",
        "90 s",
        "2 min",
        "1 h",
        "1 h 10 min",
    ]


@gui
def test_roots_from_a_csv_land_where_the_command_line_puts_them(
    make_napari_viewer, qtbot, tmp_path
):
    # a newcomer had the z,y,x roots file the CLI's --sources reads and no way to bring
    # it into the dock (neither napari's reader nor the plugin's opened it)
    from napari_topo.data.io import write_volume
    from napari_topo.geometry import Geometry

    vol = vessels()
    lps = Geometry(np.diag([2.0, -2.0, -2.0, 1.0]), "zyx", unit="mm")  # shown mirrored
    path = write_volume(tmp_path / "lps.nii.gz", vol.image.astype(np.float32), geometry=lps)
    viewer = make_napari_viewer()
    [image] = viewer.open(str(path), plugin="napari-topo")
    widget = make_widget(viewer, qtbot)
    roots = np.asarray(vol.sources, dtype=int)
    (tmp_path / "roots.csv").write_text("z,y,x\n" + "".join(f"{z},{y},{x}\n" for z, y, x in roots))
    slider = viewer.dims.range[0]
    layer = widget.load_roots(tmp_path / "roots.csv")
    assert isinstance(layer, Points) and widget.sources_picker.value is layer
    # on the image's placement: the z slider keeps the image's slices
    np.testing.assert_allclose(layer.scale, image.scale)
    assert viewer.dims.range[0] == slider
    assert "voxel indices of the image file" in widget.status_label.text()
    # the dock turns them back into the file's voxels exactly (the CLI's reading)
    got = sources_in_voxels(layer, image, image.data.shape)
    shown = roots.copy()
    shown[:, 1:] = np.asarray(image.data.shape[1:]) - 1 - roots[:, 1:]  # as displayed
    np.testing.assert_allclose(got, shown, atol=1e-6)
    # world coordinates (the writer's z_physical, ...) land on the same voxels
    world = np.array([lps.world(r) for r in roots.astype(float)])
    (tmp_path / "world.csv").write_text(
        "z_physical,y_physical,x_physical\n" + "".join(f"{a},{b},{c}\n" for a, b, c in world)
    )
    np.testing.assert_allclose(
        sources_in_voxels(widget.load_roots(tmp_path / "world.csv"), image, image.data.shape),
        shown,
        atol=1e-6,
    )
    # a file that is no table of roots: one line in the status, no layer
    (tmp_path / "bad.csv").write_text("")
    n = len(viewer.layers)
    with pytest.raises(ValueError, match="no source points"):
        widget.load_roots(tmp_path / "bad.csv")
    assert len(viewer.layers) == n
    assert run_and_wait(qtbot, widget) == "done"
    assert widget.last_analysis.result.n_trees == len(roots)
    # a file whose axes the reader reorders (stored x, z, y): the roots follow the file
    marker = np.zeros((10, 12, 14), np.float32)  # as stored
    marker[2, 5, 9] = 1.0
    perm = np.zeros((4, 4))
    perm[0, 1] = perm[1, 2] = perm[2, 0] = perm[3, 3] = 1.0  # stored axis 0 is world x ...
    pg = Geometry(perm, "zyx", unit="mm")
    ppath = write_volume(tmp_path / "perm.nii.gz", marker, geometry=pg)
    [shown] = viewer.open(str(ppath), plugin="napari-topo")
    where = tuple(int(v) for v in np.argwhere(np.asarray(shown.data) == 1.0)[0])
    assert where != (2, 5, 9)  # shown with its axes reordered
    widget.image_picker.value = shown
    (tmp_path / "one.csv").write_text("z,y,x\n2,5,9\n")
    got = sources_in_voxels(widget.load_roots(tmp_path / "one.csv"), shown, shown.data.shape)
    np.testing.assert_allclose(got[0], where, atol=1e-6)
