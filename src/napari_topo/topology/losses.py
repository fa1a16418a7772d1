"""Differentiable topology losses for tubular structures (PyTorch, 2D and 3D).

Every loss is an ``nn.Module`` called as ``loss(input, target)`` with tensors of shape
``(N, C, H, W)`` or ``(N, C, D, H, W)``. ``input`` holds **probabilities** in [0, 1]
unless the loss was built with ``sigmoid=True``, in which case it holds logits.
``target`` has the shape of ``input`` and holds {0, 1} (or soft) labels. Losses are
computed per sample and per class, then reduced with ``reduction`` ("mean", "sum" or
"none" for an ``(N, C)`` tensor). With ``include_background=False`` and ``C > 1`` the
channel 0 is ignored. All arithmetic runs in float32, even under ``torch.autocast``,
and every loss is finite (no NaN) on empty masks.

What is here, and where it comes from:

- :func:`soft_skeleton`: Algorithm 1 of clDice (Shit et al., CVPR 2021), with the
  reference code's kernels, computed with far less time and memory (see its docstring).
- :class:`SoftDiceLoss`, :class:`SoftclDiceLoss` and the paper's combination
  :class:`DiceclDiceLoss`, ``L_c = (1 - alpha)(1 - softDice) + alpha (1 - softclDice)``.
- :class:`ProjectedPoolingLoss`: Fu et al., SPIE Medical Imaging 2023.
- :class:`CenternessLoss`, :class:`EmbeddingMetricLoss` and :class:`TopNetLoss`:
  TopNet (Keshwani et al., MICCAI 2020), with :func:`sample_embedding_pairs` to draw
  the voxel pairs of the metric loss in bounded memory.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CenternessLoss",
    "DiceclDiceLoss",
    "EmbeddingMetricLoss",
    "ProjectedPoolingLoss",
    "SkeletonIterationWarning",
    "SoftDiceLoss",
    "SoftclDiceLoss",
    "TopNetLoss",
    "sample_embedding_pairs",
    "soft_dilate",
    "soft_erode",
    "soft_skeleton",
]

#: Added to numerators and denominators of Dice-like ratios (the clDice reference code's
#: ``smooth = 1``): a ratio over two empty masks is 1, so its loss is 0, not NaN.
DEFAULT_SMOOTH = 1.0
#: Added to the denominator of clDice's harmonic mean (as MONAI does).
HARMONIC_EPS = 1e-4
#: Added under the square root of embedding distances: d/dx sqrt(x) is infinite at 0.
DISTANCE_EPS = 1e-8

_REDUCTIONS = ("mean", "sum", "none")


class SkeletonIterationWarning(UserWarning):
    """``soft_skeleton`` ran out of iterations before thinning the thickest structures."""


# ---------------------------------------------------------------------------------------
# Morphology with compact autograd state
# ---------------------------------------------------------------------------------------
# The reference soft skeleton (clDice code, MONAI's ``soft_skel``) builds erosion from
# three min-pools and dilation from a 3^d max-pool. Each pool keeps int64 argmax indices
# plus its negated input and output for backward: about 330 MiB per iteration at 128^3.
# Here each erosion/dilation is one autograd node that keeps only a uint8 "which
# neighbour won" map (1 byte per voxel), from which backward routes the gradient.
# Forward values are identical to the reference (min/max are exact).


def _narrow_pair(t: torch.Tensor, axis: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Views ``(dst, src)`` of ``t`` along ``axis`` such that ``src[i] = t[i + shift]``."""
    n = t.shape[axis] - 1
    if shift > 0:
        return t.narrow(axis, 0, n), t.narrow(axis, 1, n)
    return t.narrow(axis, 1, n), t.narrow(axis, 0, n)


def _taps_extremum(x: torch.Tensor, taps: Sequence[tuple[int, int]], take_min: bool):
    """Min or max of ``x`` over itself and the shifted neighbours ``taps``.

    Out-of-range neighbours are ignored (as pooling's implicit -inf/+inf padding does).
    Returns the values and a uint8 map: 0 = the voxel itself, k = ``taps[k - 1]``.
    """
    out = x.clone()
    winner = torch.zeros(x.shape, dtype=torch.uint8, device=x.device)
    for k, (axis, shift) in enumerate(taps, start=1):
        dst, _ = _narrow_pair(out, axis, shift)
        _, src = _narrow_pair(x, axis, shift)
        better = torch.lt(src, dst) if take_min else torch.gt(src, dst)
        dst.copy_(torch.where(better, src, dst))
        _narrow_pair(winner, axis, shift)[0].masked_fill_(better, k)
    return out, winner


def _taps_backward(grad: torch.Tensor, winner: torch.Tensor, taps: Sequence[tuple[int, int]]):
    """Route ``grad`` back to the neighbour recorded in ``winner`` for each voxel."""
    zero = grad.new_zeros(())
    grad_in = torch.where(winner == 0, grad, zero)
    for k, (axis, shift) in enumerate(taps, start=1):
        g_dst, _ = _narrow_pair(grad, axis, shift)
        w_dst, _ = _narrow_pair(winner, axis, shift)
        _, gi_src = _narrow_pair(grad_in, axis, shift)
        gi_src.add_(torch.where(w_dst == k, g_dst, zero))
    return grad_in


class _Extremum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, taps, take_min):  # noqa: D102
        out, winner = _taps_extremum(x, taps, take_min)
        ctx.save_for_backward(winner)
        ctx.taps = taps
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (winner,) = ctx.saved_tensors
        return _taps_backward(grad.contiguous(), winner, ctx.taps), None, None


def _spatial_axes(x: torch.Tensor) -> range:
    return range(2, x.ndim)


def _extremum(x: torch.Tensor, taps, take_min: bool) -> torch.Tensor:
    if torch.is_grad_enabled() and x.requires_grad:
        return _Extremum.apply(x, tuple(taps), take_min)
    return _taps_extremum(x, taps, take_min)[0]


def soft_erode(x: torch.Tensor) -> torch.Tensor:
    """Grey-scale erosion by the cross (the voxel and its 2d face neighbours).

    Equal to the clDice reference ``min(minpool_z, minpool_y, minpool_x)`` with 1-D
    kernels of size 3. ``x`` is ``(N, C, H, W)`` or ``(N, C, D, H, W)``.
    """
    taps = [(a, s) for a in _spatial_axes(x) for s in (-1, 1)]
    return _extremum(x, taps, take_min=True)


def soft_dilate(x: torch.Tensor) -> torch.Tensor:
    """Grey-scale dilation by the full 3^d box, as the reference ``maxpool`` (3^d kernel).

    Computed as separable 3-tap maxima along each axis: the same values as a 3^d
    max-pool with 3d comparisons per voxel instead of 3^d.
    """
    for a in _spatial_axes(x):
        x = _extremum(x, [(a, -1), (a, 1)], take_min=False)
    return x


def _check_image_tensor(x, name: str = "input") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (4, 5):
        raise ValueError(
            f"{name} must have shape (N, C, H, W) or (N, C, D, H, W), got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def soft_skeleton(x: torch.Tensor, iterations: int = 10, *, warn: bool = True) -> torch.Tensor:
    """Differentiable soft skeleton of a probability map (clDice, Algorithm 1).

    Iteratively erodes ``x`` and collects what an opening removes::

        S = relu(x - open(x))
        repeat `iterations` times:
            x = erode(x)
            S = S + relu(delta - S * delta),   delta = relu(x - open(x))

    with ``open = dilate . erode``, erosion by the cross and dilation by the 3^d box
    (the reference code's kernels). Each iteration's erosion is reused as the next
    iteration's ``x``: the reference computes it twice. The output is identical to the
    reference's; with the compact autograd nodes above, forward + backward at 128^3
    takes a fraction of the reference's time and memory (``benchmarks/bench_losses.py``).

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C, H, W)`` or ``(N, C, D, H, W)`` probabilities in [0, 1].
    iterations : int
        Number of thinning iterations ``k``. It must be at least the radius, in voxels,
        of the thickest structure: a tube of radius 4 needs ``k >= 4``.
    warn : bool
        Emit :class:`SkeletonIterationWarning` when structures thicker than
        ``iterations`` remain after the last iteration (a cheap check: one ``max``).

    Returns
    -------
    torch.Tensor
        The soft skeleton, same shape as ``x``, values in [0, 1] for inputs in [0, 1].

    Examples
    --------
    >>> import torch
    >>> tube = torch.zeros(1, 1, 9, 9, 9)
    >>> tube[..., 3:6, 3:6] = 1.0  # a 3x3 bar along z
    >>> skel = soft_skeleton(tube, iterations=2)
    >>> int(skel.sum())  # one voxel per slice
    9
    """
    _check_image_tensor(x, "x")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)):
        raise TypeError(f"iterations must be an int, got {type(iterations).__name__}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    eroded = soft_erode(x)
    skel = F.relu(x - soft_dilate(eroded))
    for _ in range(int(iterations)):
        x, eroded = eroded, soft_erode(eroded)
        delta = F.relu(x - soft_dilate(eroded))
        skel = skel + F.relu(delta - skel * delta)
    if warn:
        remaining = float(eroded.detach().amax()) if eroded.numel() else 0.0
        if remaining > 0.5:
            warnings.warn(
                f"soft_skeleton: {iterations} iterations are too few for these structures "
                f"(after {iterations + 1} erosions values up to {remaining:.2f} remain, so "
                "parts thicker than that many voxels are not thinned); use iterations >= "
                "the radius of the thickest structure in voxels.",
                SkeletonIterationWarning,
                stacklevel=2,
            )
    return skel


# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------


class _RegionLoss(nn.Module):
    """Shared input handling: validation, float32, sigmoid, background, reduction."""

    def __init__(self, *, sigmoid: bool, include_background: bool, reduction: str):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.sigmoid = bool(sigmoid)
        self.include_background = bool(include_background)
        self.reduction = reduction

    def _prepare(self, input: torch.Tensor, target: torch.Tensor):
        _check_image_tensor(input, "input")
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
        if target.shape != input.shape:
            raise ValueError(
                f"target must have the shape of input {tuple(input.shape)}, "
                f"got {tuple(target.shape)}"
            )
        input = input.float()
        target = target.detach().float()
        if self.sigmoid:
            input = torch.sigmoid(input)
        if not self.include_background and input.shape[1] > 1:
            input, target = input[:, 1:], target[:, 1:]
        return input, target

    def _reduce(self, per_class: torch.Tensor) -> torch.Tensor:
        if self.reduction == "mean":
            return per_class.mean()
        if self.reduction == "sum":
            return per_class.sum()
        return per_class


def _autocast_off(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


#: The call contract shared by the region losses, appended to each one's docstring.
_REGION_CALL_DOC = """
    Calling it
    ----------
    ``loss(input, target)``: ``input`` a float tensor ``(N, C, H, W)`` or ``(N, C, D, H,
    W)`` (probabilities, or logits with ``sigmoid=True``), ``target`` of the same shape
    in [0, 1]. Returns float32: a 0-d tensor for ``reduction`` "mean" or "sum", ``(N,
    C)`` for "none" (``(N, C - 1)`` without the background channel). Raises
    ``TypeError`` for a non-tensor and ``ValueError`` for another ndim, a non-float
    ``input`` or a ``target`` of another shape; ``ValueError`` at construction for a bad
    ``reduction`` or parameter.
    """


def _with_call_doc(cls):
    """Append :data:`_REGION_CALL_DOC` to ``cls``'s docstring (kept as written)."""
    if cls.__doc__:
        cls.__doc__ = cls.__doc__.rstrip() + "\n" + _REGION_CALL_DOC
    return cls


def _soft_dice(p: torch.Tensor, g: torch.Tensor, smooth_nr: float, smooth_dr: float):
    """Per-(N, C) soft Dice coefficient."""
    dims = tuple(range(2, p.ndim))
    inter = (p * g).sum(dims)
    return (2.0 * inter + smooth_nr) / (p.sum(dims) + g.sum(dims) + smooth_dr)


@_with_call_doc
class SoftDiceLoss(_RegionLoss):
    """``1 - softDice`` per sample and class.

    ``softDice = (2 sum(p g) + smooth_nr) / (sum(p) + sum(g) + smooth_dr)``.

    Parameters
    ----------
    smooth_nr, smooth_dr : float
        Smoothing constants (default :data:`DEFAULT_SMOOTH`): empty prediction and
        empty target give a loss of 0.
    sigmoid : bool
        Apply a sigmoid to ``input`` (pass logits).
    include_background : bool
        If False and there is more than one channel, channel 0 is ignored.
    reduction : {"mean", "sum", "none"}

    """

    def __init__(
        self,
        *,
        smooth_nr: float = DEFAULT_SMOOTH,
        smooth_dr: float = DEFAULT_SMOOTH,
        sigmoid: bool = False,
        include_background: bool = True,
        reduction: str = "mean",
    ):
        super().__init__(
            sigmoid=sigmoid, include_background=include_background, reduction=reduction
        )
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: D102
        with _autocast_off(input.device):
            p, g = self._prepare(input, target)
            return self._reduce(1.0 - _soft_dice(p, g, self.smooth_nr, self.smooth_dr))


@_with_call_doc
class SoftclDiceLoss(_RegionLoss):
    """``1 - softclDice`` (clDice, Algorithm 2) per sample and class.

    ``Tprec = (sum(S_P * V_L) + smooth_nr) / (sum(S_P) + smooth_dr)``,
    ``Tsens = (sum(S_L * V_P) + smooth_nr) / (sum(S_L) + smooth_dr)``,
    ``softclDice = 2 Tprec Tsens / (Tprec + Tsens + eps)``, where ``S_P`` and ``S_L`` are
    :func:`soft_skeleton` of prediction and target. The target's skeleton is computed
    without autograd. With one channel this equals MONAI's ``SoftclDiceLoss`` with the
    same ``iterations`` and smoothing; with several channels MONAI pools all channels
    into one ratio, while here each class gets its own clDice (the paper's per-class
    reading) before reduction.

    Parameters
    ----------
    iterations : int
        Soft-skeleton iterations: at least the largest structure radius in voxels.
    smooth_nr, smooth_dr : float
        Smoothing of Tprec and Tsens (default 1, as the reference code).
    eps : float
        Added to the harmonic mean's denominator (default :data:`HARMONIC_EPS`).
    sigmoid, include_background, reduction
        As in :class:`SoftDiceLoss`.

    """

    def __init__(
        self,
        iterations: int = 10,
        *,
        smooth_nr: float = DEFAULT_SMOOTH,
        smooth_dr: float = DEFAULT_SMOOTH,
        eps: float = HARMONIC_EPS,
        sigmoid: bool = False,
        include_background: bool = True,
        reduction: str = "mean",
    ):
        super().__init__(
            sigmoid=sigmoid, include_background=include_background, reduction=reduction
        )
        if (
            isinstance(iterations, bool | np.bool_)
            or not isinstance(iterations, int | np.integer)
            or iterations < 0
        ):
            raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
        iterations = int(iterations)  # a numpy integer (from a config or a sweep) too
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.iterations = iterations
        self.smooth_nr, self.smooth_dr, self.eps = float(smooth_nr), float(smooth_dr), float(eps)

    def cldice(self, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Per-(N, C) soft clDice of prepared probabilities ``p`` and labels ``g``."""
        dims = tuple(range(2, p.ndim))
        skel_p = soft_skeleton(p, self.iterations)
        with torch.no_grad():
            skel_g = soft_skeleton(g, self.iterations)
        tprec = ((skel_p * g).sum(dims) + self.smooth_nr) / (skel_p.sum(dims) + self.smooth_dr)
        tsens = ((skel_g * p).sum(dims) + self.smooth_nr) / (skel_g.sum(dims) + self.smooth_dr)
        return 2.0 * tprec * tsens / (tprec + tsens + self.eps).clamp_min(1e-12)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: D102
        with _autocast_off(input.device):
            p, g = self._prepare(input, target)
            return self._reduce(1.0 - self.cldice(p, g))


@_with_call_doc
class DiceclDiceLoss(SoftclDiceLoss):
    """clDice's combined loss ``L_c = (1 - alpha)(1 - softDice) + alpha (1 - softclDice)``.

    Parameters
    ----------
    alpha : float
        Weight of the clDice term, in [0, 0.5] as in the paper (0 is plain soft Dice).
    iterations, smooth_nr, smooth_dr, eps, sigmoid, include_background, reduction
        As in :class:`SoftclDiceLoss`; the Dice term uses the same smoothing.

    """

    def __init__(self, alpha: float = 0.3, iterations: int = 10, **kwargs):
        super().__init__(iterations, **kwargs)
        if not 0.0 <= float(alpha) <= 0.5:
            raise ValueError(f"alpha must be in [0, 0.5] (clDice, eq. 3), got {alpha}")
        self.alpha = float(alpha)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: D102
        with _autocast_off(input.device):
            p, g = self._prepare(input, target)
            dice = _soft_dice(p, g, self.smooth_nr, self.smooth_dr)
            if self.alpha == 0.0:
                return self._reduce(1.0 - dice)
            loss = (1.0 - self.alpha) * (1.0 - dice) + self.alpha * (1.0 - self.cldice(p, g))
            return self._reduce(loss)


def _projections(x: torch.Tensor) -> list[torch.Tensor]:
    """Max-projections of ``(N, C, D, H, W)`` onto its three planes; a 2D image is its own."""
    if x.ndim == 4:
        return [x]
    return [x.amax(dim=2), x.amax(dim=3), x.amax(dim=4)]


@_with_call_doc
class ProjectedPoolingLoss(_RegionLoss):
    """Projected pooling loss (Fu et al., SPIE Medical Imaging 2023), ``L_topo + lambda L_dice``.

    The volume is max-projected onto the axial, coronal and sagittal planes (eq. 1); each
    projection is max-pooled with square kernels ``k`` in ``kernels`` and stride ``k``
    (eq. 2); ``L_topo`` averages the difference between pooled prediction and pooled
    target over kernels and planes (eq. 3). A 2D input is its own single "projection".

    Two readings of "difference" are offered (``mode``):

    - ``"pixel"`` (default): the mean over pooled pixels of ``|MP(P) - MP(G)|``. This is how
      eq. 3 reads and it keeps *where* the error is: a missing vessel piece and a spurious
      blob elsewhere both count.
    - ``"sum"``: ``|mean(MP(P)) - mean(MP(G))|``, the authors' released code, which compares
      the *sums* of the pooled maps. Errors of opposite sign cancel, and its gradient
      pushes every pooled maximum the same way, so it is a weaker, non-local signal.
      The sums are divided by the number of pooled pixels so that the loss does not grow
      with the patch size (the released code's sums do).

    Both give ``L_topo`` in [0, 1] for inputs in [0, 1], whatever the patch size.
    Kernels larger than a projected side are skipped for that plane; if no kernel fits
    any plane ``L_topo`` is 0.

    Parameters
    ----------
    kernels : sequence of int
        Pooling kernel sizes (the paper's 4, 5, 8, 10, 20).
    lambda_dice : float
        Weight of the soft-Dice loss (the paper uses 1). 0 gives ``L_topo`` alone.
    mode : {"pixel", "sum"}
    smooth_nr, smooth_dr, sigmoid, include_background, reduction
        As in :class:`SoftDiceLoss`.

    """

    def __init__(
        self,
        kernels: Sequence[int] = (4, 5, 8, 10, 20),
        lambda_dice: float = 1.0,
        *,
        mode: str = "pixel",
        smooth_nr: float = DEFAULT_SMOOTH,
        smooth_dr: float = DEFAULT_SMOOTH,
        sigmoid: bool = False,
        include_background: bool = True,
        reduction: str = "mean",
    ):
        super().__init__(
            sigmoid=sigmoid, include_background=include_background, reduction=reduction
        )
        kernels = tuple(int(k) for k in kernels)
        if not kernels or min(kernels) < 1:
            raise ValueError(f"kernels must be a non-empty sequence of ints >= 1, got {kernels}")
        if mode not in ("pixel", "sum"):
            raise ValueError(f"mode must be 'pixel' or 'sum', got {mode!r}")
        if lambda_dice < 0:
            raise ValueError(f"lambda_dice must be >= 0, got {lambda_dice}")
        self.kernels, self.mode, self.lambda_dice = kernels, mode, float(lambda_dice)
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)

    def topo(self, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Per-(N, C) ``L_topo`` of prepared probabilities ``p`` and labels ``g``."""
        terms = []
        for proj_p, proj_g in zip(_projections(p), _projections(g), strict=True):
            for k in self.kernels:
                if k > min(proj_p.shape[-2:]):
                    continue
                mp_p = F.max_pool2d(proj_p, k, stride=k, ceil_mode=True)
                mp_g = F.max_pool2d(proj_g, k, stride=k, ceil_mode=True)
                if self.mode == "pixel":
                    terms.append((mp_p - mp_g).abs().mean(dim=(-2, -1)))
                else:
                    terms.append((mp_p.mean(dim=(-2, -1)) - mp_g.mean(dim=(-2, -1))).abs())
        if not terms:
            return p.new_zeros(p.shape[:2]) + 0.0 * p.sum()
        return torch.stack(terms).mean(dim=0)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: D102
        with _autocast_off(input.device):
            p, g = self._prepare(input, target)
            loss = self.topo(p, g)
            if self.lambda_dice:
                dice = _soft_dice(p, g, self.smooth_nr, self.smooth_dr)
                loss = loss + self.lambda_dice * (1.0 - dice)
            return self._reduce(loss)


# ---------------------------------------------------------------------------------------
# TopNet
# ---------------------------------------------------------------------------------------


class CenternessLoss(nn.Module):
    """TopNet's centerness regression: weighted smooth-L1 inside the vessels.

    The network regresses ``S``, the distance of each vessel voxel to the nearest
    centerline voxel (0 on the centerline). The notes' equation was lost; our reading::

        L = sum_j w_j smoothL1(S'_j - S_j) / sum_j w_j,   w_j = 1 / (1 + S_j)^2,

    over vessel voxels ``j`` only (voxels outside would dominate otherwise). The weight is
    the notes' denominator: there are many more voxels far from the centerline than on
    it (their count grows with ``S``), and without it the fit favours them; ``+ 1`` keeps
    centerline voxels finite. Normalising by ``sum w`` makes it a weighted mean whose
    scale does not depend on the patch. An empty vessel mask gives 0.

    Source: Keshwani et al., "TopNet: Topology Preserving Metric Learning for Vessel Tree
    Reconstruction and Labelling", MICCAI 2020, the centerness decoder (smooth-L1
    regression; the seed notes, ``topnet-notes.txt`` section 2, keep the loss's name,
    not its equation).

    Parameters
    ----------
    beta : float
        Smooth-L1 transition point, in the units of ``distance`` (voxels as the trainer
        computes it: a Euclidean distance transform without sampling). Must be > 0.

    ``forward(pred, distance, vessel)``: ``pred`` and ``distance`` are ``(N, 1, ...)``
    float tensors (``distance`` in voxels, >= 0), ``vessel`` a {0, 1} tensor of the same
    shape. Returns a 0-d float32 tensor. Raises ``ValueError`` when the shapes differ and
    ``TypeError``/``ValueError`` for a ``pred`` that is not a 4D/5D float tensor.
    """

    def __init__(self, beta: float = 1.0):
        super().__init__()
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.beta = float(beta)

    def forward(self, pred: torch.Tensor, distance: torch.Tensor, vessel: torch.Tensor):  # noqa: D102
        _check_image_tensor(pred, "pred")
        if distance.shape != pred.shape or vessel.shape != pred.shape:
            raise ValueError(
                f"distance {tuple(distance.shape)} and vessel {tuple(vessel.shape)} must have "
                f"the shape of pred {tuple(pred.shape)}"
            )
        with _autocast_off(pred.device):
            pred, distance = pred.float(), distance.detach().float()
            w = vessel.detach().float() / (1.0 + distance.clamp_min(0.0)) ** 2
            err = F.smooth_l1_loss(pred, distance, reduction="none", beta=self.beta)
            return (w * err).sum() / w.sum().clamp_min(1e-6)


class EmbeddingMetricLoss(nn.Module):
    """TopNet's topology metric loss on a per-voxel embedding (default 8-d).

    For voxel pairs ``(i, j)`` closer than 15 voxels, with embeddings ``x_i, x_j``, tree
    labels ``l_i, l_j`` and geodesic (along-vessel) distance ``D_ij``. The notes lost the
    equations; our reading::

        same tree:       | ||x_i - x_j|| - alpha * D_ij |
        different trees: max(0, K - ||x_i - x_j||)
        L = mean_same + gamma * mean_different

    with ``alpha = 1/15`` (so ``alpha * D`` spans about [0, 1] within the 15-voxel
    neighbourhood), ``K = 3`` and ``gamma = 1/3`` (the hinge spans [0, 3]; ``gamma``
    brings it to the scale of the first term). ``||.||`` is computed as
    ``sqrt(|.|^2 + 1e-8)`` so that the gradient is finite at 0.

    ``forward(embedding, index_a, index_b, geodesic, same_tree)``: ``embedding`` is
    ``(N, E, *spatial)``; ``index_a``/``index_b`` are int64 flat indices into
    ``N * prod(spatial)`` (sample-major, as from :func:`sample_embedding_pairs`);
    ``geodesic`` float, ``same_tree`` bool, all of length P. Only the P pairs are
    gathered, so memory is O(P * E), whatever the volume. No pairs give 0.

    Source: Keshwani et al., MICCAI 2020 (TopNet), the embedding decoder's topology
    metric loss (the seed notes keep its terms, not its equations).

    Parameters
    ----------
    alpha : float
        Embedding distance per voxel of geodesic distance (``D_ij`` is in voxels).
    margin : float
        ``K``, the hinge margin between trees, in embedding units.
    gamma : float
        Weight of the different-tree term (>= 0).

    Returns a 0-d float32 tensor from ``forward``. Raises ``ValueError`` on bad
    parameters, pair arrays of different lengths or indices outside the volume.
    """

    def __init__(self, alpha: float = 1.0 / 15.0, margin: float = 3.0, gamma: float = 1.0 / 3.0):
        super().__init__()
        if alpha <= 0 or margin <= 0 or gamma < 0:
            raise ValueError(
                f"need alpha > 0, margin > 0, gamma >= 0; got {alpha}, {margin}, {gamma}"
            )
        self.alpha, self.margin, self.gamma = float(alpha), float(margin), float(gamma)

    def forward(  # noqa: D102
        self,
        embedding: torch.Tensor,
        index_a: torch.Tensor,
        index_b: torch.Tensor,
        geodesic: torch.Tensor,
        same_tree: torch.Tensor,
    ) -> torch.Tensor:
        _check_image_tensor(embedding, "embedding")
        n_pairs = index_a.numel()
        if not (index_b.numel() == geodesic.numel() == same_tree.numel() == n_pairs):
            raise ValueError("index_a, index_b, geodesic and same_tree must have the same length")
        with _autocast_off(embedding.device):
            emb = embedding.float()
            if n_pairs == 0:
                return 0.0 * emb.sum()
            n, e = emb.shape[:2]
            flat = emb.reshape(n, e, -1).permute(0, 2, 1).reshape(-1, e)
            if (
                int(max(index_a.max(), index_b.max())) >= flat.shape[0]
                or int(min(index_a.min(), index_b.min())) < 0
            ):
                raise ValueError("pair indices fall outside the embedding volume")
            diff = flat[index_a] - flat[index_b]
            dist = torch.sqrt((diff * diff).sum(dim=1) + DISTANCE_EPS)
            same = same_tree.bool()
            zero = dist.sum() * 0.0
            intra = (dist[same] - self.alpha * geodesic[same].float()).abs()
            inter = F.relu(self.margin - dist[~same])
            intra_term = intra.mean() if intra.numel() else zero
            inter_term = inter.mean() if inter.numel() else zero
            return intra_term + self.gamma * inter_term


class TopNetLoss(nn.Module):
    """TopNet's multi-task loss: soft Dice (vessel) + centerness + embedding metric.

    ``forward(outputs, targets)`` with dicts: ``outputs["vessel"]`` (N, 1, ...) logits,
    ``outputs["centerness"]`` (N, 1, ...), ``outputs["embedding"]`` (N, E, ...);
    ``targets["vessel"]``, ``targets["distance"]`` (distance to centerline) and the pair
    arrays ``targets["pairs"] = (index_a, index_b, geodesic, same_tree)``. Returns the
    weighted total (a 0-d tensor) and a dict of the detached parts (floats) for logging.
    Source: Keshwani et al., MICCAI 2020 (TopNet): the three decoders trained jointly.

    Parameters
    ----------
    w_vessel, w_center, w_embed : float
        Weights of the soft Dice (:class:`SoftDiceLoss` on logits), centerness
        (:class:`CenternessLoss`) and embedding (:class:`EmbeddingMetricLoss`) terms.
    **kw
        Passed to :class:`EmbeddingMetricLoss` (``alpha``, ``margin``, ``gamma``).
    """

    def __init__(self, w_vessel: float = 1.0, w_center: float = 1.0, w_embed: float = 1.0, **kw):
        super().__init__()
        self.w = (float(w_vessel), float(w_center), float(w_embed))
        self.dice = SoftDiceLoss(sigmoid=True)
        self.center = CenternessLoss()
        self.embed = EmbeddingMetricLoss(**kw)

    def forward(self, outputs: dict, targets: dict):  # noqa: D102
        vessel = targets["vessel"]
        parts = {
            "vessel": self.dice(outputs["vessel"], vessel),
            "centerness": self.center(outputs["centerness"], targets["distance"], vessel),
            "embedding": self.embed(outputs["embedding"], *targets["pairs"]),
        }
        total = sum(w * v for w, v in zip(self.w, parts.values(), strict=True))
        return total, {k: float(v.detach()) for k, v in parts.items()}


def sample_embedding_pairs(
    labels: np.ndarray,
    *,
    n_anchors: int = 256,
    partners: int = 16,
    radius: float = 15.0,
    geodesic_cutoff: float | None = None,
    points: np.ndarray | None = None,
    rng: np.random.Generator | int | None = None,
    batch_index: int = 0,
):
    """Draw voxel pairs and their geodesic distances for :class:`EmbeddingMetricLoss`.

    Pairs are drawn among ``points`` (by default every labelled voxel; pass the
    centerline voxels to follow TopNet's tree reconstruction). Geodesic distances are
    shortest paths through 26-connected voxels of the *same* tree
    (``scipy.sparse.csgraph.dijkstra`` with a distance limit), so ``D_ij`` follows the
    vessel, not the straight line. Memory is bounded by ``n_anchors * len(points)``
    distances plus the graph, never by the number of pairs in the volume.

    Parameters
    ----------
    labels : ndarray of int, shape (D, H, W) or (H, W)
        Tree id per voxel, 0 = background.
    n_anchors, partners : int
        Anchors drawn at random; each gets up to ``partners`` partners within ``radius``.
    radius : float
        Euclidean neighbourhood, in voxels (TopNet: 15).
    geodesic_cutoff : float, optional
        Dijkstra limit (default ``3 * radius``); same-tree pairs further apart along the
        vessel get this value.
    points : ndarray (M, ndim), optional
        Candidate voxels (integer coordinates inside ``labels > 0``).
    rng : Generator or int, optional
    batch_index : int
        Sample index, for flat indices into an ``(N, E, *spatial)`` batch.

    Returns
    -------
    index_a, index_b : ndarray of int64
        Flat indices ``batch_index * prod(shape) + ravel_multi_index(coords)``.
    geodesic : ndarray of float32
    same_tree : ndarray of bool
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra
    from scipy.spatial import cKDTree

    labels = np.asarray(labels)
    if labels.ndim not in (2, 3) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be a 2D or 3D integer array, got {labels.ndim}D {labels.dtype}"
        )
    rng = np.random.default_rng(rng)
    cutoff = float(geodesic_cutoff if geodesic_cutoff is not None else 3.0 * radius)
    if points is None:
        points = np.argwhere(labels > 0)
    points = np.asarray(points, dtype=np.int64).reshape(-1, labels.ndim)
    empty = np.zeros(0, np.int64)
    if len(points) < 2:
        return empty, empty.copy(), np.zeros(0, np.float32), np.zeros(0, bool)
    tree = labels[tuple(points.T)]
    if np.any(tree <= 0):
        raise ValueError("every point must lie inside a labelled voxel (labels > 0)")
    kd = cKDTree(points)
    # 26-neighbour edges within a tree, weighted by their Euclidean length.
    ij = kd.query_pairs(r=math.sqrt(labels.ndim) + 1e-6, output_type="ndarray")
    ij = ij[tree[ij[:, 0]] == tree[ij[:, 1]]]
    w = np.linalg.norm(points[ij[:, 0]] - points[ij[:, 1]], axis=1)
    m = len(points)
    graph = coo_matrix((w, (ij[:, 0], ij[:, 1])), shape=(m, m)).tocsr()
    anchors = rng.choice(m, size=min(n_anchors, m), replace=False)
    geo = dijkstra(graph, directed=False, indices=anchors, limit=cutoff)
    a_list, b_list, d_list, s_list = [], [], [], []
    for row, a in enumerate(anchors):
        near = np.asarray(kd.query_ball_point(points[a], r=radius), dtype=np.int64)
        near = near[near != a]
        if near.size == 0:
            continue
        near = rng.choice(near, size=min(partners, near.size), replace=False)
        same = tree[near] == tree[a]
        d = np.where(same, np.minimum(geo[row, near], cutoff), 0.0)
        a_list.append(np.full(near.size, a))
        b_list.append(near)
        d_list.append(d)
        s_list.append(same)
    if not a_list:
        return empty, empty.copy(), np.zeros(0, np.float32), np.zeros(0, bool)
    offset = batch_index * labels.size
    flat = np.ravel_multi_index(tuple(points.T), labels.shape) + offset
    a_idx, b_idx = np.concatenate(a_list), np.concatenate(b_list)
    return (
        flat[a_idx].astype(np.int64),
        flat[b_idx].astype(np.int64),
        np.concatenate(d_list).astype(np.float32),
        np.concatenate(s_list),
    )
