"""Input policy: how a volume's intensities and scale are mapped for a model.

A model sees what it was trained on only if every volume reaches it the same way. This
module decides, once per volume and in one place, how that happens, and says why:

* **Intensity** (:func:`plan_intensity` -> :class:`IntensityPlan`): the model card's
  ``normalization`` (:func:`card_normalization` reads and checks it) and the volume's values
  choose between

  - *CT in Hounsfield units*: a linear window, ``[-100, 300] HU -> [0, 1]`` by default,
    clipped to ``[0, 1]`` (bone, air and the table all become 0 or 1, and the 60 HU
    between contrast-filled vessels and liver stays 15 % of the range instead of the
    3 % that a percentile scaling over air and bone leaves);
  - *anything else* (microscopy, MRA): percentiles ``0.5 -> 0``, ``99.5 -> 1``, not
    clipped to ``[0, 1]`` but limited to ``[-5, 6]`` (:data:`OUTLIER_RANGES`: a hot
    pixel or a fill value would otherwise dominate its tile's normalisation);

  and, when the model expects bright vessels and the image has dark ones, the scaled
  values are inverted (``x -> 1 - x``).
* **Scale** (:func:`plan_zoom` -> :class:`ZoomPlan`): a CT is resampled to isotropic
  voxels at its finest spacing (no finer than 0.5 mm); other images are zoomed so that
  their large vessels have a radius of about 8 voxels (well inside the 1-12 voxels the
  models are trained on).

Both are estimated from a regular strided sample of at most :data:`SAMPLE_VOXELS` voxels,
so a dask or zarr volume is never loaded whole. :func:`plan_input` does both from one
sample and returns an :class:`InputPolicy`; :func:`napari_topo.inference.pipeline.predict`
calls it and applies the result (the normaliser tile by tile, the zoom through
:func:`~napari_topo.inference.pipeline.resample_factors`).

The model card schema (``card.normalization``)::

    {"method": "auto", "ct_window": [-100, 300], "low": 0.5, "high": 99.5,
     "polarity": "bright"}                 # models trained with this policy
    {"method": "percentile", "low": 0.5, "high": 99.5}   # earlier models

``"percentile"`` cards keep exactly the earlier behaviour when nothing is chosen by hand:
percentiles for every volume (a CT too), no inversion, no automatic zoom. Choices made
by the caller (``modality="ct"``, ``window``, ``polarity``, ``zoom``) apply to every card.

No Qt and no torch here: the widgets and the CLI only collect the choices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "AUTO_NORMALIZATION",
    "AUTO_ZOOM_LIMITS",
    "AUTO_ZOOM_TARGET_RADIUS",
    "CT_TARGET_SPACING_MM",
    "DARK_SKEWNESS",
    "DEFAULT_CT_WINDOW",
    "LEGACY_NORMALIZATION",
    "MODALITIES",
    "NORMALIZATION_METHODS",
    "POLARITIES",
    "SAMPLE_VOXELS",
    "CardNormalization",
    "InputPolicy",
    "IntensityNormalizer",
    "IntensityPlan",
    "ZoomPlan",
    "card_normalization",
    "estimate_vessel_radius",
    "looks_like_hu",
    "polarity_skewness",
    "plan_input",
    "plan_intensity",
    "plan_zoom",
    "strided_sample",
]

#: Modalities a caller may choose; "auto" detects CT in HU from the values.
MODALITIES = ("auto", "ct", "microscopy")
#: Vessel polarities a caller may choose; "auto" decides from the modality and the values.
POLARITIES = ("auto", "bright", "dark")
#: ``card.normalization["method"]`` values: "auto" (this module's policy) and
#: "percentile" (earlier models: percentiles only).
NORMALIZATION_METHODS = ("percentile", "auto")
#: The vessel/soft-tissue window of contrast CT, HU, mapped to [0, 1].
DEFAULT_CT_WINDOW = (-100.0, 300.0)
#: The normalisation of cards written for models trained with this policy.
AUTO_NORMALIZATION = {
    "method": "auto",
    "ct_window": list(DEFAULT_CT_WINDOW),
    "low": 0.5,
    "high": 99.5,
    "polarity": "bright",
}
#: The normalisation of earlier cards (and of a card that names none).
LEGACY_NORMALIZATION = {"method": "percentile", "low": 0.5, "high": 99.5}
#: Outliers: values more than this many ``hi - lo`` ranges below ``lo`` or above ``hi``
#: (the scaling's two percentiles) are set to that limit, in the normaliser (scaled
#: values limited to ``[-5, 6]``) and before the polarity and vessel-size estimates. The
#: networks normalise each tile by its own mean and spread, so one voxel far out squashes
#: the whole tile: on a uint16 stack (background ~200, vessels ~600) one voxel at 65535
#: took the vessel voxels found from 3826 to 2878 and five to 386; one at 1e6 turned the
#: polarity estimate to "dark" (bad-input probe, 2026-12-02). On the three poon2015
#: two-photon development stacks the brightest voxel lies at most 4.08 ranges above the
#: 99.5th percentile (poon2015_BBB_Leakage, saturated uint8 vessels) and the darkest 0.12
#: below the 0.5th (``benchmarks/real/intensity_ranges.py``): nothing there is limited.
#: Vessels far brighter than the rest and under 0.5 % of the voxels are limited too
#: (still far above the background). A CT window clips to [0, 1] anyway.
OUTLIER_RANGES = 5.0
#: HU detection: the 1st percentile of the sample is at or below this (air, -1000 HU,
#: around the body or in the lungs; no microscope or MR scanner writes such values) ...
HU_AIR_PERCENTILE_MAX = -500.0
#: ... and every sampled value lies in this range (the HU scale: -1024 padding, air
#: -1000, dense bone and contrast up to ~3000, metal clipped at 3071 or 4095).
HU_VALUE_RANGE = (-3100.0, 4100.0)
#: Polarity "auto" outside CT: dark vessels when the skewness of the band-passed sample
#: (:func:`polarity_skewness`) is below this. Thin structures make a one-sided tail once
#: the smooth background is subtracted: bright vessels a positive skew, dark ones a
#: negative one. Measured on (64^3 and larger) synthetic volumes: bright vessels +0.8
#: (radius-20 tubes) to +6.7, realistic microscopy and windowed CT-like looks >= +0.8,
#: dark vessels (the classic generator's 10 %-dense networks on a textured background, and
#: tubes) -0.8 to -6.6; noise and a large bright region without vessels about 0, which
#: stays "bright" (the common case). The plain intensity skewness fails here: a dense
#: dark network gives only -0.35, a windowed CT look -0.26.
DARK_SKEWNESS = -0.5
#: Gaussian smoothing (sample voxels) before the polarity and the vessel-radius estimates:
#: averages out voxel noise (a 6x lower noise) while keeping vessels of a few voxels.
SMOOTHING_SIGMA = 1.0
#: The smooth background subtracted for the polarity (sample voxels): organ-sized regions
#: (a head against the dark outside, bias fields) leave little of themselves.
BACKGROUND_SIGMA = 4.0
#: Auto zoom outside CT: large vessels are brought to this radius (voxels); the models
#: are trained on radii of 1-12 voxels.
AUTO_ZOOM_TARGET_RADIUS = 8.0
#: Auto zoom outside CT is clipped to this range: never magnified (thin vessels stay as
#: they are), never shrunk more than 4x.
AUTO_ZOOM_LIMITS = (0.25, 1.0)
#: An automatic (vessel-radius) zoom below this also runs the model at twice the zoom,
#: repeatedly, up to 1, and keeps the voxel-wise maximum: shrinking a stack for its large
#: vessels (radius 30 voxels -> 8) would shrink its capillaries (radius 1-2) below a voxel.
#: Measured on vesselNN poon2015_plaqueVessels (unet-dice, stage 2; Dice, precision,
#: sensitivity): zoom 0.265 alone 0.512 / 0.999 / 0.344; max over 0.265, 0.53 and 1
#: 0.572 / 0.992 / 0.402 (benchmarks/real, development data).
MULTISCALE_BELOW = 0.75
#: Auto zoom of a CT: voxels no finer than this (mm); coarser CTs keep their finest spacing.
#: Measured on the development CT (3D-IRCADb-01, unet-projpool, liver bounding box, no
#: other change): Dice 0.51 at the native 0.57 mm, 0.48 at 0.75 mm, 0.36 at 1.0 mm,
#: 0.24 at 1.3 mm -- downsampling a CT loses the small hepatic vessels (radius 1-2 mm),
#: while the largest (portal vein, vena cava, radius up to ~12 mm) stay within the
#: 1-12 voxel radii of the training data at clinical in-plane spacings (0.5-1 mm).
#: The floor only bounds the cost for sub-0.5 mm scans.
CT_TARGET_SPACING_MM = 0.5
#: Outside CT, an axis whose voxels are more than this many times the finest (nnU-Net's
#: anisotropy threshold, 3) is not upsampled to the finest: the model sees the stack's
#: own slices along it, scaled by the zoom like the other axes. A microscope's z step is
#: coarse and its axial blur long; upsampling it 5x made vessels the models had not seen
#: (their training's axial blur reaches 4x). Measured on the three vesselNN poon2015
#: stacks (5 x 0.994 x 0.994 um, development data), unet-dice, mean Dice: z upsampled 5x
#: (before) 0.626, at most 3x 0.630, 2x 0.658, kept 0.707 (kept and not zoomed 0.669:
#: plaqueVessels, zoom 0.265, fell to 0.611), and 76-121 s a stack instead of 100-340 s.
#: A CT is still resampled to isotropic voxels: on 3D-IRCADb-01 patient 01 (1.6 x 0.57
#: mm, 2.8x) its own slices took unet-dice's Dice from 0.540 to 0.317. Models with an
#: earlier "percentile" card keep the old resampling. benchmarks/results/voxel_grid/.
ANISOTROPY_THRESHOLD = 3.0
#: Percentile of the distance to the background on the medial voxels that is taken as
#: the large-vessel radius (high, so that a few wide vessels among many thin ones count).
RADIUS_PERCENTILE = 95.0
#: Largest foreground fraction (after the Otsu threshold) still read as vessels; more
#: is tissue or background, and the radius is not estimated.
MAX_VESSEL_FRACTION = 0.5
#: Most voxels read for the estimates (the same strided sample as
#: :func:`~napari_topo.inference.sliding.normalize_percentile`).
SAMPLE_VOXELS = 1_000_000

_CARD_KEYS = {
    "method",
    "low",
    "high",
    "ct_window",
    "polarity",
    "target_radius_voxels",
    "ct_spacing_mm",
}


# ----------------------------------------------------------------------------- card


@dataclass(frozen=True)
class CardNormalization:
    """A model card's ``normalization``, checked and with its defaults filled in.

    Attributes
    ----------
    method : {"auto", "percentile"}
        "auto": CT windowed, the rest scaled by percentiles, dark vessels inverted, zoom
        chosen automatically. "percentile": percentiles for every volume, nothing else
        (models trained before this policy).
    low, high : float
        Percentiles (0-100) mapped to 0 and 1 outside CT.
    ct_window : (float, float) or None
        HU mapped to 0 and 1 for a CT ("auto" only).
    polarity : {"bright", "dark"} or None
        Vessel polarity the model expects ("auto" only; None: it was trained on both).
    target_radius_voxels : float
        Radius large vessels are zoomed to outside CT ("auto" only).
    ct_spacing_mm : float
        Voxel size a CT is resampled to ("auto" only).
    """

    method: str = "percentile"
    low: float = 0.5
    high: float = 99.5
    ct_window: tuple[float, float] | None = None
    polarity: str | None = None
    target_radius_voxels: float = AUTO_ZOOM_TARGET_RADIUS
    ct_spacing_mm: float = CT_TARGET_SPACING_MM

    @property
    def legacy(self) -> bool:
        """True for a "percentile" card (no CT window, no inversion, no auto zoom)."""
        return self.method == "percentile"


def _positive_number(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a positive number; got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{what} must be a positive number; got {value!r}")
    return v


def _check_window(window: Any, what: str = "window") -> tuple[float, float]:
    """``(lo, hi)`` as floats, or a one-line ValueError saying what was wrong."""
    if isinstance(window, str | bytes) or not isinstance(window, Sequence | np.ndarray):
        raise ValueError(f"{what} must be two numbers (low, high); got {window!r}")
    if len(window) != 2:
        raise ValueError(f"{what} must be two numbers (low, high); got {len(window)}: {window!r}")
    try:
        lo, hi = float(window[0]), float(window[1])
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be two numbers (low, high); got {window!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{what} must be finite; got {lo:g}, {hi:g}")
    if lo >= hi:
        raise ValueError(f"{what} low must be below high; got {lo:g} >= {hi:g}")
    return lo, hi


def _check_choice(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")
    return value.lower()


def card_normalization(spec: Mapping | None) -> CardNormalization:
    """Read and check a model card's ``normalization`` dict.

    Parameters
    ----------
    spec : mapping or None
        ``{"method": "auto", "ct_window": [-100, 300], "low": 0.5, "high": 99.5,
        "polarity": "bright"}`` (models trained with this policy; every key but
        ``method`` optional, plus optional ``target_radius_voxels`` and
        ``ct_spacing_mm``), or ``{"method": "percentile", "low": 0.5, "high": 99.5}``
        (earlier models). None or ``{}``: :data:`LEGACY_NORMALIZATION`. A missing
        ``method`` means "percentile".

    Returns
    -------
    CardNormalization

    Raises
    ------
    ValueError
        Unknown method or key, percentiles outside ``0 <= low < high <= 100``, a bad
        window or polarity, or "auto"-only keys on a "percentile" card.

    Examples
    --------
    >>> card_normalization({"method": "auto"}).ct_window
    (-100.0, 300.0)
    >>> card_normalization(None).legacy
    True
    """
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise ValueError(f"normalization must be a dict; got {type(spec).__name__}")
    unknown = sorted(set(spec) - _CARD_KEYS)
    if unknown:
        raise ValueError(
            f"normalization has unknown key(s) {unknown}; known: {', '.join(sorted(_CARD_KEYS))}"
        )
    method = spec.get("method", "percentile")
    if method not in NORMALIZATION_METHODS:
        raise ValueError(
            f"normalization method must be one of {', '.join(NORMALIZATION_METHODS)}; "
            f"got {method!r}"
        )
    try:
        low, high = float(spec.get("low", 0.5)), float(spec.get("high", 99.5))
    except (TypeError, ValueError):
        raise ValueError(
            f"normalization low/high must be numbers; got {spec.get('low')!r}, {spec.get('high')!r}"
        ) from None
    if not (0.0 <= low < high <= 100.0):
        raise ValueError(
            f"normalization percentiles must satisfy 0 <= low < high <= 100; got {low}, {high}"
        )
    if method == "percentile":
        extra = sorted(set(spec) - {"method", "low", "high"})
        if extra:
            raise ValueError(
                f"normalization keys {extra} need method 'auto'; a 'percentile' card scales "
                "every volume by its percentiles"
            )
        return CardNormalization("percentile", low, high)
    window = _check_window(spec.get("ct_window", DEFAULT_CT_WINDOW), "normalization ct_window")
    polarity = _check_choice(spec.get("polarity", "bright"), ("bright", "dark"), "polarity")
    target = _positive_number(
        spec.get("target_radius_voxels", AUTO_ZOOM_TARGET_RADIUS),
        "normalization target_radius_voxels",
    )
    ct_mm = _positive_number(
        spec.get("ct_spacing_mm", CT_TARGET_SPACING_MM), "normalization ct_spacing_mm"
    )
    return CardNormalization("auto", low, high, window, polarity, target, ct_mm)


# ----------------------------------------------------------------------------- sample


def strided_sample(volume: Any, max_voxels: int = SAMPLE_VOXELS) -> tuple[np.ndarray, int]:
    """A regular strided sample ``volume[o::s, o::s, ...]`` of at most ``max_voxels``.

    The smallest stride ``s`` that keeps at most ``max_voxels`` voxels, offset
    ``o = s // 2`` (away from the border); the same view as
    :func:`~napari_topo.inference.sliding.normalize_percentile`, so percentiles taken
    from it are the same. Only the sample is read: a numpy view costs nothing, a zarr
    array decodes only the chunks the view touches.

    Parameters
    ----------
    volume : array-like
        numpy, dask or zarr array, any number of dimensions, non-empty.
    max_voxels : int
        At least 1.

    Returns
    -------
    sample : ndarray
        Same dtype and dimensionality as ``volume``.
    stride : int
        The step along every axis (1: the whole volume).
    """
    if isinstance(volume, list | tuple):
        volume = np.asarray(volume)
    shape = tuple(int(s) for s in getattr(volume, "shape", ()))
    if not shape or min(shape) == 0:
        raise ValueError(f"volume must be a non-empty array; got shape {shape}")
    if not isinstance(max_voxels, int | np.integer) or max_voxels < 1:
        raise ValueError(f"max_voxels must be an int >= 1; got {max_voxels!r}")
    stride = 1
    if math.prod(shape) > max_voxels:
        stride = max(1, math.floor((math.prod(shape) / max_voxels) ** (1.0 / len(shape))))
        while math.prod(math.ceil(n / stride) for n in shape) > max_voxels:
            stride += 1
    view = volume[tuple(slice(min(stride // 2, n - 1), None, stride) for n in shape)]
    return np.asarray(view), stride


def _finite_values(sample: np.ndarray) -> np.ndarray:
    values = np.asarray(sample).astype(np.float64, copy=False).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError(
            "the volume holds no finite value where sampled (NaN or infinite): nothing to segment"
        )
    return values


def outlier_limits(values: np.ndarray, low: float = 0.5, high: float = 99.5):
    """``(lo - k r, hi + k r)`` with ``lo, hi`` the ``low``/``high`` percentiles of the
    finite ``values``, ``r = hi - lo`` and ``k =`` :data:`OUTLIER_RANGES`; ``(-inf, inf)``
    when ``r`` is 0 or nothing is finite."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return -np.inf, np.inf
    lo, hi = np.percentile(v, [low, high])
    r = float(hi - lo)
    if not r > 0.0:
        return -np.inf, np.inf
    return float(lo) - OUTLIER_RANGES * r, float(hi) + OUTLIER_RANGES * r


def _smoothed(sample: np.ndarray) -> np.ndarray:
    """The sample as float32, non-finite voxels set to the median, outliers limited
    (:func:`outlier_limits`), Gaussian-smoothed."""
    from scipy import ndimage as ndi

    arr = np.asarray(sample, dtype=np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        arr = arr.copy()
        arr[bad] = np.median(arr[~bad]) if (~bad).any() else 0.0
    lo, hi = outlier_limits(arr)
    if np.isfinite(lo) and (arr.min() < lo or arr.max() > hi):
        arr = np.clip(arr, lo, hi)
    sigma = [SMOOTHING_SIGMA if n > 1 else 0.0 for n in arr.shape]
    return ndi.gaussian_filter(arr, sigma=sigma, mode="nearest")


def _skewness(values: np.ndarray) -> float:
    """Moment skewness of the values inside their 0.1-99.9 percentiles (0 when flat)."""
    from scipy.stats import skew

    lo, hi = np.percentile(values, [0.1, 99.9])
    v = np.clip(values.astype(np.float64, copy=False), lo, hi)
    if float(v.std()) == 0.0:
        return 0.0
    return float(skew(v))


def polarity_skewness(sample: np.ndarray, *, smoothed: np.ndarray | None = None) -> float:
    """Skewness of a band-passed image: > 0 for bright thin structures, < 0 for dark ones.

    ``G(SMOOTHING_SIGMA) - G(BACKGROUND_SIGMA)`` (Gaussian filters, in voxels of
    ``sample``) removes voxel noise and the smooth background, leaving vessels as a
    one-sided tail; its moment skewness (inside the 0.1-99.9 percentiles) is compared
    with :data:`DARK_SKEWNESS`.

    Parameters
    ----------
    sample : ndarray
        The image (any real dtype; NaN set to the median).
    smoothed : ndarray, optional
        ``sample`` already smoothed with :data:`SMOOTHING_SIGMA` (saves one filter).

    Returns
    -------
    float
    """
    from scipy import ndimage as ndi

    fine = _smoothed(sample) if smoothed is None else smoothed
    sigma = [BACKGROUND_SIGMA if n > 1 else 0.0 for n in fine.shape]
    band = fine - ndi.gaussian_filter(fine, sigma=sigma, mode="nearest")
    return _skewness(band.ravel())


# ----------------------------------------------------------------------------- intensity


def looks_like_hu(sample: np.ndarray, dtype: Any = None) -> tuple[bool, str]:
    """Whether sampled values look like a CT in Hounsfield units, and why (one sentence).

    A CT in HU when all of: a signed dtype (unsigned integers cannot hold air at -1000);
    the 1st percentile at or below :data:`HU_AIR_PERCENTILE_MAX` (air in the field of
    view); every value inside :data:`HU_VALUE_RANGE` (a value below it shared by every
    voxel that low, e.g. -32768 outside the scanner's circular field of view, is
    padding and ignored); integer values (an integer dtype, or whole numbers in a float
    array: a NIfTI scaled by an integer slope).

    Parameters
    ----------
    sample : ndarray
        Values of the volume (a strided sample is enough; NaN ignored).
    dtype : numpy dtype, optional
        The volume's dtype (default: the sample's).

    Returns
    -------
    is_hu : bool
    reason : str
        E.g. ``"CT in Hounsfield units detected (1st percentile -1000, values -1024..1432,
        integers)"``.
    """
    dtype = np.dtype(dtype if dtype is not None else np.asarray(sample).dtype)
    if dtype.kind in "ub":
        return False, f"not CT: {dtype} values cannot be Hounsfield units (no negatives)"
    values = _finite_values(sample)
    p1 = float(np.percentile(values, 1.0))
    vmin, vmax = float(values.min()), float(values.max())
    padding = ""
    low_range, high_range = HU_VALUE_RANGE
    if vmin < low_range and np.all(values[values < low_range] == vmin):
        padding = f", padding {vmin:g} ignored"
        values = values[values > vmin]
        if values.size == 0:
            return False, f"not CT: every voxel sampled is {vmin:g}"
        p1 = float(np.percentile(values, 1.0))
        vmin = float(values.min())
    integer = dtype.kind == "i" or bool(np.all(values == np.round(values)))
    where = f"1st percentile {p1:.0f}, values {vmin:.0f}..{vmax:.0f}{padding}"
    if p1 > HU_AIR_PERCENTILE_MAX:
        return False, f"not CT in HU: 1st percentile {p1:.4g} > {HU_AIR_PERCENTILE_MAX:g} (no air)"
    if vmin < low_range or vmax > high_range:
        return False, (
            f"not CT in HU: values {vmin:.4g}..{vmax:.4g} leave the HU range "
            f"{low_range:g}..{high_range:g}"
        )
    if not integer:
        return False, f"not CT in HU: fractional values ({where})"
    return True, f"CT in Hounsfield units detected ({where}, integers)"


class IntensityNormalizer(NamedTuple):
    """``(x - lo) / (hi - lo)``, then clipped to [0, 1] (``clip``) or else limited to
    ``[-OUTLIER_RANGES, 1 + OUTLIER_RANGES]`` (:data:`OUTLIER_RANGES`), and/or inverted
    (``1 - y``).

    Works on numpy arrays and torch tensors alike (tile by tile: ``model(norm(tile))``);
    unpacks as ``(lo, hi, clip, invert)``. When ``hi <= lo`` the scale is 1.
    """

    lo: float
    hi: float
    clip: bool = False
    invert: bool = False

    def __call__(self, x: Any) -> Any:
        scale = self.hi - self.lo if self.hi > self.lo else 1.0
        y = (x - self.lo) / scale
        if self.clip:
            y = y.clip(0.0, 1.0)
        else:
            y = y.clip(-OUTLIER_RANGES, 1.0 + OUTLIER_RANGES)
        if self.invert:
            y = 1.0 - y
        return y


@dataclass(frozen=True)
class IntensityPlan:
    """How a volume's intensities reach the model, and why.

    Attributes
    ----------
    modality : {"ct", "microscopy"}
        "ct": a CT in Hounsfield units; "microscopy": anything else (MRA included).
    method : {"window", "percentile"}
        A fixed window in the image's units, or percentiles of the image.
    lo, hi : float
        Input values mapped to 0 and 1 (HU for a CT window).
    clip : bool
        Whether the scaled values are clipped to [0, 1] (CT windows).
    polarity : {"bright", "dark"}
        Vessels brighter or darker than their surroundings in the image.
    invert : bool
        Whether the scaled values are inverted (``1 - x``) so that the model sees the
        polarity it was trained on.
    window : (float, float) or None
        The window, for ``method == "window"``.
    percentiles : (float, float) or None
        The percentiles, for ``method == "percentile"``.
    modality_source, scaling_source, polarity_source : str
        Who chose: "user", "header" (the file), "detected" (the values), "card" (the
        model card), "modality" (CT vessels are bright).
    modality_reason, scaling_reason, polarity_reason : str
        One sentence each, for the user.
    card_method : {"auto", "percentile"}
        The card's normalisation method.
    decided_on : str
        What the values were sampled from when not the volume itself ("the whole
        image" for a crop, :func:`plan_input`'s ``intensity_from``); "" otherwise.
    """

    modality: str
    method: str
    lo: float
    hi: float
    clip: bool
    polarity: str
    invert: bool
    window: tuple[float, float] | None = None
    percentiles: tuple[float, float] | None = None
    modality_source: str = "detected"
    scaling_source: str = "card"
    polarity_source: str = "detected"
    modality_reason: str = ""
    scaling_reason: str = ""
    polarity_reason: str = ""
    card_method: str = "auto"
    decided_on: str = ""

    @property
    def normalizer(self) -> IntensityNormalizer:
        """The callable that applies this plan to an array or tensor (tile by tile)."""
        return IntensityNormalizer(self.lo, self.hi, self.clip, self.invert)

    def __call__(self, x: Any) -> Any:
        """``self.normalizer(x)``."""
        return self.normalizer(x)

    def describe(self) -> str:
        """One line: modality (and who chose it), scaling, polarity.

        Examples: ``"CT in HU (detected) window -100..300 HU, bright vessels"``,
        ``"microscopy/other (detected) percentiles 0.5..99.5 (112..3480), dark vessels
        (detected, inverted)"``.
        """
        mod = "CT in HU" if self.modality == "ct" else "microscopy/other"
        who = {"user": "chosen", "header": "from the file"}.get(self.modality_source, "detected")
        if self.method == "window":
            unit = " HU" if self.modality == "ct" else ""
            scaling = f"window {self.lo:g}..{self.hi:g}{unit}"
            if self.scaling_source == "user":
                scaling += " (chosen)"
        else:
            p = self.percentiles or (0.0, 100.0)
            scaling = f"percentiles {p[0]:g}..{p[1]:g} ({self.lo:.4g}..{self.hi:.4g})"
            if self.card_method == "percentile" and self.modality == "ct":
                scaling += " (model card: percentiles only)"
        notes = []
        if self.polarity_source == "user":
            notes.append("chosen")
        elif self.polarity_source == "detected":
            notes.append("detected")
        if self.invert:
            notes.append("inverted")
        pol = f"{self.polarity} vessels" + (f" ({', '.join(notes)})" if notes else "")
        on = f", values of {self.decided_on}" if self.decided_on else ""
        return f"{mod} ({who}{on}) {scaling}, {pol}"

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON types (tuples as lists)."""
        out = asdict(self)
        for key in ("window", "percentiles"):
            if out[key] is not None:
                out[key] = [float(v) for v in out[key]]
        return out


def _check_header_hint(header_hint: Any) -> str | None:
    if header_hint is None:
        return None
    if not isinstance(header_hint, str):
        raise ValueError(f"header_hint must be a string such as 'ct' or 'mr'; got {header_hint!r}")
    return header_hint.strip().lower() or None


def _plan_intensity_from_sample(
    sample: np.ndarray,
    dtype: np.dtype,
    card: CardNormalization,
    modality: str,
    window: tuple[float, float] | None,
    polarity: str,
    hint: str | None,
) -> tuple[IntensityPlan, np.ndarray | None]:
    """The plan, and the smoothed sample when it was computed (reused for the zoom)."""
    # --- modality
    if modality != "auto":
        mod, mod_src = modality, "user"
        mod_reason = f"{'CT in HU' if mod == 'ct' else 'microscopy/other'} chosen by the user"
    elif hint is not None:
        mod = "ct" if hint == "ct" else "microscopy"
        mod_src = "header"
        mod_reason = f"the file header says modality {hint.upper()}"
    else:
        is_hu, mod_reason = looks_like_hu(sample, dtype)
        mod, mod_src = ("ct" if is_hu else "microscopy"), "detected"

    # --- scaling
    percentiles, scale_src = None, "card"
    if window is not None:
        scale_src = "user"
        method, (lo, hi), clip = "window", window, mod == "ct"
        scale_reason = f"window {lo:g}..{hi:g} chosen by the user" + (
            ", clipped to [0, 1]" if clip else ""
        )
    elif mod == "ct" and (not card.legacy or mod_src == "user"):
        win = card.ct_window or DEFAULT_CT_WINDOW
        method, (lo, hi), clip = "window", win, True
        scale_reason = (
            f"CT window {win[0]:g}..{win[1]:g} HU -> [0, 1], clipped (vessels against "
            "liver and soft tissue; air, bone and metal saturate)"
        )
        window = win
    else:
        values = _finite_values(sample)
        method, clip = "percentile", False
        percentiles = (card.low, card.high)
        lo, hi = (float(v) for v in np.percentile(values, [card.low, card.high]))
        scale_reason = f"percentiles {card.low:g}..{card.high:g} -> 0..1 ({lo:.4g}..{hi:.4g})"
        if hi <= lo:
            # Sparse bright structures can fill fewer voxels than the upper percentile:
            # fall back to the sample's full range; a constant volume has nothing to find.
            lo, hi = float(values.min()), float(values.max())
            percentiles = (0.0, 100.0)
            if hi <= lo:
                raise ValueError(
                    f"the volume is empty: every voxel sampled has the value {lo:g}, so "
                    "there is nothing to segment"
                )
            scale_reason = (
                f"full range {lo:.4g}..{hi:.4g} -> 0..1 (the {card.low:g}..{card.high:g} "
                "percentiles are equal: sparse structures)"
            )
        if mod == "ct" and card.legacy:
            scale_reason += "; this model's card asks for percentiles, not a CT window"

    # --- polarity
    smooth = None
    if polarity != "auto":
        pol, pol_src, pol_reason = polarity, "user", f"{polarity} vessels chosen by the user"
    elif mod == "ct":
        pol, pol_src = "bright", "modality"
        pol_reason = "bright vessels: contrast-enhanced CT"
    else:
        smooth = _smoothed(sample)
        skew = polarity_skewness(sample, smoothed=smooth)
        pol = "dark" if skew < DARK_SKEWNESS else "bright"
        pol_src = "detected"
        pol_reason = (
            f"{pol} vessels: the band-passed intensities have skewness {skew:.2f} "
            f"({'below' if pol == 'dark' else 'not below'} {DARK_SKEWNESS:g}; thin dark "
            "vessels give a long dark tail, bright ones a bright tail)"
        )
    if card.legacy:
        # Earlier models were trained on both polarities: only an explicit choice inverts.
        invert = pol_src == "user" and pol == "dark"
        if pol_src != "user":
            pol_reason += "; not inverted (this model was trained on both polarities)"
    else:
        invert = pol != card.polarity
        if invert:
            pol_reason += f"; inverted, the model expects {card.polarity} vessels"
    plan = IntensityPlan(
        modality=mod,
        method=method,
        lo=float(lo),
        hi=float(hi),
        clip=bool(clip),
        polarity=pol,
        invert=bool(invert),
        window=None if method != "window" else (float(lo), float(hi)),
        percentiles=percentiles,
        modality_source=mod_src,
        scaling_source=scale_src,
        polarity_source=pol_src,
        modality_reason=mod_reason,
        scaling_reason=scale_reason,
        polarity_reason=pol_reason,
        card_method=card.method,
    )
    return plan, smooth


def _check_choices(modality, window, polarity, header_hint):
    modality = _check_choice(modality, MODALITIES, "modality")
    polarity = _check_choice(polarity, POLARITIES, "polarity")
    window = None if window is None else _check_window(window)
    return modality, window, polarity, _check_header_hint(header_hint)


def _dtype_of(volume: Any, sample: np.ndarray) -> np.dtype:
    try:
        return np.dtype(volume.dtype)
    except (AttributeError, TypeError):
        return sample.dtype


def plan_intensity(
    volume: Any,
    card_normalization_spec: Mapping | CardNormalization | None = None,
    *,
    modality: str = "auto",
    window: Sequence[float] | None = None,
    polarity: str = "auto",
    header_hint: str | None = None,
    sample: int = SAMPLE_VOXELS,
) -> IntensityPlan:
    """Decide how the intensities of ``volume`` are mapped for a model.

    Parameters
    ----------
    volume : array-like
        numpy, dask or zarr, usually (z, y, x); only a strided sample of at most
        ``sample`` voxels is read (:func:`strided_sample`).
    card_normalization_spec : dict, CardNormalization or None
        The model card's ``normalization`` (:func:`card_normalization`).
    modality : {"auto", "ct", "microscopy"}
        "auto": CT in HU when ``header_hint`` says "ct" or the values look like it
        (:func:`looks_like_hu`), otherwise microscopy/other.
    window : (low, high), optional
        A window in the image's units (HU for a CT) mapped to [0, 1]; clipped for a CT.
        Overrides the card's window and the percentiles.
    polarity : {"auto", "bright", "dark"}
        Vessels brighter or darker than their surroundings. "auto": bright for a CT
        (contrast-enhanced); otherwise dark when the skewness of the band-passed sample
        (:func:`polarity_skewness`) is below :data:`DARK_SKEWNESS` (a heuristic: thin
        dark vessels on a brighter background give a long dark tail once the smooth
        background is removed), else bright.
    header_hint : str, optional
        The modality a file header states ("ct", "mr", ...); "ct" makes it a CT, any
        other value not. Ignored when ``modality`` is not "auto".
    sample : int
        Most voxels read.

    Returns
    -------
    IntensityPlan
        Call it (or its ``normalizer``) on the volume or on tiles.

    Raises
    ------
    ValueError
        A bad modality, polarity or window (``low >= high``, non-finite), a bad card
        normalisation, a volume without finite voxels, or a constant volume.

    Notes
    -----
    A "percentile" (earlier) card with every choice "auto" gives today's mapping: the
    card's percentiles, never clipped or inverted, even on a CT (the plan still says it
    looks like one).

    Examples
    --------
    >>> ct = np.full((8, 8, 8), -1000, np.int16); ct[2:6, 2:6, 2:6] = 100
    >>> plan = plan_intensity(ct, {"method": "auto"})
    >>> plan.modality, plan.window, plan.polarity
    ('ct', (-100.0, 300.0), 'bright')
    >>> float(plan(np.float32(100)))
    0.5
    """
    card = (
        card_normalization_spec
        if isinstance(card_normalization_spec, CardNormalization)
        else card_normalization(card_normalization_spec)
    )
    modality, window, polarity, hint = _check_choices(modality, window, polarity, header_hint)
    arr, _ = strided_sample(volume, sample)
    plan, _ = _plan_intensity_from_sample(
        arr, _dtype_of(volume, arr), card, modality, window, polarity, hint
    )
    return plan


# ----------------------------------------------------------------------------- zoom


@dataclass(frozen=True)
class ZoomPlan:
    """The extra resampling factor for the model, and why.

    Attributes
    ----------
    zoom : float or (float, float, float)
        Multiplies :func:`~napari_topo.inference.pipeline.resample_factors`' factors to
        the finest voxel size: < 1 shrinks the volume (thick vessels), 1 leaves it (an
        axis the policy keeps starts from its own voxel size instead).
    source : {"user", "ct-spacing", "vessel-radius", "none"}
        Who chose it: the caller, the CT voxel size, the estimated vessel radius, or
        nobody (1, with the reason why not).
    reason : str
        One sentence for the user.
    radius_voxels : float or None
        The large-vessel radius estimated (finest-spacing voxels), when estimated.
    target_spacing : float or None
        The voxel size a CT is resampled to (units of ``spacing``, mm).
    also : tuple of float
        Further zooms the model also runs at, for the thin vessels a small ``zoom``
        would shrink below a voxel (:data:`MULTISCALE_BELOW`); the vessel probability
        is the voxel-wise maximum over all zooms. Empty: one zoom.
    """

    zoom: float | tuple[float, float, float]
    source: str
    reason: str
    radius_voxels: float | None = None
    target_spacing: float | None = None
    also: tuple[float, ...] = ()

    @property
    def zooms(self) -> tuple:
        """Every zoom the model runs at: ``zoom``, then ``also`` (fused by maximum)."""
        return (self.zoom, *self.also)

    def describe(self) -> str:
        """One line, e.g. ``"zoom 0.57 -> 1.0 mm voxels"``, ``"zoom 0.4 (vessel radius
        ~20 voxels -> ~8)"``, ``"zoom 1"``."""
        z = self.zoom
        text = (
            "zoom " + "x".join(f"{v:.3g}" for v in z) if isinstance(z, tuple) else f"zoom {z:.3g}"
        )
        if self.source == "ct-spacing" and self.target_spacing is not None:
            text += f" -> {self.target_spacing:.3g} mm voxels"
        elif self.source == "vessel-radius" and self.radius_voxels is not None:
            after = self.radius_voxels * float(np.mean(z))
            if np.allclose(z, 1.0):  # nothing to shrink: say so rather than "~7 -> ~7"
                text += f" (vessel radius ~{self.radius_voxels:.2g} voxels, no resizing needed)"
            else:
                text += f" (vessel radius ~{self.radius_voxels:.3g} voxels -> ~{after:.3g})"
        elif self.source == "user":
            text += " (chosen)"
        if self.also:
            text += " + zoom " + ", ".join(f"{v:.3g}" for v in self.also) + " for thin vessels"
        return text

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if isinstance(self.zoom, tuple):
            out["zoom"] = [float(v) for v in self.zoom]
        out["also"] = [float(v) for v in self.also]
        return out


def _check_zoom(zoom: Any) -> str | float | tuple[float, float, float] | ZoomPlan | None:
    if zoom is None or isinstance(zoom, ZoomPlan):
        return zoom
    if isinstance(zoom, str):
        if zoom.strip().lower() == "auto":
            return "auto"
        try:
            zoom = float(zoom)
        except ValueError:
            raise ValueError(f"zoom must be 'auto' or a positive number; got {zoom!r}") from None
    try:
        z = np.asarray(zoom, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"zoom must be 'auto' or a positive number; got {zoom!r}") from None
    if z.shape not in ((), (3,)) or not np.all(np.isfinite(z)) or np.any(z <= 0):
        raise ValueError(f"zoom must be 'auto', a positive number or 3 of them; got {zoom!r}")
    return float(z) if z.ndim == 0 else tuple(float(v) for v in z)


def _spacing3(spacing: Any) -> np.ndarray | None:
    """``None`` stays ``None``; otherwise the metrics' spacing check (3 positive numbers)."""
    from ..topology.metrics import _spacing_array

    return None if spacing is None else _spacing_array(spacing, 3)


def estimate_vessel_radius(
    image: np.ndarray, *, spacing: Sequence[float] | None = None, smoothed: bool = False
) -> tuple[float | None, str]:
    """Radius of the large vessels of a bright-vessel image, in voxels of the finest spacing.

    The recipe, on a (small) array such as a strided sample:

    1. Gaussian smoothing (sigma :data:`SMOOTHING_SIGMA` voxels) against voxel noise,
       unless ``smoothed``;
    2. Otsu's threshold: the foreground is the bright part; if it is empty or fills more
       than :data:`MAX_VESSEL_FRACTION` of the image it is not vessels, and no radius is
       given;
    3. pieces under 27 voxels (noise) are dropped;
    4. Euclidean distance to the background (with ``spacing``, in units of its smallest
       entry) on the medial voxels (local maxima of the distance in 3x3x3);
    5. the radius is the :data:`RADIUS_PERCENTILE` percentile of those distances minus
       half a voxel (the distance at a digital centre counts the centre voxel itself):
       high, so that a few wide vessels among many capillaries set it.

    Parameters
    ----------
    image : ndarray (z, y, x)
        Bright vessels on a darker background (invert dark-vessel images first).
    spacing : sequence of 3 float, optional
        The voxel size of ``image`` (e.g. a strided sample's: stride x the volume's).
    smoothed : bool
        ``image`` is already smoothed.

    Returns
    -------
    radius : float or None
        None when no vessels were found.
    reason : str
        One sentence: how it was found or why not.
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    from .. import _cc3d as cc3d

    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 3:
        raise ValueError(f"image must be 3D (z, y, x); got shape {img.shape}")
    sp = _spacing3(spacing)
    sampling = np.ones(3) if sp is None else sp / sp.min()
    smooth = img if smoothed else _smoothed(img)
    if float(smooth.max()) <= float(smooth.min()):
        return None, "no vessel radius estimated: the image is flat"
    thr = float(threshold_otsu(smooth))
    fg = smooth > thr
    frac = float(fg.mean())
    if frac == 0.0 or frac > MAX_VESSEL_FRACTION:
        return None, (
            f"no vessel radius estimated: the bright part fills {100 * frac:.0f} % of the "
            "volume, not vessels"
        )
    fg = cc3d.dust(fg, threshold=27, connectivity=26)
    if not fg.any():
        return None, "no vessel radius estimated: only specks above the Otsu threshold"
    dist = ndi.distance_transform_edt(fg, sampling=sampling)
    medial = fg & (dist >= ndi.maximum_filter(dist, size=3))
    radius = float(np.percentile(dist[medial], RADIUS_PERCENTILE))
    return radius, (
        f"large-vessel radius ~{radius:.3g} voxels ({RADIUS_PERCENTILE:g}th percentile of "
        f"the distance to the background on medial voxels above Otsu's threshold, "
        f"{100 * frac:.1f} % of the volume)"
    )


def _plan_zoom(
    volume: Any,
    plan: IntensityPlan,
    card: CardNormalization,
    spacing: np.ndarray | None,
    zoom: Any,
    sample: np.ndarray | None,
    stride: int,
    smooth: np.ndarray | None,
    max_voxels: int,
) -> ZoomPlan:
    if zoom is None:
        return ZoomPlan(1.0, "none", "not zoomed (zoom=None)")
    if isinstance(zoom, ZoomPlan):  # an earlier plan's, kept exactly (its zooms too)
        return zoom
    if zoom != "auto":
        return ZoomPlan(zoom, "user", "zoom chosen by the user")
    if card.legacy:
        return ZoomPlan(
            1.0,
            "none",
            "not zoomed: this model's card (percentile normalisation) predates the automatic "
            "zoom; give a zoom (e.g. 0.5) for vessels thicker than 6 voxels",
        )
    if plan.modality == "ct":
        if spacing is None:
            return ZoomPlan(
                1.0, "none", "not zoomed: a CT without voxel spacing (give the spacing in mm)"
            )
        finest = float(spacing.min())
        target = max(card.ct_spacing_mm, finest)
        z = finest / target
        return ZoomPlan(
            z,
            "ct-spacing",
            f"CT voxels of {finest:.3g} mm resampled to {target:.3g} mm"
            + (" (never finer than the data)" if target == finest else ""),
            target_spacing=target,
        )
    if sample is None:
        sample, stride = strided_sample(volume, max_voxels)
    if sample.ndim != 3:
        return ZoomPlan(1.0, "none", "not zoomed: not a 3D volume")
    if smooth is None:
        smooth = _smoothed(sample)
    bright = plan.normalizer(smooth)  # the polarity the model sees: bright vessels
    sample_spacing = (np.ones(3) if spacing is None else spacing) * stride
    radius, why = estimate_vessel_radius(bright, spacing=sample_spacing, smoothed=True)
    if radius is None:
        return ZoomPlan(1.0, "none", f"not zoomed: {why}")
    if stride != 1:  # sample voxels -> voxels of the volume's finest spacing
        why = f"{why}; x{stride} for the sample's stride = ~{radius * stride:.3g} voxels"
    radius *= stride
    lo, hi = AUTO_ZOOM_LIMITS
    target = card.target_radius_voxels
    z = float(np.clip(target / radius, lo, hi))
    also: list[float] = []
    if z < MULTISCALE_BELOW:
        nxt = 2.0 * z
        while nxt < MULTISCALE_BELOW:
            also.append(round(nxt, 4))
            nxt *= 2.0
        also.append(1.0)
    reason = f"{why}; zoom {target:g}/{radius:.3g} clipped to {lo:g}..{hi:g}"
    if also:
        reason += (
            "; also run at zoom "
            + ", ".join(f"{v:.3g}" for v in also)
            + " for thin vessels (voxel-wise maximum)"
        )
    return ZoomPlan(z, "vessel-radius", reason, radius_voxels=radius, also=tuple(also))


def plan_zoom(
    volume: Any,
    plan: IntensityPlan,
    card_normalization_spec: Mapping | CardNormalization | None = None,
    *,
    spacing: float | Sequence[float] | None = None,
    zoom: str | float | Sequence[float] | None = "auto",
    sample: int = SAMPLE_VOXELS,
) -> ZoomPlan:
    """Choose the zoom that brings the vessels of ``volume`` to the model's scale.

    Parameters
    ----------
    volume : array-like (z, y, x)
        Only a strided sample is read, and only for the vessel-radius estimate.
    plan : IntensityPlan
        From :func:`plan_intensity` (modality; the normaliser makes vessels bright).
    card_normalization_spec : dict, CardNormalization or None
        The model card's ``normalization``.
    spacing : float or sequence of 3 float, optional
        Voxel size (mm for a CT).
    zoom : "auto", float, sequence of 3 float or None
        A number (or 3) is used as given; None means 1. "auto":

        * "percentile" (earlier) cards: 1, as before;
        * a CT: resampled to ``max(ct_spacing_mm, min(spacing))`` voxels (0.5 mm
          floor), i.e. ``zoom = min(spacing) / max(0.5 mm, min(spacing))``; 1
          without a spacing;
        * otherwise: ``clip(target / r, 0.25, 1)`` with ``r`` the large-vessel radius
          (:func:`estimate_vessel_radius`, on the normalised sample) and ``target`` the
          card's ``target_radius_voxels`` (8); 1 when no vessels are found. Below
          :data:`MULTISCALE_BELOW` the plan's ``also`` adds 2x, 4x ... that zoom, and 1,
          for the thin vessels (``predict`` keeps the maximum).
    sample : int
        Most voxels read.

    Returns
    -------
    ZoomPlan

    Raises
    ------
    ValueError
        A zoom that is not "auto", None or positive; a bad spacing.
    """
    card = (
        card_normalization_spec
        if isinstance(card_normalization_spec, CardNormalization)
        else card_normalization(card_normalization_spec)
    )
    return _plan_zoom(
        volume, plan, card, _spacing3(spacing), _check_zoom(zoom), None, 1, None, sample
    )


# ----------------------------------------------------------------------------- together


def _voxel_size(size: Sequence[float]) -> str:
    """``"2.49"`` for a cube, ``"5x0.994x0.994"`` otherwise."""
    if np.allclose(size, size[0], rtol=1e-3):
        return f"{size[0]:.3g}"
    return "x".join(f"{v:.3g}" for v in size)


@dataclass(frozen=True)
class InputPolicy:
    """Everything decided about a volume before the model sees it.

    Attributes
    ----------
    intensity : IntensityPlan
    zoom : ZoomPlan
    factors : (float, float, float) or None
        Per-axis resampling factors applied (spacing x zoom), filled in by
        :func:`~napari_topo.inference.pipeline.predict`.
    spacing : (float, float, float) or None
        The input's voxel size (z, y, x) the factors were computed from, when known
        (filled in with ``factors``); the model's voxels are ``spacing / factors``.
    """

    intensity: IntensityPlan
    zoom: ZoomPlan
    factors: tuple[float, float, float] | None = None
    spacing: tuple[float, float, float] | None = None

    @property
    def normalizer(self) -> IntensityNormalizer:
        """The intensity mapping, callable tile by tile."""
        return self.intensity.normalizer

    @property
    def keep_coarse_axes(self) -> bool:
        """Whether axes more than :data:`ANISOTROPY_THRESHOLD` times the finest keep
        their voxels (never upsampled; pass it to
        :func:`~napari_topo.inference.pipeline.resample_factors`): every modality but
        CT, for models with an "auto" normalisation (earlier "percentile" cards keep
        exactly the earlier input)."""
        return self.intensity.modality != "ct" and self.intensity.card_method != "percentile"

    def kept_axes(self) -> tuple[str, ...]:
        """The axes (letters of "zyx") that :attr:`keep_coarse_axes` does not upsample to
        the finest voxel size (the zoom still scales them)."""
        if self.spacing is None or not self.keep_coarse_axes:
            return ()
        sp = np.asarray(self.spacing, dtype=float)
        ratio = sp / sp.min()
        return tuple(ax for ax, r in zip("zyx", ratio, strict=True) if r > ANISOTROPY_THRESHOLD)

    def coarse_axes_reason(self) -> str:
        """One sentence on the axes not upsampled to the finest voxel size ("" when none)."""
        kept = self.kept_axes()
        if not kept:
            return ""
        sp = np.asarray(self.spacing, dtype=float)
        parts = ", ".join(f"{ax} {sp['zyx'.index(ax)] / sp.min():.3g}x" for ax in kept)
        zoomed = self.zoom.zoom != 1.0
        return (
            f"not upsampled to the finest voxel size, being over {ANISOTROPY_THRESHOLD:g}x "
            f"coarser ({parts}): the model sees the stack's own "
            + ("slices" if kept == ("z",) else "voxels along it")
            + (", scaled by the zoom like the other axes" if zoomed else "")
        )

    def describe(self, unit: str | None = None) -> str:
        """One line, e.g. ``"CT in HU (detected) window -100..300 HU, bright vessels,
        zoom 1 -> 0.57 mm voxels"`` or, for a stack with a known voxel size,
        ``"microscopy/other (detected) percentiles ..., zoom 0.4 (vessel radius ~20
        voxels -> ~8), voxels 5x0.994x0.994 um -> 12.5x2.49x2.49 um (z not upsampled)"``
        (the input's voxel size and the one the model sees, in ``unit`` when the caller
        knows it, e.g. from the file's metadata; the numbers alone otherwise; axes over
        :data:`ANISOTROPY_THRESHOLD` times the finest are named, see
        :meth:`coarse_axes_reason`)."""
        text = f"{self.intensity.describe()}, {self.zoom.describe()}"
        if self.spacing is None or self.factors is None or self.zoom.source == "ct-spacing":
            return text  # a CT's zoom already names the voxel size it goes to
        seen = tuple(s / f for s, f in zip(self.spacing, self.factors, strict=True))
        suffix = f" {unit}" if unit else ""
        text += f", voxels {_voxel_size(self.spacing)}{suffix}"
        if not np.allclose(self.factors, 1.0):
            text += f" -> {_voxel_size(seen)}{suffix}"
        kept = self.kept_axes()
        if kept:
            text += f" ({' and '.join(kept)} not upsampled)"
        return text

    def reasons(self) -> list[str]:
        """The sentences behind each choice: modality, scaling, polarity, zoom."""
        i = self.intensity
        out = [i.modality_reason, i.scaling_reason, i.polarity_reason, self.zoom.reason]
        kept = self.coarse_axes_reason()
        return out + [kept] if kept else out

    def to_dict(self) -> dict[str, Any]:
        """JSON types: ``{"summary", "intensity", "zoom", "factors", "spacing",
        "voxel_grid"}`` (the last: :meth:`coarse_axes_reason`, or None)."""
        return {
            "summary": self.describe(),
            "intensity": self.intensity.to_dict(),
            "zoom": self.zoom.to_dict(),
            "factors": None if self.factors is None else [float(f) for f in self.factors],
            "spacing": None if self.spacing is None else [float(v) for v in self.spacing],
            "voxel_grid": self.coarse_axes_reason() or None,
        }


def plan_input(
    volume: Any,
    card_normalization_spec: Mapping | CardNormalization | None = None,
    *,
    modality: str = "auto",
    window: Sequence[float] | None = None,
    polarity: str = "auto",
    zoom: str | float | Sequence[float] | None = "auto",
    spacing: float | Sequence[float] | None = None,
    header_hint: str | None = None,
    sample: int = SAMPLE_VOXELS,
    intensity_from: Any = None,
    intensity_from_name: str = "the whole image",
) -> InputPolicy:
    """:func:`plan_intensity` and :func:`plan_zoom` from one strided sample.

    Parameters and errors are those of the two functions; everything is checked before
    any voxel is read. ``factors`` of the result is None (``predict`` fills it in).

    ``zoom`` may also be a :class:`ZoomPlan` (an earlier plan's ``zoom``), used as it is,
    every zoom of its ensemble included: a crop then runs at the zooms its whole volume
    did.

    ``intensity_from`` (array-like, optional): decide the modality, the intensity mapping
    and the polarity from a strided sample of this array instead of ``volume`` (the zoom
    still comes from ``volume``). For a crop of a larger image, pass the image (or a
    coarser level of its pyramid): a crop of a CT inside the body holds no air, so its
    values alone do not look like HU (it would be percentile-scaled, bone not saturated),
    and a crop without vessels has no tail to tell their polarity. (The shipped U-Nets
    normalise each tile, so a linear rescaling alone changes their output little; the
    CT window's clipping and the inversion do.) The plan's ``decided_on`` (and
    ``describe()``) then names it with ``intensity_from_name`` (say "the whole image's
    coarsest level" for a pyramid level: its percentiles are those of averaged voxels).
    """
    card = (
        card_normalization_spec
        if isinstance(card_normalization_spec, CardNormalization)
        else card_normalization(card_normalization_spec)
    )
    modality, window, polarity, hint = _check_choices(modality, window, polarity, header_hint)
    zoom = _check_zoom(zoom)
    sp = _spacing3(spacing)
    arr, stride = strided_sample(volume, sample)
    if intensity_from is None:
        plan, smooth = _plan_intensity_from_sample(
            arr, _dtype_of(volume, arr), card, modality, window, polarity, hint
        )
    else:
        ref = strided_sample(intensity_from, sample)[0]
        plan, _ = _plan_intensity_from_sample(
            ref, _dtype_of(intensity_from, ref), card, modality, window, polarity, hint
        )
        plan = replace(plan, decided_on=str(intensity_from_name))
        smooth = None  # the zoom's own sample is smoothed when it needs it
    zplan = _plan_zoom(volume, plan, card, sp, zoom, arr, stride, smooth, sample)
    return InputPolicy(plan, zplan)
