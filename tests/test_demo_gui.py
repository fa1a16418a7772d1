"""``napari-topo demo --gui``: the sample and the three widgets, through the manifest."""

from __future__ import annotations

import numpy as np

from napari_topo.cli import WIDGETS, open_demo_viewer
from napari_topo.layers import layer_kind


def test_demo_viewer_has_the_sample_and_every_widget(make_napari_viewer):
    said: list[str] = []
    viewer, docked = open_demo_viewer(make_napari_viewer(), say=said.append)
    # demo --gui prints what it is doing while napari starts (it can take a while)
    assert said[0] == "starting napari…" and any("sample" in line for line in said)
    assert [line for line in said if line.startswith("docking")] == [
        f"docking '{name}'…" for name in WIDGETS
    ]
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
    # the sample's layers name their axes and the trees are the smallest dtype
    assert image.axis_labels == ("z", "y", "x") and trees.data.dtype == np.uint8


def test_metrics_widget_defaults_follow_the_workflow(make_napari_viewer):
    viewer, docked = open_demo_viewer(make_napari_viewer())
    metrics = docked["Topology metrics"]
    # the sample's ground truth is two references: never paired with each other (no
    # prediction until Segment made one), and never the intensity image
    assert metrics.prediction_picker.value is None
    assert metrics.ground_truth_picker.value.name == "ground truth trees"
    # a segmentation from the Segment widget becomes the prediction by itself
    trees = viewer.layers["ground truth trees"]
    seg = viewer.add_labels(
        trees.data.copy(),
        name="synthetic vessels trees",
        metadata={"napari_topo": {"kind": "trees", "widget": "segment"}},
    )
    assert metrics.prediction_picker.value is seg
    assert metrics.ground_truth_picker.value is trees
    # a choice the user made is kept when layers come and go
    metrics.prediction_picker.value = viewer.layers["ground truth mask"]
    viewer.add_labels(np.zeros((4, 4, 4), np.uint8), name="another")
    assert metrics.prediction_picker.value.name == "ground truth mask"


def test_the_sample_states_its_voxel_size(make_napari_viewer, qtbot):
    """Our own sample is never called a stack of unknown voxel size (a newcomer opening
    File > Open Sample was told to set its scale); an image added without a scale is."""
    from napari_topo.geometry import layer_length_unit
    from napari_topo.widgets.segment import _no_voxel_size_sentence

    viewer, docked = open_demo_viewer(make_napari_viewer())
    segment = docked["Segment vessels"]
    image = viewer.layers["synthetic vessels"]
    assert tuple(image.scale) == (1.0, 1.0, 1.0)  # the generator's spacing, now stated
    for layer in viewer.layers:  # the ground truth in the image's unit
        assert layer_length_unit(layer) == "um", layer.name  # _sample.SAMPLE_UNIT
        if hasattr(layer, "units"):  # napari >= 0.6: the scale bar reads micrometres
            assert [str(u) for u in layer.units] == ["micrometer"] * 3
    qtbot.waitUntil(lambda: segment.is_ready, timeout=60_000)  # models listed
    job, _ = segment._make_job(image)
    assert job.unit == "um" and job.flips == ()
    assert _no_voxel_size_sentence(job) == ""
    # the same voxels added without a scale or unit are still said to be unstated
    bare = viewer.add_image(np.asarray(image.data), name="bare")
    assert "voxel size is not stated" in _no_voxel_size_sentence(segment._make_job(bare)[0])
