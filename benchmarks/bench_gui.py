"""Longest event-loop stall of each step a user takes in napari with the plugin.

A QTimer ticks every 10 ms on the GUI thread; a stall is the longest gap between two
ticks while a step runs (so a step that blocks the GUI thread for 2 s shows as ~2 s).
Steps, in the order a user takes them on the 96^3 sample:

1. File > Open Sample (napari-topo's synthetic vessels)
2. opening each dock (Plugins > napari-topo > ...)
3. a segmentation from Run to its layers on screen (only the end of it is on the GUI
   thread: adding the layers)
4. switching to 3D with the sample and the Segment outputs (napari/vispy upload the
   volumes; the plugin's part is their dtype and how many are visible)
5. one brush stroke on the trees layer with the Topology metrics' Live on
6. the Tree editor's *Start editing* on Segment's trees, then one tree edit (a branch
   given to another tree)

Where a step is napari's own work, a plain-napari twin is timed too (the same arrays
added with ``viewer.add_*`` in 3D), so that the plugin's share can be told apart.

Stalls are wall-clock time: on a machine shared with other work they stretch with the
load, so each plugin step also reports the CPU seconds the process spent in it.

Run under a display (Xvfb is enough; software GL makes the 3D numbers upper bounds)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_gui.py [--json out.json]

Target (issue 12): no stall over 0.5 s caused by the plugin.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from contextlib import contextmanager

import numpy as np

TICK_MS = 10


class StallMeter:
    """The longest gap between ticks of a 10 ms QTimer while :meth:`measure` is open."""

    def __init__(self):
        from qtpy.QtCore import QTimer

        self._timer = QTimer()
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._tick)
        self._last = None
        self.longest = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.longest = max(self.longest, now - self._last - TICK_MS / 1000)
        self._last = now

    @contextmanager
    def measure(self):
        self.longest = 0.0
        self._last = time.perf_counter()
        self._timer.start()
        try:
            yield self
        finally:
            pump(0.3)  # let the tick after the last stall land
            self._timer.stop()
            self._last = None


def pump(seconds: float = 0.0) -> None:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.perf_counter() + seconds
    app.processEvents()
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


def wait_until(condition, timeout: float = 600.0, what: str = "the step") -> None:
    end = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        pump(0.01)


def _timed_init(cls) -> list[float]:
    """Wrap ``cls.__init__`` once so that its seconds land in the returned list."""
    spent = [0.0]
    original = cls.__init__

    @functools.wraps(original)  # napari reads the signature to pass the viewer
    def init(self, *a, **k):
        t = time.perf_counter()
        try:
            original(self, *a, **k)
        finally:
            spent[0] = time.perf_counter() - t
            cls.__init__ = original

    cls.__init__ = init
    return spent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--model", default="unet-projpool")
    args = parser.parse_args(argv)

    import napari

    viewer = napari.Viewer(title="napari-topo bench_gui", show=True)
    viewer.window.resize(1600, 1000)
    pump(0.5)
    meter = StallMeter()
    twins: list = []  # plain-napari viewers, kept open until the end
    rows: list[tuple[str, float, str]] = []

    def record(step: str, note: str = "") -> None:
        rows.append((step, meter.longest, note))
        print(f"{step:<44} {meter.longest:7.2f} s  {note}", flush=True)

    # 1. the sample: the first time (a fresh cache folder: generated, then cached) and
    #    again (read from the cache), as napari calls it, on its GUI thread
    import os
    import tempfile

    os.environ["NAPARI_TOPO_CACHE_DIR"] = tempfile.mkdtemp(prefix="napari-topo-bench-")
    with meter.measure():
        viewer.open_sample("napari-topo", "synthetic_vessels")
    record("open sample, first time (generate + cache)")
    sample = [
        (layer.data, layer.scale, isinstance(layer, napari.layers.Labels))
        for layer in viewer.layers
    ]
    viewer.layers.clear()
    with meter.measure():
        viewer.open_sample("napari-topo", "synthetic_vessels")
    record("open sample, again (from the cache)")
    twin = napari.Viewer(title="plain napari", show=True)
    pump(0.3)
    with meter.measure():
        for data, scale, labels in sample:
            (twin.add_labels if labels else twin.add_image)(np.asarray(data), scale=scale)
    record("  plain napari: add the same 3 arrays", "napari's own cost")
    twins.append(twin)  # closed at the end: closing a GL context mid-run can crash vispy

    # 2. each dock; the note splits the plugin's part (importing the widget's module,
    #    its __init__) from napari's (the dock, its layout, the settings file, a redraw)
    import importlib

    docked = {}
    widget_classes = {
        "Segment vessels": ("napari_topo.widgets.segment", "SegmentWidget"),
        "Topology metrics": ("napari_topo.widgets.metrics", "MetricsWidget"),
        "Tree editor": ("napari_topo.widgets.tree_editor", "TreeEditorWidget"),
    }
    for name, (module, cls_name) in widget_classes.items():
        with meter.measure():
            cpu = time.process_time()
            t0 = time.perf_counter()
            cls = getattr(importlib.import_module(module), cls_name)
            imported = time.perf_counter() - t0
            init = _timed_init(cls)
            _, docked[name] = viewer.window.add_plugin_dock_widget("napari-topo", name)
            ready = getattr(docked[name], "is_ready", True)
            wait_until(lambda w=docked[name]: getattr(w, "is_ready", True), what=name)
            cpu = time.process_time() - cpu
        note = f"import {imported:.2f} s, __init__ {init[0]:.2f} s (the plugin); CPU {cpu:.2f} s"
        record(f"open dock '{name}'", note + ("" if ready else "; models listed in a worker"))
    segment, metrics, editor = (
        docked["Segment vessels"],
        docked["Topology metrics"],
        docked["Tree editor"],
    )

    # 3. a segmentation: the whole run; the worst stall is the GUI thread's part
    done: list[str] = []
    segment.finished.connect(done.append)
    segment.model_picker.value = args.model
    # the plugin's own GUI-thread part: adding the layers, one per event-loop turn
    applied: list[float] = []
    step = segment._apply_next

    def timed_step(*a, **k):
        t = time.perf_counter()
        try:
            return step(*a, **k)
        finally:
            applied.append(time.perf_counter() - t)

    segment._apply_next = timed_step
    segment._apply_timer.timeout.disconnect()
    segment._apply_timer.timeout.connect(timed_step)
    with meter.measure():
        segment.run_button.click()
        wait_until(lambda: bool(done), what="the segmentation")
    record(
        "finish a segmentation",
        f"adding the layers {sum(applied):.2f} s in {len(applied)} turns (longest "
        f"{max(applied, default=0):.2f} s); {segment.status_label.text()[:40]}",
    )
    wait_until(lambda: not metrics.is_running and bool(metrics.results), what="metrics")
    pump(0.5)

    # 4. 3D with everything the sample and the run left visible. A plain-napari twin
    #    with the same visible arrays goes first (the first 3D view of a process also
    #    pays one-time costs: shaders, numba), then ours, twice.
    shown = [layer for layer in viewer.layers if layer.visible]
    twin = napari.Viewer(title="plain napari", show=True)
    for layer in shown:
        add = twin.add_labels if isinstance(layer, napari.layers.Labels) else twin.add_image
        add(np.asarray(layer.data), scale=layer.scale)
    pump(0.5)
    # the same canvas size as ours: volume rendering (software GL under Xvfb) costs per
    # pixel, and the twin's default window left it a smaller canvas than ours with docks
    want, have = tuple(viewer.canvas.size), tuple(twin.canvas.size)
    qt_twin = twin.window._qt_window
    qt_twin.resize(qt_twin.width() + want[1] - have[1], qt_twin.height() + want[0] - have[0])
    pump(0.5)
    canvas_note = f"canvas {tuple(twin.canvas.size)} vs ours {want} (h, w)"
    with meter.measure():
        twin.dims.ndisplay = 3
        pump(0.2)
    record("  plain napari: toggle 3D, same arrays", f"napari's own cost (first 3D); {canvas_note}")
    twins.append(twin)  # closed at the end: closing a GL context mid-run can crash vispy
    names = ", ".join(layer.name for layer in shown)
    for when in ("first", "second"):
        with meter.measure():
            viewer.dims.ndisplay = 3
            pump(0.2)
        record(f"toggle 3D ({when} time)", f"visible: {names}")
        with meter.measure():
            viewer.dims.ndisplay = 2
            pump(0.2)
        record("back to 2D")
    # (the stroke and the edit below are in 2D; in 3D each also redraws the volumes)

    # 5. a brush stroke on our trees with Live on (metrics follow in workers)
    trees = next(
        layer
        for layer in viewer.layers
        if layer.metadata.get("napari_topo", {}).get("kind") == "trees"
        and layer.metadata["napari_topo"].get("widget") == "segment"
    )
    assert metrics.prediction_picker.value is trees and metrics.live_checkbox.isChecked()
    trees.brush_size = 6
    trees.n_edit_dimensions = 3
    z, y, x = (int(v) for v in np.argwhere(trees.data > 0)[0])
    with meter.measure():
        for dy in range(0, 8, 2):
            trees.paint((z, y + dy, x), 0)
            pump(0.02)
        wait_until(lambda: not metrics.stale_metrics, what="live metrics")
    record("paint a stroke (Live on)", "until the table is current")

    # 6. the Tree editor: Start editing on Segment's trees, then a tree edit
    editor.layer_picker.value = trees
    with meter.measure():
        cpu = time.process_time()
        editor.start_editing()
        wait_until(lambda: editor.is_editing, what="the tree editor")
        cpu = time.process_time() - cpu
    record("tree editor: Start editing", f"CPU {cpu:.2f} s")
    pump(1.0)  # what the editor prepares in a worker after it starts
    ed = editor.editor
    branch = max(ed.branches, key=len)
    editor.select_at(ed.points[branch.points[len(branch) // 2]])
    target = next(t for t in range(1, 10) if t != branch.tree)
    with meter.measure():
        cpu = time.process_time()
        editor.assign(target)
        wait_until(lambda: not metrics.stale_metrics, what="live metrics")
        cpu = time.process_time() - cpu
    record("tree edit (assign a branch)", f"until the table is current; CPU {cpu:.2f} s")

    for twin in twins:
        twin.close()
    viewer.close()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump([{"step": s, "stall_s": v, "note": n} for s, v, n in rows], fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
