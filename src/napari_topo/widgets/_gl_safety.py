"""Keep ``triton`` from crashing a process that shows napari (no Qt, no torch here).

Root cause (napari-topo issue 12; reproduced with triton 3.9.0 and Mesa 23 llvmpipe under
Xvfb): when napari (vispy) makes an OpenGL context on a Mesa driver (llvmpipe, radeonsi,
...), Mesa loads the system ``libLLVM-<n>.so`` into the process's global symbol scope.
``libtriton.so`` links its own, newer LLVM statically but leaves those symbols
interposable, so when it is loaded *afterwards* its static initialisers
(``_GLOBAL__sub_I_BitcodeWriter.cpp`` → ``llvm::cl::Option::addArgument``) bind to the
system LLVM's functions and crash in ``llvm::StringMapImpl::LookupBucketFor``. torch
imports triton lazily: creating ``torch.optim.Adam`` imports ``torch._dynamo``, which
imports ``triton`` when it is installed (the CUDA wheels of torch depend on it). Loaded
*before* any GL context, libtriton binds to its own LLVM (Python loads extensions with
``RTLD_NOW | RTLD_LOCAL``) and Mesa's later load does not disturb it.

:func:`guard_triton` therefore imports triton early when no system LLVM is loaded yet,
and otherwise makes ``import triton`` fail cleanly (``ImportError``), which torch reads
as "triton not installed": the optimisers run eagerly, as on a CPU-only torch.
"""

from __future__ import annotations

import importlib.util
import os
import sys

__all__ = ["guard_triton", "system_llvm_loaded"]

#: Set to "0" to leave triton alone (e.g. to debug triton itself).
ENV = "NAPARI_TOPO_TRITON_GUARD"


def system_llvm_loaded() -> bool:
    """Whether a shared ``libLLVM`` (Mesa's) is mapped into this process (Linux only)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            return any("libLLVM" in line for line in fh)
    except OSError:  # not Linux
        return False


def guard_triton(eager: bool = True) -> str:
    """Make triton safe to import in this process, or impossible to import.

    Parameters
    ----------
    eager : bool, optional
        Import triton now when no system LLVM is loaded yet (what a test session does
        before any GL context). False leaves it alone then (napari's process: the GL
        driver is loaded already, so "not yet" means it never will be).

    Returns
    -------
    str
        ``"absent"`` (triton is not installed), ``"loaded"`` (already imported, or
        imported now, before any GL driver's LLVM), ``"untouched"`` (not eager, no
        system LLVM), ``"blocked"`` (a system LLVM is
        already loaded: ``import triton`` now raises ImportError) or ``"off"``
        (``NAPARI_TOPO_TRITON_GUARD=0``).
    """
    if os.environ.get(ENV, "1") == "0":
        return "off"
    if "triton" in sys.modules:
        return "blocked" if sys.modules["triton"] is None else "loaded"
    try:
        found = importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return "absent"
    if system_llvm_loaded():
        sys.modules["triton"] = None  # import triton -> ImportError; torch runs eagerly
        return "blocked"
    if not eager:
        return "untouched"
    try:
        import triton  # noqa: F401 - binds libtriton to its own LLVM, before any GL
    except Exception:  # noqa: BLE001 - a broken triton: torch will not use it either
        sys.modules["triton"] = None
        return "blocked"
    return "loaded"
