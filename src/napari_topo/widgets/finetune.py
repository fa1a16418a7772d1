"""Dock widget that fine-tunes a model on the user's own corrected labels.

The loop: segment, correct a few slices of the mask (or paint a new Labels layer), press
*Start* here, then *Segment again* with the new model. The work is
:func:`napari_topo.training.finetune.finetune`, run in a napari worker thread (the body
never touches Qt; it yields :class:`~napari_topo.training.finetune.FinetuneProgress`
values that the GUI thread turns into the progress bar, the loss plot and the status
line). The new model is saved into the user models folder
(:func:`napari_topo.models.registry.user_models_dir`) from the worker; on the GUI thread
it is then added to the Segment widget's Model picker and selected.

What the loss sees (the annotated region,
:func:`~napari_topo.training.finetune.annotated_region`) is the slices the user painted
in: the dock records them from napari's ``Labels.events.paint`` (:class:`PaintRecord`),
per Labels layer, along the axis the user paged through. It is said in the "Will train
on" line as soon as labels are picked or painted, and shown as a translucent Labels
layer ``"<labels> annotated region"`` (owned by this widget) when training starts. A
Segment result with no painting recorded is refused: its voxels are the model's own
output, which teaches the model nothing.

Fine-tuning never imports ``torch._dynamo`` (see
:mod:`napari_topo.training.finetune`), whose ``triton`` import segfaults in a process
that holds napari's OpenGL context under Mesa.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, LineEdit, PushButton
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, QPointF, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_topo.geometry import layer_length_unit
from napari_topo.layers import METADATA_KEY, layer_kind
from napari_topo.training.finetune import DEFAULT_LAYERS
from napari_topo.widgets._common import (
    finish_workers_at_exit,
    follow_layer_list,
    full_resolution,
    one_line,
    placement,
    plugin_info,
    rebuild_picker,
    require_viewer,
    same_layer,
    scrolling_body,
    select_layer,
    unwrap,
    voxel_size_unstated,
)
from napari_topo.widgets.metrics import paint_changes

if TYPE_CHECKING:
    import napari

#: The status line before a run (and once a refused Start's reason is answered).
IDLE_STATUS = "Correct a few slices of a Labels layer and press Start."

__all__ = ["MIN_MINUTES", "OWNER", "FinetuneWidget", "LossPlot", "PaintRecord", "painted_indices"]

_LOG = logging.getLogger(__name__)
#: This dock's weight when a window's dock column is shared
#: (:func:`~napari_topo.widgets._common.share_dock_column`): between the Tree editor's
#: and Segment's; it is opened after a correction, and scrolls.
DOCK_SHARE = 4

#: ``metadata["napari_topo"]["widget"]`` of the layers this widget made.
OWNER = "finetune"
#: Colours of the loss plot.
#: the loss plot's height in pixels (its minimum: it is pinned in view)
PLOT_HEIGHT = 64
TRAIN_COLOUR = QColor(150, 150, 150)
VALIDATION_COLOUR = QColor(255, 140, 0)
#: The smallest time budget the dock offers: 0.1 min never fit a training step (scoring
#: the base model on the held-out part alone takes longer) and saved the base weights.
MIN_MINUTES = 1.0
#: Milliseconds after the last paint or pick before the "Will train on" line is updated.
REGION_DEBOUNCE_MS = 300
_AXIS_NAMES = {3: "zyx", 2: "yx"}
#: The Trains picker: (text, :func:`~napari_topo.training.finetune.finetune`'s ``layers``).
TRAINS_CHOICES = [
    ("every weight", "all"),
    ("the decoder", "decoder"),
    ("a voxel classifier", "head"),
]


def _axis_name(axis: int, ndim: int) -> str:
    names = _AXIS_NAMES.get(ndim)
    return names[axis] if names else f"axis {axis}"


# --------------------------------------------------------------------------------------
# which slices the user painted (from napari's Labels.events.paint)
# --------------------------------------------------------------------------------------


def painted_indices(atoms: Any, shape: tuple[int, ...]) -> list[set[int]]:
    """Per axis, the indices that the edits of a Labels ``events.paint`` touched.

    The atoms are read by the Metrics dock's
    :func:`~napari_topo.widgets.metrics.paint_changes` (napari's masked edits of the
    brush, fill and polygons, and ``Labels.data_setitem``'s index arrays).

    Examples
    --------
    >>> atom = ((np.array([3, 3]), np.array([1, 2]), np.array([5, 5])), None, 1)
    >>> painted_indices([atom], (10, 10, 10))
    [{3}, {1, 2}, {5}]
    """
    out: list[set[int]] = [set() for _ in shape]
    for indices, _values in paint_changes(atoms, shape):
        for axis, ix in enumerate(indices[: len(shape)]):
            out[axis].update(int(v) for v in np.unique(ix))
    return out


class _Edit(NamedTuple):
    #: the edit's history atoms, as napari's undo stack holds them (held here, not their
    #: ids: a freed atom's id is soon another's); () once the edit is kept for good
    atoms: tuple
    axis: int  # the axis it was painted along
    indices: frozenset  # the slices along that axis it touched


class PaintRecord:
    """Which slices the user painted in one Labels layer.

    ``add`` takes the atoms of each ``events.paint`` (one edit: a brush stroke, a fill,
    a ``data_setitem``); ``view_axis`` is the axis the viewer did not display (the one
    the user pages through) when the paint happened in a 2D view. An edit counts as
    painted along ``view_axis`` when it lies in one slice of it; else along the axis
    where it lies in one slice (several: the axis most edits were painted along), else
    along the axis where it touches the fewest slices (a 3D edit).

    :meth:`painted` gives ``[(axis, sorted indices), ...]`` of the edits still in effect:
    napari's ``undo`` and ``redo`` emit no event, so with the layer given, an edit whose
    atoms have left the layer's undo stack (not full) was undone and no longer counts
    (redo puts the same atoms back), and edits on the stack that were never recorded
    (made before the dock opened) are read from it. That stack
    (``Labels._undo_history``, 100 edits) is not public napari API; without it every
    recorded edit counts.
    """

    def __init__(self, ndim: int):
        self.ndim = int(ndim)
        self.edits: list[_Edit] = []
        #: atoms (by id) on the layer's undo / redo stacks when its data were replaced:
        #: napari keeps them there, but they were painted in data that are gone. The
        #: atoms themselves are held, so that no new atom can take a held one's id, and
        #: let go (by :meth:`live`) once they have left both stacks
        self.ignored: dict[int, Any] = {}
        #: an edit was made in a 3D view (each slice it touched counts whole)
        self.in_3d = False

    def __bool__(self) -> bool:
        return bool(self.edits)

    def clear(self, layer: Any = None) -> None:
        """Forget every edit (the layer's data were replaced), also those still on
        ``layer``'s undo and redo stacks."""
        self.edits.clear()
        self.in_3d = False
        for name in ("_undo_history", "_redo_history"):
            for item in getattr(layer, name, None) or ():
                self.ignored.update((id(a), a) for a in item)

    def copy(self, layer: Any = None) -> PaintRecord:
        """The record for a copy of ``layer``'s data: the edits in effect now
        (:meth:`live`), kept for good (the copy's undo stack, its own, lacks them)."""
        other = PaintRecord(self.ndim)
        other.edits = [e._replace(atoms=()) for e in self.live(layer)]
        other.in_3d = self.in_3d
        return other

    def _axis_of(self, touched: list[set[int]], view_axis: int | None) -> int:
        if view_axis is not None and 0 <= view_axis < self.ndim and len(touched[view_axis]) == 1:
            return int(view_axis)
        flat = [a for a in range(self.ndim) if len(touched[a]) == 1]
        if flat:
            votes = Counter(e.axis for e in self.edits)
            return max(flat, key=lambda a: (votes[a], -a))
        return min(range(self.ndim), key=lambda a: (len(touched[a]), a))

    def _edit(self, atoms: Any, shape: tuple[int, ...], view_axis: int | None) -> _Edit | None:
        atoms = list(atoms or ())
        touched = painted_indices(atoms, shape)
        if not any(touched):
            return None
        axis = self._axis_of(touched, view_axis)
        return _Edit(tuple(atoms), axis, frozenset(touched[axis]))

    def add(self, atoms: Any, shape: tuple[int, ...], view_axis: int | None = None) -> None:
        edit = self._edit(atoms, shape, view_axis)
        if edit is not None:
            self.edits.append(edit)

    def live(self, layer: Any = None) -> list[_Edit]:
        """The edits still in effect in ``layer`` (see the class docstring)."""
        undo = getattr(layer, "_undo_history", None) if layer is not None else None
        if undo is None:
            return list(self.edits)
        try:
            stack = [list(item) for item in undo]
            redo = {id(a) for item in (getattr(layer, "_redo_history", None) or ()) for a in item}
            full = undo.maxlen is not None and len(undo) >= undo.maxlen
            shape = tuple(full_resolution(layer).shape)
        except Exception:  # noqa: BLE001 - another napari: count every recorded edit
            return list(self.edits)
        on_stack = {id(a) for item in stack for a in item}
        for gone in [k for k in self.ignored if k not in on_stack and k not in redo]:
            del self.ignored[gone]  # off both stacks: napari will never bring it back
        # on the undo stack: in effect; on the redo stack: undone, may come back; on
        # neither: undone and then painted over (dropped), or, with the stack full,
        # fallen off its bottom (kept for good, its atoms let go: a stroke undone and
        # painted over while the stack is full is taken for one of these)
        kept, alive = [], []
        for e in self.edits:
            ids = {id(a) for a in e.atoms}
            if not e.atoms or ids & on_stack:
                kept.append(e)
                alive.append(e)
            elif ids & redo:
                kept.append(e)
            elif full:
                kept.append(e._replace(atoms=()))
                alive.append(kept[-1])
        self.edits = kept
        known = set(self.ignored).union(*({id(a) for a in e.atoms} for e in self.edits))
        for item in stack:  # made before the dock opened, or redone
            if not {id(a) for a in item} & known:
                edit = self._edit(item, shape, None)
                if edit is not None:
                    alive.append(edit)
        return alive

    def painted(self, layer: Any = None) -> list[tuple[int, list[int]]] | None:
        """``[(axis, sorted indices), ...]`` painted (one pair per axis, the axis with
        the most slices first), or None when nothing is; ``layer`` as in :meth:`live`."""
        per_axis: dict[int, set[int]] = {}
        for e in self.live(layer):
            per_axis.setdefault(e.axis, set()).update(e.indices)
        if not per_axis:
            return None
        order = sorted(per_axis, key=lambda a: (-len(per_axis[a]), a))
        return [(a, sorted(per_axis[a])) for a in order]


# --------------------------------------------------------------------------------------
# a small loss plot (QPainter only; no plotting library)
# --------------------------------------------------------------------------------------


#: The smallest span of a loss plot scale, as a fraction of its series' largest magnitude.
MIN_SCALE_SPAN = 0.1


class LossPlot(QWidget):
    """Training loss (grey line, per step, left scale) and validation loss (orange dots,
    right scale) by step.

    Each has its own scale: the training objective adds a batch soft Dice and BCE to the
    base loss, the validation loss is the base loss alone on the held-out patches, so
    the two are not comparable (on one axis a newcomer saw a flat orange line at the
    foot of the plot under training spikes of 8).
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.train: list[tuple[int, float]] = []
        self.validation: list[tuple[int, float]] = []
        # pinned under the form (FinetuneWidget), so part of the dock's minimum height:
        # small enough not to squeeze the docks above it at 1366 x 768
        self.setMinimumHeight(PLOT_HEIGHT)
        self.setToolTip(
            "Loss by step. Grey line, left scale: the training objective on each step's "
            "patches (the base model's loss + batch soft Dice + BCE). Orange dots, right "
            "scale: the base model's loss on the held-out validation patches. Each has "
            "its own scale."
        )

    def clear(self) -> None:
        self.train.clear()
        self.validation.clear()
        self.update()

    def add(self, kind: str, step: int, value: float) -> None:
        """Add a point (``kind`` "train" or "validation") and repaint."""
        if value is None or not math.isfinite(value):
            return
        (self.train if kind == "train" else self.validation).append((int(step), float(value)))
        self.update()

    def value_range(self, kind: str) -> tuple[float, float] | None:
        """The (low, high) of the ``kind`` ("train" or "validation") scale: that series'
        own extent (widened by 0.5 each way when flat), at least :data:`MIN_SCALE_SPAN`
        of its largest magnitude around its middle, or None when it has no point."""
        series = self.train if kind == "train" else self.validation
        if not series:
            return None
        lo, hi = min(v for _, v in series), max(v for _, v in series)
        if hi - lo < 1e-6:
            return lo - 0.5, hi + 0.5
        # a newcomer's validation loss, 0.297 -> 0.301, filled the plot's height as a
        # steep climb: a change of a few per cent is drawn as one
        need = MIN_SCALE_SPAN * max(abs(lo), abs(hi))
        if hi - lo < need:
            mid = 0.5 * (lo + hi)
            return mid - 0.5 * need, mid + 0.5 * need
        return lo, hi

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        try:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            train, val = self.value_range("train"), self.value_range("validation")
            left, right = _scale_labels(train), _scale_labels(val)
            metrics = painter.fontMetrics()

            def width(labels: tuple[str, str] | None) -> int:
                return 6 + max((metrics.horizontalAdvance(t) for t in labels or ()), default=28)

            area = self.plot_area(metrics)
            area.adjust(width(left), 0, -width(right), 0)
            painter.setPen(QPen(self.palette().text().color()))
            painter.drawRect(area)
            points = self.train + self.validation
            if not points:
                painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "loss")
                return
            legend_left = self._legend(painter, area)
            xmax = max(1, max(s for s, _ in points))

            def at(step: float, value: float, scale: tuple[float, float]) -> QPointF:
                lo, hi = scale
                x = area.left() + area.width() * step / xmax
                # a few pixels in from the frame: a dot at a scale's end stays inside it
                y = area.bottom() - 5 - (area.height() - 10) * (value - lo) / (hi - lo)
                return QPointF(x, y)

            # the last step, in the legend's strip (left) where it fits: the x scale runs
            # from 0 to it
            last = f"step {xmax}"
            if area.left() + metrics.horizontalAdvance(last) + 8 <= legend_left:
                painter.setPen(QPen(self.palette().text().color()))
                painter.drawText(area.left(), area.top() - 4 - metrics.descent(), last)
            if train is not None:  # left scale, grey
                painter.setPen(QPen(TRAIN_COLOUR, 1))
                painter.drawText(2, area.top() + 10, left[1])
                painter.drawText(2, area.bottom(), left[0])
                step = max(1, len(self.train) // max(1, area.width()))
                painter.drawPolyline(QPolygonF([at(s, v, train) for s, v in self.train[::step]]))
            if val is not None:  # right scale, orange
                painter.setPen(QPen(VALIDATION_COLOUR, 2))
                painter.drawText(area.right() + 3, area.top() + 10, right[1])
                painter.drawText(area.right() + 3, area.bottom(), right[0])
                painter.setBrush(VALIDATION_COLOUR)
                if len(self.validation) > 1:
                    painter.drawPolyline(QPolygonF([at(s, v, val) for s, v in self.validation]))
                for s, v in self.validation:
                    painter.drawEllipse(at(s, v, val), 2.5, 2.5)
        finally:
            painter.end()

    def plot_area(self, metrics: Any = None) -> Any:
        """The rectangle the curves are drawn in (before the scales' labels take their
        width each side): below a strip that holds the legend alone, so that no curve
        crosses it (a newcomer's training curve ran through the legend)."""
        metrics = metrics or self.fontMetrics()
        return self.rect().adjusted(0, metrics.height() + 4, 0, -4)

    def _legend(self, painter: QPainter, area: Any) -> int:
        """A legend, "loss: — train  ● validation", above the plot's right end, in the
        strip :meth:`plot_area` leaves free (a newcomer read the rising orange loss
        beside "did better on the validation patches", a score, as a contradiction: both
        are losses, lower is better). Returns its left edge (pixels)."""
        metrics = painter.fontMetrics()
        text = self.palette().text().color()
        y = area.top() - 4 - metrics.descent()
        parts = ("loss:", "train", "validation")
        width = sum(metrics.horizontalAdvance(p) for p in parts) + 6 + 15 + 10 + 10
        left = x = area.right() - width
        painter.setPen(QPen(text))
        painter.drawText(int(x), int(y), parts[0])
        x += metrics.horizontalAdvance(parts[0]) + 6
        painter.setPen(QPen(TRAIN_COLOUR, 2))
        painter.drawLine(QPointF(x, y - 4), QPointF(x + 12, y - 4))
        painter.setPen(QPen(text))
        painter.drawText(int(x + 15), int(y), parts[1])
        x += 15 + metrics.horizontalAdvance(parts[1]) + 10
        painter.setPen(QPen(VALIDATION_COLOUR, 2))
        painter.setBrush(VALIDATION_COLOUR)
        painter.drawEllipse(QPointF(x + 4, y - 4), 2.5, 2.5)
        painter.setPen(QPen(text))
        painter.drawText(int(x + 10), int(y), parts[2])
        return int(left)


def _scale_labels(scale: tuple[float, float] | None) -> tuple[str, str] | None:
    """A scale's (low, high) as text with the fewest decimals (2 to 5) that tell them
    apart: a validation loss from 0.3201 to 0.3234 read "0.32" at both ends."""
    from napari_topo.training.finetune import _apart  # numpy only, as this module

    return None if scale is None else _apart(*scale, fewest=2, most=5)


# --------------------------------------------------------------------------------------
# worker (no Qt)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    image: str
    labels: str
    base: str
    minutes: float
    steps: int | None
    spacing: tuple[float, ...] | None
    device: str
    name: str | None
    painted: tuple[tuple[int, tuple[int, ...]], ...] | None = None
    unit: str | None = None
    layers: str = "all"


@dataclass(frozen=True)
class _Outcome:
    card: Any = None
    cancelled: bool = False
    error: str | None = None
    #: why the result is the base model unchanged (``unchanged_from_base``): not saved
    unchanged: str | None = None
    seconds: float = 0.0


def _run_finetune(
    image: Any, labels: np.ndarray, job: _Job, cancel: threading.Event
) -> Generator[Any, None, _Outcome]:
    """Worker body: yields FinetuneProgress values, returns an :class:`_Outcome`.

    :func:`finetune` runs on a helper thread; its progress callback puts values on a
    queue that this generator yields (napari hands them to the GUI thread). The model
    is saved here too, so the GUI thread never waits on it; a run in which no training
    step fit is not saved (its weights are the base model's). Nothing here touches Qt.
    """
    events: queue.SimpleQueue = queue.SimpleQueue()
    start = time.perf_counter()

    def body() -> None:
        from napari_topo.inference.sliding import Cancelled
        from napari_topo.training.finetune import (
            finetune,
            save_finetuned,
            unchanged_from_base,
        )

        try:
            module, card = finetune(
                image,
                labels,
                job.base,
                painted=job.painted,
                spacing=job.spacing,
                unit=job.unit,
                minutes=job.minutes,
                steps=job.steps,
                device=job.device,
                progress=lambda p: events.put(("progress", p)),
                cancel=cancel,
                name=job.name,
                layers=job.layers,
                command=f"napari-topo Fine-tune dock on '{job.image}' / '{job.labels}'",
            )
            if cancel.is_set():
                raise Cancelled("cancelled")
            unchanged = unchanged_from_base(card)
            if unchanged:  # not an error: the run ended as it should, with nothing new
                events.put(("unchanged", (card, unchanged)))
                return
            saved = save_finetuned(module, card)
        except Cancelled:
            events.put(("cancelled", None))
            return
        except (ValueError, OSError, MemoryError) as exc:
            events.put(("error", str(exc) or type(exc).__name__))
            return
        except Exception as exc:  # noqa: BLE001 - reported to the user, traceback logged
            _LOG.exception("fine-tuning on %r failed", job.image)
            events.put(("error", f"Fine-tuning failed ({type(exc).__name__}: {exc})."))
            return
        events.put(("done", saved))

    thread = threading.Thread(target=body, name=f"napari-topo finetune {job.image}", daemon=True)
    thread.start()
    while True:
        kind, value = events.get()
        if kind == "progress":
            yield value
            continue
        thread.join()
        seconds = time.perf_counter() - start
        if kind == "done":
            return _Outcome(card=value, seconds=seconds)
        if kind == "cancelled":
            return _Outcome(cancelled=True, seconds=seconds)
        if kind == "unchanged":
            return _Outcome(card=value[0], unchanged=value[1], seconds=seconds)
        return _Outcome(error=value, seconds=seconds)


# --------------------------------------------------------------------------------------
# the widget
# --------------------------------------------------------------------------------------


class FinetuneWidget(QWidget):
    """Fine-tune a model on your own corrected labels, then segment again with it.

    Pick the image, the Labels layer with your corrections (by default the Segment
    widget's mask, else its trees, else the first Labels layer), the model to start
    from and a time budget; press *Start*. Only the annotated region counts: the slices
    you painted in (recorded while this dock is open), or for labels loaded from a file
    the slices holding labels, or their bounding box when most slices hold labels; the
    "Will train on" line says which, and a layer shows it when you start. A Segment
    result you have not painted in is refused. Training runs in the background with a
    progress bar and a small plot of the training and held-out validation loss;
    *Cancel* stops it and saves nothing. At the end the new model is saved in your
    models folder, listed in the Segment widget's Model picker and selected there;
    *Segment again* re-runs the segmentation of the image with it.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
    parent : QWidget, optional

    Attributes
    ----------
    finished : Signal(str)
        Emitted on the GUI thread when a run ended: ``"done"`` (a model was saved),
        ``"unchanged"`` (the run ended with the base model itself: nothing saved),
        ``"cancelled"`` or ``"error"``.
    """

    finished = Signal(str)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        require_viewer(napari_viewer, "FinetuneWidget")
        finish_workers_at_exit()
        from napari_topo.inference.device import available_devices
        from napari_topo.inference.pipeline import DEFAULT_MODEL
        from napari_topo.models.registry import list_models

        # napari hands a plugin's widget the viewer behind a PublicOnlyProxy, whose
        # ``layers[name]`` and ``add_labels`` return a new proxy at each call: the painted
        # slices, kept per layer by identity, were lost between Start and Segment again
        # (a newcomer's second round in napari trained on the whole uncorrected mask).
        # The layers' paint records and undo history are this dock's own business.
        self._viewer = unwrap(napari_viewer)
        self._worker = None
        self._job: _Job | None = None
        self._cancel = threading.Event()
        self._state: str | None = None
        #: the status holds why the last Start was refused (cleared once answered)
        self._refused = False
        #: the Labels layer the status line tells the user to paint in (see _set_status)
        self._status_about: Any = None
        #: Segment again runs; its corrections go into the new mask when it is done
        self._carrying = False
        self._last_card: Any = None

        self.image_picker = ComboBox(
            label="Image",
            choices=self._image_choices,
            tooltip="The 3D image the labels belong to; its scale is the voxel size.",
        )
        self.labels_picker = ComboBox(
            label="Labels",
            choices=self._labels_choices,
            tooltip="Your corrected labels (0 = background, > 0 vessel). Only the slices "
            "you painted in count (or the labels' bounding box when most slices have "
            "labels).",
        )
        # Segment leaves its mask hidden under the trees: a newcomer had to find and
        # show it before painting (the README's loop starts with "correct the mask")
        self.paint_button = PushButton(
            text="Paint corrections",
            label="",
            tooltip="Show the picked Labels layer (hiding napari-topo results drawn over "
            "it), select it and take the brush with label 1 (vessel) in a 2D view; "
            "label 0 erases. With no Labels layer, adds an empty one on the image's grid.",
        )
        self.paint_button.changed.connect(self.paint_corrections)
        #: result layers Paint corrections hid (shown again by Segment again)
        self._hidden_for_paint: list[Any] = []
        # True until the user picks labels themselves: the pick then follows the
        # Segment widget's mask (or trees) when one appears, as a run after the dock
        # opened would otherwise leave it on whatever was there before (a ground truth)
        self._labels_auto = True
        self._picking = False
        names = [card.name for card in list_models()]
        self.model_picker = ComboBox(
            label="Base model",
            choices=names,
            value=DEFAULT_MODEL if DEFAULT_MODEL in names else (names[0] if names else None),
            tooltip="The model to start from; its loss and input policy are kept. "
            "Follows the model that made the picked labels (a Segment result you "
            "corrected) until you pick one yourself.",
        )
        # True until the user picks a base model: it then follows the labels' model
        self._base_auto = True
        self.model_picker.changed.connect(self._on_base_picked)
        self.model_picker.changed.connect(self._sync_trains)
        self.labels_picker.changed.connect(self._on_labels_picked)
        self.minutes_box = FloatSpinBox(
            label="Minutes",
            value=5.0,
            min=MIN_MINUTES,
            max=600.0,
            step=0.5,
            tooltip="Time budget; training stops earlier if validation stops improving. "
            "Fine-tuning usually needs a few hundred steps (minutes on a CPU); a run in "
            "which no step fit saves nothing.",
        )
        # a FloatSpinBox with no decimals: magicgui's SpinBox (superqt's QLargeIntSpinBox)
        # ignores Qt's specialValueText, and showed "0" for "no limit"
        self.steps_box = FloatSpinBox(
            label="Max steps",
            value=0,
            min=0,
            max=1_000_000,
            step=1,
            tooltip="Step budget (0: no limit); whichever budget is reached first stops.",
        )
        self.steps_box.native.setDecimals(0)
        # Qt shows this text at the minimum: "0" alone did not say there is no limit
        self.steps_box.native.setSpecialValueText("no limit")
        self.layers_picker = ComboBox(
            label="Trains",
            choices=TRAINS_CHOICES,
            value=self._default_trains(),
            tooltip="What learns from your labels: every weight of the network (with "
            "the base model's own loss); its decoder (the encoder's features kept); or "
            "a voxel classifier on the frozen network's output and image features of "
            "the whole volume, in two stages (a few minutes at most; segmenting takes "
            "longer). Follows the base model until you pick one yourself: a voxel "
            "classifier on a U-Net (better than every weight on every real volume "
            "measured), every weight on a TopNet.",
        )
        # what the user picked in Trains (None: nothing yet, it follows the base model);
        # it comes back whenever the base can take it
        self._trains_user: str | None = None
        self._syncing_trains = False
        self.layers_picker.changed.connect(self._on_trains_picked)
        # a voxel classifier picked on a TopNet goes back to every weight at once (a
        # newcomer's Start then failed with the CLI's words)
        self.layers_picker.changed.connect(self._sync_trains)
        self.device_picker = ComboBox(
            label="Device",
            choices=available_devices(),
            value="auto",
            tooltip="'auto' picks CUDA, then Apple MPS, then the CPU (all cores but one).",
        )
        self.name_edit = LineEdit(
            label="Name",
            value="",
            tooltip="Name of the new model (empty: <base>-ft-<date>-<time>).",
        )
        self._form = Container(
            widgets=[
                self.image_picker,
                self.labels_picker,
                self.paint_button,
                self.model_picker,
                self.minutes_box,
                self.steps_box,
                self.layers_picker,
                self.device_picker,
                self.name_edit,
            ],
            labels=True,
        )
        self._form.margins = (0, 0, 0, 0)

        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Fine-tune in the background.")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop; nothing is saved.")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setMaximumHeight(8)
        self.loss_plot = LossPlot()
        self.loss_plot.setVisible(False)  # shown from the first Start on
        # what the loss will see, before Start and while training (the status changes)
        self.region_label = QLabel("")
        self.region_label.setWordWrap(True)
        self.region_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label = QLabel(IDLE_STATUS)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.rerun_button = QPushButton("Segment again with the new model")
        self.rerun_button.setEnabled(False)
        self.rerun_button.setVisible(False)  # shown once a model was saved
        self.rerun_button.clicked.connect(self.segment_again)

        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        # "Will train on", Start / Cancel, the progress, the status and "Segment again"
        # stay in view at the dock's foot, outside the part that scrolls: at 1366 x 768
        # with Segment docked above, they were all below the fold
        # and the loss plot, once a run starts: in the scrolling part it was squeezed to
        # a strip under the form at 1366 x 768 after a run, or scrolled away
        pinned = QVBoxLayout()
        pinned.addWidget(self.region_label)
        pinned.addWidget(self.loss_plot)
        pinned.addWidget(self.progress_bar)
        pinned.addLayout(buttons)
        pinned.addWidget(self.status_label)
        pinned.addWidget(self.rerun_button)
        layout = QVBoxLayout()
        layout.addWidget(self._form.native)
        # Scrolls like the other docks and shares their column: without it, the four
        # docks at 1366 x 768 kept this one at its full 424 px, squeezed the others to
        # their top pickers and grew the window past the screen.
        self.scroll_area = scrolling_body(self, layout, share=DOCK_SHARE, pinned=pinned)
        # The form and the pinned part read as one block: the scroll area grows no
        # taller than the form and the dock's spare height goes under the pinned part.
        # A stretch under the form left an empty band between the form and the region
        # line when the dock was taller than both (1600 x 1000, the dock alone: 500 px).
        _fit_to_content(self.scroll_area)
        # and grows to that height first: with no stretch of its own the area kept Qt's
        # scroll-area size hint (about 260 px) and scrolled the form's last rows once the
        # Trains row made it taller; at equal stretch the spare band under the pinned
        # part took half of what the area lacked (1366 x 768 after a run). The band
        # takes what the area, at its maximum height, leaves.
        self.layout().setStretchFactor(self.scroll_area, 100)
        self.layout().addStretch(1)

        # slices painted per Labels layer (id -> PaintRecord; see _watch_paint)
        self._records: dict[int, PaintRecord] = {}
        self._watched: dict[int, tuple[Any, Any, Any]] = {}
        self.destroyed.connect(partial(_unwatch_all, self._watched))
        self._region_timer = QTimer(self)
        self._region_timer.setSingleShot(True)
        self._region_timer.setInterval(REGION_DEBOUNCE_MS)
        self._region_timer.timeout.connect(self.update_region_line)
        self.image_picker.changed.connect(self._schedule_region_line)
        # the voxel-size note follows the picked image's scale and units (set in the
        # Segment dock's Voxel z y x, or from the console): a newcomer set them there and
        # the note stayed until the next pick or paint
        self._scale_watch: list[tuple[Any, Any]] = []
        self.image_picker.changed.connect(self._watch_image_scale)
        self.destroyed.connect(partial(_disconnect_all, self._scale_watch))

        follow_layer_list(self, self._viewer, self._refresh_choices)
        self._runs: list[threading.Event] = []
        self.destroyed.connect(partial(_set_events, self._runs))
        self._refresh_choices()
        self.update_region_line()

    # ---- public API ------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True while a fine-tune runs."""
        return self._worker is not None

    @property
    def last_card(self) -> Any:
        """The saved :class:`~napari_topo.models.registry.ModelCard` of the last run."""
        return self._last_card

    def painted(self, layer: Any) -> list[tuple[int, list[int]]] | None:
        """``[(axis, sorted slice indices), ...]`` the user painted in ``layer``, or None
        (:meth:`PaintRecord.painted`: edits undone since no longer count).

        Recorded from the layer's ``events.paint`` while this dock is open (and, when the
        dock opens, from the edits in the layer's undo history).
        """
        record = self._records.get(_key(layer)) if layer is not None else None
        return record.painted(unwrap(layer)) if record is not None else None

    def start(self):
        """Check the choices, show the annotated region and start fine-tuning.

        Returns the napari worker, or None when the choices were rejected (the reason is
        in the status line and a notification) or a run is going.
        """
        if self.is_running:
            return None
        try:
            job, image, labels, annotated, info = self._make_job()
        except ValueError as exc:
            self._report(str(exc), error=True)
            self._refused = True
            return None
        self._refused = False
        self._show_region(self.labels_picker.value, annotated)
        self._region_timer.stop()
        note = _voxel_size_note(self.image_picker.value)
        self.region_label.setText(f"Training on: {info['description']}.{note}")
        self._job = job
        self._cancel = threading.Event()
        self._runs[:] = [self._cancel]
        finish_workers_at_exit(self._cancel)
        self.loss_plot.clear()
        self.loss_plot.setVisible(True)
        self.progress_bar.setValue(0)
        self.rerun_button.setEnabled(False)
        self.rerun_button.setVisible(False)
        self.start_button.setEnabled(False)
        self.start_button.setText("Running…")
        self.cancel_button.setEnabled(True)
        self._set_status(f"Fine-tuning {job.base} on '{job.labels}'…")
        self._worker = create_worker(
            _run_finetune,
            image,
            labels,
            job,
            self._cancel,
            _connect={
                "yielded": self._on_yielded,
                "returned": self._on_returned,
                "errored": self._on_errored,
                "finished": self._on_finished,
            },
            _start_thread=True,
        )
        return self._worker

    def paint_corrections(self, *_: Any) -> Any:
        """Get the picked Labels layer ready to paint into; returns it (or None).

        Shows it, hides the visible napari-topo results above it in the layer list
        (Segment's trees cover its mask), moves it to the top when a visible image lies
        above it, makes it the selected layer in *paint* mode in a 2D view, with label 1
        when the picked label was 0 or the layer is a mask. With no Labels layer picked,
        adds an empty ``"<image> corrections"`` layer on the image's grid first and picks
        it. The status line says what changed.
        """
        layers = self._viewer.layers
        self._hidden_for_paint = [h for h in self._hidden_for_paint if h in layers]
        layer, image = self.labels_picker.value, self.image_picker.value
        added = False
        if layer is None:
            if image is None:
                self._report("Open the image to correct first.", True)
                return None
            data = full_resolution(image)
            if len(data.shape) != 3 or getattr(image, "rgb", False):
                self._report(
                    f"'{image.name}' is not a 3D grey-level volume (shape "
                    f"{tuple(data.shape)}): fine-tuning needs one.",
                    True,
                )
                return None
            layer = self._viewer.add_labels(
                np.zeros(tuple(data.shape), np.uint8),
                name=f"{image.name} corrections",
                scale=image.scale,
                translate=image.translate,
                **placement(image),
            )
            added = True
            self._labels_auto = False
            select_layer(self.labels_picker, layer)
        hidden = []
        below = True
        for other in layers:
            if other is layer:
                below = False
            elif not below and other.visible and isinstance(other, Labels | Image):
                if plugin_info(other).get("widget") is not None:
                    other.visible = False
                    hidden.append(other.name)
                    self._hidden_for_paint.append(other)
        layer.visible = True
        lifted = False
        at = layers.index(layer)
        if any(
            isinstance(other, Image) and other.visible and not other.rgb
            for other in list(layers)[at + 1 :]
        ):  # under an image it would be painted unseen
            layers.move(at, len(layers))
            lifted = True
        layers.selection.active = layer
        if self._viewer.dims.ndisplay != 2:
            self._viewer.dims.ndisplay = 2
        layer.mode = "paint"
        if layer.selected_label == 0 or plugin_info(layer).get("kind") == "mask":
            layer.selected_label = 1
        said = [f"Added '{layer.name}'." if added else f"Painting into '{layer.name}'."]
        if hidden:
            said.append("Hid " + ", ".join(f"'{n}'" for n in hidden) + " above it.")
        if lifted:
            said.append("Moved it to the top of the layer list.")
        said.append(
            "Brush label 1 marks vessel, 0 erases. A slice you touch counts whole: mark "
            "every vessel in it. Correct a few slices, spread out (page with the "
            "slider), then Start."
        )
        self._set_status(" ".join(said), about=layer)
        return layer

    def cancel(self) -> None:
        """Stop the running fine-tune before its next step; nothing is saved."""
        if not self.is_running:
            return
        self._cancel.set()
        self.cancel_button.setEnabled(False)
        self._set_status("Cancelling…")

    def segment_again(self) -> Any:
        """Segment the image again with the new model in the Segment widget.

        The Segment widget (docked if it is not) gets the new model selected and the
        image chosen, then runs. If the labels were the Segment widget's own mask or
        trees, a copy ``"<labels> (corrected)"`` is kept first, since that run replaces
        them (hidden, with the annotated region, so that the new result shows). Returns
        the Segment widget's worker (or None).
        """
        card, job = self._last_card, self._job
        if card is None or job is None:
            return None
        segment = self._segment_widget(create=True)
        if segment is None:
            self._report("Open Plugins > napari-topo > Segment vessels to segment.", True)
            return None
        segment.select_model(card.name)
        layers = self._viewer.layers
        if job.image in layers:
            select_layer(segment.image_picker, layers[job.image])
        # what Paint corrections hid (Segment's trees) shows again with the new result:
        # Segment keeps a replaced layer's visibility, and the trees stayed hidden
        for hidden in self._hidden_for_paint:
            if hidden in layers:
                hidden.visible = True
        self._hidden_for_paint = []
        kept = None
        if job.labels in layers:
            lab = layers[job.labels]
            if plugin_info(lab).get("widget") == "segment":
                copy_name = f"{lab.name} (corrected)"
                kept = copy_name
                if copy_name not in layers:
                    record = self._records.get(_key(lab))
                    copy = self._viewer.add_labels(
                        np.array(full_resolution(lab)),
                        name=copy_name,
                        scale=lab.scale,
                        translate=lab.translate,
                        **placement(lab),
                        visible=False,
                    )
                    if record is not None:  # the same painted slices, for a second round
                        self._watch_paint(copy)
                        self._records[_key(copy)] = record.copy(lab)
                else:
                    self._add_to_copy(lab, layers[copy_name])
        for layer in layers:
            info = plugin_info(layer)
            if info.get("widget") == OWNER and info.get("source") == job.labels:
                layer.visible = False
        if kept is not None and hasattr(segment, "finished"):
            # once the new mask is there, the corrections go into it (a second round)
            def carry(state: str) -> None:
                self._carrying = False
                try:
                    segment.finished.disconnect(carry)
                except (TypeError, RuntimeError):  # already gone
                    pass
                if state == "done":
                    self._carry_corrections(job.labels, kept, card.name)

            self._carrying = True  # the mask's replacement forgets nothing: kept, carried
            segment.finished.connect(carry)
        worker = segment.run()
        if kept is not None and kept in layers:
            self._set_status(
                f"Segmenting again with '{card.name}'; your corrections are kept in "
                f"'{kept}' (hidden)."
            )
        return worker

    def _carry_corrections(self, mask_name: str, kept: str, model: str) -> None:
        """After *Segment again*: write the slices painted in the ``kept`` copy into the
        new mask ``mask_name`` (they count as painted there) and pick it, so that a
        second round corrects the new model's output on other slices and trains on both.

        The copy alone was the old model's mask with the first corrections: a newcomer's
        second round fixed errors the new model no longer made, under a copy that then
        covered the new result. A mask that is not an in-memory array (a lazy region
        result) is left as it is, and the copy is picked instead.
        """
        layers = self._viewer.layers
        if kept not in layers:
            return
        copy = layers[kept]
        record = self._records.get(_key(copy))
        painted = record.painted(copy) if record is not None else None
        mask = layers[mask_name] if mask_name in layers else None
        writable = (
            mask is not None
            and isinstance(mask.data, np.ndarray)
            and mask.data.shape == copy.data.shape
            and mask.data.flags.writeable
        )
        if not painted or not writable:
            self._labels_auto = False
            select_layer(self.labels_picker, copy)
            self._set_status(
                f"Segmented again with '{model}'. Your corrections are in '{kept}' "
                "(hidden), picked for another round: Paint corrections shows it."
            )
            return
        self._write_painted(copy.data, mask, painted)
        self._labels_auto = False
        select_layer(self.labels_picker, mask)
        slices = " and ".join(_slices_phrase(ix, a, mask.ndim) for a, ix in painted)
        self._set_status(
            f"Segmented again with '{model}'. Your corrected {slices} were written into "
            f"'{mask.name}' and count as painted: correct a few more slices of the new "
            f"result (Paint corrections), then Start again. '{kept}' keeps them too."
        )

    def _add_to_copy(self, labels: Any, copy: Any) -> None:
        """Write the slices painted in ``labels`` (Segment's mask, about to be replaced)
        into ``copy`` (its ``(corrected)`` copy of an earlier round), which then counts
        them as painted too; hide the copy. Without this a second round's corrections
        in the new mask were lost and the copy picked for training lacked them."""
        painted = self.painted(labels)
        if painted:
            self._write_painted(full_resolution(labels), copy, painted)
        if copy.visible:
            copy.visible = False

    def _write_painted(self, source: Any, target: Any, painted: list) -> None:
        """Copy the ``painted`` slices (``[(axis, indices), ...]``) of the array ``source``
        into the Labels layer ``target`` (in place) and record them as painted there."""
        for axis, indices in painted:
            index: list[Any] = [slice(None)] * target.data.ndim
            index[axis] = list(indices)
            target.data[tuple(index)] = np.asarray(source[tuple(index)])
        target.refresh()
        self._watch_paint(target)
        record = self._records.setdefault(_key(target), PaintRecord(target.ndim))
        record.edits.extend(_Edit((), axis, frozenset(ix)) for axis, ix in painted)

    # ---- choices ---------------------------------------------------------------------

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Image) and plugin_info(layer).get("widget") is None
        ]

    def _labels_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Labels) and plugin_info(layer).get("widget") != OWNER
        ]

    def _on_labels_picked(self, _value: Any = None) -> None:
        if not self._picking:
            self._labels_auto = False
        about = self._status_about
        if about is not None and not same_layer(about, self.labels_picker.value):
            # "Added '<image> corrections'. Brush ..." stayed after the user picked
            # Segment's mask and corrected it instead
            if not self.is_running:
                self._set_status(IDLE_STATUS)
        self._follow_labels_model()
        self._schedule_region_line()

    # ---- painted slices --------------------------------------------------------------

    def _watch_paint(self, layer: Any) -> None:
        """Record the slices painted in ``layer`` (a Labels layer) from now on."""
        key = _key(layer)
        if key in self._watched:
            return
        on_paint = partial(_on_paint, self._records, self._viewer, layer, self._painted_in)
        on_data = partial(_on_data, self._records, layer, self._painted_in, self._forget_painting)
        layer.events.paint.connect(on_paint)
        layer.events.data.connect(on_data)
        # undo / redo emit no paint event, only a refresh (set_data, also on every
        # slice change): the line is redone then for a layer with painting recorded
        on_refresh = partial(_on_refresh, self._records, layer, self._painted_in)
        layer.events.set_data.connect(on_refresh)
        self._watched[key] = (layer, on_paint, on_data, on_refresh)
        record = self._records.setdefault(key, PaintRecord(layer.ndim))
        # edits made before the dock opened: napari keeps them in the undo history (not
        # public API; read defensively, with no axis paged through known)
        try:
            shape = tuple(full_resolution(layer).shape)
            for item in list(getattr(layer, "_undo_history", None) or ()):
                record.add(item, shape)
        except Exception:  # noqa: BLE001 - a napari without that history: nothing to add
            _LOG.debug("reading the undo history of %r failed", layer.name, exc_info=True)

    def _watch_image_scale(self, *_: Any) -> None:
        """Redo the region line when the picked image's ``scale`` or ``units`` change."""
        _disconnect_all(self._scale_watch)
        image = unwrap(self.image_picker.value)
        if image is None:
            return
        for name in ("scale", "units"):  # units: napari >= 0.6
            emitter = getattr(image.events, name, None)
            if emitter is not None:
                emitter.connect(self._schedule_region_line)
                self._scale_watch.append((emitter, self._schedule_region_line))

    def _unwatch_gone(self) -> None:
        layers = self._viewer.layers
        self._hidden_for_paint = [h for h in self._hidden_for_paint if h in layers]
        present = {_key(layer) for layer in layers}
        for key in [k for k in self._watched if k not in present]:
            _unwatch(*self._watched.pop(key))
            self._records.pop(key, None)

    def _painted_in(self, layer: Any) -> None:
        if same_layer(layer, self.labels_picker.value):
            self._schedule_region_line()

    def _schedule_region_line(self, *_: Any) -> None:
        if not self.is_running:
            self._region_timer.start()

    def update_region_line(self) -> None:
        """Say what the next Start would train on ("Will train on: ..."), or why not."""
        if self.is_running:
            return
        labels, image = self.labels_picker.value, self.image_picker.value
        if labels is None:
            self.region_label.setText("")
            return
        try:
            text = self._region_description(labels, image)
        except ValueError as exc:
            text = one_line(str(exc))
            text = f"Cannot train yet: {text[:1].lower()}{text[1:]}"
        else:
            # a refusal of an earlier Start is answered now (the user painted since)
            if self._refused and not self.is_running:
                self._refused = False
                self._set_status(IDLE_STATUS)
            painted = self.painted(labels)
            idle = self.status_label.text() == IDLE_STATUS
            if painted and (idle or same_layer(self._status_about, labels)):
                # Paint corrections' "Correct a few slices ..., then Start" stayed after
                # a newcomer had painted three, and read as if nothing had been painted
                n = sum(len(ix) for _, ix in painted)
                self._set_status(
                    f"Painting into '{labels.name}': {n} slice{'' if n == 1 else 's'} so "
                    "far (the line above says which). Paint more, spread out, or Start.",
                    about=labels,
                )
            text += _voxel_size_note(image)
        self.region_label.setText(text)

    def _region_description(self, labels: Any, image: Any) -> str:
        painted = self.painted(labels)
        data = full_resolution(labels)
        shape = tuple(data.shape)
        if len(shape) != 3:
            raise ValueError(f"'{labels.name}' is not 3D.")
        if image is not None:
            want = tuple(full_resolution(image).shape)
            if want != shape:
                raise ValueError(
                    f"'{labels.name}' has shape {shape}, the image '{image.name}' {want}: "
                    "pick the labels drawn on that image"
                )
        if painted is not None:
            # voxels in a painted slice of any axis: all but those in none
            counts = dict.fromkeys(range(len(shape)), 0)
            counts.update({a: len(ix) for a, ix in painted})
            untouched = int(np.prod([n - counts[a] for a, n in enumerate(shape)]))
            voxels = int(np.prod(shape)) - untouched
            phrases = " and ".join(_slices_phrase(ix, a, len(shape)) for a, ix in painted)
            from napari_topo.training.finetune import WITHIN_SLICES_MAX

            few = ""
            if max(len(ix) for _, ix in painted) <= WITHIN_SLICES_MAX:
                # a newcomer's one slice gained on itself and lost on the other 24
                few = (
                    " The check then lies in those slices themselves: paint 3 or more, "
                    "spread out, for a check on others."
                )
            record = self._records.get(_key(labels))
            if record is not None and record.in_3d:
                # a newcomer's three brush dots in 3D made three whole slices "painted"
                few += (
                    " Some strokes were made in a 3D view: every slice they touched "
                    "counts whole (check those slices in 2D)."
                )
            return (
                f"Will train on: {phrases} you painted "
                f"({voxels} voxels, {_fraction(voxels, shape)} of the volume).{few}"
            )
        if plugin_info(labels).get("widget") == "segment":
            raise ValueError(_paint_first(labels))
        from napari_topo.training.finetune import annotated_region

        if not isinstance(data, np.ndarray):
            # a lazy (dask / zarr) layer: not read whole on the GUI thread for a preview
            return "Will train on: the slices holding labels (or their box), read at Start."
        _, info = annotated_region(data)
        return f"Will train on: {_axis_words(info['description'], len(shape))}."

    def _on_base_picked(self, _value: Any = None) -> None:
        if not self._picking:
            self._base_auto = False

    def _default_trains(self) -> str:
        """Trains by default for the picked base model (:func:`~napari_topo.training.
        finetune.resolve_layers` of ``"auto"``; "all" when its card cannot be read)."""
        from napari_topo.models.registry import get_card
        from napari_topo.training.finetune import resolve_layers

        try:
            card = get_card(str(self.model_picker.value))
        except (ValueError, OSError):
            return "all"
        return resolve_layers(DEFAULT_LAYERS, card)

    def _on_trains_picked(self, value: Any = None) -> None:
        if not self._syncing_trains:
            self._trains_user = str(self.layers_picker.value if value is None else value)

    def _sync_trains(self, _value: Any = None) -> None:
        """Trains follows the base model: the default for it until the user picks one
        (:meth:`_default_trains`), then the user's pick; but one with a voxel head
        trains a new head (its network cannot be fine-tuned under the head), and a
        TopNet takes none (every weight instead)."""
        from napari_topo.models.registry import get_card
        from napari_topo.training.finetune import resolve_layers

        try:
            card = get_card(str(self.model_picker.value))
        except (ValueError, OSError):
            return
        arch, value = card.architecture, self._trains_user
        if arch == "unet3d-voxel-head":
            value = "head"
        elif value is None:
            value = resolve_layers(DEFAULT_LAYERS, card)  # the card read once
        elif arch != "unet3d" and value == "head":
            value = "all"
        self._syncing_trains = True
        try:
            self.layers_picker.value = value
        finally:
            self._syncing_trains = False

    def _follow_labels_model(self) -> None:
        """Base model := the model that made the picked labels (Segment's result), if known
        and the user has not picked a base model themselves."""
        layer = self.labels_picker.value
        model = plugin_info(layer).get("model") if layer is not None else None
        if not self._base_auto or model is None:
            return
        if model not in self.model_picker.choices:
            return
        picking, self._picking = self._picking, True
        try:
            self.model_picker.value = model
        finally:
            self._picking = picking

    def _refresh_choices(self, _event: Any = None) -> None:
        self._unwatch_gone()
        for layer in self._viewer.layers:
            if isinstance(layer, Labels) and plugin_info(layer).get("widget") != OWNER:
                self._watch_paint(layer)
        self._picking = True
        try:
            before = self.labels_picker.value
            for picker in (self.image_picker, self.labels_picker):
                rebuild_picker(picker)
            if before is None or self._labels_auto:
                # default: the Segment widget's mask (the user's corrections), else its
                # trees; a pick of the user's own is kept
                for kind in ("mask", "trees"):
                    for _, layer in self._labels_choices():
                        info = plugin_info(layer)
                        if layer_kind(layer) == kind and info.get("widget") == "segment":
                            select_layer(self.labels_picker, layer)
                            return
        finally:
            self._picking = False
            self._follow_labels_model()
            # the picker is rebuilt with its signals blocked: an image removed (none
            # left) emits no change, and its scale was still watched
            self._watch_image_scale()

    def _make_job(self):
        from napari_topo.training.finetune import annotated_region, check_labels

        image, labels = self.image_picker.value, self.labels_picker.value
        if image is None:
            raise ValueError("Pick the Image layer the labels belong to.")
        if labels is None:
            raise ValueError("Pick a Labels layer with your corrections (0 = background).")
        base = self.model_picker.value
        if base is None:
            raise ValueError("No model is registered; see 'napari-topo models'.")
        volume = full_resolution(image)
        if volume.ndim != 3 or image.rgb:
            raise ValueError(f"'{image.name}' is not a 3D single-channel image.")
        painted = self.painted(labels)
        if painted is None and plugin_info(labels).get("widget") == "segment":
            raise ValueError(_paint_first(labels))
        lab = check_labels(np.asarray(full_resolution(labels)), volume.shape)
        annotated, info = annotated_region(lab, painted=painted)
        steps = int(self.steps_box.value) or None
        name = self.name_edit.value.strip() or None
        if name is not None:
            from napari_topo.models.registry import ModelCard

            ModelCard(name=name, architecture="unet3d")  # checks the name
        job = _Job(
            image=image.name,
            labels=labels.name,
            base=str(base),
            minutes=float(self.minutes_box.value),
            steps=steps,
            spacing=tuple(abs(float(s)) for s in image.scale),
            device=str(self.device_picker.value),
            name=name,
            painted=None if painted is None else tuple((a, tuple(ix)) for a, ix in painted),
            unit=layer_length_unit(image),
            layers=str(self.layers_picker.value),
        )
        info = dict(info, description=_axis_words(info["description"], lab.ndim))
        return job, volume, lab, annotated, info

    def _show_region(self, labels: Any, annotated: np.ndarray) -> None:
        """Show the annotated region as our translucent Labels layer (updated in place)."""
        name = f"{labels.name} annotated region"
        layers = self._viewer.layers
        region = annotated.astype(np.uint8)
        for layer in layers:
            info = plugin_info(layer)
            if info.get("widget") == OWNER and info.get("source") == labels.name:
                layer.data = region
                return
        self._viewer.add_labels(
            region,
            name=name,
            scale=labels.scale,
            translate=labels.translate,
            **placement(labels),
            opacity=0.2,
            metadata={
                METADATA_KEY: {"widget": OWNER, "kind": "annotated_region", "source": labels.name}
            },
        )
        # keep the user's labels on top and selected, for further painting
        self._viewer.layers.selection.active = labels

    def _segment_widget(self, create: bool = False) -> Any:
        from napari_topo.widgets.segment import SegmentWidget

        try:
            docked = dict(self._viewer.window.dock_widgets)
        except Exception:  # noqa: BLE001 - a viewer without a window (tests, proxies)
            docked = {}
        for widget in docked.values():
            widget = getattr(widget, "__wrapped__", widget)
            if isinstance(widget, SegmentWidget):
                return widget
        if not create:
            return None
        try:
            _, widget = self._viewer.window.add_plugin_dock_widget("napari-topo", "Segment vessels")
        except Exception:  # noqa: BLE001 - reported by the caller
            _LOG.exception("docking the Segment widget failed")
            return None
        return widget

    # ---- worker callbacks (GUI thread) -----------------------------------------------

    def _on_yielded(self, p: Any) -> None:
        if p.phase == "train" and p.loss is not None:
            self.loss_plot.add("train", p.step, p.loss)
        elif p.phase == "validate" and p.loss is not None:
            self.loss_plot.add("validation", p.step, p.loss)
        self.progress_bar.setValue(int(1000 * p.fraction))
        if self._cancel.is_set():
            return
        best = (p.best or {}).get("Dice")
        extra = f" (best on the held-out patches: Dice {best:.3f})" if best is not None else ""
        self._set_status(f"{p.message}{extra} — {p.elapsed_s:.0f} s")

    def _on_returned(self, outcome: _Outcome) -> None:
        if outcome.cancelled:
            self._state = "cancelled"
            self._set_status("Fine-tuning cancelled; no model was saved.")
            show_info("Fine-tuning cancelled; no model was saved.")
            return
        if outcome.unchanged is not None:
            # a newcomer's 1-minute run read "Error: ..." with a red toast: the run
            # worked, it just found nothing better than the model they already have
            self._state = "unchanged"
            t = outcome.card.training or {}
            steps = int(t.get("steps") or 0)
            ran = (
                f" ({steps} training step{'' if steps == 1 else 's'}, {t.get('stopped')})"
                if steps
                else ""
            )
            base = (t.get("fine_tuned_from") or {}).get("name")
            message = (
                f"Not saved: {one_line(outcome.unchanged)}{ran}. The result would be "
                + (f"'{base}'" if base else "the base model")
                + " itself, which you can keep using as it is."
            )
            self._set_status(message)
            show_warning(f"Fine-tuning: {message}")
            return
        if outcome.error is not None or outcome.card is None:
            self._state = "error"
            self._report(outcome.error or "Fine-tuning failed.", error=True)
            return
        from napari_topo.training.finetune import one_score_fell
        from napari_topo.training.head import made_by_head

        card = outcome.card
        self._last_card = card
        self._state = "done"
        self.progress_bar.setValue(1000)
        selected = self._refresh_models(card.name)
        before, after = card.metrics["validation_before"], card.metrics["validation"]
        t = card.training
        tuned = card.threshold is not None and card.threshold != 0.5
        self._set_status(
            f"Saved '{card.name}' ({t['steps']} steps, {outcome.seconds:.0f} s; "
            # "segmented as Segment does": the progress lines' Dice was on the held-out
            # patches, and a newcomer read the two figures as one
            f"{t['stopped']}): held-out part segmented as Segment does, Dice "
            f"{before['Dice']:.3f} -> {after['Dice']:.3f}"
            + (
                f", clDice {before['clDice']:.3f} -> {after['clDice']:.3f}"
                if "clDice" in before and "clDice" in after
                else ""
            )
            + (_at_threshold(card) if tuned else "")
            + (f" ({fell})" if (fell := one_score_fell(card)) else "")
            + _held_out_where(t)
            + (". It is selected in Segment vessels." if selected else ".")
            + (
                # as the CLI says it: a newcomer read a threshold's gain as training's
                (
                    " The trained weights did better on the validation patches (small "
                    "crops) but not on the whole held-out part segmented as Segment does: "
                    if t.get("kept_base")
                    else " No training step beat the base model on the held-out part: "
                )
                + "the weights are the base model's"
                + ("; the change is the mask threshold's." if tuned else ".")
                if t.get("kept_base") or t.get("best_step") == 0
                else ""
            )
            + (f" The model is {made}." if (made := made_by_head(t)) else "")
            + (f" Note: {t['note']}." if t.get("note") else "")
        )
        if t.get("note"):
            show_warning(f"Fine-tuning: {t['note']}.")
        self.rerun_button.setEnabled(True)
        self.rerun_button.setVisible(True)

    def _refresh_models(self, name: str) -> bool:
        """List the new model in the base picker and select it in the Segment dock;
        whether a Segment dock was there to select it in."""
        from napari_topo.models.registry import list_models

        current = self.model_picker.value
        picking, self._picking = self._picking, True  # not the user's pick
        try:
            self.model_picker.choices = [c.name for c in list_models()]
            if current in self.model_picker.choices:
                self.model_picker.value = current
        finally:
            self._picking = picking
        segment = self._segment_widget(create=False)
        if segment is None:
            return False
        segment.select_model(name)
        return segment.model_picker.value == name

    def _on_errored(self, exc: BaseException) -> None:
        _LOG.error("finetune worker failed", exc_info=exc)
        self._state = "error"
        self._report(f"Fine-tuning failed ({type(exc).__name__}: {exc}).", error=True)

    def _on_finished(self) -> None:
        self._worker = None
        self.start_button.setEnabled(True)
        self.start_button.setText("Start")
        self.cancel_button.setEnabled(False)
        self.finished.emit(self._state or "error")
        self._state = None
        self._schedule_region_line()

    def _set_status(self, text: str, about: Any = None) -> None:
        """Show ``text``; ``about`` is the Labels layer it tells the user to paint in
        (Paint corrections' line), which a later pick or data replacement makes stale."""
        self.status_label.setText(text)
        self._status_about = unwrap(about) if about is not None else None

    def _forget_painting(self, layer: Any, painted: list | None) -> None:
        """``layer``'s data were replaced (a Segment run put its new result in its mask):
        say that the slices painted in it are forgotten, when the status line was about
        it or it is the picked layer and painting was recorded in it. The line said
        "Added ..." or "Painting into ..." after its data were gone."""
        if self.is_running or self._carrying:  # the run's progress; Segment again's line
            return
        about = self._status_about is not None and same_layer(layer, self._status_layer())
        if not about and not (painted and same_layer(layer, self.labels_picker.value)):
            return
        who = (
            f"Segment replaced '{layer.name}' with its new result"
            if plugin_info(layer).get("widget") == "segment"
            else f"The data of '{layer.name}' were replaced"
        )
        if painted:
            slices = " and ".join(_slices_phrase(ix, a, layer.ndim) for a, ix in painted)
            said = f"{who}: the {slices} you painted in it are forgotten."
        else:
            said = f"{who}."
        self._set_status(
            f"{said} Correct a few slices of it (Paint corrections), then Start.", about=layer
        )

    def _status_layer(self) -> Any:
        about = self._status_about
        return about if about is not None and about in self._viewer.layers else None

    def _report(self, message: str, error: bool = False) -> None:
        message = one_line(message)
        if error:
            self._set_status(f"Error: {message}")
            show_error(message)
        else:
            self._set_status(message)


class _FitToContent(QObject):
    """Keeps a scroll area's maximum height at its content's height (see
    :func:`_fit_to_content`)."""

    def __init__(self, area: Any) -> None:
        super().__init__(area)
        self._area = area

    def fit(self) -> None:
        area = self._area
        body = area.widget()
        if body is None:
            return
        width = area.viewport().width()
        layout = body.layout()
        if layout is not None and layout.hasHeightForWidth() and width > 0:
            height = layout.totalHeightForWidth(width)
        else:
            height = body.sizeHint().height()
        frame = 2 * area.frameWidth()
        area.setMaximumHeight(max(height + frame, area.minimumSizeHint().height()))

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 - Qt's name
        if event.type() in (QEvent.Type.LayoutRequest, QEvent.Type.Resize):
            self.fit()
        return False


def _fit_to_content(area: Any) -> None:
    """Let the :func:`scrolling_body` scroll area ``area`` grow no taller than its
    content (pixels, updated whenever the content's layout or the area's width
    changes), so that the space a tall dock has to spare is left to the dock's layout
    (a stretch under the pinned part) rather than shown between the body and the
    pinned part. The area can still be squeezed below that height: its body scrolls."""
    keeper = _FitToContent(area)
    area.widget().installEventFilter(keeper)
    area.installEventFilter(keeper)
    keeper.fit()


def _set_events(events: list[threading.Event], *_: Any) -> None:
    for event in events:
        event.set()


def _at_threshold(card: Any) -> str:
    """ " at its mask threshold 0.3 (at 0.5: Dice x, clDice y)": how much of a gain is the
    threshold's (a newcomer's one-step run gained only by it, and no line said so)."""
    half = (card.metrics or {}).get("validation_at_0.5") or {}
    text = f" at its mask threshold {card.threshold:g}"
    if "Dice" in half:
        text += f" (at 0.5: Dice {half['Dice']:.3f}"
        text += f", clDice {half['clDice']:.3f})" if "clDice" in half else ")"
    return text


def _held_out_where(training: dict) -> str:
    """ " (bands of the slice you painted ...)" when the held-out part lies in the painted
    slices themselves (one or two painted: ``validation_part["within"]``), else ""."""
    within = ((training.get("data") or {}).get("validation_part") or {}).get("within")
    if not within:
        return ""
    n = len(within.get("slices") or ())
    which = "the slice" if n == 1 else "the slices"
    return (
        f" (on bands of {which} you painted, which tell little of the others: look at "
        "other slices after Segment again)"
    )


def _voxel_size_note(image: Any) -> str:
    """' Its voxel size is not stated ...' for an image layer at scale 1 x 1 x 1 with no
    length unit (a TIFF that states none, an array added without ``scale``), else ''.
    A newcomer fine-tuned on such a two-photon stack without a word: its 5 um z steps
    read as 1 um, and the new model expects that (Segment warns only after a run)."""
    if image is None:
        return ""
    if not voxel_size_unstated(image.scale, layer_length_unit(image)):
        return ""
    return (
        " Its voxel size is not stated (1 x 1 x 1, no unit): voxels are taken as cubes, "
        "and the new model will expect that. If they are not (most microscopy stacks have "
        "a larger z step), set it in the Segment dock under Input (Voxel z y x) first."
    )


def _paint_first(labels: Any) -> str:
    return (
        f"Paint your corrections into '{labels.name}' on a few slices first (Paint "
        "corrections shows it and takes the brush): fine-tuning on the model's own "
        "uncorrected output teaches it nothing."
    )


def _slices_phrase(slices: list[int], axis: int, ndim: int) -> str:
    """E.g. "4 slices along z (3, 7, 9, 12)" (at most 8 indices listed)."""
    n = len(slices)
    listed = ", ".join(str(i) for i in slices[:8]) + (", …" if n > 8 else "")
    return f"{n} slice{'s' if n != 1 else ''} along {_axis_name(axis, ndim)} ({listed})"


def _fraction(voxels: int, shape: tuple[int, ...]) -> str:
    share = 100.0 * voxels / max(1, int(np.prod(shape)))
    return f"{share:.0f} %" if share >= 1 else f"{share:.1g} %"


def _axis_words(description: str, ndim: int) -> str:
    """Core's "along axis 0" as "along z" (for a 3D volume)."""
    for axis in range(ndim):
        description = description.replace(f"along axis {axis}", f"along {_axis_name(axis, ndim)}")
    return description


def _key(layer: Any) -> int:
    """The key of ``layer``'s paint record: the napari layer's identity, the same for
    every plugin ``PublicOnlyProxy`` of it."""
    return id(unwrap(layer))


def _on_paint(records: dict, viewer: Any, layer: Any, then: Any, event: Any) -> None:
    """A Labels layer's ``events.paint``: its slices go into the layer's record."""
    try:
        shape = tuple(full_resolution(layer).shape)
        record = records.setdefault(_key(layer), PaintRecord(len(shape)))
        record.add(getattr(event, "value", None), shape, _paged_axis(viewer, len(shape)))
        if viewer.dims.ndisplay == 3:
            record.in_3d = True
    except Exception:  # noqa: BLE001 - never break napari's painting
        _LOG.exception("recording a paint in %r failed", getattr(layer, "name", layer))
        return
    then(layer)


def _on_data(records: dict, layer: Any, then: Any, forgot: Any, _event: Any = None) -> None:
    """The layer's data were replaced (e.g. Segment ran again): nothing painted in them.
    ``forgot(layer, painted)`` is told what was painted before (None: nothing)."""
    record = records.get(_key(layer))
    painted = None
    if record is not None:
        try:
            painted = record.painted(layer)
        except Exception:  # noqa: BLE001 - the record is cleared whatever it held
            _LOG.exception("reading the painted slices of %r failed", layer.name)
        record.clear(layer)
    forgot(layer, painted)
    then(layer)


def _paged_axis(viewer: Any, ndim: int) -> int | None:
    """The layer axis a 2D view pages through (None in 3D or when unclear)."""
    dims = viewer.dims
    if dims.ndisplay != 2:
        return None
    offset = dims.ndim - ndim
    axes = [a - offset for a in dims.not_displayed if a >= offset]
    return axes[0] if len(axes) == 1 else None


def _on_refresh(records: dict, layer: Any, then: Any, _event: Any = None) -> None:
    """The layer was redrawn (an undo or redo among others): redo the region line when
    painting is recorded in it (cheap then; a guess over the whole array is not)."""
    if records.get(_key(layer)):
        then(layer)


def _unwatch(layer: Any, on_paint: Any, on_data: Any, on_refresh: Any = None) -> None:
    for emitter, callback in (
        (layer.events.paint, on_paint),
        (layer.events.data, on_data),
        (layer.events.set_data, on_refresh),
    ):
        if callback is None:
            continue
        try:
            emitter.disconnect(callback)
        except Exception:  # noqa: BLE001 - already gone
            pass


def _disconnect_all(connections: list[tuple[Any, Any]], *_: Any) -> None:
    """Disconnect each ``(emitter, callback)`` pair and empty the list."""
    for emitter, callback in connections:
        try:
            emitter.disconnect(callback)
        except Exception:  # noqa: BLE001 - already gone
            pass
    connections.clear()


def _unwatch_all(watched: dict, *_: Any) -> None:
    for entry in list(watched.values()):
        _unwatch(*entry)
    watched.clear()
