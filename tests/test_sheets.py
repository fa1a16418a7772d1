"""The sheet filter (napari_topo.inference.sheets): Frangi's R_A on a mask, pieces dropped."""

from __future__ import annotations

import numpy as np
import pytest

from napari_topo.data.phantoms import paint_tubes
from napari_topo.inference.sheets import SHEET_RATIO, drop_sheets, line_ratio


def tube(shape=(40, 40, 80), radius=4.0, centre=(20, 20)):
    return paint_tubes(
        shape, [((centre[0], centre[1], 2), (centre[0], centre[1], shape[2] - 3), radius)]
    )


def plate(shape=(40, 40, 80), z=(18, 22), y=(4, 36), x=(4, 76)):
    m = np.zeros(shape, bool)
    m[z[0] : z[1], y[0] : y[1], x[0] : x[1]] = True
    return m


def test_a_tube_reads_as_a_line_a_plate_as_a_sheet():
    t, p = tube(), plate()
    assert np.median(line_ratio(t)[t]) > 0.6
    assert np.median(line_ratio(p)[p]) < 0.1
    r = line_ratio(t)
    assert r.dtype == np.float32 and r.shape == t.shape and np.all(r[~t] == 1.0)


def test_anisotropic_voxels_are_measured_in_physical_units():
    # a round tube (radius 6 units) sampled with voxels 3 units deep in z, 1 in y and x:
    # 4 voxels tall, 12 wide; in voxel units it is a flat ribbon, in physical units a tube
    zz, yy, xx = np.meshgrid(np.arange(20) * 3.0, np.arange(40.0), np.arange(80.0), indexing="ij")
    m = ((zz - 30) ** 2 + (yy - 20) ** 2 <= 36) & (xx > 2) & (xx < 77)
    assert np.median(line_ratio(m, (3.0, 1.0, 1.0))[m]) > 0.5
    assert np.median(line_ratio(m)[m]) < np.median(line_ratio(m, (3.0, 1.0, 1.0))[m])


@pytest.mark.parametrize(
    ("mask", "kwargs", "match"),
    [
        (np.ones((4, 4), bool), {}, "3D"),
        (np.ones((4, 4, 4), bool), {"spacing": (1, 0, 1)}, "spacing"),
        (np.ones((4, 4, 4), bool), {"scales": ()}, "scales"),
        (np.ones((4, 4, 4), bool), {"scales": (1.0, -2.0)}, "scales"),
    ],
)
def test_bad_input_raises(mask, kwargs, match):
    with pytest.raises(ValueError, match=match):
        line_ratio(mask, **kwargs)


def test_an_empty_mask_is_all_ones_and_read_only_input_works():
    m = np.zeros((16, 16, 16), bool)
    m.flags.writeable = False
    assert np.all(line_ratio(m) == 1.0)


def outputs_of(mask):
    return {"vessel": mask.astype(np.float32), "centerness": mask.astype(np.float32)}


def test_drop_sheets_drops_the_plate_keeps_the_tube():
    shape = (48, 48, 96)
    t = tube(shape, centre=(10, 10))
    p = plate(shape, z=(34, 38), y=(4, 44), x=(4, 92))
    out = outputs_of(t | p)
    assert drop_sheets(out) == 1
    mask = out["vessel"] > 0.5
    assert mask[t].all() and not mask[p].any()
    assert not (out["centerness"] > 0)[p].any()  # TopNet's centerness goes with it


def test_a_tube_joined_to_a_plate_by_a_thin_bridge_is_kept(monkeypatch):
    shape = (48, 48, 96)
    t = tube(shape, radius=3.0, centre=(10, 24))
    p = plate(shape, z=(34, 38), y=(2, 46), x=(2, 94))  # larger than the tube: fails whole
    bridge = np.zeros(shape, bool)
    bridge[13:34, 24, 48] = True  # one voxel wide
    out = outputs_of(t | p | bridge)
    assert drop_sheets(out) == 1
    mask = out["vessel"] > 0.5
    assert mask[t].mean() > 0.95 and mask[p].mean() < 0.05
    # without the split the tube would go with the plate
    whole = outputs_of(t | p | bridge)
    import napari_topo.inference.pipeline as pl

    monkeypatch.setattr(pl, "SPLIT_MIN_SIZE", 10**9)
    drop_sheets(whole)
    assert (whole["vessel"] > 0.5)[t].mean() < 0.05


def test_a_root_keeps_its_piece_and_bad_ratio_raises():
    p = plate()
    out = outputs_of(p)
    assert drop_sheets(out, keep=[[20, 20, 40]]) == 0
    assert (out["vessel"] > 0.5)[p].all()
    with pytest.raises(ValueError, match="ratio"):
        drop_sheets(outputs_of(p), ratio=1.5)
    assert 0.0 < SHEET_RATIO < 1.0


def test_small_pieces_are_not_judged():
    p = plate((16, 16, 16), z=(7, 9), y=(4, 10), x=(4, 10))  # 72 voxels: too few for a shape
    out = outputs_of(p)
    assert drop_sheets(out) == 0


def test_a_solid_block_is_not_judged_a_sheet():
    # threshold 0 makes the whole volume vessel: no curvature inside it and no false
    # edge at the volume's border (the border extends the mask), so nothing is dropped
    block = np.ones((40, 40, 40), bool)
    r = line_ratio(block)
    assert np.isnan(r).all()
    out = outputs_of(block)
    assert drop_sheets(out) == 0 and (out["vessel"] > 0.5).all()
    # a vessel leaving the volume reads as a tube up to the border
    t = tube((32, 32, 64), centre=(16, 16))
    t[:, :, :3] = t[:, :, 3:4]
    t[:, :, -3:] = t[:, :, -4:-3]
    assert np.nanmedian(line_ratio(t)[t]) > 0.6


@pytest.mark.xfail(
    strict=True,
    reason="known limitation: a tube lying along a sheet over its length joins it broadly, "
    "the cut where thin cannot separate them, and the tube is dropped with the sheet "
    "(a newcomer's phantom; --sheets keep keeps it)",
)
def test_a_tube_lying_on_a_plate_is_kept():
    shape = (48, 48, 96)
    t = tube(shape, radius=3.0, centre=(30, 24))
    p = plate(shape, z=(33, 36), y=(2, 46), x=(2, 94))  # the tube rests on it, full length
    out = outputs_of(t | p)
    drop_sheets(out)
    assert (out["vessel"] > 0.5)[t].mean() > 0.9


def test_the_benchmark_times_a_saved_mask(tmp_path, capsys):
    # benchmarks/bench_sheets.py --time-mask: the README's cost figure comes from it
    from _scripts import load_script

    from napari_topo.data.io import write_volume

    bench = load_script("benchmarks/bench_sheets.py")
    shape = (40, 48, 96)
    write_volume(
        tmp_path / "m.nii.gz",
        tube(shape, centre=(10, 24)) | plate(shape, z=(30, 33), y=(2, 46), x=(2, 94)),
        spacing=(1.0, 1.0, 1.0),
    )
    assert bench.main(["--time-mask", str(tmp_path / "m.nii.gz")]) == 0
    out = capsys.readouterr().out
    assert "sheet-like pieces dropped: 1, in" in out and "GiB" in out
