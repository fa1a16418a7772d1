"""Regenerate the README screenshots of the widgets working on the sample data.

Run from the repository root under a display (Xvfb is enough)::

    xvfb-run -a python docs/make_screenshots.py

It opens what ``napari-topo demo --gui`` opens (the 96^3 sample vessels with their
ground truth and the three dock widgets), segments the sample with the Segment widget
(unet-dice, the default, default settings, roots detected automatically), then writes

* ``docs/images/metrics_widget.png``: the Topology metrics widget comparing our trees
  layer with ``ground truth trees``, the table filled and *Show errors* pressed (red:
  ground-truth centerline the segmentation misses; orange: predicted centerline outside
  the ground truth), 3D view, only the Metrics dock shown;
* ``docs/images/workflow.png``: the coloured trees in 3D with the Segment and Tree
  editor docks, a branch selected in the Tree editor (highlighted in yellow);
* ``docs/images/layout_1366x768.png`` and ``docs/images/layout_1600x1000.png``: the whole
  window right after the segmentation, with the three docks open, at the two screen sizes
  the docks must fit (the defaults: the image and the trees shown, the other result
  layers hidden, the metrics computed by themselves).

Everything goes through the widgets' public methods and napari's public API; the
numbers in the table are whatever the shipped model gives on the sample. Takes about two
minutes on two busy CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

IMAGES = Path(__file__).resolve().parent / "images"
SIZE = (1400, 860)
MODEL = "unet-dice"
SAMPLE = "synthetic vessels"
GROUND_TRUTH = "ground truth trees"
#: Camera of both pictures: looking down on the trees from above and to the side.
ANGLES = (-20.0, 30.0, 55.0)
#: Screens the window with three docks must fit (issue 12).
LAYOUT_SIZES = ((1366, 768), (1600, 1000))


def wait_until(condition, timeout: float = 300.0, what: str = "the widgets") -> None:
    """Process Qt events until ``condition()`` holds (the widgets work in threads)."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        app.processEvents()
        time.sleep(0.01)


def settle(n: int = 30) -> None:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    for _ in range(n):
        app.processEvents()
        time.sleep(0.01)


def show_docks(viewer, widgets) -> None:
    """Show the docks holding ``widgets`` and hide the others (they stay docked)."""
    from qtpy.QtWidgets import QDockWidget

    keep = {id(w) for w in widgets}
    for widget in viewer.window.dock_widgets.values():
        dock = getattr(widget, "native", widget)
        while dock is not None and not isinstance(dock, QDockWidget):
            dock = dock.parent()  # napari wraps a plugin widget in a scroll area
        if dock is not None:
            dock.setVisible(id(widget) in keep)


def segment_sample(viewer, widget) -> dict:
    """Press Run on the Segment widget with the default settings; our layers by kind."""
    done: list[str] = []
    widget.finished.connect(done.append)
    wait_until(lambda: widget.is_ready, what="the model list")
    widget.model_picker.value = MODEL
    assert widget.image_picker.value is viewer.layers[SAMPLE]
    start = time.perf_counter()
    widget.run_button.click()
    wait_until(lambda: bool(done), what="the segmentation")
    if done[0] != "done":
        raise RuntimeError(f"segmentation {done[0]}: {widget.status_label.text()}")
    print(f"segmented in {time.perf_counter() - start:.1f} s: {widget.status_label.text()}")
    ours = {}
    for layer in viewer.layers:
        info = layer.metadata.get("napari_topo", {})
        if info.get("widget") == "segment" and info.get("source") == SAMPLE:
            ours[info["kind"]] = layer
    return ours


def metrics_settled(widget) -> bool:
    return (
        not widget.is_running
        and widget.results != {}
        and not widget.stale_metrics
        and widget.compute_button.isEnabled()
    )


def set_camera(viewer, zoom: float = 1.0) -> None:
    viewer.dims.ndisplay = 3
    settle()
    viewer.reset_view()
    camera = viewer.scene.camera  # napari 0.9 (viewer.camera is deprecated)
    camera.angles = ANGLES
    camera.zoom = camera.zoom * zoom
    settle()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=IMAGES, help="folder for the PNGs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import napari

    from napari_topo.cli import open_demo_viewer

    viewer = napari.Viewer(title="napari-topo", show=True)
    viewer.window.resize(*SIZE)
    viewer, docked = open_demo_viewer(viewer)
    segment = docked["Segment vessels"]
    metrics = docked["Topology metrics"]
    editor = docked["Tree editor"]

    ours = segment_sample(viewer, segment)
    trees = ours["trees"]
    gt = viewer.layers[GROUND_TRUTH]

    # ---- Layout: the window as the user sees it after Segment, at two screen sizes ---
    wait_until(lambda: metrics_settled(metrics), what="the metrics (computed by themselves)")
    for width, height in LAYOUT_SIZES:
        viewer.window.resize(width, height)
        settle(60)
        path = args.out / f"layout_{width}x{height}.png"
        shot = viewer.screenshot(str(path), canvas_only=False)
        fits = shot.shape[1] <= width and shot.shape[0] <= height
        print(f"wrote {path}: window {shot.shape[1]}x{shot.shape[0]}, fits: {fits}")
        if not fits:
            raise RuntimeError(f"the window does not fit {width}x{height}")
    viewer.window.resize(*SIZE)

    # ---- Metrics: our trees against the ground-truth trees, then Show errors --------
    metrics.prediction_picker.value = trees
    metrics.ground_truth_picker.value = gt
    metrics.compute_button.click()
    wait_until(lambda: metrics_settled(metrics), what="the metrics")
    metrics.errors_button.click()
    missed, false = f"{trees.name} missed centerline", f"{trees.name} false centerline"
    wait_until(
        lambda: metrics.errors_button.isEnabled() and false in viewer.layers,
        what="the error layers",
    )
    print("metrics:", {k: round(v, 3) for k, v in metrics.results.items()})
    print("errors:", metrics.status_label.text())

    # What the picture shows: our segmentation (its mask layer: the voxels of the trees
    # layer in one colour, so that the red and orange error points stand out; tree 2 is
    # red too) with the error points on top.
    mask = ours["mask"]
    for layer in viewer.layers:
        layer.visible = layer.name in (mask.name, missed, false)
    mask.opacity = 0.5
    for name in (missed, false):
        viewer.layers[name].size = 2.5
    viewer.layers.selection.active = viewer.layers[missed]
    show_docks(viewer, [metrics])
    set_camera(viewer, zoom=0.8)
    viewer.window.resize(*SIZE)
    settle()
    path = args.out / "metrics_widget.png"
    viewer.screenshot(str(path), canvas_only=False)
    print("wrote", path)

    # ---- Workflow: the coloured trees, Segment + Tree editor with a branch selected --
    for layer in viewer.layers:
        layer.visible = layer is trees
    trees.opacity = 0.8
    editor.layer_picker.value = trees
    editor.start_button.click()
    wait_until(lambda: editor.is_editing, what="the tree editor")
    ed = editor.editor
    branch = max(ed.branches, key=len)
    editor.select_at(ed.points[branch.points[len(branch) // 2]])
    show_docks(viewer, [segment, editor])
    set_camera(viewer, zoom=0.8)
    viewer.window.resize(*SIZE)
    settle()
    path = args.out / "workflow.png"
    viewer.screenshot(str(path), canvas_only=False)
    print("wrote", path)
    # ---- each dock on its own, as laid out now (the README shows them) -------------
    for widget, name in ((segment, "segment_widget.png"), (editor, "tree_editor_widget.png")):
        path = args.out / name
        # the dock's whole content (the scroll area's widget), not the part in view
        area = getattr(widget, "scroll_area", None)
        body = area.widget() if area is not None and area.widget() is not None else widget
        shot = body.grab()
        pinned = getattr(area, "pinned", None)  # the Segment dock's Run row, under the body
        if pinned is not None:
            from qtpy.QtGui import QPainter, QPixmap

            foot = pinned.grab()
            both = QPixmap(max(shot.width(), foot.width()), shot.height() + foot.height())
            both.fill(body.palette().window().color())
            painter = QPainter(both)
            painter.drawPixmap(0, 0, shot)
            painter.drawPixmap(0, shot.height(), foot)
            painter.end()
            shot = both
        shot.save(str(path))
        print("wrote", path)
    viewer.close()
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
