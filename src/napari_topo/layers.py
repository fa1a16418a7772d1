"""Results as napari layer data tuples: pure functions, no Qt, napari imported lazily.

Every function returns a ``(data, meta, layer_type)`` tuple (napari's
``LayerDataTuple``) that a reader, a widget or a script turns into a layer with
``napari.layers.Layer.create(data, meta, layer_type)`` or ``viewer.add_layer(...)``.
``meta`` holds

* ``name``: ``f"{name} <kind>"``, e.g. ``"vessels trees"``;
* ``scale`` / ``translate``: as given by the caller (the source image's, so the result
  overlays it); omitted when None, which napari reads as unit scale and no shift;
* ``metadata``: ``{"napari_topo": {"kind": <kind>, "name": name, ...}}`` so that a
  widget can recognise the layers it made (:func:`layer_kind`).

Tree ids get the same colour everywhere (trees Labels, centerline Points, branch Shapes)
from :func:`tree_colors`; a reference (a ground truth) gets the light
``"reference"`` palette drawn as opaque outlines, so that predicted and reference trees stay
apart on screen. Every layer names
its axes (``z, y, x`` or ``y, x``: :data:`AXIS_LABELS`), and label volumes use the
smallest unsigned dtype that holds them (:func:`smallest_uint`), which napari uploads
and draws far faster than int32. The Labels functions use napari only to build a
:class:`napari.utils.colormaps.DirectLabelColormap`, and fall back to the plain
``{label: colour}`` dict napari accepts as well when napari is not installed.
:func:`create_layers` turns a whole result's tuples into napari layers, all or none,
without a viewer (so a widget can build them off the GUI thread and change the viewer
only when every layer exists). This module imports numpy only; napari lazily.

An empty result (no vessel found) is a valid result: every function here accepts empty
data and returns a tuple napari accepts.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Mapping
from numbers import Real
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from napari.types import LayerDataTuple
else:
    LayerDataTuple = tuple

__all__ = [
    "AXIS_LABELS",
    "PALETTES",
    "REFERENCE_CONTOUR",
    "REFERENCE_OPACITY",
    "REFERENCE_SATURATION",
    "UNASSIGNED_COLOR",
    "LayerBuildError",
    "apply_look",
    "branches_layer",
    "create_layers",
    "layer_kind",
    "mask_layer",
    "points_layer",
    "probability_layer",
    "skeleton_layer",
    "smallest_uint",
    "tree_colormap",
    "tree_colors",
    "trees_layer",
]

#: Key of the plugin's entry in a layer's ``metadata``.
METADATA_KEY = "napari_topo"
#: Colour of points and voxels that belong to no tree (id 0 / unknown ids).
UNASSIGNED_COLOR = (0.6, 0.6, 0.6, 1.0)
_TRANSPARENT = (0.0, 0.0, 0.0, 0.0)
# Hand-picked, well separated first colours (RGB); further ones by the golden angle.
_BASE = (
    (0.90, 0.16, 0.16),  # red
    (0.15, 0.45, 0.95),  # blue
    (0.20, 0.75, 0.25),  # green
    (1.00, 0.60, 0.05),  # orange
    (0.60, 0.25, 0.85),  # violet
    (0.10, 0.85, 0.85),  # cyan
    (0.95, 0.35, 0.75),  # pink
    (0.95, 0.90, 0.15),  # yellow
    (0.55, 0.33, 0.12),  # brown
    (0.55, 0.90, 0.10),  # lime
    (0.20, 0.20, 0.60),  # navy
    (0.00, 0.55, 0.55),  # teal
)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
#: Palettes of :func:`tree_colors`: a result's trees (saturated: HSV saturation >= 0.6),
#: and a reference's (a ground truth: light tints, saturation
#: :data:`REFERENCE_SATURATION`, drawn as opaque outlines by :func:`trees_layer`).
PALETTES = ("prediction", "reference")
#: HSV saturation of the reference palette: a light tint of the tree's hue, near white
#: (bright enough to stand out of a noisy grey image, far from the saturated results).
REFERENCE_SATURATION = 0.2
_REFERENCE_VALUES = (1.0, 0.9)  # alternating brightness, so neighbouring ids differ
#: ``contour`` of a reference's trees layer (napari draws 2D outlines this many pixels
#: thick; filled in 3D), set by :func:`apply_look`.
REFERENCE_CONTOUR = 2
#: Opacity of a reference's trees layer: opaque, so the thin outlines are not lost in
#: the image under them (a result's filled trees: 0.7).
REFERENCE_OPACITY = 1.0

#: Axis names of the layers made here, by dimensionality (arrays are (z, y, x)).
AXIS_LABELS = {2: ("y", "x"), 3: ("z", "y", "x")}


# --------------------------------------------------------------------------------------
# colours
# --------------------------------------------------------------------------------------
def tree_colors(n: int, palette: str = "prediction") -> np.ndarray:
    """Deterministic, distinct RGBA colours for trees ``1..n``.

    Row ``k - 1`` is the colour of tree ``k``, and it does not depend on ``n``
    (``tree_colors(5)[:3] == tree_colors(3)``), so colours stay put as trees are added.
    The first twelve are hand-picked; further ones step the hue by the golden ratio,
    alternating three saturation/value levels (all saturated: HSV saturation >= 0.6).

    Parameters
    ----------
    n : int
        Number of colours, >= 0.
    palette : {"prediction", "reference"}, optional
        ``"reference"`` (for a ground truth): the same hue, but a light tint (HSV
        saturation :data:`REFERENCE_SATURATION`, brightness alternating 1.0 / 0.9),
        so that no reference colour is near any prediction colour (RGB distance
        > 0.35) and a reference shown with a result does not look like it.

    Returns
    -------
    (n, 4) ndarray of float64
        RGBA in [0, 1], opaque.

    Raises
    ------
    ValueError
        If ``n`` is not a non-negative integer or ``palette`` is unknown.

    Examples
    --------
    >>> tree_colors(2).round(2).tolist()
    [[0.9, 0.16, 0.16, 1.0], [0.15, 0.45, 0.95, 1.0]]
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative integer; got {n!r}.")
    if palette not in PALETTES:
        raise ValueError(f"palette must be one of {PALETTES}; got {palette!r}.")
    out = np.ones((int(n), 4))
    for i in range(int(n)):
        if i < len(_BASE):
            out[i, :3] = _BASE[i]
        else:
            j = i - len(_BASE)
            hue = (0.07 + j * _GOLDEN) % 1.0
            sat, val = ((0.85, 0.95), (0.65, 1.0), (0.95, 0.65))[j % 3]
            out[i, :3] = colorsys.hsv_to_rgb(hue, sat, val)
    if palette == "reference":
        for i in range(int(n)):
            hue = colorsys.rgb_to_hsv(*out[i, :3])[0]
            val = _REFERENCE_VALUES[i % len(_REFERENCE_VALUES)]
            out[i, :3] = colorsys.hsv_to_rgb(hue, REFERENCE_SATURATION, val)
    return out


def _colors_for(ids: np.ndarray) -> np.ndarray:
    """RGBA per tree id; :data:`UNASSIGNED_COLOR` for ids <= 0."""
    ids = np.asarray(ids, dtype=np.int64)
    out = np.tile(np.asarray(UNASSIGNED_COLOR), (ids.size, 1))
    top = int(ids.max(initial=0))
    if top > 0:
        pal = tree_colors(top)
        pos = ids > 0
        out[pos] = pal[ids[pos] - 1]
    return out


def tree_colormap(n: int, palette: str = "prediction") -> dict:
    """``{label: RGBA}`` for a Labels layer of ``n`` trees.

    0 (background) is transparent, ``k`` is ``tree_colors(n, palette)[k - 1]`` and the
    default (key None, ids above ``n``) is :data:`UNASSIGNED_COLOR`. napari reads such a
    dict as a :class:`~napari.utils.colormaps.DirectLabelColormap`.
    """
    pal = tree_colors(n, palette)
    cmap: dict = {None: np.asarray(UNASSIGNED_COLOR), 0: np.asarray(_TRANSPARENT)}
    cmap.update({k + 1: pal[k] for k in range(len(pal))})
    return cmap


def _one_colour(rgba) -> Any:
    """Colormap of a binary Labels layer: 1 in ``rgba``, everything else transparent."""
    clear = np.asarray(_TRANSPARENT)
    return _direct_colormap({None: clear, 0: clear, 1: np.asarray(rgba, dtype=float)})


def _direct_colormap(color_dict: dict):
    try:
        from napari.utils.colormaps import DirectLabelColormap
    except ImportError:  # napari is optional for the core: napari accepts the dict too
        return color_dict
    return DirectLabelColormap(color_dict=color_dict)


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------
def _check_name(name) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}.")
    return name


def _vector(value, ndim: int, what: str, *, nonzero: bool = False):
    if value is None:
        return None
    try:
        v = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        v = None
    if v is None or v.shape != (ndim,) or not np.isfinite(v).all() or (nonzero and (v == 0).any()):
        extra = " non-zero" if nonzero else ""
        raise ValueError(f"{what} must be None or {ndim} finite{extra} numbers; got {value!r}.")
    return tuple(float(x) for x in v)


def smallest_uint(top: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds ``0..top`` (uint8 to uint64).

    Examples
    --------
    >>> smallest_uint(2), smallest_uint(255), smallest_uint(256)
    (dtype('uint8'), dtype('uint8'), dtype('uint16'))
    """
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if int(top) <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"{top} does not fit in 64 bits.")


def _meta(kind: str, name: str, nd: int, scale, translate, extra=None, **kwargs) -> dict:
    info = {"kind": kind, "name": name}
    if extra:
        info.update(extra)
    meta: dict[str, Any] = {"name": f"{name} {kind}", "metadata": {METADATA_KEY: info}}
    sc = _vector(scale, nd, "scale", nonzero=True)
    tr = _vector(translate, nd, "translate")
    if sc is not None:
        meta["scale"] = sc
    if tr is not None:
        meta["translate"] = tr
    if nd in AXIS_LABELS:
        meta["axis_labels"] = AXIS_LABELS[nd]
    meta.update(kwargs)
    return meta


def _volume(data, what: str) -> np.ndarray:
    arr = np.asarray(data)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{what} must be a 2D (y, x) or 3D (z, y, x) array; got shape {arr.shape}."
        )
    return arr


def _binary_labels(data, what: str) -> np.ndarray:
    arr = _volume(data, what)
    if arr.dtype == bool:
        return arr.view(np.uint8)  # no copy
    if not np.issubdtype(arr.dtype, np.integer) or (arr.size and (arr.min() < 0 or arr.max() > 1)):
        raise ValueError(f"{what} must be bool or integers in {{0, 1}}; got {arr.dtype}.")
    return arr


def layer_kind(layer_or_metadata) -> str | None:
    """The kind (``"trees"``, ``"mask"``, ...) of a layer made here, else None.

    Accepts a napari layer (anything with ``metadata``) or its metadata mapping.

    Examples
    --------
    >>> layer_kind(mask_layer(np.zeros((2, 2), bool))[1]["metadata"])
    'mask'
    >>> layer_kind({}) is None
    True
    """
    md = getattr(layer_or_metadata, "metadata", layer_or_metadata)
    info = md.get(METADATA_KEY) if isinstance(md, Mapping) else None
    return info.get("kind") if isinstance(info, Mapping) else None


# --------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------
def probability_layer(
    probability, *, name: str = "vessels", scale=None, translate=None, **kwargs
) -> LayerDataTuple:
    """Image layer of a vessel probability map (magma, contrast 0..1, additive).

    Parameters
    ----------
    probability : (Y, X) or (Z, Y, X) array_like of float
    name : str, optional
        Prefix of the layer name (``f"{name} probability"``).
    scale, translate : sequence of float, optional
        Passed on to the layer (use the source image's).
    **kwargs
        Further layer keyword arguments, overriding the defaults here.

    Returns
    -------
    (data, meta, "image")
    """
    data = _volume(probability, "probability")
    if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
        raise ValueError(f"probability must hold numbers; got {data.dtype}.")
    meta = _meta(
        "probability",
        _check_name(name),
        data.ndim,
        scale,
        translate,
        colormap="magma",
        contrast_limits=(0.0, 1.0),
        blending="additive",
        **kwargs,
    )
    return data, meta, "image"


def mask_layer(mask, *, name: str = "vessels", scale=None, translate=None, **kwargs):
    """Labels layer of a binary vessel mask (one colour, half opaque).

    ``mask`` may be bool (shown without a copy, as uint8) or integers in {0, 1}. Other
    arguments as in :func:`probability_layer`. Returns ``(data, meta, "labels")``.
    """
    data = _binary_labels(mask, "mask")
    cmap = _one_colour((0.0, 0.8, 1.0, 1.0))
    meta = _meta(
        "mask",
        _check_name(name),
        data.ndim,
        scale,
        translate,
        colormap=cmap,
        opacity=0.4,
        **kwargs,
    )
    return data, meta, "labels"


def skeleton_layer(skeleton, *, name: str = "vessels", scale=None, translate=None, **kwargs):
    """Labels layer of a one-voxel skeleton (yellow). As :func:`mask_layer`."""
    data = _binary_labels(skeleton, "skeleton")
    cmap = _one_colour((1.0, 0.9, 0.1, 1.0))
    meta = _meta(
        "skeleton", _check_name(name), data.ndim, scale, translate, colormap=cmap, **kwargs
    )
    return data, meta, "labels"


def trees_layer(
    trees,
    n_trees: int | None = None,
    *,
    name: str = "vessels",
    scale=None,
    translate=None,
    palette: str = "prediction",
    **kwargs,
):
    """Labels layer of a tree label volume, one clear colour per tree.

    Parameters
    ----------
    trees : (Y, X) or (Z, Y, X) array_like of int
        0 = background (transparent), ``k`` = tree ``k`` (``tree_colors(n)[k - 1]``).
        Shown as the smallest unsigned dtype that holds its ids (uint8 for fewer than
        256 trees: a copy when ``trees`` is wider).
    n_trees : int, optional
        Number of colours to set; default the largest id in ``trees``. Ids above it
        show in :data:`UNASSIGNED_COLOR`.
    palette : {"prediction", "reference"}, optional
        :func:`tree_colors`' palette. ``"reference"`` for a ground truth: light
        tints at :data:`REFERENCE_OPACITY`, drawn as outlines once :func:`apply_look` has set the
        layer's ``contour`` to :data:`REFERENCE_CONTOUR` (napari fills them in 3D), so
        that it is told apart from a result's trees (saturated, filled, opacity 0.7).
    name, scale, translate, **kwargs
        As in :func:`probability_layer`.

    Returns
    -------
    (data, meta, "labels")
        ``meta["colormap"]`` is a DirectLabelColormap (a dict if napari is missing);
        ``meta["metadata"]["napari_topo"]["n_trees"]`` the number of colours,
        ``["palette"]`` the palette and, for a reference, ``["contour"]`` the outline
        :func:`apply_look` sets (napari's Labels takes no ``contour`` argument).
    """
    data = _volume(trees, "trees")
    if not np.issubdtype(data.dtype, np.integer):
        raise ValueError(f"trees must be an integer label volume; got {data.dtype}.")
    if data.size and data.min() < 0:
        raise ValueError("trees must hold non-negative ids (0 = background).")
    top = int(data.max(initial=0))
    if n_trees is None:
        n_trees = top
    elif isinstance(n_trees, bool) or not isinstance(n_trees, int | np.integer) or n_trees < 0:
        raise ValueError(f"n_trees must be None or a non-negative integer; got {n_trees!r}.")
    n = int(n_trees)
    if palette not in PALETTES:
        raise ValueError(f"palette must be one of {PALETTES}; got {palette!r}.")
    dtype = smallest_uint(max(top, n))
    if data.dtype != dtype:
        data = data.astype(dtype)
    meta = _meta(
        "trees",
        _check_name(name),
        data.ndim,
        scale,
        translate,
        extra={"n_trees": n, "palette": palette}
        | ({} if palette == "prediction" else {"contour": REFERENCE_CONTOUR}),
        colormap=_direct_colormap(tree_colormap(n, palette)),
        opacity=0.7 if palette == "prediction" else REFERENCE_OPACITY,
        **kwargs,
    )
    return data, meta, "labels"


def points_layer(
    points,
    radius=None,
    tree=None,
    parent=None,
    *,
    name: str = "vessels",
    scale=None,
    translate=None,
    **kwargs,
):
    """Points layer of centerline points, sized by radius and coloured by tree.

    Parameters
    ----------
    points : (M, ndim) array_like
        Voxel (data) coordinates.
    radius : (M,) array_like of float, optional
        Vessel radius per point in physical units (the units of ``scale``). The marker
        diameter is the radius (half the vessel's width, so the vessel shows around
        it): napari sizes points in data pixels scaled by the last axis, so
        ``size = radius / scale[-1]`` (at least 0.5). Default: size 1.
    tree : (M,) array_like of int, optional
        Tree id per point (face colour from :func:`tree_colors`, grey for 0).
    parent : (M,) array_like of int, optional
        Parent point index per point in the centerline forest (-1 for roots), e.g.
        ``VesselAnalysis.parents``; stored with an ``id`` column (the point index) so the
        layer can be saved as SWC.
    name, scale, translate, **kwargs
        As in :func:`probability_layer`.

    Returns
    -------
    (data, meta, "points")
        ``meta["features"]`` holds ``radius`` and ``tree`` columns, and ``id`` and
        ``parent`` when ``parent`` is given. No points (an empty result) give an empty
        ``(0, ndim)`` layer that napari accepts.
    """
    p = np.asarray(points, dtype=float)
    if p.size == 0:  # keep (0, 2) as 2D, anything else empty as 3D
        p = p.reshape(0, p.shape[1] if p.ndim == 2 and p.shape[1] in (2, 3) else 3)
    if p.ndim != 2 or p.shape[1] not in (2, 3) or not np.isfinite(p).all():
        raise ValueError(f"points must be an (M, 2) or (M, 3) finite array; got {p.shape}.")
    m, ndim = p.shape
    rad = np.zeros(m) if radius is None else np.asarray(radius, dtype=float)
    tid = np.zeros(m, dtype=np.int64) if tree is None else np.asarray(tree)
    if rad.shape != (m,) or not np.isfinite(rad).all() or (rad < 0).any():
        raise ValueError(f"radius must be ({m},) finite values >= 0; got shape {rad.shape}.")
    if tid.shape != (m,) or not np.issubdtype(tid.dtype, np.integer):
        raise ValueError(f"tree must be ({m},) integers; got {tid.dtype} of shape {tid.shape}.")
    features = {"radius": rad, "tree": tid.astype(np.int64)}
    if parent is not None:
        par = np.asarray(parent)
        if (
            par.shape != (m,)
            or not np.issubdtype(par.dtype, np.integer)
            or (m and (par.min() < -1 or par.max() >= m))
        ):
            raise ValueError(f"parent must be ({m},) point indices or -1; got {par.shape}.")
        features = {"id": np.arange(m, dtype=np.int64), **features, "parent": par.astype(np.int64)}
    sc = _vector(scale, ndim, "scale", nonzero=True)
    last = abs(sc[-1]) if sc is not None else 1.0
    size = np.maximum(rad / last, 0.5) if radius is not None else np.ones(m)
    # napari reads an empty (0, 4) colour array as "no colour" and fails on it; one
    # colour for no points is accepted (and is the colour of points added later).
    face = _colors_for(tid) if m else np.asarray(UNASSIGNED_COLOR)
    meta = _meta(
        "centerline",
        _check_name(name),
        ndim,
        scale,
        translate,
        features=features,
        size=size,
        face_color=face,
        border_width=0.0,
        **kwargs,
    )
    return p, meta, "points"


def branches_layer(
    paths,
    tree=None,
    *,
    name: str = "vessels",
    scale=None,
    translate=None,
    edge_width: float = 0.5,
    ndim: int | None = None,
    measures=None,
    **kwargs,
):
    """Shapes layer with one path per branch, coloured by tree.

    Parameters
    ----------
    paths : sequence of (L, ndim) array_like
        Vertex coordinates of each branch (voxel / data coordinates). Paths with fewer
        than two vertices are left out (with their ``tree`` entry).
    tree : (N,) array_like of int, optional
        Tree id per path; default 0 (grey).
    edge_width : float, optional
        Line width in data units.
    ndim : int, optional
        Dimensionality when ``paths`` is empty (default 3).
    measures : mapping of str to (N,) array_like, optional
        More per-path columns for the layer's features, e.g. the morphometry of
        :meth:`napari_topo.analysis.VesselAnalysis.branch_table` (napari's features
        table shows, sorts and exports them).
    name, scale, translate, **kwargs
        As in :func:`probability_layer`.

    Returns
    -------
    (data, meta, "shapes")
        ``meta["features"]`` holds ``tree`` and ``branch`` (position in ``paths``), then
        the ``measures`` columns.

    Raises
    ------
    ValueError
        Paths that are not finite ``(L, ndim)`` arrays of one dimensionality, ``tree``
        or a ``measures`` column not one value per path, a bad ``edge_width``.
    """
    arrays = [np.asarray(p, dtype=float) for p in paths]
    tid = np.zeros(len(arrays), dtype=np.int64) if tree is None else np.asarray(tree)
    if tid.shape != (len(arrays),) or (tid.size and not np.issubdtype(tid.dtype, np.integer)):
        raise ValueError(f"tree must be ({len(arrays)},) integers, one per path.")
    dims = {a.shape[1] for a in arrays if a.ndim == 2}
    if any(a.ndim != 2 or not np.isfinite(a).all() for a in arrays) or len(dims) > 1:
        raise ValueError("paths must be (L, ndim) finite arrays of one dimensionality.")
    nd = dims.pop() if dims else (3 if ndim is None else int(ndim))
    if nd not in (2, 3):
        raise ValueError(f"paths must be 2D or 3D; got ndim {nd}.")
    if not isinstance(edge_width, Real) or not edge_width > 0:
        raise ValueError(f"edge_width must be a positive number; got {edge_width!r}.")
    keep = np.array([len(a) >= 2 for a in arrays], dtype=bool)
    data = [a for a, k in zip(arrays, keep, strict=True) if k]
    kept_tree = tid[keep].astype(np.int64)
    extra = {}
    for key, values in (measures or {}).items():
        column = np.asarray(values)
        if column.shape != (len(arrays),):
            raise ValueError(f"measure {key!r} must be one value per path ({len(arrays)},).")
        extra[str(key)] = column[keep]
    meta = _meta(
        "branches",
        _check_name(name),
        nd,
        scale,
        translate,
        ndim=nd,
        shape_type="path",
        edge_width=float(edge_width),
        edge_color=_colors_for(kept_tree) if data else "gray",
        face_color="transparent",
        features={"tree": kept_tree, "branch": np.flatnonzero(keep), **extra},
        **kwargs,
    )
    return data, meta, "shapes"


# --------------------------------------------------------------------------------------
# tuples -> layers, all or none
# --------------------------------------------------------------------------------------
class LayerBuildError(ValueError):
    """A layer data tuple that napari could not turn into a layer (one-line message).

    Attributes
    ----------
    name : str
        The layer's name (``meta["name"]``), or ``"<kind> layer"`` when it has none.
    layer_type : str
        napari's layer type (``"points"``, ...).
    """

    def __init__(self, name: str, layer_type: str, cause: BaseException):
        self.name, self.layer_type = name, layer_type
        reason = " ".join(str(cause).split()) or type(cause).__name__
        if len(reason) > 160:
            reason = reason[:157] + "..."
        super().__init__(
            f"could not make the {layer_type} layer '{name}' ({type(cause).__name__}: {reason})"
        )


def apply_look(layer) -> bool:
    """Set on a napari layer what its layer data tuple cannot carry, once.

    napari's ``Labels`` takes no ``contour`` argument, so a reference trees layer
    (:func:`trees_layer` with ``palette="reference"``) records its outline in its
    plugin metadata (``["contour"]``) and this sets ``layer.contour`` from it the first
    time it is called on the layer (marking it ``["look_applied"]``): a contour the user
    changes afterwards is left alone. :func:`create_layers` calls it, and the docks call
    it on every layer of their viewer (so the sample's ground truth is outlined as soon
    as any napari-topo dock is open). Any other layer is left as it is.

    Returns
    -------
    bool
        True if the layer was changed.
    """
    info = getattr(layer, "metadata", {}).get(METADATA_KEY)
    if not isinstance(info, dict) or info.get("look_applied") or "contour" not in info:
        return False
    info["look_applied"] = True
    if hasattr(layer, "contour"):
        layer.contour = int(info["contour"])
        return True
    return False


def create_layers(tuples) -> list:
    """napari layers from layer data tuples: every one of them, or none.

    Builds each layer with ``napari.layers.Layer.create`` without adding it to a viewer,
    so a caller can make all of a result's layers first (in a worker thread, say) and
    change a viewer only once every layer exists. napari is imported here.

    Parameters
    ----------
    tuples : iterable of (data, meta, layer_type)
        As the functions of this module return them.

    Returns
    -------
    list of napari.layers.Layer
        In the order of ``tuples``.

    Raises
    ------
    LayerBuildError
        If napari rejects one of them (a ``ValueError`` whose one-line message names
        the layer and the reason); no layer is returned then.

    Examples
    --------
    >>> made = create_layers([points_layer(np.zeros((0, 3)), name="empty")])  # doctest: +SKIP
    >>> made[0].name, made[0].data.shape  # doctest: +SKIP
    ('empty centerline', (0, 3))
    """
    from napari.layers import Layer

    made = []
    for item in tuples:
        try:
            data, meta, layer_type = item
        except (TypeError, ValueError) as exc:
            raise LayerBuildError("?", "unknown", exc) from exc
        meta = dict(meta or {})
        try:
            layer = Layer.create(data, meta, layer_type)
            apply_look(layer)
        except Exception as exc:  # noqa: BLE001 - any failure of napari's, named
            raise LayerBuildError(str(meta.get("name", "?")), str(layer_type), exc) from exc
        made.append(layer)
    return made
