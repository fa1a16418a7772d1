"""The command line and the error injection its demo relies on."""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_topo import __version__, cli
from napari_topo.data.io import write_volume
from napari_topo.data.perturb import add_spurious_blobs, break_vessel, bridge_trees
from napari_topo.data.synthetic import make_vessel_volume
from napari_topo.topology.metrics import betti_numbers


@pytest.fixture(scope="module")
def vol():
    return make_vessel_volume(shape=(48, 48, 48), n_trees=2, seed=3)


def test_break_vessel_adds_a_component(vol):
    broken = break_vessel(vol.mask, vol.centerline, vol.radius / min(vol.spacing), rng=0)
    assert betti_numbers(broken)[0] == betti_numbers(vol.mask)[0] + 1
    assert broken.sum() < vol.mask.sum()
    assert not np.any(broken & ~vol.mask)  # only removes


def test_bridge_trees_joins_two_trees(vol):
    bridged = bridge_trees(vol.trees)
    assert betti_numbers(vol.mask)[0] == 2
    assert betti_numbers(bridged)[0] == 1
    assert np.all(bridged[vol.mask])  # keeps every vessel voxel


def test_spurious_blobs_are_separate_components(vol):
    blobs = add_spurious_blobs(vol.mask, n=4, rng=1)
    assert betti_numbers(blobs)[0] == betti_numbers(vol.mask)[0] + 4


def test_perturbations_validate_input(vol):
    with pytest.raises(ValueError, match="3D"):
        add_spurious_blobs(vol.mask[0])
    with pytest.raises(ValueError, match="two trees"):
        bridge_trees(vol.trees == 1)


def test_demo_prints_what_each_metric_sees():
    out = io.StringIO()
    rows = dict(cli.run_demo(size=48, seed=3, out=out))
    text = out.getvalue()
    assert "broken vessel" in text and "soft clDice" in text
    assert rows["perfect"]["Dice"] == 1.0 and rows["perfect"]["Betti-0 error"] == 0
    assert rows["broken vessel"]["Betti-0 error"] == 1
    assert rows["false bridge"]["Betti-0 error"] == 1
    assert rows["spurious blobs"]["CCE 3D"] == 6
    # Dice hardly notices a cut; the topology metrics do.
    assert rows["broken vessel"]["Dice"] > 0.95


def test_cli_version_and_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and __version__ in capsys.readouterr().out
    assert cli.main(["demo", "--size", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-topo: error:") and "--size" in err
    assert len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ segment / evaluate


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A synthetic volume, its ground truth and its true sources as files."""
    from napari_topo.data.io import write_volume

    d = tmp_path_factory.mktemp("cli")
    v = make_vessel_volume(shape=(64, 64, 64), seed=5)
    write_volume(d / "vol.nii.gz", v.image.astype(np.float32), spacing=v.spacing)
    write_volume(d / "trees.nii.gz", v.trees.astype(np.uint8), spacing=v.spacing)
    (d / "sources.csv").write_text(
        "z,y,x\n" + "\n".join(",".join(str(int(c)) for c in s) for s in v.sources) + "\n"
    )
    return d, v


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_segment_writes_everything_and_scores_against_the_truth(files, capsys, tmp_path):
    from napari_topo.data.io import read_volume
    from napari_topo.topology.metrics import compute_metrics

    d, v = files
    code, out, err = _run(
        [
            "segment",
            d / "vol.nii.gz",
            "--out",
            tmp_path,
            "--model",
            "unet-dice",
            "--sources",
            d / "sources.csv",
            "--gt",
            d / "trees.nii.gz",
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 0, err
    names = {p.name for p in tmp_path.iterdir()}
    for kind in ("probability", "mask", "skeleton", "trees"):
        assert f"vol_{kind}.nii.gz" in names
    assert {
        "vol_graph.graphml",
        "vol_graph.swc",
        "vol_graph.csv",
        "vol_branches.csv",
        "vol_summary.json",
        "vol_metrics.json",
        "vol_metrics.csv",
    } <= names
    assert not [n for n in names if n.startswith(".napari-topo-")]  # no temp left
    trees = read_volume(tmp_path / "vol_trees.nii.gz")
    assert trees.data.shape == v.shape and trees.spacing == v.spacing
    m = compute_metrics(trees.data > 0, v.mask)
    assert m["Dice"] > 0.8
    # two sources given, two trees back (their quality against the generator is tested on
    # the test-set distribution in test_pipeline; this 64^3 volume breaks near a root)
    assert set(np.unique(trees.data)) == {0, 1, 2}
    metrics = json.loads((tmp_path / "vol_metrics.json").read_text())
    assert abs(metrics["Dice"] - m["Dice"]) < 1e-9 and "Tree accuracy" in metrics
    assert "Tree accuracy" in out and "2 trees" in out
    summary = json.loads((tmp_path / "vol_summary.json").read_text())
    assert summary["n_trees"] == 2 and summary["model"] == "unet-dice"
    # per-branch morphometry, in the file's unit, trees as in the label volume
    with (tmp_path / "vol_branches.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {"length", "tortuosity", "radius_mean", "generation"} <= set(rows[0])
    assert {int(r["tree"]) for r in rows} <= {0, 1, 2} and {1, 2} <= {int(r["tree"]) for r in rows}
    lengths = [float(r["length"]) for r in rows]
    assert sum(lengths) == pytest.approx(
        sum(t["length"] for t in summary["trees"])
        + sum(float(r["length"]) for r in rows if int(r["tree"]) == 0),
        rel=1e-6,
    )  # the branches cut the trees' forests, nothing added or lost
    for tree in summary["trees"]:
        mine = [r for r in rows if int(r["tree"]) == tree["id"]]
        assert tree["n_branches"] == len(mine) > 0
        assert tree["max_generation"] == max(int(r["generation"]) for r in mine)
        word = "branch" if len(mine) == 1 else "branches"
        assert f"  tree {tree['id']}: " in out and f"in {len(mine)} {word}" in out
    # where and in what arithmetic the network ran is recorded and said
    compute = summary["compute"]
    assert compute["device"] == "cpu" and compute["precision"] in ("float32", "bfloat16")
    assert f"cpu, {compute['precision']}" in out
    # both roots lie on vessels: where they landed is recorded, and no note is printed
    assert [r["tree"] for r in summary["roots"]] == [1, 2]
    assert all(r["in_mask"] for r in summary["roots"]) and "lies off the vessel mask" not in out


def test_segment_says_when_a_root_lies_off_every_vessel(files, capsys, tmp_path):
    """A root placed in empty background roots a tree on the nearest vessel: the CLI says so."""
    d, v = files
    far = np.array([63, 0, 63])
    assert not v.mask[tuple(far)]
    (tmp_path / "roots.csv").write_text(
        "z,y,x\n" + ",".join(str(int(c)) for c in v.sources[0]) + "\n63,0,63\n"
    )
    out_dir = tmp_path / "out"
    argv = ["segment", d / "vol.nii.gz", "--out", out_dir, "--sources", tmp_path / "roots.csv"]
    code, out, err = _run([*argv, "--device", "cpu"], capsys)
    assert code == 0, err
    summary = json.loads((out_dir / "vol_summary.json").read_text())
    on, off = summary["roots"]
    assert on["in_mask"] and not off["in_mask"] and off["given"] == [63.0, 0.0, 63.0]
    # the unit of "moved": the file's length unit (None when it states none)
    from napari_topo.data.io import read_volume

    assert off["unit"] == (read_volume(d / "vol.nii.gz").geometry.unit or None)
    # the note names the root, its tree and how far it moved, in the spacing's unit
    notes = [ln for ln in out.splitlines() if "lies off the vessel mask" in ln]
    assert len(notes) == 1 and notes[0].startswith("note: root 2 (z,y,x 63,0,63)")
    assert f"{off['moved']:.1f}" in notes[0] and f"({off['n_voxels']} voxels)" in notes[0]
    assert off["moved"] > 5 * max(v.spacing)


def test_roots_that_snap_together_are_named_by_their_rows(files, capsys, tmp_path, monkeypatch):
    """Two different roots that land on one centerline point: said in --sources rows."""
    import napari_topo.inference.pipeline as pipeline_module
    from napari_topo.trees.reconstruct import CoincidingSourcesError

    d, v = files
    calls = []
    error = CoincidingSourcesError("sources must be distinct points", [7, 30, 7])

    def fake_segment(*args, **kwargs):
        calls.append(kwargs["sources"])
        raise error

    monkeypatch.setattr(pipeline_module, "segment", fake_segment)
    (tmp_path / "roots.csv").write_text("z,y,x\n1,1,1\n20,20,20\n2,2,2\n")
    argv = ["segment", d / "vol.nii.gz", "--out", tmp_path / "out"]
    code, out, err = _run([*argv, "--sources", tmp_path / "roots.csv"], capsys)
    assert code == 2 and len(calls) == 1
    line = err.strip()
    assert line.startswith("napari-topo: error: rows 1 and 3 of the --sources points snap")
    assert "point indices" not in line and not (tmp_path / "out").exists()
    # any other error passes through unchanged
    error = ValueError("something else")
    code, out, err = _run([*argv, "--sources", tmp_path / "roots.csv"], capsys)
    assert code == 2 and err.strip() == "napari-topo: error: something else"


def test_segment_tta_is_applied_recorded_and_said(files, capsys, tmp_path):
    d, _ = files
    args = ["segment", d / "vol.nii.gz", "--out", tmp_path, "--device", "cpu", "--tta", "2"]
    code, out, err = _run(args, capsys)
    assert code == 0, err
    compute = json.loads((tmp_path / "vol_summary.json").read_text())["compute"]
    assert compute["tta"] == "2 mirrored copies"
    assert "2 mirrored copies" in out
    code, out, err = _run([*args[:-1], "3"], capsys)
    assert code == 2 and "--tta" in err


def test_evaluate_prints_and_writes_the_table(files, capsys, tmp_path, monkeypatch):
    d, v = files
    from napari_topo.data.io import write_volume

    pred = tmp_path / "pred.npy"
    write_volume(pred, bridge_trees(v.trees).astype(np.uint8))
    # --out is a folder, as for segment (made if missing), with <PRED stem>_metrics inside
    code, out, err = _run(["evaluate", pred, d / "trees.nii.gz", "--out", tmp_path / "m"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "pred_metrics.csv",
        "pred_metrics.json",
    ]
    metrics = json.loads((tmp_path / "m" / "pred_metrics.json").read_text())
    assert metrics["Betti-0 error"] == 1  # the bridge joined the two trees
    assert (tmp_path / "m" / "pred_metrics.csv").read_text().startswith("metric,value")
    assert "Betti-0 error" in out and "spacing (1.0, 1.0, 1.0)" in out
    # a distance says its unit: the ground truth's ("units" when its header names none)
    from napari_topo.data.io import read_volume

    unit = read_volume(d / "trees.nii.gz").geometry.unit or "units"
    hd95 = next(line for line in out.splitlines() if line.strip().startswith("HD95"))
    assert hd95.split()[-1] == unit, hd95
    # without --out: beside the prediction, not in the shell's working folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = _run(["evaluate", pred, d / "trees.nii.gz"], capsys)
    assert code == 0, err
    assert (tmp_path / "pred_metrics.json").is_file() and not any(elsewhere.iterdir())
    assert "replacing" not in out
    # evaluated again (another ground truth, a region): the earlier scores' loss is said
    code, out, err = _run(["evaluate", pred, d / "trees.nii.gz"], capsys)
    assert code == 0, err
    assert "replacing the scores written there before" in out


def test_evaluate_says_hd95_in_the_unit_given_for_npy_files(files, capsys, tmp_path):
    # a newcomer scored .npy masks with --spacing 5 0.994 0.994 and read "HD95 ... units"
    d, v = files
    from napari_topo.data.io import write_volume

    pred, gt = tmp_path / "pred.npy", tmp_path / "gt.npy"
    write_volume(pred, bridge_trees(v.trees).astype(np.uint8))
    write_volume(gt, (v.trees > 0).astype(np.uint8))
    args = ["evaluate", pred, gt, "--spacing", "5", "0.994", "0.994", "--out", tmp_path / "m"]
    code, out, err = _run([*args, "--unit", "um"], capsys)
    assert code == 0, err
    hd95 = next(line for line in out.splitlines() if line.strip().startswith("HD95"))
    assert hd95.split()[-1] == "um", hd95
    code, out, err = _run(args, capsys)  # without: the unit is unknown, and said so
    assert code == 0 and out.count(" units") >= 1
    code, out, err = _run(["evaluate", pred, gt, "--unit", "um"], capsys)  # no voxel size
    assert code == 2 and "give --spacing Z Y X too" in err
    # a file that states its unit: another --unit is refused in one line
    code, out, err = _run(["evaluate", pred, d / "trees.nii.gz", "--unit", "nm"], capsys)
    from napari_topo.data.io import read_volume

    if read_volume(d / "trees.nii.gz").geometry.unit not in (None, "nm"):
        assert code == 2 and "but --unit says nm" in err and len(err.strip().splitlines()) == 1


def test_evaluate_out_names_a_folder_or_a_file(files, capsys, tmp_path):
    """``--out`` is a folder; a path ending in .json or .csv still names the files (the
    old prefix behaviour) with a note; a file where the folder should be is refused."""
    d, v = files
    pred, gt = d / "trees.nii.gz", d / "trees.nii.gz"
    # an existing folder whose name has a dot: still a folder
    (tmp_path / "run.v2").mkdir()
    code, out, err = _run(["evaluate", pred, gt, "--out", tmp_path / "run.v2"], capsys)
    assert code == 0, err
    assert (tmp_path / "run.v2" / "trees_metrics.json").is_file()
    # a file name: both files beside it under that stem, and a note says so
    code, out, err = _run(["evaluate", pred, gt, "--out", tmp_path / "new" / "m.json"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["m.csv", "m.json"]
    assert json.loads((tmp_path / "new" / "m.json").read_text())["Dice"] == 1.0
    assert "note: --out" in out and "takes a folder" in out
    # a file in the way: one line, exit 2, nothing written
    (tmp_path / "taken").write_text("x")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for bad in (tmp_path / "taken", tmp_path / "taken" / "m.csv"):
        code, out, err = _run(["evaluate", pred, gt, "--out", bad], capsys)
        assert code == 2 and "is a file, not a folder" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_read_sources_formats(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("index,axis-0,axis-1,axis-2\n0,1,2,3\n1,4,5,6\n")
    np.testing.assert_array_equal(cli.read_sources(f), [[1, 2, 3], [4, 5, 6]])
    f.write_text("1, 2, 3\n")
    np.testing.assert_array_equal(cli.read_sources(f), [[1, 2, 3]])
    f.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="z,y,x"):
        cli.read_sources(f)


def _bad_inputs(tmp):
    """(name, argv builder) of every bad input the issue lists."""
    from napari_topo.data.io import write_volume
    from napari_topo.models.registry import get_card

    vol = tmp / "ok.npy"
    write_volume(vol, np.random.default_rng(0).random((32, 32, 32), dtype=np.float32))
    write_volume(tmp / "flat.npy", np.random.default_rng(0).random((64, 64), dtype=np.float32))
    write_volume(tmp / "rgb.npy", np.zeros((8, 32, 32, 3), np.uint8))
    nan = np.random.default_rng(0).random((32, 32, 32), dtype=np.float32)
    nan[3, 4, 5] = np.nan
    write_volume(tmp / "nan.npy", nan)
    write_volume(tmp / "empty.npy", np.zeros((32, 32, 32), np.float32))
    write_volume(tmp / "gt.npy", np.zeros((32, 32, 16), np.uint8))
    card = get_card("unet-dice")
    weights = tmp / "tampered.safetensors"
    data = bytearray(card.weights_path.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte in the last tensor
    weights.write_bytes(bytes(data))
    meta = json.loads(card.path.read_text())
    meta["weights_file"] = weights.name
    (tmp / "tampered.json").write_text(json.dumps(meta))
    seg = ["segment", "--out", tmp / "out", "--device", "cpu", "--tile", "32"]
    (tmp / "far.csv").write_text("z,y,x\n100,3,3\n")
    (tmp / "twice.csv").write_text("z,y,x\n10,3,3\n4,4,4\n10.2,3,2.9\n")
    (tmp / "afile").write_text("")
    return [
        ("missing file", [*seg, tmp / "nope.nii.gz"], "no such file"),
        ("2D", [*seg, tmp / "flat.npy"], "2D"),
        ("RGB", [*seg, tmp / "rgb.npy"], "RGB"),
        ("NaN", [*seg, tmp / "nan.npy"], "NaN"),
        ("empty", [*seg, tmp / "empty.npy"], "empty"),
        ("gt shape", [*seg, vol, "--gt", tmp / "gt.npy"], "shape"),
        ("unknown model", [*seg, vol, "--model", "unet-nope"], "unet-nope"),
        ("tampered weights", [*seg, vol, "--model", tmp / "tampered.json"], "sha-256"),
        ("unsupported", [*seg, tmp / "gt.txt"], "supported"),
        ("evaluate shape", ["evaluate", vol, tmp / "gt.npy"], "shape"),
        ("sources outside", [*seg, vol, "--sources", tmp / "far.csv"], "outside the volume"),
        ("sources twice", [*seg, vol, "--sources", tmp / "twice.csv"], "rows 1 and 3"),
        ("bad tile", [*seg, vol, "--tile", "8"], "multiple of 16"),
        ("bad overlap", [*seg, vol, "--overlap", "1"], "--overlap must be at least 0"),
        ("float16 on the CPU", [*seg, vol, "--precision", "float16"], "CUDA only"),
        ("out is a file", [*seg[:1], vol, "--out", tmp / "afile" / "sub", "--tile", "32"], "afile"),
        ("fractional gt", ["evaluate", vol, vol], "fractional"),
    ]


def test_bad_inputs_get_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "gt.txt").write_text("not a volume")
    for name, argv, needle in _bad_inputs(tmp_path):
        code, out, err = _run(argv, capsys)
        assert code == 2, (name, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("napari-topo: error:"), (name, err)
        assert needle.lower() in lines[0].lower(), (name, lines[0])
        if name == "NaN":  # refused before the input and voxel-size lines (newcomer)
            assert out == "", out
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_models_lists_every_card_with_its_test_scores(capsys):
    from napari_topo.models.registry import list_models

    code, out, err = _run(["models"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == [c.name for c in list_models()]
    card = {c.name: c for c in list_models()}["unet-projpool"]
    dice = card.metrics["test"]["summary"]["Dice"]["mean"]
    line = next(ln for ln in lines if ln.startswith("unet-projpool"))
    assert f"[synthetic test: Dice {dice:.3f}" in line
    assert "On real data" in err  # the synthetic ranking is not the real-data one
    from napari_topo.inference.pipeline import DEFAULT_MODEL

    assert [ln.split()[0] for ln in lines if ln.endswith("(default)")] == [DEFAULT_MODEL]


def test_models_name_prints_the_card_and_a_fine_tuned_ones_scores(capsys, tmp_path):
    # "list the pretrained models and their cards" printed one line per model: a user
    # could not see what a model is fed, its threshold or what a fine-tune gained
    import torch

    from napari_topo.models import ModelCard, UNet3D, save_model
    from napari_topo.models.registry import AUTO_NORMALIZATION, get_card

    card = get_card("topnet")
    code, out, err = _run(["models", "topnet"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == f"topnet: {card.summary}"
    assert "mask: vessel probability above 0.5; pieces under 64 voxels dropped" in lines
    assert "windowed to -100..300 HU" in out and "expects bright vessels" in out
    dice = card.metrics["test"]["summary"]["Dice"]["mean"]
    assert f"Dice {dice:.3f}" in out
    assert f"weights sha256 (recorded in the card): {card.sha256}" in lines

    torch.manual_seed(0)
    ft = ModelCard(
        name="my-ft",
        architecture="unet3d",
        summary="unet-dice fine-tuned",
        normalization=AUTO_NORMALIZATION,
        threshold=0.3,
        training={
            "fine_tuned_from": {"name": "unet-dice", "sha256": "ab" * 32},
            "data": {
                "shape": [8, 16, 16],
                "spacing": [2.0, 1.0, 1.0],
                "unit": "um",
                "annotated_voxels": 900,
            },
            "loss": {"name": "dice"},
            "steps": 12,
            "wall_time_s": 30.4,
            "device": "cpu",
        },
        metrics={
            "validation_before": {"Dice": 0.5, "clDice": 0.6, "threshold": 0.5},
            "validation": {"Dice": 0.7, "clDice": 0.75},
        },
    )
    save_model(UNet3D(widths=(4, 8)), ft, tmp_path / "ft")
    code, out, err = _run(["models", tmp_path / "ft"], capsys)
    assert code == 0, err
    assert (
        "fine-tuned from unet-dice (sha256 abababababab...) on a 8x16x16 volume (spacing "
        "2x1x1 um), 900 annotated voxels, loss dice, 12 steps in 30 s on cpu"
    ) in out
    assert (
        "held-out part of the annotation, base -> this model: Dice 0.500 -> 0.700, "
        "clDice 0.600 -> 0.750 (threshold 0.5 -> 0.3)"
    ) in out
    assert "mask: vessel probability above 0.3" in out and "(default)" not in out

    # a user's card is free-form JSON: odd values leave a line out, never fail
    odd = ModelCard(
        name="odd",
        architecture="unet3d",
        min_size=0,
        training={
            "fine_tuned_from": {"name": "x", "sha256": None},
            "data": {"shape": "8x8", "spacing": 2.0},
            "wall_time_s": None,
        },
        metrics={"validation_before": {"Dice": None, "threshold": None}, "validation": {}},
    )
    from napari_topo.models.registry import describe_card

    said = describe_card(odd)
    assert "mask: vessel probability above 0.5; no piece dropped for its size" in said
    assert "fine-tuned from x on one volume" in said
    code, out, err = _run(["models", "no-such-model"], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "unknown model 'no-such-model'" in err
    # the weights are checked as loading checks them (a changed byte was only refused
    # when segment loaded it); a near miss gets a suggestion; a missing folder is named
    assert "its SHA-256 matches the card" in _run(["models", "topnet"], capsys)[1]
    weights = tmp_path / "ft" / "my-ft.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 1
    weights.write_bytes(bytes(raw))
    code, out, err = _run(["models", tmp_path / "ft"], capsys)
    assert code == 0 and "DIFFERS from the SHA-256 its card records" in out
    weights.unlink()  # a card without its weights is described, and says so
    code, out, err = _run(["models", tmp_path / "ft" / "my-ft.json"], capsys)
    assert code == 0 and "weights: missing" in out and "cannot be loaded" in out
    code, out, err = _run(["models", "UNET-DICE"], capsys)
    assert code == 2 and "did you mean 'unet-dice'?" in err
    code, out, err = _run(["models", tmp_path / "not-there"], capsys)
    assert code == 2 and "no such model file or folder" in err


def test_evaluate_says_when_the_ground_truth_is_an_intensity_image(capsys, tmp_path):
    # a newcomer scored a mask against the two-photon stack itself: Dice 0.04, no hint
    from napari_topo.data.io import write_volume

    rng = np.random.default_rng(0)
    stack = rng.integers(0, 255, size=(16, 24, 24), dtype=np.uint8)
    write_volume(tmp_path / "stack.tif", stack)
    write_volume(tmp_path / "mask.tif", (stack > 200).astype(np.uint8))
    code, out, err = _run(
        [
            "evaluate",
            str(tmp_path / "mask.tif"),
            str(tmp_path / "stack.tif"),
            "--out",
            str(tmp_path / "m"),
        ],
        capsys,
    )
    assert code == 0 and "the ground truth stack.tif looks like an intensity image" in err
    # the image given as the prediction (a newcomer's slip): said too, not scored in silence
    swapped = ["evaluate", tmp_path / "stack.tif", tmp_path / "mask.tif", "--out", tmp_path / "s"]
    code, out, err = _run(swapped, capsys)
    assert code == 0 and "the prediction stack.tif looks like an intensity image" in err
    code, out, err = _run(
        [
            "evaluate",
            str(tmp_path / "mask.tif"),
            str(tmp_path / "mask.tif"),
            "--out",
            str(tmp_path / "m2"),
        ],
        capsys,
    )
    assert code == 0 and "intensity image" not in err and "holds no vessel" not in err
    # an empty ground truth (a newcomer's): scored, with a word on the nan and the 0
    write_volume(tmp_path / "empty.tif", np.zeros((16, 24, 24), np.uint8))
    code, out, err = _run(
        ["evaluate", tmp_path / "mask.tif", tmp_path / "empty.tif", "--out", tmp_path / "e"],
        capsys,
    )
    assert code == 0 and "the ground truth empty.tif holds no vessel: Recall" in err
    code, out, err = _run(
        ["evaluate", tmp_path / "empty.tif", tmp_path / "mask.tif", "--out", tmp_path / "f"],
        capsys,
    )
    assert code == 0 and "the prediction empty.tif holds no vessel: Precision" in err


def test_evaluate_scores_inside_a_region_as_segment_does(files, capsys, tmp_path):
    # segment --gt --roi scored inside the liver; evaluate of its files had no --roi
    # (a newcomer: 0.5958 against 0.5200 whole volume, with no word of the difference)
    from napari_topo.data.io import write_volume

    d, v = files
    pred = (v.trees > 0).astype(np.uint8)
    pred[:, :, 48:] = 1 - pred[:, :, 48:]  # wrong everywhere outside the region
    write_volume(tmp_path / "pred.nii.gz", pred, spacing=v.spacing)
    region = np.zeros(v.shape, np.uint8)
    region[:, :, :44] = 1
    write_volume(tmp_path / "region.nii.gz", region, spacing=v.spacing)
    args = ["evaluate", tmp_path / "pred.nii.gz", d / "trees.nii.gz"]
    code, out, err = _run([*args, "--out", tmp_path / "w"], capsys)
    assert code == 0 and "whole volume" in out, err
    whole = json.loads((tmp_path / "w" / "pred_metrics.json").read_text())
    roi = ["--roi", tmp_path / "region.nii.gz", "--roi-margin", "3"]
    code, out, err = _run([*args, *roi, "--out", tmp_path / "r"], capsys)
    assert code == 0 and "inside the region of interest" in out and "grown by 3" in out, err
    # the margin's unit, as segment --roi says it (a newcomer read "grown by 10:")
    assert "grown by 3 units:" in out, out
    inside = json.loads((tmp_path / "r" / "pred_metrics.json").read_text())
    assert whole["Dice"] < 0.5 and inside["Dice"] == 1.0
    code, _, err = _run([*args, "--roi-margin", "2", "--out", tmp_path / "x"], capsys)
    assert code == 2 and "give --roi MASK too" in err


def test_segment_unit_names_the_unit_of_a_stack_that_states_none(files, capsys, tmp_path):
    # a newcomer's two-photon TIFF: "centerline 5895.5 in 115 branches", HD95 in
    # "units", "unit": null; there was no way to say um short of rewriting the file
    from napari_topo.data.io import write_volume

    _, v = files
    write_volume(tmp_path / "stack.npy", v.image.astype(np.float32))
    args = ["segment", tmp_path / "stack.npy", "--spacing", "5", "1", "1", "--tile", "32"]
    code, out, err = _run([*args, "--unit", "um", "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert "um in" in out and " units" not in out
    summary = json.loads((tmp_path / "o" / "stack_summary.json").read_text())
    assert summary["unit"] == "um"
    assert "# unit: um" in (tmp_path / "o" / "stack_graph.swc").read_text()
    # a file that states mm is not relabelled um (a thousandfold error)
    write_volume(tmp_path / "ct.nii.gz", v.image.astype(np.float32), spacing=v.spacing, unit="mm")
    args = ["segment", tmp_path / "ct.nii.gz", "--unit", "um", "--out", tmp_path / "x"]
    code, _, err = _run(args, capsys)
    assert code == 2 and "--unit says um" in err and not (tmp_path / "x").exists()


def test_evaluate_says_a_note_about_the_ground_truth_once(files, capsys, tmp_path):
    # a ground truth that states its voxel size but not its orientation, against a
    # prediction and a region that state both: the same note came twice, worded apart
    from napari_topo.data.io import write_volume
    from napari_topo.geometry import Geometry

    _, v = files
    # stored mirrored in y and x, as a DICOM series in LPS order is
    affine = np.diag([*v.spacing, 1.0]) @ np.diag([1.0, -1.0, -1.0, 1.0])
    affine[:3, 3] = (5.0, 40.0, 30.0)
    placed = Geometry(affine=affine, axes="zyx", unit="mm")
    write_volume(tmp_path / "pred.nii.gz", v.trees.astype(np.uint8), geometry=placed)
    write_volume(tmp_path / "gt.tif", v.trees.astype(np.uint8), spacing=v.spacing)
    region = np.ones(v.shape, np.uint8)
    write_volume(tmp_path / "region.nii.gz", region, geometry=placed)
    args = ["evaluate", tmp_path / "pred.nii.gz", tmp_path / "gt.tif", "--roi"]
    code, out, err = _run([*args, tmp_path / "region.nii.gz", "--out", tmp_path / "o"], capsys)
    notes = [line for line in out.splitlines() if "states its voxel size" in line]
    assert code == 0 and len(notes) == 1, out + err


def test_evaluate_reads_float_files_holding_labels(files, capsys, tmp_path):
    # NIfTI tree labels are often stored as float32: they are labels, not probabilities
    from napari_topo.data.io import write_volume

    d, v = files
    write_volume(tmp_path / "pred.nii.gz", v.trees.astype(np.float32))
    write_volume(tmp_path / "gt.nii.gz", v.trees.astype(np.float32))
    code, out, err = _run(
        ["evaluate", tmp_path / "pred.nii.gz", tmp_path / "gt.nii.gz", "--out", tmp_path / "m"],
        capsys,
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "m" / "pred_metrics.json").read_text())
    assert metrics["Tree accuracy"] == 1.0 and metrics["Dice"] == 1.0
    assert "fractional" not in err
    # a probability map is cut at --threshold, and says so (a newcomer's was scored in
    # silence)
    prob = np.where(v.mask, 0.7, 0.2).astype(np.float32)
    write_volume(tmp_path / "prob.nii.gz", prob)
    argv = ["evaluate", tmp_path / "prob.nii.gz", tmp_path / "gt.nii.gz", "--out", tmp_path / "p"]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert "holds fractional values (a probability): scored as its voxels above 0.5" in err
    assert json.loads((tmp_path / "p" / "prob_metrics.json").read_text())["Dice"] == 1.0
    code, out, err = _run([*argv, "--threshold", "0.8"], capsys)
    assert "above 0.8 (--threshold)" in err
    code, out, err = _run([*argv, "--roi-margin", "2"], capsys)  # refused: one line
    assert code == 2 and len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------ input policy


@pytest.fixture(scope="module")
def policy_files(tmp_path_factory):
    """A CT-like volume in HU (NIfTI with spacing) and a tiny model with an "auto" card.

    The model's head is zeroed with a bias of -10, so its mask is empty and the run
    takes a second: these tests are about what reaches the model, not what it finds.
    """
    import torch
    from test_intensity import ct_phantom

    from napari_topo.data.io import write_volume
    from napari_topo.models import ModelCard, UNet3D, save_model
    from napari_topo.models.registry import AUTO_NORMALIZATION

    d = tmp_path_factory.mktemp("policy")
    torch.manual_seed(0)
    net = UNet3D(widths=(4, 8))
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.fill_(-10.0)
    card = ModelCard(name="tiny-auto", architecture="unet3d", normalization=AUTO_NORMALIZATION)
    save_model(net, card, d)
    img = ct_phantom(shape=(24, 64, 64))[0]
    write_volume(d / "ct.nii.gz", img, spacing=(1.0, 0.35, 0.35))
    return d


def test_segment_prints_the_input_policy(policy_files, capsys, tmp_path):
    d = policy_files
    base = ["segment", d / "ct.nii.gz", "--model", d / "tiny-auto.json", "--device", "cpu"]
    code, out, err = _run([*base, "--out", tmp_path / "a", "--tile", "32"], capsys)
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if ln.startswith("input: ")]
    assert lines == [
        "input: CT in HU (detected) window -100..300 HU, bright vessels, zoom 0.7 -> 0.5 mm voxels"
    ]
    assert out.startswith("input: ")  # said before the model runs, not after
    summary = json.loads((tmp_path / "a" / "ct_summary.json").read_text())
    assert summary["input_policy"]["intensity"]["window"] == [-100.0, 300.0]
    assert summary["input_policy"]["factors"] == pytest.approx([2.0, 0.7, 0.7])
    # every flag at once wins over the detection
    flags = ["--modality", "microscopy", "--window", "0", "1000", "--polarity", "dark"]
    code, out, err = _run(
        [*base, "--out", tmp_path / "b", "--tile", "32", *flags, "--zoom", "0.5"], capsys
    )
    assert code == 0, err
    assert (
        "input: microscopy/other (chosen) window 0..1000 (chosen), dark vessels (chosen, "
        "inverted), zoom 0.5 (chosen)"
    ) in out


def test_segment_reads_a_dicom_folder_and_writes_nifti_in_its_place(policy_files, capsys, tmp_path):
    # a contrast CT comes as a folder of DICOM files: recognised as CT in HU, outputs
    # named after the folder, NIfTI (DICOM is read only) placed where the series lies
    pytest.importorskip("SimpleITK")
    from _dicom import SHAPE, write_series

    from napari_topo.data.io import read_volume

    z, y, x = np.indices(SHAPE)
    hu = np.where((y - 6) ** 2 + (x - 5) ** 2 < 6, 250, -20).astype(np.int16) + (z % 2)
    write_series(tmp_path / "CT.series", hu, stored_offset=1024)
    model = policy_files / "tiny-auto.json"
    args = ["segment", tmp_path / "CT.series", "--model", model, "--device", "cpu"]
    code, out, err = _run([*args, "--out", tmp_path / "o", "--tile", "32"], capsys)
    assert code == 0, err
    (line,) = [ln for ln in out.splitlines() if ln.startswith("input: ")]
    # no air in this crop: the values alone read as microscopy; the Modality tag says CT
    assert line.startswith("input: CT in HU (from the file)"), line
    mask = read_volume(tmp_path / "o" / "CT.series_mask.nii.gz")
    series = read_volume(tmp_path / "CT.series")
    assert mask.data.shape == SHAPE
    np.testing.assert_allclose(mask.geometry.affine, series.geometry.affine, atol=1e-5)


def test_the_input_line_gives_the_files_length_unit(policy_files, capsys, tmp_path):
    # a newcomer read "voxels 5x0.994x0.994" and could not tell um from mm
    from test_intensity import tubes

    from napari_topo.data.io import write_volume
    from napari_topo.geometry import Geometry

    img, _ = tubes((2.0,), shape=(24, 64, 64))
    path = write_volume(
        tmp_path / "stack.tif", img, geometry=Geometry.from_spacing((1.5, 0.5, 0.5), unit="um")
    )
    args = ["segment", path, "--model", policy_files / "tiny-auto.json", "--device", "cpu"]
    code, out, err = _run([*args, "--out", tmp_path / "o", "--tile", "32"], capsys)
    assert code == 0, err
    (line,) = [ln for ln in out.splitlines() if ln.startswith("input: ")]
    assert line.endswith(", voxels 1.5x0.5x0.5 um -> 0.5 um"), line
    # the summary names the unit of its lengths (and of the branch table's)
    assert json.loads((tmp_path / "o" / "stack_summary.json").read_text())["unit"] == "um"


def test_policy_flags_parse_and_bad_values_get_one_line(policy_files, capsys, tmp_path):
    parser = cli.build_parser()
    args = parser.parse_args(["segment", "v.nii", "--out", "o"])
    assert (args.zoom, args.modality, args.polarity, args.window) == ("auto", "auto", "auto", None)
    args = parser.parse_args(
        ["segment", "v.nii", "--out", "o", "--zoom", "0.25", "--window", "-50", "250"]
    )
    assert args.zoom == 0.25 and args.window == [-50.0, 250.0]
    assert parser.parse_args(["segment", "v", "--out", "o", "--zoom", "AUTO"]).zoom == "auto"
    for bad in (["--zoom", "big"], ["--polarity", "grey"], ["--modality", "mri"]):
        with pytest.raises(Exception, match="error: argument"):
            parser.parse_args(["segment", "v", "--out", "o", *bad])
        # from the command line: one line that names the option, exit 2, no usage block
        code, out, err = _run(["segment", "v", "--out", "o", *bad], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith("napari-topo segment: error: argument " + bad[0]), err
    # a misspelt option: the subcommand's help and the nearest option
    code, out, err = _run(["segment", "v", "--out", "o", "--treshold", "0.4"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "napari-topo segment: error: unrecognized arguments: --treshold 0.4" in err
    assert "did you mean --threshold?" in err and "'napari-topo segment --help'" in err
    capsys.readouterr()
    d = policy_files
    base = ["segment", d / "ct.nii.gz", "--model", d / "tiny-auto.json", "--out", tmp_path]
    for flags, needle in [
        (["--window", "300", "-100"], "window low must be below high"),
        (["--window", "nan", "1"], "finite"),
        (["--zoom", "-1"], "--zoom"),
        (["--zoom", "0"], "positive number"),
    ]:
        code, out, err = _run([*base, "--device", "cpu", *flags], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and needle in lines[0], (flags, err)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("suffix", [".npy", ".nii.gz"])  # voxel grids; world placements
def test_a_shape_mismatch_names_each_shape_once_and_what_to_do(tmp_path, capsys, suffix):
    import nibabel as nib

    from napari_topo.data.io import write_volume

    for name, shape in (("p", (20, 30, 40)), ("g", (20, 30, 41))):
        if suffix == ".npy":
            write_volume(tmp_path / f"{name}.npy", np.zeros(shape, np.uint8))
        else:  # a scanner's placement (origin, spacing), compared in world space
            affine = np.diag([0.7, 0.7, 2.0, 1.0])
            affine[:3, 3] = (-120.0, 80.0, 30.0)
            img = nib.Nifti1Image(np.zeros(shape[::-1], np.uint8), affine)
            img.set_qform(affine, 1)
            img.set_sform(affine, 1)
            nib.save(img, tmp_path / f"{name}.nii.gz")
    code, _, err = _run(["evaluate", tmp_path / f"p{suffix}", tmp_path / f"g{suffix}"], capsys)
    line = err.strip()
    assert code == 2 and "\n" not in line
    assert line.count("(20, 30, 40)") == 1 and line.count("(20, 30, 41)") == 1, line
    assert line.count("shape") == 1, line
    assert "crop or resample" in line and "transposed" not in line
    # the same sizes in another order: a transposed array, said so
    write_volume(tmp_path / "t.npy", np.zeros((40, 30, 20), np.uint8))
    code, _, err = _run(["evaluate", tmp_path / "t.npy", tmp_path / "p.npy"], capsys)
    if suffix == ".npy":
        assert code == 2 and "an array saved transposed?" in err, err


def test_help_names_the_default_model_the_code_uses():
    # the parser cannot import the pipeline (torch) to read DEFAULT_MODEL, so its help
    # strings carry the name: they must follow any change of the default
    import inspect

    from napari_topo.inference.pipeline import DEFAULT_MODEL
    from napari_topo.training.finetune import finetune

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for command, dest in (("segment", "model"), ("demo", "model"), ("finetune", "base")):
        action = next(a for a in sub[command]._actions if a.dest == dest)
        assert f"default: {DEFAULT_MODEL}" in action.help or f"default {DEFAULT_MODEL}" in (
            action.help
        ), (command, action.help)
    assert sub["finetune"].get_default("base") == DEFAULT_MODEL
    assert inspect.signature(finetune).parameters["base_model"].default == DEFAULT_MODEL


def test_spacing_in_another_order_than_the_files_is_noted(policy_files, capsys, tmp_path):
    # x y z (NIfTI's and Fiji's order) given for z y x was accepted silently
    d = policy_files
    base = ["segment", d / "ct.nii.gz", "--model", d / "tiny-auto.json", "--device", "cpu"]
    base += ["--tile", "32", "--zoom", "1"]
    code, _, err = _run([*base, "--out", tmp_path / "a", "--spacing", "0.35", "0.35", "1"], capsys)
    assert code == 0, err
    assert "--spacing 0.35 0.35 1 is the file's voxel size 1 0.35 0.35 in another order" in err
    code, _, err = _run([*base, "--out", tmp_path / "b", "--spacing", "1", "0.35", "0.35"], capsys)
    assert code == 0 and "another order" not in err
    code, _, err = _run([*base, "--out", tmp_path / "c", "--spacing", "2", "0.7", "0.7"], capsys)
    assert code == 0 and "another order" not in err  # a voxel size of its own: no note


def test_spacing_whose_coarse_axis_is_not_the_few_slices_is_noted(capsys):
    # a newcomer's --spacing 0.994 0.994 5 on a 14 x 512 x 512 stack (no voxel size in
    # the file) ran in silence; the sheet filter then dropped 81 % of the mask
    from napari_topo.cli import _note_spacing_order

    _note_spacing_order((0.994, 0.994, 5.0), (14, 512, 512))
    err = capsys.readouterr().err
    assert "the coarsest voxel size (5) lies along x, yet the volume has its fewest" in err
    assert "voxels (14) along z" in err
    for given, shape in [
        ((5.0, 0.994, 0.994), (14, 512, 512)),  # the right order
        ((0.994, 0.994, 5.0), (64, 64, 64)),  # no axis of few slices
        ((1.0, 1.0, 1.2), (14, 512, 512)),  # barely anisotropic
    ]:
        _note_spacing_order(given, shape)
        assert capsys.readouterr().err == "", (given, shape)


def test_a_file_without_a_voxel_size_is_noted(policy_files, capsys, tmp_path):
    # a .npy (or a TIFF without resolution tags) states no voxel size: 1 x 1 x 1 was
    # assumed silently, and a newcomer's two-photon stack (5 um z step) lost its Dice
    from napari_topo.data.io import read_volume

    d = policy_files
    np.save(tmp_path / "plain.npy", np.asarray(read_volume(d / "ct.nii.gz").data))
    base = ["--model", d / "tiny-auto.json", "--device", "cpu", "--tile", "32", "--zoom", "1"]
    args = ["segment", tmp_path / "plain.npy", *base]
    code, out, err = _run([*args, "--out", tmp_path / "a"], capsys)
    assert code == 0, err
    assert "note: plain.npy states no voxel size" in out and "--spacing Z Y X" in out
    # said once in full (with the input line), then a short reminder beside the results
    assert out.count("states no voxel size") == 1
    lines = out.splitlines()
    first = next(i for i, ln in enumerate(lines) if "states no voxel size" in ln)
    assert cli._VOXEL_SIZE_REMINDER in lines[first + 1 :]
    code, out, err = _run([*args, "--format", "ome-zarr", "--out", tmp_path / "z"], capsys)
    assert code == 0, err  # the streamed path says it the same way
    assert out.count("states no voxel size") == 1 and cli._VOXEL_SIZE_REMINDER in out
    code, out, err = _run([*args, "--spacing", "2", "1", "1", "--out", tmp_path / "b"], capsys)
    assert code == 0 and "no voxel size" not in out  # given: no note
    code, out, err = _run(["segment", d / "ct.nii.gz", *base, "--out", tmp_path / "c"], capsys)
    assert code == 0 and "no voxel size" not in out  # the file states it
    # an ImageJ TIFF with its pixel size but no z step: z was taken as 1 um silently
    import tifffile

    stack = np.asarray(read_volume(d / "ct.nii.gz").data)
    tif = tmp_path / "stack.tif"
    tifffile.imwrite(tif, stack, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"unit": "um", "axes": "ZYX"})  # fmt: skip
    assert read_volume(tif).assumed == "z"
    code, out, err = _run(["segment", tif, *base, "--out", tmp_path / "d"], capsys)
    assert code == 0, err
    assert "note: stack.tif states a voxel size but no z step; z is taken as 1 um" in out
    # said with the input line too, before the minutes of work, not only with the results
    lines = out.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("input: "))
    assert lines[at + 1].startswith("note: stack.tif states a voxel size but no z step")
    assert out.count("no z step") == 1 and cli._VOXEL_SIZE_REMINDER in lines[at + 2 :]
    code, out, err = _run(["segment", tif, *base, "--spacing", "2", "0.5", "0.5",
                           "--out", tmp_path / "e"], capsys)  # fmt: skip
    assert code == 0 and "no z step" not in out


def test_a_one_slice_volume_is_refused_as_2d(tmp_path, capsys):
    # a (1, 512, 512) .npy ran for 96 s, dropped its mask as a sheet and exited 0
    np.save(tmp_path / "one.npy", np.zeros((1, 40, 40), np.float32))
    code, out, err = _run(["segment", tmp_path / "one.npy", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "(1, 40, 40): one voxel thick" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_the_assumed_axes_note_names_what_was_assumed():
    from napari_topo.geometry import Geometry

    g = Geometry.from_spacing((1.0, 1.0, 0.5), unit="um", known="spacing")
    one = cli._no_voxel_size_note("a.tif", g, None, "z")
    assert "no z step; z is taken as 1 um" in one and "microscope's z step" in one
    two = cli._no_voxel_size_note("a.tif", g, None, "yx")
    assert "no y and x steps; y and x are taken as 1 um" in two
    assert "microscope" not in two
    assert cli._no_voxel_size_note("a.tif", g, (5, 1, 1), "z") is None  # --spacing given
    assert cli._no_voxel_size_note("a.tif", g, None, "") is None


def test_bad_settings_are_refused_before_the_model_runs(files, capsys, tmp_path, monkeypatch):
    # these failed only after the network (minutes on a CT), with Python's names
    import napari_topo.inference.pipeline as pipeline_module

    def no_network(*args, **kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(pipeline_module, "segment", no_network)
    d, _v = files
    args = ["segment", d / "vol.nii.gz", "--device", "cpu"]
    blocker = tmp_path / "ro"
    blocker.mkdir()
    blocker.chmod(0o500)
    unwritable = blocker / "out"
    if os.access(blocker, os.W_OK):  # root ignores the mode: a folder that /proc refuses
        unwritable = Path("/proc/napari-topo-out")
    for bad, needle in [
        (["--out", unwritable], f"--out {unwritable}: cannot write there"),
        (["--out", tmp_path / "x", "--min-size", "-5"], "--min-size must be a number"),
        (["--out", tmp_path / "x", "--batch-size", "0"], "--batch-size must be at least 1"),
    ]:
        code, _, err = _run([*args, *bad], capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (bad, err)
    assert not (tmp_path / "x").exists()  # the probe of --out leaves nothing behind
    blocker.chmod(0o700)
    # a path through a folder still to be made, and back out of it, is still fine
    code, _, err = _run([*args, "--out", tmp_path / "a" / ".." / "b", "--min-size", "-1"], capsys)
    assert code == 2 and "--min-size" in err and not (tmp_path / "a").exists()


def test_segment_roi_keeps_everything_inside_the_region(files, capsys, tmp_path):
    # a newcomer's liver CT: without a region most of the mask lay outside the liver
    from napari_topo.data.io import read_volume, write_volume

    d, v = files
    roi = np.zeros(v.shape, np.uint8)
    roi[:, :, :32] = 1
    write_volume(tmp_path / "roi.nii.gz", roi, spacing=v.spacing)
    args = ["segment", d / "vol.nii.gz", "--device", "cpu", "--roi", tmp_path / "roi.nii.gz"]
    code, out, err = _run([*args, "--out", tmp_path / "a", "--roi-margin", "2"], capsys)
    assert code == 0, err
    assert "only inside the region of interest roi.nii.gz grown by 2" in out
    assert "--roi ORGAN_MASK" not in out
    code, out, err = _run([*args, "--out", tmp_path / "g", "--gt", d / "trees.nii.gz"], capsys)
    assert code == 0 and "metrics against the ground truth (inside the region of" in out
    code, _, err = _run([*args[:-2], "--out", tmp_path / "m", "--roi-margin", "2"], capsys)
    assert code == 2 and "--roi-margin grows the --roi region" in err
    for name in ("probability", "mask", "trees"):
        data = np.asarray(read_volume(tmp_path / "a" / f"vol_{name}.nii.gz").data)
        assert not data[:, :, 35:].any() and data[:, :, :30].any(), name
    summary = json.loads((tmp_path / "a" / "vol_summary.json").read_text())
    assert summary["roi"]["margin"] == 2.0 and summary["roi"]["voxels"] == roi.sum()
    # a region inside the volume, no roots: its vessels reach no face of the volume, so
    # no root was detected, no tree made, and the metrics of the tree labels read Dice 0
    inner = np.zeros(v.shape, np.uint8)
    inner[8:-8, 8:-8, 8:-8] = 1
    write_volume(tmp_path / "inner.nii.gz", inner, spacing=v.spacing)
    code, out, err = _run(
        [
            *args[:-1],
            tmp_path / "inner.nii.gz",
            "--out",
            tmp_path / "i",
            "--gt",
            d / "trees.nii.gz",
        ],
        capsys,
    )
    assert code == 0, err
    scored = json.loads((tmp_path / "i" / "vol_metrics.json").read_text())
    assert scored["Dice"] > 0.7, scored
    assert json.loads((tmp_path / "i" / "vol_summary.json").read_text())["n_trees"] >= 1
    # bad regions: one line, exit 2, nothing written
    write_volume(tmp_path / "small.nii.gz", roi[:-1], spacing=v.spacing)
    write_volume(tmp_path / "empty.nii.gz", 0 * roi, spacing=v.spacing)
    write_volume(tmp_path / "frac.nii.gz", roi * np.float32(0.5), spacing=v.spacing)
    for bad, needle in [
        (["--roi", tmp_path / "small.nii.gz"], "shape"),
        (["--roi", tmp_path / "empty.nii.gz"], "empty"),
        (["--roi", tmp_path / "frac.nii.gz"], "fractional"),
        (["--roi-margin", "-1"], "--roi-margin must be"),
        (["--format", "ome-zarr"], "--roi needs the whole-volume pipeline"),
    ]:
        code, out, err = _run([*args, "--out", tmp_path / "bad", *bad], capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (bad, err)
        assert not (tmp_path / "bad").exists()


def test_vessel_range_is_auto_on_a_ct_given_or_off(policy_files, capsys, tmp_path):
    d = policy_files
    base = ["segment", d / "ct.nii.gz", "--model", d / "tiny-auto.json", "--device", "cpu"]
    base += ["--tile", "32", "--zoom", "1"]

    def summary(name):
        return json.loads((tmp_path / name / "ct_summary.json").read_text())

    code, out, err = _run([*base, "--out", tmp_path / "a"], capsys)  # a CT in HU: auto
    assert code == 0, err
    assert summary("a")["vessel_range"] == [100.0, 300.0]
    assert "--roi ORGAN_MASK [--roi-margin MM] keeps one organ's" in out  # no --roi given
    assert "outside 100..300 HU (--vessel-range" in out
    # the share of the mask it took is said (the tiny model's mask is empty)
    assert "dropped 0 pieces of the mask (0 % of its voxels)" in out
    assert summary("a")["dropped_share"] == 0.0
    # with --roi the counts are said to be the whole scan's (judged before the region)
    from napari_topo.data.io import read_volume

    ct = read_volume(d / "ct.nii.gz")
    write_volume(tmp_path / "roi.nii.gz", np.ones(ct.data.shape, np.uint8), geometry=ct.geometry)
    code, out, err = _run(
        [*base, "--out", tmp_path / "r", "--roi", tmp_path / "roi.nii.gz"], capsys
    )
    assert code == 0 and "pieces of the whole scan's mask" in out, err
    code, out, err = _run([*base, "--out", tmp_path / "b", "--vessel-range", "50", "400"], capsys)
    assert code == 0 and summary("b")["vessel_range"] == [50.0, 400.0]
    code, out, err = _run([*base, "--out", tmp_path / "c", "--vessel-range", "off"], capsys)
    assert code == 0 and summary("c")["vessel_range"] is None and "dropped" not in out
    for bad in (["300", "100"], ["x"], ["1", "2", "3"]):
        code, _, err = _run([*base, "--out", tmp_path / "bad", "--vessel-range", *bad], capsys)
        assert code == 2 and "--vessel-range takes auto, off or LOW HIGH" in err, bad
        assert not (tmp_path / "bad").exists()


def test_sheet_like_pieces_are_dropped_by_default_and_kept_on_request(capsys, tmp_path):
    # a TOF-MRA-like head: the default model marks the bright scalp (a sheet) whole
    from napari_topo.data.phantoms import tof_mra_head

    p = tof_mra_head(seed=0)
    write_volume(tmp_path / "tof.nii.gz", p["image"], spacing=p["spacing"])
    base = ["segment", tmp_path / "tof.nii.gz", "--device", "cpu"]

    def summary(name):
        return json.loads((tmp_path / name / "tof_summary.json").read_text())

    code, out, err = _run([*base, "--out", tmp_path / "a"], capsys)
    assert code == 0, err
    assert "dropped 1 sheet-like piece (" in out and "--sheets keep keeps it" in out
    assert "was taken as 1" not in out  # the file states its voxel size
    # a file stating none: the drop line names the assumed voxel size (a newcomer's TIFF
    # without a z step lost 78 % of its mask as "sheets")
    np.save(tmp_path / "tof.npy", p["image"])
    code, out_npy, err = _run(
        ["segment", tmp_path / "tof.npy", "--device", "cpu", "--out", tmp_path / "n"], capsys
    )
    assert code == 0 and "sheet-like piece" in out_npy, err
    assert "note: the voxel size was taken as 1 x 1 x 1; if the z step is larger" in out_npy
    assert "flattened along z and can be dropped as sheets" in out_npy
    # a TIFF stating its pixel size but no z step: that step, with its unit
    import tifffile

    tifffile.imwrite(tmp_path / "tof.tif", p["image"].astype(np.float32), imagej=True,
                     resolution=(2.5, 2.5), metadata={"unit": "um", "axes": "ZYX"})  # fmt: skip
    code, out_tif, err = _run(
        ["segment", tmp_path / "tof.tif", "--device", "cpu", "--out", tmp_path / "t"], capsys
    )
    assert code == 0 and "sheet-like piece" in out_tif, err
    assert "note: the z step was taken as 1 um; if it is larger" in out_tif
    assert "give --spacing Z Y X" in out_npy
    s = summary("a")
    assert s["sheets"] == "drop" and s["sheets_dropped"] >= 1 and s["sheets_share"] > 0.5
    code, out, err = _run([*base, "--out", tmp_path / "b", "--sheets", "keep"], capsys)
    assert code == 0 and "sheet-like" not in out
    assert summary("b")["sheets"] == "keep" and summary("b")["sheets_dropped"] == 0
    code, _, err = _run([*base, "--out", tmp_path / "c", "--sheets", "flat"], capsys)
    assert code == 2 and "--sheets" in err
    code, _, err = _run(
        [*base, "--out", tmp_path / "d", "--sheets", "drop", "--format", "ome-zarr"], capsys
    )
    assert code == 2 and "--sheets drop needs the whole-volume pipeline" in err
    assert not (tmp_path / "d").exists()


def test_a_rerun_into_the_same_folder_names_what_it_left(files, capsys, tmp_path):
    # a newcomer re-ran without --gt: the first run's metrics stayed beside the new masks
    d, _v = files
    args = ["segment", d / "vol.nii.gz", "--device", "cpu", "--out", tmp_path / "o"]
    code, out, err = _run([*args, "--gt", d / "trees.nii.gz"], capsys)
    assert code == 0 and "did not write" not in out, err
    assert (tmp_path / "o" / "vol_metrics.json").exists()
    (tmp_path / "o" / "vol_liver.nii.gz").write_bytes(b"a user's file, not ours")
    code, out, err = _run([*args, "--threshold", "0.3"], capsys)
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if "did not write" in ln)
    assert "vol_metrics.json" in line and "vol_metrics.csv" in line and "vol_mask" not in line
    assert "vol_liver" not in line and (tmp_path / "o" / "vol_liver.nii.gz").exists()


def test_segment_skips_tiles_of_noise_alone_and_says_so(capsys, tmp_path):
    from napari_topo.data.phantoms import sparse_tubes

    big, _ = sparse_tubes()
    write_volume(tmp_path / "sparse.tif", big)
    base = ["segment", tmp_path / "sparse.tif", "--spacing", "1", "1", "1", "--device", "cpu"]
    code, out, err = _run([*base, "--out", tmp_path / "a"], capsys)
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("sparse.tif: "))
    assert "16 of 25 tiles empty, not run" in line
    summary = json.loads((tmp_path / "a" / "sparse_summary.json").read_text())
    assert summary["compute"]["empty tiles"] == "16 of 25 tiles empty, not run"
    assert summary["n_trees"] <= 8
    code, out, err = _run([*base, "--out", tmp_path / "b", "--empty-tiles", "run"], capsys)
    assert code == 0, err
    assert "tiles empty" not in out
    compute = json.loads((tmp_path / "b" / "sparse_summary.json").read_text())["compute"]
    assert compute["empty tiles"] == "not tested: every tile run"
    code, out, err = _run([*base, "--out", tmp_path / "c", "--empty-tiles", "never"], capsys)
    assert code == 2 and "--empty-tiles" in err


def test_an_empty_volume_is_refused_as_empty(tmp_path, capsys):
    # bad-input probe: a (0, 64, 64) .npy was called "one voxel thick ... a 2D image"
    for shape in ((0, 64, 64), (64, 0, 64), (0, 0, 0)):
        np.save(tmp_path / "none.npy", np.zeros(shape, np.float32))
        code, out, err = _run(["segment", tmp_path / "none.npy", "--out", tmp_path / "o"], capsys)
        assert code == 2, err
        assert err.strip() == (
            f"napari-topo: error: the input none.npy is empty: its shape {shape} holds no voxels"
        )
        assert out == "" and not (tmp_path / "o").exists()


def test_a_run_that_finds_no_vessels_writes_graph_files_the_reader_opens(
    policy_files, capsys, tmp_path
):
    # bad-input probe: 0 trees wrote a header-only _graph.csv and .swc that the plugin's
    # reader refused ("the table has no rows", "no SWC points"); the masks (all 0) open
    pytest.importorskip("napari")
    from napari_topo._plugin import get_reader

    d = policy_files
    argv = ["segment", d / "ct.nii.gz", "--model", d / "tiny-auto.json", "--device", "cpu"]
    code, out, err = _run([*argv, "--tile", "32", "--out", tmp_path], capsys)
    assert code == 0 and "0 trees" in out, err
    for name in ("ct_graph.csv", "ct_graph.swc", "ct_mask.nii.gz", "ct_trees.nii.gz"):
        reader = get_reader(str(tmp_path / name))
        assert reader is not None, name
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            layers = reader(str(tmp_path / name))
        assert layers, name
    # and the run says why the graph files are empty
    line = next(ln for ln in out.splitlines() if "no vessels found" in ln)
    assert line.startswith("note: no vessels found") and "ct_graph.csv" in line


def _oblique_nifti(path, image):
    """``image`` (z, y, x) as a NIfTI whose axes are rotated 20 degrees about z."""
    import nibabel as nib

    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    aff = np.array([[0.35 * c, -0.35 * s, 0, 10], [0.35 * s, 0.35 * c, 0, -5], [0, 0, 1.0, 3],
                    [0, 0, 0, 1]])  # fmt: skip
    nib.save(nib.Nifti1Image(np.asarray(image, np.float32).transpose(2, 1, 0), aff), path)


def test_format_npy_says_which_geometry_it_does_not_keep(policy_files, capsys, tmp_path):
    # bad-input probe: --format npy on an oblique NIfTI dropped its placement silently
    from napari_topo.data.io import read_volume

    d = policy_files
    image = read_volume(d / "ct.nii.gz").data
    _oblique_nifti(tmp_path / "obl.nii.gz", image)
    base = ["--model", d / "tiny-auto.json", "--device", "cpu", "--tile", "32", "--zoom", "1"]
    argv = ["segment", tmp_path / "obl.nii.gz", *base, "--format", "npy"]
    code, out, err = _run([*argv, "--out", tmp_path / "a"], capsys)
    assert code == 0, err
    notes = [ln for ln in err.splitlines() if "--format npy" in ln]
    assert len(notes) == 1, err
    note = notes[0]
    assert note.startswith("napari-topo: note: --format npy holds the arrays only")
    for word in ("voxel size", "origin", "oblique orientation", "obl_summary.json", "nii.gz"):
        assert word in note, (word, note)
    # said before the network runs, not after
    assert err.index(note) < err.index("segmenting obl.nii.gz")
    # the summary keeps what the .npy files cannot
    summary = json.loads((tmp_path / "a" / "obl_summary.json").read_text())
    assert summary["volumes"] == {"format": "npy", "hold_geometry": False}
    aff = np.asarray(summary["geometry"]["affine"])
    assert aff[0, 3] != 0 and not np.allclose(aff[1:3, 1:3], np.diag(np.diag(aff[1:3, 1:3])))
    assert (tmp_path / "a" / "obl_mask.npy").exists()
    # the same file as NIfTI keeps it: no note
    code, out, err = _run(["segment", tmp_path / "obl.nii.gz", *base, "--out", tmp_path / "b"],
                          capsys)  # fmt: skip
    assert code == 0 and "--format npy" not in err
    assert json.loads((tmp_path / "b" / "obl_summary.json").read_text())["volumes"] == {
        "format": "nii.gz",
        "hold_geometry": True,
    }
    # a .npy that states nothing loses nothing: no note
    np.save(tmp_path / "plain.npy", np.asarray(image))
    code, out, err = _run(["segment", tmp_path / "plain.npy", *base, "--format", "npy",
                           "--out", tmp_path / "c"], capsys)  # fmt: skip
    assert code == 0 and "--format npy" not in err


def test_an_assumed_spacing_is_recorded_as_assumed_in_the_outputs(policy_files, capsys, tmp_path):
    # bad-input probe: a z step taken as 1 (said on the terminal) was written into the
    # summary and the headers as if the file had stated it
    import networkx as nx
    import nibabel as nib
    import tifffile
    import zarr

    from napari_topo.data.io import read_volume

    d = policy_files
    stack = np.asarray(read_volume(d / "ct.nii.gz").data)
    tif = tmp_path / "stack.tif"
    tifffile.imwrite(tif, stack, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"unit": "um", "axes": "ZYX"})  # fmt: skip
    base = ["--model", d / "tiny-auto.json", "--device", "cpu", "--tile", "32", "--zoom", "1"]

    def run(src, out, *more):
        code, stdout, err = _run(["segment", src, *base, "--out", tmp_path / out, *more], capsys)
        assert code == 0, err
        name = Path(src).name.split(".")[0]
        return json.loads((tmp_path / out / f"{name}_summary.json").read_text())

    s = run(tif, "a")
    assert s["spacing_assumed"] == ["z"]
    assert s["spacing_source"] == {"z": "assumed", "y": "file", "x": "file"}
    mask = read_volume(tmp_path / "a" / "stack_mask.tif")  # the output says so too
    assert mask.assumed == "z"
    with tifffile.TiffFile(tmp_path / "a" / "stack_mask.tif") as written:
        assert "spacing" not in written.imagej_metadata
    swc = (tmp_path / "a" / "stack_graph.swc").read_text()
    assert "# spacing assumed: z (not stated by the input; taken as 1)" in swc
    graph = nx.read_graphml(tmp_path / "a" / "stack_graph.graphml", node_type=int)
    assert graph.graph["spacing_assumed"] == "z"
    run(tif, "n", "--format", "nii.gz")
    hdr = nib.load(tmp_path / "n" / "stack_trees.nii.gz").header
    assert "z spacing assumed 1" in hdr["descrip"].tobytes().decode()
    assert read_volume(tmp_path / "n" / "stack_trees.nii.gz").assumed == "z"
    # --spacing given: stated by the user, nothing assumed
    s = run(tif, "b", "--spacing", "5", "0.5", "0.5")
    assert s["spacing_assumed"] == []
    assert s["spacing_source"] == {"z": "--spacing", "y": "--spacing", "x": "--spacing"}
    assert "spacing assumed" not in (tmp_path / "b" / "stack_graph.swc").read_text()
    graph = nx.read_graphml(tmp_path / "b" / "stack_graph.graphml", node_type=int)
    assert "spacing_assumed" not in graph.graph
    # a file that states nothing (.npy): every axis assumed, also when streamed
    np.save(tmp_path / "plain.npy", stack)
    s = run(tmp_path / "plain.npy", "c", "--format", "nii.gz")
    assert s["spacing_assumed"] == ["z", "y", "x"]
    assert read_volume(tmp_path / "c" / "plain_mask.nii.gz").spacing is None
    s = run(tmp_path / "plain.npy", "z", "--format", "ome-zarr")
    assert s["spacing_assumed"] == ["z", "y", "x"]
    attrs = zarr.open_group(str(tmp_path / "z" / "plain_mask.ome.zarr"), mode="r").attrs
    assert attrs["napari_topo_spacing_assumed"] == "zyx"
    # a file that states its voxel size: nothing assumed, nothing said
    s = run(d / "ct.nii.gz", "e")
    assert s["spacing_assumed"] == [] and set(s["spacing_source"].values()) == {"file"}
    descrip = nib.load(tmp_path / "e" / "ct_mask.nii.gz").header["descrip"].tobytes()
    assert b"assumed" not in descrip


def test_progress_says_the_share_done_not_a_tile_count():
    # several zooms report thousandths of the run: "0/1000 tiles" for a 166-tile stack
    import io

    from napari_topo.cli import _progress_printer

    stream = io.StringIO()
    progress = _progress_printer("segmenting stack.tif", stream)
    for done in (0, 101, 200, 999, 1000):
        progress(done, 1000)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "segmenting stack.tif: 0 %",
        "segmenting stack.tif: 10 %",
        "segmenting stack.tif: 20 %",
        "segmenting stack.tif: 99 %",
        "segmenting stack.tif: 100 %",
    ]
    assert "tiles" not in stream.getvalue()
