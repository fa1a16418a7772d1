"""Plain-napari reproduction: a layer removal loses a Labels layer's new colormap texture.

No napari-topo code runs here (``--guard`` adds the plugin's workaround). Found by the
random-use soak (issue 14) as "Could not find texture with id N" after a Segment re-run.

What happens (napari 0.9.2, vispy 0.17, PyQt6, Mesa llvmpipe under Xvfb):

1. A shown Labels layer, drawn last, gets new data and a new ``DirectLabelColormap``:
   napari queues vispy GLIR commands (create the new colormap texture, point the
   program's ``texture2D_values`` sampler at it, delete the old one), drawn at the next
   paint.
2. Before that paint, another layer is removed. napari's
   ``VispyCanvas._clean_and_update_scenegraph`` then flushes the whole GLIR queue
   (``context.finish()``) outside a paint, without making the canvas's GL context
   current; after Qt composed the window, Qt's compositing context is current.
3. vispy remembers the last program it used (here the Labels layer's) and skips
   ``glUseProgram``, so the sampler's ``glUniform1i`` goes to Qt's program:
   ``GL_INVALID_OPERATION``, raised at the next checked call. napari suppresses that
   ``GLError``, but vispy had already taken every command off the queue: the rest
   (the new texture's creation among them) is lost.
4. The next draw relinks the program (the colormap's size changed) and sets the sampler
   to the texture that was never created: ``RuntimeError: Could not find texture with
   id N`` from ``vispy/gloo/glir.py``; without the relink the old colours stay.

Fix upstream: make the canvas current before flushing (``self._scene_canvas.set_current()``
before ``context.finish()`` in ``_clean_and_update_scenegraph``). napari-topo's
workaround (``widgets/_common.py``, ``_canvas_context_current``): every dock makes the
canvas's ``QOpenGLWidget`` current on ``viewer.layers.events.removing``.

Run under a display::

    xvfb-run -a python benchmarks/repro_napari_gl_flush.py           # exit 1: reproduced
    xvfb-run -a python benchmarks/repro_napari_gl_flush.py --guard   # exit 0
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def pump(seconds: float) -> None:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.perf_counter() + seconds
    app.processEvents()
    while time.perf_counter() < end:
        time.sleep(0.005)
        app.processEvents()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guard", action="store_true", help="open a napari-topo dock first")
    args = ap.parse_args(argv)

    import napari
    from napari.utils.colormaps import DirectLabelColormap

    errors: list[str] = []
    sys.excepthook = lambda t, v, tb: errors.append(f"{t.__name__}: {v}")  # paintGL's

    viewer = napari.Viewer(show=True)
    if args.guard:
        from napari_topo.widgets import MetricsWidget

        viewer.window.add_dock_widget(MetricsWidget(viewer), name="metrics")
    labels = np.zeros((16, 16, 16), np.uint8)
    labels[4:12, 4:12, 4:12] = 1
    colors = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (1, 0, 0, 1)}
    points = viewer.add_points(np.array([[8.0, 8.0, 8.0]]), visible=False)
    layer = viewer.add_labels(labels, colormap=DirectLabelColormap(color_dict=colors))
    pump(0.5)  # drawn once: the Labels program is the last one vispy used

    new = labels.copy()
    new[6:10, 6:10, 6:10] = 2
    layer.data = new
    colors = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (0, 0, 1, 1), 2: (0, 1, 0, 1)}
    layer.colormap = DirectLabelColormap(color_dict=colors)
    viewer.layers.remove(points)  # before the next paint
    pump(0.5)

    viewer.close()
    print("reproduced: " + errors[0] if errors else "not reproduced: no error while drawing")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
