"""A run that changes only what comes after the network reuses its output.

Moving a root that snapped onto another's centerline point, or lowering the threshold
(the two-photon user's lever, README *On real data*), ran the network again: on the
development CT that is most of a seven-minute run. ``segment(prediction=...)`` takes an
earlier ``predict`` output; the Segment dock keeps its last one, keyed by image, model
and input settings.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_topo.data.synthetic import make_vessel_volume
from napari_topo.inference import pipeline
from napari_topo.inference.pipeline import predict, segment


@pytest.fixture(scope="module")
def vol():
    return make_vessel_volume(shape=(48, 48, 48), seed=3)


def test_segment_with_a_prediction_equals_a_full_run_and_leaves_it_unchanged(vol):
    kw = {"sources": vol.sources, "spacing": vol.spacing, "tile": 48, "device": "cpu"}
    out = predict(vol.image, "unet-dice", spacing=vol.spacing, tile=48, device="cpu")
    before = out["vessel"].copy()
    roi = np.zeros(vol.shape, bool)
    roi[8:40] = True
    for threshold in (0.3, 0.5):
        full = segment(vol.image, "unet-dice", threshold=threshold, roi=roi, **kw)
        reused = segment(vol.image, "unet-dice", threshold=threshold, roi=roi, prediction=out, **kw)
        np.testing.assert_array_equal(reused.mask, full.mask)
        np.testing.assert_array_equal(reused.trees, full.trees)
        assert reused.input_policy.describe() == full.input_policy.describe()
    # segment zeroed the probability outside the region on its own copy
    np.testing.assert_array_equal(out["vessel"], before)
    assert reused.mask.sum() < (out["vessel"] > 0.3).sum()


def test_a_prediction_runs_no_network_and_must_fit_the_volume(vol, monkeypatch):
    out = predict(vol.image, "unet-dice", tile=48, device="cpu")

    def no_network(*args, **kwargs):
        raise AssertionError("the network ran again")

    monkeypatch.setattr(pipeline, "predict", no_network)
    assert segment(vol.image, "unet-dice", prediction=out).mask.any()
    with pytest.raises(ValueError, match=r"prediction is of a volume of shape \(48, 48, 48\)"):
        segment(vol.image[:40], "unet-dice", prediction=out)
    with pytest.raises(ValueError, match="prediction must be the output of predict"):
        segment(vol.image, "unet-dice", prediction={"mask": out["vessel"]})


def test_topnet_embedding_is_shared_not_copied(vol):
    out = predict(vol.image, "topnet", tile=48, device="cpu")
    copy = pipeline._reusable(out, vol.shape)
    assert copy["embedding"] is out["embedding"]
    assert copy["vessel"] is not out["vessel"] and copy["centerness"] is not out["centerness"]
    assert copy.input_policy is out.input_policy


# ------------------------------------------------------------------------------ the dock

gui = pytest.mark.gui


@gui
def test_the_dock_reuses_the_network_output_when_only_the_threshold_or_roots_change(
    make_napari_viewer, qtbot, vol, monkeypatch
):
    import _segment_dock as dock

    from napari_topo.widgets.segment import SegmentWidget

    calls = []
    real = pipeline.predict

    def counting_predict(*args, **kwargs):
        calls.append(kwargs.get("zoom"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "predict", counting_predict)
    viewer = make_napari_viewer()
    image = viewer.add_image(vol.image, name="vessel")
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget)
    qtbot.waitUntil(lambda: widget.is_ready, timeout=60_000)
    widget.device_picker.value = "cpu"
    widget.tile_box.value = 48

    def run() -> str:
        state = dock.run_and_wait(qtbot, widget, 120_000)
        assert state == "done", widget.status_label.text()
        return widget.status_label.text()

    first = run()
    assert len(calls) == 1 and "reused" not in first
    mask_05 = widget.last_analysis.mask.copy()
    widget.threshold_box.value = 0.2
    second = run()
    assert len(calls) == 1, "the network ran again for a new threshold"
    assert "the network's output of the last run reused" in second
    assert widget.last_analysis.mask.sum() > mask_05.sum()  # cut lower, from the same output
    roots = viewer.add_points(vol.sources, name="roots")
    widget.sources_picker.value = roots
    run()
    assert len(calls) == 1 and widget.last_analysis.result.n_trees == len(vol.sources)
    # an input setting, the image's voxels or the image itself: the network runs; a run
    # that failed after it (two roots on one centerline point) keeps its output too
    widget.zoom_box.value = 1.0
    good = roots.data.copy()
    roots.data = np.concatenate([good, good[:1] + 0.5])
    assert dock.run_and_wait(qtbot, widget, 120_000) == "error"
    assert "snap to the same centerline point" in widget.status_label.text()
    assert len(calls) == 2
    roots.data = good  # the root moved: only the steps after the network run
    assert "reused" in run()
    assert len(calls) == 2
    image.data = vol.image * 2.0
    run()
    assert len(calls) == 3
    image.data[0, 0, :] += 1.0  # edited in place
    run()
    assert len(calls) == 4
    # the image removed: its network output is freed
    viewer.layers.remove(image)
    assert widget._kept is None
