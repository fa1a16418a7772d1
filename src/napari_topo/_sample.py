"""napari's *File > Open Sample > napari-topo* data, made quickly on napari's GUI thread.

napari calls a sample-data command on its GUI thread and waits, so this module imports
only numpy, :mod:`napari_topo.layers` and :mod:`napari_topo.geometry` (numpy alone). The
volume comes from :func:`napari_topo.data.synthetic.make_vessel_volume` (fixed seed) the
first time and is kept in the user's cache folder (:func:`sample_cache`), so later opens
read ~4 MB instead of importing scipy and generating (about 1.5 s on a free CPU, several
seconds on a busy one). The cache is keyed by the generator's source, so a changed
generator makes a new file; a cache that cannot be read or written is ignored.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_topo import layers as _layers
from napari_topo.geometry import Geometry, napari_units

__all__ = ["SAMPLE_SEED", "SAMPLE_SHAPE", "SAMPLE_UNIT", "make_sample_data", "sample_cache"]

#: Seed of the sample data: the same volume every time.
SAMPLE_SEED = 0
SAMPLE_SHAPE = (96, 96, 96)
#: Length unit of the sample's voxel size (the generator's spacing, 1 x 1 x 1): micrometres,
#: a two-photon stack's scale for its vessel radii of 1-6 units (capillaries to small
#: arterioles). Stated as napari-topo's reader states a file's unit, so the Segment dock
#: does not call the sample's voxel size unknown.
SAMPLE_UNIT = "um"
#: Environment variable naming another cache folder ("" turns the cache off).
CACHE_ENV = "NAPARI_TOPO_CACHE_DIR"


def sample_cache() -> Path | None:
    """The cache file of the sample volume (None when the cache is off).

    ``$NAPARI_TOPO_CACHE_DIR`` or the user cache folder of platformdirs (npe2 depends on
    it), e.g. ``~/.cache/napari-topo`` on Linux; the file name holds the seed, the shape
    and a hash of the generator's source file.
    """
    folder = os.environ.get(CACHE_ENV)
    if folder == "":
        return None
    if folder is None:
        try:
            from platformdirs import user_cache_dir
        except ImportError:
            return None
        folder = user_cache_dir("napari-topo")
    source = Path(__file__).parent / "data" / "synthetic.py"
    try:
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    except OSError:
        return None
    shape = "x".join(map(str, SAMPLE_SHAPE))
    return Path(folder) / f"sample-vessels-seed{SAMPLE_SEED}-{shape}-{digest}.npz"


def _load(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            out = {k: npz[k] for k in ("image", "mask", "trees", "spacing")}
    except (OSError, ValueError, KeyError):
        return None
    if any(out[k].shape != SAMPLE_SHAPE for k in ("image", "mask", "trees")):
        return None
    return out


def _generate(path: Path | None) -> dict[str, Any]:
    from napari_topo.data.synthetic import make_vessel_volume

    vol = make_vessel_volume(shape=SAMPLE_SHAPE, seed=SAMPLE_SEED)
    out = {
        "image": vol.image,
        "mask": vol.mask,
        "trees": vol.trees,
        "spacing": np.asarray(vol.spacing, dtype=float),
    }
    if path is not None:
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                np.savez(fh, **out)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
    return out


def _stated(spacing: tuple[float, ...]) -> dict[str, Any]:
    """The layer settings that state the sample's voxel size as a file read by
    napari-topo's reader states its own: ``units`` (napari >= 0.6: scale bar, status
    bar) and the geometry in ``metadata["napari_topo_geometry"]`` (spacing and unit;
    :func:`napari_topo.geometry.layer_length_unit` reads it on any napari)."""
    geometry = Geometry.from_spacing(spacing, axes="zyx", unit=SAMPLE_UNIT, known="spacing")
    out: dict[str, Any] = {"metadata": {"napari_topo_geometry": geometry.to_dict()}}
    units = napari_units(SAMPLE_UNIT, "zyx")
    if units is not None:
        out["units"] = units
    return out


def make_sample_data() -> list[tuple[Any, dict, str]]:
    """Synthetic vessels (96^3, fixed seed) with their ground truth, as layer tuples.

    Returns, bottom to top: the image ``"synthetic vessels"`` (Image, float32), the mask
    ``"ground truth mask"`` (Labels, hidden; it equals ``trees > 0``) and the trees
    ``"ground truth trees"`` (Labels, light near-white outlines, a light tint per tree: the
    ``"reference"`` palette of :func:`napari_topo.layers.trees_layer`, apart from a
    result's saturated, filled trees),
    each scaled by the generator's spacing, with axes named z, y, x. The voxel size is
    stated in :data:`SAMPLE_UNIT` (micrometres: 1 x 1 x 1 um) as napari-topo's reader
    states a file's: napari ``units`` (napari >= 0.6) and the geometry in
    ``metadata["napari_topo_geometry"]``. The arrays equal
    ``make_vessel_volume(shape=SAMPLE_SHAPE, seed=SAMPLE_SEED)``'s, from the cache
    (:func:`sample_cache`) after the first time.
    """
    path = sample_cache()
    vol = _load(path) or _generate(path)
    spacing = tuple(float(s) for s in vol["spacing"])
    stated = _stated(spacing)
    image = (
        vol["image"],
        {
            "name": "synthetic vessels",
            "scale": spacing,
            "colormap": "gray",
            "contrast_limits": (0.0, 1.0),
            "axis_labels": _layers.AXIS_LABELS[3],
            **stated,
            "metadata": {"seed": SAMPLE_SEED, "spacing": spacing, **stated["metadata"]},
        },
        "image",
    )
    trees = vol["trees"]
    n = int(trees.max(initial=0))
    out = [
        image,
        _layers.mask_layer(vol["mask"], name="ground truth", scale=spacing, visible=False),
        _layers.trees_layer(trees, n, name="ground truth", scale=spacing, palette="reference"),
    ]
    for _, meta, _ in out[1:]:  # the ground truth lies on the image's voxels, in its unit
        own = _stated(spacing)
        meta["metadata"].update(own.pop("metadata"))
        meta.update(own)
    return out
