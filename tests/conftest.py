"""Test-session set-up that a fresh machine needs, each step saying what it does.

* **triton before any GL context.** The CUDA builds of torch pull in ``triton``; creating
  an optimiser imports it (through ``torch._dynamo``), and once napari's OpenGL context
  has loaded Mesa's ``libLLVM``, importing triton crashes the process
  (:mod:`napari_topo.widgets._gl_safety` has the root cause). Guarded here, at import,
  before pytest-qt or napari make a context.
* **Qt must start.** With Xvfb running (pytest-xvfb starts it), a child process opens a
  QApplication first; if that fails (usually missing ``libxcb-*`` packages), the run
  stops with one line naming the missing libraries and the ``apt-get`` command, instead
  of aborting inside pytest-qt's ``qapp`` fixture with no reason.
* **No Xvfb left behind.** A detached watcher ends pytest-xvfb's Xvfb if the test process
  dies without cleaning up (a segfault skips ``atexit``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from napari_topo.widgets._gl_safety import guard_triton

TRITON = guard_triton()

#: Debian/Ubuntu packages Qt's xcb platform plugin and napari's canvas need (the same
#: list as README "Set up" and .ci/run).
SYSTEM_PACKAGES = (
    "xvfb xauth libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 "
    "libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 "
    "libxkbcommon-x11-0 libdbus-1-3 libfontconfig1 libgl1 libegl1"
)
_QT_START = "import sys; from qtpy.QtWidgets import QApplication; QApplication(sys.argv)"


def _missing_libraries() -> list[str]:
    """Shared libraries the Qt xcb plugin cannot find (``ldd`` says "not found")."""
    try:
        import PyQt6  # the binding the 'testing' extra installs
    except ImportError:
        return []
    root = Path(PyQt6.__file__).parent
    missing: set[str] = set()
    for plugin in root.glob("Qt*/plugins/platforms/libqxcb.so"):
        try:
            out = subprocess.run(
                ["ldd", str(plugin)], capture_output=True, text=True, timeout=30
            ).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        missing |= set(re.findall(r"^\s*(\S+) => not found", out, flags=re.M))
    return sorted(missing)


def _sudo() -> str:
    """``"sudo "`` for a user, ``""`` for root (a root machine may have no sudo)."""
    return "" if getattr(os, "geteuid", lambda: 1)() == 0 else "sudo "


def _check_qt_starts() -> None:
    if not sys.platform.startswith("linux") or os.environ.get("NAPARI_TOPO_SKIP_QT_CHECK"):
        return
    try:
        run = subprocess.run(
            [sys.executable, "-c", _QT_START], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.exit("Qt did not start within 120 s (is the X server answering?).", 3)
    if run.returncode == 0:
        return
    missing = _missing_libraries()
    lines = [ln.strip() for ln in run.stderr.splitlines() if ln.strip()]
    said = [ln for ln in lines if "could not" in ln.lower()] or lines or ["no reason given"]
    what = f"missing {', '.join(missing)}" if missing else said[0]
    pytest.exit(
        f"Qt cannot start ({what}); install the system packages with: "
        f"{_sudo()}apt-get install {SYSTEM_PACKAGES}",
        returncode=3,
    )


def _watch_xvfb() -> None:
    """End pytest-xvfb's Xvfb when this process is gone, however it ended."""
    try:
        import pytest_xvfb
    except ImportError:
        return
    xvfb = getattr(pytest_xvfb, "xvfb_instance", None)
    display = getattr(xvfb, "_virtual_display", None)  # a pyvirtualdisplay Display
    try:
        pid = int(display.pid)
    except (AttributeError, TypeError, ValueError):
        return
    if pid <= 0:
        return
    watcher = f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; kill {pid} 2>/dev/null"
    subprocess.Popen(  # noqa: S603 - a fixed shell loop on two pids
        ["sh", "-c", watcher],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    _watch_xvfb()
    _check_qt_starts()


def pytest_report_header(config: pytest.Config) -> str:
    return f"napari-topo: triton {TRITON} (see napari_topo.widgets._gl_safety)"
