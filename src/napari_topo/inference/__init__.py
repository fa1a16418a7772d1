"""Inference: device choice and tiled, cancellable, bounded-memory prediction.

* :func:`pick_device` / :func:`available_devices` / :func:`autocast_context` (``device.py``):
  the one place where CUDA, then MPS, then CPU is chosen.
* :func:`predict` / :func:`segment` (``pipeline.py``): a registered model on a volume
  (normalisation, spacing, out-of-memory fallbacks), and the whole segmentation to
  vessel trees (:class:`~napari_topo.analysis.VesselAnalysis`).
* :func:`sliding_window_inference` (``sliding.py``): overlapping tiles read lazily from
  numpy, dask or zarr volumes, Gaussian blending, progress callback, cancel flag, optional
  ``out`` arrays (numpy or zarr) for results larger than RAM.

No Qt here: everything runs in scripts, the CLI and napari worker threads.
"""

from .device import autocast_context, available_devices, pick_device
from .pipeline import InferenceFallbackWarning, predict, resample_factors, segment
from .sliding import (
    Cancelled,
    PercentileNormalizer,
    gaussian_weights,
    normalize_percentile,
    sliding_window_inference,
    tile_starts,
)

__all__ = [
    "Cancelled",
    "InferenceFallbackWarning",
    "PercentileNormalizer",
    "autocast_context",
    "available_devices",
    "gaussian_weights",
    "normalize_percentile",
    "pick_device",
    "predict",
    "resample_factors",
    "segment",
    "sliding_window_inference",
    "tile_starts",
]
