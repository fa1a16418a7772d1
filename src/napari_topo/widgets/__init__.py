"""napari dock widgets for napari-topo.

Widgets are thin: they collect the user's choices, run the Qt-free core in a worker
thread and apply the results on the GUI thread.  This package is imported by napari
through the plugin manifest (``napari.yaml``), which names each widget module directly,
so nothing heavy (Qt, napari, torch) is imported here; ``MetricsWidget`` is resolved
lazily on first access. Importing it guards against triton crashing napari's process
(:mod:`._gl_safety`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from .metrics import MetricsWidget
    from .segment import SegmentWidget
    from .tree_editor import TreeEditorWidget

__all__ = ["MetricsWidget", "SegmentWidget", "TreeEditorWidget"]

# napari has made its GL context by now: keep torch from importing triton into it (it
# would crash; see _gl_safety). Cheap: a module lookup and, with triton installed, one
# read of /proc/self/maps.
from ._gl_safety import guard_triton  # noqa: E402

guard_triton(eager=False)


def __getattr__(name: str) -> Any:
    if name == "MetricsWidget":
        from .metrics import MetricsWidget

        return MetricsWidget
    if name == "SegmentWidget":
        from .segment import SegmentWidget

        return SegmentWidget
    if name == "TreeEditorWidget":
        from .tree_editor import TreeEditorWidget

        return TreeEditorWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
