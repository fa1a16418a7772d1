"""Dock widget that compares a prediction layer with a ground-truth layer.

The widget only collects choices and shows results.  The numbers come from
:func:`napari_topo.topology.metrics.compute_metrics`, which runs in a worker thread
(:func:`napari.qt.threading.create_worker`) so the viewer stays responsive; the worker
returns plain Python objects and never touches Qt, and the table is filled on the GUI
thread from the worker's ``returned`` signal.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    import napari

__all__ = ["MetricsWidget", "format_metric_value"]

_LOG = logging.getLogger(__name__)

#: Layer-list events after which the layer pickers are rebuilt.
_LAYER_EVENTS = ("inserted", "removed", "moved", "reordered", "renamed")
#: Export formats, by file extension.
_EXPORT_SUFFIXES = (".csv", ".json")


def format_metric_value(value: Any) -> str:
    """Format one metric value for display: 4 significant digits, NaN as ``"n/a"``.

    Parameters
    ----------
    value : float, int, numpy scalar or None
        The value returned by ``compute_metrics``.

    Returns
    -------
    str
        ``"n/a"`` for NaN or None, ``"inf"``/``"-inf"`` for infinities, ``"0"`` for
        zero (also negative zero), otherwise ``format(value, ".4g")``.  Values that
        are not numbers are shown with ``str``.

    Examples
    --------
    >>> format_metric_value(0.912345)
    '0.9123'
    >>> format_metric_value(float("nan"))
    'n/a'
    >>> format_metric_value(1)
    '1'
    """
    if value is None:
        return "n/a"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "n/a"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    if number == 0:
        return "0"
    return f"{number:.4g}"


# --------------------------------------------------------------------------------------
# Qt-free helpers: input checks and the function that runs in the worker thread
# --------------------------------------------------------------------------------------


def _unwrap(obj: Any) -> Any:
    """Return the napari object behind a plugin ``PublicOnlyProxy`` (or ``obj`` itself)."""
    return getattr(obj, "__wrapped__", obj)


def _same(a: Any, b: Any) -> bool:
    return a is not None and b is not None and _unwrap(a) is _unwrap(b)


def _full_resolution(layer: Any) -> Any:
    """The layer's array; level 0 (full resolution) of a multiscale layer."""
    return layer.data[0] if layer.multiscale else layer.data


def _shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape)


def _check_layer(layer: Any, role: str) -> None:
    """Raise ValueError if ``layer`` cannot be compared (cheap checks only)."""
    name = layer.name
    if not isinstance(layer, Labels | Image):
        raise ValueError(
            f"{role} '{name}' is a {type(_unwrap(layer)).__name__} layer; "
            "pick a Labels layer or an Image layer holding a mask or labels."
        )
    if isinstance(layer, Image) and layer.rgb:
        raise ValueError(
            f"{role} '{name}' is an RGB(A) image; pick a Labels layer or a "
            "single-channel image with integer or boolean data."
        )
    data = _full_resolution(layer)
    dtype = np.dtype(data.dtype)
    # Floats pass here: the core accepts float masks holding only 0 and 1 and says so
    # when they do not (checking that needs a full pass over the data, in the worker).
    if not (
        dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    ):
        raise ValueError(
            f"{role} '{name}' holds {dtype} values; metrics need a binary mask or integer labels."
        )
    shape = tuple(int(s) for s in data.shape)
    if len(shape) not in (2, 3):
        raise ValueError(
            f"{role} '{name}' is {len(shape)}D with shape {shape}; expected a 2D (y, x) "
            "or 3D (z, y, x) layer."
        )
    if 0 in shape:
        raise ValueError(f"{role} '{name}' is empty: its data has shape {shape}.")


def _validate_pair(prediction: Any, ground_truth: Any) -> list[str]:
    """Check the chosen layers before any heavy work.

    Returns
    -------
    list of str
        Notes worth a warning (the comparison can still run).

    Raises
    ------
    ValueError
        With a message for the user when the layers cannot be compared.
    """
    if prediction is None or ground_truth is None:
        raise ValueError(
            "Pick a prediction and a ground-truth layer (Labels, or an Image holding "
            "a binary mask or integer labels)."
        )
    if _same(prediction, ground_truth):
        raise ValueError(
            f"Prediction and ground truth are the same layer ('{prediction.name}'); "
            "pick two different layers."
        )
    _check_layer(prediction, "Prediction")
    _check_layer(ground_truth, "Ground truth")

    p_shape = tuple(int(s) for s in _full_resolution(prediction).shape)
    g_shape = tuple(int(s) for s in _full_resolution(ground_truth).shape)
    if len(p_shape) != len(g_shape):
        raise ValueError(
            f"Prediction '{prediction.name}' is {len(p_shape)}D {p_shape} but ground "
            f"truth '{ground_truth.name}' is {len(g_shape)}D {g_shape}; both must have "
            "the same shape."
        )
    if p_shape != g_shape:
        raise ValueError(
            f"Shapes differ: prediction '{prediction.name}' is {p_shape} but ground "
            f"truth '{ground_truth.name}' is {g_shape}."
        )

    notes = []
    ndim = len(g_shape)
    p_scale = np.asarray(prediction.scale, dtype=float)[-ndim:]
    g_scale = np.asarray(ground_truth.scale, dtype=float)[-ndim:]
    if not np.allclose(p_scale, g_scale):
        notes.append(
            f"The layers have different scales ({_floats(p_scale)} vs "
            f"{_floats(g_scale)}); the ground truth's is used as voxel spacing."
        )
    for layer, role in ((prediction, "prediction"), (ground_truth, "ground truth")):
        if layer.multiscale:
            notes.append(f"The {role} is multiscale; its full-resolution level is used.")
    return notes


def _floats(values: Sequence[float]) -> str:
    return ", ".join(f"{float(v):g}" for v in values)


@dataclass(frozen=True)
class _Outcome:
    """What the worker hands back to the GUI thread (plain Python, no Qt)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    empty: tuple[str, ...] = ()  # roles ("prediction", "ground truth") without foreground


def _run_compute_metrics(prediction: Any, ground_truth: Any, spacing: tuple[float, ...]):
    """Worker body: snapshot the arrays and call the core. Never raises, never uses Qt.

    Expected failures (``ValueError`` from the core) come back as ``_Outcome.error``
    with the core's message; anything else is logged with its traceback and reported
    by type and message, so the viewer shows a message instead of a traceback dialog.
    """
    start = time.perf_counter()
    try:
        from napari_topo.topology import metrics as core

        # Copy: the user may keep painting the layers while this thread computes.
        pred = np.array(prediction, copy=True)
        gt = np.array(ground_truth, copy=True)
        empty = tuple(
            role for role, arr in (("prediction", pred), ("ground truth", gt)) if not arr.any()
        )
        record = core.compute_metrics(pred, gt, spacing=spacing)
        descriptions = getattr(core, "METRIC_DESCRIPTIONS", None) or {}
        return _Outcome(
            metrics=dict(record),
            descriptions={str(k): str(v) for k, v in dict(descriptions).items()},
            seconds=time.perf_counter() - start,
            empty=empty,
        )
    except ValueError as exc:
        return _Outcome(error=str(exc), seconds=time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - reported to the user, traceback logged
        _LOG.exception("compute_metrics failed")
        return _Outcome(
            error=f"Computing metrics failed ({type(exc).__name__}: {exc}).",
            seconds=time.perf_counter() - start,
        )


def _disconnect_layer_events(events: Any, callback: Any, *_: Any) -> None:
    for name in _LAYER_EVENTS:
        emitter = getattr(events, name, None)
        if emitter is not None:
            emitter.disconnect(callback)


# --------------------------------------------------------------------------------------
# The widget
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    prediction: str
    ground_truth: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    notes: tuple[str, ...]


class MetricsWidget(QWidget):
    """Compare a prediction with a ground truth using the topology metrics.

    Pick two layers (Labels, or Images holding a binary mask or integer labels), press
    *Compute*:
    :func:`napari_topo.topology.metrics.compute_metrics` runs in a worker thread with
    the ground truth's ``scale`` as voxel spacing, and the table lists every metric
    (hover a row for its description).  *Export…* saves the table as CSV or JSON.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose layers are offered (napari passes it when docking).
    parent : QWidget, optional
        Qt parent.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        if napari_viewer is None or not hasattr(napari_viewer, "layers"):
            raise ValueError(
                f"MetricsWidget needs a napari viewer, got {type(napari_viewer).__name__}."
            )
        self._viewer = napari_viewer
        self._worker = None
        self._job: _Job | None = None
        self._result: dict[str, Any] | None = None

        self.prediction_picker = ComboBox(
            label="Prediction",
            choices=self._layer_choices,
            tooltip="Segmentation to evaluate (Labels, or an Image holding a binary mask).",
        )
        self.ground_truth_picker = ComboBox(
            label="Ground truth",
            choices=self._layer_choices,
            tooltip="Reference segmentation; its scale is used as voxel spacing.",
        )
        self._pickers = Container(
            widgets=[self.prediction_picker, self.ground_truth_picker], labels=True
        )
        self._pickers.margins = (0, 0, 0, 0)

        self.compute_button = QPushButton("Compute")
        self.compute_button.setToolTip(
            "Compute the metrics in the background (spacing from the ground truth's scale)."
        )
        self.compute_button.clicked.connect(self.compute)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Save the table as CSV or JSON.")
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(self._on_export_clicked)

        self.status_label = QLabel("Pick two layers and press Compute.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Metric", "Value"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

        buttons = QHBoxLayout()
        buttons.addWidget(self.compute_button)
        buttons.addWidget(self.export_button)

        layout = QVBoxLayout(self)
        layout.addWidget(self._pickers.native)
        layout.addLayout(buttons)
        layout.addWidget(self.status_label)
        layout.addWidget(self.table, stretch=1)
        self.setMinimumWidth(320)

        events = napari_viewer.layers.events
        for name in _LAYER_EVENTS:
            getattr(events, name).connect(self._refresh_choices)
        # Stop listening once Qt deletes the widget (the Python object may outlive it).
        self.destroyed.connect(partial(_disconnect_layer_events, events, self._refresh_choices))
        self._refresh_choices()

    # ---- public API ------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True while a worker is computing."""
        return self._worker is not None

    @property
    def results(self) -> dict[str, Any]:
        """The metrics shown in the table (a copy; empty before the first success)."""
        return dict(self._result["metrics"]) if self._result else {}

    def compute(self) -> bool:
        """Check the chosen layers and start computing in a worker thread.

        Returns
        -------
        bool
            True if a worker was started; False if a computation is already running or
            the input was rejected (the reason is in the status label and a
            notification).
        """
        if self.is_running:
            return False
        prediction = self.prediction_picker.value
        ground_truth = self.ground_truth_picker.value
        try:
            notes = _validate_pair(prediction, ground_truth)
        except ValueError as exc:
            self._clear_results()
            self._report(str(exc), error=True)
            return False

        pred_data = _full_resolution(prediction)
        gt_data = _full_resolution(ground_truth)
        shape = tuple(int(s) for s in gt_data.shape)
        spacing = tuple(float(s) for s in np.asarray(ground_truth.scale)[-len(shape) :])
        self._job = _Job(
            prediction=prediction.name,
            ground_truth=ground_truth.name,
            shape=shape,
            spacing=spacing,
            notes=tuple(notes),
        )
        self._clear_results()
        self._set_status(f"Computing metrics of '{prediction.name}' against '{ground_truth.name}'…")
        self.compute_button.setEnabled(False)
        self.compute_button.setText("Computing…")
        self._worker = create_worker(
            _run_compute_metrics,
            pred_data,
            gt_data,
            spacing,
            _connect={
                "returned": self._on_returned,
                "errored": self._on_errored,
                "finished": self._on_finished,
            },
            _start_thread=True,
        )
        return True

    def export(self, path: str | Path) -> Path:
        """Write the current table to ``path`` as CSV or JSON (chosen by extension).

        CSV has the columns ``metric`` and ``value`` (full precision, ``nan`` for
        missing values).  JSON holds the compared layer names, shape, spacing,
        run time and a ``metrics`` object (``null`` for missing values).

        Parameters
        ----------
        path : str or pathlib.Path
            Destination ending in ``.csv`` or ``.json``.

        Returns
        -------
        pathlib.Path
            The written file.

        Raises
        ------
        ValueError
            If the extension is not ``.csv`` or ``.json``.
        RuntimeError
            If there is nothing to export yet.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in _EXPORT_SUFFIXES:
            raise ValueError(
                f"Cannot export to '{path.name}': use a .csv or .json file name "
                f"(got suffix {path.suffix or 'none'!r})."
            )
        if not self._result:
            raise RuntimeError("Nothing to export yet: compute the metrics first.")
        metrics = self._result["metrics"]
        if suffix == ".csv":
            with path.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["metric", "value"])
                for name, value in metrics.items():
                    writer.writerow([name, repr(_as_float(value))])
        else:
            payload = {
                "prediction": self._result["prediction"],
                "ground_truth": self._result["ground_truth"],
                "shape": list(self._result["shape"]),
                "spacing": list(self._result["spacing"]),
                "seconds": self._result["seconds"],
                "metrics": {name: _json_number(value) for name, value in metrics.items()},
            }
            path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        return path

    # ---- layer pickers ---------------------------------------------------------------

    def _layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Labels | Image)
        ]

    def _refresh_choices(self, _event: Any = None) -> None:
        """Rebuild both pickers, keeping the chosen layers when they still exist."""
        previous = [self.prediction_picker.value, self.ground_truth_picker.value]
        for picker, before in zip(
            (self.prediction_picker, self.ground_truth_picker), previous, strict=True
        ):
            # Rebuild from scratch so the order follows the layer list (magicgui would
            # append a renamed layer at the end); the selection is restored below.
            combo = picker.native
            blocked = combo.blockSignals(True)
            combo.clear()
            combo.blockSignals(blocked)
            picker.reset_choices()
            if before is not None:
                self._select(picker, before)
        # Defaults: an empty picker gets the first Labels layer (else the first layer),
        # and since comparing a layer with itself is never wanted, two pickers on the
        # same layer are split whenever another layer exists.
        choices = [layer for _, layer in self._layer_choices()]
        ranked = [c for c in choices if isinstance(c, Labels)] + [
            c for c in choices if not isinstance(c, Labels)
        ]
        if not ranked:
            return
        if previous[0] is None:
            self._select(self.prediction_picker, ranked[0])
        if previous[1] is None or _same(
            self.prediction_picker.value, self.ground_truth_picker.value
        ):
            others = [c for c in ranked if not _same(c, self.prediction_picker.value)]
            self._select(self.ground_truth_picker, others[0] if others else ranked[0])

    @staticmethod
    def _select(picker: ComboBox, layer: Any) -> bool:
        """Select ``layer`` in ``picker`` (by identity, robust to proxies)."""
        combo = picker.native
        for index in range(combo.count()):
            if _same(combo.itemData(index), layer):
                if combo.currentIndex() != index:
                    combo.setCurrentIndex(index)
                return True
        return False

    # ---- worker callbacks (GUI thread) -----------------------------------------------

    def _on_returned(self, outcome: _Outcome) -> None:
        job = self._job
        if outcome.error is not None or job is None:
            self._report(outcome.error or "Computing metrics failed.", error=True)
            return
        self._result = {
            "prediction": job.prediction,
            "ground_truth": job.ground_truth,
            "shape": job.shape,
            "spacing": job.spacing,
            "seconds": outcome.seconds,
            "metrics": dict(outcome.metrics),
        }
        self._fill_table(outcome.metrics, outcome.descriptions)
        self.export_button.setEnabled(bool(outcome.metrics))

        spacing = "×".join(f"{v:g}" for v in job.spacing)
        message = (
            f"Compared '{job.prediction}' with ground truth '{job.ground_truth}' "
            f"({len(job.shape)}D, {_shape_text(job.shape)}, spacing {spacing}): "
            f"computed in {outcome.seconds:.2f} s."
        )
        warnings = list(job.notes)
        for role in outcome.empty:
            name = job.prediction if role == "prediction" else job.ground_truth
            warnings.append(
                f"The {role} '{name}' has no foreground voxels; metrics that need it are n/a or 0."
            )
        if warnings:
            for warning in warnings:
                show_warning(warning)
            message += " Warning: " + " ".join(warnings)
        self._set_status(message)

    def _on_errored(self, exc: BaseException) -> None:
        # The worker body catches Exceptions itself; this is a last resort.
        self._report(f"Computing metrics failed ({type(exc).__name__}: {exc}).", error=True)

    def _on_finished(self) -> None:
        self._worker = None
        self.compute_button.setEnabled(True)
        self.compute_button.setText("Compute")

    # ---- helpers ---------------------------------------------------------------------

    def _fill_table(self, metrics: Mapping[str, Any], descriptions: Mapping[str, str]) -> None:
        self.table.setRowCount(len(metrics))
        for row, (name, value) in enumerate(metrics.items()):
            description = descriptions.get(name, "")
            name_item = QTableWidgetItem(str(name))
            value_item = QTableWidgetItem(format_metric_value(value))
            value_item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            name_item.setToolTip(description)
            exact = f"Exact value: {_as_float(value)!r}"
            value_item.setToolTip(f"{description}\n{exact}" if description else exact)
            self.table.setItem(row, 0, name_item)
            self.table.setItem(row, 1, value_item)
        self.table.resizeColumnToContents(1)

    def _clear_results(self) -> None:
        self._result = None
        self.table.setRowCount(0)
        self.export_button.setEnabled(False)

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _report(self, message: str, *, error: bool) -> None:
        self._set_status(("Error: " if error else "Warning: ") + message)
        (show_error if error else show_warning)(message)

    def _on_export_clicked(self) -> None:
        default = "topology_metrics.csv"
        if self._result:
            default = f"metrics_{self._result['prediction']}_vs_{self._result['ground_truth']}.csv"
        path, _ = QFileDialog.getSaveFileName(
            self, "Export metrics", default, "CSV (*.csv);;JSON (*.json)"
        )
        if not path:
            return
        try:
            written = self.export(path)
        except (ValueError, RuntimeError, OSError) as exc:
            self._report(str(exc), error=True)
            return
        self._set_status(f"Exported {len(self.results)} metrics to {written}.")


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _json_number(value: Any) -> float | None:
    number = _as_float(value)
    return None if math.isnan(number) or math.isinf(number) else number
