"""Wiring shared by the dock widgets: the viewer check and following the layer list."""

from __future__ import annotations

from functools import partial
from typing import Any

#: Layer-list events after which a widget rebuilds its layer pickers.
LAYER_EVENTS = ("inserted", "removed", "moved", "reordered", "renamed")


def require_viewer(viewer: Any, who: str) -> None:
    """Raise a clear ValueError unless ``viewer`` looks like a napari viewer."""
    if viewer is None or not hasattr(viewer, "layers"):
        raise ValueError(f"{who} needs a napari viewer, got {type(viewer).__name__}.")


def disconnect_layer_events(events: Any, callback: Any, *_: Any) -> None:
    """Undo :func:`follow_layer_list` (extra arguments, e.g. from ``destroyed``, ignored)."""
    for name in LAYER_EVENTS:
        emitter = getattr(events, name, None)
        if emitter is not None:
            emitter.disconnect(callback)


def follow_layer_list(widget: Any, viewer: Any, callback: Any) -> None:
    """Call ``callback`` whenever layers come, go, move or are renamed.

    The connections are dropped when Qt deletes ``widget`` (the Python object may
    outlive it, and napari's event emitters would otherwise keep calling into it).
    """
    events = viewer.layers.events
    for name in LAYER_EVENTS:
        getattr(events, name).connect(callback)
    widget.destroyed.connect(partial(disconnect_layer_events, events, callback))


def unwrap(obj: Any) -> Any:
    """The napari object behind a plugin ``PublicOnlyProxy`` (or ``obj`` itself)."""
    return getattr(obj, "__wrapped__", obj)


def same_layer(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same layer (proxies unwrapped; None never is)."""
    return a is not None and b is not None and unwrap(a) is unwrap(b)


def select_layer(picker: Any, layer: Any) -> bool:
    """Select ``layer`` in a magicgui ComboBox of layers, by identity; False if absent."""
    combo = picker.native
    for index in range(combo.count()):
        if same_layer(combo.itemData(index), layer):
            if combo.currentIndex() != index:
                combo.setCurrentIndex(index)
            return True
    return False


def rebuild_picker(picker: Any) -> None:
    """Rebuild a layer picker from its choices, keeping the chosen layer if it still exists.

    Rebuilt from scratch so the order follows the layer list (magicgui would append a
    renamed layer at the end).
    """
    before = picker.value
    combo = picker.native
    blocked = combo.blockSignals(True)
    combo.clear()
    combo.blockSignals(blocked)
    picker.reset_choices()
    if before is not None:
        select_layer(picker, before)
