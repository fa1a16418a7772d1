"""The three docks added the way napari's Plugins menu adds them share the right column:
the metrics table shows its rows and Segment's Run button stays in view."""

from __future__ import annotations

import pytest
from qtpy.QtCore import QRect, Qt
from qtpy.QtWidgets import QScrollArea

from napari_topo.cli import WIDGETS
from napari_topo.widgets._common import BODY_NAME, _dock_of, _fill_above_floors, _water_fill

SIZES = [((1600, 1000), 15), ((1366, 768), 5)]


def _visible_height(widget) -> int:
    """Pixels of ``widget`` that are on screen (not scrolled away or cut by its dock)."""
    return widget.visibleRegion().boundingRect().height()


def _three_docks(make_napari_viewer, qtbot, size):
    """A viewer of ``size`` with the sample, the three docks added the Plugins-menu way
    and a finished segmentation's trees (the metrics table fills by itself)."""
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-topo", "synthetic_vessels")
    docked = {}
    for name in WIDGETS:  # what Plugins > napari-topo > <name> calls
        docked[name] = viewer.window.add_plugin_dock_widget("napari-topo", name)[1]
    viewer.window._qt_window.resize(*size)
    # a finished segmentation: the metrics dock fills its table by itself (Live)
    trees = viewer.layers["ground truth trees"]
    viewer.add_labels(
        trees.data.copy(),
        name="synthetic vessels trees",
        metadata={"napari_topo": {"kind": "trees", "widget": "segment"}},
    )
    table = docked["Topology metrics"].table
    qtbot.waitUntil(lambda: table.rowCount() > 0, timeout=20000)
    qtbot.wait(200)
    return viewer, docked, table


@pytest.mark.parametrize(("size", "rows"), SIZES)
def test_plugin_menu_docks_share_the_column(make_napari_viewer, qtbot, size, rows):
    viewer, docked, table = _three_docks(make_napari_viewer, qtbot, size)
    row = table.verticalHeader().defaultSectionSize()
    header = table.horizontalHeader().height()
    assert table.rowCount() >= rows
    # napari alone leaves the metrics dock ~100 px: no row of the table in view
    assert _visible_height(table) >= header + rows * row, (
        _visible_height(table),
        [w.height() for w in docked.values()],
    )
    segment = docked["Segment vessels"]
    _assert_run_row_in_view(viewer, segment)
    assert _visible_height(segment.status_label) == segment.status_label.height()
    # every dock's scrolling body (with Segment's pinned Run row) fills its dock: no empty
    # band under a body that still scrolls (napari adds a stretch under a widget whose
    # height policy is not Expanding)
    for name, widget in docked.items():
        body = widget.findChild(QScrollArea, BODY_NAME)
        pinned = body.pinned.height() if body is not None and body.pinned is not None else 0
        assert body is not None and body.height() + pinned >= widget.height() - 2, name
    # Run, Cancel and the progress stay in view (at their size hint's height) however far
    # the settings are scrolled, while a run shows its progress, and while the Tree
    # editor edits and takes the column's height: the Run row had scrolled away with
    # the settings, and was squeezed out of view under the pickers at 1366 x 768
    bar = segment.scroll_area.verticalScrollBar()
    assert bar.maximum() > 0  # the settings scroll: the check below means something
    bar.setValue(bar.maximum())
    qtbot.wait(50)
    _assert_run_row_in_view(viewer, segment)
    segment.progress_bar.setVisible(True)  # as run() shows it
    qtbot.wait(50)
    _assert_run_row_in_view(viewer, segment, progress=True)
    segment.progress_bar.setVisible(False)
    bar.setValue(0)
    editor = docked["Tree editor"]
    assert editor.start_editing(viewer.layers["synthetic vessels trees"])
    qtbot.waitUntil(lambda: editor.is_editing, timeout=60000)
    qtbot.wait(300)
    _assert_run_row_in_view(viewer, segment)
    editor.stop_editing()


def _assert_run_row_in_view(viewer, segment, *, progress: bool = False) -> None:
    """Segment's Run and Cancel (and the progress bar) are at least as tall as their size
    hints, wholly in view, and inside the window."""
    window = viewer.window._qt_window
    shown = [segment.run_button, segment.cancel_button]
    shown += [segment.progress_bar] if progress else []
    for widget in shown:
        what = (widget.text() if hasattr(widget, "text") else "progress", segment.height())
        assert widget.height() >= widget.sizeHint().height(), what
        assert _visible_height(widget) == widget.height(), (_visible_height(widget), *what)
        top_left = widget.mapTo(window, widget.rect().topLeft())
        assert window.rect().contains(QRect(top_left, widget.size())), what


@pytest.mark.parametrize(("size", "rows"), SIZES)
def test_the_table_shows_when_the_ground_truth_is_opened_after_the_run(
    make_napari_viewer, qtbot, size, rows
):
    # a newcomer: three docks, Run, then the labels opened: the table filled, but the
    # dock kept the height it had without a table, so no row was in view at 1600 x 1000
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-topo", "synthetic_vessels")
    data = viewer.layers["ground truth trees"].data.copy()
    for layer in [la for la in viewer.layers if la.name.startswith("ground truth")]:
        viewer.layers.remove(layer)
    docked = {}
    for name in WIDGETS:
        docked[name] = viewer.window.add_plugin_dock_widget("napari-topo", name)[1]
    viewer.window._qt_window.resize(*size)
    viewer.add_labels(
        data.copy(),
        name="synthetic vessels trees",
        metadata={"napari_topo": {"kind": "trees", "widget": "segment"}},
    )
    qtbot.wait(300)
    metrics = docked["Topology metrics"]
    table = metrics.table
    assert metrics.ground_truth_picker.value is None and not table.isVisible()
    viewer.add_labels(data, name="ground truth trees")
    if metrics.ground_truth_picker.value is None:
        metrics.ground_truth_picker.value = viewer.layers["ground truth trees"]
    qtbot.waitUntil(lambda: table.rowCount() > 0, timeout=20000)
    qtbot.wait(300)
    row = table.verticalHeader().defaultSectionSize()
    header = table.horizontalHeader().height()
    assert _visible_height(table) >= header + rows * row, (
        _visible_height(table),
        [w.height() for w in docked.values()],
    )


@pytest.mark.parametrize(("size", "rows"), SIZES)
def test_column_is_shared_again_when_docks_close_or_show(make_napari_viewer, qtbot, size, rows):
    """Not only on a dock's first show: closing a dock used to give its height to a
    neighbour that did not need it (the Tree editor took Segment's, the table showed
    two rows), and a dock shown again, or another plugin's dock opened and closed,
    left the table one row tall."""
    from qtpy.QtWidgets import QListWidget

    viewer, docked, table = _three_docks(make_napari_viewer, qtbot, size)
    need = table.horizontalHeader().height() + rows * table.verticalHeader().defaultSectionSize()
    segment = docked["Segment vessels"]
    window = viewer.window._qt_window

    def table_rows_in_view():
        return _visible_height(table) >= need

    def segment_in_view():
        return all(
            _visible_height(w) == w.height() for w in (segment.run_button, segment.status_label)
        )

    def settle(what, check):
        qtbot.waitUntil(check, timeout=3000)
        qtbot.wait(100)  # and it stays so
        assert check(), (what, _visible_height(table), [w.height() for w in docked.values()])

    # napari's "hide this panel" on Segment, then Window > Segment again
    _dock_of(segment).close()
    settle("Segment hidden", table_rows_in_view)
    _dock_of(segment).show()
    settle("Segment shown again", lambda: table_rows_in_view() and segment_in_view())
    # another plugin's dock opened in the column (napari gives it most of the height),
    # then closed with its x
    other = QListWidget()
    other.addItems([str(i) for i in range(100)])
    foreign = viewer.window.add_dock_widget(other, name="other plugin", area="right")
    qtbot.wait(200)
    viewer.window.remove_dock_widget(foreign)
    settle("other dock closed", lambda: table_rows_in_view() and segment_in_view())
    # the metrics dock hidden, the window squeezed and restored, the dock shown again
    metrics_dock = _dock_of(docked["Topology metrics"])
    metrics_dock.close()
    qtbot.wait(100)
    window.resize(size[0], size[1] - 300)
    qtbot.wait(100)
    window.resize(*size)
    qtbot.wait(100)
    metrics_dock.show()
    settle("Metrics shown again", lambda: table_rows_in_view() and segment_in_view())


def test_water_fill_gives_no_dock_more_than_its_content():
    # every dock fits: each gets what it wants, the rest goes to the heaviest
    assert _water_fill(1000, [300, 400, 200], [6, 11, 3]) == [300, 500, 200]
    # none fits: by weight
    assert _water_fill(400, [300, 400, 200], [1, 2, 1]) == [100, 200, 100]
    # one fits: the others share what it leaves
    assert _water_fill(600, [100, 800, 800], [1, 1, 1]) == [100, 250, 250]


def test_a_floor_is_kept_when_the_weights_would_give_less():
    # the metrics dock keeps its headline rows while the Tree editor (heaviest) edits
    assert _fill_above_floors(700, [130, 400, 560], [1, 6, 11], [0, 250, 0]) == [37, 250, 412]
    # a floor the weights already exceed changes nothing
    assert _fill_above_floors(700, [130, 400, 560], [1, 6, 11], [0, 100, 0]) == _water_fill(
        700, [130, 400, 560], [1, 6, 11]
    )
    # floors that do not fit: plain sharing by weight
    assert _fill_above_floors(200, [130, 400, 560], [1, 6, 11], [0, 250, 0]) == [11, 66, 122]


@pytest.mark.parametrize("first", ["Topology metrics", "Tree editor"])
def test_segment_dock_is_never_narrower_than_its_controls(make_napari_viewer, qtbot, first):
    # a newcomer opened the metrics dock first at 1366 x 768: napari made the column
    # 320 px wide and the Segment dock added to it kept that width, cutting its Cancel
    # button and status line (its content needs ~390 px)
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    viewer.window.add_plugin_dock_widget("napari-topo", first)
    segment = viewer.window.add_plugin_dock_widget("napari-topo", "Segment vessels")[1]
    qtbot.waitUntil(lambda: segment.is_ready, timeout=60000)  # models listed (torch imported)
    qtbot.wait(300)
    body = segment.findChild(QScrollArea, BODY_NAME)
    need = body.widget().minimumSizeHint().width()
    assert body.viewport().width() >= need, (body.viewport().width(), need)
    assert _visible_height(segment.cancel_button) == segment.cancel_button.height()
    assert segment.cancel_button.visibleRegion().boundingRect().width() == (
        segment.cancel_button.width()
    )


@pytest.mark.parametrize(("size", "rows"), [((1600, 1000), 8), ((1366, 768), 3)])
def test_four_docks_fit_the_screen(make_napari_viewer, qtbot, size, rows):
    # a newcomer opened the Fine-tune dock too: it had no scroll area, kept its 424 px,
    # squeezed the other three to their top pickers (Run and the table out of sight)
    # and made the window 816 px tall on a 768 px screen
    viewer, docked, table = _three_docks(make_napari_viewer, qtbot, size)
    docked["Fine-tune"] = viewer.window.add_plugin_dock_widget("napari-topo", "Fine-tune")[1]
    window = viewer.window._qt_window
    need = table.horizontalHeader().height() + rows * table.verticalHeader().defaultSectionSize()
    segment = docked["Segment vessels"]

    def fits():
        return (
            window.minimumSizeHint().height() <= size[1]
            and window.height() <= size[1]
            and _visible_height(table) >= need
            and _visible_height(segment.run_button) == segment.run_button.height()
            and _visible_height(segment.status_label) == segment.status_label.height()
        )

    qtbot.waitUntil(fits, timeout=5000)
    assert fits(), (window.height(), [w.height() for w in docked.values()])


def test_tree_editor_shows_its_edit_controls_once_editing(make_napari_viewer, qtbot):
    # at 1366 x 768 the Tree editor had ~85 px: after Start editing its tree picker,
    # Assign and Undo were below the fold and the dock did not grow
    viewer, docked, _ = _three_docks(make_napari_viewer, qtbot, (1366, 768))
    editor = docked["Tree editor"]
    assert editor.start_editing(viewer.layers["synthetic vessels trees"])
    qtbot.waitUntil(lambda: editor.is_editing, timeout=60000)

    table = docked["Topology metrics"].table

    def tree_accuracy_in_view() -> bool:
        # the metric a tree edit changes: it was the table's last row, below the fold
        found = table.findItems("Tree accuracy", Qt.MatchFlag.MatchExactly)
        if not found:
            return False
        rect = table.visualItemRect(found[0])
        on_table = QRect(table.viewport().mapTo(table, rect.topLeft()), rect.size())
        return table.visibleRegion().boundingRect().contains(on_table)

    def in_view():
        return tree_accuracy_in_view() and all(
            _visible_height(w) == w.height() > 0
            for w in (editor.tree_picker, editor.assign_button, editor.undo_button)
        )

    qtbot.waitUntil(in_view, timeout=5000)
    # and while the rows recompute after an edit (the Live line listed the five slow
    # metrics, wrapped, and pushed Tree accuracy out of view)
    metrics = docked["Topology metrics"]
    metrics._mark_stale(set(metrics.results))
    metrics._settle_timer.start()
    metrics._update_freshness()
    qtbot.wait(50)
    assert "recomputing" in metrics.freshness_label.text()
    assert tree_accuracy_in_view()
    editor.stop_editing()  # and the column goes back to sharing by the usual weights
    qtbot.waitUntil(lambda: _visible_height(docked["Topology metrics"].table) > 100, timeout=5000)


@pytest.mark.parametrize("size", [(1600, 1000), (1366, 768)])
@pytest.mark.parametrize("after_a_run", [False, True])
def test_fine_tune_dock_reads_as_one_block(make_napari_viewer, qtbot, size, after_a_run):
    """The Fine-tune dock alone in its column, taller than its form and pinned part: the
    pinned part (region line, loss plot, Start, status) follows the form, the spare
    height goes under it. A stretch under the form left an empty band of ~500 px
    between the form and the region line at 1600 x 1000."""
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-topo", "synthetic_vessels")
    widget = viewer.window.add_plugin_dock_widget("napari-topo", "Fine-tune")[1]
    viewer.window._qt_window.resize(*size)
    if after_a_run:  # the plot and Segment again shown, as the end of a run leaves them
        widget.loss_plot.setVisible(True)
        for step in range(1, 30):
            widget.loss_plot.add("train", step, 1.0 / step)
        widget.rerun_button.setVisible(True)
    qtbot.wait(300)
    area, pinned, form = widget.scroll_area, widget.scroll_area.pinned, widget._form.native
    assert widget.height() > area.widget().sizeHint().height() + pinned.height() + 100
    form_end = form.mapTo(widget, form.rect().bottomLeft()).y()
    pinned_top = pinned.mapTo(widget, pinned.rect().topLeft()).y()
    margins = area.widget().layout().contentsMargins().bottom() + 2  # body's, pinned's
    assert 0 < pinned_top - form_end <= margins + 2, (form_end, pinned_top, widget.height())
    # nothing cut or scrolled away: the whole form, the whole pinned part
    assert area.verticalScrollBar().maximum() == 0
    assert _visible_height(form) == form.height()
    parts = [widget.region_label, widget.start_button, widget.status_label]
    if after_a_run:
        parts += [widget.loss_plot, widget.rerun_button]
    for part in parts:
        assert _visible_height(part) == part.height() > 0, part
