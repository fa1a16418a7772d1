"""Data for napari-topo: synthetic vessel volumes with full ground truth.

Everything here is numpy/scipy/networkx only (no torch, no Qt); file IO
(:mod:`napari_topo.data.io`) imports nibabel, tifffile and zarr only when used.

Examples
--------
>>> from napari_topo.data import make_vessel_volume
>>> vol = make_vessel_volume((48, 48, 48), n_trees=2, seed=0)
>>> vol.trees.max()
np.int32(2)
"""

from napari_topo.data.io import (
    SUPPORTED_SUFFIXES,
    Volume,
    VolumeReadError,
    read_volume,
    write_volume,
)
from napari_topo.data.synthetic import (
    SyntheticVessels,
    SyntheticVesselSet,
    geodesic_distances,
    make_vessel_volume,
    sample_vessels,
    test_set,
)

__all__ = [
    "SUPPORTED_SUFFIXES",
    "Volume",
    "VolumeReadError",
    "read_volume",
    "write_volume",
    "SyntheticVessels",
    "SyntheticVesselSet",
    "geodesic_distances",
    "make_vessel_volume",
    "sample_vessels",
    "test_set",
]
