"""Segment on a region of a lazy image: the "Region" choice of the Segment dock.

A 48 x 96 x 96 synthetic vessel volume is written as OME-Zarr (two levels, 16^3 chunks,
voxel size 2, origin (10, -4, 6)) and opened through the plugin's reader, as a user
opens a large file: a multiscale layer of lazy dask levels. The dock then segments a
drawn box or the field of view; the tests check where the results lie, that only the
region's chunks are read (a counting zarr store), and the one-line refusals. Run under
Xvfb (pytest-xvfb starts it).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("qtpy")
pytest.importorskip("ome_zarr")
zarr = pytest.importorskip("zarr")

import _segment_dock as _dock  # noqa: E402
from napari.utils.notifications import NotificationSeverity, notification_manager  # noqa: E402

from napari_topo.data.ngff import write_ome_zarr  # noqa: E402
from napari_topo.data.synthetic import make_vessel_volume  # noqa: E402
from napari_topo.geometry import Geometry  # noqa: E402
from napari_topo.inference import pipeline  # noqa: E402, F401 - the models list at once
from napari_topo.models import registry  # noqa: E402, F401
from napari_topo.widgets import segment as seg  # noqa: E402
from napari_topo.widgets.segment import (  # noqa: E402
    BOX,
    FIELD_OF_VIEW,
    WHOLE,
    Region,
    SegmentWidget,
    crop_placement,
)

TIMEOUT_MS = 60_000
SHAPE = (48, 96, 96)
SCALE = (2.0, 2.0, 2.0)  # isotropic, so the pipeline does not resample
ORIGIN = (10.0, -4.0, 6.0)
CHUNK = 16
TILE = 32
gui = pytest.mark.gui


# ------------------------------------------------------------------------------ helpers


@functools.cache
def vessels():
    return make_vessel_volume(shape=SHAPE, seed=3)


@pytest.fixture
def zarr_path(tmp_path) -> Path:
    g = Geometry.from_spacing(SCALE, origin=ORIGIN, unit="um")
    return write_ome_zarr(tmp_path / "big.ome.zarr", vessels().image, g, levels=2, chunk=CHUNK)


def open_lazy(viewer, path: Path):
    """The file opened as a user does (File > Open with the plugin's reader)."""
    (layer,) = viewer.open(str(path), plugin="napari-topo")
    assert layer.multiscale and type(layer.data[0]).__name__ == "Array"  # dask, lazy
    return layer


def make_widget(viewer, qtbot, region: str) -> SegmentWidget:
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget)
    widget.model_picker.value = "unet-dice"
    widget.device_picker.value = "cpu"
    widget.tile_box.value = TILE
    widget.region_picker.value = region
    return widget


def run_and_wait(qtbot, widget: SegmentWidget) -> str:
    return _dock.run_and_wait(qtbot, widget, TIMEOUT_MS, click=False)


def ours(viewer, source: str = "big") -> dict:
    return _dock.ours(viewer, source)


def world(z: float, y: float, x: float) -> list[float]:
    """World coordinates of voxel (z, y, x) of the image."""
    return [o + s * v for o, s, v in zip(ORIGIN, SCALE, (z, y, x), strict=True)]


def draw_box(viewer, lo: tuple, hi: tuple, z: float, name: str = "box"):
    """A rectangle drawn on slice ``z`` from voxel ``lo`` to ``hi`` (y, x) of the image,
    in world coordinates (a Shapes layer of unit scale, as napari's new-layer button makes)."""
    return viewer.add_shapes([rectangle(z, lo, hi)], shape_type="rectangle", name=name)


def rectangle(z: float, lo: tuple, hi: tuple) -> np.ndarray:
    """The 4 world corners of a rectangle on slice ``z`` from voxel ``lo`` to ``hi``."""
    (y0, x0), (y1, x1) = lo, hi
    return np.array([world(z, y0, x0), world(z, y0, x1), world(z, y1, x1), world(z, y1, x0)])


def one_line_error(widget) -> str:
    status = widget.status_label.text()
    assert status.startswith("Error: ") and "\n" not in status and len(status) < 320, status
    return status


def errors_since(start: int) -> list[str]:
    return [
        n.message
        for n in notification_manager.records[start:]
        if n.severity == NotificationSeverity.ERROR
    ]


def dice(a, b) -> float:
    a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


class ChunkLog:
    """Chunk files zarr reads from local stores (zarr 3's ``LocalStore.get``)."""

    def __init__(self, monkeypatch):
        self.keys: list[str] = []
        store = zarr.storage.LocalStore
        real = store.get

        async def get(this, key, *args, **kwargs):
            self.keys.append(str(key))
            return await real(this, key, *args, **kwargs)

        monkeypatch.setattr(store, "get", get)

    def level0_chunks(self) -> set[tuple[int, ...]]:
        """Indices of the level-0 chunks read ("s0/c/i/j/k")."""
        out = set()
        for key in self.keys:
            parts = key.split("/")
            if parts[0] == "s0" and len(parts) == 5 and parts[1] == "c":
                out.add(tuple(int(p) for p in parts[2:]))
        return out


def chunks_of(region: Region) -> set[tuple[int, ...]]:
    ranges = [
        range(a // CHUNK, (b - 1) // CHUNK + 1)
        for a, b in zip(region.start, region.stop, strict=True)
    ]
    return {(i, j, k) for i in ranges[0] for j in ranges[1] for k in ranges[2]}


# ------------------------------------------------------------------------------ Qt-free


def test_voxel_box_touches_every_voxel_and_gives_flat_boxes_depth():
    box = seg._voxel_box
    # every voxel the points touch (voxel centres at integers, +-0.5)
    start, stop = box(np.array([[2.0, 3.4, 5.0], [9.0, 7.6, 11.0]]), (20, 20, 20), depth=8)
    assert start.tolist() == [2, 3, 5] and stop.tolist() == [10, 9, 12]
    # a rectangle on slice 4 is 8 slices deep around it; clipped to the image
    start, stop = box(np.array([[4.0, -3.0, 1.0], [4.0, 30.0, 2.0]]), (20, 20, 20), depth=8)
    assert start.tolist() == [0, 0, 1] and stop.tolist() == [4 + 4, 20, 3]
    # outside the image: empty after clipping
    start, stop = box(np.array([[4.0, 40.0, 1.0], [4.0, 50.0, 2.0]]), (20, 20, 20), depth=8)
    assert (stop - start)[1] <= 0
    assert Region((0, 10, 3), (48, 40, 9)).describe() == "z 0-47, y 10-39, x 3-8"


def test_crop_placement_puts_crop_voxels_on_image_voxels():
    """Voxel i of the crop lies where voxel start + i of the image lies, for a scaled,
    translated, rotated and sheared layer with an affine."""
    from napari.layers import Image

    rot = np.array([[1, 0, 0], [0, np.cos(0.3), -np.sin(0.3)], [0, np.sin(0.3), np.cos(0.3)]])
    aff = np.eye(4)
    aff[:3, 3] = (5.0, -2.0, 1.0)
    image = Image(
        np.zeros((10, 12, 14), np.float32),
        scale=(2.0, 0.5, 0.7),
        translate=(3.0, 4.0, -1.0),
        rotate=rot,
        shear=(0.1, 0.0, 0.2),
        affine=aff,
    )
    start = (3, 5, 7)
    translate, geometry = crop_placement(image, start)
    crop = Image(
        np.zeros((4, 4, 4), np.float32),
        scale=image.scale,
        translate=translate,
        rotate=image.rotate,
        shear=image.shear,
        affine=image.affine,
    )
    for i in ([0, 0, 0], [1, 2, 3], [3, 0, 2]):
        expected = image.data_to_world(np.add(i, start))
        np.testing.assert_allclose(crop.data_to_world(i), expected, atol=1e-9)
        np.testing.assert_allclose(geometry.world(i), expected, atol=1e-9)


# ------------------------------------------------------------------------------ GUI


@gui
def test_box_result_lies_on_the_image_and_a_second_box_replaces_it(
    make_napari_viewer, qtbot, zarr_path, monkeypatch
):
    monkeypatch.setattr(seg, "LAZY_RESULT_BYTES", 0)  # the probability goes to a temp zarr
    viewer = make_napari_viewer()
    image = open_lazy(viewer, zarr_path)
    shapes = draw_box(viewer, (20, 30), (67, 77), z=24)
    widget = make_widget(viewer, qtbot, BOX)
    assert widget.image_picker.value is image
    assert widget.region_picker.value == BOX and not widget.box_picker.native.isHidden()
    assert widget.box_picker.value is shapes

    assert run_and_wait(qtbot, widget) == "done", widget.status_label.text()
    layers = ours(viewer)
    assert set(layers) == {"probability", "mask", "skeleton", "trees", "branches", "centerline"}
    # The box: its 48 x 48 voxels in y/x (vertices' voxels included), one tile deep
    # around the slice it was drawn on.
    start = (24 - TILE // 2, 20, 30)
    box_shape = (TILE, 48, 48)
    for kind in ("probability", "mask", "skeleton", "trees"):
        assert tuple(layers[kind].data.shape) == box_shape, kind
    for layer in layers.values():
        np.testing.assert_allclose(layer.scale, SCALE)
        np.testing.assert_allclose(layer.translate, np.add(ORIGIN, np.multiply(SCALE, start)))
        assert layer.metadata["napari_topo"]["region"]["start"] == list(start)
    assert "(box: z 8-39, y 20-67, x 30-77)" in widget.status_label.text()

    # A vessel voxel of the result lies on the same vessel of the image in the world.
    mask = np.asarray(layers["mask"].data).astype(bool)
    truth = vessels().mask[tuple(slice(a, a + n) for a, n in zip(start, box_shape, strict=True))]
    assert dice(mask, truth) > 0.6  # the mask overlays the ground truth it was cut from
    voxel = np.argwhere(mask & truth)[len(np.argwhere(mask & truth)) // 2]
    np.testing.assert_allclose(
        layers["mask"].data_to_world(voxel), image.data_to_world(voxel + np.array(start))
    )
    assert vessels().mask[tuple(voxel + np.array(start))]
    centre = layers["centerline"].data[0]  # Points in the crop's voxels, placed as well
    np.testing.assert_allclose(
        layers["centerline"].data_to_world(centre), image.data_to_world(centre + start)
    )
    analysis = widget.last_analysis
    np.testing.assert_allclose(analysis.geometry.origin, layers["mask"].data_to_world([0, 0, 0]))

    # The probability was written to a temporary zarr and is shown lazily.
    prob = layers["probability"]
    assert type(prob.data).__name__ == "Array"
    first_store = prob.metadata["napari_topo"]["store"]
    assert os.path.isdir(first_store)
    assert float(np.asarray(prob.data).max()) > 0.5

    # A second box replaces the first box's layers (same layers, new data and place).
    n_layers = len(viewer.layers)
    shapes.data = [rectangle(30, (40, 10), (71, 41))]
    assert run_and_wait(qtbot, widget) == "done", widget.status_label.text()
    again = ours(viewer)
    assert len(viewer.layers) == n_layers and again["trees"] is layers["trees"]
    start2 = (30 - TILE // 2, 40, 10)
    assert tuple(again["trees"].data.shape) == (TILE, 32, 32)
    np.testing.assert_allclose(again["trees"].translate, np.add(ORIGIN, np.multiply(SCALE, start2)))
    assert not os.path.exists(first_store)  # the replaced probability's folder is gone
    assert os.path.isdir(again["probability"].metadata["napari_topo"]["store"])


@gui
def test_field_of_view_after_zooming_in(make_napari_viewer, qtbot, zarr_path):
    viewer = make_napari_viewer()
    open_lazy(viewer, zarr_path)
    widget = make_widget(viewer, qtbot, FIELD_OF_VIEW)
    assert widget.box_picker.native.isHidden()
    viewer.dims.ndisplay = 2
    viewer.dims.set_point(0, world(30, 0, 0)[0])
    camera = viewer.scene.camera
    camera.center = tuple(world(30, 50, 60)[1:])
    height, width = viewer.canvas.size
    camera.zoom = max(height, width) / 40.0  # the canvas shows 40 world units: 20 voxels

    job, _volume = widget._make_job(widget.image_picker.value)
    region = job.region
    assert region.kind == FIELD_OF_VIEW
    assert all(0 <= a < b <= n for a, b, n in zip(region.start, region.stop, SHAPE, strict=True))
    assert np.prod(region.shape) < np.prod(SHAPE)
    assert region.shape[0] == TILE and region.start[0] == 30 - TILE // 2  # one tile deep
    # modality, scaling and polarity from the whole image: its coarsest level, not read here
    assert job.intensity_from is widget.image_picker.value.data[-1]
    assert job.intensity_from_name == "the whole image's coarsest level"
    # y/x: what the canvas shows (canvas pixels / zoom / voxel size), around the centre
    for axis, pixels, centre in ((1, height, 50), (2, width, 60)):
        visible = pixels / camera.zoom / SCALE[axis]
        assert abs(region.shape[axis] - visible) <= 2
        assert region.start[axis] <= centre < region.stop[axis]

    # Tree roots outside the region are left out (and the user told); those inside
    # are given in the region's voxels.
    inside, outside = (30, 50, 60), (30, 5, 5)
    roots = viewer.add_points([world(*outside), world(*inside)], name="roots")
    widget.sources_picker.value = roots
    start = len(notification_manager.records)
    job, _volume = widget._make_job(widget.image_picker.value)
    np.testing.assert_allclose(job.sources, [np.subtract(inside, region.start)])
    # a message about roots names them by their rows in the layer
    assert (job.sources_name, job.source_rows) == ("roots", (1,))
    assert any(
        "1 of the 2 roots of 'roots' lie outside the field of view" in n.message
        for n in notification_manager.records[start:]
    )

    assert run_and_wait(qtbot, widget) == "done", widget.status_label.text()
    assert tuple(ours(viewer)["trees"].data.shape) == region.shape
    assert "values of the whole image's coarsest level" in widget.status_label.text() + str(
        ours(viewer)["trees"].metadata
    )
    # In 3D the same y/x extent over the whole depth.
    viewer.dims.ndisplay = 3
    camera.center = tuple(world(24, 50, 60))
    camera.zoom = max(height, width) / 40.0
    job, _ = widget._make_job(widget.image_picker.value)
    assert (job.region.start[0], job.region.stop[0]) == (0, SHAPE[0])
    assert job.region.shape[1] < SHAPE[1] and job.region.shape[2] < SHAPE[2]


@gui
def test_only_the_regions_chunks_are_read(make_napari_viewer, qtbot, zarr_path, monkeypatch):
    """A counting zarr store: the run reads the level-0 chunks that meet the box, no
    other, and making the job (on the GUI thread) reads none."""
    if not hasattr(zarr, "storage") or not hasattr(zarr.storage, "LocalStore"):
        pytest.skip("counts reads through zarr 3's LocalStore")
    viewer = make_napari_viewer()
    image = open_lazy(viewer, zarr_path)
    image.visible = False  # napari reads no slice of a hidden layer: every read is the run's
    draw_box(viewer, (20, 30), (45, 50), z=24)
    widget = make_widget(viewer, qtbot, BOX)
    log = ChunkLog(monkeypatch)

    job, _volume = widget._make_job(image)
    assert log.level0_chunks() == set()  # nothing read on the GUI thread
    assert run_and_wait(qtbot, widget) == "done", widget.status_label.text()
    region = widget._job.region
    assert region == job.region
    read = log.level0_chunks()
    total = np.prod([-(-n // CHUNK) for n in SHAPE])
    assert read == chunks_of(region)
    assert len(read) < total / 2


@gui
def test_a_large_lazy_image_refuses_whole_image(make_napari_viewer, qtbot, zarr_path, monkeypatch):
    monkeypatch.setattr(seg, "LAZY_LIMIT_BYTES", 1 << 20)  # the 1.7 MiB volume is "large"
    calls = []
    monkeypatch.setattr(pipeline, "segment", lambda *a, **k: calls.append(a))
    viewer = make_napari_viewer()
    image = open_lazy(viewer, zarr_path)
    widget = make_widget(viewer, qtbot, FIELD_OF_VIEW)
    small = viewer.add_image(np.zeros((8, 8, 8), np.float32), name="small")
    widget.image_picker.value = small
    assert widget.region_picker.value == WHOLE  # an image in memory: the whole of it
    widget.image_picker.value = image
    assert widget.region_picker.value == FIELD_OF_VIEW  # the default for a large lazy one

    widget.region_picker.value = WHOLE
    start = len(notification_manager.records)
    n_layers = len(viewer.layers)
    assert widget.run() is None
    status = one_line_error(widget)
    assert "lazy 1.69 MiB volume" in status
    assert "'field of view' or 'box'" in status and "--format ome-zarr" in status
    assert str(zarr_path) in status
    assert errors_since(start) == [status.removeprefix("Error: ")]
    assert len(viewer.layers) == n_layers and not widget.is_running and calls == []

    # A field of view that holds more than the limit is refused too (zoomed out in 3D).
    widget.region_picker.value = FIELD_OF_VIEW
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    assert widget.run() is None
    status = one_line_error(widget)
    assert status.startswith("Error: The field of view of 'big'") and "zoom in" in status
    assert calls == []


@gui
def test_an_empty_or_outside_box_runs_nothing(make_napari_viewer, qtbot, zarr_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "segment", lambda *a, **k: calls.append(a))
    viewer = make_napari_viewer()
    open_lazy(viewer, zarr_path)
    widget = make_widget(viewer, qtbot, BOX)
    n_layers = len(viewer.layers)
    start = len(notification_manager.records)

    assert widget.run() is None  # no Shapes layer at all
    assert "needs a Shapes layer" in one_line_error(widget)
    viewer.add_shapes(name="empty")
    assert widget.box_picker.value is viewer.layers["empty"]
    assert widget.run() is None
    assert "holds no shape" in one_line_error(widget)
    outside = draw_box(viewer, (200, 200), (240, 260), z=24, name="outside")
    widget.box_picker.value = outside
    assert widget.run() is None
    status = one_line_error(widget)
    assert "lies outside image 'big'" in status and "draw the rectangle over the image" in status
    # beyond the last slice: outside too
    outside.data = [rectangle(80, (10, 10), (40, 40))]
    assert widget.run() is None
    assert "lies outside image" in one_line_error(widget)

    assert len(errors_since(start)) == 4
    assert calls == [] and not widget.is_running
    assert len(viewer.layers) == n_layers + 2  # only the two Shapes layers added here
