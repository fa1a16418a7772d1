"""Wiring shared by the dock widgets: the viewer check, following the layer list, and
messages in one style.

Messages say what was wrong, in one line, and what to do
(``"no such folder /a/b; pick an existing folder"``): :func:`one_line` is applied to
every message a dock shows, :func:`os_error_message` turns a failed file write into one,
and :func:`duplicate_roots_message` says how many tree roots coincide;
:func:`coinciding_roots_message` names two roots that snapped to one centerline point.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
import warnings
import weakref
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_topo.layers import METADATA_KEY, apply_look, layer_kind

if TYPE_CHECKING:
    from napari_topo.trees.reconstruct import CoincidingSourcesError

#: Layer-list events after which a widget rebuilds its layer pickers.
LAYER_EVENTS = ("inserted", "removed", "moved", "reordered", "renamed")
#: Kinds of plugin Points layers that are not tree roots (one point per voxel of a
#: centerline, a highlight, or the Metrics dock's missed/false centerline points, which
#: a newcomer's Tree editor had picked as its Sources): never offered as roots.
NOT_ROOTS = frozenset({"centerline", "selected_branch", "errors"})
#: Longest message a dock shows (the rest is cut, with "...").
MESSAGE_LIMIT = 300
_LIST = re.compile(r"\[([^\[\]]*)\]")


#: Longest wait (ms) at interpreter exit for the docks' workers to finish.
EXIT_WAIT_MS = 60_000
_EXIT_CANCELS: weakref.WeakSet[threading.Event] = weakref.WeakSet()
_exit_wait_registered = False


def finish_workers_at_exit(cancel: threading.Event | None = None) -> None:
    """Make the interpreter's exit wait for the docks' workers (and cancel ``cancel``).

    A script that closes the viewer and ends while a dock's worker still runs (the
    Segment dock lists its models in one while torch imports) aborted the process: Qt
    deletes the worker's signal object at exit and the worker, ending later, emits on
    it ("wrapped C/C++ object of type WorkerBaseSignals has been deleted"). napari's own
    quit waits for its workers; a script's exit did not. The handler, registered once
    (after Qt's own, so it runs first), sets every ``cancel`` event given here (a run
    in progress stops at its next check) and waits up to :data:`EXIT_WAIT_MS` for Qt's
    global thread pool, where napari's workers run.
    """
    global _exit_wait_registered
    if cancel is not None:
        _EXIT_CANCELS.add(cancel)
    if not _exit_wait_registered:
        atexit.register(_finish_workers)
        _exit_wait_registered = True


def _finish_workers() -> None:
    for event in list(_EXIT_CANCELS):
        event.set()
    from qtpy.QtCore import QThreadPool

    QThreadPool.globalInstance().waitForDone(EXIT_WAIT_MS)


def require_viewer(viewer: Any, who: str) -> None:
    """Raise a clear ValueError unless ``viewer`` looks like a napari viewer."""
    if viewer is None or not hasattr(viewer, "layers"):
        raise ValueError(f"{who} needs a napari viewer, got {type(viewer).__name__}.")


def disconnect_layer_events(events: Any, callback: Any, *_: Any) -> None:
    """Undo :func:`follow_layer_list` (extra arguments, e.g. from ``destroyed``, ignored)."""
    for name in LAYER_EVENTS:
        emitter = getattr(events, name, None)
        if emitter is not None:
            emitter.disconnect(callback)


def follow_layer_list(widget: Any, viewer: Any, callback: Any) -> None:
    """Call ``callback`` whenever layers come, go, move or are renamed.

    The connections are dropped when Qt deletes ``widget`` (the Python object may
    outlive it, and napari's event emitters would otherwise keep calling into it).
    """
    events = viewer.layers.events
    for name in LAYER_EVENTS:
        getattr(events, name).connect(callback)
    widget.destroyed.connect(partial(disconnect_layer_events, events, callback))


def unwrap(obj: Any) -> Any:
    """The napari object behind a plugin ``PublicOnlyProxy`` (or ``obj`` itself)."""
    return getattr(obj, "__wrapped__", obj)


def same_layer(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same layer (proxies unwrapped; None never is)."""
    return a is not None and b is not None and unwrap(a) is unwrap(b)


def select_layer(picker: Any, layer: Any) -> bool:
    """Select ``layer`` in a magicgui ComboBox of layers, by identity; False if absent."""
    combo = picker.native
    for index in range(combo.count()):
        if same_layer(combo.itemData(index), layer):
            if combo.currentIndex() != index:
                combo.setCurrentIndex(index)
            return True
    return False


def rebuild_picker(picker: Any) -> None:
    """Rebuild a layer picker from its choices, keeping the chosen layer if it still exists.

    Rebuilt from scratch so the order follows the layer list (magicgui would append a
    renamed layer at the end).
    """
    before = picker.value
    combo = picker.native
    blocked = combo.blockSignals(True)
    combo.clear()
    combo.blockSignals(blocked)
    picker.reset_choices()
    if before is not None:
        select_layer(picker, before)


def voxel_size_unstated(scale: Any, unit: str | None) -> bool:
    """Whether a layer's voxel size is unstated: a scale of 1 along every axis (either
    sign) and no length unit, as for an array added without ``scale`` or a file that
    states none. The Segment and Fine-tune docks then say that voxels are taken as
    cubes. An empty ``scale`` (no layer) is not unstated."""
    values = [float(v) for v in (scale if scale is not None else ())]
    return bool(values) and unit is None and all(abs(v) == 1.0 for v in values)


def plugin_info(layer: Any) -> Mapping:
    """``layer.metadata["napari_topo"]`` (what the plugin recorded), or ``{}``."""
    md = getattr(layer, "metadata", None)
    info = md.get(METADATA_KEY) if isinstance(md, Mapping) else None
    return info if isinstance(info, Mapping) else {}


def full_resolution(layer: Any) -> Any:
    """The layer's array; level 0 (full resolution) of a multiscale layer."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def placement(layer: Any) -> dict[str, Any]:
    """A layer's ``rotate``, ``shear`` and ``affine`` (numpy arrays, always all three,
    identity included): with its scale and translate, where its voxels lie, for a layer
    made to lie on it (a re-run on a straight image also straightens layers a previous
    run had rotated); and its ``units`` (napari >= 0.6), so that the scale bar of the
    layer made reads as the image's."""
    out = {
        "rotate": np.array(layer.rotate, dtype=float),
        "shear": np.array(layer.shear, dtype=float),
        "affine": np.array(layer.affine.affine_matrix, dtype=float),
    }
    units = getattr(layer, "units", None)  # napari >= 0.6: the scale bar's unit
    if units is not None:
        out["units"] = tuple(units)
    return out


def made_by_plugin(layer: Any) -> bool:
    """Whether one of the plugin's docks made ``layer`` (a result: Segment's layers, the
    Tree editor's copies). Other layers, sample ground truth included, are the user's
    references; the docks never change them without an explicit choice."""
    return bool(plugin_info(layer).get("widget"))


def is_roots_layer(layer: Any) -> bool:
    """Whether a Points layer may be offered as tree roots (not a centerline or highlight)."""
    return layer is not None and layer_kind(layer) not in NOT_ROOTS


def duplicate_roots_message(n_duplicates: int, n_points: int, layer: str | None = None) -> str:
    """One line saying that some tree roots coincide, and what to do.

    Examples
    --------
    >>> print(duplicate_roots_message(3, 12))  # doctest: +NORMALIZE_WHITESPACE
    roots must be distinct points: 3 of the 12 points are duplicates;
    remove them or pick another Points layer
    """
    where = f" of '{layer}'" if layer else ""
    return (
        f"roots must be distinct points: {n_duplicates} of the {n_points} points{where} are "
        "duplicates; remove them or pick another Points layer"
    )


def coinciding_roots_message(
    error: CoincidingSourcesError, layer: str | None = None, rows: Any = None
) -> str:
    """One line naming two tree roots that snapped to the same centerline point.

    The core snaps each root to its nearest centerline point and raises
    :class:`~napari_topo.trees.reconstruct.CoincidingSourcesError` when two land on one
    (two roots on one vessel, or beside the same vessel where the mask missed it).

    Parameters
    ----------
    error : CoincidingSourcesError
        The core's error; its ``indices`` are in the order of the roots handed in.
    layer : str, optional
        The Points layer's name.
    rows : sequence of int, optional
        For each root handed in, its 0-based row in the layer (when only some of the
        layer's points were used, e.g. those inside a box). Default: the same order.

    Examples
    --------
    >>> from napari_topo.trees.reconstruct import CoincidingSourcesError
    >>> err = CoincidingSourcesError("sources must be distinct points", [4, 9, 4, 9])
    >>> print(coinciding_roots_message(err, "roots"))  # doctest: +NORMALIZE_WHITESPACE
    roots 1 and 3 of 'roots' snap to the same centerline point (2 of the 4 roots land on
    a point another root took): two roots on one vessel, or beside the same vessel where
    the mask missed it; move or delete one
    """
    j, k = error.first_pair()
    if rows is not None:
        j, k = int(rows[j]), int(rows[k])
    n = len(error.indices)
    dup = n - len(set(error.indices))
    where = f" of '{layer}'" if layer else ""
    more = f" ({dup} of the {n} roots land on a point another root took)" if dup > 1 else ""
    return (
        f"roots {j + 1} and {k + 1}{where} snap to the same centerline point{more}: two "
        "roots on one vessel, or beside the same vessel where the mask missed it; move or "
        "delete one"
    )


def count_duplicates(points: Any) -> int:
    """How many rows of ``points`` repeat an earlier row (0 for none or no points)."""
    arr = np.asarray(points)
    if arr.size == 0:
        return 0
    arr = arr.reshape(len(arr), -1)
    return int(len(arr) - len(np.unique(arr, axis=0)))


def _shorten_list(match: re.Match) -> str:
    items = [i.strip() for i in match.group(1).split(",") if i.strip()]
    if len(items) <= 8:
        return match.group(0)
    return "[" + ", ".join(items[:5]) + f", ... ({len(items)} in all)]"


def one_line(message: Any, limit: int = MESSAGE_LIMIT) -> str:
    """A message as one short line: whitespace collapsed, long lists of numbers
    shortened, at most ``limit`` characters.

    Examples
    --------
    >>> one_line("bad ids [" + ", ".join(map(str, range(100))) + "]")
    'bad ids [0, 1, 2, 3, 4, ... (100 in all)]'
    """
    text = " ".join(str(message).split())
    text = _LIST.sub(_shorten_list, text)
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def os_error_message(exc: OSError, path: Any = None, *, action: str = "write") -> str:
    """One line for a file that could not be written (or read), with what to do.

    Parameters
    ----------
    exc : OSError
    path : str or Path, optional
        The file; default ``exc.filename``.
    action : str, optional
        What was tried (``"write"``, ``"export to"``, ``"read"``).

    Examples
    --------
    >>> os_error_message(FileNotFoundError(2, "No such file or directory", "/no/dir/m.csv"))
    'cannot write /no/dir/m.csv: no such folder /no/dir; pick an existing folder.'
    """
    target = path if path is not None else exc.filename
    p = Path(os.fspath(target)) if target is not None else None
    where = f"cannot {action} {p}" if p is not None else f"cannot {action} the file"
    if isinstance(exc, FileNotFoundError) and p is not None and not p.parent.is_dir():
        return f"{where}: no such folder {p.parent}; pick an existing folder."
    if isinstance(exc, PermissionError):
        return f"{where}: permission denied; pick a folder you can write to."
    if isinstance(exc, IsADirectoryError):
        return f"{where}: it is a folder; give a file name."
    reason = (exc.strerror or str(exc) or type(exc).__name__).rstrip(".")
    return f"{where}: {reason[:1].lower() + reason[1:]}; check the path and try again."


def check_folder(path: Any, *, action: str = "write") -> Path:
    """``path`` as a Path (``~`` expanded); a one-line ValueError if its folder is missing.

    Examples
    --------
    >>> check_folder("/no/such/folder/m.csv", action="export to")
    Traceback (most recent call last):
    ...
    ValueError: cannot export to /no/such/folder/m.csv: no such folder /no/such/folder; pick an existing folder.
    """  # noqa: E501
    p = Path(os.fspath(path)).expanduser()
    if not p.parent.is_dir():
        raise ValueError(
            f"cannot {action} {p}: no such folder {p.parent}; pick an existing folder."
        )
    return p


# --------------------------------------------------------------------------------------
# view defaults every dock installs (once per viewer)
# --------------------------------------------------------------------------------------
#: Camera angles (napari's ``camera.angles``, degrees) that 3D opens with: an oblique
#: view instead of looking straight down z, where vessel trees look like a 2D tracing.
OBLIQUE_ANGLES = (-25.0, 35.0, 145.0)
#: Labels modes that write into the layer.
PAINT_MODES = frozenset({"paint", "fill", "erase", "polygon"})
_HOOKED: weakref.WeakSet = weakref.WeakSet()


def _camera(viewer: Any) -> Any:
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before
    return scene.camera if scene is not None else viewer.camera


def _oblique_on_3d(viewer_ref: Any, event: Any) -> None:
    """Turn a camera that looks straight along an axis to :data:`OBLIQUE_ANGLES` when
    the viewer switches to 3D (angles the user set are kept)."""
    viewer = viewer_ref()
    if viewer is None or getattr(event, "value", None) != 3:
        return
    camera = _camera(viewer)
    angles = np.asarray(camera.angles, dtype=float)
    if np.all(np.isclose(np.mod(angles, 90.0), 0.0) | np.isclose(np.mod(angles, 90.0), 90.0)):
        camera.angles = OBLIQUE_ANGLES


def _reveal_on_paint_mode(event: Any) -> None:
    """Show a hidden plugin Labels layer when a painting tool is chosen on it.

    Painting a Labels layer that was added hidden while the viewer was in 3D raises
    vispy's "Data is too large" in napari 0.9 (the hidden layer was never sliced, so
    its texture is 1x1x1 while the stroke writes at the voxel's offset). A visible
    layer is sliced first, and painting something hidden shows nothing anyway.
    """
    layer = getattr(event, "source", None)
    mode = str(getattr(event, "mode", getattr(event, "value", "")))
    if layer is not None and mode in PAINT_MODES and not layer.visible:
        layer.visible = True


def guard_hidden_labels(layer: Any) -> None:
    """Install :func:`_reveal_on_paint_mode` on a Labels layer (idempotent)."""
    mode = getattr(getattr(layer, "events", None), "mode", None)
    if mode is not None and hasattr(layer, "paint"):
        mode.connect(_reveal_on_paint_mode)  # napari ignores a second connection


#: napari's warning for a Labels layer with a contour drawn in 3D (filled there).
CONTOUR_3D_WARNING = "Contours are not displayed during 3D rendering"


def _on_inserted(event: Any) -> None:
    layer = getattr(event, "value", None)
    if layer is not None and layer_kind(layer) is not None:
        guard_hidden_labels(layer)
        apply_look(layer)


def canvas_gl_widget(widget: Any) -> Any | None:
    """The napari canvas (a ``QOpenGLWidget``) of the window that holds ``widget``.

    Found through Qt alone (napari has no public handle on its canvas widget): the
    outermost ancestor of ``widget`` (a dock's parent stays the main window while it
    floats) and, in it, the one ``QOpenGLWidget`` that is not inside a dock widget.
    None when ``widget`` is not in a window with exactly one such canvas, or when Qt
    has already deleted it.
    """
    from qtpy.QtOpenGLWidgets import QOpenGLWidget
    from qtpy.QtWidgets import QDockWidget

    try:
        root = widget
        while root.parentWidget() is not None:
            root = root.parentWidget()
        canvases = []
        for gl in root.findChildren(QOpenGLWidget):
            parent = gl.parentWidget()
            while parent is not None and not isinstance(parent, QDockWidget):
                parent = parent.parentWidget()
            if parent is None:
                canvases.append(gl)
    except RuntimeError:  # the C++ widget is gone (its dock was closed)
        return None
    return canvases[0] if len(canvases) == 1 else None


def _canvas_context_current(docks: Any, *_: Any) -> None:
    """Make the viewer's canvas GL context current before napari removes a layer.

    Root cause (napari 0.9.2, vispy 0.17): on every layer removal napari's
    ``VispyCanvas._clean_and_update_scenegraph`` flushes vispy's whole GLIR command
    queue (``context.finish()``) outside a paint, without making the canvas's context
    current: after Qt has composed the window, Qt's compositing context is current.
    vispy remembers the last program it used and skips ``glUseProgram`` for it, so a
    queued ``glUniform1i`` (a Labels layer's new colormap texture, queued by a
    colormap or data change not yet drawn) goes to Qt's program and raises
    ``GL_INVALID_OPERATION``. napari suppresses that ``GLError``, but vispy has
    already taken every command off the queue: the rest of them (here the creation of
    the new colormap texture) are lost, and the next draw fails with "Could not find
    texture with id N" (or draws stale colours). Making the canvas current first
    runs the flush where vispy expects it. ``docks`` holds the plugin's docks of
    that viewer, through which the canvas is found (:func:`canvas_gl_widget`).
    """
    for dock in list(docks):
        canvas = canvas_gl_widget(dock)
        if canvas is not None:
            canvas.makeCurrent()  # binds the canvas's framebuffer as well
            return


#: Per viewer: the plugin docks open in it (see :func:`_canvas_context_current`).
_DOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def install_view_defaults(viewer: Any, dock: Any = None) -> None:
    """What every dock sets up on its viewer, once: 3D opens at
    :data:`OBLIQUE_ANGLES`, the plugin's Labels layers show themselves when a
    painting tool is picked on them (see :func:`_reveal_on_paint_mode`), the canvas's
    GL context is made current before a layer is removed (see
    :func:`_canvas_context_current`; ``dock``, the calling dock widget, is how the canvas
    is found), and its layers get what their data tuples cannot carry (a reference's
    outline: :func:`napari_topo.layers.apply_look`)."""
    real = unwrap(viewer)
    try:
        docks = _DOCKS.get(real)
        if docks is None:
            docks = _DOCKS[real] = weakref.WeakSet()
            viewer.layers.events.removing.connect(partial(_canvas_context_current, docks))
            viewer.layers.events.begin_batch.connect(partial(_canvas_context_current, docks))
        if dock is not None:
            docks.add(dock)
        if real in _HOOKED:
            return
        _HOOKED.add(real)
    except TypeError:  # not weak-referenceable (a test double): hook every time
        pass
    viewer.dims.events.ndisplay.connect(partial(_oblique_on_3d, weakref.ref(real)))
    viewer.layers.events.inserted.connect(_on_inserted)
    # A reference's outline (apply_look) is drawn filled in 3D, as the legend says;
    # napari would warn about that on every 3D draw of the layer (a notification each
    # time the user turns to 3D). Only that message is silenced.
    warnings.filterwarnings("ignore", message=CONTOUR_3D_WARNING, category=UserWarning)
    for layer in viewer.layers:
        if layer_kind(layer) is not None:
            guard_hidden_labels(layer)
            apply_look(layer)


#: Largest height (pixels) a dock asks for at first: three docks stacked in napari's
#: right column share a 768-pixel screen; each scrolls what it cannot show.
DOCK_HEIGHT_HINT = 260
#: Least height (pixels) of a dock's scroll area (and pinned part, see
#: :func:`scrolling_body`) when a column squeezes it.
DOCK_MIN_HEIGHT = 80
#: Least height (pixels) of the scroll area above a pinned part: a line of its body
#: (napari's scroll bar keeps 16 px at each end for its arrows).
DOCK_MIN_BODY = 44
#: ``objectName`` of the scroll area :func:`scrolling_body` makes (how
#: :func:`share_dock_column` finds the plugin's docks in a column).
BODY_NAME = "napari_topo_body"
#: Weight (see :func:`share_dock_column`) of a dock that is not the plugin's.
FOREIGN_SHARE = 3.0


def _dock_of(widget: Any) -> Any | None:
    """The ``QDockWidget`` that holds ``widget`` (None when it is not docked)."""
    from qtpy.QtWidgets import QDockWidget

    parent = widget.parentWidget() if widget is not None else None
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def _water_fill(total: int, wants: list[int], weights: list[float]) -> list[int]:
    """Share ``total`` pixels by ``weights``, none getting more than it wants; what
    all of them leave goes to the heaviest (the one whose content grows).

    Examples
    --------
    >>> _water_fill(1260, [400, 560, 300], [6, 11, 3])
    [400, 560, 300]
    >>> _water_fill(700, [400, 560, 300], [6, 11, 3])
    [210, 385, 105]
    >>> _water_fill(900, [200, 900, 300], [6, 11, 3])
    [200, 550, 150]
    """
    sizes = [0] * len(wants)
    active = list(range(len(wants)))
    left = total
    while active:
        weight = sum(weights[i] for i in active)
        capped = [i for i in active if wants[i] <= left * weights[i] / weight]
        if not capped:
            for i in active:
                sizes[i] = int(left * weights[i] / weight)
            return sizes
        for i in capped:
            sizes[i] = wants[i]
            left -= wants[i]
            active.remove(i)
    heaviest = max(range(len(wants)), key=lambda i: weights[i])
    sizes[heaviest] += max(left, 0)
    return sizes


def _fill_above_floors(
    total: int, wants: list[int], weights: list[float], floors: list[int]
) -> list[int]:
    """:func:`_water_fill`, but a dock whose part falls short of its floor (the pixels
    it must keep in view, at most what it wants) gets its floor, and the others share
    the rest; plain :func:`_water_fill` when the floors do not fit.

    Examples
    --------
    >>> _fill_above_floors(700, [130, 400, 560], [1, 6, 11], [0, 250, 0])
    [37, 250, 412]
    >>> _fill_above_floors(700, [130, 400, 560], [1, 6, 11], [0, 100, 0])
    [38, 233, 427]
    >>> _fill_above_floors(200, [130, 400, 560], [1, 6, 11], [0, 250, 0])
    [11, 66, 122]
    """
    floors = [min(f, w) for f, w in zip(floors, wants, strict=True)]
    if sum(floors) > total:
        return _water_fill(total, wants, weights)
    fixed: dict[int, int] = {}
    while True:
        free = [i for i in range(len(wants)) if i not in fixed]
        part = _water_fill(
            total - sum(fixed.values()), [wants[i] for i in free], [weights[i] for i in free]
        )
        short = [i for i, p in zip(free, part, strict=True) if p < floors[i]]
        if not short:
            sizes = dict(zip(free, part, strict=True)) | fixed
            return [sizes[i] for i in range(len(wants))]
        fixed.update({i: floors[i] for i in short})


def share_dock_column(widget: Any) -> list[int] | None:
    """Share the height of the dock column that holds ``widget`` between its docks.

    napari docks a widget added from the Plugins menu under the ones already in the
    column and gives it almost no height (its ``resizeDocks`` call pushes later docks
    down), and when a dock closes Qt gives its height to a neighbour, which may not
    need it while the metrics table scrolls. This shares the column instead: each dock
    gets a part by weight (the plugin's docks: the ``share`` given to
    :func:`scrolling_body`; others :data:`FOREIGN_SHARE`) but never more than its whole
    content needs; what all of them leave goes to the heaviest. A dock whose scroll
    area has a ``dock_floor`` callable (pixels of its body, from the top) first gets
    that much (the metrics dock: its table's headline rows), when all floors fit.
    Docks that float, are hidden or sit behind a tab of a dock already counted are left
    alone. Only Qt's public ``QMainWindow.resizeDocks`` is used.

    Returns
    -------
    list of int or None
        The heights asked for (pixels, in the column's top-to-bottom order), or None
        when ``widget`` is not docked in a ``QMainWindow`` column with another dock.
    """
    from qtpy.QtWidgets import QMainWindow

    try:
        dock = _dock_of(widget)
        window = dock.parentWidget() if dock is not None else None
        if not isinstance(window, QMainWindow) or dock.isFloating():
            return None
        return _share_area(window, window.dockWidgetArea(dock))
    except RuntimeError:  # a C++ widget is gone (a dock closed meanwhile)
        return None


def _column(window: Any, area: Any) -> list[Any]:
    """The docks shown in ``area`` of ``window``, one per tab group, top to bottom."""
    from qtpy.QtWidgets import QDockWidget

    column: list[Any] = []
    for other in window.findChildren(QDockWidget):
        if (
            other.parentWidget() is not window
            or other.isFloating()
            or other.isHidden()
            or window.dockWidgetArea(other) != area
            or any(other in window.tabifiedDockWidgets(seen) for seen in column)
        ):
            continue
        column.append(other)
    column.sort(key=lambda d: d.geometry().top())
    return column


def _share_area(window: Any, area: Any) -> list[int] | None:
    """:func:`share_dock_column` for the docks in ``area`` (left or right) of ``window``."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QScrollArea

    sides = (Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea)
    if area not in sides:
        return None
    try:
        column = _column(window, area)
        if len(column) < 2:
            return None
        wants, weights, floors = [], [], []
        for other in column:
            body = other.findChild(QScrollArea, BODY_NAME)
            if body is not None and body.widget() is not None:
                chrome = max(other.sizeHint().height() - body.sizeHint().height(), 0)
                wants.append(chrome + body.widget().sizeHint().height())
                weights.append(float(getattr(body, "dock_share", 1.0)))
                floor = getattr(body, "dock_floor", None)
                floors.append(min(chrome + int(floor()), wants[-1]) if callable(floor) else 0)
            else:
                wants.append(other.sizeHint().height())
                weights.append(FOREIGN_SHARE)
                floors.append(0)
        total = sum(d.height() for d in column)
        sizes = _fill_above_floors(total, wants, weights, floors)
        window.resizeDocks(column, sizes, Qt.Orientation.Vertical)
    except RuntimeError:  # a C++ widget is gone (a dock closed meanwhile)
        return None
    return sizes


def reshare_column(widget: Any) -> None:
    """Share the dock column of ``widget`` again soon (:func:`keep_columns_shared`'s
    next event-loop turn): for a dock whose content grew while it stayed shown (the
    metrics table appearing with its first results), which no Show or Hide event
    reports. Nothing when ``widget`` is not docked in a main window."""
    from qtpy.QtWidgets import QMainWindow

    try:
        dock = _dock_of(widget)
        window = dock.parentWidget() if dock is not None else None
        if isinstance(window, QMainWindow) and not dock.isFloating():
            keep_columns_shared(window).schedule()
    except RuntimeError:  # a C++ widget is gone
        return


#: ``objectName`` of the one :func:`keep_columns_shared` watcher of a main window.
KEEPER_NAME = "napari_topo_dock_keeper"


def keep_columns_shared(window: Any) -> Any:
    """Share the side dock columns of ``window`` again whenever a dock in them is
    shown, hidden, closed or added (:func:`share_dock_column`), not only on a dock's
    first show.

    Without it, closing one dock gave its height to a neighbour (the Tree editor took
    a closed Segment dock's height while the metrics table showed two rows), and a dock
    shown again or a foreign dock opened and closed left the column as Qt left it. One
    watcher per window (a child ``QObject`` named :data:`KEEPER_NAME`, gone with the
    window) filters the window's ``ChildAdded`` events, to watch every dock added
    later, and each dock's ``Show``/``Hide`` events; spontaneous ones (the window
    minimised and restored) are ignored. Columns without a napari-topo dock are left
    as they are, and one sharing runs per event-loop turn (``QTimer.singleShot(0)``,
    after napari's own ``resizeDocks`` and Qt's layout). Dragging a splitter is never
    undone: only showing or hiding a dock shares a column.

    Parameters
    ----------
    window : QMainWindow

    Returns
    -------
    QObject
        The window's watcher (made on the first call).
    """
    from qtpy.QtCore import QEvent, QObject, QTimer
    from qtpy.QtWidgets import QDockWidget, QScrollArea

    keeper = window.findChild(QObject, KEEPER_NAME)
    if keeper is not None:
        return keeper

    class _Keeper(QObject):
        # the window is the keeper's parent, never held from Python (napari's tests
        # check that no viewer outlives its window)
        pending = False

        def watch(self, dock: Any) -> None:
            dock.removeEventFilter(self)  # once per dock
            dock.installEventFilter(self)

        def schedule(self) -> None:
            if not self.pending:
                self.pending = True
                QTimer.singleShot(0, self.share)

        def share(self) -> None:
            self.pending = False
            try:
                main = self.parent()
                if main is None or not main.isVisible():
                    return
                areas = {
                    main.dockWidgetArea(dock)
                    for dock in main.findChildren(QDockWidget)
                    if not dock.isHidden()
                    and not dock.isFloating()
                    and dock.findChild(QScrollArea, BODY_NAME) is not None
                }
                for area in areas:
                    _share_area(main, area)
            except RuntimeError:  # the window is going
                return

        def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 - Qt's name
            kind = event.type()
            if obj is self.parent():
                if kind == QEvent.Type.ChildAdded and isinstance(event.child(), QDockWidget):
                    self.watch(event.child())
                    self.schedule()
            elif kind in (QEvent.Type.Show, QEvent.Type.Hide) and not event.spontaneous():
                self.schedule()
            return False

    keeper = _Keeper(window)
    keeper.setObjectName(KEEPER_NAME)
    window.installEventFilter(keeper)
    for dock in window.findChildren(QDockWidget):
        keeper.watch(dock)
    return keeper


def scrolling_body(widget: Any, layout: Any, *, share: float = 1.0, pinned: Any = None) -> Any:
    """Put ``layout``'s content in a frameless scroll area filling ``widget``.

    A dock then asks for little height (napari stacks the three docks in one column),
    so the window fits a 1366 x 768 screen with all of them open; what does not fit
    scrolls instead of being cut off or growing the window past the screen. The area
    is as wide as its content needs (no sideways scrolling, no cut combo box text) and
    asks for at most :data:`DOCK_HEIGHT_HINT` pixels of height.

    Whenever the dock is shown in a window's dock column, and from then on whenever a
    dock of that window is shown, hidden, closed or added (:func:`keep_columns_shared`),
    the column is shared between its docks (:func:`share_dock_column`, with ``share``
    as this dock's weight), as napari's Plugins menu does not: no dock gets more
    height than its content needs while another one scrolls. The area keeps Qt's Expanding vertical
    policy: with any other policy napari adds a stretch under the dock's widget, and a
    dock given more height showed an empty band under a body that still scrolled.

    ``pinned`` (a layout, e.g. the Segment dock's Run / Cancel buttons and progress bar)
    goes under the scroll area, outside it: always in view whatever the dock's height
    and however far the body is scrolled, and part of the dock's minimum height, so
    napari's column can squeeze the body but never it (at 1366 x 768 with three docks
    the Segment dock's Run row had scrolled or been squeezed out of view).

    Parameters
    ----------
    widget : QWidget
        The dock's widget; gets a layout holding the scroll area.
    layout : QLayout
        The content.
    share : float, optional
        Weight of this dock in :func:`share_dock_column`.
    pinned : QLayout, optional
        Content kept in view under the scroll area, with the body's side margins; the
        scroll area's ``pinned`` attribute is the QWidget holding it (None without).

    Returns
    -------
    QScrollArea
    """
    from qtpy.QtCore import QEvent, QObject, QSize, Qt
    from qtpy.QtWidgets import (
        QFrame,
        QMainWindow,
        QScrollArea,
        QSizePolicy,
        QVBoxLayout,
        QWidget,
    )

    class _Area(QScrollArea):
        def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
            inner = self.widget().sizeHint() if self.widget() is not None else QSize()
            bar = self.verticalScrollBar().sizeHint().width()
            return QSize(inner.width() + bar, min(inner.height(), DOCK_HEIGHT_HINT))

        def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
            inner = self.widget().minimumSizeHint() if self.widget() is not None else QSize()
            # the shown scroll bar can be wider than its size hint (napari's style: 15 px
            # against 13). The docks take their minimum width from here, so no dock sets
            # a fixed one: a fixed 300 px let a column that the metrics dock had opened
            # at 320 px cut the Segment dock's buttons
            bar = max(self.verticalScrollBar().sizeHint().width(), 16)
            # above a pinned part (Run and Cancel: 32 px) a line of the body is enough:
            # a dock squeezed to it is no taller than one without (80 px)
            footer = getattr(self, "pinned", None)
            low = DOCK_MIN_HEIGHT if footer is None else DOCK_MIN_BODY
            return QSize(inner.width() + bar, min(inner.height(), low))

    class _Watch(QObject):
        """Shares the dock column when the dock is shown (and, through the window's
        :func:`keep_columns_shared` watcher, whenever a dock in it shows or hides)."""

        def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 - Qt's name
            if obj is widget and event.type() == QEvent.Type.Show and not event.spontaneous():
                dock = _dock_of(widget)
                window = dock.parentWidget() if dock is not None else None
                if isinstance(window, QMainWindow):
                    # after napari's own resizeDocks and the layout of the new dock
                    keep_columns_shared(window).schedule()
            return False

    body = QWidget()
    body.setLayout(layout)
    scroll = _Area(widget)
    scroll.setObjectName(BODY_NAME)
    scroll.dock_share = float(share)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(body)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.setSpacing(0)
    outer.addWidget(scroll)
    scroll.pinned = None
    if pinned is not None:
        footer = QWidget(widget)
        footer.setLayout(pinned)
        margins = layout.contentsMargins()
        # 2 px under the body (whose own bottom margin ends it when scrolled to its end)
        # and 4 above the dock's edge: a squeezed dock is no taller than one without
        pinned.setContentsMargins(margins.left(), 2, margins.right(), 4)
        # as tall as its content, never squeezed: the scroll area gives up the height
        footer.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        outer.addWidget(footer)
        scroll.pinned = footer
    watch = _Watch(scroll)
    widget.installEventFilter(watch)
    return scroll
