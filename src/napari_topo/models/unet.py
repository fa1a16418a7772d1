"""A compact 3D U-Net and the building blocks it shares with :mod:`.topnet`.

Both networks are assembled from the same pieces, defined once here:

- :class:`ConvBlock`: two ``3x3x3`` convolutions, each followed by
  ``InstanceNorm3d(affine=True)`` and ``LeakyReLU(0.01)``. The convolutions have no bias
  (the norm's affine shift makes it redundant).
- :class:`Encoder`: one :class:`ConvBlock` per level; between levels the resolution is
  halved by ``2x2x2`` max-pooling or by a ``2x2x2`` stride-2 convolution.
- :class:`UpStage`: doubles the resolution (``2x2x2`` transposed convolution, or trilinear
  interpolation followed by a ``1x1x1`` convolution), concatenates the encoder's skip
  features of that level and applies a :class:`ConvBlock`.
- :class:`Decoder`: the chain of :class:`UpStage` from the coarsest level to the finest.

Inputs of any spatial size are accepted: they are padded (edge replication, at the end
of each axis) to a multiple of ``2 ** (levels - 1)`` and the output is cropped back, so
the output has the input's size. Tensors are ``(N, C, D, H, W)``.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ConvBlock",
    "Decoder",
    "Encoder",
    "UNet3D",
    "UpStage",
    "count_parameters",
    "crop_to",
    "pad_to_multiple",
    "widen_unet",
]

#: Slope of the LeakyReLU used everywhere (as nnU-Net).
NEGATIVE_SLOPE = 0.01
DOWNSAMPLE_MODES = ("maxpool", "conv")
UPSAMPLE_MODES = ("transpose", "trilinear")


def _init_conv(conv: nn.Module) -> None:
    """He initialisation for LeakyReLU networks; biases (where present) start at 0."""
    nn.init.kaiming_normal_(conv.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


#: Voxels the :class:`ExcludingInstanceNorm3d` of the network running in this thread (or
#: task) leave out of their statistics: a bool tensor ``(N, 1, D, H, W)`` at the input's
#: resolution, or None. A context variable, so one model may run in several threads.
_EXCLUDE: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar(
    "napari_topo_norm_exclude", default=None
)


class ExcludingInstanceNorm3d(nn.InstanceNorm3d):
    """``InstanceNorm3d(affine=True)`` whose statistics can leave some voxels out.

    While a :class:`UNet3D` built with ``norm_exclude_above`` runs, each instance's mean
    and variance are taken over the voxels it does not exclude (its mask max-pooled to
    the feature map's size, so a coarse voxel is left out when any voxel under it is),
    and every voxel is normalised with them. An instance with fewer than
    :attr:`MIN_KEPT` voxels kept falls back to all of its voxels. Otherwise this is
    exactly :class:`torch.nn.InstanceNorm3d` (with its parameters, so weights move
    between the two). The mask is the input's, grown by one voxel: it covers what the
    first convolution mixes into a feature, not what deeper layers (whose reach is
    larger) mix in, so from the second norm on the features of voxels beside an
    excluded one still carry some of it.
    """

    #: Fewest voxels an instance's statistics are taken over.
    MIN_KEPT = 8

    def __init__(self, num_features: int, **kwargs):
        kwargs.setdefault("affine", True)
        if not kwargs["affine"]:
            raise ValueError("ExcludingInstanceNorm3d needs affine=True")
        super().__init__(num_features, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ex = _EXCLUDE.get()
        if ex is None:
            return super().forward(x)
        if tuple(ex.shape[2:]) != tuple(x.shape[2:]):
            ex = F.adaptive_max_pool3d(ex.to(x.dtype), x.shape[2:]) > 0
        keep = (~ex).to(x.dtype)
        n = keep.sum(dim=(2, 3, 4), keepdim=True)
        few = n < self.MIN_KEPT
        keep = torch.where(few, torch.ones_like(keep), keep)
        n = keep.sum(dim=(2, 3, 4), keepdim=True)
        mean = (x * keep).sum(dim=(2, 3, 4), keepdim=True) / n
        var = (((x - mean) ** 2) * keep).sum(dim=(2, 3, 4), keepdim=True) / n
        y = (x - mean) * torch.rsqrt(var + self.eps)
        return y * self.weight.view(1, -1, 1, 1, 1) + self.bias.view(1, -1, 1, 1, 1)


class ConvBlock(nn.Sequential):
    """Two ``3x3x3`` convolutions, each with ``InstanceNorm3d(affine=True)`` + LeakyReLU.

    The norms are :class:`ExcludingInstanceNorm3d`, which is ``InstanceNorm3d`` unless
    its owning network hands it voxels to leave out of the statistics.
    """

    def __init__(self, in_channels: int, out_channels: int):
        layers: list[nn.Module] = []
        for cin in (in_channels, out_channels):
            conv = nn.Conv3d(cin, out_channels, kernel_size=3, padding=1, bias=False)
            _init_conv(conv)
            layers += [
                conv,
                ExcludingInstanceNorm3d(out_channels, affine=True),
                nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
            ]
        super().__init__(*layers)


class Encoder(nn.Module):
    """Contracting path: ``len(widths)`` levels, the last one being the bottleneck.

    ``forward(x)`` returns the list of feature maps of every level, finest first:
    level ``k`` has ``widths[k]`` channels at ``1 / 2**k`` of the input's resolution.
    """

    def __init__(self, in_channels: int, widths: Sequence[int], downsample: str = "maxpool"):
        super().__init__()
        if downsample not in DOWNSAMPLE_MODES:
            raise ValueError(f"downsample must be one of {DOWNSAMPLE_MODES}, got {downsample!r}")
        self.blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        cin = in_channels
        for level, width in enumerate(widths):
            if level > 0:
                if downsample == "maxpool":
                    self.downs.append(nn.MaxPool3d(kernel_size=2, stride=2))
                else:
                    # A strided conv keeps cin channels; the ConvBlock then widens them.
                    down = nn.Conv3d(cin, cin, kernel_size=2, stride=2)
                    _init_conv(down)
                    self.downs.append(down)
            self.blocks.append(ConvBlock(cin, width))
            cin = width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # noqa: D102
        features = []
        for level, block in enumerate(self.blocks):
            if level > 0:
                x = self.downs[level - 1](x)
            x = block(x)
            features.append(x)
        return features


class UpStage(nn.Module):
    """Upsample ``in_channels`` -> ``out_channels``, concatenate a skip, :class:`ConvBlock`.

    ``forward(x, skip)``: ``x`` has ``in_channels`` channels, ``skip`` has
    ``out_channels`` channels and twice ``x``'s spatial size; the result has
    ``out_channels`` channels at ``skip``'s size.
    """

    def __init__(self, in_channels: int, out_channels: int, upsample: str = "transpose"):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        if upsample == "transpose":
            self.up = nn.ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2)
            nn.init.kaiming_normal_(self.up.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu")
            nn.init.zeros_(self.up.bias)
        else:
            reduce = nn.Conv3d(in_channels, out_channels, kernel_size=1)
            _init_conv(reduce)
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False), reduce
            )
        self.block = ConvBlock(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.block(torch.cat([self.up(x), skip], dim=1))


class Decoder(nn.Module):
    """Expanding path over ``widths`` (finest first, as for :class:`Encoder`).

    ``forward(features)`` takes the encoder's feature list for these levels (finest first),
    starts from the coarsest and returns ``widths[0]`` channels at ``features[0]``'s size.
    ``Decoder(widths[1:])`` fed ``features[1:]`` stops one level short of full resolution
    (what :class:`~napari_topo.models.topnet.TopNet` shares between its tasks).
    """

    def __init__(self, widths: Sequence[int], upsample: str = "transpose"):
        super().__init__()
        widths = list(widths)
        self.stages = nn.ModuleList(
            UpStage(widths[k + 1], widths[k], upsample) for k in reversed(range(len(widths) - 1))
        )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:  # noqa: D102
        if len(features) != len(self.stages) + 1:
            raise ValueError(f"expected {len(self.stages) + 1} feature maps, got {len(features)}")
        x = features[-1]
        for stage, skip in zip(self.stages, reversed(features[:-1]), strict=True):
            x = stage(x, skip)
        return x


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad the spatial axes of ``x`` at their end, by edge replication, to ``multiple``.

    Returns the padded tensor and the original spatial shape (for :func:`crop_to`).
    """
    shape = tuple(x.shape[2:])
    extra = [(-s) % multiple for s in shape]
    if not any(extra):
        return x, shape
    pads: list[int] = []
    for e in reversed(extra):  # F.pad lists the last axis first
        pads += [0, e]
    return F.pad(x, pads, mode="replicate"), shape


def crop_to(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Crop the spatial axes of ``x`` to ``shape`` (undo :func:`pad_to_multiple`)."""
    if tuple(x.shape[2:]) == tuple(shape):
        return x
    return x[(..., *(slice(0, s) for s in shape))]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    """Validate ``widths`` (at least two positive ints) and return them as a tuple."""
    try:
        widths = tuple(int(w) for w in widths)
    except TypeError as err:
        raise ValueError(f"widths must be a sequence of ints, got {widths!r}") from err
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"widths needs at least 2 positive entries, got {widths}")
    return widths


def check_input(x: torch.Tensor, in_channels: int) -> None:
    """Raise ``ValueError`` unless ``x`` is a float ``(N, in_channels, D, H, W)`` tensor."""
    if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[1] != in_channels:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a (N, {in_channels}, D, H, W) tensor, got {got}")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point tensor, got {x.dtype}")


class UNet3D(nn.Module):
    """Compact 3D U-Net returning logits ``(N, out_channels, D, H, W)``.

    Parameters
    ----------
    in_channels, out_channels : int
        Image channels in, logit channels out (1: binary vessel mask, use a sigmoid).
    widths : sequence of int
        Channels per level, finest first; ``len(widths)`` levels, so the input is padded
        internally to a multiple of ``2 ** (len(widths) - 1)``. The default
        ``(8, 16, 32, 64)`` has about 0.35 M parameters (1.4 MB in float32).
    downsample : {"maxpool", "conv"}
        ``2x2x2`` max-pooling or a stride-2 ``2x2x2`` convolution between levels.
    upsample : {"transpose", "trilinear"}
        ``2x2x2`` transposed convolution, or trilinear interpolation + ``1x1x1`` conv.

    ``arch_kwargs`` gives the constructor arguments as JSON-serialisable values, so that
    ``UNet3D(**net.arch_kwargs)`` rebuilds the architecture (the model card stores them).

    Examples
    --------
    >>> net = UNet3D(widths=(4, 8))
    >>> net(torch.zeros(1, 1, 9, 10, 11)).shape
    torch.Size([1, 1, 9, 10, 11])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        widths: Sequence[int] = (8, 16, 32, 64),
        downsample: str = "maxpool",
        upsample: str = "transpose",
        norm_exclude_above: float | None = None,
    ):
        super().__init__()
        if norm_exclude_above is not None and not math.isfinite(float(norm_exclude_above)):
            raise ValueError(f"norm_exclude_above must be finite; got {norm_exclude_above}")
        self.norm_exclude_above = None if norm_exclude_above is None else float(norm_exclude_above)
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise ValueError(
                f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}"
            )
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.widths = check_widths(widths)
        self.downsample, self.upsample = str(downsample), str(upsample)
        self.multiple = 2 ** (len(self.widths) - 1)
        self.encoder = Encoder(self.in_channels, self.widths, self.downsample)
        self.decoder = Decoder(self.widths, self.upsample)
        self.head = nn.Conv3d(self.widths[0], self.out_channels, kernel_size=1)

    @property
    def arch_kwargs(self) -> dict:
        """Constructor arguments as JSON-serialisable values."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "widths": list(self.widths),
            "downsample": self.downsample,
            "upsample": self.upsample,
            **(
                {}
                if self.norm_exclude_above is None
                else {"norm_exclude_above": self.norm_exclude_above}
            ),
        }

    def output_spec(self) -> dict:
        """What ``forward`` returns, for the model card's ``outputs``."""
        return {
            "vessel": {
                "channels": self.out_channels,
                "kind": "logits",
                "activation": "sigmoid" if self.out_channels == 1 else "softmax",
            }
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        check_input(x, self.in_channels)
        x, shape = pad_to_multiple(x, self.multiple)
        top = None
        if self.norm_exclude_above is not None:
            # the window's top (saturated bone on a CT) grown by one voxel
            top = (x >= self.norm_exclude_above).any(dim=1, keepdim=True).to(x.dtype)
            top = F.max_pool3d(top, kernel_size=3, stride=1, padding=1) > 0
        token = _EXCLUDE.set(top)
        try:
            logits = self.head(self.decoder(self.encoder(x)))
        finally:
            _EXCLUDE.reset(token)
        return crop_to(logits, shape)


def widen_unet(
    model: UNet3D, widths: Sequence[int], *, noise: float = 0.01, seed: int = 0
) -> UNet3D:
    """A wider copy of ``model`` that computes (almost) the same function: Net2WiderNet.

    Each of the ``f`` new channels ``j`` of a layer copies old channel ``j // f``; the
    weights reading a widened input are divided by ``f``, so the sum over the copies equals
    the old one, and every instance norm sees ``f`` identical channels (same statistics,
    same output). The result equals ``model`` up to the symmetry-breaking noise (Chen,
    Goodfellow & Shlens, *Net2Net: Accelerating Learning via Knowledge Transfer*, ICLR 2016,
    section 2.2): a training run can start a larger network from a trained one instead of
    from scratch.

    Parameters
    ----------
    model : UNet3D
        The trained network; left unchanged.
    widths : sequence of int
        The new widths, one per level, each the same integer multiple ``f >= 1`` of
        ``model.widths``.
    noise : float
        Standard deviation of the Gaussian noise added to every widened convolution weight,
        relative to that weight's own standard deviation (0: an exact copy of the function;
        then the copies of a channel get equal gradients and never differ).
    seed : int
        Seed of the noise.

    Returns
    -------
    UNet3D
        A new network with ``widths`` and ``model``'s other constructor arguments.

    Raises
    ------
    ValueError
        ``widths`` has another number of levels than ``model``, or is not one integer
        multiple of its widths, or ``noise`` is negative.
    """
    new_widths = check_widths(widths)
    if len(new_widths) != len(model.widths):
        raise ValueError(
            f"widths {list(new_widths)} have {len(new_widths)} levels; the model has "
            f"{len(model.widths)} ({list(model.widths)})"
        )
    factors = {w // o for w, o in zip(new_widths, model.widths, strict=True) if w % o == 0}
    ratios = [w / o for w, o in zip(new_widths, model.widths, strict=True)]
    if len(factors) != 1 or any(r != next(iter(factors)) for r in ratios):
        raise ValueError(
            f"widths {list(new_widths)} must be one integer multiple of the model's "
            f"{list(model.widths)}"
        )
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    f = next(iter(factors))
    kwargs = {**model.arch_kwargs, "widths": list(new_widths)}
    wide = UNet3D(**kwargs)
    old = dict(model.named_modules())
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, module in wide.named_modules():
            params = [p for p in ("weight", "bias") if getattr(module, p, None) is not None]
            if not params or name not in old:
                continue
            # the axis that reads the layer's input channels; every other widened axis
            # is an output (a norm: one value per output channel)
            if isinstance(module, nn.ConvTranspose3d):
                in_dim = 0
            elif isinstance(module, nn.Conv3d):
                in_dim = 1
            else:
                in_dim = None
            for pname in params:
                src = getattr(old[name], pname).detach()
                dst = getattr(module, pname)
                value = src
                for dim in range(dst.ndim):
                    if dst.shape[dim] == value.shape[dim]:
                        continue
                    index = torch.arange(dst.shape[dim]) // f
                    value = value.index_select(dim, index)
                    if dim == in_dim and pname == "weight":
                        value = value / f
                if pname == "weight" and in_dim is not None and noise > 0 and f > 1:
                    scale = float(value.std()) * noise
                    value = value + scale * torch.randn(value.shape, generator=gen)
                dst.copy_(value)
    return wide
