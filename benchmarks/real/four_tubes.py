"""The "four bright tubes" volume of issue 9: the plainest vessel image a user can make.

A uint16 volume, 64 x 256 x 256 voxels, holding four bright, gently curving tubes of radii
1.5, 2.5, 3.25 and 4 voxels that cross the whole volume (two along x, two along y, at
different depths, at least ~10 voxels apart), on a flat background with Gaussian noise.
Contrast-to-noise ratio ``(tube - background) / noise_sigma = 6``; the tubes fill about
0.7 % of the voxels. Every number comes from ``seed`` (phases and periods of the curves,
the noise), so the volume is reproducible.

Ground truth: ``mask`` (voxel centre within ``radius`` of the curve), ``labels`` (1-4,
one per tube), ``sources`` (one root per tube: the curve's first point, on the volume's
border) and the dense centre curves. The image is painted with a one-voxel linear edge
(partial volume), then the noise is added, rounded and clipped to uint16.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["FourTubes", "four_tubes"]

#: (axis the tube runs along, (z, cross-axis) centre, radius); cross-axis is y for tubes
#: along x and x for tubes along y.
_LAYOUT = (
    ("x", (12.0, 48.0), 1.5),
    ("y", (32.0, 64.0), 2.5),
    ("y", (32.0, 192.0), 3.25),
    ("x", (50.0, 200.0), 4.0),
)


@dataclass
class FourTubes:
    image: np.ndarray  # (z, y, x) uint16
    mask: np.ndarray  # bool
    labels: np.ndarray  # uint8, 1..4
    sources: np.ndarray  # (4, 3) int, one root per tube (z, y, x)
    radii: tuple[float, ...]
    curves: list[np.ndarray] = field(repr=False)  # dense (n, 3) centre points per tube
    background: float = 1000.0
    noise_sigma: float = 50.0
    cnr: float = 6.0
    seed: int = 0

    @property
    def n_trees(self) -> int:
        return len(self.radii)

    @property
    def vessel_fraction(self) -> float:
        return float(self.mask.mean())


def _curve(axis: str, centre, length: int, rng, step: float = 0.25) -> np.ndarray:
    """Dense points of a straight-ish curve crossing the volume along ``axis``."""
    t = np.arange(0.0, length - 1 + step / 2, step)
    z0, c0 = centre
    amp_z, amp_c = rng.uniform(1.0, 2.0), rng.uniform(2.0, 4.0)
    per_z, per_c = rng.uniform(150, 300, size=2)
    ph_z, ph_c = rng.uniform(0, 2 * np.pi, size=2)
    z = z0 + amp_z * np.sin(2 * np.pi * t / per_z + ph_z)
    c = c0 + amp_c * np.sin(2 * np.pi * t / per_c + ph_c)
    return np.stack([z, c, t] if axis == "x" else [z, t, c], axis=1)


def four_tubes(
    seed: int = 0,
    *,
    shape=(64, 256, 256),
    radii=(1.5, 2.5, 3.25, 4.0),
    cnr: float = 6.0,
    background: float = 1000.0,
    noise_sigma: float = 50.0,
) -> FourTubes:
    """Make the four-tube volume (see the module docstring).

    Parameters
    ----------
    seed : int
        Seeds the curves' shapes and the noise.
    shape : 3 ints
        (z, y, x); the layout is meant for the default 64 x 256 x 256.
    radii : 4 floats
        Tube radii in voxels.
    cnr : float
        ``(tube intensity - background) / noise_sigma``.
    background, noise_sigma : float
        Background level and noise standard deviation (uint16 counts).

    Examples
    --------
    >>> v = four_tubes(0)
    >>> v.image.dtype, v.image.shape, v.n_trees
    (dtype('uint16'), (64, 256, 256), 4)
    """
    if len(radii) != len(_LAYOUT):
        raise ValueError(f"radii must hold {len(_LAYOUT)} values; got {radii!r}")
    shape = tuple(int(s) for s in shape)
    rng = np.random.default_rng(seed)
    dist = np.full(shape, np.inf, dtype=np.float32)  # distance to the nearest curve
    rad = np.zeros(shape, np.float32)  # radius of that curve's tube
    labels = np.zeros(shape, np.uint8)
    curves, sources = [], []
    for k, ((axis, centre, _), r) in enumerate(zip(_LAYOUT, radii, strict=True), start=1):
        pts = _curve(axis, centre, shape[2 if axis == "x" else 1], rng)
        curves.append(pts)
        sources.append(np.rint(pts[0]).astype(int))
        # only voxels in the curve's bounding box grown by r + 2 can be near it
        lo = np.floor(pts.min(0) - r - 2).astype(int).clip(0)
        hi = np.minimum(np.ceil(pts.max(0) + r + 3).astype(int), shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        coords = np.stack(
            [g.ravel() for g in np.indices(hi - lo, dtype=np.float32)], axis=1
        ) + lo.astype(np.float32)
        d, _ = cKDTree(pts).query(coords, distance_upper_bound=float(r) + 2.0)
        d = d.reshape(tuple(hi - lo)).astype(np.float32)
        closer = d < dist[box]
        dist[box][closer] = d[closer]
        rad[box][closer] = r
        labels[box][closer & (d <= r)] = k
    mask = labels > 0
    # partial volume: full intensity up to r - 0.5 from the curve, linear to 0 at r + 0.5
    frac = np.clip(rad + 0.5 - np.where(np.isfinite(dist), dist, np.float32(1e6)), 0.0, 1.0)
    img = background + cnr * noise_sigma * frac + rng.normal(0.0, noise_sigma, size=shape)
    image = np.clip(np.rint(img), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return FourTubes(
        image=image,
        mask=mask,
        labels=labels,
        sources=np.asarray(sources),
        radii=tuple(float(r) for r in radii),
        curves=curves,
        background=float(background),
        noise_sigma=float(noise_sigma),
        cnr=float(cnr),
        seed=int(seed),
    )
