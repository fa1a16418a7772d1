"""Which inference tiles hold nothing but noise (so the network is not run on them).

Every U-Net and TopNet here normalises its features tile by tile (instance norm), so a
tile of noise alone reaches the network at the contrast of a tile with vessels in it,
and some models then mark the noise: on
:func:`~napari_topo.data.phantoms.sparse_tubes` (four tubes in one quarter of a volume,
i.i.d. noise elsewhere) the shipped unet-cldice marked 96,502 voxels of the empty
quarters and TopNet 4,195 (``benchmarks/results/stage5/``).
:func:`~napari_topo.inference.pipeline.predict` therefore tests each tile first and does
not run the network on a tile with no structure above its own noise; such a tile takes
no part in the blend (:func:`~napari_topo.inference.sliding.sliding_window_inference`'s
``skip``), so a voxel only empty tiles cover has probability 0.

The test, a detection against white noise at three scales: the tile, as the network
would see it, is smoothed with a Gaussian of sigma 1 voxel (truncated at 3 sigma; only
voxels whose whole kernel lies inside the tile are used), and so is its 2 x 2 x 2
average (for thick, faint vessels: sigma 2 voxels in effect). The noise level ``s`` of
the tile's voxels is estimated from the high-pass residual, tile minus smoothed tile:
its median absolute deviation times 1.4826 is ``s * sqrt(1 - 2 g0 + sum g^2)`` for white
noise (``g`` the 3D kernel, ``g0`` its centre weight), and structure barely moves it.
White noise smoothed has standard deviation ``s * sqrt(sum g^2)``, and ``s / sqrt(8)``
before smoothing on the 2 x 2 x 2 grid. A scale's score is the largest deviation of a
smoothed voxel from the smoothed tile's median in those standard deviations. Where
both stay under :data:`Z_THRESHOLD`, the third scale looks for thin faint lines: the
smoothed tile averaged over :data:`LINE_LENGTH` (5) voxels along each of the 13
directions to a voxel's neighbours, its largest deviation in the averaged map's own
robust standard deviations (median absolute deviation x 1.4826). The tile's score is
the largest of the three; under :data:`Z_THRESHOLD` (6.2) the tile is *empty*. Medians
are taken on every fourth voxel (of about 195,000 in a 64^3 tile), the maxima on all.
A 64^3 tile costs about 7 ms on one CPU thread, 24 ms when the line scale runs (a
tile that is then skipped saves the network's time); unet-dice on a 128^3 volume with
nothing to skip took 19 % longer with the test (2 CPU cores).

Calibrated on 64^3 tiles (``python benchmarks/bench_empty_tiles.py``,
``benchmarks/results/empty_tiles/``): white Gaussian, uniform or Poisson noise (mean 3
or 20) scores 4.4-6.2 (96 tiles in 96 called empty, 94 for Poisson of mean 3); a tube
of radius 1 voxel through the tile at a contrast of 1.5 noise standard deviations
scores 6.0-7.6 through the tile's centre (run in 22-23 tiles of 24) but 4.7-8.3 off it
(run in 16 of 24), at 2 standard deviations 6.4-8.4 through the centre (always run) and
5.3-7.9 off it (21-24 of 24), radius 6 at 0.3-0.4 standard deviations 6.7-10.8 (always
run); radius 1 at 1 standard deviation (4.8-6.5) is mostly skipped.
On larger tiles white noise scores higher (more voxels, so more noise tiles are run), on
smaller ones lower. Noise that is correlated between voxels (a CT's reconstruction
kernel, denoised microscopy) or heavy-tailed reads as structure and is always run: only
tiles that are constant or indistinguishable from white noise at this level are
skipped. A tile with a non-finite voxel is always run.
"""

from __future__ import annotations

import math

import numpy as np

#: Standard deviation (voxels) of the smoothing Gaussian, and its truncation (in sigmas).
SIGMA = 1.0
TRUNCATE = 3.0
#: A tile whose smoothed voxels all lie within this many smoothed-noise standard
#: deviations of their median, at both scales, is empty.
Z_THRESHOLD = 6.2
#: Every this many voxels enter the medians (the maximum sees them all).
MEDIAN_STRIDE = 4
#: Smallest tile side (voxels) the test is made on; a smaller tile is always run (on
#: 16^3 tiles white noise scored up to 10.6 and a thin tube at 2 sd was called empty in
#: 31 % of tiles).
MIN_SIDE = 32


def _kernel_1d(sigma: float = SIGMA, truncate: float = TRUNCATE) -> np.ndarray:
    r = int(math.ceil(truncate * sigma))
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _noise_ratios(sigma: float = SIGMA, truncate: float = TRUNCATE) -> tuple[float, float]:
    """(residual, smoothed) standard deviation per standard deviation of white noise."""
    g = _kernel_1d(sigma, truncate)
    sum_sq = float(np.sum(g**2)) ** 3  # the 3D kernel is separable
    g0 = float(g[len(g) // 2]) ** 3
    return math.sqrt(1.0 - 2.0 * g0 + sum_sq), math.sqrt(sum_sq)


RESIDUAL_SD, SMOOTHED_SD = _noise_ratios()
#: Standard deviation of smoothed white noise per standard deviation of its residual.
KAPPA = SMOOTHED_SD / RESIDUAL_SD


def tile_structure_scores(tiles, threshold: float = Z_THRESHOLD):
    """Largest smoothed deviation of each tile, in standard deviations of white noise.

    Parameters
    ----------
    tiles : torch.Tensor, shape (B, 1, Z, Y, X)
        Tiles as the network sees them (after the input mapping), any float dtype, on
        any device; each side at least 14 voxels (the kernel, 7 voxels, on the 2 x 2 x 2
        grid).
    threshold : float
        The line scale runs on the tiles whose two blob scores are under it
        (:data:`Z_THRESHOLD` unless given); the others' scores are final already.

    Returns
    -------
    torch.Tensor, shape (B,), float32
        The largest of the three scales' scores (see the module docstring; the line
        scale's only where the blob scales scored under ``threshold``); 0 for a
        constant tile; very large (``inf`` when exactly so) for a tile whose residual
        has no spread but whose smoothed values do (a step edge in clipped data); NaN
        for a tile with a non-finite voxel.

    Raises
    ------
    ValueError
        If ``tiles`` is not 5-D with one channel, or a side is shorter than 14 voxels.
    """
    import torch

    if tiles.ndim != 5 or tiles.shape[1] != 1:
        raise ValueError(f"tiles must be (B, 1, Z, Y, X); got shape {tuple(tiles.shape)}")
    g = torch.as_tensor(_kernel_1d(), dtype=torch.float32, device=tiles.device)
    r = len(g) // 2
    if min(tiles.shape[2:]) < 2 * len(g):
        raise ValueError(f"tiles must be at least {2 * len(g)} voxels on each side")

    def smooth(t):
        for axis in range(3):
            shape = [1, 1, 1, 1, 1]
            shape[2 + axis] = len(g)
            t = torch.nn.functional.conv3d(t, g.view(shape))  # "valid": no padding
        return t

    def median(v):
        return v[:, ::MEDIAN_STRIDE].median(dim=1, keepdim=True).values

    def deviation(t):
        flat = t.flatten(1)
        return (flat - median(flat)).abs().amax(dim=1)

    x = tiles.float()
    s = smooth(x)
    resid = (x[:, :, r:-r, r:-r, r:-r] - s).flatten(1)
    mad = (resid - median(resid)).abs()[:, ::MEDIAN_STRIDE].median(dim=1).values
    sd = mad * 1.4826 / RESIDUAL_SD  # the noise of one voxel
    dev = deviation(s)
    fine = dev / (sd * SMOOTHED_SD)
    coarse = deviation(smooth(torch.nn.functional.avg_pool3d(x, 2))) / (
        sd / math.sqrt(8.0) * SMOOTHED_SD
    )
    score = torch.maximum(fine, coarse)
    # thin faint vessels: along lines, only where the two blob scales saw too little
    unsure = torch.nonzero((score < threshold) & (sd > 0)).flatten()
    if unsure.numel():
        score[unsure] = torch.maximum(score[unsure], _line_scores(s[unsure], median))
    score = torch.where(sd > 0, score, torch.full_like(score, math.inf))
    score = torch.where(dev > 0, score, torch.zeros_like(score))
    finite = torch.isfinite(x.flatten(1)).all(dim=1)
    return torch.where(finite, score, torch.full_like(score, math.nan))


#: The 13 directions (one of each opposite pair) from a voxel to its 26 neighbours.
LINE_DIRECTIONS = tuple(
    d
    for d in (tuple(int(v) - 1 for v in idx) for idx in np.ndindex(3, 3, 3))
    if d != (0, 0, 0) and d > tuple(-v for v in d)
)
#: Voxels averaged along each direction by the line scale.
LINE_LENGTH = 5


def _line_scores(s, median):
    """Largest deviation of ``s`` (smoothed tiles, (B, 1, z, y, x)) averaged over
    :data:`LINE_LENGTH` voxels along each of :data:`LINE_DIRECTIONS`, in the averaged
    map's own robust standard deviations (its median absolute deviation x 1.4826:
    white noise and a sparse line barely move it); the largest over the directions."""
    import torch

    n = s.shape[2:]
    best = torch.zeros(s.shape[0], dtype=s.dtype, device=s.device)
    for d in LINE_DIRECTIONS:
        total = None
        for k in range(LINE_LENGTH):
            index = [slice(None), slice(None)]
            for axis in range(3):
                if d[axis] == 0:
                    index.append(slice(0, n[axis]))
                elif d[axis] > 0:
                    index.append(slice(k, n[axis] - (LINE_LENGTH - 1) + k))
                else:
                    index.append(slice(LINE_LENGTH - 1 - k, n[axis] - k))
            part = s[tuple(index)]
            total = part.clone() if total is None else total.add_(part)
        flat = total.flatten(1)
        dev = (flat - median(flat)).abs()
        spread = dev[:, ::MEDIAN_STRIDE].median(dim=1).values * 1.4826
        best = torch.maximum(best, dev.amax(dim=1) / spread.clamp_min(1e-30))
    return best


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
        True for an empty tile. A tile with a side under :data:`MIN_SIDE` voxels (too
        few voxels for the test) or with a non-finite voxel is never empty.
    """
    import torch

    if min(tiles.shape[2:]) < MIN_SIDE:
        return torch.zeros(tiles.shape[0], dtype=torch.bool, device=tiles.device)
    # NaN compares False: run
    return tile_structure_scores(tiles, threshold) < threshold
