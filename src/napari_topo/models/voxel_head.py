"""A voxel classifier on top of a frozen network: the fine-tune of ``layers="head"``.

A user's few corrected slices can teach a small per-voxel classifier what a pretrained
network misses on their scanner, where re-training the network's 351k weights on the same
labels moves it little (issue 10; ``docs/finetune.md``). :class:`VoxelHeadNet` keeps the
base network unchanged (its ``forward`` is the base's, so the sliding window, mirroring and
every fallback run it as before) and adds :class:`VoxelHead`, a perceptron applied to every
voxel of the **whole volume on its own grid** after the network's probability has been
assembled (:func:`~napari_topo.inference.pipeline.predict` calls :meth:`VoxelHeadNet.refine`).
Its inputs per voxel (:func:`voxel_features`, :data:`FEATURE_NAMES`) are

* the network's vessel probability and a Gaussian-smoothed copy,
* the normalised intensity (the input policy's CT window or percentiles, polarity applied),
  its Gaussian smoothing and gradient magnitude at four scales, the three eigenvalues of its
  scale-normalised Hessian (``sigma^2 H``) at three scales, and its difference from a wide
  local mean,

the vesselness cues of Frangi et al. (MICCAI 1998) and of ilastik-style pixel classifiers
(Sommer et al., ISBI 2011; Berg et al., Nat. Methods 2019), in physical units: every sigma
is a multiple of the finest voxel size (:data:`SMOOTH`, :data:`HESSIAN`, :data:`LOCAL`,
:data:`PROB_SMOOTH`), so an anisotropic CT (1.6 x 0.57 x 0.57 mm) is smoothed less across
its thick slices. The features are computed in slabs along the first axis (cubes where
the planes are large; :func:`feature_blocks`) with enough context (:func:`halo_per_axis`)
that each block's values equal the whole volume's (filters truncated at :data:`TRUNCATE`
sigmas), so memory stays bounded by the block, not the volume.

Measured on the development CT (3D-IRCADb-01 patient 01, upper half of the liver labelled,
lower half scored; ``benchmarks/results/feature_head/``): the same classifier computed on
whole-volume features raised Dice 0.48 -> 0.67-0.75, where the same features computed per
64-voxel tile (an earlier design) gave 0.48.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .unet import UNet3D

__all__ = [
    "CONTEXT_HESSIAN",
    "CONTEXT_NAMES",
    "CONTEXT_SMOOTH",
    "FEATURES_SHARE",
    "FEATURE_NAMES",
    "HESSIAN",
    "LOCAL",
    "PROB_SMOOTH",
    "SMOOTH",
    "TRUNCATE",
    "VoxelHead",
    "VoxelHeadNet",
    "context_features",
    "feature_blocks",
    "halo_per_axis",
    "symmetric_eigenvalues",
    "voxel_features",
]

#: Share of a block's progress (:func:`feature_blocks`' ``progress``) given to its features;
#: the head's pass over them is the rest.
FEATURES_SHARE = 0.9
#: Gaussian smoothing and gradient magnitude (times sigma) scales, in finest voxel sizes.
SMOOTH = (1.25, 2.5, 5.0, 10.0)
#: Scales of the Hessian's eigenvalues (``sigma^2 H``), in finest voxel sizes.
HESSIAN = (1.4, 2.8, 5.6)
#: Sigma of the local mean whose difference from the intensity is a feature.
LOCAL = 14.0
#: Sigma of the smoothed copy of the network's probability.
PROB_SMOOTH = 1.75
#: Every Gaussian filter is cut at this many sigmas (scipy's ``truncate``).
TRUNCATE = 3.0
#: Smoothing scales of the first stage's probability, a second stage's context features
#: (finest voxel sizes).
CONTEXT_SMOOTH = (1.75, 3.5, 7.0)
#: Scales of the Hessian eigenvalues of the first stage's probability (second stage).
CONTEXT_HESSIAN = (1.4, 2.8)
#: The features' names, in the order of the last axis of :func:`voxel_features`.
FEATURE_NAMES: tuple[str, ...] = (
    ("intensity", "probability", f"probability_smooth_{PROB_SMOOTH:g}")
    + tuple(f"{kind}_{s:g}" for s in SMOOTH for kind in ("smooth", "gradient"))
    + tuple(f"hessian_eigenvalue{k}_{s:g}" for s in HESSIAN for k in range(3))
    + (f"local_contrast_{LOCAL:g}",)
)

#: The context features' names (:func:`context_features`): what a second stage adds to
#: :data:`FEATURE_NAMES`, computed from the first stage's probability.
CONTEXT_NAMES: tuple[str, ...] = tuple(f"stage1_smooth_{s:g}" for s in CONTEXT_SMOOTH) + tuple(
    f"stage1_hessian_eigenvalue{k}_{s:g}" for s in CONTEXT_HESSIAN for k in range(3)
)

#: The base networks a head can sit on (segmentation U-Nets).
BASES: dict[str, type[nn.Module]] = {"unet3d": UNet3D}


def _sigmas(scale: float, spacing: Sequence[float]) -> np.ndarray:
    sp = np.asarray(spacing, float)
    return scale * sp.min() / sp


def symmetric_eigenvalues(elems: Sequence[np.ndarray]) -> np.ndarray:
    """Eigenvalues of symmetric 3x3 matrices given by their upper triangle, largest first.

    ``elems``: the six arrays ``(a00, a01, a02, a11, a12, a22)`` (the order of
    :func:`skimage.feature.hessian_matrix`), any one shape ``S``; returns ``(3, *S)``
    float32. The closed form of Smith (Commun. ACM 4(4):168, 1961), elementwise in torch
    float32 on the CPU's threads: on 12.6M voxels 0.9 s against 6.5 s for
    :func:`skimage.feature.hessian_matrix_eigvals` (batched ``numpy.linalg.eigvalsh``),
    relative difference about 2e-5 (``tests/test_voxel_head.py``); the features of a CT
    spend most of their time here otherwise.
    """
    a00, a01, a02, a11, a12, a22 = (
        torch.from_numpy(np.ascontiguousarray(e, dtype=np.float32)) for e in elems
    )
    q = (a00 + a11 + a22) / 3.0
    b00, b11, b22 = a00 - q, a11 - q, a22 - q
    p = torch.sqrt(
        (b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * (a01 * a01 + a02 * a02 + a12 * a12)) / 6.0
    )
    safe = torch.where(p > 0, p, torch.ones_like(p))
    det = (
        b00 * (b11 * b22 - a12 * a12)
        - a01 * (a01 * b22 - a12 * a02)
        + a02 * (a01 * a12 - b11 * a02)
    ) / (safe * safe * safe)
    phi = torch.arccos(torch.clamp(det / 2.0, -1.0, 1.0)) / 3.0
    e0 = q + 2.0 * p * torch.cos(phi)
    e2 = q + 2.0 * p * torch.cos(phi + 2.0 * math.pi / 3.0)
    e1 = 3.0 * q - e0 - e2
    # entries of ~1e-15 underflow p^3 in float32 (NaN); the eigenvalues are then ~0
    return torch.nan_to_num(torch.stack([e0, e1, e2]), nan=0.0).numpy()


def halo_per_axis(spacing: Sequence[float] | None, stages: int = 1) -> tuple[int, int, int]:
    """Voxels of context each side, per axis, that make a box's inputs of a head exact:
    the first stage's features (``stages`` 1), or those plus the context features of a
    first-stage probability that is itself exact only that far in from the box's faces
    (``stages`` 2: the two halos added)."""
    sp = (1.0, 1.0, 1.0) if spacing is None else spacing

    def reach(widest: float) -> list[int]:
        return [int(math.ceil(TRUNCATE * s)) + 1 for s in _sigmas(widest, sp)]

    first = reach(max(SMOOTH + HESSIAN + (LOCAL, PROB_SMOOTH)))
    if stages == 1:
        return tuple(first)
    context = reach(max(CONTEXT_SMOOTH + CONTEXT_HESSIAN))
    return tuple(a + b for a, b in zip(first, context, strict=True))


def _hessian_eigenvalues(x: np.ndarray, s: float, sp: np.ndarray, kw: dict) -> np.ndarray:
    """``(3, z, y, x)`` eigenvalues, largest first, of ``x``'s Hessian at sigma ``s``
    finest voxel sizes, per unit length and scale-normalised by sigma^2 (Lindeberg)."""
    from scipy import ndimage as ndi

    unit = sp.min()
    sig = _sigmas(s, sp)
    elems = []
    for i in range(3):
        for j in range(i, 3):
            order = [0, 0, 0]
            order[i] += 1
            order[j] += 1
            d = ndi.gaussian_filter(x, sig, order=order, **kw)
            elems.append(d * ((s * unit) ** 2 / (sp[i] * sp[j])))
    return symmetric_eigenvalues(elems)


def context_features(
    stage1: np.ndarray, spacing: Sequence[float] | None = None, *, mode: str = "reflect"
) -> np.ndarray:
    """A second stage's extra inputs (:data:`CONTEXT_NAMES`): ``(z, y, x, 9)`` float32.

    The first stage's vessel probability ``stage1`` (``(z, y, x)``, unsmoothed) smoothed
    at :data:`CONTEXT_SMOOTH` and the eigenvalues of its Hessian at
    :data:`CONTEXT_HESSIAN` (finest voxel sizes): what the first stage said around each
    voxel, and whether that forms a tube. The auto-context of Tu and Bai (IEEE TPAMI
    32(10), 2010): a classifier trained again on its own output's neighbourhood fills
    gaps along vessels and drops isolated false voxels. ``spacing`` as in
    :func:`voxel_features`.
    """
    from scipy import ndimage as ndi

    p = np.asarray(stage1, np.float32)
    if p.ndim != 3:
        raise ValueError(f"the first stage's probability must be 3D; got shape {p.shape}")
    sp = np.asarray((1.0, 1.0, 1.0) if spacing is None else spacing, float)
    kw = {"truncate": TRUNCATE, "mode": mode}
    out = np.empty(p.shape + (len(CONTEXT_NAMES),), np.float32)
    for k, s in enumerate(CONTEXT_SMOOTH):
        out[..., k] = ndi.gaussian_filter(p, _sigmas(s, sp), **kw)
    k = len(CONTEXT_SMOOTH)
    for s in CONTEXT_HESSIAN:
        out[..., k : k + 3] = np.moveaxis(_hessian_eigenvalues(p, s, sp, kw), 0, -1)
        k += 3
    return out


def voxel_features(
    image: np.ndarray,
    probability: np.ndarray,
    spacing: Sequence[float] | None = None,
    context: np.ndarray | None = None,
    progress: Callable[[float], Any] | None = None,
) -> np.ndarray:
    """The head's inputs for every voxel of a block: ``(z, y, x, F)`` float32.

    Parameters
    ----------
    image : ndarray (z, y, x)
        Normalised intensities (the input policy's, about 0..1, vessels bright).
    probability : ndarray (z, y, x)
        The base network's vessel probability on the same grid.
    spacing : sequence of 3 float, optional
        Voxel size (any unit; only ratios matter). Default isotropic.
    context : ndarray (z, y, x), optional
        A first stage's probability: its :func:`context_features` are appended (a
        second stage's inputs).
    progress : callable, optional
        ``progress(fraction done)`` after each group of filters (about ten calls).

    Returns
    -------
    ndarray (z, y, x, F), float32
        In the order of :data:`FEATURE_NAMES` (then :data:`CONTEXT_NAMES` with
        ``context``). At the block's faces the filters mirror the block (scipy's
        ``"reflect"``); :func:`feature_blocks` gives whole-volume values.

    Raises
    ------
    ValueError
        ``image`` and ``probability`` differ in shape or are not 3D.
    """
    from scipy import ndimage as ndi

    x = np.asarray(image, np.float32)
    p = np.asarray(probability, np.float32)
    if x.ndim != 3 or x.shape != p.shape:
        raise ValueError(
            f"image and probability must be 3D arrays of one shape; got {x.shape}, {p.shape}"
        )
    if context is not None and np.shape(context) != x.shape:
        raise ValueError(
            f"the first stage's probability must have the image's shape {x.shape}; got "
            f"{np.shape(context)}"
        )
    sp = np.asarray((1.0, 1.0, 1.0) if spacing is None else spacing, float)
    unit = sp.min()
    kw = {"truncate": TRUNCATE, "mode": "reflect"}
    n_extra = 0 if context is None else len(CONTEXT_NAMES)
    out = np.empty(x.shape + (len(FEATURE_NAMES) + n_extra,), np.float32)
    groups = 2 + len(SMOOTH) + len(HESSIAN) + (context is not None)
    done = [0]

    def step() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0] / groups)

    out[..., 0], out[..., 1] = x, p
    out[..., 2] = ndi.gaussian_filter(p, _sigmas(PROB_SMOOTH, sp), **kw)
    step()
    k = 3
    for s in SMOOTH:
        sig = _sigmas(s, sp)
        out[..., k] = ndi.gaussian_filter(x, sig, **kw)
        # gradient magnitude per unit length, scale-normalised by sigma
        g2 = np.zeros(x.shape, np.float32)
        for i in range(3):
            order = [0, 0, 0]
            order[i] = 1
            g2 += (ndi.gaussian_filter(x, sig, order=order, **kw) * (s * unit / sp[i])) ** 2
        out[..., k + 1] = np.sqrt(g2)
        k += 2
        step()
    for s in HESSIAN:
        out[..., k : k + 3] = np.moveaxis(_hessian_eigenvalues(x, s, sp, kw), 0, -1)
        k += 3
        step()
    out[..., k] = x - ndi.gaussian_filter(x, _sigmas(LOCAL, sp), **kw)
    step()
    if context is not None:
        out[..., k + 1 :] = context_features(context, sp)
        step()
    return out


def _block_core(shape: Sequence[int], halo: Sequence[int], max_voxels: int) -> int:
    """The largest core edge ``c`` (voxels; at least 1) whose block, the core with the
    ``halo`` each side (cut at the volume's faces: ``min(n, c + 2 h)`` per axis), holds
    at most ``max_voxels`` voxels."""

    def size(c: int) -> int:
        return math.prod(min(int(n), c + 2 * int(h)) for n, h in zip(shape, halo, strict=True))

    lo, hi = 1, max(1, max(int(n) for n in shape))
    while lo < hi:  # the block grows with c: the largest c that fits
        mid = (lo + hi + 1) // 2
        if size(mid) <= max_voxels:
            lo = mid
        else:
            hi = mid - 1
    return lo


def feature_blocks(
    image: Any,
    probability: np.ndarray,
    spacing: Sequence[float] | None = None,
    *,
    normalize: Callable[[np.ndarray], np.ndarray] | None = None,
    slab: int | None = None,
    max_voxels: int = 1 << 24,
    cancel: Callable[[], Any] | None = None,
    context: np.ndarray | None = None,
    features: np.ndarray | None = None,
    progress: Callable[[float], Any] | None = None,
) -> Iterator[tuple[tuple[slice, slice, slice], np.ndarray]]:
    """Features of the whole volume, block by block: yields ``(region, features[region])``.

    ``region`` is a tuple of three slices with explicit integer bounds; the regions tile
    the volume, each voxel once, in raster order of their corners. Each block is computed
    with :func:`halo_per_axis`'s voxels of context each side, so it equals the whole
    volume's :func:`voxel_features` there (the volume's own faces mirror).

    * Slabs of whole planes (``region`` spans y and x) while even the thinnest slab (twice
      the context, plus the context each side) stays within ``max_voxels``.
    * Otherwise (large planes with fine slices: an isotropic volume with 512 x 512 planes
      needed about 10 GB of features per slab) cubes: the largest common core edge whose
      block with its context holds ``max_voxels`` voxels (:func:`_block_core`), so an
      isotropic volume computes 2.6-2.8 times its voxels at the default whatever its
      planes (the thin slabs of plane blocks they replace computed 3.4 times for 512 x 512
      planes, 30 times for 2048 x 2048; ``benchmarks/results/voxel_head_blocks/``). The
      image is read one block at a time.

    Parameters
    ----------
    image : array_like (z, y, x)
        numpy, dask or zarr; read block by block. Passed through ``normalize`` first.
    probability : ndarray (z, y, x)
    spacing : sequence of 3 float, optional
    normalize : callable, optional
        The input policy's intensity normaliser (voxel-wise).
    slab : int, optional
        Slices per slab of whole planes; default as many as keep a slab and its context
        under ``max_voxels`` voxels, but at least twice the context (so at most half the
        work is context). Not used for cubes.
    max_voxels : int
        Voxels of one computation with its context (its features take about 230 bytes
        each), unless the context alone is larger (cubes then have a core of 1 voxel).
    cancel : callable, optional
        Called before each block; it raises to stop.
    context : ndarray (z, y, x), optional
        A first stage's probability on the same grid (:func:`voxel_features`).
    features : ndarray (z, y, x, len(FEATURE_NAMES)), optional
        This volume's first-stage features, already computed (this function's blocks put
        together): they are sliced instead of computed again, and only ``context``'s
        :func:`context_features` are computed, block by block with the same context: the
        same blocks and values as computed from scratch.
    progress : callable, optional
        ``progress(slices done)``: the voxels done over the plane's, fractional within a
        block (after each group of filters of :func:`voxel_features`), before the block
        is yielded (the consumer reports the block's end).

    Raises
    ------
    ValueError
        ``features`` of another shape than ``probability``'s plus the features axis, or
        ``context`` of another shape than ``probability``.
    """
    shape = tuple(int(v) for v in probability.shape)
    n, ny, nx = shape
    if context is not None and np.shape(context) != probability.shape:
        raise ValueError(
            f"the first stage's probability must have the image's shape {probability.shape}; "
            f"got {np.shape(context)}"
        )
    if features is not None and features.shape != probability.shape + (len(FEATURE_NAMES),):
        raise ValueError(
            f"features must have shape {probability.shape + (len(FEATURE_NAMES),)}; got "
            f"{features.shape}"
        )
    halo = halo_per_axis(spacing)
    h = halo[0]
    plane = max(1, ny * nx)
    if min(n, 4 * h) * plane <= max_voxels:
        if slab is None:
            slab = max(2 * h, max_voxels // plane - 2 * h)
        cores = [(z0, min(n, z0 + slab), 0, ny, 0, nx) for z0 in range(0, n, slab)]
    else:
        c = _block_core(shape, halo, max_voxels)
        cores = [
            (z0, min(n, z0 + c), y0, min(ny, y0 + c), x0, min(nx, x0 + c))
            for z0 in range(0, n, c)
            for y0 in range(0, ny, c)
            for x0 in range(0, nx, c)
        ]
    per_slice = float(plane)
    done = 0  # voxels of the blocks yielded
    for z0, z1, y0, y1, x0, x1 in cores:
        if cancel is not None:
            cancel()
        region = (slice(z0, z1), slice(y0, y1), slice(x0, x1))
        size = (z1 - z0) * (y1 - y0) * (x1 - x0)
        if progress is None:
            within = None
        else:

            def within(frac: float, done: int = done, size: int = size) -> None:
                # the features are most of a block's time; the head on them, the rest
                progress((done + FEATURES_SHARE * frac * size) / per_slice)

        done += size
        big = tuple(
            slice(max(0, lo - e), min(m, hi + e))
            for lo, hi, e, m in zip((z0, y0, x0), (z1, y1, x1), halo, shape, strict=True)
        )
        inner = tuple(
            slice(r.start - b.start, r.stop - b.start) for r, b in zip(region, big, strict=True)
        )
        if features is not None:
            if context is None:
                yield region, features[region]
                continue
            extra = context_features(context[big], spacing)[inner]
            if within is not None:
                within(1.0)
            yield region, np.concatenate([features[region], extra], axis=-1)
            continue
        x = np.asarray(image[big], np.float32)
        if normalize is not None:
            x = np.asarray(normalize(x), np.float32)
        f = voxel_features(
            x,
            probability[big],
            spacing,
            None if context is None else context[big],
            progress=within,
        )
        yield region, f[inner]


class VoxelHead(nn.Module):
    """A perceptron from :data:`FEATURE_NAMES` to one vessel logit per voxel.

    The inputs are standardised with the ``mean`` and ``std`` buffers (set from the
    training voxels by :meth:`set_scaling`), then two hidden layers of ``hidden`` units
    with ReLU. ``forward``: ``(N, F)`` float32 -> ``(N,)`` logits, plus ``offset``.

    ``offset`` (a buffer, 0 until set) is the log of the share of background voxels the
    training drew (all vessel voxels, a few times as many background ones): a classifier
    trained on such a sample overstates the odds of vessel by its inverse (the prior
    correction of Saerens et al., Neural Comput. 2002), so with it 0.5 is again the cut
    between likelier vessel and likelier background. :meth:`sampled_logits` leaves it out
    (what training fits).
    """

    def __init__(self, n_features: int = len(FEATURE_NAMES), hidden: int = 64):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.register_buffer("offset", torch.zeros(()))
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def set_scaling(self, features: torch.Tensor) -> None:
        """Standardise future inputs by these ``(N, F)`` features' mean and spread."""
        f = features.float()
        self.mean.copy_(f.mean(0))
        self.std.copy_(f.std(0).clamp_min(1e-6))

    def sampled_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits without ``offset``: ``(N, F)`` -> ``(N,)``."""
        return self.net((features.float() - self.mean) / self.std)[:, 0]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.sampled_logits(features) + self.offset


class VoxelHeadNet(nn.Module):
    """A frozen segmentation network plus a :class:`VoxelHead` on its whole-volume output.

    ``forward`` is the base network's (the tiles' vessel logits); :meth:`refine` is the
    second stage :func:`~napari_topo.inference.pipeline.predict` runs on the assembled
    probability. Built from a card by the registry (architecture ``"unet3d-voxel-head"``).

    Parameters
    ----------
    base_architecture : {"unet3d"}
    base_kwargs : dict
        The base network's constructor arguments (its card's ``arch_kwargs``).
    hidden : int
        Units per hidden layer of the head.
    smooth : float
        Sigma, in finest voxel sizes, of the Gaussian smoothing of the head's probability
        (:meth:`refine`); 0: none.
    stages : {1, 2}
        2: a second head (``context_head``) reads :data:`FEATURE_NAMES` plus the first
        head's :func:`context_features` (auto-context, Tu and Bai 2010); its probability
        is the result. Models saved with one stage have no ``stages`` in their card.
    """

    def __init__(
        self,
        base_architecture: str = "unet3d",
        base_kwargs: dict | None = None,
        hidden: int = 64,
        smooth: float = 0.0,
        stages: int = 1,
    ):
        super().__init__()
        if base_architecture not in BASES:
            raise ValueError(f"a voxel head sits on {', '.join(BASES)}; got {base_architecture!r}")
        if stages not in (1, 2):
            raise ValueError(f"a voxel head has 1 or 2 stages; got {stages!r}")
        self.base_architecture = base_architecture
        self.base = BASES[base_architecture](**(base_kwargs or {}))
        self.hidden = int(hidden)
        self.smooth = float(smooth)
        self.head = VoxelHead(len(FEATURE_NAMES), self.hidden)
        self.context_head = None
        if stages == 2:
            self.context_head = VoxelHead(len(FEATURE_NAMES) + len(CONTEXT_NAMES), self.hidden)

    @property
    def stages(self) -> int:
        return 1 if self.context_head is None else 2

    @classmethod
    def on(
        cls, base: nn.Module, hidden: int = 64, smooth: float = 0.0, stages: int = 1
    ) -> VoxelHeadNet:
        """A new (untrained) head on a copy of ``base``'s weights."""
        arch = next((k for k, v in BASES.items() if type(base) is v), None)
        if arch is None:
            raise ValueError(
                f"a voxel head sits on a U-Net ({', '.join(BASES)}); got {type(base).__name__}"
            )
        net = cls(arch, base.arch_kwargs, hidden, smooth, stages)
        net.base.load_state_dict(base.state_dict())
        return net

    def one_stage(self) -> VoxelHeadNet:
        """This model without its second stage (the first head and the network shared)."""
        if self.context_head is None:
            return self
        net = VoxelHeadNet(self.base_architecture, self.base.arch_kwargs, self.hidden, self.smooth)
        net.base, net.head = self.base, self.head
        return net

    @property
    def arch_kwargs(self) -> dict:
        kwargs = {
            "base_architecture": self.base_architecture,
            "base_kwargs": self.base.arch_kwargs,
            "hidden": self.hidden,
            "smooth": self.smooth,
        }
        if self.stages != 1:  # a one-stage card stays as it was written
            kwargs["stages"] = self.stages
        return kwargs

    def output_spec(self) -> dict:
        return self.base.output_spec()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x)

    @torch.no_grad()
    def refine(
        self,
        image: Any,
        probability: np.ndarray,
        spacing: Sequence[float] | None = None,
        *,
        normalize: Callable[[np.ndarray], np.ndarray] | None = None,
        progress: Callable[[float, int], Any] | None = None,
        cancel: Callable[[], Any] | None = None,
        device: str | torch.device = "cpu",
        chunk: int = 1 << 20,
        features: np.ndarray | None = None,
    ) -> np.ndarray:
        """The head's vessel probability for every voxel: ``(z, y, x)`` float32 in [0, 1].

        ``image`` is the volume on the grid of ``probability`` (the base network's output
        mapped back to the input grid), normalised by ``normalize``; ``spacing`` its voxel
        size. Run on the CPU in float32 by default (the features are numpy/scipy);
        ``progress(done, total)`` counts slices (``done`` a float: the voxels done over a
        plane's, fractional within a block). With ``smooth`` > 0 the head's probability is
        then smoothed by a Gaussian of that many finest voxel sizes: a voxel classifier
        decides each voxel alone, and its speckle breaks thin vessels and leaves small false
        pieces (on the development CT, sigma 1 raised the lower half's clDice by 0.01-0.02
        at every threshold; ``docs/finetune.md``). With two stages the first head's
        probability is computed over the whole volume first, then the second head's from the
        features again plus :func:`context_features` of it (``progress`` then counts each
        slice twice). ``features``: the first-stage features of this volume already computed
        (:func:`feature_blocks`' ``features``; fine-tuning keeps them for its box), so that
        each stage computes only what it adds.
        """
        n = int(probability.shape[0])
        total = n * self.stages
        out = self.stage_probability(
            image,
            probability,
            spacing,
            stage=1,
            normalize=normalize,
            progress=None if progress is None else lambda done: progress(done, total),
            cancel=cancel,
            device=device,
            chunk=chunk,
            features=features,
        )
        if self.context_head is not None:
            out = self.stage_probability(
                image,
                probability,
                spacing,
                stage=2,
                first=out,
                normalize=normalize,
                progress=None if progress is None else lambda done: progress(n + done, total),
                cancel=cancel,
                device=device,
                chunk=chunk,
                features=features,
            )
        if self.smooth > 0:
            from scipy import ndimage as ndi

            sp = (1.0, 1.0, 1.0) if spacing is None else spacing
            out = ndi.gaussian_filter(out, _sigmas(self.smooth, sp), truncate=TRUNCATE)
        return out

    @torch.no_grad()
    def stage_probability(
        self,
        image: Any,
        probability: np.ndarray,
        spacing: Sequence[float] | None = None,
        *,
        stage: int = 1,
        first: np.ndarray | None = None,
        normalize: Callable[[np.ndarray], np.ndarray] | None = None,
        progress: Callable[[float], Any] | None = None,
        cancel: Callable[[], Any] | None = None,
        device: str | torch.device = "cpu",
        chunk: int = 1 << 20,
        features: np.ndarray | None = None,
    ) -> np.ndarray:
        """One head's probability, unsmoothed: ``(z, y, x)`` float32 in [0, 1].

        ``stage`` 1: :attr:`head` on :func:`voxel_features`; 2: :attr:`context_head` on
        them plus the :func:`context_features` of ``first`` (the first stage's output,
        required). Arguments as for :meth:`refine` (``features`` too);
        ``progress(slices done)``.

        Raises
        ------
        ValueError
            ``stage`` 2 without a second head or without ``first``.
        """
        if stage == 2 and (self.context_head is None or first is None):
            raise ValueError("a second stage needs its head and the first stage's probability")
        head = (self.head if stage == 1 else self.context_head).to(device).float().eval()
        out = np.empty(probability.shape, np.float32)
        plane = float(max(1, probability.shape[1] * probability.shape[2]))
        done = 0
        for region, f in feature_blocks(
            image,
            probability,
            spacing,
            normalize=normalize,
            cancel=cancel,
            context=first if stage == 2 else None,
            features=features,
            # within a block too: a CT crop is one slab, and the bar stood still for ~30 s
            progress=progress,
        ):
            flat = f.reshape(-1, f.shape[-1])
            res = np.empty(len(flat), np.float32)
            for c in range(0, len(flat), chunk):
                t = torch.from_numpy(flat[c : c + chunk]).to(device)
                res[c : c + chunk] = torch.sigmoid(head(t)).cpu().numpy()
            out[region] = res.reshape(f.shape[:3])
            done += res.size
            if progress is not None:
                progress(done / plane)
        return out
