"""Pick the torch device for inference, in one place.

The rule is CUDA, then Apple MPS, then CPU. Widgets list the choices with
:func:`available_devices`; the pipeline, the CLI and the tests resolve a choice with
:func:`pick_device`, which refuses a device that is not present instead of failing later
inside the network. :func:`resolve_precision` picks the arithmetic the network runs in
(``"auto"``: float16 on CUDA, bfloat16 on a CPU with native bfloat16 instructions, float32
otherwise) and :func:`autocast_context` applies it.

No Qt here: these functions are called from scripts, the CLI and worker threads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = [
    "PRECISIONS",
    "autocast_context",
    "available_devices",
    "cpu_bfloat16_native",
    "memory_format",
    "pick_device",
    "resolve_precision",
]

#: Precision choices of :func:`resolve_precision` (and ``segment --precision``).
PRECISIONS = ("auto", "float32", "bfloat16", "float16")

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


def cpu_bfloat16_native() -> bool:
    """Whether this CPU has native bfloat16 instructions (AVX512-BF16 or AMX).

    On such CPUs oneDNN runs 3D convolutions in bfloat16 about 2-3x faster than in
    float32; elsewhere bfloat16 is emulated and slower than float32, so ``"auto"``
    precision keeps float32 there. Read from torch's CPU feature checks
    (``torch.cpu._is_avx512_bf16_supported``, ``torch.cpu._is_amx_tile_supported``);
    False when this torch build lacks them.

    Returns
    -------
    bool
    """
    cpu = getattr(torch, "cpu", None)
    for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, check, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # a private check that fails on some build: assume no support
            continue
    return False


def resolve_precision(
    precision: str | None, device: str | torch.device, *, embedding: bool = False
) -> torch.dtype | None:
    """The reduced-precision dtype the network runs in on ``device``, or None for float32.

    Parameters
    ----------
    precision : {"auto", "float32", "bfloat16", "float16"} or None
        "auto" (or None): float16 autocast on CUDA; bfloat16 autocast on a CPU with native
        bfloat16 instructions (:func:`cpu_bfloat16_native`); float32 otherwise (older
        CPUs, where emulated bfloat16 is slower, and Apple MPS). "float32" always runs
        in full precision. "bfloat16" asks for bfloat16 on CUDA or the CPU (emulated, and
        slow, on a CPU without it). "float16" is for CUDA only.
    device : str or torch.device
        The device the network runs on.
    embedding : bool, optional
        The network outputs an embedding whose distances assign voxels to trees
        (TopNet): "auto" then keeps float32 on the CPU. Measured on 3D-IRCADb-01 patient
        01 with the roots given, TopNet's tree accuracy was 0.693 in float32 and 0.676
        in bfloat16 (Dice 0.264 in both), while its masks were unchanged.

    Returns
    -------
    torch.dtype or None
        ``torch.float16``, ``torch.bfloat16``, or None (float32: no autocast).

    Raises
    ------
    ValueError
        For an unknown precision, or one the device cannot run (float16 on the CPU,
        anything but float32/auto on MPS), in one line that says what to use.

    Notes
    -----
    Measured with the shipped unet-dice (``python benchmarks/bench_inference.py``) and
    with unet-dice and topnet through :func:`~napari_topo.inference.predict` on a
    vesselNN two-photon stack and synthetic volumes: bfloat16 on an AVX512-BF16 CPU gives
    masks that agree with float32 to a Dice of 0.999 and the same Dice against the ground
    truth to 3 decimals, at 2-3x the network's speed; the probabilities differ by at
    most about 0.05.

    Examples
    --------
    >>> resolve_precision("float32", "cpu") is None
    True
    """
    device = torch.device(device)
    if precision is None:
        precision = _AUTO
    if not isinstance(precision, str) or precision.lower() not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    precision = precision.lower()
    if precision == "float32":
        return None
    kind = device.type
    if precision == _AUTO:
        if kind == "cuda":
            return torch.float16
        if kind == "cpu" and not embedding and cpu_bfloat16_native():
            return torch.bfloat16
        return None
    if kind == "mps":
        raise ValueError(f"precision {precision} is not supported on mps; use float32 or auto")
    if precision == "float16" and kind != "cuda":
        raise ValueError(
            "precision float16 runs on CUDA only; on the CPU use bfloat16, float32 or auto"
        )
    return torch.float16 if precision == "float16" else torch.bfloat16


def memory_format(device: str | torch.device, ndim: int = 5) -> torch.memory_format:
    """The memory format a 3D convolutional network runs fastest in on ``device``.

    On the CPU, ``torch.channels_last_3d`` (channels innermost, N D H W C): oneDNN's
    convolutions read it without reordering each layer's input. Measured on this project's
    U-Net (2 x 1 x 64^3 tiles, 2 threads): float32 forward 0.276 -> 0.222 s, bfloat16
    0.092-0.118 -> 0.086-0.104 s (``benchmarks/bench_inference.py`` gives the whole
    sliding window). Elsewhere (CUDA, MPS) and for tensors that are not 5-D:
    ``torch.contiguous_format``. Results are the same up to float rounding.

    Parameters
    ----------
    device : str or torch.device
        The device the network runs on.
    ndim : int
        Number of dimensions of the tensors (5 for N C D H W batches).
    """
    if ndim == 5 and torch.device(device).type == "cpu":
        return torch.channels_last_3d
    return torch.contiguous_format


@contextlib.contextmanager
def autocast_context(
    device: str | torch.device, dtype: torch.dtype | None = None, enabled: bool = True
) -> Iterator[None]:
    """Mixed-precision context for inference on ``device``.

    On CUDA this is :class:`torch.autocast` with ``dtype`` (default ``torch.float16``;
    ``torch.bfloat16`` is the safer choice for networks whose activations can exceed the
    float16 range, on GPUs that support it). On the CPU it is :class:`torch.autocast`
    with bfloat16 when ``dtype`` is ``torch.bfloat16``, and a no-op by default
    (:func:`resolve_precision` decides when bfloat16 pays on a CPU). On MPS it does
    nothing: MPS autocast support varies between torch versions.

    Parameters
    ----------
    device : str or torch.device
        The device the model runs on (not validated here; see :func:`pick_device`).
    dtype : torch.dtype, optional
        ``torch.float16`` or ``torch.bfloat16`` on CUDA; ``torch.bfloat16`` (or None,
        float32) on the CPU.
    enabled : bool
        False gives a no-op context everywhere (handy for a "full precision" checkbox).

    Raises
    ------
    ValueError
        For a dtype other than float16/bfloat16 on CUDA, or float16 on the CPU.

    Examples
    --------
    >>> with autocast_context("cpu"):
    ...     y = torch.ones(2) * 2
    """
    device = torch.device(device)
    if not enabled or device.type not in ("cuda", "cpu"):
        yield
        return
    if device.type == "cpu":
        if dtype is None:
            yield
            return
        if dtype != torch.bfloat16:
            raise ValueError(f"CPU autocast dtype must be torch.bfloat16; got {dtype}")
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            yield
        return
    if dtype is None:
        dtype = torch.float16
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"autocast dtype must be torch.float16 or torch.bfloat16; got {dtype}")
    with torch.autocast(device_type="cuda", dtype=dtype):
        yield
