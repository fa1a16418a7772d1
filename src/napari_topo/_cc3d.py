"""cc3d (connected-components-3d), safe on line-shaped volumes; use it as ``cc3d``.

cc3d 4.1.1 (the newest release, 2026-12) raises ``RuntimeError: maximum length
exception`` ("Label 11 cannot be mapped to union-find array of length 11") when it labels
a boolean 3D volume with at most one axis longer than 1 voxel (shape ``(1, 1, n)``,
``(1, n, 1)``, ``(n, 1, 1)``) at 26-connectivity and the line holds more than about
``n / 4`` runs: its union-find array is sized for a 26-neighbourhood that such a volume
does not have. ``dust`` labels the same way and fails the same. Such volumes arise as crops (a
one-voxel-thick held-out box, a piece's bounding box) and as user input (a single row).

On a volume with at most one axis longer than 1, 6-, 18- and 26-connectivity name the
same neighbours (the voxels before and after along that axis), so there 6 is passed:
the result is the one 26-connectivity defines. ``statistics`` (which labels nothing) is
cc3d's own; cc3d's other labelling helpers (``largest_k``, ``each``, ...) are not
offered here, so that none is used without the fix::

    from napari_topo import _cc3d as cc3d
    labels = cc3d.connected_components(mask, connectivity=26)
"""

from __future__ import annotations

from typing import Any

import cc3d as _cc3d

__all__ = ["connected_components", "dust", "line_safe_connectivity", "statistics"]

statistics = _cc3d.statistics


def line_safe_connectivity(data: Any, connectivity: int) -> int:
    """``connectivity``, or 6 for a 3D ``data`` with at most one axis longer than 1 where
    ``connectivity`` is 18 or 26 (the same neighbours there; module docstring)."""
    shape = tuple(int(s) for s in getattr(data, "shape", ()))
    if len(shape) == 3 and connectivity in (18, 26) and sum(s > 1 for s in shape) <= 1:
        return 6
    return connectivity


def connected_components(data: Any, *args: Any, connectivity: int = 26, **kwargs: Any) -> Any:
    """:func:`cc3d.connected_components`, also on line-shaped volumes (module docstring)."""
    return _cc3d.connected_components(
        data, *args, connectivity=line_safe_connectivity(data, connectivity), **kwargs
    )


def dust(img: Any, *args: Any, connectivity: int = 26, **kwargs: Any) -> Any:
    """:func:`cc3d.dust`, also on line-shaped volumes (module docstring)."""
    return _cc3d.dust(img, *args, connectivity=line_safe_connectivity(img, connectivity), **kwargs)
