"""GUI tests of the "Topology metrics" dock widget (napari_topo.widgets.metrics).

They drive the widget as a user would: add layers, pick them, press Compute, wait for
the worker, read the table. Run under Xvfb (pytest-xvfb starts it automatically).
The README's screenshot of this widget (on the sample data) comes from
``docs/make_screenshots.py``.
"""

from __future__ import annotations

import csv
import json
import math
import re
import threading

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari.utils.notifications import NotificationSeverity, notification_manager  # noqa: E402

from napari_topo.topology import metrics as core  # noqa: E402
from napari_topo.widgets.metrics import (  # noqa: E402
    MetricsWidget,
    format_metric_value,
    paint_changes,
)

PLUGIN = "napari-topo"
WIDGET_NAME = "Topology metrics"
SCALE = (2.0, 1.0, 1.0)
TIMEOUT_MS = 60_000

gui = pytest.mark.gui
# The widget must use napari's public API only: a private attribute read through the
# viewer proxy that napari hands to plugin widgets warns, and this makes it an error.
no_private_access = pytest.mark.filterwarnings("error:Private attribute access")


# ------------------------------------------------------------------------------ data


def tube() -> np.ndarray:
    """A straight 5x5-voxel bar along x in a 32^3 volume (one component, no loop).

    Odd width on purpose: scikit-image's 3D thinning deletes bars of even width
    entirely (scikit-image issue #3757), which would leave clDice nothing to score.
    """
    vol = np.zeros((32, 32, 32), dtype=np.uint8)
    vol[14:19, 14:19, 4:28] = 1
    return vol


def broken_tube() -> np.ndarray:
    """The same bar with a 2-voxel gap: two components, so Betti-0 error is 1."""
    vol = tube()
    vol[:, :, 15:17] = 0
    return vol


def expected_dice() -> float:
    n_gt = 5 * 5 * 24
    n_pred = 5 * 5 * 22
    return 2 * n_pred / (n_pred + n_gt)  # the prediction lies inside the ground truth


# ------------------------------------------------------------------------------ helpers


def add_pair(viewer, pred=None, gt=None):
    pred_layer = viewer.add_labels(
        broken_tube() if pred is None else pred, name="pred", scale=SCALE
    )
    gt_layer = viewer.add_labels(tube() if gt is None else gt, name="gt", scale=SCALE)
    return pred_layer, gt_layer


def dock_via_manifest(viewer) -> MetricsWidget:
    """Open the widget the way napari's Plugins menu does, through napari.yaml."""
    from npe2 import PluginManifest

    try:  # napari skips a plugin whose manifest does not validate: say why up front
        PluginManifest.from_distribution(PLUGIN)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"{PLUGIN}'s napari.yaml does not validate, so napari ignores it: {exc}")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET_NAME)
    assert isinstance(widget, MetricsWidget)
    return widget


def pick(widget: MetricsWidget, pred, gt) -> None:
    widget.prediction_picker.value = pred
    widget.ground_truth_picker.value = gt
    assert widget.prediction_picker.value is not None
    assert widget.prediction_picker.value.name == pred.name
    assert widget.ground_truth_picker.value.name == gt.name


def wait_done(qtbot, widget: MetricsWidget) -> None:
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)
    # `finished` re-enables the button after `returned` filled the table.
    qtbot.waitUntil(widget.compute_button.isEnabled, timeout=TIMEOUT_MS)


def table_rows(widget: MetricsWidget) -> dict[str, str]:
    table = widget.table
    # a name without its unit ("HD95 (mm)" -> "HD95")
    t = table
    return {t.item(r, 0).text().split(" (")[0]: t.item(r, 1).text() for r in range(t.rowCount())}


def picker_names(picker) -> list[str]:
    return [layer.name for layer in picker.choices if layer is not None]


def new_notifications(start: int):
    return notification_manager.records[start:]


# ------------------------------------------------------------------------------ tests


def test_format_metric_value():
    assert format_metric_value(0.912345) == "0.9123"
    assert format_metric_value(12345.678) == "1.235e+04"
    assert format_metric_value(1.0) == "1"
    assert format_metric_value(np.float32(0.5)) == "0.5"
    assert format_metric_value(float("nan")) == "n/a"
    assert format_metric_value(None) == "n/a"
    assert format_metric_value(-0.0) == "0"
    assert format_metric_value(float("inf")) == "inf"
    # the metrics dock showed a volume error of -0.009001 next to 0.8989: one resolution
    assert format_metric_value(-0.009001) == "-0.009"
    assert format_metric_value(1.41421356) == "1.4142"
    assert format_metric_value(123.456) == "123.456"
    assert format_metric_value(3e-6) == "3.00e-06"
    assert format_metric_value(42.0) == "42"


@gui
@no_private_access
def test_manifest_widget_computes_broken_tube(make_napari_viewer, qtbot):
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer()
    pred, gt = add_pair(viewer)
    widget = dock_via_manifest(viewer)
    pick(widget, pred, gt)

    qtbot.mouseClick(widget.compute_button, Qt.MouseButton.LeftButton)
    assert widget.is_running or widget.table.rowCount() > 0
    wait_done(qtbot, widget)

    rows = table_rows(widget)
    assert rows["Dice"] == format_metric_value(expected_dice()) == "0.9565"
    assert rows["Betti-0 error"] == "1"
    assert rows["CCE 3D"] == "1"
    assert rows["Precision"] == "1"
    # The table mirrors the core exactly, with ground-truth spacing: the headline
    # metrics first (Tree accuracy stays in view while editing), then the core's order.
    expected = core.compute_metrics(broken_tube(), tube(), spacing=SCALE)
    first = [k for k in ("Dice", "clDice", "Tree accuracy") if k in expected]
    assert list(rows) == first + [k for k in expected if k not in first]
    assert rows == {k: format_metric_value(v) for k, v in expected.items()}
    assert widget.results == pytest.approx(expected, nan_ok=True)

    # Tooltips come from METRIC_DESCRIPTIONS.
    assert widget.table.item(0, 0).toolTip() == core.METRIC_DESCRIPTIONS["Dice"]
    status = widget.status_label.text()
    assert "'pred'" in status and "'gt'" in status
    assert "spacing 2×1×1" in status
    assert "computed in" in status and status.rstrip().endswith("s.")
    assert widget.export_button.isEnabled()


@gui
def test_identical_layers_give_perfect_scores(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    a = viewer.add_labels(tube(), name="a", scale=SCALE)
    b = viewer.add_labels(tube(), name="b", scale=SCALE)
    widget = MetricsWidget(viewer)
    qtbot.addWidget(widget)
    pick(widget, a, b)
    widget.compute_button.click()
    wait_done(qtbot, widget)
    rows = table_rows(widget)
    assert rows["Dice"] == "1"
    assert rows["clDice"] == "1"
    assert rows["Betti-0 error"] == "0"
    assert rows["HD95"] == "0"
    names = [widget.table.item(r, 0).text() for r in range(widget.table.rowCount())]
    assert "HD95 (scale units)" in names  # a distance says its unit (the scale's)
    assert "Tree accuracy" not in rows  # single-label volumes


@gui
def test_worker_runs_off_gui_thread_and_button_waits(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    pred, gt = add_pair(viewer)
    pred.scale = (1.0, 1.0, 1.0)  # spacing must come from the ground truth
    widget = MetricsWidget(viewer)
    qtbot.addWidget(widget)
    pick(widget, pred, gt)

    release = threading.Event()
    calls = []
    real = core.compute_metrics

    def spy(p, g, **kwargs):
        calls.append((threading.current_thread(), p.shape, g.shape, kwargs))
        assert release.wait(TIMEOUT_MS / 1000)
        return real(p, g, **kwargs)

    monkeypatch.setattr(core, "compute_metrics", spy)
    try:
        assert widget.compute() is True
        qtbot.waitUntil(lambda: bool(calls), timeout=TIMEOUT_MS)
        # While the worker is busy the GUI thread is free, and Compute is disabled.
        assert widget.is_running
        assert not widget.compute_button.isEnabled()
        assert widget.compute_button.text() == "Computing…"
        assert widget.compute() is False
    finally:
        release.set()
    wait_done(qtbot, widget)
    assert widget.compute_button.text() == "Compute"

    assert len(calls) == 1
    thread, p_shape, g_shape, kwargs = calls[0]
    assert thread is not threading.main_thread()
    assert p_shape == g_shape == (32, 32, 32)
    assert kwargs["spacing"] == SCALE
    assert table_rows(widget)["Betti-0 error"] == "1"
    assert "different scales" in widget.status_label.text()


@gui
def test_closing_the_widget_while_computing_is_safe(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    pred, gt = add_pair(viewer)
    widget = MetricsWidget(viewer)
    pick(widget, pred, gt)
    release = threading.Event()
    real = core.compute_metrics
    done = threading.Event()

    def slow(p, g, **kwargs):
        try:
            assert release.wait(TIMEOUT_MS / 1000)
            return real(p, g, **kwargs)
        finally:
            done.set()

    monkeypatch.setattr(core, "compute_metrics", slow)
    try:
        assert widget.compute() is True
        widget.close()
        widget.deleteLater()
        qtbot.wait(50)
        viewer.add_labels(tube(), name="added after the widget went")  # no dead callback
    finally:
        release.set()
    qtbot.waitUntil(done.is_set, timeout=TIMEOUT_MS)
    qtbot.wait(200)  # let the worker's queued signals arrive (and find no widget)


@gui
def test_tree_accuracy_and_missing_descriptions(make_napari_viewer, qtbot, monkeypatch):
    """Two labelled trees add a row; a metric without description still shows."""
    monkeypatch.setattr(core, "METRIC_DESCRIPTIONS", {"Dice": "overlap"})
    viewer = make_napari_viewer()
    two = tube()
    two[14:19, 4:9, 4:28] = 2
    pred, gt = add_pair(viewer, pred=two.copy(), gt=two)
    widget = MetricsWidget(viewer)
    qtbot.addWidget(widget)
    pick(widget, pred, gt)
    widget.compute()
    wait_done(qtbot, widget)
    rows = table_rows(widget)
    assert rows["Tree accuracy"] == "1"
    assert widget.table.item(0, 0).toolTip() == "overlap"
    assert widget.table.item(1, 0).toolTip() == ""


@gui
@no_private_access
def test_pickers_follow_the_layer_list(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = dock_via_manifest(viewer)
    assert widget.prediction_picker.choices == (None,)
    # nothing to score yet: the empty table takes no room from the docks below
    assert widget.table.isHidden()

    # a Labels layer not named like a ground truth (a liver mask) is not taken as one
    viewer.add_labels(tube(), name="liver")
    assert widget.ground_truth_picker.value is None and widget.table.isHidden()
    viewer.layers.remove("liver")
    viewer.add_labels(tube(), name="first labels")
    assert not widget.table.isHidden()  # a ground truth: the table, at its full height
    assert picker_names(widget.prediction_picker) == ["first labels"]
    # A layer the plugin did not make is a reference: never the default prediction.
    assert widget.prediction_picker.value is None
    assert widget.ground_truth_picker.value.name == "first labels"

    viewer.add_labels(tube(), name="second labels")
    assert picker_names(widget.ground_truth_picker) == ["first labels", "second labels"]
    assert widget.prediction_picker.value is None  # two references are not paired
    widget.prediction_picker.value = viewer.layers["first labels"]  # the user's choice
    widget.ground_truth_picker.value = viewer.layers["second labels"]

    viewer.add_image(np.zeros((8, 8), dtype=np.float32), name="raw")
    viewer.add_points(np.zeros((1, 2)), name="pts")
    assert picker_names(widget.prediction_picker) == ["first labels", "second labels", "raw"]

    viewer.layers["second labels"].name = "renamed labels"
    assert picker_names(widget.ground_truth_picker) == ["first labels", "renamed labels", "raw"]
    assert widget.ground_truth_picker.value.name == "renamed labels"  # selection kept

    viewer.layers.remove("first labels")
    assert "first labels" not in picker_names(widget.prediction_picker)
    assert "first labels" not in picker_names(widget.ground_truth_picker)
    # the user's prediction is gone and no layer the plugin made is there: none
    assert widget.prediction_picker.value is None
    assert widget.ground_truth_picker.value.name == "renamed labels"

    viewer.layers.clear()
    assert widget.prediction_picker.choices == (None,)
    assert widget.prediction_picker.value is None
    assert widget.table.isHidden()


def _rgb(viewer):
    viewer.add_labels(tube(), name="gt")
    return viewer.add_image(np.zeros((32, 32, 3), dtype=np.uint8), name="pred", rgb=True)


BAD_INPUTS = {
    # case: (how to build the prediction layer (returns it), words the message must hold)
    "same layer": (lambda v: v.add_labels(tube(), name="gt"), "same layer"),
    "shape mismatch": (
        lambda v: (
            v.add_labels(tube(), name="gt"),
            v.add_labels(np.zeros((32, 32, 30), np.uint8), name="pred"),
        )[1],
        "(32, 32, 30)",
    ),
    "2D vs 3D": (
        lambda v: (
            v.add_labels(tube(), name="gt"),
            v.add_labels(np.zeros((32, 32), np.uint8), name="pred"),
        )[1],
        "2D",
    ),
    "RGB image": (_rgb, "RGB"),
    "empty layer": (
        lambda v: (
            v.add_labels(tube(), name="gt"),
            v.add_image(np.zeros((0, 32, 32), np.uint8), name="pred"),
        )[1],
        "empty",
    ),
    "4D layer": (
        lambda v: (
            v.add_labels(tube(), name="gt"),
            v.add_labels(np.zeros((2, 32, 32, 32), np.uint8), name="pred"),
        )[1],
        "4D",
    ),
    # Rejected by the core in the worker: its ValueError message is shown.
    "probabilities": (
        lambda v: (
            v.add_labels(tube(), name="gt"),
            v.add_image(np.full((32, 32, 32), 0.5, np.float32), name="pred"),
        )[1],
        "binary",
    ),
    "negative labels": (
        lambda v: (
            v.add_labels(tube(), name="gt"),
            v.add_image(-np.ones((32, 32, 32), np.int16), name="pred"),
        )[1],
        "non-negative",
    ),
}


@gui
@pytest.mark.parametrize("case", list(BAD_INPUTS))
# napari itself warns when it gets a zero-size layer; that is not what is tested here.
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_bad_input_shows_a_message(make_napari_viewer, qtbot, case):
    viewer = make_napari_viewer()
    build, words = BAD_INPUTS[case]
    pred = build(viewer)
    widget = MetricsWidget(viewer)
    qtbot.addWidget(widget)
    widget.prediction_picker.value = pred
    widget.ground_truth_picker.value = viewer.layers["gt"]
    start = len(notification_manager.records)

    widget.compute_button.click()
    wait_done(qtbot, widget)

    status = widget.status_label.text()
    assert status.startswith("Error: ")
    assert words in status
    errors = [n for n in new_notifications(start) if n.severity == NotificationSeverity.ERROR]
    assert [n.message for n in errors] == [status.removeprefix("Error: ")]
    assert widget.table.rowCount() == 0
    assert widget.table.isHidden()  # no empty table under the message
    assert widget.results == {}
    assert not widget.export_button.isEnabled()
    assert widget.compute_button.isEnabled()


@gui
def test_missing_layers_and_empty_foreground(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = MetricsWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.compute() is False
    assert "Pick a prediction and a ground truth" in widget.status_label.text()

    # An all-background prediction is a valid comparison, with a warning.
    pred = viewer.add_labels(np.zeros((32, 32, 32), np.uint8), name="nothing", scale=SCALE)
    gt = viewer.add_labels(tube(), name="gt", scale=SCALE)
    pick(widget, pred, gt)
    start = len(notification_manager.records)
    assert widget.compute() is True
    wait_done(qtbot, widget)
    assert table_rows(widget)["Dice"] == "0"
    assert table_rows(widget)["Precision"] == "n/a"
    status = widget.status_label.text()
    assert "computed in" in status and "no foreground" in status
    warnings = [n for n in new_notifications(start) if n.severity == NotificationSeverity.WARNING]
    assert any("'nothing' has no foreground" in n.message for n in warnings)


@gui
def test_export_csv_and_json(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    pred, gt = add_pair(viewer)
    widget = MetricsWidget(viewer)
    qtbot.addWidget(widget)
    with pytest.raises(RuntimeError, match="compute the metrics first"):
        widget.export(tmp_path / "early.csv")
    pick(widget, pred, gt)
    widget.compute()
    wait_done(qtbot, widget)
    shown = table_rows(widget)

    csv_path = widget.export(tmp_path / "metrics.csv")
    with csv_path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["metric", "value"]
    from_csv = {name: float(value) for name, value in rows[1:]}
    assert list(from_csv) == list(shown)
    assert {k: format_metric_value(v) for k, v in from_csv.items()} == shown
    assert from_csv == pytest.approx(widget.results, nan_ok=True)

    json_path = widget.export(str(tmp_path / "metrics.JSON"))
    payload = json.loads(json_path.read_text())
    assert payload["prediction"] == "pred" and payload["ground_truth"] == "gt"
    assert payload["spacing"] == list(SCALE)
    assert payload["shape"] == [32, 32, 32]
    from_json = {k: (math.nan if v is None else v) for k, v in payload["metrics"].items()}
    assert list(from_json) == list(shown)
    assert {k: format_metric_value(v) for k, v in from_json.items()} == shown

    with pytest.raises(ValueError, match=r"\.csv or \.json"):
        widget.export(tmp_path / "metrics.xlsx")


@gui
def test_export_into_a_missing_folder_says_so(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    viewer = make_napari_viewer()
    pred, gt = add_pair(viewer)
    widget = MetricsWidget(viewer)
    qtbot.addWidget(widget)
    pick(widget, pred, gt)
    widget.compute()
    wait_done(qtbot, widget)
    target = tmp_path / "no" / "such" / "metrics.csv"
    with pytest.raises(ValueError, match="no such folder"):
        widget.export(target)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    start = len(notification_manager.records)
    widget.export_button.click()
    message = f"cannot export to {target}: no such folder {target.parent}; pick an existing folder."
    assert widget.status_label.text() == "Error: " + message
    assert [n.message for n in new_notifications(start)] == [message]
    assert not target.parent.exists()
    # a folder where the file should be: one line too, no "[Errno 21]"
    folder = tmp_path / "taken.csv"
    folder.mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(folder), ""))
    widget.export_button.click()
    status = widget.status_label.text()
    assert status == f"Error: cannot export to {folder}: it is a folder; give a file name."


# ------------------------------------------------------------------------------ live


def settled(widget: MetricsWidget) -> bool:
    """No worker running, nothing queued or stale: the table shows the current layers."""
    return (
        not widget.is_running
        and widget.results != {}
        and not widget.stale_metrics
        and widget.compute_button.isEnabled()
    )


def assert_table_is_current(widget: MetricsWidget, pred, gt) -> None:
    expected = core.compute_metrics(pred.data, gt.data, spacing=SCALE)
    assert widget.results == pytest.approx(expected, nan_ok=True)
    assert table_rows(widget) == {k: format_metric_value(v) for k, v in expected.items()}


def gap_indices():
    gap = np.zeros((32, 32, 32), bool)
    gap[14:19, 14:19, 15:17] = True
    return np.nonzero(gap)


def test_paint_changes_reads_napari_history_atoms():
    """Both atom kinds napari 0.9 emits (masked paint/fill and data_setitem tuples)."""
    from napari.layers import Labels

    layer = Labels(np.zeros((8, 9, 10), np.uint8))
    layer.n_edit_dimensions = 3
    layer.brush_size = 3
    seen = []
    layer.events.paint.connect(lambda e: seen.append(e.value))
    for action in (
        lambda: layer.paint((4, 4, 4), 2),
        lambda: layer.data_setitem((np.array([0, 7]), np.array([0, 8]), np.array([0, 9])), 5),
        lambda: layer.fill((4, 4, 4), 3),
        lambda: layer.paint((4, 4, 5), 0),
    ):
        before = np.array(layer.data, copy=True)
        action()
        after = np.array(layer.data, copy=True)
        changes = paint_changes(seen[-1], layer.data.shape)
        rebuilt = before.copy()
        for idx, values in changes:
            rebuilt[idx] = values
        np.testing.assert_array_equal(rebuilt, after)
        assert (before != after).any()
    assert len(seen) == 4


@gui
def test_live_paint_updates_table(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    pred, gt = add_pair(viewer)
    widget = MetricsWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.live_checkbox.isChecked()  # on by default
    pick(widget, pred, gt)
    widget.compute()
    wait_done(qtbot, widget)
    assert table_rows(widget)["Betti-0 error"] == "1"

    # Repair the break through the API a brush uses: the table follows by itself.
    pred.data_setitem(gap_indices(), 1)
    assert widget.stale_metrics  # greyed until recomputed
    qtbot.waitUntil(lambda: widget.results.get("Betti-0 error") == 0.0, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: settled(widget), timeout=TIMEOUT_MS)
    assert widget._fast_seconds is not None  # the incremental path did the fast rows
    assert_table_is_current(widget, pred, gt)
    assert table_rows(widget)["Dice"] == "1"
    assert widget.freshness_label.text().startswith("Live: updated")

    # Erase a 3D brush ball in the middle (a masked-paint atom): split again.
    pred.n_edit_dimensions = 3
    pred.brush_size = 9
    pred.paint((16, 16, 16), 0)
    qtbot.waitUntil(lambda: widget.results.get("Dice", 1.0) < 1.0, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: settled(widget), timeout=TIMEOUT_MS)
    assert_table_is_current(widget, pred, gt)
    assert widget.results["Betti-0 error"] == 1.0

    # Editing the ground truth is followed too.
    gt.data_setitem(gap_indices(), 0)
    gt.n_edit_dimensions = 3
    gt.brush_size = 9
    gt.paint((16, 16, 16), 0)  # now the ground truth lies inside the prediction
    qtbot.waitUntil(lambda: widget.results.get("Recall") == 1.0, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: settled(widget), timeout=TIMEOUT_MS)
    assert_table_is_current(widget, pred, gt)


@gui
def test_a_box_result_is_scored_inside_its_box_of_the_truth(make_napari_viewer, qtbot):
    """Segment's Region 'box' result beside the whole ground truth: a newcomer's
    40-slice CT run was refused ('shape differs'); it is scored inside its box, Live
    follows paint on the truth inside the box only, and the errors land in place."""
    viewer = make_napari_viewer()
    scale = (2.0, 1.0, 1.0)
    gt = viewer.add_labels(tube(), name="gt", scale=scale, translate=(10.0, 0.0, 0.0))
    box = (slice(4, 24), slice(6, 30), slice(0, 32))
    pred = viewer.add_labels(
        broken_tube()[box],
        name="pred",
        scale=scale,
        translate=(18.0, 6.0, 0.0),  # the box's corner in the truth's world
        metadata={"napari_topo": {"region": {"kind": "box"}}},  # as Segment's results
    )
    widget = MetricsWidget(viewer)
    qtbot.addWidget(widget)
    pick(widget, pred, gt)
    widget.compute()
    wait_done(qtbot, widget)

    def expected():
        return core.compute_metrics(pred.data, gt.data[box], spacing=scale)

    assert widget.results == pytest.approx(expected(), nan_ok=True)
    assert widget.results["Betti-0 error"] == 1.0
    assert "covers only the box z 4:24, y 6:30, x 0:32 of 'gt'" in widget.status_label.text()

    # paint on the truth inside the box: the gap of the prediction made true there
    gt.data_setitem(gap_indices(), 0)
    qtbot.waitUntil(lambda: widget.results.get("Recall") == 1.0, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: settled(widget), timeout=TIMEOUT_MS)
    assert widget.results == pytest.approx(expected(), nan_ok=True)
    # paint outside the box changes nothing scored
    before = dict(widget.results)
    gt.data_setitem((np.array([0, 1]), np.array([0, 0]), np.array([0, 0])), 1)
    qtbot.waitUntil(lambda: settled(widget), timeout=TIMEOUT_MS)
    assert widget.results == pytest.approx(before, nan_ok=True)

    # the errors are found inside the box and placed in the truth's world
    gt.data_setitem(gap_indices(), 1)
    qtbot.waitUntil(lambda: settled(widget), timeout=TIMEOUT_MS)
    assert widget.show_errors() is True
    qtbot.waitUntil(widget.errors_button.isEnabled, timeout=TIMEOUT_MS)
    missed = viewer.layers["pred missed centerline"]
    assert len(missed.data) > 0
    world = np.asarray(missed.data) * np.asarray(scale) + np.asarray(missed.translate)
    # at the prediction's gap (x 15-16) on the bar's axis: truth voxel (16, 16, x), world
    # z 10 + 2 * 16 = 42 and y 16 (placed by the truth's translate alone: z 34, y 10)
    assert np.all((world[:, 2] >= 14) & (world[:, 2] <= 17))
    np.testing.assert_allclose(world[:, :2], [[42.0, 16.0]] * len(world))
    # the list names the truth's voxels, not the box's (which read z 12, y 10)
    texts = [widget.errors_list.item(i).text() for i in range(widget.errors_list.count())]
    assert any("voxels at (16, 16, " in t for t in texts), texts


@gui
def test_undo_without_paint_event_is_caught_up(make_napari_viewer, qtbot):
    """napari's undo emits no paint event; the refresh it does triggers a check."""
    viewer = make_napari_viewer()
    pred, gt = add_pair(viewer)
    widget = MetricsWidget(viewer)
    qtbot.addWidget(widget)
    pick(widget, pred, gt)
    widget.compute()
    wait_done(qtbot, widget)
    pred.data_setitem(gap_indices(), 1)
    qtbot.waitUntil(lambda: widget.results.get("Betti-0 error") == 0.0, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: settled(widget), timeout=TIMEOUT_MS)
    pred.undo()
    assert pred.data[16, 16, 15] == 0
    # at once, before the recompute: every row greyed and the label says so (a newcomer
    # saw old and new values mixed for seconds after an undo on a large volume)
    assert widget.stale_metrics == set(widget.results)
    assert re.search(r"; \d+ rows recomputing…$", widget.freshness_label.text())
    assert "clDice" in widget.freshness_label.toolTip()  # which ones: greyed, and here
    qtbot.waitUntil(lambda: widget.results.get("Betti-0 error") == 1.0, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: settled(widget), timeout=TIMEOUT_MS)
    assert_table_is_current(widget, pred, gt)
    assert not widget.stale_metrics
    # redo too; a refresh that changes nothing (as scrolling does) greys nothing
    pred.redo()
    assert widget.stale_metrics == set(widget.results)
    qtbot.waitUntil(lambda: widget.results.get("Betti-0 error") == 0.0, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: settled(widget), timeout=TIMEOUT_MS)
    assert_table_is_current(widget, pred, gt)
    pred.refresh()
    assert not widget.stale_metrics
    # after an undo, a new stroke's first dab empties the redo history before its paint
    # event: still an ordinary edit, done by the fast path
    pred.undo()
    qtbot.waitUntil(lambda: settled(widget), timeout=TIMEOUT_MS)
    pred._begin_stroke()
    pred.data_setitem(gap_indices(), 1)  # staged: no paint event yet
    assert not widget.stale_metrics
    pred._commit_stroke()
    qtbot.waitUntil(lambda: widget.results.get("Betti-0 error") == 0.0, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: settled(widget), timeout=TIMEOUT_MS)
    assert_table_is_current(widget, pred, gt)


@gui
def test_live_without_compute_and_new_data(make_napari_viewer, qtbot):
    """An edit before any Compute, and a whole new array, both fill the table."""
    viewer = make_napari_viewer()
    pred, gt = add_pair(viewer)
    widget = MetricsWidget(viewer)
    qtbot.addWidget(widget)
    pick(widget, pred, gt)
    pred.data_setitem(gap_indices(), 1)
    qtbot.waitUntil(lambda: settled(widget), timeout=TIMEOUT_MS)
    assert_table_is_current(widget, pred, gt)
    pred.data = broken_tube()
    qtbot.waitUntil(lambda: widget.results.get("Betti-0 error") == 1.0, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: settled(widget), timeout=TIMEOUT_MS)
    assert_table_is_current(widget, pred, gt)


@gui
def test_live_off_stops_updates(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    pred, gt = add_pair(viewer)
    widget = MetricsWidget(viewer)
    qtbot.addWidget(widget)
    pick(widget, pred, gt)
    widget.compute()
    wait_done(qtbot, widget)
    before = widget.results
    widget.live_checkbox.setChecked(False)
    pred.data_setitem(gap_indices(), 1)
    qtbot.wait(1000)
    assert not widget.is_running
    assert widget.results == pytest.approx(before, nan_ok=True)
    assert widget.stale_metrics == set(before)
    assert "Live off" in widget.freshness_label.text()
    # Back on: the table catches up.
    widget.live_checkbox.setChecked(True)
    qtbot.waitUntil(lambda: settled(widget), timeout=TIMEOUT_MS)
    assert_table_is_current(widget, pred, gt)


def two_bars(bridge: bool) -> np.ndarray:
    vol = np.zeros((32, 32, 32), np.uint8)
    vol[14:19, 6:11, 4:28] = 1
    vol[14:19, 21:26, 4:28] = 1
    if bridge:
        vol[15:18, 11:21, 15:18] = 1
    return vol


@gui
def test_show_errors_adds_layers_and_jumps(make_napari_viewer, qtbot):
    from napari_topo.topology.errors import topology_errors

    viewer = make_napari_viewer()
    pred, gt = add_pair(viewer)
    widget = MetricsWidget(viewer)
    qtbot.addWidget(widget)
    pick(widget, pred, gt)
    expected = topology_errors(broken_tube(), tube())
    assert len(expected["missed_locations"]) == 1

    assert widget.show_errors(jump=True) is True  # asked to go to the first error
    qtbot.waitUntil(lambda: "pred false centerline" in viewer.layers, timeout=TIMEOUT_MS)
    qtbot.waitUntil(widget.errors_button.isEnabled, timeout=TIMEOUT_MS)
    missed = viewer.layers["pred missed centerline"]
    false = viewer.layers["pred false centerline"]
    assert len(missed.data) == len(expected["missed_centerline"]) > 0
    assert len(false.data) == 0
    assert missed.metadata["napari_topo"]["kind"] == "errors"
    assert missed.metadata["napari_topo"]["error"] == "missed"
    assert tuple(missed.scale) == SCALE
    np.testing.assert_allclose(missed.face_color[0], [1, 0, 0, 1])
    assert widget.errors_list.count() == 1
    # The viewer went to the break (world coordinates: voxel * scale).
    world = np.asarray(expected["missed_locations"][0]) * SCALE
    np.testing.assert_allclose(viewer.dims.point[-3:], world, atol=SCALE[0])
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    np.testing.assert_allclose(camera.center[-2:], world[-2:], atol=1)

    # A false bridge on another pair replaces the layers (no duplicates).
    pred.data = two_bars(bridge=True)
    gt.data = two_bars(bridge=False)
    assert widget.show_errors() is True
    qtbot.waitUntil(widget.errors_button.isEnabled, timeout=TIMEOUT_MS)
    qtbot.waitUntil(
        lambda: len(viewer.layers["pred false centerline"].data) > 0, timeout=TIMEOUT_MS
    )
    names = [layer.name for layer in viewer.layers]
    assert names.count("pred false centerline") == names.count("pred missed centerline") == 1
    expected = topology_errors(two_bars(True), two_bars(False))
    assert len(viewer.layers["pred false centerline"].data) == len(expected["false_centerline"])
    assert len(viewer.layers["pred missed centerline"].data) == 0
    assert widget.errors_list.count() == len(expected["false_locations"]) == 1
    bridge_world = np.asarray(expected["false_locations"][0]) * SCALE
    item = widget.errors_list.item(0)
    viewer.dims.set_point(0, 0)
    widget.errors_list.itemClicked.emit(item)
    np.testing.assert_allclose(viewer.dims.point[-3:], bridge_world, atol=SCALE[0])


def test_hd95_names_the_unit_of_the_file_the_truth_came_from():
    from napari_topo.widgets.metrics import _distance_unit

    class Layer:
        metadata = {"napari_topo_geometry": {"unit": "um"}}

    assert _distance_unit(Layer(), (5.0, 1.0, 1.0)) == "um"
    Layer.metadata = {}
    assert _distance_unit(Layer(), (1.0, 1.0, 1.0)) == "voxels"
    assert _distance_unit(Layer(), (2.0, 1.0, 1.0)) == "scale units"
