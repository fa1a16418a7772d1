"""Streaming segmentation (inference/chunked.py): equal to the whole-volume pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("ome_zarr")
cc3d = pytest.importorskip("cc3d")

from napari_topo import cli  # noqa: E402
from napari_topo.data.io import read_volume  # noqa: E402
from napari_topo.data.ngff import read_ome_zarr, write_ome_zarr  # noqa: E402
from napari_topo.geometry import Geometry  # noqa: E402
from napari_topo.inference.chunked import (  # noqa: E402
    remove_small_components_chunked,
    segment_to_ome_zarr,
)

GEOMETRY = Geometry.from_spacing((0.5, 0.5, 0.5), origin=(10.0, -2.0, 3.5), unit="um")


def _dust_chunked(mask, chunks, min_size):
    out = np.full(mask.shape, 7, np.uint8)

    def write(sl, block):
        out[sl] = block

    kept = remove_small_components_chunked(lambda sl: mask[sl], mask.shape, chunks, min_size, write)
    return out, kept


@pytest.mark.parametrize("chunks", [(8, 8, 8), (5, 7, 16), (16, 3, 9)])
def test_small_pieces_removed_across_chunks_as_on_the_whole_volume(chunks):
    rng = np.random.default_rng(sum(chunks))
    mask = rng.random((23, 19, 21)) > 0.78  # many pieces, most of them crossing borders
    for min_size in (2, 6, 40):
        out, kept = _dust_chunked(mask, chunks, min_size)
        ref = cc3d.dust(mask, threshold=min_size, connectivity=26)
        np.testing.assert_array_equal(out, ref.astype(np.uint8))
        assert kept == int(ref.sum())


def test_a_diagonal_tube_through_a_chunk_corner_is_one_piece():
    """Eight voxels along the main diagonal: four in each of two chunks that meet only at
    a corner. Per chunk each half is smaller than min_size; stitched, the tube is kept."""
    mask = np.zeros((8, 8, 8), bool)
    idx = np.arange(8)
    mask[idx, idx, idx] = True
    out, kept = _dust_chunked(mask, (4, 4, 4), 5)
    assert kept == 8 and out.sum() == 8
    mask[4, 4, 4] = False  # now two pieces of 4 (26-connected: corner-adjacent only)
    mask[5, 5, 5] = False
    out, kept = _dust_chunked(mask, (4, 4, 4), 5)
    assert kept == 0


@pytest.fixture(scope="module")
def vessels(tmp_path_factory):
    from napari_topo.data.synthetic import make_vessel_volume

    vol = make_vessel_volume(shape=(40, 40, 40), n_trees=2, seed=3)
    image = (vol.image * 1000).astype(np.uint16)
    d = tmp_path_factory.mktemp("stream")
    path = write_ome_zarr(d / "vessels.ome.zarr", image, GEOMETRY, chunk=16)
    return image, path


def test_streamed_outputs_equal_the_whole_volume_pipeline(vessels, tmp_path):
    from napari_topo.inference.pipeline import segment

    image, path = vessels
    vol = read_volume(path)
    out = {"probability": tmp_path / "p.ome.zarr", "mask": tmp_path / "m.ome.zarr"}
    res = segment_to_ome_zarr(
        vol.data,
        vol.geometry,
        out,
        "unet-dice",
        zoom=1,
        spacing=vol.spacing,
        tile=32,
        device="cpu",
        min_size=20,
    )
    ref = segment(
        image, "unet-dice", zoom=1, spacing=vol.spacing, tile=32, device="cpu", min_size=20
    )
    prob, mask = read_volume(out["probability"]), read_volume(out["mask"])
    np.testing.assert_allclose(np.asarray(prob.data), ref.probability, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(mask.data).astype(bool), ref.mask)
    assert res["n_voxels"] == int(ref.mask.sum()) > 0
    assert prob.geometry == GEOMETRY and mask.geometry == GEOMETRY
    assert read_ome_zarr(out["mask"]).downsample == "nearest"


def test_streaming_refuses_resampling(vessels, tmp_path):
    _, path = vessels
    vol = read_volume(path)
    out = {"probability": tmp_path / "p.ome.zarr", "mask": tmp_path / "m.ome.zarr"}
    with pytest.raises(ValueError, match="anisotropic"):
        segment_to_ome_zarr(vol.data, vol.geometry, out, "unet-dice", spacing=(2.0, 0.5, 0.5))
    with pytest.raises(ValueError, match="zoom 0.5 resamples"):
        segment_to_ome_zarr(vol.data, vol.geometry, out, "unet-dice", zoom=0.5)
    assert not out["probability"].exists()


def test_cli_streams_ome_zarr_and_napari_opens_the_result_lazily(vessels, tmp_path, capsys):
    from napari_topo._plugin import read_volumes

    _, path = vessels
    argv = ["segment", path, "--out", tmp_path / "o", "--model", "unet-dice", "--zoom", "1"]
    code = cli.main([str(a) for a in [*argv, "--tile", "32", "--device", "cpu"]])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "skeleton, vessel trees and graph are not computed" in out.err
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == [
        "vessels_mask.ome.zarr",
        "vessels_probability.ome.zarr",
        "vessels_summary.json",
    ]
    summary = json.loads((tmp_path / "o" / "vessels_summary.json").read_text())
    assert summary["streamed"] is True and summary["n_voxels"] > 0
    assert Geometry.from_dict(summary["geometry"]) == GEOMETRY
    ((data, meta, kind),) = read_volumes(str(tmp_path / "o" / "vessels_mask.ome.zarr"))
    assert kind == "labels" and type(data).__name__ == "Array"  # dask, not loaded
    assert meta["scale"] == pytest.approx(GEOMETRY.spacing)
    assert meta["translate"] == pytest.approx(GEOMETRY.origin)
    ((data, meta, kind),) = read_volumes(str(tmp_path / "o" / "vessels_probability.ome.zarr"))
    assert kind == "image"


def test_cli_streaming_refusals_write_nothing(vessels, tmp_path, capsys):
    _, path = vessels
    for extra, message in (
        (["--spacing", "2", "0.5", "0.5"], "anisotropic"),
        (["--gt", str(path)], "--gt needs the whole-volume pipeline"),
        (["--zoom", "0.5"], "--zoom 0.5 resamples"),
    ):
        code = cli.main(["segment", str(path), "--out", str(tmp_path / "o"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()
