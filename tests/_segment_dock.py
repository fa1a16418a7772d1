"""Helpers shared by the Segment dock's tests (run and wait, find its layers)."""

from __future__ import annotations

from typing import Any


def run_and_wait(qtbot, widget: Any, timeout_ms: int, click: bool = True) -> str:
    """Press Run (or call ``run()``) and wait for the ``finished`` signal; its state."""
    from qtpy.QtCore import Qt

    with qtbot.waitSignal(widget.finished, timeout=timeout_ms) as blocker:
        if click:
            qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
        else:
            assert widget.run() is not None, widget.status_label.text()
    return blocker.args[0]


def ours(viewer, source: str) -> dict:
    """The plugin's layers made from ``source`` by kind (found by metadata, not by name)."""
    found = {}
    for layer in viewer.layers:
        info = layer.metadata.get("napari_topo", {})
        if info.get("source") == source:
            found[info["kind"]] = layer
    return found
