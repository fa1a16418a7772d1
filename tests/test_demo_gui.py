"""``napari-topo demo --gui``: the sample and the three widgets, through the manifest."""

from __future__ import annotations

import numpy as np

from napari_topo.cli import WIDGETS, open_demo_viewer
from napari_topo.layers import layer_kind


def test_demo_viewer_has_the_sample_and_every_widget(make_napari_viewer):
    viewer, docked = open_demo_viewer(make_napari_viewer())
    names = [layer.name for layer in viewer.layers]
    assert names == ["synthetic vessels", "ground truth mask", "ground truth trees"]
    image = viewer.layers["synthetic vessels"]
    assert image.data.ndim == 3 and image.data.shape == (96, 96, 96)
    trees = viewer.layers["ground truth trees"]
    assert layer_kind(trees) == "trees" and len(np.unique(trees.data)) >= 3
    assert list(docked) == list(WIDGETS)
    assert {type(w).__name__ for w in docked.values()} == {
        "SegmentWidget",
        "MetricsWidget",
        "TreeEditorWidget",
    }
    # the Segment widget offers the sample image, not the labels
    assert docked["Segment vessels"].image_picker.value is image
