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
    label_components_chunked,
    remove_small_components_chunked,
    segment_to_ome_zarr,
    skeleton_halo,
    skeletonize_chunked,
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


def _tubes(shape, segments):
    """Mask of tubes: (p0, p1, radius) segments in voxel coordinates."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), -1)
    mask = np.zeros(shape, bool)
    for p0, p1, r in segments:
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        d = p1 - p0
        t = np.clip(((grid - p0) @ d) / (d @ d), 0.0, 1.0)
        mask |= np.linalg.norm(grid - (p0 + t[..., None] * d), axis=-1) <= r
    return mask


# two trees that never touch, each crossing chunk faces, edges and corners of a 12^3 grid
# (the main diagonal passes through chunk corners), radii 1.5 to 4 voxels, and a speck
TREE_A = [((2, 2, 2), (30, 30, 30), 3.0), ((18, 18, 18), (4, 24, 20), 2.0)]
TREE_B = [((4, 34, 3), (16, 34, 34), 4.0), ((10, 34, 18), (24, 22, 34), 1.5)]
ROOTS = [[2, 2, 2], [4, 34, 3]]


def _chunked_skeleton(mask, chunks, halo):
    out = np.zeros(mask.shape, np.uint8)

    def write(sl, block):
        out[sl] = block

    n = skeletonize_chunked(lambda sl: mask[sl], mask.shape, chunks, halo, write)
    assert n == int(out.sum())
    return out.astype(bool)


@pytest.mark.parametrize("chunks", [(12, 12, 12), (9, 16, 7)])
def test_skeleton_per_chunk_with_halo_equals_the_whole_volume_skeleton(chunks):
    from napari_topo.topology.skeleton import skeletonize

    mask = _tubes((37, 37, 37), TREE_A + TREE_B)
    ref = skeletonize(mask, restore_lost=False)  # the repair needs whole pieces
    got = _chunked_skeleton(mask, chunks, skeleton_halo(4.0))
    np.testing.assert_array_equal(got, ref)
    # without a halo the thinning sees the chunk walls as background: the test can tell
    assert (_chunked_skeleton(mask, chunks, 0) != ref).any()


@pytest.mark.parametrize("chunks", [(16, 16, 16), (12, 12, 12)])
def test_chunked_skeleton_puts_back_what_the_thinning_lost_in_whole_pieces(chunks):
    """Short 2 x 2 bars (which scikit-image thins to nothing) lie whole inside the box
    (chunk + halo 8) of every chunk they touch and get their centerline back, also the
    bar that crosses a chunk face at 12; the trees, which cross the boxes' cut faces,
    keep the plain thinning. (A piece whole in one chunk's box but cut by a neighbour's
    keeps the plain thinning in that neighbour's core.)"""
    from scipy import ndimage as ndi

    from napari_topo.topology.skeleton import skeletonize

    trees = _tubes((37, 37, 37), TREE_A + TREE_B)
    bars = np.zeros_like(trees)
    for z, y, x0 in ((2, 2, 10), (15, 29, 12), (33, 14, 26)):
        bars[z : z + 2, y : y + 2, x0 : x0 + 9] = True
    bars &= ~ndi.binary_dilation(trees, np.ones((3, 3, 3)), iterations=2)  # apart
    n_trees = cc3d.connected_components(trees, connectivity=26, return_N=True)[1]
    n_all = cc3d.connected_components(trees | bars, connectivity=26, return_N=True)[1]
    assert n_all == n_trees + 3
    expected = skeletonize(bars) | skeletonize(trees, restore_lost=False)
    got = _chunked_skeleton(trees | bars, chunks, skeleton_halo(4.0))
    np.testing.assert_array_equal(got, expected)
    assert cc3d.connected_components(got & bars, connectivity=26, return_N=True)[1] == 3


def _components(mask, chunks, **kwargs):
    labels = np.zeros(mask.shape, np.int64)
    kept = np.zeros(mask.shape, np.uint8)
    dtypes = set()

    def write_labels(sl, block):
        dtypes.add(block.dtype)
        labels[sl] = block

    def write_mask(sl, block):
        kept[sl] = block

    res = label_components_chunked(
        lambda sl: mask[sl], mask.shape, chunks, write_mask=write_mask,
        write_labels=write_labels, **kwargs,
    )  # fmt: skip
    assert dtypes == {np.dtype(np.uint16)}
    np.testing.assert_array_equal(kept.astype(bool), labels > 0)
    return labels, res


@pytest.mark.parametrize("chunks", [(8, 8, 8), (5, 7, 16)])
def test_component_ids_across_chunks_are_the_whole_volume_labelling(chunks):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(sum(chunks))
    mask = rng.random((23, 19, 21)) > 0.9  # ~180 pieces, many crossing chunk borders
    for min_size in (0, 6):
        labels, res = _components(mask, chunks, min_size=min_size)
        kept = cc3d.dust(mask, threshold=min_size, connectivity=26) if min_size else mask
        ref, n = ndi.label(kept, structure=np.ones((3, 3, 3)))
        # the same partition (a one-to-one map between ids) ...
        pairs = np.unique(np.stack([labels[kept], ref[kept]]), axis=1)
        assert pairs.shape[1] == n == res["n_components"] > 10
        # ... and the same numbering (first voxel in C order)
        np.testing.assert_array_equal(labels, ref)
        np.testing.assert_array_equal(res["sizes"], np.bincount(ref.ravel())[1:])
        assert res["first"][0].tolist() == np.argwhere(ref == 1)[0].tolist()


def test_roots_name_their_tree_as_the_whole_volume_pipeline_does():
    from napari_topo.analysis import VesselAnalysis

    mask = _tubes((37, 37, 37), TREE_A + TREE_B)
    mask[30:32, 2:4, 30:32] = True  # a speck of 8 voxels, dropped by min_size
    roots = [[1.6, 1.8, 2.2], ROOTS[1]]  # the first outside the mask: snapped
    labels, res = _components(mask, (12, 12, 12), min_size=20, sources=roots)
    ref = VesselAnalysis.from_outputs({"vessel": mask}, sources=roots, min_size=20).trees
    np.testing.assert_array_equal(labels, ref)  # every piece holds one root: equal
    assert [r["id"] for r in res["roots"]] == [1, 2]
    assert res["roots"][0]["voxel"] == [2, 2, 2] and res["n_components"] == 2
    # roots in reverse order swap the names; a third root on tree A is reported
    labels, res = _components(
        mask, (12, 12, 12), min_size=20, sources=[ROOTS[1], ROOTS[0], [30, 30, 30]]
    )
    assert labels[2, 2, 2] == 2 and labels[4, 34, 3] == 1
    assert res["roots"][2]["same_as"] == 2 and res["n_ids"] == 3 and res["sizes"][2] == 0
    # a root far from every vessel names nothing; the unrooted trees follow the roots' ids
    labels, res = _components(mask, (12, 12, 12), min_size=20, sources=[[36, 0, 36]])
    assert res["roots"][0]["voxel"] is None
    assert sorted(np.unique(labels).tolist()) == [0, 2, 3]


@pytest.fixture(scope="module")
def vessels(tmp_path_factory):
    from napari_topo.data.synthetic import make_vessel_volume

    vol = make_vessel_volume(shape=(40, 40, 40), n_trees=2, seed=3)
    image = (vol.image * 1000).astype(np.uint16)
    d = tmp_path_factory.mktemp("stream")
    path = write_ome_zarr(d / "vessels.ome.zarr", image, GEOMETRY, chunk=16)
    return image, path


def test_streamed_outputs_equal_the_whole_volume_pipeline(vessels, tmp_path):
    from scipy import ndimage as ndi

    from napari_topo.inference.pipeline import segment

    image, path = vessels
    vol = read_volume(path)
    out = {n: tmp_path / f"{n}.ome.zarr" for n in ("probability", "mask", "skeleton", "trees")}
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
    # chunks of 16 with a halo of 12: the plain thinning exactly (the in-memory skeleton
    # also puts back what scikit-image's thinning loses, which needs whole pieces), the
    # pieces as ndimage.label
    from napari_topo.topology.skeleton import skeletonize

    skel = np.asarray(read_volume(out["skeleton"]).data).astype(bool)
    plain = skeletonize(ref.mask, restore_lost=False)
    # the repair only adds, and only to pieces wholly inside a chunk's box here
    assert not np.any(plain & ~skel) and not np.any(skel & ~ref.skeleton)
    assert res["n_skeleton"] == int(skel.sum()) > 0 and res["halo"] == 12
    trees = read_volume(out["trees"])
    comp, n = ndi.label(ref.mask, structure=np.ones((3, 3, 3)))
    np.testing.assert_array_equal(np.asarray(trees.data), comp)
    assert res["trees"]["n_components"] == n > 0 and trees.data.dtype == np.uint16
    assert trees.geometry == GEOMETRY
    assert prob.geometry == GEOMETRY and mask.geometry == GEOMETRY
    assert read_ome_zarr(out["mask"]).downsample == "nearest"


def test_streaming_refuses_resampling(vessels, tmp_path):
    _, path = vessels
    vol = read_volume(path)
    out = {"probability": tmp_path / "p.ome.zarr", "mask": tmp_path / "m.ome.zarr"}
    with pytest.raises(ValueError, match="anisotropic"):
        segment_to_ome_zarr(vol.data, vol.geometry, out, "unet-dice", spacing=(1.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="zoom 0.5 resamples"):
        segment_to_ome_zarr(vol.data, vol.geometry, out, "unet-dice", zoom=0.5)
    assert not out["probability"].exists()


def test_a_coarse_z_step_streams_but_a_ct_with_thick_slices_is_refused_first(vessels, tmp_path):
    # outside CT a z step over 3x the pixel size is not resampled, so it can stream; a CT
    # is resampled to cubes, so it cannot, and that was found only after the outputs
    # were created (a reviewer's CT left an empty p.ome.zarr behind)
    from test_intensity import ct_phantom

    from napari_topo.data.io import write_volume
    from napari_topo.inference.chunked import streaming_factors

    image, path = vessels
    assert streaming_factors(image, (2.0, 0.5, 0.5), None, "unet-dice") == (1.0, 1.0, 1.0)
    ct = ct_phantom(shape=(16, 48, 48))[0]
    assert streaming_factors(ct, (2.5, 0.5, 0.5), None, "unet-dice")[0] == pytest.approx(5.0)
    # --modality microscopy (the user's word) keeps the slices of the same values
    kept = streaming_factors(ct, (2.5, 0.5, 0.5), None, "unet-dice", modality="microscopy")
    assert kept == (1.0, 1.0, 1.0)
    geometry = Geometry.from_spacing((2.5, 0.5, 0.5), unit="mm")
    out = {"probability": tmp_path / "p.ome.zarr", "mask": tmp_path / "m.ome.zarr"}
    with pytest.raises(ValueError, match="anisotropic"):
        segment_to_ome_zarr(ct, geometry, out, "unet-dice", spacing=(2.5, 0.5, 0.5))
    assert not out["probability"].exists() and not out["mask"].exists()
    ct_path = write_volume(tmp_path / "ct.nii.gz", ct, geometry=geometry)
    code = cli.main(["segment", str(ct_path), "--out", str(tmp_path / "o"), "--format",
                     "ome-zarr"])  # fmt: skip
    assert code == 2 and not (tmp_path / "o").exists()


def test_a_ct_crop_without_air_whose_file_says_ct_is_refused_before_streaming(
    tmp_path, monkeypatch
):
    # its values alone read as microscopy (whose coarse z step is kept), but the series'
    # Modality tag makes it a CT, resampled to cubes: refused before anything is written
    pytest.importorskip("SimpleITK")
    import _dicom

    from napari_topo.data.io import read_volume
    from napari_topo.inference.chunked import streaming_factors

    monkeypatch.setattr(_dicom, "DY", _dicom.DX)  # square pixels: only z is coarse
    hu = np.random.default_rng(0).uniform(40, 200, _dicom.SHAPE).astype(np.int16)  # no air
    _dicom.write_series(tmp_path / "crop", hu, stored_offset=1024)
    vol = read_volume(tmp_path / "crop")
    assert vol.modality == "ct"
    assert streaming_factors(vol.data, vol.spacing, None, "unet-dice") == (1.0, 1.0, 1.0)
    out = tmp_path / "o"
    code = cli.main(["segment", str(tmp_path / "crop"), "--out", str(out), "--format",
                     "ome-zarr"])  # fmt: skip
    assert code == 2 and not out.exists()


def test_cli_streams_ome_zarr_and_napari_opens_the_result_lazily(vessels, tmp_path, capsys):
    from napari_topo._plugin import read_volumes

    _, path = vessels
    roots = tmp_path / "roots.csv"
    roots.write_text("z,y,x\n20,20,20\n")
    argv = ["segment", path, "--out", tmp_path / "o", "--model", "unet-dice", "--zoom", "1"]
    argv += ["--sources", roots, "--tile", "32", "--device", "cpu"]
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "the vessel graph is not computed" in out.err
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == [
        "vessels_mask.ome.zarr",
        "vessels_probability.ome.zarr",
        "vessels_skeleton.ome.zarr",
        "vessels_summary.json",
        "vessels_trees.csv",
        "vessels_trees.ome.zarr",
    ]
    summary = json.loads((tmp_path / "o" / "vessels_summary.json").read_text())
    assert summary["streamed"] is True and summary["n_voxels"] > 0
    assert summary["n_skeleton_voxels"] > 0 and summary["not_computed"] == ["graph"]
    # device and precision, as the whole-volume path says them (a newcomer missed them)
    compute = summary["compute"]
    assert compute["device"] == "cpu" and compute["precision"] in ("float32", "bfloat16")
    assert f"unet-dice, cpu, {compute['precision']}, " in out.out
    sizes = [t["n_voxels"] for t in summary["trees"]]
    assert len(sizes) == summary["n_trees"] and sum(sizes) == summary["n_voxels"] > 0
    (root,) = summary["roots"]  # id 1 is the piece the root snapped to (16 voxels' reach)
    assert root["source"] == [20, 20, 20] and max(abs(c - 20) for c in root["voxel"]) <= 16
    ((data, meta, kind),) = read_volumes(str(tmp_path / "o" / "vessels_trees.ome.zarr"))
    assert kind == "labels" and type(data).__name__ == "Array"
    assert int(data[tuple(root["voxel"])].compute()) == 1 and sizes[0] > 0
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
        (["--spacing", "1.5", "0.5", "0.5"], "anisotropic"),
        (["--gt", str(path)], "--gt needs the whole-volume pipeline"),
        (["--zoom", "0.5"], "--zoom 0.5 resamples"),
        (["--max-radius", "0"], "--max-radius must be a positive number"),
    ):
        code = cli.main(["segment", str(path), "--out", str(tmp_path / "o"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        # no advice that would write the outputs on another grid (--spacing 1 1 1 did)
        assert "--spacing to" not in err
    assert not (tmp_path / "o").exists()


def _tubes_volume(nz: int, ny: int = 64, nx: int = 64) -> np.ndarray:
    """uint16 (nz, ny, nx): bright tubes along z, across y and on a diagonal, over noise."""
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in (nz, ny, nx)), indexing="ij")
    dist = np.full(z.shape, np.inf, np.float32)
    lines = [  # (point, direction) in voxels, crossing chunk faces, edges and corners
        ((0.0, 31.5, 31.5), (1.0, 0.0, 0.0)),
        ((0.0, 10.0, 50.0), (1.0, 0.0, 0.0)),
        ((16.0, 0.0, 20.0), (0.0, 1.0, 0.0)),
        ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    ]
    for p, d in lines:
        d = np.asarray(d, np.float32) / np.linalg.norm(d)
        rel = [z - p[0], y - p[1], x - p[2]]
        t = rel[0] * d[0] + rel[1] * d[1] + rel[2] * d[2]
        dist = np.minimum(dist, np.sqrt(sum((r - t * c) ** 2 for r, c in zip(rel, d, strict=True))))
    noise = np.random.default_rng(nz).normal(0.0, 100.0, z.shape)
    return np.clip(1000.0 + 2500.0 * np.exp(-0.5 * (dist / 2.5) ** 2) + noise, 0, 65535).astype(
        np.uint16
    )


class _StandIn:
    """A cheap stand-in for the network: logits from a 3x3x3 mean of the input."""

    def __new__(cls):
        import torch

        class StandIn(torch.nn.Module):
            def forward(self, x):
                return (torch.nn.functional.avg_pool3d(x, 3, 1, 1) - 0.5) * 20.0

        return StandIn().eval()


def _stage_peaks(path, out_dir, model) -> dict[str, int]:
    """tracemalloc peak (bytes above what was held at its start) of each streaming stage."""
    import tracemalloc

    vol = read_volume(path)
    out = {n: out_dir / f"{n}.ome.zarr" for n in ("probability", "mask", "skeleton", "trees")}
    peaks: dict[str, int] = {}
    now = {"stage": None, "base": 0}

    def stage(name):
        if now["stage"] is not None:
            peaks[now["stage"]] = tracemalloc.get_traced_memory()[1] - now["base"]
        tracemalloc.reset_peak()
        now["stage"], now["base"] = name, tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    try:
        segment_to_ome_zarr(
            vol.data,
            vol.geometry,
            out,
            model,
            zoom=1,
            tile=32,
            overlap=0.0,  # fewer tiles: tracemalloc slows every allocation
            device="cpu",
            max_radius=2,
            min_size=10,
            stage=stage,
            # the input policy's sample is capped (SAMPLE_VOXELS), not chunked: measured apart
            on_policy=lambda _: stage("sliding window"),
        )
        stage(None)
    finally:
        tracemalloc.stop()
    return peaks


def test_no_streaming_stage_allocates_memory_that_grows_with_the_volume(tmp_path, monkeypatch):
    """Peak memory per stage is set by the chunk: 3x the volume adds < 0.5 byte a voxel.

    Two volumes of 96 and 288 planes of 64 x 64 (chunks of 32^3, a stand-in network):
    a whole-volume mask, label, distance or probability array (1-8 bytes a voxel) in any
    stage makes its peak grow by at least a byte per voxel added. The volumes grow along
    z only, so what is legitimately sized by a (y, x) plane (the sliding window's slab, the
    labels either side of a z chunk boundary) stays the same.
    """
    import napari_topo.data.ngff as ngff
    from napari_topo.models.registry import load_model

    monkeypatch.setattr(ngff, "PYRAMID_MIN_EDGE", 32)  # build pyramid levels too
    _, card = load_model("unet-dice", device="cpu")
    model = (_StandIn(), card)
    peaks = {}
    for nz in (32, 96, 288):  # the first run warms up imports and caches
        path = write_ome_zarr(tmp_path / f"in{nz}.ome.zarr", _tubes_volume(nz), GEOMETRY, chunk=32)
        run = tmp_path / f"run{len(peaks)}"
        run.mkdir()
        peaks[len(peaks)] = (nz, _stage_peaks(path, run, model))
    (small_nz, small), (big_nz, big) = peaks[1], peaks[2]
    added = (big_nz - small_nz) * 64 * 64
    assert set(big) == {"probability", "sliding window", "mask", "skeleton", "pyramids"}
    for name in ("sliding window", "mask", "skeleton", "pyramids"):
        grow = big[name] - small[name]
        assert grow < 0.5 * added, (name, small[name], big[name], added)
