"""The Fine-tune dock's record of painted slices, its region line and its small defects.

A newcomer corrected a few slices of Segment's own mask (the dock's default labels) and
the whole volume counted as annotated: the model trained on its own uncorrected output,
and the corrected slices all landed in the held-out part. The dock now records the
slices painted in each Labels layer (napari's ``Labels.events.paint``), says what it
will train on before Start, and refuses a Segment result nobody painted in.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from test_finetune import save_tiny_base, user_dir, volume  # noqa: E402, F401 (user_dir: a fixture)

import napari_topo.training.finetune as core  # noqa: E402
from napari_topo.models.registry import describe_card, list_models  # noqa: E402
from napari_topo.widgets.finetune import (  # noqa: E402
    IDLE_STATUS,
    MIN_MINUTES,
    FinetuneWidget,
    PaintRecord,
    painted_indices,
)

TIMEOUT_MS = 120_000
gui = pytest.mark.gui
SEGMENT_MASK = {"napari_topo": {"kind": "mask", "widget": "segment", "model": "tiny-base"}}


def _correct(layer, truth, z):
    """Set slice ``z`` of ``layer`` to ``truth`` as the brush would (data_setitem)."""
    current = np.asarray(layer.data[z]) > 0
    for value in (1, 0):
        yy, xx = np.nonzero((truth[z] > 0) == bool(value) & (current != bool(value)))
        if len(yy):
            layer.data_setitem((np.full(yy.shape, z), yy, xx), value)


def _dock(viewer, qtbot):
    widget = FinetuneWidget(viewer)
    qtbot.addWidget(widget)
    widget.model_picker.value = "tiny-base"
    widget.device_picker.value = "cpu"
    return widget


def _empty_labels_picked(make_napari_viewer, qtbot, name):
    """A viewer with the test volume and an empty Labels layer ``name`` picked in the
    dock: ``(viewer, volume, layer, widget)``."""
    viewer = make_napari_viewer()
    vol = volume()
    viewer.add_image(vol.image, name="vessels")
    layer = viewer.add_labels(np.zeros(vol.mask.shape, np.uint8), name=name)
    widget = _dock(viewer, qtbot)
    widget.labels_picker.value = layer
    return viewer, vol, layer, widget


def _region_line(widget, qtbot, start):
    qtbot.waitUntil(lambda: widget.region_label.text().startswith(start), timeout=5000)
    return widget.region_label.text()


@gui
@pytest.mark.usefixtures("user_dir")
def test_segment_mask_trains_on_the_painted_slices_only(make_napari_viewer, qtbot, monkeypatch):
    # what is checked is the region trained on and the saved card: 4 steps of a tiny
    # untrained base rarely beat it, and such a result is not saved (unchanged_from_base;
    # tested in test_a_run_that_beat_nothing_says_the_weights_are_the_base_models)
    monkeypatch.setattr(core, "unchanged_from_base", lambda card: None)
    viewer = make_napari_viewer()
    vol = volume()
    image = viewer.add_image(vol.image, name="vessels")
    has_units = hasattr(image, "units")
    if has_units:
        image.units = ("um", "um", "um")
    # Segment's mask: the model's output everywhere (here: a shifted, wrong mask)
    wrong = np.roll(vol.mask, 3, axis=2).astype(np.uint8)
    mask = viewer.add_labels(wrong, name="vessels mask", metadata=SEGMENT_MASK)
    if has_units:
        mask.units = image.units
    widget = _dock(viewer, qtbot)
    assert widget.labels_picker.value is mask  # the default pick
    widget.steps_box.value = 4

    # nothing painted yet: said before Start, and Start refuses (it trained on everything)
    line = _region_line(widget, qtbot, "Cannot train yet")
    assert line.startswith("Cannot train yet: paint your corrections into 'vessels mask'")
    assert widget.start() is None
    status = widget.status_label.text()
    assert status.startswith("Error: Paint your corrections into 'vessels mask' on a few slices")
    assert "\n" not in status and widget.is_running is False

    corrected = [5, 13, 21, 27]
    for z in corrected:
        _correct(mask, vol.mask, z)
    assert widget.painted(mask) == [(0, corrected)]
    line = _region_line(widget, qtbot, "Will train on")
    assert line.startswith("Will train on: 4 slices along z (5, 13, 21, 27) you painted")
    assert "3 or more" not in line  # enough slices: no advice

    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT_MS) as blocker:
        assert widget.start() is not None
        # the region stays said while the status line follows the training
        assert widget.region_label.text().startswith("Training on: 4 painted slices along z")
    assert blocker.args == ["done"], widget.status_label.text()
    region = viewer.layers["vessels mask annotated region"].data
    assert np.flatnonzero(region.any(axis=(1, 2))).tolist() == corrected
    data = widget.last_card.training["data"]
    assert data["annotated_region"]["method"] == "slices"
    assert data["annotated_region"]["slices"] == corrected
    assert data["annotated_voxels"] == 4 * 40 * 40
    held_out = data["validation_part"]  # some of the painted slices, along z
    assert held_out["axis"] == 0 and set(held_out["slices"]) < set(corrected)
    if has_units:  # the card and its tooltip in Segment's Model picker say the unit
        assert data["unit"] == "um"
        saved = [c for c in list_models() if c.name == widget.last_card.name]
        assert "spacing 1x1x1 um" in "\n".join(describe_card(saved[0]))
    # no Segment dock is open: the message does not claim the model is selected there
    status = widget.status_label.text()
    assert status.startswith("Saved '") and "Segment vessels" not in status
    assert not widget.rerun_button.isHidden() and widget.rerun_button.isEnabled()


@gui
@pytest.mark.usefixtures("user_dir")
def test_replaced_data_forget_the_paint_and_user_labels_keep_the_guess(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    vol = volume()
    viewer.add_image(vol.image, name="vessels")
    mask = viewer.add_labels(vol.mask.astype(np.uint8), name="vessels mask", metadata=SEGMENT_MASK)
    widget = _dock(viewer, qtbot)
    _correct(mask, np.zeros_like(vol.mask), 9)  # erase slice 9: a correction
    assert widget.painted(mask) == [(0, [9])]
    mask.data = vol.mask.astype(np.uint8)  # Segment ran again: its new output
    assert widget.painted(mask) is None
    assert widget.start() is None and "Paint your corrections" in widget.status_label.text()
    # the user paints: the refusal under Start is answered, not left standing
    _correct(mask, np.zeros_like(vol.mask), 5)
    _region_line(widget, qtbot, "Will train on")
    assert not widget.status_label.text().startswith("Error: ")

    # a labels file of the user's own, with no painting recorded: the slices holding labels
    own = np.zeros(vol.mask.shape, np.uint8)
    own[[4, 12, 20]] = vol.mask[[4, 12, 20]]
    loaded = viewer.add_labels(own, name="my labels")
    widget.labels_picker.value = loaded
    line = _region_line(widget, qtbot, "Will train on: 3")
    assert "3 labelled slices along z" in line, line  # none painted: labels loaded


@gui
def test_brush_in_a_2d_view_counts_the_slice_paged_through(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    labels = viewer.add_labels(np.zeros((12, 40, 40), np.uint8), name="my labels")
    widget = FinetuneWidget(viewer)
    qtbot.addWidget(widget)
    # a blob brushed on z-slice 6 covers 10 y rows and 10 x columns: 1 z slice
    viewer.dims.set_current_step(0, 6)
    labels.brush_size = 10
    labels.paint((6, 20, 20), 1)
    assert widget.painted(labels) == [(0, [6])]
    # viewed along y (y the axis paged through): a stroke on row 30 spans 12 z slices
    viewer.dims.order = (1, 0, 2)
    labels.paint((6, 30, 20), 2)
    labels.paint((6, 30, 21), 2)
    record = widget._records[id(labels)]
    assert [e.axis for e in record.edits] == [0, 1, 1]
    # both kept: the y row trains beside the z slice (a newcomer's two-axis painting had
    # made every z slice the y row crosses count)
    assert widget.painted(labels) == [(0, [6]), (1, [30])]
    line = _region_line(widget, qtbot, "Will train on")
    assert "1 slice along z (6) and 1 slice along y (30)" in line, line
    # napari's undo and redo emit no paint event: the record follows the undo stack
    labels.undo()
    assert widget.painted(labels) == [(0, [6]), (1, [30])]  # one y stroke is left
    labels.undo()
    assert widget.painted(labels) == [(0, [6])]
    labels.redo()
    assert widget.painted(labels) == [(0, [6]), (1, [30])]
    # a copy of the data (Segment's "(corrected)" copy) keeps what is painted now
    copy = viewer.add_labels(np.array(labels.data), name="copy")
    assert record.copy(labels).painted(copy) == [(0, [6]), (1, [30])]
    labels.undo()
    labels.undo()
    assert widget.painted(labels) is None
    _region_line(widget, qtbot, "Cannot train yet")  # undo redraws: the line follows
    # paint again after an undo: the undone strokes stay undone (their atoms are freed
    # by napari when the new stroke clears the redo stack; their ids come back in use)
    viewer.dims.order = (0, 1, 2)
    labels.paint((9, 10, 10), 1)
    assert widget.painted(labels) == [(0, [9])]
    # z slices and a y row: the core takes both (two pairs)
    viewer.dims.order = (1, 0, 2)
    labels.paint((3, 25, 10), 1)
    painted = widget.painted(labels)
    assert painted == [(0, [9]), (1, [25])]
    _, info = core.annotated_region(np.asarray(labels.data), painted=painted)
    assert info["slices"] == [9] and info["other_axes"] == {1: [25]}


def test_paint_record_from_napari_atoms():
    masked = SimpleNamespace(
        slice_key=(slice(3, 4), slice(5, 8), slice(0, 2)),
        mask=np.array([[[True, False], [False, False], [False, True]]]),
        old_values=np.zeros(2),
        new_value=1,
    )
    assert painted_indices([masked], (10, 10, 10)) == [{3}, {5, 7}, {0, 1}]
    setitem = ((np.array([2, 2, 2]), np.array([1, 5, 9]), np.array([0, 0, 1])), None, 0)
    record = PaintRecord(3)
    record.add([masked], (10, 10, 10))
    record.add([setitem], (10, 10, 10))
    assert record.painted() == [(0, [2, 3])]  # 2 z slices; 4 y rows, 2 x columns
    record.add([setitem], (10, 10, 10), view_axis=0)
    assert record.painted() == [(0, [2, 3])]
    assert not PaintRecord(3) and PaintRecord(3).painted() is None


@gui
def test_max_steps_says_no_limit_and_the_budget_trains(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = FinetuneWidget(viewer)
    qtbot.addWidget(widget)
    box = widget.steps_box.native
    assert box.lineEdit().text() == "no limit" and widget.steps_box.value == 0
    widget.steps_box.value = 6
    assert box.lineEdit().text() == "6" and int(widget.steps_box.value) == 6
    widget.steps_box.value = 0
    assert box.lineEdit().text() == "no limit"
    assert widget.minutes_box.min == MIN_MINUTES >= 1.0
    widget.minutes_box.native.setValue(0.1)  # typed: Qt clamps it
    assert widget.minutes_box.value == MIN_MINUTES
    # Start, Cancel, the progress and the status stay in view, outside the scrolled part
    pinned = widget.scroll_area.pinned
    for part in (widget.start_button, widget.cancel_button, widget.progress_bar):
        assert pinned.isAncestorOf(part)
    for part in (widget.status_label, widget.region_label, widget.rerun_button):
        assert pinned.isAncestorOf(part)


def _painted_dock(make_napari_viewer, qtbot):
    """A dock on a new Labels layer with three slices corrected."""
    viewer = make_napari_viewer()
    vol = volume()
    viewer.add_image(vol.image, name="vessels")
    labels = viewer.add_labels(np.zeros(vol.mask.shape, np.uint8), name="my labels")
    for z in (4, 12, 20):
        _correct(labels, vol.mask, z)
    widget = _dock(viewer, qtbot)
    widget.labels_picker.value = labels
    return widget


@gui
@pytest.mark.usefixtures("user_dir")
def test_a_run_with_no_training_step_saves_nothing(make_napari_viewer, qtbot, monkeypatch):
    widget = _painted_dock(make_napari_viewer, qtbot)
    note = "no training step fit in 1 min (scoring the base model ... took 70 s)"
    card = SimpleNamespace(name="x", training={"steps": 0, "note": note})
    saved = []
    monkeypatch.setattr(core, "finetune", lambda *a, **k: (object(), card))
    monkeypatch.setattr(core, "save_finetuned", lambda *a: saved.append(a))
    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT_MS) as blocker:
        widget.start()
    assert blocker.args == ["unchanged"] and saved == []
    qtbot.wait(600)  # the region line is redone after a run: the status must stay
    status = widget.status_label.text()
    assert status.startswith("Not saved: no training step fit in 1 min")
    assert "would be the base model itself, which you can keep using" in status
    assert "Error" not in status
    assert not widget.rerun_button.isEnabled()


@gui
@pytest.mark.usefixtures("user_dir")
def test_a_run_that_beat_nothing_says_the_weights_are_the_base_models(
    make_napari_viewer, qtbot, monkeypatch
):
    """A newcomer's 1-minute run: 44 steps, none better than the base; the held-out
    gain (0.638 -> 0.659) was the mask threshold's alone, and the dock did not say so."""
    widget = _painted_dock(make_napari_viewer, qtbot)
    card = SimpleNamespace(
        name="x",
        threshold=0.2,
        training={"steps": 44, "best_step": 0, "stopped": "time budget", "note": None},
        metrics={
            "validation_before": {"Dice": 0.638, "clDice": 0.701},
            "validation": {"Dice": 0.659, "clDice": 0.694},
        },
    )
    monkeypatch.setattr(core, "finetune", lambda *a, **k: (object(), card))
    monkeypatch.setattr(core, "save_finetuned", lambda *a, **k: card)
    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT_MS) as blocker:
        widget.start()
    status = widget.status_label.text()
    assert blocker.args == ["done"], status
    assert "Dice 0.638 -> 0.659, clDice 0.701 -> 0.694 at its mask threshold 0.2" in status
    assert "the weights are the base model's; the change is the mask threshold's" in status
    assert "No training step beat the base model" in status
    # trained weights that won on the patches and lost segmented whole: said so (a
    # newcomer watched the patch scores climb, then read "no training step beat it")
    card.training = {**card.training, "kept_base": "the trained weights (step 30, ...)"}
    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT_MS) as blocker:
        widget.start()
    status = widget.status_label.text()
    assert "did better on the validation patches (small crops) but not on the whole" in status
    assert "No training step beat" not in status
    # a step that won on both, at a tuned threshold: the figure at 0.5 says how much of
    # the gain is the threshold's (a newcomer's 1-step run gained by it alone, unsaid)
    card.training = {**card.training, "kept_base": None, "best_step": 1, "steps": 1}
    card.metrics["validation_at_0.5"] = {"Dice": 0.64, "clDice": 0.7}
    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT_MS) as blocker:
        widget.start()
    status = widget.status_label.text()
    assert "held-out part segmented as Segment does, Dice 0.638 -> 0.659" in status
    assert "at its mask threshold 0.2 (at 0.5: Dice 0.640, clDice 0.700)" in status
    assert "base model's" not in status
    # clDice fell (0.701 -> 0.694) while Dice rose: the status says what was checked
    assert "(the mean of Dice and clDice, by which the result is checked against the " in status
    assert "rose: 0.669 -> 0.676; clDice alone fell)" in status
    # the base weights at the base's own threshold: the base model itself, not saved
    # (a newcomer's run saved it, and Segment again changed no voxel)
    saved = []
    monkeypatch.setattr(core, "save_finetuned", lambda *a, **k: saved.append(a) or card)
    card.training = {**card.training, "kept_base": "the trained weights (...)", "steps": 75}
    card.threshold = 0.5
    card.metrics["validation_before"]["threshold"] = 0.5
    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT_MS) as blocker:
        widget.start()
    status = widget.status_label.text()
    # not an error: the run worked and found nothing better (a newcomer read "Error:")
    assert blocker.args == ["unchanged"] and saved == [], status
    assert status.startswith("Not saved: no training step beat the base model on the held-out")
    assert "mask threshold stays 0.5" in status and "(75 training steps, time budget)" in status
    assert "Error" not in status and not widget.rerun_button.isEnabled()


@gui
@pytest.mark.usefixtures("user_dir")
def test_the_idle_status_follows_painting_without_the_button(make_napari_viewer, qtbot):
    """A newcomer painted three slices with napari's own brush, not *Paint corrections*:
    the foot still said "Correct a few slices of a Labels layer and press Start."."""
    _, vol, mask, widget = _empty_labels_picked(make_napari_viewer, qtbot, "my corrections")
    assert widget.status_label.text() == IDLE_STATUS
    for z in (4, 12, 20):
        _correct(mask, vol.mask, z)
    _region_line(widget, qtbot, "Will train on")
    assert widget.status_label.text() == (
        "Painting into 'my corrections': 3 slices so far (the line above says which). "
        "Paint more, spread out, or Start."
    )


@gui
@pytest.mark.usefixtures("user_dir")
def test_the_region_line_names_labels_of_another_shape(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 20, 20), np.float32), name="vessels")
    other = viewer.add_labels(np.zeros((8, 20, 21), np.uint8), name="other labels")
    widget = _dock(viewer, qtbot)
    widget.labels_picker.value = other
    other.data_setitem((np.array([2]), np.array([3]), np.array([4])), 1)
    line = _region_line(widget, qtbot, "Cannot train yet")
    assert "shape (8, 20, 21)" in line and "(8, 20, 20)" in line, line


@gui
@pytest.mark.usefixtures("user_dir")
def test_paint_corrections_shows_segments_hidden_mask_and_takes_the_brush(
    make_napari_viewer, qtbot
):
    # after Segment, its mask (the dock's default labels) is hidden under the shown trees;
    # a newcomer had to find it and show it before painting
    viewer = make_napari_viewer()
    vol = volume()
    viewer.add_image(vol.image, name="vessels", scale=(2.0, 1.0, 1.0))
    mask = viewer.add_labels(
        vol.mask.astype(np.uint8), name="vessels mask", metadata=SEGMENT_MASK, visible=False
    )
    trees_meta = {"napari_topo": {"kind": "trees", "widget": "segment", "model": "tiny-base"}}
    trees = viewer.add_labels(
        vol.mask.astype(np.uint8) * 2, name="vessels trees", metadata=trees_meta
    )
    truth = viewer.add_labels(vol.mask.astype(np.uint8), name="my truth")  # the user's own
    viewer.dims.ndisplay = 3
    widget = _dock(viewer, qtbot)
    assert widget.labels_picker.value is mask
    assert "Paint corrections shows it" in _region_line(widget, qtbot, "Cannot train yet")

    assert widget.paint_corrections() is mask
    assert mask.visible and not trees.visible and truth.visible  # only results are hidden
    assert viewer.layers.selection.active is mask and mask.mode == "paint"
    assert mask.selected_label == 1 and viewer.dims.ndisplay == 2
    status = widget.status_label.text()
    assert status.startswith("Painting into 'vessels mask'. Hid 'vessels trees' above it.")

    # the button itself, with no Labels layer left: an empty one on the image's grid
    for name in ("vessels mask", "vessels trees", "my truth"):
        viewer.layers.remove(name)
    assert widget.labels_picker.value is None
    widget.paint_button.native.click()
    added = viewer.layers["vessels corrections"]
    assert widget.labels_picker.value is added and added.mode == "paint"
    assert added.data.shape == vol.image.shape and tuple(added.scale) == (2.0, 1.0, 1.0)
    assert not added.data.any() and widget.status_label.text().startswith("Added ")
    _correct(added, vol.mask, 9)
    line = _region_line(widget, qtbot, "Will train on")
    assert line.startswith("Will train on: 1 slice along z (9) you painted")
    assert line.endswith("paint 3 or more, spread out, for a check on others.")
    # the status follows the painting ("Correct a few slices ..." read as none painted)
    assert widget.status_label.text() == (
        "Painting into 'vessels corrections': 1 slice so far (the line above says which). "
        "Paint more, spread out, or Start."
    )


@gui
@pytest.mark.usefixtures("user_dir")
def test_the_status_forgets_the_paint_when_segment_replaces_the_mask(make_napari_viewer, qtbot):
    """A Segment run replaces its mask's data: the dock forgets the slices painted in it
    (the region line says so), and the status line, which still told the user to paint
    into it ("Painting into ..."), now says they were forgotten."""
    viewer = make_napari_viewer()
    vol = volume()
    viewer.add_image(vol.image, name="vessels")
    mask = viewer.add_labels(vol.mask.astype(np.uint8), name="vessels mask", metadata=SEGMENT_MASK)
    widget = _dock(viewer, qtbot)
    assert widget.paint_corrections() is mask
    assert widget.status_label.text().startswith("Painting into 'vessels mask'.")
    for z in (4, 9):
        _correct(mask, np.zeros_like(vol.mask), z)
    _region_line(widget, qtbot, "Will train on: 2 slices along z (4, 9)")
    mask.data = vol.mask.astype(np.uint8)  # Segment ran again: its new output
    assert widget.painted(mask) is None
    assert widget.status_label.text() == (
        "Segment replaced 'vessels mask' with its new result: the 2 slices along z (4, 9) "
        "you painted in it are forgotten. Correct a few slices of it (Paint corrections), "
        "then Start."
    )
    _region_line(widget, qtbot, "Cannot train yet")
    # replaced again, nothing painted since: no slices named
    mask.data = vol.mask.astype(np.uint8)
    assert widget.status_label.text().startswith(
        "Segment replaced 'vessels mask' with its new result. Correct a few slices"
    )
    # a layer the status is not about, with nothing painted: the line is left alone
    other = viewer.add_labels(np.zeros(vol.mask.shape, np.uint8), name="other")
    widget._watch_paint(other)
    before = widget.status_label.text()
    other.data = np.ones(vol.mask.shape, np.uint8)
    assert widget.status_label.text() == before


@gui
@pytest.mark.usefixtures("user_dir")
def test_the_added_layers_status_goes_when_another_layer_is_picked(make_napari_viewer, qtbot):
    # a newcomer pressed Paint corrections before segmenting ("Added 'vessels
    # corrections'. Brush ..."), then segmented, picked Segment's mask and corrected it:
    # the line still named the added layer
    viewer = make_napari_viewer()
    vol = volume()
    viewer.add_image(vol.image, name="vessels")
    widget = _dock(viewer, qtbot)
    added = widget.paint_corrections()
    assert added is not None and widget.status_label.text().startswith(
        "Added 'vessels corrections'."
    )
    _correct(added, vol.mask, 9)
    _region_line(widget, qtbot, "Will train on")
    painting = "Painting into 'vessels corrections': 1 slice so far"
    assert widget.status_label.text().startswith(painting)  # in use
    mask = viewer.add_labels(vol.mask.astype(np.uint8), name="vessels mask", metadata=SEGMENT_MASK)
    assert widget.labels_picker.value is added  # the user's own pick stays
    assert widget.status_label.text().startswith(painting)
    widget.labels_picker.value = mask
    assert widget.status_label.text() == IDLE_STATUS


@gui
@pytest.mark.usefixtures("user_dir")
def test_paint_corrections_lifts_a_covered_layer_and_refuses_a_2d_image(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    vol = volume()
    truth = viewer.add_labels(vol.mask.astype(np.uint8), name="my truth")
    viewer.add_image(vol.image, name="vessels")  # above the labels: it would cover them
    widget = _dock(viewer, qtbot)
    assert widget.labels_picker.value is truth
    assert widget.paint_corrections() is truth
    assert viewer.layers.index(truth) == len(viewer.layers) - 1
    status = widget.status_label.text()
    assert "Moved it to the top of the layer list." in status
    assert "A slice you touch counts whole: mark every vessel in it." in status
    # no Labels layer and an RGB picture: one line, nothing added
    viewer.layers.clear()
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="photo", rgb=True)
    widget.image_picker.value = viewer.layers["photo"]
    assert widget.paint_corrections() is None and len(viewer.layers) == 1
    assert widget.status_label.text().startswith("Error: 'photo' is not a 3D grey-level volume")


@gui
@pytest.mark.usefixtures("user_dir")
def test_segment_again_adds_a_second_rounds_corrections_to_the_kept_copy(
    make_napari_viewer, qtbot, monkeypatch
):
    """Round 2 painted in the new mask (not the kept copy): Segment again replaced them and
    the copy picked for training lacked them (reviewer)."""
    viewer = make_napari_viewer()
    vol = volume()
    viewer.add_image(vol.image, name="vessels")
    mask = viewer.add_labels(
        np.zeros(vol.mask.shape, np.uint8), name="vessels mask", metadata=SEGMENT_MASK
    )
    widget = _dock(viewer, qtbot)
    _correct(mask, vol.mask, 5)  # round 1
    widget._job = SimpleNamespace(image="vessels", labels="vessels mask")
    widget._last_card = SimpleNamespace(name="ft")
    slots = []
    finished = SimpleNamespace(connect=slots.append, disconnect=slots.remove)
    segment = SimpleNamespace(
        select_model=lambda name: None, image_picker=None, run=lambda: "w", finished=finished
    )
    monkeypatch.setattr(widget, "_segment_widget", lambda create=False: segment)
    monkeypatch.setattr("napari_topo.widgets.finetune.select_layer", _select)

    def segment_runs():
        """What Segment's run does: the mask replaced by the new model's, then done."""
        mask.data = np.zeros(vol.mask.shape, np.uint8)
        slots[-1]("done")

    assert widget.segment_again() == "w"
    copy = viewer.layers["vessels mask (corrected)"]
    assert widget.painted(copy) == [(0, [5])] and not copy.visible
    segment_runs()
    # the correction is carried into the new mask, which is picked for round 2
    assert widget.labels_picker.value is mask and widget.painted(mask) == [(0, [5])]
    assert np.array_equal(mask.data[5] > 0, vol.mask[5]) and not mask.data[20].any()
    _correct(mask, vol.mask, 20)  # round 2, in the new mask
    assert widget.painted(mask) == [(0, [5, 20])]
    assert widget.segment_again() == "w"
    assert not copy.visible and widget.painted(copy) == [(0, [5, 20])]
    assert np.array_equal(copy.data[20] > 0, vol.mask[20])
    assert np.array_equal(copy.data[5] > 0, vol.mask[5])
    segment_runs()
    assert widget.painted(mask) == [(0, [5, 20])] and not slots


def _select(picker, layer):
    """select_layer for a real picker; the fake Segment widget's picker is None."""
    from napari_topo.widgets._common import select_layer

    return picker is not None and select_layer(picker, layer)


@gui
@pytest.mark.usefixtures("user_dir")
def test_strokes_in_a_3d_view_are_named_in_the_region_line(make_napari_viewer, qtbot):
    # a newcomer's three brush dots in 3D made three whole z-slices "painted", unsaid
    viewer, _, labels, widget = _empty_labels_picked(make_napari_viewer, qtbot, "my labels")
    labels.paint((8, 10, 10), 1)  # in 2D: nothing more to say
    line = _region_line(widget, qtbot, "Will train on")
    assert "3D view" not in line
    viewer.dims.ndisplay = 3
    labels.paint((20, 10, 10), 1)
    qtbot.waitUntil(lambda: "3D view" in widget.region_label.text(), timeout=5000)
    assert (
        "Some strokes were made in a 3D view: every slice they touched counts whole "
        "(check those slices in 2D)." in widget.region_label.text()
    )


def test_paint_record_lets_go_of_ignored_atoms_off_the_stacks():
    """The atoms on the undo / redo stacks when the data were replaced are ignored: held
    (an id alone could be taken by a new stroke's atom once the old one is freed, and
    that stroke would not count) and let go once they leave both stacks."""
    from collections import deque

    def atom(z):
        return ((np.array([z]), np.array([1]), np.array([1])), None, 1)

    old = [atom(2)]
    layer = SimpleNamespace(
        _undo_history=deque([old], maxlen=2), _redo_history=deque(), data=np.zeros((8, 4, 4))
    )
    record = PaintRecord(3)
    record.clear(layer)  # the data were replaced; the old stroke stays on napari's stack
    assert record.ignored == {id(old[0]): old[0]}
    assert record.painted(layer) is None  # it does not count
    # undo and redo move the same atoms between napari's stacks: still ignored
    layer._redo_history.append(layer._undo_history.pop())
    assert record.painted(layer) is None and id(old[0]) in record.ignored
    layer._undo_history.append(layer._redo_history.pop())
    assert record.painted(layer) is None and id(old[0]) in record.ignored
    new = [atom(5)]
    layer._undo_history.append(new)
    record.add(new, (8, 4, 4))
    assert record.painted(layer) == [(0, [5])] and id(old[0]) in record.ignored
    for z in (6, 7):  # two more strokes push the old one off the stack (maxlen 2)
        layer._undo_history.append([atom(z)])
        record.add(layer._undo_history[-1], (8, 4, 4))
    assert record.painted(layer) == [(0, [5, 6, 7])]
    assert record.ignored == {}  # let go: its id can no longer hide a new stroke


@gui
@pytest.mark.usefixtures("user_dir")
def test_trains_follows_the_base_model_until_the_user_picks(make_napari_viewer, qtbot):
    """Trains defaults to a voxel classifier on a U-Net and to every weight on a TopNet
    (which takes no head); a user's own pick stays when the base changes, except a head
    on a TopNet."""
    from napari_topo.models.registry import user_models_dir

    save_tiny_base(user_models_dir(), "tiny-top", arch="topnet")
    save_tiny_base(user_models_dir(), "tiny-other", seed=1)
    widget = _dock(make_napari_viewer(), qtbot)
    widget._refresh_models("tiny-base")
    widget.model_picker.value = "tiny-base"
    assert widget.layers_picker.value == "head"
    widget.model_picker.value = "tiny-top"
    assert widget.layers_picker.value == "all"
    widget.model_picker.value = "tiny-base"
    assert widget.layers_picker.value == "head"
    widget.layers_picker.value = "decoder"  # the user's pick
    widget.model_picker.value = "tiny-other"
    assert widget.layers_picker.value == "decoder"
    widget.layers_picker.value = "head"
    widget.model_picker.value = "tiny-top"
    assert widget.layers_picker.value == "all"
    widget.layers_picker.value = "head"  # a TopNet takes none: it goes back at once
    assert widget.layers_picker.value == "all"
    widget.model_picker.value = "tiny-base"  # the user's pick comes back
    assert widget.layers_picker.value == "head"
    widget.layers_picker.value = "all"
    widget.model_picker.value = "tiny-top"
    widget.model_picker.value = "tiny-other"
    assert widget.layers_picker.value == "all"


@gui
@pytest.mark.usefixtures("user_dir")
def test_trains_a_voxel_classifier_picked_in_the_dock_and_segments_with_it(
    make_napari_viewer, qtbot
):
    """Trains: 'a voxel classifier' fine-tunes the head on painted slices; the saved model
    (unet3d-voxel-head) segments the image with its head."""
    from napari_topo.inference import segment

    widget = _painted_dock(make_napari_viewer, qtbot)
    # the default on a U-Net base (better than every weight on every real volume measured)
    assert widget.layers_picker.value == "head"
    assert list(widget.layers_picker.choices) == ["all", "decoder", "head"]
    widget.steps_box.value = 300
    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT_MS) as blocker:
        assert widget.start() is not None
    assert blocker.args == ["done"], widget.status_label.text()
    card = widget.last_card
    assert card.architecture == "unet3d-voxel-head" and card.training["layers"] == "head"
    assert card.name in [c.name for c in list_models()]
    # the status says what was made (a newcomer could not tell)
    assert "followed by a voxel classifier" in widget.status_label.text()
    image = widget.image_picker.value
    result = segment(np.asarray(image.data), card.name, device="cpu")
    assert result.compute["voxel head"].startswith("on the whole volume")
    # a head model as the next base: Trains follows (its network stays frozen)
    widget.layers_picker.value = "all"
    widget._refresh_choices()
    widget.model_picker.value = card.name
    assert widget.layers_picker.value == "head"
