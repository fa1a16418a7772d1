"""Dock widget that compares a prediction layer with a ground-truth layer.

The widget only collects choices and shows results.  The numbers come from
:func:`napari_topo.topology.metrics.compute_metrics`, which runs in a worker thread
(:func:`napari.qt.threading.create_worker`) so the viewer stays responsive; the worker
returns plain Python objects and never touches Qt, and the table is filled on the GUI
thread from the worker's ``returned`` signal.

*Live* (on by default) keeps the table current while either layer is edited: a paint
event (brush, fill, eraser, or another widget that edits the data in place and emits
``layer.events.paint`` with napari's history atoms) is turned into changed indices and
applied to :class:`napari_topo.topology.incremental.IncrementalMetrics` in a worker
(the fast metrics: overlap, Betti, Euler, CCE), then after a short pause a worker
recomputes everything with ``compute_metrics`` (clDice, HD95, ...). One worker of each
kind at a time; edits made meanwhile are queued and coalesced. A new array in a layer
(``events.data``) starts a full recompute. *Show errors* adds Points layers on the
centerline the prediction misses and the predicted centerline outside the ground truth
(:func:`napari_topo.topology.errors.topology_errors`) with a list to jump to them.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
import weakref
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
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    import napari

from napari_topo.geometry import compare_layers, layer_length_unit, shape_mismatch
from napari_topo.layers import METADATA_KEY
from napari_topo.topology.incremental import (
    FAST_METRICS,
    IncrementalMetrics,
    SkeletonCache,
    slow_metrics,
)
from napari_topo.topology.metrics import DISTANCE_METRICS, METRIC_DESCRIPTIONS
from napari_topo.topology.shape import REGION_RATIO, thickness_ratio
from napari_topo.widgets._common import (
    check_folder,
    finish_workers_at_exit,
    follow_layer_list,
    full_resolution,
    install_view_defaults,
    made_by_plugin,
    one_line,
    os_error_message,
    plugin_info,
    rebuild_picker,
    require_viewer,
    reshare_column,
    same_layer,
    scrolling_body,
    select_layer,
    unwrap,
)

__all__ = ["MetricsWidget", "format_metric_value", "paint_changes"]

_LOG = logging.getLogger(__name__)
#: This dock's weight when a window's dock column is shared
#: (:func:`~napari_topo.widgets._common.share_dock_column`): the most: its
#: table shows every metric at 1600 x 1000, and it takes the room the others leave.
DOCK_SHARE = 11

#: The pickers' entry for no layer.
_NONE = "none"
#: Export formats, by file extension.
_EXPORT_SUFFIXES = (".csv", ".json")
#: Pause after the last edit before the slow metrics are recomputed (ms).
DEBOUNCE_MS = 300
#: Colours of the error layers.
_ERROR_COLORS = {"missed": "red", "false": "orange"}
#: The same hues, lighter, for text on napari's dark theme.
_ERROR_TEXT_COLORS = {"missed": "#ff7a7a", "false": "#ffb347"}
_STALE_BRUSH = QColor(140, 140, 140)


def format_metric_value(value: Any) -> str:
    """Format one metric value for display: at most 4 decimals, NaN as ``"n/a"``.

    Parameters
    ----------
    value : float, int, numpy scalar or None
        The value returned by ``compute_metrics``.

    Returns
    -------
    str
        ``"n/a"`` for NaN or None, ``"inf"``/``"-inf"`` for infinities, ``"0"`` for
        zero (also negative zero), a whole number without decimals, a magnitude of
        10 000 or more with ``".4g"`` and one under 0.0001 with ``".2e"``; anything else
        with 4 decimals, trailing zeros dropped (a small volume error reads ``-0.009``,
        not ``-0.009001``: every fraction in the table has the same resolution).
        Values that are not numbers are shown with ``str``.

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
    if number.is_integer() and abs(number) < 1e4:
        return str(int(number))
    if abs(number) >= 1e4:
        return f"{number:.4g}"
    if abs(number) < 1e-4:
        return f"{number:.2e}"
    return f"{number:.4f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------------------
# Qt-free helpers: input checks and the function that runs in the worker thread
# --------------------------------------------------------------------------------------


def _shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape)


#: What an Image layer's values are (:func:`_image_values`), per layer and data array.
_IMAGE_VALUES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _image_values(layer: Any) -> str:
    """``"labels"`` (a mask or label volume), ``"intensity"`` (non-negative integers,
    too many values for labels: a stack, a scan) or ``"other"`` (floats, negatives, RGB)
    for an Image layer's data.

    The reader's rule (:func:`napari_topo._plugin.is_label_volume`, a strided sample of
    at most 2**21 voxels), on the coarsest level of a multiscale image (a lazy volume is
    not read whole), and kept per layer until its data changes: the pickers ask on every
    change of the layer list, on the GUI thread.
    """
    data = layer.data[-1] if getattr(layer, "multiscale", False) else layer.data
    known = _IMAGE_VALUES.get(layer)
    if known is not None and known[0]() is data:
        return known[1]
    from napari_topo._plugin import _LABEL_SAMPLE, _strided_sample, is_label_volume

    if layer.rgb:
        kind = "other"
    elif is_label_volume(data):
        kind = "labels"
    elif np.issubdtype(np.dtype(data.dtype), np.integer):
        sample = _strided_sample(data, _LABEL_SAMPLE)
        kind = "intensity" if sample.size > 0 and sample.min() >= 0 else "other"
    else:
        kind = "other"
    try:  # the array by weak reference: a replaced one is not kept alive
        _IMAGE_VALUES[layer] = (weakref.ref(data), kind)
    except TypeError:  # not weak-referenceable: asked again next time
        pass
    return kind


def _holds_labels(layer: Any) -> bool:
    """Whether a layer can be a reference: Labels, or an Image of a mask or label volume
    (:func:`_image_values`): an intensity image (a two-photon stack, a CT) is never
    offered as the ground truth by default nor scored as one."""
    if isinstance(layer, Labels):
        return True
    return isinstance(layer, Image) and _image_values(layer) == "labels"


def _is_intensity_image(layer: Any) -> bool:
    """An Image of non-negative integers with too many values for labels (a stack, a
    scan). Negative values are left to the core, whose message says labels must be
    non-negative."""
    return isinstance(layer, Image) and _image_values(layer) == "intensity"


def _check_layer(layer: Any, role: str) -> None:
    """Raise ValueError if ``layer`` cannot be compared (cheap checks only)."""
    name = layer.name
    if not isinstance(layer, Labels | Image):
        raise ValueError(
            f"{role} '{name}' is a {type(unwrap(layer)).__name__} layer; "
            "pick a Labels layer or an Image layer holding a mask or labels."
        )
    if isinstance(layer, Image) and layer.rgb:
        raise ValueError(
            f"{role} '{name}' is an RGB(A) image; pick a Labels layer or a "
            "single-channel image with integer or boolean data."
        )
    data = full_resolution(layer)
    dtype = np.dtype(data.dtype)
    # Floats pass here: the core accepts float masks holding only 0 and 1 and says so
    # when they do not (checking that needs a full pass over the data, in the worker).
    if not (
        dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    ):
        raise ValueError(
            f"{role} '{name}' holds {dtype} values; metrics need a binary mask or integer labels."
        )
    if _is_intensity_image(layer):
        raise ValueError(
            f"{role} '{name}' is an intensity image (many grey levels), not a mask or "
            "labels; pick a Labels layer (Layers > Convert to Labels if it really holds "
            "labels)."
        )
    shape = tuple(int(s) for s in data.shape)
    if len(shape) not in (2, 3):
        raise ValueError(
            f"{role} '{name}' is {len(shape)}D with shape {shape}; expected a 2D (y, x) "
            "or 3D (z, y, x) layer."
        )
    if 0 in shape:
        raise ValueError(f"{role} '{name}' is empty: its data has shape {shape}.")


def _box_on_grid(inner: Any, inner_shape, outer: Any, outer_shape) -> tuple[slice, ...] | None:
    """The voxels of ``outer`` that layer ``inner`` covers, when ``inner`` lies on
    ``outer``'s grid (same ndim and scale, no rotation, a whole-voxel offset) and inside
    it; else None."""
    n = len(outer_shape)
    if len(inner_shape) != n:
        return None
    try:
        si, so = (np.asarray(x.scale, dtype=float)[-n:] for x in (inner, outer))
        ti, to = (np.asarray(x.translate, dtype=float)[-n:] for x in (inner, outer))
        plain = all(
            np.allclose(np.asarray(x.rotate, dtype=float), np.eye(np.asarray(x.rotate).shape[0]))
            and np.allclose(np.asarray(x.shear, dtype=float), 0.0)
            for x in (inner, outer)
        )
    except (AttributeError, TypeError, ValueError):
        return None
    if not plain or not np.allclose(si, so, rtol=1e-6):
        return None
    offset = (ti - to) / so
    start = np.rint(offset).astype(int)
    if not np.allclose(offset, start, atol=1e-3):
        return None
    stop = start + np.asarray(inner_shape)
    if (start < 0).any() or (stop > np.asarray(outer_shape)).any():
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))


def _pair_box(prediction: Any, ground_truth: Any) -> tuple[slice, ...] | None:
    """The box of the ground truth's voxels that a Segment result of Region 'box' (or
    'slices', ...) covers, when it lies on the truth's grid and inside it; else None
    (also for a pair of equal shapes)."""
    if prediction is None or ground_truth is None:
        return None
    if not plugin_info(prediction).get("region"):
        return None
    p_shape = tuple(int(s) for s in full_resolution(prediction).shape)
    g_shape = tuple(int(s) for s in full_resolution(ground_truth).shape)
    if p_shape == g_shape:
        return None
    return _box_on_grid(prediction, p_shape, ground_truth, g_shape)


def _box_text(box: tuple[slice, ...]) -> str:
    axes = "zyx"[-len(box) :] if len(box) <= 3 else [f"axis {i}" for i in range(len(box))]
    return ", ".join(f"{a} {b.start}:{b.stop}" for a, b in zip(axes, box, strict=True))


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
        which = "a prediction" if prediction is None else "a ground truth"
        if prediction is None and ground_truth is None:
            which = "a prediction and a ground truth"
        raise ValueError(
            f"Pick {which} (Labels, or an Image holding a binary mask or integer labels); "
            "Segment's trees are picked as the prediction by themselves."
        )
    if same_layer(prediction, ground_truth):
        raise ValueError(
            f"Prediction and ground truth are the same layer ('{prediction.name}'); "
            "pick two different layers."
        )
    _check_layer(prediction, "Prediction")
    _check_layer(ground_truth, "Ground truth")

    p_shape = tuple(int(s) for s in full_resolution(prediction).shape)
    g_shape = tuple(int(s) for s in full_resolution(ground_truth).shape)
    if p_shape != g_shape:
        box = _pair_box(prediction, ground_truth)
        if box is not None:
            # Segment's Region 'box' result beside a whole-volume ground truth (a
            # newcomer's 40-slice CT run): scored inside the box, on the truth's grid
            return [
                f"'{prediction.name}' covers only the box {_box_text(box)} of "
                f"'{ground_truth.name}': scored inside it."
            ]
        message = shape_mismatch(
            f"prediction '{prediction.name}'",
            p_shape,
            f"ground truth '{ground_truth.name}'",
            g_shape,
        )
        raise ValueError(message[0].upper() + message[1:])

    # Both placed: they must lie on one world grid (or the score would be silently
    # wrong); a never-placed layer is taken on the other's grid (noted below).
    compare_layers(
        prediction,
        ground_truth,
        names=(f"prediction '{prediction.name}'", f"ground truth '{ground_truth.name}'"),
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


def paint_changes(atoms: Any, shape: Sequence[int]) -> list[tuple[tuple[np.ndarray, ...], Any]]:
    """Changed indices and new values from the value of a Labels ``events.paint``.

    napari 0.9 emits ``events.paint(value=item)`` with ``item`` a list of history atoms,
    each either a masked edit (``slice_key``, ``mask``, ``old_values``, ``new_value``:
    from paint, fill and polygons; ``mask`` None when the whole box changed) or the
    3-tuple ``(indices, old_values, new_values)`` of ``Labels.data_setitem``. The event
    may come *before* the array is written, so the new values are read from the atoms.

    Parameters
    ----------
    atoms : list
        The event's ``value``.
    shape : sequence of int
        Shape of the layer's data.

    Returns
    -------
    list of (indices, values)
        One entry per atom, in order: a tuple of index arrays (one per axis) and a
        scalar or an array of new values.
    """
    changes = []
    for atom in atoms or ():
        if hasattr(atom, "slice_key") and hasattr(atom, "new_value"):
            starts, sizes, fixed = [], [], []
            for key, n in zip(atom.slice_key, shape, strict=False):
                if isinstance(key, slice):
                    start, stop, _ = key.indices(int(n))
                    starts.append(start)
                    sizes.append(max(stop - start, 0))
                    fixed.append(None)
                else:  # an integer index (a dimension that was not painted)
                    starts.append(int(key))
                    sizes.append(1)
                    fixed.append(int(key))
            if atom.mask is None:
                local = np.nonzero(np.ones(sizes, dtype=bool))
            else:
                mask = np.asarray(atom.mask, dtype=bool).reshape(sizes)
                local = np.nonzero(mask)
            indices = tuple(
                np.asarray(ix, dtype=np.int64) + st for ix, st in zip(local, starts, strict=True)
            )
            changes.append((indices, atom.new_value))
        else:
            indices, _old, new = atom
            indices = tuple(np.asarray(ix, dtype=np.int64).ravel() for ix in indices)
            changes.append((indices, new if np.ndim(new) == 0 else np.asarray(new).ravel()))
    return changes


def _into_box(
    changes: list[tuple[tuple[np.ndarray, ...], Any]], box: tuple[slice, ...]
) -> list[tuple[tuple[np.ndarray, ...], Any]]:
    """:func:`paint_changes` of a whole layer as changes of its ``box``: indices shifted
    to the box's corner, those outside it dropped (with their values, when per voxel)."""
    out = []
    for indices, values in changes:
        keep = np.ones(len(indices[0]) if indices else 0, dtype=bool)
        shifted = []
        for ix, b in zip(indices, box, strict=True):
            ix = np.asarray(ix, dtype=np.int64) - b.start
            keep &= (ix >= 0) & (ix < b.stop - b.start)
            shifted.append(ix)
        if not keep.any():
            continue
        vals = values if np.ndim(values) == 0 else np.asarray(values).ravel()[keep]
        out.append((tuple(ix[keep] for ix in shifted), vals))
    return out


@dataclass(frozen=True)
class _Outcome:
    """What the worker hands back to the GUI thread (plain Python, no Qt)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    empty: tuple[str, ...] = ()  # roles ("prediction", "ground truth") without foreground
    live: Any = None  # an IncrementalMetrics built from the same arrays, if asked for
    generation: int = 0
    slow_only: bool = False  # only the metrics IncrementalMetrics does not maintain
    snapshot: tuple = ()  # (pred, gt) arrays the slow metrics were computed on


def _run_compute_metrics(
    prediction: Any,
    ground_truth: Any,
    spacing: tuple[float, ...],
    build_live: bool = False,
    generation: int = 0,
):
    """Worker body: call the core on snapshots of the arrays. Never raises, never uses Qt.

    Expected failures (``ValueError`` from the core) come back as ``_Outcome.error``
    with the core's message; anything else is logged with its traceback and reported
    by type and message, so the viewer shows a message instead of a traceback dialog.
    With ``build_live`` the incremental state for live updates is built too (a failure
    there only disables live updates).
    """
    start = time.perf_counter()
    try:
        from napari_topo.topology import metrics as core

        pred = np.asarray(prediction)
        gt = np.asarray(ground_truth)
        empty = tuple(
            role for role, arr in (("prediction", pred), ("ground truth", gt)) if not arr.any()
        )
        record = core.compute_metrics(pred, gt, spacing=spacing)
        descriptions = getattr(core, "METRIC_DESCRIPTIONS", None) or {}
        live = None
        if build_live:
            try:
                live = IncrementalMetrics(pred, gt, spacing=spacing)
            except (ValueError, MemoryError) as exc:
                _LOG.warning("live metrics disabled: %s", exc)
        return _Outcome(
            metrics=dict(record),
            descriptions={str(k): str(v) for k, v in dict(descriptions).items()},
            seconds=time.perf_counter() - start,
            empty=empty,
            live=live,
            generation=generation,
        )
    except ValueError as exc:
        return _Outcome(error=str(exc), seconds=time.perf_counter() - start, generation=generation)
    except Exception as exc:  # noqa: BLE001 - reported to the user, traceback logged
        _LOG.exception("compute_metrics failed")
        return _Outcome(
            error=f"Computing metrics failed ({type(exc).__name__}: {exc}).",
            seconds=time.perf_counter() - start,
            generation=generation,
        )


def _run_slow_metrics(
    prediction: np.ndarray,
    ground_truth: np.ndarray,
    spacing: tuple[float, ...],
    generation: int,
    cache: SkeletonCache,
):
    """Worker body of the live background recompute: clDice, HD95, ... only."""
    start = time.perf_counter()
    try:
        values = slow_metrics(prediction, ground_truth, spacing=spacing, cache=cache)
    except ValueError as exc:
        return _Outcome(error=str(exc), seconds=time.perf_counter() - start, generation=generation)
    except Exception as exc:  # noqa: BLE001 - reported to the user, traceback logged
        _LOG.exception("slow metrics failed")
        return _Outcome(
            error=f"Computing metrics failed ({type(exc).__name__}: {exc}).",
            seconds=time.perf_counter() - start,
            generation=generation,
        )
    empty = tuple(
        role
        for role, arr in (("prediction", prediction), ("ground truth", ground_truth))
        if not arr.any()
    )
    return _Outcome(
        metrics=values,
        seconds=time.perf_counter() - start,
        generation=generation,
        slow_only=True,
        snapshot=(prediction, ground_truth),
        empty=empty,
    )


#: The table's first rows, when computed: overlap, topology (the centerline) and the
#: trees. The dock keeps them in view when a dock column is shared.
HEADLINE_METRICS = ("Dice", "clDice", "Tree accuracy")


def _table_order(metrics: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The table's rows: the :data:`HEADLINE_METRICS` computed, then the others in their
    order. *Tree accuracy*, what a tree edit changes, was the last of 15 rows, below
    the fold of a 1366 x 768 screen with the Tree editor open."""
    first = [(name, metrics[name]) for name in HEADLINE_METRICS if name in metrics]
    return first + [(k, v) for k, v in metrics.items() if k not in HEADLINE_METRICS]


def _history_signature(layer: Any) -> tuple[int, int] | None:
    """The lengths of a Labels layer's undo and redo histories (napari keeps them in
    ``_undo_history`` and ``_redo_history``; None where a layer has neither). An undo
    moves an item from one to the other and emits no paint event."""
    layer = unwrap(layer)
    undo, redo = getattr(layer, "_undo_history", None), getattr(layer, "_redo_history", None)
    if undo is None or redo is None:
        return None
    return len(undo), len(redo)


def _run_live_updates(live: IncrementalMetrics, batch: list, generation: int):
    """Worker body: apply queued edits ``(which, indices, values)``; return fast values."""
    start = time.perf_counter()
    try:
        for which, indices, values in batch:
            live.update(indices, values, which=which)
        return {
            "values": live.values(),
            "seconds": time.perf_counter() - start,
            "generation": generation,
            "live": live,
            "error": None,
        }
    except Exception as exc:  # noqa: BLE001 - falls back to a full recompute
        _LOG.exception("live metrics update failed")
        return {"error": f"{type(exc).__name__}: {exc}", "live": live, "generation": generation}


def _run_topology_errors(prediction: Any, ground_truth: Any, spacing: tuple[float, ...]):
    """Worker body for *Show errors*: the core's error locations, or an error message."""
    from napari_topo.topology.errors import topology_errors

    try:
        return topology_errors(np.asarray(prediction), np.asarray(ground_truth), spacing)
    except ValueError as exc:
        return {"error": str(exc)}


def error_layer_tuples(
    errors: Mapping[str, Any], name: str, scale=None, translate=None, units=None
) -> list[tuple[Any, dict, str]]:
    """Two Points layer data tuples from :func:`topology_errors`' result (Qt-free).

    ``"<name> missed centerline"`` (red) and ``"<name> false centerline"`` (orange), at
    the skeleton voxels, with ``metadata["napari_topo"]`` of kind ``"errors"`` holding
    the error type and the grouped locations and sizes.
    """
    out = []
    for kind, title in (("missed", "missed centerline"), ("false", "false centerline")):
        pts = np.asarray(errors[f"{kind}_centerline"], dtype=float)
        ndim = pts.shape[1] if pts.ndim == 2 else 3
        meta: dict[str, Any] = {
            "name": f"{name} {title}",
            "metadata": {
                "napari_topo": {
                    "kind": "errors",
                    "name": name,
                    "error": kind,
                    "locations": np.asarray(errors[f"{kind}_locations"]).tolist(),
                    "sizes": np.asarray(errors[f"{kind}_sizes"]).tolist(),
                }
            },
            "face_color": _ERROR_COLORS[kind],
            "border_width": 0.0,
            "size": 2.0,
            "ndim": ndim,
        }
        if scale is not None:
            meta["scale"] = tuple(float(v) for v in scale)
        if translate is not None:
            meta["translate"] = tuple(float(v) for v in translate)
        if units is not None:  # napari >= 0.6: the ground truth's, for the scale bar
            meta["units"] = tuple(units)
        out.append((pts.reshape(-1, ndim), meta, "points"))
    return out


def _disconnect_all(connections: list, *_: Any) -> None:
    for emitter, callback in connections:
        try:
            emitter.disconnect(callback)
        except (RuntimeError, ValueError, TypeError):  # pragma: no cover - already gone
            pass
    connections.clear()


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
    user: bool = True  # pressed Compute (False: a live recompute in the background)
    generation: int = 0
    pair: tuple | None = None  # the watched (prediction, ground truth) when started
    unit: str = "voxels"  # of distances (HD95): see _distance_unit


def _distance_unit(layer: Any, spacing: Sequence[float]) -> str:
    """Unit of distances measured with ``spacing`` (the ground truth's scale): the
    layer's length unit (:func:`~napari_topo.geometry.layer_length_unit`: the file's, or
    napari's ``units``), else "voxels" for a scale of 1, else "scale units"."""
    unit = layer_length_unit(layer)
    if unit:
        return unit
    return "voxels" if np.allclose(spacing, 1.0) else "scale units"


#: Words of a region or organ mask (any part of the name): such a layer is never the
#: default ground truth. A newcomer who opened a liver mask for Segment's *Inside* got it
#: picked as the ground truth, and *Live* at once scored the vessels against the liver.
REGION_WORDS = (
    "liver",
    "kidney",
    "lung",
    "brain",
    "heart",
    "spleen",
    "pancreas",
    "organ",
    "body",
    "roi",
    "region",
    "inside",
    "tumor",
    "tumour",
    "lesion",
)
#: Words that make a layer's name that of a vessel ground truth (a name starting with
#: one of them, or "truth" anywhere): such a layer is preferred as the default reference.
TRUTH_WORDS = (
    "gt",
    "truth",
    "groundtruth",
    "annotation",
    "annotated",
    "manual",
    "reference",
    "label",
    "vessel",
    "vasculature",
    "vein",
    "artery",
    "portal",
    "venous",
    "hepatic",
    "tree",
    "seg",
    "mask",
)


def _name_words(layer: Any) -> tuple[str, list[str]]:
    name = str(getattr(layer, "name", "")).lower()
    for sep in "_-.":
        name = name.replace(sep, " ")
    return name, name.split()


#: The words of :data:`TRUTH_WORDS` that name vessels: they outweigh an organ's name
#: ("liver_vessels" is a ground truth, "liver_label" a region).
VESSEL_WORDS = ("vessel", "vasculature", "vein", "artery", "portal", "venous", "hepatic", "tree")


def _named_like_region(layer: Any) -> bool:
    """Whether ``layer``'s name names an organ or a region (:data:`REGION_WORDS`) and
    no vessels (:data:`VESSEL_WORDS`)."""
    name, words = _name_words(layer)
    if any(w.startswith(VESSEL_WORDS) for w in words):
        return False
    return any(w in name for w in REGION_WORDS)


_REGION_SHAPE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

GROUND_TRUTH_TOOLTIP = (
    "Reference segmentation; its scale is used as voxel spacing. Picked by itself only "
    "among the layers the plugin did not make."
)


def _named_for_vessels(layer: Any) -> bool:
    """Whether ``layer``'s name says vessel ground truth outright ("truth", "gt" or a
    word of :data:`VESSEL_WORDS`), rather than only mask or labels ("seg", "mask")."""
    name, words = _name_words(layer)
    return (
        "truth" in name
        or any(w in ("gt", "groundtruth") for w in words)
        or any(w.startswith(VESSEL_WORDS) for w in words)
    )


def _shaped_like_region(layer: Any) -> bool:
    """Whether a layer not named for vessels (:func:`_named_for_vessels`) holds a mask
    shaped like an organ or region rather than tubes
    (:func:`napari_topo.topology.shape.looks_like_region`: a strided sample of about
    2**20 voxels of a numpy array, or of a multiscale layer's coarsest level, with that
    level's voxel size; about 0.1 s on a CT's labels). A lazy single-level array (dask,
    zarr) is not read for this on the GUI thread: it is never left out. The answer is
    kept per layer until its data is replaced (one that could not tell, an empty layer
    the user may paint, is asked again). A LiTS-style ``segmentation-0`` (liver and
    tumour) was taken as the ground truth by its name ("seg"), and *Live* scored the
    vessels against the liver."""
    if _named_for_vessels(layer):
        return False
    multiscale = getattr(layer, "multiscale", False)
    data = layer.data[-1] if multiscale else layer.data
    if not multiscale and not isinstance(data, np.ndarray):
        return False
    known = _REGION_SHAPE.get(layer)
    if known is not None and known[0]() is data:
        return known[1]
    full = layer.data[0] if multiscale else data
    ndim = len(data.shape)
    # the coarse level's voxel size: level 0's scale times its downsampling per axis
    spacing = np.asarray(layer.scale, dtype=float)[-ndim:] * np.divide(
        [int(n) for n in full.shape[-ndim:]], [max(int(n), 1) for n in data.shape]
    )
    try:
        ratio = thickness_ratio(data, spacing)
    except ValueError:  # not 2D/3D: the pair check says so when it is picked
        return False
    if ratio is None:  # too little to tell (yet): not kept
        return False
    region = ratio > REGION_RATIO
    try:
        _REGION_SHAPE[layer] = (weakref.ref(data), region)
    except TypeError:  # not weak-referenceable: asked again next time
        pass
    return region


def _holds_something(layer: Any) -> bool:
    """Whether a layer's data holds a non-zero voxel (a new, empty Labels layer does
    not): a whole pass over a numpy array (about 20 ms on a CT's labels; a stride would
    miss thin vessels), or over a multiscale layer's coarsest level; lazy data is
    assumed to."""
    data = layer.data[-1] if getattr(layer, "multiscale", False) else layer.data
    if not isinstance(data, np.ndarray):
        return True
    return bool(data.any())


def _named_like_truth(layer: Any) -> bool:
    """Whether ``layer``'s name or kind says vessel ground truth (:data:`TRUTH_WORDS`;
    one of the plugin's trees or masks, such as the sample's ground truth)."""
    name, words = _name_words(layer)
    if "truth" in name or any(w.startswith(TRUTH_WORDS) for w in words):
        return True
    return plugin_info(layer).get("kind") in ("trees", "mask")


def _inside_names(layers) -> set[str]:
    """Names of the layers the Segment dock used as *Inside* (a region of interest) for
    the results among ``layers``: never a default ground truth."""
    names = (plugin_info(layer).get("inside") for layer in layers)
    return {name for name in names if isinstance(name, str)}


def _default_rank(layer: Any, role: str) -> tuple:
    """Sort key of a layer as the default ``role`` ("prediction" or "truth"); higher wins.

    Only called on the right side of the split that :meth:`MetricsWidget._rebuild_choices`
    makes first: layers the plugin made (:func:`~napari_topo.widgets._common.made_by_plugin`)
    are predictions, every other layer a reference. A prediction is preferably the vessel
    trees the Segment widget made (tree accuracy comes with them), then its other
    Labels; a reference is preferably named like a ground truth ("ground truth",
    "truth", "gt"), a Labels layer (or integer/bool image), the trees of a ground truth.
    A float image (an intensity volume) ranks last for both.
    """
    name = str(getattr(layer, "name", "")).lower()
    words = name.replace("_", " ").replace("-", " ").split()
    truth = "truth" in name or "gt" in words or "groundtruth" in words
    md = getattr(layer, "metadata", None)
    info = md.get(METADATA_KEY) if isinstance(md, Mapping) else None
    info = info if isinstance(info, Mapping) else {}
    trees = info.get("kind") == "trees"
    labels = isinstance(layer, Labels) or np.dtype(getattr(layer, "dtype", "f")).kind in "biu"
    if role == "truth":
        return (labels, truth, trees)
    return (labels, trees, info.get("widget") == "segment")


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
        require_viewer(napari_viewer, "MetricsWidget")
        finish_workers_at_exit()
        self._viewer = napari_viewer
        self._worker = None
        self._job: _Job | None = None
        self._result: dict[str, Any] | None = None
        # Live state. Only the GUI thread reads or writes these attributes; a worker gets
        # the IncrementalMetrics object and a batch, and nobody else touches that object
        # while the (single) fast worker runs.
        self._live: IncrementalMetrics | None = None
        self._fast_worker = None
        self._errors_worker = None
        self._pending: list[tuple[str, tuple[np.ndarray, ...], Any]] = []
        self._generation = 0  # bumped by every edit of either layer
        self._fast_generation = -1  # edits included in the fast rows shown
        self._slow_generation = -1  # edits included in the slow rows shown
        self._settle_again = False
        self._building_live = False  # the running full recompute builds self._live
        self._verify = False  # a refresh may hide an unannounced edit (undo/redo)
        #: each chosen layer's undo/redo history lengths when last seen: a refresh that
        #: changed them was an undo or redo
        self._history_seen: dict[str, tuple[int, int] | None] = {}
        self._skeleton_cache = SkeletonCache()  # used by one background worker at a time
        self._updated_at: float | None = None
        self._fast_seconds: float | None = None
        self._stale: set[str] = set()
        self._watched: list[tuple[Any, Any]] = []  # (emitter, callback) pairs
        self._error_targets: list[tuple[float, ...]] = []
        # Pickers still showing a layer the widget chose (not the user): re-chosen when
        # better candidates appear (e.g. the Segment widget's trees layer).
        self._auto_pick = [True, True]
        self._choosing = False
        self._watched_key: tuple | None = None

        self.prediction_picker = ComboBox(
            label="Prediction",
            choices=self._layer_choices,
            tooltip="Segmentation to evaluate (Labels, or an Image holding a binary mask). "
            "Picked by itself only among the layers the plugin made (Segment's trees).",
        )
        self.ground_truth_picker = ComboBox(
            label="Ground truth",
            choices=self._layer_choices,
            tooltip=GROUND_TRUTH_TOOLTIP,
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

        self.status_label = QLabel(
            "Pick a prediction and a ground truth; with Live on the table fills by itself."
        )
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        #: the picked pair cannot be compared (shapes, same layer...): no empty table
        self._pair_problem = False
        #: the ground truth's voxels a Region 'box' prediction covers (None: all)
        self._box: tuple[slice, ...] | None = None
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Metric", "Value"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        # Compact rows, and the table exactly as tall as its rows: every metric shows
        # at once and the table never scrolls on its own (the dock scrolls instead).
        rows = self.table.verticalHeader()
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setMinimumSectionSize(1)
        rows.setDefaultSectionSize(self.table.fontMetrics().height() + 4)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._fit_table()

        buttons = QHBoxLayout()
        buttons.addWidget(self.compute_button)
        buttons.addWidget(self.export_button)

        self.live_checkbox = QCheckBox("Live")
        self.live_checkbox.setChecked(True)
        self.live_checkbox.setToolTip(
            "Update the table by itself when either layer is edited: the fast metrics "
            "within a stroke, clDice/HD95 after a short pause, all in the background."
        )
        self.live_checkbox.toggled.connect(self._on_live_toggled)
        self.freshness_label = QLabel("")
        self.freshness_label.setWordWrap(True)
        live_row = QHBoxLayout()
        live_row.addWidget(self.live_checkbox)
        live_row.addWidget(self.freshness_label, stretch=1)

        self.errors_button = QPushButton("Show errors")
        self.errors_button.setToolTip(
            "Add Points layers on the ground-truth centerline the prediction misses (red: "
            "broken vessels) and on the predicted centerline outside the ground truth "
            "(orange: false bridges); click an entry of the list to go there."
        )
        self.errors_button.clicked.connect(lambda: self.show_errors())
        buttons.addWidget(self.errors_button)
        self.errors_list = QListWidget()
        self.errors_list.setVisible(False)
        self.errors_list.setMaximumHeight(120)
        self.errors_list.itemClicked.connect(self._on_error_clicked)
        self.errors_list.itemActivated.connect(self._on_error_clicked)

        self._settle_timer = QTimer(self)
        self._settle_timer.setSingleShot(True)
        self._settle_timer.setInterval(DEBOUNCE_MS)
        self._settle_timer.timeout.connect(self._on_settled)
        self._tick_timer = QTimer(self)
        self._tick_timer.setInterval(500)
        self._tick_timer.timeout.connect(self._update_freshness)

        layout = QVBoxLayout()
        layout.addWidget(self._pickers.native)
        layout.addLayout(buttons)
        layout.addWidget(self.status_label)
        layout.addLayout(live_row)
        layout.addWidget(self.table)
        layout.addWidget(self.errors_list)
        layout.addStretch(1)
        self.scroll_area = scrolling_body(self, layout, share=DOCK_SHARE)
        # the headline rows stay in view when the column is shared (the Tree editor,
        # while editing, took all but the table's header at 1366 x 768)
        self.scroll_area.dock_floor = self._headline_floor

        follow_layer_list(self, napari_viewer, self._refresh_choices)
        install_view_defaults(napari_viewer, self)
        self.destroyed.connect(partial(_disconnect_all, self._watched))
        self.prediction_picker.changed.connect(self._watch_layers)
        self.ground_truth_picker.changed.connect(self._watch_layers)
        self.prediction_picker.changed.connect(partial(self._on_user_pick, 0))
        self.ground_truth_picker.changed.connect(partial(self._on_user_pick, 1))
        self.ground_truth_picker.changed.connect(lambda *_: self._fit_table())
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

        With *Live* on, the worker also builds the incremental state that later edits
        update.

        Returns
        -------
        bool
            True if a worker was started; False if a computation is already running or
            the input was rejected (the reason is in the status label and a
            notification).
        """
        return self._start(user=True)

    def _start(self, *, user: bool) -> bool:
        if self.is_running:
            return False
        prediction = self.prediction_picker.value
        ground_truth = self.ground_truth_picker.value
        try:
            notes = _validate_pair(prediction, ground_truth)
        except ValueError as exc:
            self._clear_results()
            self._pair_problem = True
            self._fit_table()  # no empty table under the message
            if user:
                self._report(str(exc), error=True)
            else:  # an automatic start on an incomplete pair: say it, no pop-up
                hint = self._region_hint() if ground_truth is None else ""
                self._set_status(one_line(str(exc)) + (" " + hint if hint else ""))
            return False
        if self._pair_problem:
            self._pair_problem = False
            self._fit_table()

        pred_data = full_resolution(prediction)
        gt_data = full_resolution(ground_truth)
        # a Region 'box' result: the truth inside its box (paint on the truth is shifted
        # into the box, or dropped outside it: _on_paint)
        self._box = _pair_box(prediction, ground_truth)
        if self._box is not None:
            gt_data = gt_data[self._box]
        shape = tuple(int(s) for s in gt_data.shape)
        spacing = tuple(float(s) for s in np.asarray(ground_truth.scale)[-len(shape) :])
        live = self.live_checkbox.isChecked()
        build_live = live and (user or self._live is None)
        self._job = _Job(
            prediction=prediction.name,
            ground_truth=ground_truth.name,
            shape=shape,
            spacing=spacing,
            notes=tuple(notes),
            user=user,
            generation=self._generation,
            pair=self._watched_key,
            unit=_distance_unit(ground_truth, spacing),
        )
        self._building_live = build_live
        self._verify = False
        if build_live:
            # The snapshot below already holds every queued edit.
            self._live = None
            self._pending.clear()
        if user:
            self._clear_results()
        if self._result is None:
            self._set_status(
                f"Computing metrics of '{prediction.name}' against '{ground_truth.name}'…"
            )
        self.compute_button.setEnabled(False)
        self.compute_button.setText("Computing…")
        # Snapshot on the GUI thread: the user may keep painting while the worker runs,
        # and the incremental state must match the edits queued after this point.
        snapshot = (np.array(pred_data, copy=True), np.array(gt_data, copy=True))
        if not user and not build_live and self._result is not None:
            # Live background recompute: the fast rows are kept current incrementally.
            body = (_run_slow_metrics, *snapshot, spacing, self._generation)
            body += (self._skeleton_cache,)
        else:
            body = (_run_compute_metrics, *snapshot, spacing, build_live, self._generation)
        self._worker = create_worker(
            *body,
            _connect={
                "returned": self._on_returned,
                "errored": self._on_errored,
                "finished": self._on_finished,
            },
            _start_thread=True,
        )
        self._update_freshness()
        return True

    def show_errors(self, jump: bool = False) -> bool:
        """Add (or replace) Points layers on the centerline errors.

        Runs :func:`napari_topo.topology.errors.topology_errors` in a worker. The layers
        are named ``"<prediction> missed centerline"`` (red) and ``"<prediction> false
        centerline"`` (orange) and use the ground truth's scale and translate; the list
        under the table holds one entry per error piece (largest first); clicking an
        entry goes there. The camera and the sliders stay where they are unless ``jump``
        is True (then the view goes to the first error).

        Returns
        -------
        bool
            True if a worker was started.
        """
        if self._errors_worker is not None:
            return False
        prediction = self.prediction_picker.value
        ground_truth = self.ground_truth_picker.value
        try:
            _validate_pair(prediction, ground_truth)
        except ValueError as exc:
            self._report(str(exc), error=True)
            return False
        gt_data = full_resolution(ground_truth)
        nd = gt_data.ndim
        spacing = tuple(float(v) for v in np.asarray(ground_truth.scale)[-nd:])
        translate = np.asarray(ground_truth.translate, dtype=float)[-nd:]
        box = _pair_box(prediction, ground_truth)
        if box is not None:  # the errors are found, and placed, inside the box
            gt_data = gt_data[box]
            translate = translate + np.asarray([b.start for b in box]) * np.asarray(spacing)
        target = {
            "name": prediction.name,
            "scale": spacing,
            "translate": tuple(float(v) for v in translate),
            # the list names voxels of the ground truth (not of the box they were found in)
            "offset": (0,) * nd if box is None else tuple(b.start for b in box),
            "units": None
            if getattr(ground_truth, "units", None) is None
            else tuple(ground_truth.units)[-nd:],
        }
        self.errors_button.setEnabled(False)
        self.errors_button.setText("Finding errors…")
        self._errors_worker = create_worker(
            _run_topology_errors,
            np.array(full_resolution(prediction), copy=True),
            np.array(gt_data, copy=True),
            spacing,
            _connect={
                "returned": partial(self._on_errors_returned, target, jump),
                "finished": self._on_errors_finished,
            },
            _start_thread=True,
        )
        return True

    def jump_to(self, world: Sequence[float]) -> None:
        """Centre the camera on a point in world coordinates and step the sliders there."""
        world = [float(v) for v in world]
        ndim = self._viewer.dims.ndim
        axes = list(range(ndim))[-len(world) :]
        self._viewer.dims.set_point(axes, world[-len(axes) :])
        displayed = list(self._viewer.dims.displayed)
        offset = ndim - len(world)
        center = [world[a - offset] for a in displayed if a - offset >= 0]
        if len(center) == len(displayed):
            # napari 0.9 moved the camera to viewer.scene (viewer.camera is deprecated).
            scene = getattr(self._viewer, "scene", None)
            camera = scene.camera if scene is not None else self._viewer.camera
            camera.center = center

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
            If the extension is not ``.csv`` or ``.json``, the folder does not exist or
            the file cannot be written (one line saying what to do).
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
        path = check_folder(path, action="export to")
        try:
            self._write_export(path, suffix)
        except OSError as exc:
            raise ValueError(os_error_message(exc, path, action="export to")) from exc
        return path

    def _write_export(self, path: Path, suffix: str) -> None:
        metrics = dict(_table_order(self._result["metrics"]))  # as the table shows them
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

    # ---- layer pickers ---------------------------------------------------------------

    def _layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        """'none' and the Labels and Image layers, in layer-list order."""
        return [(_NONE, None)] + [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Labels | Image)
        ]

    def _on_user_pick(self, index: int, _value: Any = None) -> None:
        if not self._choosing:
            self._auto_pick[index] = False

    def _refresh_choices(self, _event: Any = None) -> None:
        """Rebuild both pickers, keeping the chosen layers when they still exist."""
        self._choosing = True
        try:
            self._rebuild_choices()
        finally:
            self._choosing = False

    def _rebuild_choices(self) -> None:
        previous = [self.prediction_picker.value, self.ground_truth_picker.value]
        for picker in (self.prediction_picker, self.ground_truth_picker):
            rebuild_picker(picker)
        # Defaults, for a picker the user has not set. Layers the plugin made are
        # predictions and every other layer a reference (nothing is compared with itself
        # or with another reference by default): the prediction is the best-ranked layer
        # the plugin made (:func:`_default_rank`: Segment's trees first) or none; the
        # ground truth the best-ranked other layer (one named like a ground truth first:
        # :func:`_named_like_truth`; never the region Segment ran *Inside*, one named
        # like an organ or region, :func:`_named_like_region`, nor one whose name does not
        # say vessels and whose mask is shaped like a region, :func:`_shaped_like_region`),
        # of the prediction's shape if any is. Any layer can still be picked by hand.
        choices = [layer for _, layer in self._layer_choices() if layer is not None]
        predictions = [c for c in choices if made_by_plugin(c)]
        # a default reference is not the region Segment ran Inside, nor named like an
        # organ or region (a liver mask); one named like a ground truth comes first
        inside = _inside_names(predictions)
        candidates = [
            c
            for c in choices
            if not made_by_plugin(c)
            and _holds_labels(c)
            and c.name not in inside
            and not _named_like_region(c)
        ]
        shaped = [c for c in candidates if _shaped_like_region(c)]
        references = [c for c in candidates if not any(c is r for r in shaped)]
        self._region_shaped = [c.name for c in shaped]
        if previous[0] is None or self._auto_pick[0]:
            best = max(predictions, key=partial(_default_rank, role="prediction"), default=None)
            _choose(self.prediction_picker, best)
        if previous[1] is None or self._auto_pick[1]:
            pred = self.prediction_picker.value
            shape = tuple(full_resolution(pred).shape) if pred is not None else None
            refs = [r for r in references if not same_layer(r, pred)]

            def rank(layer: Any) -> tuple:
                fits = shape is not None and tuple(full_resolution(layer).shape) == shape
                return (
                    fits,
                    _named_like_truth(layer),
                    _named_for_vessels(layer),  # "vessels" above "Labels" or "mask"
                    _holds_something(layer),  # a new empty Labels layer last
                    *_default_rank(layer, "truth"),
                )

            _choose(self.ground_truth_picker, max(refs, key=rank, default=None))
        hint = self._region_hint()
        # the reason stays in the picker's tooltip once another layer is picked
        self.ground_truth_picker.tooltip = GROUND_TRUTH_TOOLTIP + (f"\n\n{hint}" if hint else "")
        if hint and self.ground_truth_picker.value is None and self._result is None:
            self._set_status(hint)
        self._fit_table()

    def _region_hint(self) -> str:
        """Why a mask the user may expect is not the default ground truth: its shape."""
        names = getattr(self, "_region_shaped", [])
        if not names:
            return ""
        listed = ", ".join(f"'{n}'" for n in names)
        if len(names) == 1:
            return (
                f"{listed} looks like an organ or region mask, not vessels, so it is not "
                "picked as the ground truth by default; pick it if it is one."
            )
        return (
            f"{listed} look like organ or region masks, not vessels, so they are not "
            "picked as the ground truth by default; pick one if it is one."
        )

    # ---- worker callbacks (GUI thread) -----------------------------------------------

    def _on_returned(self, outcome: _Outcome) -> None:
        job = self._job
        if job is not None and job.pair != self._watched_key:
            return  # the pickers changed meanwhile; the new pair is computed next
        if outcome.error is not None or job is None:
            message = outcome.error or "Computing metrics failed."
            if self.table.rowCount() == 0:  # no empty table under the message
                self._pair_problem = True
                self._fit_table()
            if job is not None and not job.user:
                self._set_status("Error: " + one_line(message))
                return
            self._report(message, error=True)
            return
        if outcome.slow_only:
            # Live background recompute: new slow rows, the fast rows stay as they are.
            metrics = dict(self._result["metrics"]) if self._result else {}
            metrics.pop("Tree accuracy", None)
            metrics.update(outcome.metrics)
            if self._live_out_of_sync(outcome):
                # An edit the paint events did not announce (napari's undo/redo emit
                # none): rebuild the incremental state from the layers.
                _LOG.info("live metrics out of sync with the layers; rebuilding")
                self._live = None
                self._settle_timer.start()
        else:
            metrics = dict(outcome.metrics)
            if outcome.live is not None:
                self._live = outcome.live
            elif self._result and self._fast_generation > outcome.generation:
                # Keep the fast rows: the incremental ones are newer than this snapshot.
                for key in FAST_METRICS:
                    if key in self._result["metrics"]:
                        metrics[key] = self._result["metrics"][key]
            self._fast_generation = max(self._fast_generation, outcome.generation)
        self._slow_generation = outcome.generation
        self._result = {
            "prediction": job.prediction,
            "ground_truth": job.ground_truth,
            "shape": job.shape,
            "spacing": job.spacing,
            "unit": job.unit,
            "seconds": outcome.seconds,
            "metrics": metrics,
        }
        if outcome.descriptions:
            self._descriptions = dict(outcome.descriptions)
        self._updated_at = time.monotonic()
        self._refresh_stale()
        self._fill_table(metrics, outcome.descriptions)
        self.export_button.setEnabled(bool(metrics))

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
            if job.user:  # live recomputes do not repeat the notifications
                for warning in warnings:
                    show_warning(warning)
            message += " Warning: " + " ".join(warnings)
        self._set_status(message)
        self._update_freshness()

    def _on_errored(self, exc: BaseException) -> None:
        # The worker body catches Exceptions itself; this is a last resort.
        self._report(f"Computing metrics failed ({type(exc).__name__}: {exc}).", error=True)

    def _on_finished(self) -> None:
        self._worker = None
        self._building_live = False
        self.compute_button.setEnabled(True)
        self.compute_button.setText("Compute")
        if self._settle_again:
            self._settle_again = False
            self._settle_timer.start()
        self._kick_fast()
        self._update_freshness()

    # ---- live updates (GUI thread) ---------------------------------------------------

    def _live_out_of_sync(self, outcome: _Outcome) -> bool:
        """Whether the incremental masks differ from the arrays of a settled snapshot.

        Checked only when nothing has changed since the snapshot and the fast worker is
        idle (it owns the incremental state while it runs): two array comparisons.
        """
        live = self._live
        if (
            live is None
            or not outcome.snapshot
            or outcome.generation != self._generation
            or self._fast_generation != self._generation
            or self._pending
            or self._fast_worker is not None
        ):
            return False
        pred, gt = outcome.snapshot
        return not (np.array_equal(live.pred, pred > 0) and np.array_equal(live.gt, gt > 0))

    def _watch_layers(self, *_: Any) -> None:
        """Listen to edits of the two chosen layers (and only those)."""
        _disconnect_all(self._watched)
        chosen = (
            ("pred", self.prediction_picker.value),
            ("gt", self.ground_truth_picker.value),
        )
        key = tuple(id(unwrap(layer)) if layer is not None else None for _, layer in chosen)
        if key != self._watched_key:
            self._watched_key = key
            self._live = None  # the baseline belongs to other layers
            self._pending.clear()
            self._clear_results()
            # A new pair: with Live on it is computed at once (after the debounce, so
            # that picking both layers one after the other starts one computation).
            if self.live_checkbox.isChecked() and None not in key and key[0] != key[1]:
                self._settle_timer.start()
        for which, layer in chosen:
            if layer is None:
                continue
            paint = getattr(layer.events, "paint", None)
            if paint is not None:
                callback = partial(self._on_paint, which)
                paint.connect(callback)
                self._watched.append((paint, callback))
            callback = partial(self._on_data_replaced, which)
            layer.events.data.connect(callback)
            self._watched.append((layer.events.data, callback))
            # Undo/redo write the array and refresh the layer without a paint event;
            # a refresh (set_data) asks the next background recompute to check the
            # incremental state against the layers (cheap when nothing changed).
            set_data = getattr(layer.events, "set_data", None)
            if set_data is not None:
                self._history_seen[which] = _history_signature(layer)
                callback = partial(self._on_refreshed, which)
                set_data.connect(callback)
                self._watched.append((set_data, callback))

    def _chosen(self, which: str) -> Any:
        """The chosen layer for ``which`` ("pred" or "gt")."""
        return self.prediction_picker.value if which == "pred" else self.ground_truth_picker.value

    def _on_paint(self, which: str, event: Any) -> None:
        """A stroke, fill or ``data_setitem`` changed ``which`` layer."""
        layer = self._chosen(which)
        # napari emits the paint event as it appends the edit to the undo history
        self._history_seen[which] = _history_signature(layer)
        live = self.live_checkbox.isChecked()
        changes = None  # None: an atom we do not understand
        if live:  # the event is read once, before anything is marked
            try:
                atoms = getattr(event, "value", None)
                changes = paint_changes(atoms, full_resolution(layer).shape)
            except Exception:  # noqa: BLE001 - recompute all, below
                _LOG.exception("could not read a paint event; recomputing everything")
            if which == "gt" and self._box is not None and changes is not None:
                changes = _into_box(changes, self._box)
                if not changes:  # every voxel painted lies outside the scored box
                    return
        self._generation += 1
        if not live:
            self._live = None  # the baseline no longer matches; rebuilt when Live is on
            self._pending.clear()
            self._mark_stale(set(self._result["metrics"]) if self._result else set())
            return
        if changes is None:
            self._live = None
            changes = []
        self._pending.extend((which, idx, values) for idx, values in changes)
        self._mark_stale(set(self._result["metrics"]) if self._result else set())
        self._kick_fast()
        self._settle_timer.start()  # (re)start the debounce of the slow metrics

    def _on_refreshed(self, which: str, _event: Any = None) -> None:
        """A chosen layer was redrawn: after an undo or redo (which change the array
        without a paint event) every row is stale until recomputed; after any other
        refresh the next background recompute checks the incremental state."""
        layer = self._chosen(which)
        signature, seen = _history_signature(layer), self._history_seen.get(which)
        self._history_seen[which] = signature
        # An undo moves an item from the undo to the redo history, a redo back; the
        # first dab of a new stroke only empties the redo history (its paint event
        # comes when the stroke ends).
        undone = (
            signature is not None
            and seen is not None
            and (signature[0] != seen[0] or signature[1] > seen[1])
        )
        if undone:
            # an edit whose voxels are not known here: recomputed from scratch, as for
            # a new array (the incremental state no longer matches the layers)
            self._on_data_replaced(which)
            self._update_freshness()  # "recomputing…" now that the debounce runs
        elif self.live_checkbox.isChecked() and self._live is not None:
            self._verify = True
            self._settle_timer.start()

    def _on_data_replaced(self, which: str, _event: Any = None) -> None:
        """A new array in a chosen layer: everything is recomputed from scratch."""
        self._generation += 1
        self._live = None
        self._pending.clear()
        self._mark_stale(set(self._result["metrics"]) if self._result else set())
        if self.live_checkbox.isChecked():
            self._settle_timer.start()

    def _on_live_toggled(self, on: bool) -> None:
        if on:
            if self._result is None or (
                self._live is None or self._slow_generation < self._generation
            ):
                self._settle_timer.start()
        else:
            self._settle_timer.stop()
        self._update_freshness()

    def _kick_fast(self) -> None:
        """Apply queued edits in the fast worker (one at a time; edits coalesce)."""
        if self._fast_worker is not None or not self._pending:
            return
        if self._live is None:
            if self._building_live:
                return  # applied when the incremental state arrives
            # No incremental state yet: the debounced full recompute builds it.
            self._pending.clear()
            if self.live_checkbox.isChecked():
                self._settle_timer.start()
            return
        batch, self._pending = self._pending, []
        self._fast_worker = create_worker(
            _run_live_updates,
            self._live,
            batch,
            self._generation,
            _connect={"returned": self._on_fast_returned, "finished": self._on_fast_finished},
            _start_thread=True,
        )

    def _on_fast_returned(self, result: dict) -> None:
        if result["live"] is not self._live or self._result is None:
            return  # replaced meanwhile by a full recompute
        if result["error"] is not None:
            self._live = None
            self._settle_timer.start()
            return
        self._fast_generation = result["generation"]
        self._fast_seconds = result["seconds"]
        self._result["metrics"].update(result["values"])
        self._updated_at = time.monotonic()
        self._refresh_stale()
        self._fill_table(self._result["metrics"], getattr(self, "_descriptions", {}))
        self._update_freshness()

    def _on_fast_finished(self) -> None:
        self._fast_worker = None
        self._kick_fast()

    def _on_settled(self) -> None:
        """The layers have not changed for DEBOUNCE_MS: recompute in the background."""
        if not self.live_checkbox.isChecked():
            return
        if self.is_running:
            self._settle_again = True
            return
        if (
            self._live is not None
            and self._slow_generation >= self._generation
            and not self._verify
        ):
            return  # nothing new
        self._start(user=False)

    def _refresh_stale(self) -> None:
        if not self._result:
            self._stale = set()
            return
        keys = set(self._result["metrics"])
        stale = set()
        if self._fast_generation < self._generation:
            stale |= keys & set(FAST_METRICS)
        if self._slow_generation < self._generation:
            stale |= keys - set(FAST_METRICS)
        self._stale = stale

    def _mark_stale(self, keys: set[str]) -> None:
        self._stale = set(keys)
        if self._result:
            self._fill_table(self._result["metrics"], getattr(self, "_descriptions", {}))
        self._update_freshness()

    @property
    def stale_metrics(self) -> set[str]:
        """Names of the rows whose value predates the latest edit (shown greyed)."""
        return set(self._stale)

    def _update_freshness(self) -> None:
        live = self.live_checkbox.isChecked()
        if not self._result:
            self.freshness_label.setText("")
            self._tick_timer.stop()
            return
        if not live:
            self._tick_timer.stop()
            text = "Live off"
            if self._stale:
                text += ": the layers changed; press Compute."
            self.freshness_label.setText(text)
            return
        if not self._tick_timer.isActive():
            self._tick_timer.start()
        parts = []
        if self._updated_at is not None:
            age = time.monotonic() - self._updated_at
            parts.append(f"updated {age:.1f} s ago")
        if self._fast_seconds is not None:
            parts.append(f"last stroke {1000 * self._fast_seconds:.0f} ms")
        slow_stale = sorted(k for k in self._stale if k not in FAST_METRICS)
        if slow_stale:
            # a count, the names in the tooltip (the greyed rows show which): the names
            # wrapped the line, pushed the table down and Tree accuracy out of view
            busy = self.is_running or self._settle_timer.isActive()
            rows = f"{len(slow_stale)} row{'s' if len(slow_stale) != 1 else ''}"
            parts.append(rows + (" recomputing…" if busy else " stale"))
        elif self._stale:
            parts.append("updating…")
        self.freshness_label.setText("Live: " + "; ".join(parts) if parts else "Live")
        self.freshness_label.setToolTip(
            ("Greyed until recomputed: " + ", ".join(slow_stale)) if slow_stale else ""
        )

    # ---- errors (GUI thread) ---------------------------------------------------------

    def _on_errors_returned(self, target: dict, jump: bool, errors: dict) -> None:
        if "error" in errors:
            self._report(errors["error"], error=True)
            return
        layers = self._viewer.layers
        for data, meta, _ in error_layer_tuples(
            errors,
            target["name"],
            scale=target["scale"],
            translate=target["translate"],
            units=target["units"],
        ):
            name = meta.pop("name")
            if name in layers:
                layers.remove(name)
            self._viewer.add_points(data, name=name, **meta)
        scale = np.asarray(target["scale"])
        translate = np.asarray(target["translate"])
        self.errors_list.clear()
        self._error_targets = []
        for kind, label in (("missed", "missed (break)"), ("false", "false (bridge/spur)")):
            for loc, size in zip(errors[f"{kind}_locations"], errors[f"{kind}_sizes"], strict=True):
                world = tuple(float(v) for v in np.asarray(loc) * scale + translate)
                at = tuple(int(v) + int(o) for v, o in zip(loc, target["offset"], strict=True))
                text = f"{label}: {int(size)} voxels at {at}"
                item = QListWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, len(self._error_targets))
                item.setForeground(QBrush(QColor(_ERROR_TEXT_COLORS[kind])))
                self.errors_list.addItem(item)
                self._error_targets.append(world)
        n_missed, n_false = len(errors["missed_locations"]), len(errors["false_locations"])
        self.errors_list.setVisible(bool(self._error_targets))
        self._set_status(
            f"Topology errors of '{target['name']}': {n_missed} missed centerline "
            f"piece(s) ({len(errors['missed_centerline'])} voxels), {n_false} false "
            f"piece(s) ({len(errors['false_centerline'])} voxels)."
        )
        if self._error_targets and jump:
            self.errors_list.setCurrentRow(0)
            self.jump_to(self._error_targets[0])

    def _on_errors_finished(self) -> None:
        self._errors_worker = None
        self.errors_button.setEnabled(True)
        self.errors_button.setText("Show errors")

    def _on_error_clicked(self, item: QListWidgetItem) -> None:
        index = item.data(Qt.ItemDataRole.UserRole)
        if index is not None and 0 <= int(index) < len(self._error_targets):
            self.jump_to(self._error_targets[int(index)])

    # ---- helpers ---------------------------------------------------------------------

    def _fill_table(self, metrics: Mapping[str, Any], descriptions: Mapping[str, str]) -> None:
        self.table.setRowCount(len(metrics))
        unit = (self._result or {}).get("unit")
        for row, (name, value) in enumerate(_table_order(metrics)):
            description = descriptions.get(name, "")
            shown = f"{name} ({unit})" if name in DISTANCE_METRICS and unit else str(name)
            name_item = QTableWidgetItem(shown)
            value_item = QTableWidgetItem(format_metric_value(value))
            value_item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            name_item.setToolTip(description)
            exact = f"Exact value: {_as_float(value)!r}"
            tip = f"{description}\n{exact}" if description else exact
            if name in self._stale:
                tip += "\n(stale: the layers changed since; being recomputed)"
                for item in (name_item, value_item):
                    item.setForeground(QBrush(_STALE_BRUSH))
            value_item.setToolTip(tip)
            self.table.setItem(row, 0, name_item)
            self.table.setItem(row, 1, value_item)
        self.table.resizeColumnToContents(1)
        self._fit_table()

    def _headline_floor(self) -> int:
        """Pixels of the dock's body, from its top, down to the last headline row of the
        table (0 while the table shows no rows): what sharing a dock column leaves it."""
        if not self.table.rowCount() or not self.table.isVisible():
            return 0
        shown = (self._result or {}).get("metrics", {})
        n = sum(name in shown for name in HEADLINE_METRICS)  # the table's first rows
        header = self.table.horizontalHeader().height()
        row = self.table.verticalHeader().defaultSectionSize()
        return self.table.geometry().top() + self.table.frameWidth() + header + max(n, 1) * row

    def _fit_table(self) -> None:
        """Make the table as tall as its rows (as many as a full table has while
        empty, so that the dock does not jump when the first results arrive); hidden
        while empty with no ground truth to pick or a pair that cannot be compared (it
        would only take room from the docks below, which at 1366 x 768 squeezed
        Segment, or sit empty under the message)."""
        empty = self.table.rowCount() == 0
        nothing = self.ground_truth_picker.value is None or self._pair_problem
        shown = not (empty and nothing)
        state = (shown, empty)
        if state != getattr(self, "_table_state", state) and shown:
            # the table appeared, or got its first rows, while the dock stayed shown:
            # no Show event shares the column, and the dock kept the height of its
            # header rows, the table out of sight (a newcomer at 1600 x 1000 with the
            # Segment and Tree editor docks open)
            reshare_column(self)
        self._table_state = state
        self.table.setVisible(shown)
        n = self.table.rowCount() or len(METRIC_DESCRIPTIONS)
        frame = 2 * self.table.frameWidth()
        header = self.table.horizontalHeader().sizeHint().height()
        self.table.setFixedHeight(
            header + n * self.table.verticalHeader().defaultSectionSize() + frame
        )

    def _clear_results(self) -> None:
        self._result = None
        self._stale = set()
        self.table.setRowCount(0)
        self.export_button.setEnabled(False)

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _report(self, message: str, *, error: bool) -> None:
        message = one_line(message)
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


def _choose(picker: Any, layer: Any) -> None:
    """Select ``layer`` (or the 'none' entry for None) in a layer picker."""
    if layer is None:
        if picker.value is not None:
            picker.value = None
        return
    select_layer(picker, layer)


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _json_number(value: Any) -> float | None:
    number = _as_float(value)
    return None if math.isnan(number) or math.isinf(number) else number
