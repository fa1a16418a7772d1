"""Opening the Segment dock leaves torch's import until the dock is on screen."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari_topo.widgets import segment as segment_module  # noqa: E402


@pytest.mark.gui
def test_models_are_listed_after_the_dock_is_drawn(make_napari_viewer, qtbot, monkeypatch):
    """The model listing imports torch in a worker; started in ``__init__`` it held the
    GIL while napari added and drew the dock (0.07 s became 0.34 s, the longest stall
    0.45 s). It starts a moment later now, and Run waits for it meanwhile."""
    started = []
    create_worker = segment_module.create_worker

    def spy(func, *args, **kwargs):
        started.append(getattr(func, "__name__", func))
        return create_worker(func, *args, **kwargs)

    monkeypatch.setattr(segment_module, "create_worker", spy)
    # as on a first open, when torch is not imported yet
    monkeypatch.setattr(segment_module, "_MODEL_MODULES", frozenset({"not imported"}))
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 8, 8), np.float32), name="scan")
    widget = segment_module.SegmentWidget(viewer)
    qtbot.addWidget(widget)
    assert started == [] and not widget.is_ready
    assert not widget.run_button.isEnabled()
    # the status says Run must wait (a newcomer's script pressed it while disabled)
    assert widget.status_label.text() == "Loading the models; then press Run to segment 'scan'."
    qtbot.waitUntil(lambda: widget.is_ready, timeout=60_000)
    assert started == ["_list_choices"]
    assert widget.run_button.isEnabled() and widget.model_picker.value
    assert widget.status_label.text() == "Press Run to segment 'scan'."
