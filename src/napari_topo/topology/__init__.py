"""Topology core: differentiable losses (torch) and evaluation metrics (numpy).

Import the submodules directly (``napari_topo.topology.losses``,
``napari_topo.topology.metrics``) so that metrics users do not pay for importing torch.
"""
