"""Inference: device choice and tiled, cancellable, bounded-memory prediction.

* :func:`pick_device` / :func:`available_devices` / :func:`autocast_context` (``device.py``):
  the one place where CUDA, then MPS, then CPU is chosen.
* :func:`plan_input` / :func:`plan_intensity` / :func:`plan_zoom` (``intensity.py``): the
  input policy, i.e. how a volume's intensities (CT window in HU or percentiles, vessel
  polarity) and scale (zoom) are mapped for a model, from its card and the user's
  choices; the one place where this is decided.
* :func:`predict` / :func:`segment` (``pipeline.py``): a registered model on a volume
  (input policy, spacing, out-of-memory fallbacks), and the whole segmentation to
  vessel trees (:class:`~napari_topo.analysis.VesselAnalysis`).
* :func:`sliding_window_inference` (``sliding.py``): overlapping tiles read lazily from
  numpy, dask or zarr volumes, Gaussian blending, progress callback, cancel flag, optional
  ``out`` arrays (numpy or zarr) for results larger than RAM.

No Qt here: everything runs in scripts, the CLI and napari worker threads.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time names load on first use
    from .device import autocast_context, available_devices, pick_device
    from .intensity import (
        InputPolicy,
        IntensityNormalizer,
        IntensityPlan,
        ZoomPlan,
        card_normalization,
        plan_input,
        plan_intensity,
        plan_zoom,
    )
    from .pipeline import (
        InferenceFallbackWarning,
        Notice,
        PredictOutputs,
        drop_pieces_outside,
        grow_roi,
        mirror_flips,
        predict,
        resample_factors,
        segment,
        voxel_size,
    )
    from .sliding import (
        Cancelled,
        PercentileNormalizer,
        gaussian_weights,
        normalize_percentile,
        sliding_window_inference,
        tile_starts,
    )

# Imported on first use (PEP 562): the reader and the CLI's argument checks use
# ``intensity`` (numpy only) and must not pay for torch, which ``pipeline`` imports.
_SUBMODULE = {
    "autocast_context": "device",
    "available_devices": "device",
    "pick_device": "device",
    "InputPolicy": "intensity",
    "IntensityNormalizer": "intensity",
    "IntensityPlan": "intensity",
    "ZoomPlan": "intensity",
    "card_normalization": "intensity",
    "plan_input": "intensity",
    "plan_intensity": "intensity",
    "plan_zoom": "intensity",
    "InferenceFallbackWarning": "pipeline",
    "Notice": "pipeline",
    "PredictOutputs": "pipeline",
    "drop_pieces_outside": "pipeline",
    "grow_roi": "pipeline",
    "mirror_flips": "pipeline",
    "predict": "pipeline",
    "resample_factors": "pipeline",
    "segment": "pipeline",
    "voxel_size": "pipeline",
    "Cancelled": "sliding",
    "PercentileNormalizer": "sliding",
    "gaussian_weights": "sliding",
    "normalize_percentile": "sliding",
    "sliding_window_inference": "sliding",
    "tile_starts": "sliding",
}


__all__ = [
    "Cancelled",
    "InferenceFallbackWarning",
    "InputPolicy",
    "IntensityNormalizer",
    "IntensityPlan",
    "Notice",
    "PercentileNormalizer",
    "PredictOutputs",
    "ZoomPlan",
    "autocast_context",
    "available_devices",
    "card_normalization",
    "drop_pieces_outside",
    "gaussian_weights",
    "grow_roi",
    "mirror_flips",
    "normalize_percentile",
    "pick_device",
    "plan_input",
    "plan_intensity",
    "plan_zoom",
    "predict",
    "resample_factors",
    "segment",
    "sliding_window_inference",
    "tile_starts",
    "voxel_size",
]


def __getattr__(name: str):
    module = _SUBMODULE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
