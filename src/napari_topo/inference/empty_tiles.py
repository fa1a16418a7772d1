"""Which inference tiles hold nothing but noise (so the network is not run on them).

Every U-Net and TopNet here normalises its features tile by tile (instance norm), so a
tile of noise alone reaches the network at the contrast of a tile with vessels in it,
and some models then mark the noise: on
:func:`~napari_topo.data.phantoms.sparse_tubes` (four tubes in one quarter of a volume,
i.i.d. noise elsewhere) the shipped unet-cldice marked 96,502 voxels of the empty
quarters and TopNet 4,195 (``benchmarks/results/stage5/``).
:func:`~napari_topo.inference.pipeline.predict` therefore
tests each tile first and gives a tile with no structure above its own noise a vessel
probability of 0 without running the network (also the time of those tiles: the air
around a body in a CT, the empty space of a light-sheet volume).

The test (a matched-filter detection against white noise): the tile, as the network
would see it, is smoothed with a Gaussian of ``sigma`` = 1 voxel (truncated at 3
sigma; only voxels whose whole kernel lies inside the tile are used). Its noise level
is estimated from the high-pass residual, tile minus smoothed tile, as the median
absolute deviation times 1.4826 (``s_r``), which structure barely moves. For white
noise of standard deviation ``s`` the residual's standard deviation is
``s * sqrt(1 - 2 g0 + sum g^2)`` and the smoothed tile's ``s * sqrt(sum g^2)`` (``g`` the
3D kernel, ``g0`` its centre weight), so the smoothed noise has standard deviation
``kappa * s_r`` with ``kappa`` = :data:`KAPPA` (0.159 for sigma 1). The tile is *empty*
when no smoothed voxel lies more than :data:`Z_THRESHOLD` (6) such standard deviations
from the smoothed tile's median. Measured on 64^3 tiles
(``python benchmarks/bench_empty_tiles.py``, ``benchmarks/results/empty_tiles/``): white
Gaussian noise scores 4.2-6.1 (mean 4.7: one noise tile in 50 is still run), Poisson
noise of mean 3 or 20 4.2-5.9; a tube of radius 1 voxel along the tile at a contrast of
2 noise standard deviations scores 6.8-8.0, radius 2 at 1 standard deviation 7.1-8.2,
so both are always run; radius 1 at 1.5 standard deviations (5.7-6.6) is at the edge
(3 tiles in 8 called empty). Heavy-tailed or very sparse noise (Laplace; Poisson of
mean 0.5) scores 6.1-16 and is run. A constant tile is empty.

Noise that is correlated between voxels (a CT's reconstruction kernel, denoised
microscopy) has a smaller residual for its smoothed spread, reads as structure and is
always run: the test only skips tiles that are constant or indistinguishable from
white noise at this level. On the
development data (3D-IRCADb-01 patient 01, nine vesselNN two-photon stacks) it skipped
the CT's 162 tiles of air (constant after the window) and two tiles of one stack
holding 2 annotated voxels, and no other tile (``benchmarks/results/empty_tiles/``).
"""

from __future__ import annotations

import math

import numpy as np

#: Standard deviation (voxels) of the smoothing Gaussian, and its truncation (in sigmas).
SIGMA = 1.0
TRUNCATE = 3.0
#: A tile whose smoothed voxels all lie within this many smoothed-noise standard
#: deviations of their median is empty.
Z_THRESHOLD = 6.0
#: Smallest tile side (voxels) the test is made on; a smaller tile is always run.
MIN_SIDE = 16


def _kernel_1d(sigma: float = SIGMA, truncate: float = TRUNCATE) -> np.ndarray:
    r = int(math.ceil(truncate * sigma))
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _kappa(sigma: float = SIGMA, truncate: float = TRUNCATE) -> float:
    g = _kernel_1d(sigma, truncate)
    sum_sq = float(np.sum(g**2)) ** 3  # the 3D kernel is separable
    g0 = float(g[len(g) // 2]) ** 3
    return math.sqrt(sum_sq / (1.0 - 2.0 * g0 + sum_sq))


#: Standard deviation of smoothed white noise per standard deviation of its residual.
KAPPA = _kappa()


def tile_structure_scores(tiles):
    """Largest smoothed deviation of each tile, in units of its smoothed white noise.

    Parameters
    ----------
    tiles : torch.Tensor, shape (B, 1, Z, Y, X)
        Tiles as the network sees them (after the input mapping), any float dtype; each
        side at least ``2 * ceil(TRUNCATE * SIGMA) + 1`` (7) voxels.

    Returns
    -------
    torch.Tensor, shape (B,), float32
        ``max |S - median(S)| / (KAPPA * s_r)`` per tile (see the module docstring);
        0 for a constant tile; very large (``inf`` when exactly so) for a tile whose
        residual has no spread but whose smoothed values do (a step edge in clipped
        data).

    Raises
    ------
    ValueError
        If ``tiles`` is not 5-D with one channel, or a side is shorter than the kernel.
    """
    import torch

    if tiles.ndim != 5 or tiles.shape[1] != 1:
        raise ValueError(f"tiles must be (B, 1, Z, Y, X); got shape {tuple(tiles.shape)}")
    g = torch.as_tensor(_kernel_1d(), dtype=torch.float32, device=tiles.device)
    r = len(g) // 2
    if min(tiles.shape[2:]) < 2 * r + 1:
        raise ValueError(f"tiles must be at least {2 * r + 1} voxels on each side")
    x = tiles.float()
    s = x
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = len(g)
        s = torch.nn.functional.conv3d(s, g.view(shape))  # "valid": no padding
    inner = x[:, :, r:-r, r:-r, r:-r]
    flat_s = s.flatten(1)
    resid = (inner - s).flatten(1)
    # median absolute deviation of the residual: a robust noise level
    noise = (resid - resid.median(dim=1, keepdim=True).values).abs().median(dim=1).values
    noise = noise * 1.4826 * KAPPA
    dev = (flat_s - flat_s.median(dim=1, keepdim=True).values).abs().amax(dim=1)
    score = torch.where(noise > 0, dev / noise.clamp_min(1e-30), torch.full_like(dev, math.inf))
    return torch.where(dev > 0, score, torch.zeros_like(dev))


def empty_tiles(tiles, threshold: float = Z_THRESHOLD):
    """Which tiles hold no structure above white noise (see the module docstring).

    Parameters
    ----------
    tiles : torch.Tensor, shape (B, 1, Z, Y, X)
        Tiles as the network sees them.
    threshold : float
        :data:`Z_THRESHOLD` unless given.

    Returns
    -------
    torch.Tensor, shape (B,), bool
        True for an empty tile. A tile with a side under :data:`MIN_SIDE` voxels is
        never empty (too few voxels for the test).
    """
    import torch

    if min(tiles.shape[2:]) < MIN_SIDE:
        return torch.zeros(tiles.shape[0], dtype=torch.bool, device=tiles.device)
    return tile_structure_scores(tiles) < threshold
