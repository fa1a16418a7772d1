"""OME-Zarr (NGFF) in and out: round trips, pyramids, foreign files, the napari reader."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ome_zarr")
da = pytest.importorskip("dask.array")

from napari_topo.data.io import VolumeReadError, read_volume, suffix_of, write_volume  # noqa: E402
from napari_topo.data.ngff import (  # noqa: E402
    create_ome_zarr,
    is_ome_zarr,
    pyramid_shapes,
    read_ome_zarr,
    write_ome_zarr,
)
from napari_topo.geometry import Geometry  # noqa: E402


def _geometry():
    return Geometry.from_spacing((2.0, 0.5, 0.25), origin=(10.0, -3.0, 4.0), unit="um")


def test_suffix_and_detection(tmp_path):
    assert suffix_of("big.OME.zarr") == ".ome.zarr"
    a = np.zeros((4, 5, 6), np.float32)
    p = write_volume(tmp_path / "a.ome.zarr", a, geometry=_geometry())
    assert is_ome_zarr(p)
    assert not is_ome_zarr(write_volume(tmp_path / "plain.zarr", a))
    assert not is_ome_zarr(tmp_path / "missing.ome.zarr")


def test_image_round_trip_is_lazy_with_geometry_and_mean_pyramid(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.random((40, 70, 90)).astype(np.float32)
    g = _geometry()
    p = write_ome_zarr(tmp_path / "img.ome.zarr", a, g, levels=3, chunk=32)
    vol = read_volume(p)
    assert isinstance(vol.data, da.Array)  # lazy
    assert vol.data.chunksize == (32, 32, 32)
    np.testing.assert_array_equal(np.asarray(vol.data), a)
    assert vol.geometry == g and vol.spacing == (2.0, 0.5, 0.25)
    image = read_ome_zarr(p)
    assert [lv.shape for lv in image.levels] == [(40, 70, 90), (20, 35, 45), (10, 18, 23)]
    # level 1: the mean of each 2x2x2 block, placed at the block's centre
    np.testing.assert_allclose(
        np.asarray(image.levels[1])[:5, :5, :5],
        a[:10, :10, :10].reshape(5, 2, 5, 2, 5, 2).mean(axis=(1, 3, 5)),
        rtol=1e-6,
    )
    g1 = image.geometries[1]
    assert g1.spacing == (4.0, 1.0, 0.5)
    np.testing.assert_allclose(g1.origin, (11.0, -2.75, 4.125))
    # an odd border repeats its edge voxels: the last x voxel of level 1 is a[.., 89]
    np.testing.assert_allclose(
        np.asarray(image.levels[1])[0, 0, -1], a[0:2, 0:2, 88:90].mean(), rtol=1e-6
    )
    assert image.downsample == "mean"


def test_pyramid_built_chunk_by_chunk_equals_the_whole_array_reduction(tmp_path):
    # chunks of 8 (each level-1 chunk made from 8 level-0 chunks read one at a time) and
    # of 7 (odd: no cut between the two voxels of a 2x2x2 block); odd borders repeated
    rng = np.random.default_rng(1)
    a = rng.random((37, 50, 29)).astype(np.float32)
    lab = rng.integers(0, 9, a.shape).astype(np.uint16)
    padded = np.pad(a, [(0, n % 2) for n in a.shape], mode="edge")
    mean = padded.reshape(19, 2, 25, 2, 15, 2).mean(axis=(1, 3, 5), dtype=np.float64)
    for chunk in (8, 7):
        p = write_ome_zarr(tmp_path / f"m{chunk}.ome.zarr", a, _geometry(), levels=2, chunk=chunk)
        level1 = np.asarray(read_ome_zarr(p).levels[1])
        np.testing.assert_array_equal(level1, mean.astype(np.float32))
        p = write_ome_zarr(tmp_path / f"l{chunk}.ome.zarr", lab, _geometry(), levels=2, chunk=chunk)
        np.testing.assert_array_equal(np.asarray(read_ome_zarr(p).levels[1]), lab[::2, ::2, ::2])


def test_labels_are_downsampled_by_nearest_and_keep_their_values(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, size=(33, 34, 35)).astype(np.int32) * 1000
    p = write_volume(tmp_path / "trees.ome.zarr", labels, spacing=(1.0, 1.0, 1.0))
    image = read_ome_zarr(p)
    assert len(image.levels) == 1  # small: one level by default
    p = write_ome_zarr(tmp_path / "t2.ome.zarr", labels, Geometry.from_spacing((1, 1, 1)), levels=2)
    image = read_ome_zarr(p)
    lv1 = np.asarray(image.levels[1])
    assert lv1.dtype == np.int32 and lv1.shape == (17, 17, 18)
    np.testing.assert_array_equal(lv1, labels[::2, ::2, ::2])
    assert image.geometries[1].origin == image.geometries[0].origin  # voxel 0 kept


def test_pyramid_levels_default_down_to_256():
    assert len(pyramid_shapes((1024, 1024, 1024), "zyx")) == 3
    assert pyramid_shapes((512, 512, 1), "zyx")[-1] == (256, 256, 1)
    assert pyramid_shapes((3, 64, 64), "zyx", levels=1) == [(3, 64, 64)]


def test_bool_mask_and_channels(tmp_path):
    m = np.zeros((2, 8, 9, 10), bool)
    m[1, 2:5, 3:6, 4:7] = True
    g = Geometry.from_spacing((1.0, 1.0, 1.0), axes="czyx")
    p = write_ome_zarr(tmp_path / "m.ome.zarr", m, g, levels=2)
    vol = read_volume(p)
    assert vol.geometry.axes == "czyx" and vol.data.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(vol.data), m.astype(np.uint8))
    assert read_ome_zarr(p).levels[1].shape == (2, 4, 5, 5)  # channels are not downsampled


def test_flipped_geometry_survives_in_the_attribute(tmp_path):
    aff = np.diag([1.0, 2.0, -0.5, 1.0])
    aff[:3, 3] = (5.0, 6.0, 7.0)
    g = Geometry(aff, "zyx", unit="mm")
    a = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    vol = read_volume(write_volume(tmp_path / "f.ome.zarr", a, geometry=g))
    assert vol.geometry == g


def test_foreign_ome_zarr_written_by_ome_zarr(tmp_path):
    """A file made by the ome-zarr library itself (its own pyramid and metadata)."""
    import zarr
    from ome_zarr.writer import write_image

    a = np.arange(16 * 32 * 32, dtype=np.uint16).reshape(16, 32, 32)
    group = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")
    write_image(
        a,
        group,
        axes="zyx",
        scale={"z": 3.0, "y": 0.7, "x": 0.7},
        axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"},
        scale_factors=[{"z": 1, "y": 2, "x": 2}],
    )
    vol = read_volume(tmp_path / "foreign.zarr")  # a .zarr group with multiscales
    np.testing.assert_array_equal(np.asarray(vol.data), a)
    assert vol.spacing == pytest.approx((3.0, 0.7, 0.7))
    assert vol.geometry.unit == "um" and vol.geometry.origin == (0.0, 0.0, 0.0)
    image = read_ome_zarr(tmp_path / "foreign.zarr")
    assert image.geometries[1].spacing == pytest.approx((3.0, 1.4, 1.4))


def test_refusals_are_one_line(tmp_path):
    rgb = np.zeros((8, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="RGB samples"):
        write_volume(tmp_path / "rgb.ome.zarr", rgb)
    assert not (tmp_path / "rgb.ome.zarr").exists()
    plain = write_volume(tmp_path / "plain.ome.zarr".replace(".ome", ""), np.zeros((3, 3, 3)))
    fake = tmp_path / "fake.ome.zarr"
    plain.rename(fake)
    with pytest.raises(VolumeReadError, match="not an OME-Zarr image") as err:
        read_volume(fake)
    assert "\n" not in str(err.value)
    with pytest.raises(VolumeReadError, match="key="):
        read_volume(write_volume(tmp_path / "k.ome.zarr", np.zeros((3, 3, 3))), key="s0")


def test_streamed_fill_then_finish(tmp_path):
    """create_ome_zarr: level 0 filled in pieces by the caller, the pyramid built after."""
    g = Geometry.from_spacing((1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    target = create_ome_zarr(
        tmp_path / "s.ome.zarr", (20, 16, 16), np.float32, g, levels=2, chunk=8
    )
    assert not is_ome_zarr(target.path)  # no metadata until finished
    for z in range(0, 20, 5):
        target.level0[z : z + 5] = z
    target.finish()
    image = read_ome_zarr(target.path)
    assert np.asarray(image.levels[0])[17, 3, 3] == 15
    assert np.asarray(image.levels[1])[0, 0, 0] == 0 and np.asarray(image.levels[1])[2, 0, 0] == 2.5


def test_napari_reader_opens_ome_zarr_lazily_as_multiscale(tmp_path):
    from napari_topo._plugin import get_reader, read_volumes

    g = _geometry()
    prob = np.random.default_rng(2).random((24, 40, 40)).astype(np.float32)
    mask = (prob > 0.5).astype(np.uint8)
    pp = write_ome_zarr(tmp_path / "x_probability.ome.zarr", prob, g, levels=2)
    pm = write_ome_zarr(tmp_path / "x_mask.ome.zarr", mask, g, levels=2)
    assert get_reader(str(pp)) is read_volumes
    ((data, meta, kind),) = read_volumes(str(pp))
    assert kind == "image" and meta["multiscale"] is True
    assert [type(d).__name__ for d in data] == ["Array", "Array"]  # dask: nothing loaded
    assert meta["scale"] == pytest.approx(g.spacing) and meta["translate"] == pytest.approx(
        g.origin
    )
    ((data, meta, kind),) = read_volumes(str(pm))
    assert kind == "labels" and data[0].shape == mask.shape and meta["name"] == "x_mask"


def test_a_bioformats2raw_layout_reads_its_first_series_or_the_one_named(tmp_path, capsys):
    # bad-input probe: the usual converter's output (images 0, 1, ... under a group marked
    # "bioformats2raw.layout") was "not an OME-Zarr image", and --key 0 was refused
    import zarr

    from napari_topo.data.io import VolumeReadError, read_volume
    from napari_topo.data.ngff import bioformats2raw_series, is_ome_zarr

    top = tmp_path / "b2r.ome.zarr"
    a = np.arange(16 * 20 * 24, dtype=np.uint16).reshape(16, 20, 24)
    write_ome_zarr(top / "0", a, _geometry(), levels=2, chunk=16)
    write_ome_zarr(top / "1", a[:8], _geometry(), levels=1, chunk=16)
    fmt = 3 if (top / "0" / "zarr.json").exists() else 2
    zarr.open_group(str(top), mode="a", zarr_format=fmt).attrs["bioformats2raw.layout"] = 3
    assert is_ome_zarr(top) and bioformats2raw_series(top) == ["0", "1"]
    vol = read_volume(top)
    assert vol.data.shape == a.shape and vol.spacing == pytest.approx(_geometry().spacing)
    assert read_volume(top, key="1").data.shape == (8, 20, 24)
    with pytest.raises(VolumeReadError, match="no image series '5'"):
        read_volume(top, key="5")
    with pytest.raises(VolumeReadError, match="holds one image"):
        read_volume(top / "0", key="0")  # a plain image: no series to pick
    assert bioformats2raw_series(top / "0") == [] and bioformats2raw_series(tmp_path) == []
    assert "version mismatch" not in capsys.readouterr().err
