"""napari-topo: topology-aware segmentation of tubular structures for napari.

The core (``napari_topo.topology`` and friends) imports no Qt and runs headless;
widgets live in ``napari_topo.widgets`` and are only imported by napari.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
