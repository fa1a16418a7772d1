"""The streaming pipeline's network on dask.distributed (inference/distributed.py)."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest

pytest.importorskip("ome_zarr")
pytest.importorskip("cc3d")
distributed = pytest.importorskip("distributed")

from test_chunked import TREE_A, TREE_B, _tubes  # noqa: E402

from napari_topo import cli  # noqa: E402
from napari_topo.data.io import read_volume  # noqa: E402
from napari_topo.data.ngff import write_ome_zarr  # noqa: E402
from napari_topo.geometry import Geometry  # noqa: E402
from napari_topo.inference.chunked import (  # noqa: E402
    segment_to_ome_zarr,
    skeleton_halo,
    skeletonize_chunked,
)
from napari_topo.inference.distributed import (  # noqa: E402
    cluster_slots,
    forward_on_worker,
    model_payload,
    thin_on_cluster,
)
from napari_topo.models.registry import WeightsIntegrityError, load_model  # noqa: E402

GEOMETRY = Geometry.from_spacing((1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), unit="um")
NAMES = ("probability", "mask", "skeleton", "trees")


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    from napari_topo.data.synthetic import make_vessel_volume

    vol = make_vessel_volume(shape=(40, 44, 36), n_trees=2, seed=5)
    image = (vol.image * 1000).astype(np.uint16)
    d = tmp_path_factory.mktemp("dist")
    return write_ome_zarr(d / "vessels.ome.zarr", image, GEOMETRY, chunk=16)


@pytest.fixture(scope="module")
def cluster():
    """Two in-process workers, one thread each (tiles of one batch go to both)."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as c:
        yield c


@pytest.fixture(scope="module")
def single(volume, tmp_path_factory):
    """The single-process run: its outputs and its result."""
    folder = tmp_path_factory.mktemp("single") / "run"
    res = _segment(volume, folder)
    return _outputs(folder), res


def _outputs(folder) -> dict[str, np.ndarray]:
    return {n: np.asarray(read_volume(folder / f"{n}.ome.zarr").data) for n in NAMES}


def _segment(path, folder, **kwargs):
    vol = read_volume(path)
    folder.mkdir()
    return segment_to_ome_zarr(
        vol.data,
        vol.geometry,
        {n: folder / f"{n}.ome.zarr" for n in NAMES},
        "unet-dice",
        zoom=1,
        tile=16,
        device="cpu",
        min_size=10,
        **kwargs,
    )


def test_cluster_run_equals_the_single_process_run(volume, cluster, single, tmp_path):
    a, ref = single
    with distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as tasks:
            res = _segment(volume, tmp_path / "two", client=client)
    ran_on = {t["worker"] for t in tasks.data if "forward_on_worker" in t["key"]}
    assert len(ran_on) == 2  # both workers ran network batches
    assert any("thin_on_worker" in str(t["key"]) for t in tasks.data)  # and the skeleton
    # and only those: the input was read here (the Client is dask's default scheduler)
    worker_tasks = ("forward_on_worker", "thin_on_worker")
    assert all(any(w in str(t["key"]) for w in worker_tasks) for t in tasks.data), [
        t["key"] for t in tasks.data
    ]
    b = _outputs(tmp_path / "two")
    for name in NAMES:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)
    assert a["mask"].any() and a["skeleton"].any()
    assert res["n_voxels"] == ref["n_voxels"] and res["trees"] == ref["trees"]


def test_mirroring_on_the_cluster_equals_it_here_and_is_said(volume, cluster, tmp_path):
    here = _segment(volume, tmp_path / "here", tta=2)
    with distributed.Client(cluster) as client:
        there = _segment(volume, tmp_path / "there", client=client, tta=2)
    assert there["compute"]["tta"] == here["compute"]["tta"] == "2 mirrored copies"
    a, b = _outputs(tmp_path / "here"), _outputs(tmp_path / "there")
    for name in NAMES:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)


def _skeleton(mask, chunks, **kwargs):
    """The chunked skeleton of ``mask``, its count, and the most boxes read not yet written."""
    out = np.zeros(mask.shape, np.uint8)
    open_boxes = [0, 0]  # now, most

    def read(sl):
        open_boxes[0] += 1
        open_boxes[1] = max(open_boxes)
        return mask[sl]

    def write(sl, block):
        open_boxes[0] -= 1
        out[sl] = block

    n = skeletonize_chunked(read, mask.shape, chunks, skeleton_halo(4.0), write, **kwargs)
    assert open_boxes[0] == 0  # every chunk written once
    return out, n, open_boxes[1]


@pytest.mark.parametrize("chunks", [(12, 12, 12), (9, 16, 7)])
def test_skeleton_thinned_on_the_workers_equals_the_local_one(cluster, chunks):
    """Tubes crossing chunk faces, edges and corners: each chunk with vessel voxels is
    thinned by one task on a worker, and the stitched skeleton is the local one."""
    mask = _tubes((37, 37, 37), TREE_A + TREE_B)
    ref, n_ref, _ = _skeleton(mask, chunks)
    with distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as tasks:
            got, n, most_open = _skeleton(mask, chunks, client=client)
        slots = cluster_slots(client)
        workers = set(client.scheduler_info()["workers"])
    np.testing.assert_array_equal(got, ref)
    assert n == n_ref == int(ref.sum()) > 0
    grid = itertools.product(*(range(0, m, c) for m, c in zip(mask.shape, chunks, strict=True)))
    boxes = [tuple(slice(s, s + c) for s, c in zip(at, chunks, strict=True)) for at in grid]
    n_busy = sum(bool(mask[box].any()) for box in boxes)  # the others: zeros written here
    thin = [t for t in tasks.data if "thin_on_worker" in str(t["key"])]
    assert len(thin) == n_busy  # one task per chunk with vessels
    ran_on = {t["worker"] for t in thin}
    assert ran_on <= workers and len(ran_on) == 2, (ran_on, workers)
    # bounded: two boxes per worker thread on their way (+1 being read), not the volume
    assert slots == 2 and n_busy > 2 * slots + 1
    assert most_open <= 2 * slots + 1, most_open


def test_an_error_on_a_worker_is_raised_here(cluster):
    boxes = [("ok", np.ones((4, 4, 4), bool), (slice(1, 3),) * 3)]
    boxes.append(("bad", np.ones(4, bool), (slice(1, 3),)))  # 1D: skeletonize refuses it
    with distributed.Client(cluster) as client:
        with pytest.raises(ValueError, match="2D"):
            list(thin_on_cluster(client, boxes))


def test_weights_checked_by_sha256_on_the_worker():
    module, card = load_model("unet-dice", device="cpu")
    data, sha = model_payload(module, card, card.weights_path)
    assert sha == card.sha256 == hashlib.sha256(data).hexdigest()
    x = np.zeros((1, 1, 16, 16, 16), np.float32)
    y = forward_on_worker(data, sha, card.architecture, card.arch_kwargs, x, "cpu")
    assert y.shape == (1, 1, 16, 16, 16) and y.dtype == np.float32
    bad = bytearray(data)
    bad[-1] ^= 0xFF  # one flipped bit in the last tensor
    with pytest.raises(WeightsIntegrityError, match="SHA-256"):
        forward_on_worker(bytes(bad), sha, card.architecture, card.arch_kwargs, x, "cpu")


def test_cli_scheduler_address_runs_on_the_cluster(volume, cluster, single, tmp_path, capsys):
    argv = ["segment", volume, "--out", tmp_path / "o", "--model", "unet-dice", "--zoom", "1"]
    argv += ["--tile", "16", "--device", "cpu", "--min-size", "10"]
    argv += ["--scheduler", cluster.scheduler_address]
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert (
        f"the network and the skeleton's thinning run on {cluster.scheduler_address} "
        "(2 worker threads)"
    ) in out.err
    assert "unet-dice, dask workers, auto, " in out.out  # not the local CPU's precision
    for name in NAMES:
        got = read_volume(tmp_path / "o" / f"vessels_{name}.ome.zarr").data
        np.testing.assert_array_equal(np.asarray(got), single[0][name], err_msg=name)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--workers", "2", "--format", "nii.gz"], "add --format ome-zarr"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
    ],
)
def test_cli_cluster_refusals_are_one_line_and_write_nothing(
    volume, tmp_path, capsys, extra, message
):
    argv = ["segment", str(volume), "--out", str(tmp_path / "o"), "--zoom", "1", *extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
