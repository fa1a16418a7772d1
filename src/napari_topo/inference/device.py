"""Pick the torch device for inference, in one place.

The rule is CUDA, then Apple MPS, then CPU. Widgets list the choices with
:func:`available_devices`; the pipeline, the CLI and the tests resolve a choice with
:func:`pick_device`, which refuses a device that is not present instead of failing later
inside the network. :func:`autocast_context` gives mixed precision where it pays (CUDA)
and a no-op elsewhere.

No Qt here: these functions are called from scripts, the CLI and worker threads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["autocast_context", "available_devices", "pick_device"]

_AUTO = "auto"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Device choices present on this machine, for a widget's picker.

    Returns
    -------
    list of str
        ``"auto"`` first, then ``"cuda"`` (plus ``"cuda:0"``, ``"cuda:1"``, ... when more than
        one GPU is visible), ``"mps"`` on Apple silicon, and ``"cpu"`` last. Every entry is
        accepted by :func:`pick_device`.

    Examples
    --------
    >>> available_devices()[0], available_devices()[-1]
    ('auto', 'cpu')
    """
    choices = [_AUTO]
    if torch.cuda.is_available():
        choices.append("cuda")
        n = torch.cuda.device_count()
        if n > 1:
            choices.extend(f"cuda:{i}" for i in range(n))
    if _mps_available():
        choices.append("mps")
    choices.append("cpu")
    return choices


def pick_device(preference: str | torch.device | None = "auto") -> torch.device:
    """Resolve a device preference to a :class:`torch.device` that exists here.

    Parameters
    ----------
    preference : str, torch.device or None
        ``"auto"`` (or None): CUDA if available, else Apple MPS if available, else CPU.
        ``"cpu"``, ``"cuda"``, ``"cuda:<index>"`` or ``"mps"`` (case-insensitive), or a
        :class:`torch.device`: checked to be present.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If the string is not a device name, the device type is not supported, or the
        requested device is not available on this machine (the message lists what is).

    Examples
    --------
    >>> pick_device("cpu")
    device(type='cpu')
    """
    if preference is None:
        preference = _AUTO
    if isinstance(preference, str):
        name = preference.strip().lower()
        if name == _AUTO:
            if torch.cuda.is_available():
                return torch.device("cuda")
            if _mps_available():
                return torch.device("mps")
            return torch.device("cpu")
        try:
            device = torch.device(name)
        except (RuntimeError, ValueError):
            raise ValueError(
                f"unknown device {preference!r}; expected one of {available_devices()} "
                "or 'cuda:<index>'"
            ) from None
    elif isinstance(preference, torch.device):
        device = preference
    else:
        raise ValueError(
            f"device must be a string such as 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps', or a "
            f"torch.device; got {type(preference).__name__} {preference!r}"
        )

    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r} was requested but CUDA is not available on this "
                f"machine (torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
                f"available: {available_devices()}"
            )
        n = torch.cuda.device_count()
        if device.index is not None and device.index >= n:
            raise ValueError(
                f"device {str(device)!r} was requested but only {n} CUDA device(s) are "
                f"visible (indices 0..{n - 1}); available: {available_devices()}"
            )
        return device
    if device.type == "mps":
        if not _mps_available():
            raise ValueError(
                f"device {str(device)!r} was requested but Apple MPS is not available on this "
                f"machine; available: {available_devices()}"
            )
        if device.index not in (None, 0):
            raise ValueError(f"MPS has a single device 'mps' (index 0); got {str(device)!r}")
        return torch.device("mps")
    raise ValueError(
        f"device type {device.type!r} is not supported; expected one of {available_devices()}"
    )


@contextlib.contextmanager
def autocast_context(
    device: str | torch.device, dtype: torch.dtype | None = None, enabled: bool = True
) -> Iterator[None]:
    """Mixed-precision context for inference on ``device``.

    On CUDA this is :class:`torch.autocast` with ``dtype`` (default ``torch.float16``;
    ``torch.bfloat16`` is the safer choice for networks whose activations can exceed the
    float16 range, on GPUs that support it). On CPU and MPS it does nothing: CPU autocast
    is often slower than float32, and MPS autocast support varies between torch versions.

    Parameters
    ----------
    device : str or torch.device
        The device the model runs on (not validated here; see :func:`pick_device`).
    dtype : torch.dtype, optional
        ``torch.float16`` or ``torch.bfloat16``; only used on CUDA.
    enabled : bool
        False gives a no-op context everywhere (handy for a "full precision" checkbox).

    Examples
    --------
    >>> with autocast_context("cpu"):
    ...     y = torch.ones(2) * 2
    """
    device = torch.device(device)
    if not enabled or device.type != "cuda":
        yield
        return
    if dtype is None:
        dtype = torch.float16
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"autocast dtype must be torch.float16 or torch.bfloat16; got {dtype}")
    with torch.autocast(device_type="cuda", dtype=dtype):
        yield
