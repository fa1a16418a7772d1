"""The three docks added the way napari's Plugins menu adds them share the right column:
the metrics table shows its rows and Segment's Run button stays in view."""

from __future__ import annotations

import pytest
from qtpy.QtWidgets import QScrollArea

from napari_topo.cli import WIDGETS
from napari_topo.widgets._common import BODY_NAME, _water_fill


def _visible_height(widget) -> int:
    """Pixels of ``widget`` that are on screen (not scrolled away or cut by its dock)."""
    return widget.visibleRegion().boundingRect().height()


@pytest.mark.parametrize(("size", "rows"), [((1600, 1000), 15), ((1366, 768), 5)])
def test_plugin_menu_docks_share_the_column(make_napari_viewer, qtbot, size, rows):
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
    row = table.verticalHeader().defaultSectionSize()
    header = table.horizontalHeader().height()
    assert table.rowCount() >= rows
    # napari alone leaves the metrics dock ~100 px: no row of the table in view
    assert _visible_height(table) >= header + rows * row, (
        _visible_height(table),
        [w.height() for w in docked.values()],
    )
    segment = docked["Segment vessels"]
    assert _visible_height(segment.run_button) == segment.run_button.height()
    assert _visible_height(segment.status_label) == segment.status_label.height()
    # every dock's scrolling body fills its dock: no empty band under a body that still
    # scrolls (napari adds a stretch under a widget whose height policy is not Expanding)
    for name, widget in docked.items():
        body = widget.findChild(QScrollArea, BODY_NAME)
        assert body is not None and body.height() >= widget.height() - 2, name


def test_water_fill_gives_no_dock_more_than_its_content():
    # every dock fits: each gets what it wants, the rest goes to the heaviest
    assert _water_fill(1000, [300, 400, 200], [6, 11, 3]) == [300, 500, 200]
    # none fits: by weight
    assert _water_fill(400, [300, 400, 200], [1, 2, 1]) == [100, 200, 100]
    # one fits: the others share what it leaves
    assert _water_fill(600, [100, 800, 800], [1, 1, 1]) == [100, 250, 250]
