"""Dock widget that segments a 3D image and shows its vessel trees.

The widget only collects choices and turns results into layers.  The work is
:func:`napari_topo.inference.pipeline.segment` (``predict`` followed by
:meth:`~napari_topo.analysis.VesselAnalysis.from_outputs`), run in a napari worker
thread: the worker body below is a plain generator that never touches Qt; it yields
``(done, total)`` tile counts that the GUI thread turns into a napari progress bar, and
returns an :class:`_Outcome`.

A result is applied whole or not at all. The worker also builds every result layer
(:meth:`VesselAnalysis.to_layers <napari_topo.analysis.VesselAnalysis.to_layers>`, then
:func:`napari_topo.layers.create_layers`, which makes napari layers without a viewer);
if any of them cannot be made, the run ends with a one-line error and no layer changes.
The GUI thread only hands the finished layers (or new data for layers it updates in
place) to the viewer, and undoes its own steps if that fails part-way. An empty result
(nothing above the threshold) is a valid result: empty layers and a message saying so.

Layers made here carry ``metadata["napari_topo"]`` with ``kind``, ``source`` (the image
layer's name), ``model``, ``analysis`` (the :class:`VesselAnalysis`; the tree editor
reads it from the trees layer) and ``input_policy`` (what the pipeline chose for the
input, :meth:`InputPolicy.to_dict <napari_topo.inference.intensity.InputPolicy.to_dict>`).
Running again on the same image updates those layers and never touches a layer the user
made.

The collapsible *Input* section only collects the input policy choices (modality,
vessel polarity, intensity window, zoom); :mod:`napari_topo.inference.intensity` decides
and the label under it shows what was chosen after a run.

*Region* picks the part of the image a run reads: the whole image, the canvas's field of
view (:func:`field_of_view_region`) or the bounding box of drawn rectangles
(:func:`box_region`), in level-0 voxels through the layers' ``world_to_data``. Only that
part is read, in the worker (a dask or zarr image: only the chunks that meet it), and the
results are placed on it (:func:`crop_placement`: the translate and Geometry of the
crop); their metadata gains ``region`` (``kind``, ``start``, ``stop``). A lazy image over
:data:`LAZY_LIMIT_BYTES` is not read whole (nor a region that large). A region's
probability over :data:`LAZY_RESULT_BYTES` is written to a temporary zarr folder
(``metadata["napari_topo"]["store"]``) and shown as a dask array.
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import sys
import threading
import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, PushButton, SpinBox
from napari.layers import Image, Labels, Layer, Points, Shapes
from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from napari_topo.geometry import (
    compare_layers,
    file_geometry,
    file_unit,
    layer_geometry,
    layer_length_unit,
    reader_flips,
    volume_refusal,
)
from napari_topo.inference.pipeline import Notice
from napari_topo.layers import METADATA_KEY, LayerBuildError, create_layers, layer_kind
from napari_topo.widgets._common import (
    _camera,
    coinciding_roots_message,
    count_duplicates,
    duplicate_roots_message,
    finish_workers_at_exit,
    follow_layer_list,
    full_resolution,
    install_view_defaults,
    is_roots_layer,
    made_by_plugin,
    one_line,
    placement,
    plugin_info,
    rebuild_picker,
    require_viewer,
    scrolling_body,
    select_layer,
    unwrap,
    voxel_size_unstated,
)

if TYPE_CHECKING:
    import napari

    from napari_topo.analysis import VesselAnalysis
    from napari_topo.models.registry import ModelCard

__all__ = [
    "BOX",
    "CPU_NOTE",
    "FIELD_OF_VIEW",
    "LAZY_LIMIT_BYTES",
    "LAZY_RESULT_BYTES",
    "OWNER",
    "PREDICTION_CACHE_BYTES",
    "REGIONS",
    "WHOLE",
    "Region",
    "SegmentWidget",
    "box_region",
    "crop_placement",
    "field_of_view_region",
    "intensity_reference",
    "is_lazy",
    "model_tooltip",
    "sources_in_voxels",
]

_LOG = logging.getLogger(__name__)
#: This dock's weight when a window's dock column is shared
#: (:func:`~napari_topo.widgets._common.share_dock_column`): its pickers,
#: Run, status and legend fit at 1366 x 768; it does not claim room a taller window adds.
DOCK_SHARE = 6

#: ``metadata["napari_topo"]["widget"]`` of the layers this widget made.
OWNER = "segment"


#: How a roots CSV's coordinates were read (:meth:`SegmentWidget.load_roots`).
_SOURCE_SPACE_WORDS = {
    "world": "world coordinates",
    "napari": "napari's Points CSV: the image layer's voxels",
    "voxel": "z, y, x voxel indices of the image file",
}
#: Shown under the device picker when the run will be on the CPU. Measured 2026-12-02 with
#: ``segment(test_set(n=1, shape=(128, 128, 128))[0].image, name, device="cpu")`` (the
#: whole pipeline, second call) on two CPU cores, torch 2.13: unet-dice 2.4 s (its network
#: 1.25 s, bfloat16), topnet 6.9 s (4.2 s, float32). A newcomer's CT took 130 s (about 45
#: such blocks) where the earlier "~20 s" had said ~15 min; the status now also says the
#: time left from the run's own pace.
CPU_NOTE = (
    "Running on CPU: ~2.5 s per 128³ voxels the model sees on 2 cores (TopNet ~7 s); "
    "the status says the time left."
)
#: Tooltip of the CPU note: what "the voxels the model sees" are.
CPU_NOTE_TIP = (
    "The model sees the volume on its own voxel grid: a CT is resampled to cubes of its "
    "finest spacing first (slices 2.8x the pixel size: 2.8x the voxels, 2.8x the time); "
    "a microscopy stack whose z step is over 3x its pixel size keeps its slices; an "
    "automatic zoom below 1 (thick vessels) shrinks it and adds runs at finer zooms. "
    "The Input section's line names the voxel size the model sees."
)
#: Layer-list events after which the layer pickers are rebuilt.
_NONE = "none"
#: The zoom box's value meaning "auto" (shown as "auto").
_AUTO_ZOOM = 0.0
#: What the Input label says before a run.
INPUT_NOTE = "Input: chosen from the image and the model card when you press Run."
#: Tooltip of the trees legend: where each branch's length, tortuosity and radius are.
BRANCH_MEASURES_TIP = (
    "Each branch's length, tortuosity and radius: select the '... branches' layer, then "
    "Layers > Metadata > Features table widget (sort, save as CSV). The CLI writes them "
    "to <name>_branches.csv."
)
#: Characters per line of a model's tooltip (Qt does not wrap plain-text tooltips).
TOOLTIP_WIDTH = 90
#: Kinds of a run's layers shown at once (with the image); the others are added hidden
#: (their eye in the layer list shows them).
SHOWN_KINDS = frozenset({"trees"})


# --------------------------------------------------------------------------------------
# Qt-free helpers
# --------------------------------------------------------------------------------------


def model_tooltip(card: ModelCard) -> str:
    """Tooltip of a model: its card in words, without the file facts.

    Parameters
    ----------
    card : ModelCard
        From :func:`napari_topo.models.registry.list_models`.

    Returns
    -------
    str
        The lines of :func:`napari_topo.models.registry.describe_card` (summary,
        architecture, input, mask threshold and smallest piece, training or fine-tuning
        with its held-out scores, synthetic test scores) but its recipe, card path,
        SHA-256 and description, which ``napari-topo models NAME`` prints; lines wrapped
        at :data:`TOOLTIP_WIDTH` characters.

    Examples
    --------
    >>> from napari_topo.models.registry import ModelCard
    >>> card = ModelCard(name="m", architecture="unet3d", summary="A U-Net",
    ...                  normalization={"method": "percentile"},
    ...                  metrics={"test": {"n_volumes": 4,
    ...                                    "summary": {"Dice": {"mean": 0.8612}}}})
    >>> print(model_tooltip(card))
    m: A U-Net
    architecture: unet3d, task segmentation
    input: any image scaled to its 0.5..99.5 percentiles, no CT window, no inversion; axes up
      to 3x coarser than the finest are resampled to the finest spacing, coarser ones keep
      their slices
    mask: vessel probability above 0.5; pieces under 32 voxels dropped
    test (4 synthetic volumes): Dice 0.861
    """
    import textwrap

    from napari_topo.models.registry import describe_card

    file_facts = ("recipe: ", "card: ", "weights sha256")
    lines = [ln for ln in describe_card(card) if not ln.startswith(file_facts)]
    if card.description and lines[-1] == card.description:
        lines.pop()
    # a plain-text tooltip is not wrapped by Qt: keep it narrower than a laptop screen
    return "\n".join(textwrap.fill(ln, TOOLTIP_WIDTH, subsequent_indent="  ") for ln in lines)


def sources_in_voxels(points: Any, image: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """Voxel coordinates in ``image`` of the points of a Points layer (world → data).

    Parameters
    ----------
    points : napari Points layer or None
        Tree roots; its points are taken to world coordinates with the layer's own
        transform, then to ``image``'s voxel coordinates with ``image.world_to_data``.
    image : napari Image layer
    shape : tuple of int
        The image's (z, y, x) shape, to check that each point lies inside it.

    Returns
    -------
    (K, ndim) ndarray of float or None
        None when ``points`` is None or has no points (roots are then detected).

    Raises
    ------
    ValueError
        If the points have fewer dimensions than the image, lie outside it or repeat
        one another (one line each, saying what to do).
    """
    if points is None or len(points.data) == 0:
        return None
    ndim = len(shape)
    if points.ndim < ndim:
        raise ValueError(
            f"source points layer '{points.name}' is {points.ndim}D; tree roots in a "
            f"{ndim}D image need {ndim}D points."
        )
    voxels = np.array(
        [np.asarray(image.world_to_data(points.data_to_world(p)))[-ndim:] for p in points.data],
        dtype=float,
    )
    inside = np.all((voxels >= -0.5) & (voxels <= np.asarray(shape) - 0.5), axis=1)
    if not inside.all():
        k = int(np.flatnonzero(~inside)[0])
        where = ", ".join(f"{v:.1f}" for v in voxels[k])
        raise ValueError(
            f"source point {k} of '{points.name}' lies outside image '{image.name}' "
            f"(voxel ({where}), shape {tuple(shape)}): move or delete it. Roots are "
            "in world coordinates, on the image as shown (its axes may be flipped from "
            "the file's); file voxel indices go to 'napari-topo segment --sources'."
        )
    duplicates = count_duplicates(voxels)
    if duplicates:
        raise ValueError(duplicate_roots_message(duplicates, len(voxels), points.name))
    return voxels


# --------------------------------------------------------------------------------------
# Regions: what part of the image a run reads (Qt-free)
# --------------------------------------------------------------------------------------

#: The Region picker's choices.
WHOLE, FIELD_OF_VIEW, BOX = "whole image", "field of view", "box"
REGIONS = (WHOLE, FIELD_OF_VIEW, BOX)
#: Most bytes of a lazy (dask, zarr, multiscale) image one run reads: "whole image" is
#: refused above it (and so is a field of view or box that holds more). The run holds
#: about 15 bytes per voxel besides the input (probability, mask, skeleton, trees, the
#: network's blending buffers), so 512 MiB of uint16 is already ~4 GiB of work.
LAZY_LIMIT_BYTES = 512 * 2**20
#: Most bytes of network output (probability; TopNet also centerness and an 8-channel
#: embedding) the dock keeps after a run, so that a run changing only what comes after
#: the network (threshold, roots, region of interest, vessel range, sheet filter) does
#: not run it again. A larger output is not kept (and not copied).
PREDICTION_CACHE_BYTES = 2**30
#: The status line before any run: no image picked yet, or the one Run will segment.
_PICK_PROMPT = "Pick a 3D image and press Run."
_RUN_PROMPT = "Press Run to segment "
#: The same while the model list loads (Run is disabled until then).
_WAIT_PROMPT = "Loading the models; then press Run to segment "
#: A region's probability larger than this is written to a temporary zarr and shown
#: lazily (dask) instead of held as numpy.
LAZY_RESULT_BYTES = 64 * 2**20


def _size_text(nbytes: float) -> str:
    """``"1.5 GiB"``, ``"300 MiB"``: a size for a message."""
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= div:
            return f"{nbytes / div:.3g} {unit}"
    return f"{int(nbytes)} bytes"


def intensity_reference(layer: Any) -> tuple[Any, str]:
    """(array, name): what a region of ``layer`` takes its intensity mapping from, or
    ``(None, "")`` for the region itself.

    A region's own values can mislead the input policy (a field of view inside a CT
    holds no air and does not look like HU; one without vessels has no tail to tell
    their polarity), so modality, scaling and polarity are decided on the whole image:
    the coarsest level of a multiscale image (a few MB at most), an in-memory image
    itself. A single-scale lazy image (dask,
    zarr) has no cheap whole view (a strided sample reads every chunk), so its region is
    scaled from itself.
    """
    if getattr(layer, "multiscale", False):
        return layer.data[-1], "the whole image's coarsest level"
    if isinstance(layer.data, np.ndarray):
        return layer.data, "the whole image"
    return None, ""


def _stated_modality(layer: Any) -> str | None:
    """The modality the layer's file states (``metadata["modality"]``, which napari-topo's
    reader sets from a DICOM series' Modality tag), lower case; None when unstated."""
    value = (getattr(layer, "metadata", None) or {}).get("modality")
    return value.strip().lower() or None if isinstance(value, str) else None


def is_lazy(layer: Any) -> bool:
    """Whether an Image layer's voxels are read on demand: a multiscale layer or a
    full-resolution array that is not numpy (dask, zarr)."""
    return bool(getattr(layer, "multiscale", False)) or not isinstance(
        full_resolution(layer), np.ndarray
    )


def array_nbytes(volume: Any, shape: tuple[int, ...] | None = None) -> int:
    """Bytes of ``volume`` (or of a ``shape`` of its dtype) without reading it."""
    shape = tuple(volume.shape) if shape is None else tuple(shape)
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(volume.dtype).itemsize


@dataclass(frozen=True)
class Region:
    """A box of voxels of a (z, y, x) image: ``start`` inclusive, ``stop`` exclusive.

    Attributes
    ----------
    start, stop : tuple of int
        Level-0 (full-resolution) voxel indices, one per image axis.
    kind : str
        :data:`FIELD_OF_VIEW` or :data:`BOX` (what made it, for messages).
    """

    start: tuple[int, ...]
    stop: tuple[int, ...]
    kind: str = BOX

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))

    def describe(self) -> str:
        """``"z 0-47, y 10-40, x 3-90"`` (inclusive voxel ranges)."""
        names = "zyx"[-len(self.start) :] if len(self.start) <= 3 else None
        parts = []
        for i, (a, b) in enumerate(zip(self.start, self.stop, strict=True)):
            name = names[i] if names else f"axis {i}"
            parts.append(f"{name} {a}-{b - 1}")
        return ", ".join(parts)


def _voxel_box(
    data_points: np.ndarray,
    shape: tuple[int, ...],
    *,
    depth: int,
    slab_axes: tuple[int, ...] = (),
    whole_axes: tuple[int, ...] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel ``[start, stop)`` of the box around ``data_points`` (data coordinates,
    voxel centres at integers), clipped to ``shape`` (possibly empty: ``stop <= start``).

    Every voxel the box touches is in it. ``slab_axes`` (and any axis along which the
    points span less than half a voxel: a rectangle drawn on one slice) become ``depth``
    voxels centred on the points; ``whole_axes`` the image's whole extent.
    """
    pts = np.asarray(data_points, dtype=float).reshape(-1, len(shape))
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    start = np.floor(lo + 0.5).astype(np.int64)
    stop = np.ceil(hi + 0.5).astype(np.int64)
    flat = set(slab_axes) | {int(i) for i in np.flatnonzero(hi - lo < 0.5)}
    for axis in flat - set(whole_axes):
        centre = int(np.floor((lo[axis] + hi[axis]) / 2 + 0.5))
        start[axis] = centre - depth // 2
        stop[axis] = start[axis] + depth
    for axis in whole_axes:
        start[axis], stop[axis] = 0, shape[axis]
    size = np.asarray(shape, dtype=np.int64)
    return np.clip(start, 0, size), np.clip(stop, 0, size)


def _image_axes_in_world(image: Any, world_ndim: int) -> dict[int, int]:
    """World dimension -> image data axis (napari maps a layer's axes onto the last
    world dimensions)."""
    offset = world_ndim - int(image.ndim)
    return {offset + j: j for j in range(int(image.ndim))}


def field_of_view_region(viewer: Any, image: Any, shape: tuple[int, ...], depth: int) -> Region:
    """The part of ``image`` the canvas shows, as a :class:`Region` of level-0 voxels.

    The visible world rectangle is the camera's ``center`` plus or minus half the
    canvas (``viewer.canvas.size``, pixels) divided by the camera's ``zoom`` (canvas
    pixels per world unit), along the displayed dimensions. Its corners are taken to
    the image's voxels with ``image.world_to_data`` (scale, translate, rotation,
    affine), so the bounding box of those corners, clipped to the image, is the region.

    * **2D view**: the visible y/x extent, ``depth`` slices (the model's tile edge)
      centred on the current slice (``viewer.dims.point``) along the sliced axis.
    * **3D view**: the same y/x extent around the camera's centre (as seen looking down
      z; a turned camera shows about as much), over the whole extent of the depth
      axis (the first displayed dimension).

    Parameters
    ----------
    viewer : napari.Viewer
    image : napari Image layer
    shape : tuple of int
        The image's level-0 (z, y, x) shape.
    depth : int
        Slices of the slab in 2D (voxels).

    Returns
    -------
    Region
        ``kind`` :data:`FIELD_OF_VIEW`; its ``shape`` has a 0 when the canvas shows
        no part of the image.
    """
    dims = viewer.dims
    camera = _camera(viewer)
    world_ndim = int(dims.ndim)
    displayed = tuple(int(d) for d in dims.displayed)
    canvas = getattr(viewer, "canvas", None)
    size = getattr(canvas, "size", None)
    if size is None:
        raise ValueError(
            "This napari has no canvas size (napari >= 0.9 has); draw a box for Region "
            "'box' instead of 'field of view'."
        )
    viewbox = getattr(canvas, "viewbox_size", None)
    if callable(viewbox):
        size = viewbox(viewer.layers)
    zoom = float(camera.zoom)
    half = np.asarray(size, dtype=float)[-2:] / (2.0 * zoom)  # (height, width) in world
    centre = np.asarray(camera.center, dtype=float)
    plane = displayed[-2:]  # the canvas's vertical and horizontal world dimensions
    point = np.asarray(dims.point, dtype=float)
    corners = []
    for sy in (-1.0, 1.0):
        for sx in (-1.0, 1.0):
            w = point.copy()
            w[plane[0]] = centre[-2] + sy * half[0]
            w[plane[1]] = centre[-1] + sx * half[1]
            corners.append(np.asarray(image.world_to_data(w), dtype=float)[-len(shape) :])
    axes = _image_axes_in_world(image, world_ndim)
    if dims.ndisplay == 3:
        depth_dim = displayed[0]
        whole = tuple(axes[d] for d in (depth_dim,) if d in axes)
        slab: tuple[int, ...] = ()
    else:
        whole = ()
        slab = tuple(axes[d] for d in dims.not_displayed if d in axes)
    start, stop = _voxel_box(
        np.array(corners), shape, depth=depth, slab_axes=slab, whole_axes=whole
    )
    return Region(tuple(map(int, start)), tuple(map(int, stop)), FIELD_OF_VIEW)


def box_region(viewer: Any, image: Any, shapes: Any, shape: tuple[int, ...], depth: int) -> Region:
    """The bounding box of the selected shapes of ``shapes`` (or of its last shape when
    none is selected), as a :class:`Region` of ``image``'s level-0 voxels.

    The shapes' vertices go to world coordinates with the Shapes layer's own transform
    (``data_to_world``; a 2D Shapes layer lies on the current slice) and to the image's
    voxels with ``image.world_to_data``. A rectangle drawn on one slice is ``depth``
    slices deep, centred on that slice; select rectangles drawn on two slices to span
    the z range between them.

    Raises
    ------
    ValueError
        One line when the Shapes layer holds no shape.
    """
    if shapes is None:
        raise ValueError(
            "Region 'box' needs a Shapes layer: add one, draw a rectangle over the image "
            "and pick it under Box."
        )
    if len(shapes.data) == 0:
        raise ValueError(
            f"Shapes layer '{shapes.name}' holds no shape; draw a rectangle over the image."
        )
    chosen = sorted(int(i) for i in getattr(shapes, "selected_data", ()) or ())
    if not chosen:
        chosen = [len(shapes.data) - 1]
    point = np.asarray(viewer.dims.point, dtype=float)
    corners = []
    for i in chosen:
        for vertex in np.asarray(shapes.data[i], dtype=float):
            w = np.asarray(shapes.data_to_world(vertex), dtype=float)
            full = point.copy()
            full[len(full) - len(w) :] = w
            corners.append(np.asarray(image.world_to_data(full), dtype=float)[-len(shape) :])
    start, stop = _voxel_box(np.array(corners), shape, depth=depth)
    return Region(tuple(map(int, start)), tuple(map(int, stop)), BOX)


def crop_placement(image: Any, start: tuple[int, ...]) -> tuple[tuple[float, ...], Any]:
    """The ``translate`` and :class:`~napari_topo.geometry.Geometry` of the voxels of
    ``image`` from ``start`` on (a crop), so that voxel ``i`` of the crop lies where
    voxel ``start + i`` of the image lies.

    napari places a voxel at ``affine @ (rotate @ shear @ diag(scale) @ index +
    translate)``; the crop keeps scale, rotate, shear and affine and moves the translate
    by ``rotate @ shear @ diag(scale) @ start``. The geometry's origin moves by its own
    matrix times ``start``.
    """
    from napari_topo.geometry import geometry_from_layer_meta

    n = len(start)
    inner = geometry_from_layer_meta(  # the layer's own placement, without its affine
        {
            "scale": image.scale,
            "translate": image.translate,
            "rotate": image.rotate,
            "shear": image.shear,
        },
        n,
    )
    translate = np.asarray(image.translate, dtype=float).copy()
    translate[len(translate) - n :] = inner.cropped(start).origin
    return tuple(float(t) for t in translate), layer_geometry(image, n).cropped(start)


@dataclass(frozen=True)
class _Job:
    """The user's choices for one run (plain Python, handed to the worker)."""

    image: str
    model: str  # registry name or the path of a model file (what the pipeline loads)
    device: str
    tile: int
    overlap: float
    threshold: float
    spacing: tuple[float, ...] | None
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    sources: np.ndarray | None
    modality: str = "auto"
    polarity: str = "auto"
    window: tuple[float, float] | None = None
    zoom: str | float = "auto"
    #: the modality the file states (a DICOM series' Modality tag, from the reader)
    header_hint: str | None = None
    model_name: str = ""  # the card's name, for messages
    #: the model's own mask threshold (its card's; 0.5 unless fine-tuning chose one),
    #: which the messages offer as the default to go back to; None: not known
    model_threshold: float | None = None
    #: the image's rotate, shear and affine (napari's names), so results on an oblique
    #: scan lie on it as its scale and translate alone cannot say
    placement: Mapping[str, Any] = field(default_factory=dict)
    #: network arithmetic (inference.device.resolve_precision)
    precision: str = "auto"
    #: the image layer's full placement as a Geometry (None for a non-3D image): the
    #: result carries it, so graphs saved from it are in the image's world coordinates
    geometry: Any = None
    #: the part of the image to read (level-0 voxels; None: the whole image). ``translate``
    #: and ``geometry`` are then the crop's, and ``sources`` in the crop's voxels.
    region: Region | None = None
    #: what the intensity mapping and polarity of a region are decided from, and its name
    #: (the pipeline's ``intensity_from``): :func:`intensity_reference`; None: the region
    intensity_from: Any = None
    intensity_from_name: str = ""
    #: mirrored copies averaged per tile (the pipeline's ``tta``; 1: off)
    tta: int = 1
    #: tiles of noise alone are not run (the pipeline's ``skip_empty_tiles``)
    skip_empty_tiles: bool = True
    #: the region of interest on the (cropped) image's voxels, and its margin in scale
    #: units (the pipeline's ``roi`` and ``roi_margin``); None: everywhere
    roi: np.ndarray | None = None
    roi_margin: float = 0.0
    #: the Inside layer's name (recorded on the results, so that the Metrics dock never
    #: offers that region mask as a ground truth); "" without one
    roi_name: str = ""
    #: pieces of the mask with a median intensity outside it are dropped (the
    #: pipeline's ``vessel_range``); None: off
    vessel_range: str | tuple[float, float] | None = "auto"
    #: "drop": sheet-like pieces of the mask are dropped (the pipeline's ``sheets``)
    sheets: str = "drop"
    #: the image's length unit (layer_length_unit), for the Input line; None: unknown
    unit: str | None = None
    #: the roots' Points layer and, for each row of ``sources``, its row in that layer
    #: (a region keeps only the roots inside it), so a message can name the roots
    sources_name: str = ""
    source_rows: tuple[int, ...] | None = None
    #: the network's output of an earlier run to reuse (same image, model and input
    #: settings: :meth:`SegmentWidget._prediction_key`); None: run the network
    prediction: Any = None
    #: keep this run's network output for the next run (it fits PREDICTION_CACHE_BYTES)
    keep_prediction: bool = False
    #: spatial axes along which napari-topo's reader mirrored the file for display; the
    #: network runs on the file's own voxel order (pipeline.predict_mirrored) so the dock
    #: gives the command line's mask
    flips: tuple[int, ...] = ()


def _voxel_sample_digest(data: Any) -> str | None:
    """A digest of about 65,000 evenly spaced voxels of an in-memory array (None for a
    lazy one, which is read only when run): an image edited in place since the last run
    changes it."""
    if not isinstance(data, np.ndarray) or data.size == 0:
        return None
    step = max(1, data.size // 65536)
    sample = np.ascontiguousarray(data.flat[::step])
    return hashlib.blake2b(sample.tobytes(), digest_size=16).hexdigest()


def _roots_off_the_mask(job: _Job, analysis) -> str | None:
    """A sentence naming the tree roots that lie off the vessel mask, or None.

    Such a root grows its tree from the nearest centerline point, however far (in air, or
    on a vessel the model missed); :meth:`VesselAnalysis.root_placement` measures it.
    """
    if job.sources is None or analysis.result.n_trees != len(job.sources):
        return None
    off = [r for r in analysis.root_placement(job.sources) if not r["in_mask"]]
    if not off:
        return None
    unit = f" {job.unit}" if job.unit else (" scale units" if job.spacing else " voxels")
    ids = ", ".join(str(r["tree"]) for r in off)
    far = " and ".join(
        [", ".join(f"{r['moved']:.1f}" for r in off[:-1]), f"{off[-1]['moved']:.1f}"]
        if len(off) > 1
        else [f"{off[0]['moved']:.1f}"]
    )
    if len(off) == 1:
        return (
            f"Root {ids} lies off the vessel mask: its tree grew from the nearest centerline "
            f"point, {far}{unit} away. Check the root, or its vessel was missed."
        )
    return (
        f"Roots {ids} lie off the vessel mask: their trees grew from the nearest centerline "
        f"points, {far}{unit} away. Check the roots, or their vessels were missed."
    )


@dataclass(frozen=True)
class _Outcome:
    """What the worker hands back to the GUI thread (plain Python, no Qt)."""

    analysis: VesselAnalysis | None = None
    #: ``(data, meta, layer_type)`` of every result layer, metadata tagged for this run.
    tuples: tuple = ()
    #: The napari layers made from ``tuples`` (not yet in any viewer), same order.
    layers: tuple = ()
    cancelled: bool = False
    error: str | None = None
    seconds: float = 0.0
    #: the network's output (``predict``), when the job asked to keep it; also after an
    #: error in the steps that follow the network (two roots on one centerline point)
    prediction: Any = None


#: Why a run changed nothing when its layers could not be made or added.
_NOTHING_CHANGED = "Nothing was changed (the previous result layers are kept): "


def _result_tuples(job: _Job, analysis: VesselAnalysis) -> list[tuple]:
    """The run's layer data tuples, their metadata tagged as this widget's (Qt-free).

    ``metadata["napari_topo"]`` gains ``widget``, ``source`` (the image's name),
    ``model``, ``analysis`` and ``input_policy`` (when the pipeline chose one). Only the
    :data:`SHOWN_KINDS` (the trees) are visible; the rest are made hidden.
    """
    tuples = analysis.to_layers(
        name=job.image, scale=job.scale, translate=job.translate, skeleton=True
    )
    policy = getattr(analysis, "input_policy", None)
    out = []
    for data, meta, layer_type in tuples:
        meta = dict(meta)
        info = dict(meta["metadata"][METADATA_KEY])
        info.update(widget=OWNER, source=job.image, model=job.model, analysis=analysis)
        if policy is not None:
            info["input_policy"] = policy.to_dict()
        if job.roi_name:
            info["inside"] = job.roi_name
        if job.region is not None:
            info["region"] = {
                "kind": job.region.kind,
                "start": list(job.region.start),
                "stop": list(job.region.stop),
            }
            if info.get("kind") == "probability" and data.nbytes > LAZY_RESULT_BYTES:
                data, info["store"] = _lazy_copy(data)
                analysis.probability = data  # the numpy copy is let go
        meta["metadata"] = {**meta["metadata"], METADATA_KEY: info}
        meta["visible"] = info.get("kind") in SHOWN_KINDS
        meta.update(job.placement)
        out.append((data, meta, layer_type))
    return out


#: Temporary zarr folders of region probabilities (path -> TemporaryDirectory): each
#: is deleted when no layer of the viewer refers to it any more after a run
#: (:meth:`SegmentWidget._forget_stores`), the rest when Python exits.
_STORES: dict[str, Any] = {}
_STORES_LOCK = threading.Lock()


def _lazy_copy(data: np.ndarray) -> tuple[Any, str]:
    """``data`` written to a zarr array in a new temporary folder and read back as a
    dask array (nothing loaded); returns it and the folder.

    Chunks of 64 voxels per axis (one tile): napari reads a slice's chunks only.
    dask's ``to_zarr`` / ``from_zarr`` do the writing and reading (zarr 2 or 3).
    """
    import tempfile

    import dask.array as da

    folder = tempfile.TemporaryDirectory(prefix="napari-topo-region-")
    path = str(Path(folder.name) / "probability.zarr")
    chunks = tuple(min(64, int(n)) for n in data.shape)
    da.to_zarr(da.from_array(data, chunks=chunks), path, overwrite=True)
    with _STORES_LOCK:
        _STORES[folder.name] = folder
    return da.from_zarr(path), folder.name


def _build_layers(job: _Job, analysis: VesselAnalysis) -> tuple[tuple, tuple]:
    """Every result layer of a run, or a ``ValueError`` with one line saying why not."""
    try:
        tuples = _result_tuples(job, analysis)
        return tuple(tuples), tuple(create_layers(tuples))
    except LayerBuildError as exc:
        _LOG.exception("making the result layers of %r failed", job.image)
        raise ValueError(_NOTHING_CHANGED + str(exc) + ".") from exc
    except Exception as exc:  # noqa: BLE001 - a builder failed; reported, traceback logged
        _LOG.exception("making the result layers of %r failed", job.image)
        reason = one_line(f"{type(exc).__name__}: {exc}", limit=160)
        raise ValueError(
            _NOTHING_CHANGED + f"could not make the result layers ({reason})."
        ) from exc


class _Phase(str):
    """What the worker is doing (a status line), as opposed to a warning (plain str)."""


def _region_bytes(volume: Any, job: _Job) -> int:
    return array_nbytes(volume, job.region.shape if job.region is not None else None)


def _run_segment(
    volume: Any, job: _Job, cancel: threading.Event
) -> Generator[tuple[int, int] | str, None, _Outcome]:
    """Worker body: yields ``(done, total)`` tiles and messages, returns an :class:`_Outcome`.

    The pipeline runs on a helper thread so that its ``progress`` callback (called
    from inside ``predict``) can be turned into values this generator yields; napari
    delivers them to the GUI thread through the worker's ``yielded`` signal.  The same
    thread then makes every result layer (:func:`_build_layers`), so the GUI thread only
    adds them.  Nothing here touches Qt.  Expected failures (``ValueError``) come back
    with the core's message; anything else is logged with its traceback and reported by
    type.
    """
    events: queue.SimpleQueue = queue.SimpleQueue()
    start = time.perf_counter()
    kept: list = []  # the network's output, when the job keeps it

    def body() -> None:
        from napari_topo.inference import pipeline
        from napari_topo.inference.sliding import Cancelled
        from napari_topo.trees.reconstruct import CoincidingSourcesError

        # the geometry states the voxel size (its column norms, which an oblique layer's
        # affine may scale); an explicit spacing would replace them
        spacing = job.spacing if job.geometry is None else None
        inputs = {
            "header_hint": job.header_hint,
            "modality": job.modality,
            "polarity": job.polarity,
            "window": job.window,
            "zoom": job.zoom,
        }
        network = {
            "tile": job.tile,
            "overlap": job.overlap,
            "tta": job.tta,
            "skip_empty_tiles": job.skip_empty_tiles,
            "device": job.device,
            "precision": job.precision,
            "intensity_from": job.intensity_from,
            "intensity_from_name": job.intensity_from_name or "the whole image",
            "progress": lambda done, total: events.put(("progress", (int(done), int(total)))),
            "cancel": cancel,
            # a Notice stays one (shown as information, not as a warning)
            "on_message": lambda msg: events.put(
                ("message", msg if isinstance(msg, str) else str(msg))
            ),
        }
        try:
            data = volume
            if job.region is not None:  # only the region is read (dask: its chunks only)
                events.put(("phase", f"Reading {_size_text(_region_bytes(volume, job))}"))
                data = np.asarray(volume[job.region.slices])
                if cancel.is_set():
                    raise Cancelled()
            prediction = job.prediction
            if prediction is None and (job.keep_prediction or job.flips):
                voxels = pipeline.voxel_size(spacing, job.geometry)[0]  # as segment's
                prediction = pipeline.predict_mirrored(
                    data, job.flips, job.model, spacing=voxels, **inputs, **network
                )
                if job.keep_prediction:
                    kept.append(prediction)
            elif prediction is not None:
                events.put(("phase", "Reusing the network's output of the last run"))
            analysis = pipeline.segment(
                data,
                job.model,
                threshold=job.threshold,
                sources=job.sources,
                spacing=spacing,
                geometry=job.geometry,
                roi=job.roi,
                roi_margin=job.roi_margin,
                vessel_range=job.vessel_range,
                sheets=job.sheets,
                prediction=prediction,
                **inputs,
                **({} if prediction is not None else network),
            )
        except Cancelled:
            events.put(("cancelled", None))
            return
        except CoincidingSourcesError as exc:
            message = coinciding_roots_message(exc, job.sources_name, job.source_rows)
            events.put(("error", message + "."))
            return
        except (ValueError, MemoryError) as exc:
            events.put(("error", str(exc) or type(exc).__name__))
            return
        except Exception as exc:  # noqa: BLE001 - reported to the user, traceback logged
            _LOG.exception("segmentation of %r failed", job.image)
            events.put(("error", f"Segmentation failed ({type(exc).__name__}: {exc})."))
            return
        # The tree reconstruction cannot be interrupted; a cancel during it still wins.
        if cancel.is_set():
            events.put(("cancelled", None))
            return
        # Every layer is made here, off the GUI thread, before the viewer is touched.
        try:
            tuples, layers = _build_layers(job, analysis)
        except ValueError as exc:
            events.put(("error", str(exc)))
            return
        except MemoryError:
            events.put(("error", _NOTHING_CHANGED + "out of memory making the result layers."))
            return
        events.put(("cancelled", None) if cancel.is_set() else ("done", (analysis, tuples, layers)))

    thread = threading.Thread(target=body, name=f"napari-topo segment {job.image}", daemon=True)
    thread.start()
    while True:
        kind, value = events.get()
        if kind in ("progress", "message"):
            yield value
            continue
        if kind == "phase":
            yield _Phase(value)
            continue
        thread.join()
        seconds = time.perf_counter() - start
        prediction = kept[0] if kept else None
        if kind == "done":
            analysis, tuples, layers = value
            return _Outcome(
                analysis=analysis,
                tuples=tuples,
                layers=layers,
                seconds=seconds,
                prediction=prediction,
            )
        if kind == "cancelled":
            return _Outcome(cancelled=True, seconds=seconds)
        return _Outcome(error=value, seconds=seconds, prediction=prediction)


# --------------------------------------------------------------------------------------
# The widget
# --------------------------------------------------------------------------------------


def _duration_words(seconds: float) -> str:
    """A rounded duration: "5 s", "40 s", "2 min", "1 h", "1 h 10 min"."""
    if seconds < 100:
        return f"{max(5, int(round(seconds / 5.0)) * 5)} s"
    minutes = int(round(seconds / 60.0))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


class SegmentWidget(QWidget):
    """Segment vessels in a 3D image with a registered model and show the trees.

    Pick an image, a model (hover for its test scores), a device, the sliding-window
    tile and overlap, the probability threshold and optionally a Points layer with the
    tree roots; the collapsible *Input* section overrides the input policy (modality,
    vessel polarity, intensity window, zoom; all automatic by default) and its label says
    what was chosen after a run (hover for why).  Press *Run*.  The model runs in a
    worker thread with a progress bar per tile (*Cancel* stops it between tiles); the
    results become layers named after the image (probability, mask, skeleton, trees,
    branches, centerline), placed on the image with its scale and translate.  Running
    again on the same image replaces them.  *Region* segments the field of view or a
    drawn box instead of the whole image (only that part is read; the layers lie on it
    and a run on another region replaces them); it is the field of view by default for
    a lazy image over :data:`LAZY_LIMIT_BYTES`, whose whole is refused.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose layers are offered (napari passes it when docking).
    parent : QWidget, optional
        Qt parent.

    Attributes
    ----------
    finished : Signal(str)
        Emitted on the GUI thread when a run ended, after its layers were added, with
        ``"done"``, ``"cancelled"`` or ``"error"``.
    """

    finished = Signal(str)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        require_viewer(napari_viewer, "SegmentWidget")

        self._viewer = napari_viewer
        self._worker = None
        self._job: _Job | None = None
        self._cancel = threading.Event()
        self._state: str | None = None
        self._progress: Any = None
        self._analysis: VesselAnalysis | None = None
        # The Model picker's entries: registry name -> card, and for a model file the
        # user loaded (Load model file…), its absolute path -> card.
        self._cards: dict[str, ModelCard] = {}
        self._choices_loader = None  # imports torch and reads the model cards
        self._model_loader = None
        self._started: float | None = None  # perf_counter() when Run was pressed
        self._phase = ""  # what the run is doing, for the status line
        self.image_picker = ComboBox(
            label="Image",
            choices=self._image_choices,
            tooltip="3D (z, y, x) single-channel image to segment; its scale is the spacing.",
        )
        self.model_picker = ComboBox(label="Model", choices=self._model_choices)
        self.load_model_button = QPushButton("Load model file…")
        self.load_model_button.setToolTip(
            "Add your own model: a .safetensors file with its .json model card beside it "
            "(as 'napari-topo train' writes them); its SHA-256 is checked against the card."
        )
        self.load_model_button.clicked.connect(self._on_load_model_clicked)
        self.load_roots_button = QPushButton("Load roots…")
        self.load_roots_button.setToolTip(
            "Add a Points layer of tree roots from a CSV, as 'napari-topo segment "
            "--sources' reads it (z, y, x voxel indices of the image file; "
            "z_physical, y_physical, x_physical world coordinates; or napari's Points "
            "CSV), placed on the picked image, and use it as Tree roots."
        )
        self.load_roots_button.clicked.connect(self._on_load_roots_clicked)
        self.device_picker = ComboBox(
            label="Device",
            choices=["auto"],
            value="auto",
            tooltip="'auto' picks CUDA, then Apple MPS, then the CPU.",
        )
        self.precision_picker = ComboBox(
            label="Precision",
            choices=["auto", "float32", "bfloat16"],
            value="auto",
            tooltip="Arithmetic of the network. 'auto': float16 on CUDA, bfloat16 on a CPU "
            "with native bfloat16 instructions (about twice as fast, same masks; TopNet "
            "stays float32 there, its trees depend on it), float32 elsewhere. 'float32' "
            "turns reduced precision off.",
        )
        self.tile_box = SpinBox(
            label="Tile",
            value=64,
            min=16,
            max=512,
            step=16,
            tooltip="Edge of the cubic tiles the model sees (voxels, a multiple of 16).",
        )
        self.overlap_box = FloatSpinBox(
            label="Overlap",
            value=0.25,
            min=0.0,
            max=0.9,
            step=0.05,
            tooltip="Fraction of a tile shared with its neighbours (Gaussian-blended). "
            "The models normalise each tile on its own, so where neighbouring tiles "
            "disagree a mask edge can run straight along the tile grid; 0.5 rounds most "
            "such edges at about 1.3-1.9x the network time (on the development CT it also "
            "lowered Dice: README, On real data).",
        )
        self.tta_picker = ComboBox(
            label="Mirroring",
            choices=[("off", 1), ("x (2 copies)", 2), ("y, x (4)", 4), ("z, y, x (8)", 8)],
            value=1,
            tooltip="Test-time augmentation: also run each tile mirrored and average the "
            "predictions (as nnU-Net does). Costs 2, 4 or 8 times the network time; on the "
            "development data it changed Dice by under 0.01.",
        )
        self.empty_tiles_check = CheckBox(
            text="Skip tiles of noise alone",
            value=True,
            tooltip="Do not run the network on a tile that holds nothing but noise (tested "
            "against the tile's own noise level; each tile is normalised on its own inside "
            "the networks, so noise alone can look like vessel). Untick if thin vessels at "
            "the edge of visibility vanish in whole blocks of a noisy volume.",
        )
        # set apart: magicgui warns when a button gets both a label and a text
        self.empty_tiles_check.label = "Empty tiles"
        self.threshold_box = FloatSpinBox(
            label="Threshold",
            value=0.5,
            min=0.0,
            max=1.0,
            step=0.05,
            tooltip="Probability above which a voxel is vessel. Follows the picked model's "
            "own (0.5 for the shipped models; a fine-tuned model's was chosen on the "
            "held-out part of your labels) until you change it; a threshold you set is "
            "kept when you pick another model.",
        )
        #: the threshold the box was last set to from a model's card (at first: 0.5)
        self._auto_threshold: float = float(self.threshold_box.value)
        self.region_picker = ComboBox(
            label="Region",
            choices=list(REGIONS),
            value=WHOLE,
            tooltip="What part of the image to segment (read at full resolution).\n"
            "whole image: all of it (refused for a lazy image over "
            f"{_size_text(LAZY_LIMIT_BYTES)}).\n"
            "field of view: what the canvas shows; in 2D one tile deep (the Tile value in "
            "slices) around the current slice, in 3D over the whole depth.\n"
            "box: the bounding box of the selected rectangles of the Box layer (its last "
            "one if none is selected); one drawn on a single slice is one tile deep, two "
            "selected on different slices span the slices between them.\n"
            "Results lie on the image; a new run replaces them.",
        )
        self.box_picker = ComboBox(
            label="Box",
            choices=self._shapes_choices,
            tooltip="Shapes layer holding the box: draw a rectangle over the image with "
            "its rectangle tool (select several to take their bounding box).",
        )
        self.box_picker.visible = False
        self.sources_picker = ComboBox(
            label="Tree roots",
            choices=self._points_choices,
            tooltip="Optional Points layer with one point per tree root; 'none' detects "
            "the roots automatically.",
        )
        self.roi_picker = ComboBox(
            label="Inside",
            choices=self._roi_choices,
            tooltip="Optional Labels layer on the image's grid (e.g. a liver mask): nothing "
            "is segmented outside it (grown by Margin); the model still sees the whole "
            "image. 'none': everywhere.",
        )
        self.roi_margin_box = FloatSpinBox(
            label="Margin",
            value=0.0,
            min=0.0,
            max=1e6,
            step=1.0,
            tooltip="Grow the Inside region by this distance, in the image's scale units "
            "(mm for a CT read with its voxel size), so vessels entering it are kept.",
        )
        # What to run and Run itself come first, so a short dock (three docks on a
        # 1366 x 768 screen) shows them and the result without scrolling; the settings
        # with defaults follow (a newcomer found Run and the status below the fold).
        self._form = Container(
            widgets=[self.image_picker, self.model_picker, self.region_picker, self.box_picker],
            labels=True,
        )
        self._form.margins = (0, 0, 0, 0)
        self._settings_form = Container(
            widgets=[
                self.threshold_box,
                self.sources_picker,
                self.roi_picker,
                self.roi_margin_box,
                self.device_picker,
                self.precision_picker,
                self.tile_box,
                self.overlap_box,
                self.tta_picker,
                self.empty_tiles_check,
            ],
            labels=True,
        )
        self._settings_form.margins = (0, 0, 0, 0)
        self._build_input_section()

        self.device_note = QLabel(CPU_NOTE)
        self.device_note.setWordWrap(True)
        self.device_note.setToolTip(CPU_NOTE_TIP)

        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Segment the image in the background.")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the run after the current tiles.")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)

        self.status_label = QLabel(_PICK_PROMPT)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # In the dock itself (napari's own bar sits in its collapsed activity panel).
        self.progress_bar = QProgressBar()
        self.progress_bar.setVisible(False)
        self.progress_bar.setTextVisible(True)
        self._eta_base: tuple[float, int, int] | None = None  # see _time_left
        self._clock = QTimer(self)  # the elapsed time in the status line, once a second
        self._clock.setInterval(1000)
        self._clock.timeout.connect(self._show_phase)
        # Adding a result's layers, one per event-loop turn (see _apply_steps).
        self._apply_timer = QTimer(self)
        self._apply_timer.setSingleShot(True)
        self._apply_timer.setInterval(0)
        self._apply_timer.timeout.connect(self._apply_next)
        self._applying: Any = None  # (steps, job, outcome) while layers are being added
        self._finish_pending = False
        self.legend_label = QLabel("")
        self.legend_label.setWordWrap(True)
        self.legend_label.setVisible(False)
        self.legend_label.setToolTip(BRANCH_MEASURES_TIP)

        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        # Run, Cancel and the progress stay in view at the dock's foot, outside the part
        # that scrolls: at 1366 x 768 with three docks the dock is ~190 px tall, and the
        # Run row scrolled away with the settings (or was squeezed under the pickers)
        run_row = QVBoxLayout()
        run_row.addWidget(self.progress_bar)
        run_row.addLayout(buttons)
        layout = QVBoxLayout()
        layout.addWidget(self._form.native)
        layout.addWidget(self.status_label)
        layout.addWidget(self.legend_label)
        layout.addWidget(self._settings_form.native)
        files = QHBoxLayout()
        files.addWidget(self.load_model_button)
        files.addWidget(self.load_roots_button)
        layout.addLayout(files)
        layout.addWidget(self.input_section)
        layout.addWidget(self.device_note)
        layout.addStretch(1)
        self.scroll_area = scrolling_body(self, layout, share=DOCK_SHARE, pinned=run_row)

        self.model_picker.changed.connect(self._on_model_changed)
        self.device_picker.changed.connect(self._update_device_note)
        self.region_picker.changed.connect(self._on_region_changed)
        self.image_picker.changed.connect(self._on_image_changed)
        self._region_image: Any = None  # the image the Region default was chosen for
        self._stores: set[str] = set()  # temporary zarr folders of this dock's results
        #: the last run's network output: (key, PredictOutputs, image layer), or None;
        #: and the running job's (key, image layer)
        self._kept: tuple[tuple, Any, Any] | None = None
        self._job_key: tuple[tuple, Any] | None = None
        finish_workers_at_exit()  # a script ending while the list loads must not abort
        self._load_choices()

        follow_layer_list(self, napari_viewer, self._refresh_choices)
        self._on_image_changed()  # an image picked before the dock opened: its prompt
        install_view_defaults(napari_viewer, self)
        # A run outliving the widget is stopped at its next tile.
        self._runs: list[threading.Event] = []
        self.destroyed.connect(partial(_set_events, self._runs))
        self._refresh_choices()

    # ---- public API ------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True while a run is in progress."""
        return self._worker is not None

    @property
    def last_analysis(self) -> VesselAnalysis | None:
        """The :class:`VesselAnalysis` of the last finished run (None before)."""
        return self._analysis

    def run(self):
        """Check the choices and start segmenting in a worker thread.

        Returns
        -------
        napari worker or None
            The started worker; None if a run is already going or the choices were
            rejected (the reason is in the status label and a notification).
        """
        if self.is_running:
            return None
        if not self.is_ready:
            self._report("The models are still loading; press Run again in a moment.")
            return None
        image = self.image_picker.value
        try:
            job, volume = self._make_job(image)
        except ValueError as exc:
            self._report(str(exc), error=True)
            return None
        key = self._prediction_key(image, job)
        if self._kept is not None and self._kept[0] == key:
            job = replace(job, prediction=self._kept[1])
        else:
            self._kept = None  # freed before the new run needs the memory
            job = replace(job, keep_prediction=self._fits_the_cache(job, volume))
        self._job_key = (key, image)

        self._job = job
        self._cancel = threading.Event()
        self._runs[:] = [self._cancel]
        finish_workers_at_exit(self._cancel)
        self.run_button.setEnabled(False)
        self.run_button.setText("Running…")
        self.cancel_button.setEnabled(True)
        self._started = time.perf_counter()
        self._eta_base = None  # (seconds, tiles done, total) the time left is measured from
        self.progress_bar.setRange(0, 0)  # busy until the first tile count arrives
        self.progress_bar.setFormat("loading the model…")
        self.progress_bar.setVisible(True)
        self._set_phase(f"Segmenting '{job.image}' with {job.model_name or job.model}…")
        self._clock.start()
        self._worker = create_worker(
            _run_segment,
            volume,
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
        self._show_phase()  # at once, not at the clock's first tick (the last error stayed)
        return self._worker

    def _prediction_key(self, image: Any, job: _Job) -> tuple:
        """What the network's output depends on: the image (its layer, array and a
        sample of its voxels), the region read, the model (and its weights' hash), where
        and how the network runs, the input policy and the layer's placement. Not the
        threshold, roots, region of interest, vessel range or sheet filter."""
        card = self._cards.get(job.model)
        region = None if job.region is None else (job.region.start, job.region.stop)
        if card is not None:
            weights = card.sha256
        else:  # a model file loaded by path: replaced in place, it changes its stamp
            try:
                stat = Path(job.model).stat()
                weights = (stat.st_mtime_ns, stat.st_size)
            except OSError:
                weights = None
        return (
            id(image),
            id(image.data),
            _voxel_sample_digest(image.data),
            region,
            job.model,
            weights,
            job.device,
            job.precision,
            job.tile,
            job.overlap,
            job.tta,
            job.skip_empty_tiles,
            job.modality,
            job.header_hint,
            job.polarity,
            job.window,
            job.zoom,
            job.spacing,
            job.scale,
            repr(job.placement),
            job.intensity_from_name,
            id(job.intensity_from),
            job.flips,
        )

    def _fits_the_cache(self, job: _Job, volume: Any) -> bool:
        """Whether the network's output for ``job`` fits :data:`PREDICTION_CACHE_BYTES`
        (float32 probability; a TopNet, or a model the dock has no card for, 10 channels)."""
        shape = job.region.shape if job.region is not None else np.shape(volume)
        card = self._cards.get(job.model)
        channels = 1 if card is not None and card.architecture != "topnet" else 10
        return 4 * channels * math.prod(shape) <= PREDICTION_CACHE_BYTES

    def select_model(self, name: str | None = None) -> bool:
        """Re-read the model registry into the Model picker and select ``name``.

        For models added while the widget is open (e.g. by the Fine-tune dock). Keeps the
        current model when ``name`` is None or not registered. Returns whether ``name``
        (when given) is now the selected model.
        """
        from napari_topo.models.registry import list_models

        current = self.model_picker.value
        self._cards = {card.name: card for card in list_models()}
        self.model_picker.choices = list(self._cards)
        target = name if name in self._cards else current
        if target in self._cards:
            self.model_picker.value = target
        self._set_model_tooltips()
        self._on_model_changed(own_threshold=name is not None and target == name)
        return name is None or self.model_picker.value == name

    def cancel(self) -> None:
        """Ask the running segmentation to stop (it stops before its next tiles)."""
        if not self.is_running:
            return
        self._cancel.set()
        self.cancel_button.setEnabled(False)
        self._set_status("Cancelling…")

    # ---- choices ---------------------------------------------------------------------

    def _build_input_section(self) -> None:
        """The collapsed "Input" section: modality, polarity, window, zoom, and a label."""
        self.modality_picker = ComboBox(
            label="Modality",
            choices=["auto", "ct", "microscopy"],
            value="auto",
            tooltip="'auto' recognises a CT in Hounsfield units from its values (windowed "
            "-100..300 HU); anything else is scaled by its 0.5-99.5 percentiles.",
        )
        self.polarity_picker = ComboBox(
            label="Vessels",
            choices=["auto", "bright", "dark"],
            value="auto",
            tooltip="Vessels brighter or darker than their surroundings. 'auto': bright for "
            "a CT, otherwise from the intensity distribution; dark ones are inverted for "
            "models trained on bright vessels.",
        )
        self.window_check = CheckBox(
            text="Window",
            value=False,
            tooltip="Map Low..High (HU for a CT) to 0..1 instead of the automatic scaling.",
        )
        self.window_low, self.window_high, window_row = _pair_row(
            self.window_check,
            "Intensity",
            (-100.0, 300.0),
            "{} end of the intensity window (image units; HU for a CT).",
            ("Low", "High"),
        )
        # 4 decimals: a window for an image in 0..1 (a microscopy float) must be typeable
        for box in (self.window_low, self.window_high):
            box.native.setDecimals(WINDOW_DECIMALS)
        self._window_filled = self._window_values()  # what ticking Window may replace
        self.window_check.changed.connect(self._on_window_toggled)
        # while ticked and as filled in, the window follows the image, model and modality
        for picker in (self.modality_picker, self.polarity_picker):
            picker.changed.connect(self._refill_window)
        self.range_mode = ComboBox(
            choices=["auto", "off", "custom"],
            value="auto",
            tooltip="Drop each piece of the mask whose median intensity lies outside a "
            "range (image units; HU for a CT). 'auto': 100..300 HU for a CT in HU (a "
            "portal-venous lumen: removes the muscle and bone the models also mark), "
            "nothing otherwise; 'custom': the two values. A piece that fails is first cut "
            "where it is thin, and its parts inside the range are kept. The pieces holding "
            "the Tree roots points are always kept.",
        )
        self.range_low, self.range_high, range_row = _pair_row(
            self.range_mode,
            "Vessel range",
            (100.0, 300.0),
            "{} median intensity of a piece of vessel (HU for a CT).",
            ("Lowest", "Highest"),
        )
        self.range_mode.changed.connect(self._on_range_toggled)
        self.sheets_check = CheckBox(
            text="drop sheet-like pieces",
            value=True,
            tooltip="Drop each piece of the mask shaped like a sheet rather than a tube "
            "(Frangi's plate-versus-line ratio of the mask, median under 0.15): bone "
            "plates, the scalp of a TOF-MRA, which the models also mark. A piece that "
            "fails is first cut where it is thin and its "
            "tube-like parts kept; the pieces holding the Tree roots points are kept.",
        )
        self.zoom_box = FloatSpinBox(
            label="Zoom",
            value=_AUTO_ZOOM,
            min=_AUTO_ZOOM,
            max=8.0,
            step=0.05,
            tooltip="Resampling for the model: < 1 for thick vessels, > 1 for thin ones. "
            "'auto' (the lowest value): a CT at its finest spacing (at least 0.5 mm), "
            "large vessels to ~8 voxels in radius otherwise.",
        )
        self.zoom_box.native.setSpecialValueText("auto")
        # A TIFF stack often states no voxel size: napari shows it at scale 1 x 1 x 1 and
        # has no field to change that; a two-photon newcomer's 5 um z steps read as 1 um
        # (Dice 0.735 -> 0.133 on poon2015_plaqueVessels) and the dock said to call
        # viewer.add_image(data, scale=...) from Python.
        self.voxel_boxes = []
        for axis, what in zip("zyx", ("slice step", "row height", "column width"), strict=True):
            box = FloatSpinBox(value=1.0, min=0.0, max=1e6, step=0.1)
            # decimals before the minimum: Qt rounds the minimum to them (review)
            box.native.setDecimals(VOXEL_DECIMALS)
            box.native.setMinimum(10.0**-VOXEL_DECIMALS)
            box.tooltip = f"Voxel size along {axis} ({what}) of the picked image."
            self.voxel_boxes.append(box)
        voxel_row = Container(
            widgets=self.voxel_boxes, layout="horizontal", labels=False, label="Voxel z y x"
        )
        voxel_row.margins = (0, 0, 0, 0)
        self.voxel_unit = ComboBox(
            choices=list(VOXEL_UNITS),
            value="none",
            tooltip="The unit of the voxel size ('none': unstated). A unit the image's "
            "file states is shown and kept.",
        )
        self.voxel_button = PushButton(
            text="Set voxel size",
            tooltip="Give the picked image this voxel size (its layer scale, and unit): "
            "the model's zoom, the lengths and the metrics follow it. Results of an "
            "earlier run keep theirs until you run again.",
        )
        self.voxel_button.changed.connect(self.set_voxel_size)
        unit_row = Container(
            widgets=[self.voxel_unit, self.voxel_button],
            layout="horizontal",
            labels=False,
            label="Unit",
        )
        unit_row.margins = (0, 0, 0, 0)
        self._input_form = Container(
            widgets=[
                voxel_row,
                unit_row,
                self.modality_picker,
                self.polarity_picker,
                window_row,
                range_row,
                self.sheets_check,
                self.zoom_box,
            ],
            labels=True,
        )
        self._input_form.margins = (0, 0, 0, 0)
        self.input_label = QLabel(INPUT_NOTE)
        self.input_label.setWordWrap(True)
        self.input_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.input_section = QCollapsible("Input", collapsedIcon="▶")  # ▲ (superqt) read as open
        self.input_section.addWidget(self._input_form.native)
        self.input_section.addWidget(self.input_label)

    def _on_window_toggled(self, on: bool) -> None:
        """Enable Low/High; ticked while they hold what was last filled in (the CT
        default at first), fill in the range Run's automatic scaling maps to 0..1 for the
        picked image (:meth:`auto_window`): a microscopy user starts from the image's own
        range, not -100..300 HU. Values the user typed are kept."""
        self.window_low.enabled = bool(on)
        self.window_high.enabled = bool(on)
        if on:
            self._refill_window()

    def _refill_window(self, _value: Any = None) -> None:
        """Put :meth:`auto_window` in Low/High while Window is ticked and they still hold
        what was last filled in (the image, model or modality changed since); a window
        the boxes cannot hold (beyond +-1e6, or a range under their 4 decimals) is not
        offered."""
        if not self.window_check.value or self._window_values() != self._window_filled:
            return
        suggested = self.auto_window()
        if suggested is None:
            return
        low, high = (round(v, WINDOW_DECIMALS) for v in suggested)
        limit = self.window_low.max
        if not (-limit <= low < high <= limit):
            return
        self.window_low.value, self.window_high.value = low, high
        self._window_filled = self._window_values()

    def _window_values(self) -> tuple[float, float]:
        return float(self.window_low.value), float(self.window_high.value)

    def auto_window(self) -> tuple[float, float] | None:
        """``(low, high)``: the intensities Run's automatic choice maps to 0 and 1 for
        the picked image with the picked model and the Input section's modality and
        polarity (a CT's window in HU, else the 0.5 and 99.5 percentiles of a strided
        sample, :func:`~napari_topo.inference.intensity.plan_intensity`), read from
        :func:`intensity_reference`; None without an image, for an RGB or single-scale
        lazy image (no cheap whole view) or one the policy refuses (constant, no finite
        value)."""
        from napari_topo.inference.intensity import AUTO_NORMALIZATION, plan_intensity

        layer = self.image_picker.value
        if layer is None or getattr(layer, "rgb", False):
            return None
        reference, _ = intensity_reference(layer)
        if reference is None:
            return None
        card = self._cards.get(self.model_picker.value)
        spec = card.normalization if card is not None else AUTO_NORMALIZATION
        try:
            plan = plan_intensity(
                reference,
                spec,
                modality=self.modality_picker.value,
                polarity=self.polarity_picker.value,
                header_hint=_stated_modality(layer),
            )
        except ValueError:
            return None
        return float(plan.lo), float(plan.hi)

    def _on_range_toggled(self, mode: str) -> None:
        self.range_low.enabled = self.range_high.enabled = mode == "custom"

    def _sync_voxel_size(self) -> None:
        """Show the picked image's voxel size (its scale along z, y, x) and unit; the
        unit can be chosen only where neither the image's file nor its layer states one
        (and napari has layer units)."""
        image = self.image_picker.value
        ok = (
            image is not None
            and full_resolution(image).ndim == 3
            and not getattr(image, "rgb", False)
        )
        for box in (*self.voxel_boxes, self.voxel_unit, self.voxel_button):
            box.enabled = ok
        if not ok:
            self._voxel_shown = None
            return
        for box, value in zip(self.voxel_boxes, np.asarray(image.scale)[-3:], strict=True):
            box.value = abs(float(value))
        # what the boxes show of each size: a box left so keeps the layer's own size
        self._voxel_shown = (image, [float(box.value) for box in self.voxel_boxes])
        unit = layer_length_unit(image)
        self.voxel_unit.value = unit if unit in VOXEL_UNITS else "none"
        self.voxel_unit.enabled = _unit_settable(image)

    def set_voxel_size(self, *_: Any) -> bool:
        """Give the picked image the voxel size in the Input section's boxes.

        Sets the layer's ``scale`` along its last three axes (z, y, x; signs kept; a box
        left as shown keeps the exact size it rounds) and, where neither its file nor
        its layer states a unit (napari >= 0.6), its ``units`` to the chosen one
        ("none" leaves them); resets the view. The Image and Labels layers on the
        image's grid (the same z, y, x shape, scale and translate: its masks, the
        Fine-tune dock's corrections, labels added without a scale) get the same, so
        that what is painted on them stays over the same voxels. The next run (and the
        Fine-tune and Metrics docks) reads the voxel size from there. Returns False,
        with the reason in the status line, when no 3D image is picked or a size is
        not above 0.
        """
        image = self.image_picker.value
        if image is None or full_resolution(image).ndim != 3 or getattr(image, "rgb", False):
            self._report("Pick the 3D grey-level image whose voxel size to set.", True)
            return False
        values = [float(box.value) for box in self.voxel_boxes]
        shown = getattr(self, "_voxel_shown", None)
        if shown is not None and shown[0] is image:
            # a box left as shown keeps the layer's own size: exact, and current if a
            # script changed the scale since the boxes were filled
            now = [abs(float(v)) for v in np.asarray(image.scale)[-3:]]
            values = [c if v == s else v for v, c, s in zip(values, now, shown[1], strict=True)]
        if not all(math.isfinite(v) and v > 0 for v in values):
            self._report(f"A voxel size must be above 0; got {values}.", True)
            return False
        # a newcomer's corrections layer stayed at 1 x 1 x 1 under an image set to 5 um
        # z steps: its slice k was drawn over the image's slice k / 5
        followers = _on_grid_of(image, self._viewer.layers)
        unit = str(self.voxel_unit.value)
        for layer in [image, *followers]:
            scale = np.asarray(layer.scale, dtype=float)
            scale[-3:] = np.where(scale[-3:] < 0, -1.0, 1.0) * np.asarray(values)
            try:
                layer.scale = scale
            except (ValueError, np.linalg.LinAlgError) as exc:  # napari refused it
                self._report(f"napari refused the scale {tuple(scale)}: {exc}", True)
                return False
            if unit != "none" and _unit_settable(layer):
                units = list(layer.units)
                units[-3:] = [unit] * 3
                layer.units = units
        stated = layer_length_unit(image)
        self._viewer.reset_view()
        self._sync_voxel_size()
        size = " x ".join(f"{v:g}" for v in values)
        also = ", ".join(f"'{layer.name}'" for layer in followers[:4])
        also += f" and {len(followers) - 4} more" if len(followers) > 4 else ""
        self._set_status(
            f"'{image.name}' now has voxels of {size}{' ' + stated if stated else ''} "
            "(z, y, x): run to segment it at that size (the model's zoom follows it)."
            + (f" So do the layers on its grid: {also}." if followers else "")
        )
        return True

    def input_choices(self) -> dict[str, Any]:
        """The Input section's choices as :func:`~napari_topo.inference.pipeline.segment`
        keyword arguments: ``modality``, ``polarity``, ``window`` (None unless set),
        ``vessel_range`` ("auto", None or a pair), ``sheets`` ("drop" or "keep") and
        ``zoom`` ("auto" or a number)."""
        zoom = float(self.zoom_box.value)
        window = None
        if self.window_check.value:
            window = (float(self.window_low.value), float(self.window_high.value))
        vessel_range = {"auto": "auto", "off": None}.get(str(self.range_mode.value))
        if self.range_mode.value == "custom":
            vessel_range = (float(self.range_low.value), float(self.range_high.value))
        return {
            "modality": str(self.modality_picker.value),
            "polarity": str(self.polarity_picker.value),
            "window": window,
            "vessel_range": vessel_range,
            "sheets": "drop" if self.sheets_check.value else "keep",
            "zoom": "auto" if zoom <= _AUTO_ZOOM else zoom,
        }

    def _make_job(self, image: Any) -> tuple[_Job, Any]:
        if image is None:
            raise ValueError("Pick an Image layer holding a 3D (z, y, x) volume.")
        model = self.model_picker.value
        if model is None:
            raise ValueError(
                "No model is registered; load a model file or see 'napari-topo models'."
            )
        volume = full_resolution(image)
        shape = tuple(int(s) for s in volume.shape)
        if image.ndim == 2:  # a 2D image, RGB or not: one line, before a model is loaded
            axes = "yxs" if getattr(image, "rgb", False) else "yx"
            raise ValueError(volume_refusal(shape, axes, f"Image '{image.name}'"))
        # The pipeline checks the volume itself (RGB volume, empty, NaN) and says what is
        # wrong, so only what the widget adds (roots, tile, region) is checked here.
        scale = tuple(float(s) for s in image.scale)
        translate = tuple(float(t) for t in image.translate)
        points = self.sources_picker.value
        is_3d = len(shape) == 3 and image.ndim == 3
        tile = int(self.tile_box.value)
        if tile % 16:
            raise ValueError(
                f"Tile must be a multiple of 16 (the U-Nets halve it 4 times); got {tile}."
            )
        region = self._region(image, volume, shape, tile) if is_3d else None
        sources = sources_in_voxels(points, image, shape) if is_3d else None
        rows = None if sources is None else tuple(range(len(sources)))
        geometry = layer_geometry(image, 3) if is_3d else None
        roi = self._roi(image, shape, region) if is_3d else None
        if region is not None:
            translate, geometry = crop_placement(image, region.start)
            sources, rows = self._sources_in(region, sources, points)
        job = _Job(
            image=image.name,
            model=str(model),
            device=str(self.device_picker.value),
            precision=str(self.precision_picker.value),
            tile=tile,
            overlap=float(self.overlap_box.value),
            tta=int(self.tta_picker.value),
            skip_empty_tiles=bool(self.empty_tiles_check.value),
            roi=roi,
            roi_margin=float(self.roi_margin_box.value),
            roi_name=self.roi_picker.value.name if roi is not None else "",
            threshold=float(self.threshold_box.value),
            spacing=tuple(abs(s) for s in scale) if is_3d else None,
            scale=scale,
            translate=translate,
            sources=sources,
            sources_name=getattr(points, "name", "") if sources is not None else "",
            source_rows=rows,
            model_name=self._cards[model].name if model in self._cards else str(model),
            model_threshold=self._cards[model].mask_threshold if model in self._cards else None,
            placement=placement(image),
            geometry=geometry,
            flips=reader_flips(image) if is_3d else (),
            region=region,
            unit=layer_length_unit(image),
            header_hint=_stated_modality(image),
            **self.input_choices(),
        )
        if region is not None:
            reference, name = intensity_reference(image)
            job = replace(job, intensity_from=reference, intensity_from_name=name)
        return job, volume

    def _region(self, image: Any, volume: Any, shape: tuple[int, ...], tile: int) -> Region | None:
        """The Region picker's choice for ``image``: None for the whole image, else the
        :class:`Region` to read; a one-line ValueError when it cannot be run (a large
        lazy image as a whole, an empty or too large region, no box)."""
        choice = str(self.region_picker.value)
        lazy = is_lazy(image)
        path = image.metadata.get("path")
        stream = (
            f"'napari-topo segment {path if isinstance(path, str) else '<file>'} --format ome-zarr'"
        )
        limit = _size_text(LAZY_LIMIT_BYTES)
        if choice == WHOLE:
            nbytes = array_nbytes(volume)
            if lazy and nbytes > LAZY_LIMIT_BYTES:
                raise ValueError(
                    f"Image '{image.name}' is a lazy {_size_text(nbytes)} volume: 'whole "
                    f"image' would load all of it (over {limit}); pick Region 'field of "
                    "view' or 'box', or stream the file with "
                    f"{stream}."
                )
            return None
        if choice == FIELD_OF_VIEW:
            region = field_of_view_region(self._viewer, image, shape, tile)
            if min(region.shape) <= 0:
                raise ValueError(
                    f"The canvas shows no part of image '{image.name}'; pan or zoom to it "
                    "(View > Reset view) or pick Region 'whole image'."
                )
        else:
            shapes = self.box_picker.value
            region = box_region(self._viewer, image, shapes, shape, tile)
            if min(region.shape) <= 0:
                raise ValueError(
                    f"The box of Shapes layer '{shapes.name}' lies outside image "
                    f"'{image.name}'; draw the rectangle over the image (on a slice inside it)."
                )
        nbytes = array_nbytes(volume, region.shape)
        if lazy and nbytes > LAZY_LIMIT_BYTES:
            raise ValueError(
                f"The {region.kind} of '{image.name}' ({region.describe()}) holds "
                f"{_size_text(nbytes)}, over the {limit} read at once; zoom in or draw a "
                f"smaller box, or stream the file with {stream}."
            )
        return region

    def _sources_in(
        self, region: Region, sources: np.ndarray | None, points: Any
    ) -> tuple[np.ndarray | None, tuple[int, ...] | None]:
        """The tree roots inside ``region``, in its voxels (None: detect them), and their
        rows in the layer; roots outside it are left out, and the user told so."""
        if sources is None:
            return None, None
        start = np.asarray(region.start, dtype=float)
        local = sources - start
        inside = np.all((local >= -0.5) & (local <= np.asarray(region.shape) - 0.5), axis=1)
        left = int(np.count_nonzero(~inside))
        if left:
            kept = len(sources) - left
            show_info(
                f"{left} of the {len(sources)} roots of '{points.name}' lie outside the "
                f"{region.kind}; "
                + (f"using the {kept} inside it." if kept else "the roots are detected.")
            )
        if not inside.any():
            return None, None
        return local[inside], tuple(int(i) for i in np.flatnonzero(inside))

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _shapes_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        """The Shapes layers that can hold a box (not a result's branches)."""
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Shapes) and not made_by_plugin(layer)
        ]

    def _on_region_changed(self, _value: Any = None) -> None:
        self.box_picker.visible = self.region_picker.value == BOX

    def _on_image_changed(self, _value: Any = None) -> None:
        """Choose the Region for a newly picked image: 'field of view' for a lazy image
        too large to read whole, 'whole image' for the others; the idle prompt names it."""
        image = self.image_picker.value
        self._show_idle_prompt()
        self._sync_voxel_size()
        self._refill_window()
        if image is None or image is self._region_image:
            return
        self._region_image = image
        large = is_lazy(image) and array_nbytes(full_resolution(image)) > LAZY_LIMIT_BYTES
        self.region_picker.value = FIELD_OF_VIEW if large else WHOLE

    def _points_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        """'none' and the Points layers that can be roots (not a result's centerline)."""
        return [(_NONE, None)] + [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Points) and is_roots_layer(layer)
        ]

    def _roi_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        """'none' and the 3D Labels layers the plugin did not make (a region's mask)."""
        return [(_NONE, None)] + [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Labels)
            and full_resolution(layer).ndim == 3
            and not self._is_ours(layer)
        ]

    def _roi(self, image: Any, shape: tuple[int, ...], region: Region | None) -> np.ndarray | None:
        """The Inside layer's mask on the image's voxels (the region's part), or None."""
        layer = self.roi_picker.value
        if layer is None:
            return None
        data = full_resolution(layer)
        if tuple(data.shape) != tuple(shape):
            raise ValueError(
                f"Inside: '{layer.name}' has shape {tuple(data.shape)} but the image has "
                f"{tuple(shape)}; pick a mask on the image's grid or 'none'."
            )
        # voxel for voxel only when both lie on one world grid (a layer never placed is
        # taken on the image's)
        compare_layers(layer, image, names=(f"Inside '{layer.name}'", f"image '{image.name}'"))
        if region is not None:
            data = data[region.slices]
        mask = np.asarray(data) != 0
        if not mask.any():
            where = " in the region" if region is not None else ""
            raise ValueError(f"Inside: '{layer.name}' is empty{where}; nothing would be found.")
        return mask

    def _refresh_choices(self, _event: Any = None) -> None:
        """Rebuild the layer pickers in layer-list order, keeping the chosen layers."""
        if self._kept is not None and self._kept[2] not in self._viewer.layers:
            self._kept = None  # its image is gone: free the network's output
        for picker in (self.image_picker, self.sources_picker, self.box_picker, self.roi_picker):
            rebuild_picker(picker)
        if not self._is_candidate(self.image_picker.value):
            # Prefer a 3D image the user brought to a 2D/RGB one or one of our outputs.
            for _, layer in self._image_choices():
                if self._is_candidate(layer):
                    select_layer(self.image_picker, layer)
                    break

    @classmethod
    def _is_candidate(cls, layer: Any) -> bool:
        """A layer worth offering first: a single-channel 3D image we did not make."""
        return (
            layer is not None
            and not layer.rgb
            and full_resolution(layer).ndim == 3
            and not cls._is_ours(layer)
        )

    def _show_idle_prompt(self) -> None:
        """The status before any run: pick an image, or press Run (once the models are
        listed) to segment the picked one. A run's own status is left alone."""
        text = self.status_label.text()
        idle = text == _PICK_PROMPT or text.startswith((_RUN_PROMPT, _WAIT_PROMPT))
        if self.is_running or not idle:
            return
        image = self.image_picker.value
        prompt = _RUN_PROMPT if self.is_ready else _WAIT_PROMPT
        self._set_status(_PICK_PROMPT if image is None else f"{prompt}'{image.name}'.")

    @staticmethod
    def _is_ours(layer: Any) -> bool:
        return plugin_info(layer).get("widget") == OWNER

    @property
    def is_ready(self) -> bool:
        """True once the models and devices are listed (torch imported)."""
        return self._choices_loader is None

    def _load_choices(self) -> None:
        """List the models and devices: at once when torch is imported already, else
        in a worker, so that opening the dock does not hold napari up while torch loads
        (the picker says so meanwhile and Run waits)."""
        if _MODEL_MODULES.issubset(sys.modules):
            self._on_choices(_list_choices())
            return
        self.model_picker.native.setPlaceholderText("loading the models…")
        self.run_button.setEnabled(False)
        self.run_button.setText(_LOADING)
        # Started once napari has added and drawn the dock: torch's import in the worker
        # holds the GIL in long stretches, and started at once it made napari's adding
        # of the dock take 0.34 s instead of 0.07 s (benchmarks/bench_gui.py).
        self._choices_loader = _LOADING  # not ready (Run waits) until they are listed
        self._show_idle_prompt()
        QTimer.singleShot(_LIST_DELAY_MS, self._start_listing)

    def _start_listing(self) -> None:
        self._choices_loader = create_worker(
            _list_choices,
            _connect={"returned": self._on_choices, "errored": self._on_choices_failed},
            _start_thread=True,
        )

    def _on_choices(self, listed: tuple) -> None:
        cards, devices, default = listed
        self._choices_loader = None
        self._cards = {**cards, **self._cards}  # model files loaded meanwhile stay
        self.model_picker.reset_choices()
        if default in self._cards:
            self.model_picker.value = default
        self.device_picker.choices = devices
        self.device_picker.value = "auto"
        self.run_button.setEnabled(not self.is_running)
        self.run_button.setText("Running…" if self.is_running else "Run")
        self._set_model_tooltips()
        self._on_model_changed()
        self._update_device_note()
        self._show_idle_prompt()

    def _on_choices_failed(self, exc: BaseException) -> None:
        self._choices_loader = None
        self.run_button.setText("Run")
        self._show_idle_prompt()
        self._report(f"Listing the models failed ({type(exc).__name__}: {exc}).", error=True)

    def _model_choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        """The Model picker's entries: ``(shown text, value)``; a model file shows its
        card's name and file name, and its value is its path."""
        out = []
        for key, card in self._cards.items():
            text = key if key == card.name else f"{card.name} ({Path(key).name})"
            out.append((text, key))
        return out

    def _set_model_tooltips(self) -> None:
        combo = self.model_picker.native
        for index in range(combo.count()):
            card = self._cards.get(combo.itemData(index))
            if card is not None:
                combo.setItemData(index, model_tooltip(card), Qt.ItemDataRole.ToolTipRole)

    # ---- your own model --------------------------------------------------------------

    def load_model_file(self, path: Any):
        """Check a model file and add it to the Model picker (and pick it).

        Runs :func:`napari_topo.models.registry.load_model` in a worker: the card
        beside a ``.safetensors`` file (or the ``.json`` card itself) names the
        architecture and the SHA-256 the weights must have; a mismatch, a missing card
        or weights that do not fit are refused with a one-line message.

        Parameters
        ----------
        path : str or Path
            A ``.safetensors`` file with ``<stem>.json`` beside it, or a ``.json`` card.

        Returns
        -------
        napari worker or None
            None if a check is already running.
        """
        if self._model_loader is not None:
            return None
        self.load_model_button.setEnabled(False)
        self._set_status(f"Checking the model file {path}…")
        self._model_loader = create_worker(
            _check_model_file,
            str(path),
            _connect={
                "returned": self._on_model_checked,
                "finished": self._on_model_check_finished,
            },
            _start_thread=True,
        )
        return self._model_loader

    def _on_load_model_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Load a model",
            "",
            "Model weights with a .json card beside them (*.safetensors);;Model card (*.json)",
        )
        if path:
            self.load_model_file(path)

    def load_roots(self, path: Any) -> Any:
        """Add a Points layer of tree roots read from a CSV and pick it as *Tree roots*.

        The file is read as ``napari-topo segment --sources`` reads it
        (:func:`napari_topo.cli.read_sources_table`): ``z, y, x`` voxel indices of the
        image file (as ``read_volume`` returns its array; mirrored as napari-topo's
        reader shows the file), ``z_physical, y_physical, x_physical`` world
        coordinates, or napari's own Points CSV (data coordinates of the image layer).
        The layer lies on the picked image's placement (its voxels as data, its scale,
        translate and rotation), so the roots land where the command line would put them
        and the dims sliders keep the image's steps.

        Parameters
        ----------
        path : str or Path
            The CSV.

        Returns
        -------
        napari.layers.Points
            The new layer (named after the file), also picked as *Tree roots*.

        Raises
        ------
        ValueError
            No 3D image picked, or a file that is not a table of roots (one line, also
            shown in the status).
        """
        from napari_topo.cli import read_sources_table

        image = self.image_picker.value
        if image is None or full_resolution(image).ndim != 3:
            raise ValueError("Pick the 3D image the roots belong to first.")
        pts, space = read_sources_table(path)
        pts = np.asarray(pts, dtype=float).reshape(-1, 3)
        geometry = file_geometry(image) if full_resolution(image).ndim == 3 else None
        if space == "world":
            world = pts
        elif space == "voxel" and geometry is not None:
            # the file's own array, which the reader may have shown mirrored or with its
            # axes reordered: through the file's geometry, as the command line reads it
            world = geometry.world(pts)
        else:  # napari's Points CSV, or an image not from the reader: the layer's voxels
            world = np.array([image.data_to_world(p) for p in pts], dtype=float)
        # on the image's own placement (its voxels as data, its scale, translate, rotate,
        # ...): a layer in world units would add its own slider steps (a newcomer's z
        # slider went from the CT's 129 slices to 205 one-millimetre steps)
        world = np.asarray(world, dtype=float).reshape(-1, 3)
        data = np.array([image.world_to_data(w) for w in world], dtype=float).reshape(-1, 3)
        from napari_topo.layers import tree_colors

        layer = self._viewer.add_points(
            data,
            name=Path(str(path)).stem,
            scale=image.scale,
            translate=image.translate,
            size=4,
            symbol="star",
            face_color=tree_colors(len(data)) if len(data) else "white",
            border_color="white",
            **placement(image),
        )
        self.sources_picker.reset_choices()
        select_layer(self.sources_picker, layer)
        self._set_status(
            f"Added {len(world)} tree roots from {Path(str(path)).name} "
            f"({_SOURCE_SPACE_WORDS[space]}) as Tree roots; press Run."
        )
        return layer

    def _on_load_roots_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Load tree roots", "", "Roots table (*.csv *.txt);;All files (*)"
        )
        if path:
            try:
                self.load_roots(path)
            except (ValueError, OSError) as exc:
                self._report(str(exc), error=True)

    def _on_model_checked(self, outcome: tuple) -> None:
        key, card, error = outcome
        if error is not None:
            self._report(error, error=True)
            return
        self._cards[key] = card
        self.model_picker.reset_choices()
        self.model_picker.value = key
        self._set_model_tooltips()
        self._on_model_changed(own_threshold=True)
        self._set_status(
            f"Loaded model '{card.name}' ({card.architecture}) from {key}; its SHA-256 "
            "matches its card. Press Run to use it."
        )

    def _on_model_check_finished(self) -> None:
        self._model_loader = None
        self.load_model_button.setEnabled(True)

    def _on_model_changed(self, _value: Any = None, *, own_threshold: bool = False) -> None:
        """Show the picked model's card; take its own mask threshold unless one was set.

        The Threshold box follows each picked model's own threshold (its card's: 0.5 for
        the shipped models, the one fine-tuning chose otherwise) while the user has not
        changed it. A threshold the user set by hand is kept when another model is picked,
        and the status says what the new model's own is. ``own_threshold=True`` (a model
        just fine-tuned or loaded from a file) takes the model's own in any case.
        """
        card = self._cards.get(self.model_picker.value)
        self.model_picker.tooltip = model_tooltip(card) if card else "No model registered."
        self._refill_window()  # the model's own CT window, when the image is a CT
        if card is None:
            return
        shown = float(self.threshold_box.value)
        own = card.mask_threshold
        by_hand = not math.isclose(shown, self._auto_threshold, abs_tol=1e-9)
        if by_hand and not own_threshold:
            if not math.isclose(shown, own, abs_tol=1e-9):
                self._set_status(
                    f"Threshold {shown:g} kept (you set it); '{card.name}' cuts at "
                    f"{own:g} by its card."
                )
            return
        if by_hand and not math.isclose(shown, own, abs_tol=1e-9):
            self._set_status(f"Threshold {own:g}: '{card.name}''s own (was {shown:g}).")
        self.threshold_box.value = own
        self._auto_threshold = float(self.threshold_box.value)

    def _update_device_note(self, _value: Any = None) -> None:
        if self._choices_loader is not None:
            return
        from napari_topo.inference.device import pick_device

        try:
            on_cpu = pick_device(self.device_picker.value).type == "cpu"
        except ValueError:
            on_cpu = False
        self.device_note.setVisible(on_cpu)

    # ---- worker callbacks (GUI thread) -----------------------------------------------

    def _on_yielded(self, value: Any) -> None:
        if isinstance(value, _Phase):  # the worker reads the region
            self._set_phase(f"{value} of '{self._job.image}'…" if self._job else f"{value}…")
            self.progress_bar.setFormat("reading the region…")
            return
        if isinstance(value, Notice):  # information (a voxel head's pinned reading)
            show_info(value)
            return
        if isinstance(value, str):  # a note from the pipeline (out-of-memory fallback)
            show_warning(value)
            return
        done, total = value
        if self._progress is None:
            name = self._job.image if self._job else "image"
            self._progress = napari_progress(total=total, desc=f"Segmenting '{name}'")
        pbar = self._progress
        if pbar.total != total:
            pbar.total = total
        if done > pbar.n:
            pbar.update(done - pbar.n)
        # napari's progress bar runs the event loop when it moves (processEvents): the
        # run's outcome may have been shown meanwhile, and the phase set below then
        # replaced its error (seen in CI under load: "Tracing the centerline… (0 s)")
        if self._state is not None or not self.is_running:
            return
        bar = self.progress_bar
        if done >= total:
            bar.setRange(0, 0)  # busy: the trees take a while and report no steps
            bar.setFormat("tracing the trees…")
        else:
            bar.setRange(0, max(int(total), 1))
            bar.setValue(int(done))
            # a share: with several zooms the pipeline counts thousandths of the run
            # ("tile 14 of 1000" for a stack of 166 tiles)
            bar.setFormat("%p %")
        if self._cancel.is_set():
            return
        if done >= total:
            self._set_phase("Tracing the centerline and the trees…")
            pbar.set_description("Tracing trees")
        else:
            left = self._time_left(done, total)
            pct = 100 * int(done) // max(int(total), 1)
            self._set_phase(f"Segmenting '{self._job.image}': {pct} %{left}…")

    def _time_left(self, done: int, total: int) -> str:
        """ ", about N s left" from this run's own pace (tiles per second since the first
        count of this pass), or "" until 2 tiles and 3 s have passed. The machine's speed,
        the model, the precision and the tiles skipped as noise all show in that pace; a
        fixed rate per voxel was 7x off on a newcomer's CT (130 s, said ~15 min)."""
        now = self.elapsed
        base = self._eta_base
        if base is None or base[2] != total or done < base[1]:  # a new pass (another zoom)
            self._eta_base = (now, done, total)
            return ""
        t0, d0, _ = base
        if done - d0 < 2 or now - t0 < 3.0:
            return ""
        left = (now - t0) / (done - d0) * (total - done)
        return f", about {_duration_words(left)} left"

    def _on_returned(self, outcome: _Outcome) -> None:
        job = self._job
        self._clock.stop()
        if outcome.prediction is not None and self._job_key is not None:
            key, image = self._job_key
            self._kept = (key, outcome.prediction, image)
        if outcome.cancelled:
            self._state = "cancelled"
            self._set_status("Run cancelled; no layers were changed.")
            show_info(f"Segmentation of '{job.image}' cancelled." if job else "Cancelled.")
            return
        if outcome.error is not None or outcome.analysis is None or job is None:
            self._state = "error"
            self._report(outcome.error or "Segmentation failed.", error=True)
            return
        # The layers are all built (in the worker); napari adds one per event-loop turn,
        # so that the GUI never stalls for all of them at once (0.75 s for six on two
        # busy cores); Run stays disabled and `finished` waits until the last is in.
        self.cancel_button.setEnabled(False)
        self._set_phase("Adding the layers…")
        self._applying = (self._apply_steps(job, outcome.tuples, outcome.layers), job, outcome)
        self._apply_next()

    def _apply_next(self) -> None:
        """One step of :meth:`_apply_steps`; the next on the next event-loop turn."""
        if self._applying is None:
            return
        steps, job, outcome = self._applying
        try:
            next(steps)
        except StopIteration:
            self._applying = None
            self._forget_stores(outcome)
            self._show_result(job, outcome)
        except Exception as exc:  # noqa: BLE001 - shown to the user, traceback logged
            self._applying = None
            _LOG.exception("adding the segmentation layers failed")
            self._state = "error"
            reason = one_line(f"{type(exc).__name__}: {exc}", limit=160)
            self._report(f"{_NOTHING_CHANGED}adding the result layers failed ({reason}).", True)
        else:
            self._apply_timer.start()
            return
        if self._finish_pending:
            self._finish_pending = False
            self._on_finished()

    def _forget_stores(self, outcome: _Outcome) -> None:
        """Delete this dock's temporary zarr folders (:func:`_lazy_copy`) that no layer
        of the viewer refers to any more (a region's probability replaced by a later
        run); those of ``outcome`` become this dock's."""
        for _data, meta, _type in outcome.tuples:
            store = meta["metadata"][METADATA_KEY].get("store")
            if store:
                self._stores.add(store)
        used = {plugin_info(layer).get("store") for layer in self._viewer.layers}
        stale = self._stores - used
        self._stores -= stale
        with _STORES_LOCK:
            folders = [_STORES.pop(path) for path in stale if path in _STORES]
        for folder in folders:
            folder.cleanup()

    def _show_result(self, job: _Job, outcome: _Outcome) -> None:
        """The status, legend and input line of a run whose layers are all in."""
        self._phase = ""
        analysis = outcome.analysis
        self._show_policy(getattr(analysis, "input_policy", None), job.unit)
        self._analysis = analysis
        self._state = "done"
        self._show_legend(analysis)
        empty = _empty_result_message(job, analysis)
        if empty is not None:
            self._set_status(empty)
            show_warning(empty)
            return
        n_trees = analysis.result.n_trees
        # From the press of Run to the layers on screen (the worker's own time leaves
        # out the wait for a thread, the model's loading and the layers' adding).
        seconds = self.elapsed if self._started is not None else outcome.seconds
        compute = getattr(analysis, "compute", None) or {}
        ran = ", ".join(compute[k] for k in ("device", "precision", "tta") if compute.get(k))
        from napari_topo.inference.pipeline import skipped_tiles_words

        skipped = skipped_tiles_words(compute)
        if skipped:
            ran = f"{ran}, {skipped}" if ran else skipped
        if job.prediction is not None:
            ran = f"{ran}; " if ran else ""
            ran += "the network's output of the last run reused"
        ran = f" ({ran})" if ran else ""
        where = f" ({job.region.kind}: {job.region.describe()})" if job.region else ""
        off = _roots_off_the_mask(job, analysis)
        # what the vessel range and the sheet filter dropped, as one sentence or two
        dropped = " ".join(t for t in (_range_sentence(analysis), _sheets_sentence(analysis)) if t)
        dropped = f" {dropped[0].upper()}{dropped[1:]}" if dropped else ""
        self._set_status(
            f"Segmented '{job.image}'{where} with {job.model_name or job.model}{ran} at "
            f"threshold {job.threshold:g} in {seconds:.1f} s: "
            f"{n_trees} tree{'s' if n_trees != 1 else ''}, "
            f"{len(analysis.points)} centerline points.{dropped}"
            + (f" {off}" if off else "")
            + _no_voxel_size_sentence(job)
        )
        if off:
            show_warning(off)

    def _on_errored(self, exc: BaseException) -> None:
        self._clock.stop()
        _LOG.error("segment worker failed", exc_info=exc)
        self._state = "error"
        self._report(f"Segmentation failed ({type(exc).__name__}: {exc}).", error=True)

    def _on_finished(self) -> None:
        if self._applying is not None:  # the layers are still being added: wait for them
            self._finish_pending = True
            return
        self._clock.stop()
        self.progress_bar.setVisible(False)
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self._worker = None
        self.run_button.setEnabled(True)
        self.run_button.setText("Run")
        self.cancel_button.setEnabled(False)
        self.finished.emit(self._state or "error")
        self._state = None

    def _show_policy(self, policy: Any, unit: str | None = None) -> None:
        """Say in the Input label what the pipeline chose (and why, in its tooltip);
        voxel sizes in ``unit`` when the image states one."""
        if policy is None:
            self.input_label.setText(INPUT_NOTE)
            self.input_label.setToolTip("")
            return
        self.input_label.setText(f"Input: {policy.describe(unit)}")
        self.input_label.setToolTip("\n".join(r for r in policy.reasons() if r))

    # ---- results → layers --------------------------------------------------------------

    def _apply(self, job: _Job, tuples: tuple, built: tuple) -> None:
        """Show a run's layers at once (all of :meth:`_apply_steps`, in one call)."""
        for _ in self._apply_steps(job, tuples, built):
            pass

    def _apply_steps(self, job: _Job, tuples: tuple, built: tuple) -> Iterator[None]:
        """Show a run's layers: all of them, or (on an exception) none; a generator
        that yields after each layer it adds, updates or removes.

        Our layers of an earlier run on the same image are updated in place (Image and
        Labels: same layer, new data, the user's display settings kept) or replaced at
        the same place under the same name (Points, Shapes) by the layers made in the
        worker; kinds this run did not make are removed. Every layer is built before
        the first step. If a step fails (napari refuses a layer, or the user removed
        one in between), the steps before it are undone and the exception is raised.
        """
        existing: dict[str, Layer] = {}
        for layer in self._viewer.layers:
            info = plugin_info(layer)
            if info.get("widget") == OWNER and info.get("source") == job.image:
                existing.setdefault(str(info.get("kind")), layer)
        layers = self._viewer.layers
        undo: list[Any] = []
        try:
            for (data, meta, _layer_type), new in zip(tuples, built, strict=True):
                old = existing.pop(str(meta["metadata"][METADATA_KEY]["kind"]), None)
                if old is not None and _updatable(old, data):
                    undo.append(partial(_restore, old, _settings(old)))
                    _update_in_place(old, data, meta)
                    yield
                    continue
                if old is not None:  # replace at the same place, under the same name
                    index = layers.index(old)
                    layers.remove(old)
                    undo.append(partial(layers.insert, index, old))
                    new.name = old.name
                    new.visible = old.visible  # the user's choice stays
                    layers.insert(index, new)
                else:
                    layers.append(new)
                undo.append(partial(_remove, layers, new))
                yield
            for stale in existing.values():  # kinds this run did not produce
                index = layers.index(stale)
                layers.remove(stale)
                undo.append(partial(layers.insert, index, stale))
                yield
        except BaseException:
            for step in reversed(undo):
                try:
                    step()
                except Exception:  # noqa: BLE001 - keep undoing the others
                    _LOG.exception("undoing a partly applied result failed")
            raise
        for layer in layers:  # the trees (updated in place or new) become the active layer
            info = plugin_info(layer)
            if info.get("widget") == OWNER and info.get("source") == job.image:
                if info.get("kind") in SHOWN_KINDS:
                    layers.selection.active = layer
                    break

    # ---- status ----------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        """Seconds since Run was pressed (0 before the first run)."""
        return time.perf_counter() - self._started if self._started is not None else 0.0

    def _set_phase(self, text: str) -> None:
        self._phase = text
        self._show_phase()

    def _show_phase(self) -> None:
        # ``_state`` is set once the outcome is shown: no phase may cover it then
        if self._phase and self.is_running and self._state is None and not self._cancel.is_set():
            self._set_status(f"{self._phase} ({self.elapsed:.0f} s)")

    def _show_legend(self, analysis: Any) -> None:
        """Swatches of the trees' colours under the status (the layers' colours)."""
        from napari_topo.layers import tree_colors

        n = int(max(analysis.result.n_trees, int(analysis.trees.max(initial=0))))
        if n == 0:
            self.legend_label.setVisible(False)
            return
        shown = min(n, 12)
        swatches = " ".join(
            f'<span style="color:{_hex(c)}">&#9632;</span>&nbsp;{k + 1}'
            for k, c in enumerate(tree_colors(shown))
        )
        more = f" … ({n} trees)" if n > shown else ""
        text = f"Trees: {swatches}{more}."
        if any(_is_reference_trees(layer) for layer in self._viewer.layers):
            reference = _hex(tree_colors(1, "reference")[0])  # layers.trees_layer's
            text += (
                f' Ground truth: <span style="color:{reference}">&#9633;</span>&nbsp;light '
                "outlines (filled in 3D)."
            )
        self.legend_label.setText(text)
        self.legend_label.setVisible(True)

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _report(self, message: str, error: bool = False) -> None:
        self._phase = ""
        message = one_line(message)
        if error:
            self._set_status(f"Error: {message}")
            show_error(message)
        else:
            self._set_status(message)


#: The Run button's text while the models are listed (torch loading).
_LOADING = "Loading the models…"
#: Milliseconds from the dock's creation to the start of the model listing: napari adds
#: and draws the dock in 0.1-0.2 s; started at once (or on the next event-loop turn)
#: torch's import overlapped that and the longest stall was 0.40-0.45 s, with 300 ms
#: 0.19-0.23 s (Xvfb, 2 shared cores).
_LIST_DELAY_MS = 300
#: Modules whose presence means listing the models is quick (torch imported).
_MODEL_MODULES = frozenset(
    {"torch", "napari_topo.models.registry", "napari_topo.inference.pipeline"}
)


def _list_choices() -> tuple[dict, list[str], str]:
    """Worker body: ``({name: card}, devices, default model)``; imports torch, no Qt."""
    from napari_topo.inference.device import available_devices
    from napari_topo.inference.pipeline import DEFAULT_MODEL
    from napari_topo.models.registry import list_models

    return {card.name: card for card in list_models()}, available_devices(), DEFAULT_MODEL


def _is_reference_trees(layer: Any) -> bool:
    """Whether ``layer`` is drawn in the reference palette (a ground truth's trees)."""
    from napari_topo.layers import METADATA_KEY

    meta = getattr(layer, "metadata", None) or {}
    info = meta.get(METADATA_KEY) if isinstance(meta, dict) else None
    return isinstance(info, dict) and info.get("palette") == "reference"


def _hex(rgba: Any) -> str:
    r, g, b = (int(round(255 * float(v))) for v in list(rgba)[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def _check_model_file(path: str) -> tuple[str, Any, str | None]:
    """Worker body of *Load model file…*: ``(key, card, error)``; never raises, no Qt.

    :func:`~napari_topo.models.registry.load_model` reads the card, checks the weights'
    SHA-256 against it and loads them strictly into the card's architecture.
    """
    from napari_topo.models.registry import load_model

    p = Path(path).expanduser()
    try:
        _model, card = load_model(p, device="cpu")
    except (ValueError, OSError) as exc:
        return str(p), None, f"Cannot use {p.name} as a model: {exc}"
    except Exception as exc:  # noqa: BLE001 - reported to the user, traceback logged
        _LOG.exception("checking the model file %s failed", p)
        return str(p), None, f"Cannot use {p.name} as a model ({type(exc).__name__}: {exc})."
    return str(p.resolve()), card, None


def _pair_row(switch: Any, label: str, values: tuple, tip: str, ends: tuple) -> tuple:
    """Two number boxes (disabled until ``switch`` enables them) in one labelled row
    after ``switch``: ``(low box, high box, row)``; ``tip`` is formatted with each end."""
    boxes = [FloatSpinBox(value=v, min=-1e6, max=1e6, step=10.0) for v in values]
    for box, end in zip(boxes, ends, strict=True):
        box.tooltip = tip.format(end)
        box.enabled = False
    row = Container(widgets=[switch, *boxes], layout="horizontal", labels=False, label=label)
    row.margins = (0, 0, 0, 0)
    return boxes[0], boxes[1], row


def _set_events(events: list[threading.Event], *_: Any) -> None:
    for event in events:
        event.set()


#: Units the Input section's voxel size takes ("none": unstated).
VOXEL_UNITS = ("none", "nm", "um", "mm", "cm", "m")


#: Decimals the intensity window's Low/High boxes show.
WINDOW_DECIMALS = 4


#: Decimals the voxel-size boxes show (a size they round is kept exact unless edited).
VOXEL_DECIMALS = 6


def _on_grid_of(image: Any, layers: Any) -> list[Any]:
    """The Image and Labels layers of ``layers`` other than ``image`` that lie on its
    voxel grid: the same z, y, x shape (full resolution), the same absolute scale and the
    same translate along those axes."""
    base = unwrap(image)
    shape = tuple(full_resolution(base).shape[-3:])
    scale = np.abs(np.asarray(base.scale, dtype=float)[-3:])
    translate = np.asarray(base.translate, dtype=float)[-3:]
    found = []
    for layer in layers:
        layer = unwrap(layer)
        if layer is base or not isinstance(layer, (Image, Labels)):
            continue
        data = full_resolution(layer)
        if data.ndim < 3 or tuple(data.shape[-3:]) != shape:
            continue
        if np.allclose(np.abs(np.asarray(layer.scale, float)[-3:]), scale) and np.allclose(
            np.asarray(layer.translate, float)[-3:], translate
        ):
            found.append(layer)
    return found


def _unit_settable(layer: Any) -> bool:
    """Whether the Input section may set ``layer``'s unit: napari has layer units
    (>= 0.6), the layer's file states none and its spatial axes are in pixels or all in
    one of :data:`VOXEL_UNITS` (mixed units, or one spelt otherwise, are left alone)."""
    units = getattr(layer, "units", None)
    if units is None or file_unit(layer) is not None:
        return False
    if all(str(u) == "pixel" for u in tuple(units)[-3:]):
        return True
    return layer_length_unit(layer) in VOXEL_UNITS


def _no_voxel_size_sentence(job: Any) -> str:
    """' Its voxel size is not stated ...' for an image whose layer has scale 1 and no
    unit (added without ``scale``, or a file that states none), else ''. The command
    line says the same of such a file; the dock said nothing (a newcomer's stack added
    as ``viewer.add_image(array)``, 5 um z steps read as 1)."""
    if not voxel_size_unstated(job.scale, job.unit):
        return ""
    return (
        " Its voxel size is not stated (layer scale 1 x 1 x 1, no unit): voxels taken as "
        "cubes. If they are not (most microscopy stacks have a larger z step), set it "
        "under Input (Voxel z y x, Unit, Set voxel size) and run again: the model's zoom "
        "follows it."
    )


def _sheets_sentence(analysis: Any) -> str:
    """'The sheet filter dropped N sheet-like pieces (X % of the mask).' or ''."""
    from napari_topo.inference.pipeline import percent_text

    n = int(getattr(analysis, "sheets_dropped", 0) or 0)
    if not n:
        return ""
    share = percent_text(getattr(analysis, "sheets_share", 0.0) or 0.0)
    pieces = "piece" if n == 1 else "pieces"
    return f"the sheet filter dropped {n} sheet-like {pieces} ({share} of the mask)."


def _range_sentence(analysis: Any) -> str:
    """'The vessel range 100..300 dropped N pieces (X % of the mask) ...' or ''."""
    from napari_topo.inference.pipeline import percent_text

    applied = getattr(analysis, "vessel_range", None)
    n = int(getattr(analysis, "pieces_dropped", 0) or 0)
    if applied is None or not n:
        return ""
    share = percent_text(getattr(analysis, "dropped_share", 0.0) or 0.0)
    policy = getattr(analysis, "input_policy", None)
    hu = " HU" if policy is not None and policy.intensity.modality == "ct" else ""
    pieces = "piece" if n == 1 else "pieces"
    return (
        f"the vessel range {applied[0]:g}..{applied[1]:g}{hu} dropped {n} {pieces} of the "
        f"mask ({share} of its voxels) whose median lies outside it."
    )


def _empty_result_message(job: _Job, analysis: VesselAnalysis) -> str | None:
    """What to tell the user when a run found nothing (None when it found vessels).

    A mask over half the image is no vessel tree either, whatever centerline it has
    (every piece keeps one: a full image has a single point at its centre)."""
    if len(analysis.points) and analysis.mask.any():
        share = float(np.count_nonzero(analysis.mask)) / analysis.mask.size
        if share <= 0.5:
            return None
    t = f"{job.threshold:g}"
    own = getattr(job, "model_threshold", None)
    default = "" if own is None else f" ({own:g} is the model's default)"
    if not analysis.mask.any():
        ranged = _range_sentence(analysis)
        if ranged and float(getattr(analysis, "dropped_share", 0.0) or 0.0) >= 1.0:
            return (
                f"Nothing left in '{job.image}': {ranged} Set 'Vessel range' under Input to "
                "off (or to your vessels' intensities) if vessels went with them."
            )
        sheets = _sheets_sentence(analysis)
        if sheets:  # the filter, not the threshold, emptied the mask
            return (
                f"Nothing left in '{job.image}': {sheets} Untick 'drop sheet-like pieces' "
                "under Input if a vessel went with them."
            )
        return (
            f"Nothing found above threshold {t} in '{job.image}': the result layers are "
            f"empty. Lower the Threshold{default} or check the Input section."
        )
    share = float(np.count_nonzero(analysis.mask)) / analysis.mask.size
    if share > 0.5:
        return (
            f"No vessels found in '{job.image}' at threshold {t}: the mask covers "
            f"{share:.0%} of the image, so there are no trees. Raise the Threshold{default}."
        )
    return (
        f"No centerline found in '{job.image}' at threshold {t}: the vessels are too small "
        f"for trees. Try another Threshold{default} or check the Input section."
    )


def _remove(layers: Any, layer: Any) -> None:
    if layer in layers:
        layers.remove(layer)


def _updatable(layer: Any, data: Any) -> bool:
    """Whether :func:`_update_in_place` can give ``layer`` this data.

    Points and Shapes change their number of elements, features and colours together,
    which napari has no single public call for; those are replaced instead.
    """
    return (
        isinstance(layer, Image | Labels)
        and layer_kind(layer) is not None
        and np.ndim(data) == layer.ndim
    )


def _settings(layer: Any) -> dict[str, Any]:
    """What :func:`_update_in_place` changes on ``layer``, to put back with :func:`_restore`."""
    saved: dict[str, Any] = {
        "data": layer.data,
        "scale": np.array(layer.scale),
        "translate": np.array(layer.translate),
        **placement(layer),
        # napari's metadata setter clears and refills the layer's own dict: keep a copy
        "metadata": dict(layer.metadata),
    }
    if isinstance(layer, Labels):
        saved["colormap"] = layer.colormap
    if isinstance(layer, Image):
        saved["contrast_limits"] = tuple(layer.contrast_limits)
    return saved


def _restore(layer: Any, saved: Mapping[str, Any]) -> None:
    for key, value in saved.items():
        setattr(layer, key, value)
    layer.refresh()


def _update_in_place(layer: Any, data: Any, meta: Mapping) -> bool:
    """Give an Image or Labels layer new data and settings; False for other layers
    (see :func:`_updatable`)."""
    if not _updatable(layer, data):
        return False
    layer.data = data
    for key in ("scale", "translate", "rotate", "shear", "affine", "units"):
        if key in meta:
            setattr(layer, key, meta[key])
    if isinstance(layer, Labels) and "colormap" in meta:
        layer.colormap = meta["colormap"]
    if isinstance(layer, Image) and "contrast_limits" in meta:
        layer.contrast_limits = meta["contrast_limits"]
    layer.metadata = dict(meta["metadata"])
    layer.refresh()
    return True
