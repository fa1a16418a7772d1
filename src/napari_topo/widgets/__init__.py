"""napari dock widgets for napari-topo.

Widgets are thin: they collect the user's choices, run the Qt-free core in a worker
thread and apply the results on the GUI thread.  This package is imported by napari
through the plugin manifest (``napari.yaml``), which names each widget module directly,
so nothing heavy (Qt, napari, torch) is imported here; ``MetricsWidget`` is resolved
lazily on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from .metrics import MetricsWidget
    from .segment import SegmentWidget
    from .tree_editor import TreeEditorWidget

__all__ = ["MetricsWidget", "SegmentWidget", "TreeEditorWidget"]


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
