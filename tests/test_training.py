"""Training: a tiny model learns on tiny synthetic volumes, checkpoints resume, configs load."""

from __future__ import annotations

import pytest

from napari_topo.training.train import TrainConfig, build_loss, load_config, train

TINY_DATA = {"volume_shape": [32, 32, 32], "n_trees": [2, 2], "pool_size": 2, "refresh_every": 1000}
TINY_VAL = {"every": 1000, "n_volumes": 1, "volume_shape": [32, 32, 32], "threshold": 0.5}


def tiny(name="tiny", loss=None, arch="unet3d", **kw) -> TrainConfig:
    return TrainConfig(
        name=name,
        architecture=arch,
        arch_kwargs={"widths": [4, 8]},
        loss=loss or {"name": "dice"},
        steps=kw.pop("steps", 40),
        batch_size=2,
        patch=(24, 24, 24),
        lr=5e-3,
        lr_final=1e-3,
        data=dict(TINY_DATA),
        validation=dict(TINY_VAL),
        checkpoint_every=10,
        log_every=5,
        **kw,
    )


def test_tiny_unet_loss_falls_and_card_is_complete(tmp_path):
    logs: list[str] = []
    card = train(tiny(), tmp_path, log=logs.append)
    curve = card.training["loss_curve"]
    assert curve[-1][1] < curve[0][1] - 0.05, curve
    assert (tmp_path / "tiny.safetensors").is_file() and (tmp_path / "tiny.json").is_file()
    assert len(card.sha256) == 64
    assert set(card.metrics["validation"]) >= {"Dice", "clDice", "Betti-0 error", "CCE 3D"}
    assert card.training["command"] and card.training["data_pipeline"]
    assert any("validation" in line for line in logs)


def test_resume_continues_from_the_checkpoint(tmp_path):
    train(tiny(steps=10), tmp_path, log=lambda s: None)
    logs: list[str] = []
    card = train(tiny(steps=20), tmp_path, log=logs.append)
    assert any("resumed tiny from step 10" in line for line in logs)
    assert card.training["loss_curve"][0][0] == 5  # the curve of the first run carries over


def test_topnet_and_pretrain_phases_run(tmp_path):
    cfg = tiny(
        "tinytop",
        loss={"name": "topnet", "n_anchors": 16, "partners": 4, "radius": 8.0},
        arch="topnet",
        steps=6,
    )
    card = train(cfg, tmp_path / "top", log=lambda s: None)
    assert card.task == "topnet" and set(card.outputs) == {"vessel", "centerness", "embedding"}
    cfg = tiny(
        "tinypp",
        loss={"name": "projpool", "kernels": [4, 8]},
        steps=6,
        pretrain={"steps": 3, "loss": {"name": "dice"}},
    )
    assert train(cfg, tmp_path / "pp", log=lambda s: None).name == "tinypp"


def test_shipped_configs_load_and_bad_configs_are_clear(tmp_path):
    for name in ("unet-dice", "unet-cldice", "unet-projpool", "topnet"):
        cfg = load_config(name)
        assert cfg.name == name and cfg.steps > 0
        build_loss(cfg.loss if name != "topnet" else {"name": "topnet"})
        # stages, each starting from the one before, as the README runs them: four for
        # the U-Nets (the same for the three), three for TopNet
        stages = [f"{name}-base", f"{name}-stage2"]
        stages += [f"{name}-stage3"] if name != "topnet" else []
        assert load_config(stages[0]).init_from is None
        for before, stage in zip(stages, [*stages[1:], name], strict=True):
            assert load_config(stage).init_from == f"runs/{before}/{before}.json"
        if name != "topnet":
            assert (cfg.patch, cfg.data, cfg.steps) == (
                load_config("unet-dice").patch,
                load_config("unet-dice").data,
                load_config("unet-dice").steps,
            )
    with pytest.raises(FileNotFoundError, match="shipped configs"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstepz: 3\n")
    with pytest.raises(ValueError, match="unknown config keys"):
        load_config(bad)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss({"name": "hinge"})


def test_cross_entropy_keeps_a_gradient_on_a_patch_without_vessels():
    """Soft Dice per patch all but stops pushing a vessel-free patch's false positives
    down once there are a few hundred of them (its gradient is 1 / (sum(p) + 1)**2);
    ``bce`` adds a term that does not."""
    import torch

    target = torch.zeros(1, 1, 16, 16, 16)
    logits = torch.full((1, 1, 16, 16, 16), 2.0, requires_grad=True)  # p ~ 0.88 everywhere
    # projected pooling's own terms keep some gradient there; the Dice ones almost none
    for name, gain in (("dice", 1000), ("cldice", 1000), ("projpool", 5)):
        grads = []
        for spec in ({"name": name}, {"name": name, "bce": 1.0}):
            logits.grad = None
            build_loss(spec)(logits, target).backward()
            grads.append(float(logits.grad.abs().mean()))
        assert grads[1] > gain * grads[0], (name, grads)
    # the value is the base loss plus w * BCE, from logits or from probabilities alike
    from torch.nn import functional as F

    x = torch.linspace(-6, 6, 16**3).reshape(1, 1, 16, 16, 16)
    t = (torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    base = float(build_loss({"name": "dice"})(x, t))
    ce = float(F.binary_cross_entropy_with_logits(x, t))
    assert float(build_loss({"name": "dice", "bce": 0.5})(x, t)) == pytest.approx(base + 0.5 * ce)
    prob = build_loss({"name": "dice", "bce": 0.5}, sigmoid=False)(torch.sigmoid(x), t)
    assert float(prob) == pytest.approx(base + 0.5 * ce, rel=1e-4)
    # the term is reduced as the base loss reduces its own: per sample with "none"
    xb, tb = torch.cat([x, -x]), torch.cat([t, t])
    per = build_loss({"name": "dice", "bce": 0.5, "reduction": "none"})(xb, tb)
    ces = F.binary_cross_entropy_with_logits(xb, tb, reduction="none").flatten(1).mean(1)
    bases = build_loss({"name": "dice", "reduction": "none"})(xb, tb)
    assert per.shape == bases.shape and per.shape[0] == 2
    torch.testing.assert_close(per, bases + 0.5 * ces.reshape(bases.shape))
    total = build_loss({"name": "dice", "bce": 0.5, "reduction": "sum"})(xb, tb)
    assert float(total) == pytest.approx(float(per.sum()), rel=1e-5)
    # and over the channels it scores: without the background channel, on the others
    x3, t3 = torch.cat([xb, -xb, xb], 1), torch.cat([tb, tb, 1 - tb], 1)
    spec = {"name": "dice", "reduction": "none", "include_background": False}
    per3 = build_loss({**spec, "bce": 0.5})(x3, t3)
    ce3 = F.binary_cross_entropy_with_logits(x3, t3, reduction="none").flatten(2).mean(-1)
    torch.testing.assert_close(per3, build_loss(spec)(x3, t3) + 0.5 * ce3[:, 1:])
    # a vessel voxel the model is sure is background still gets pushed up
    p = torch.full((1, 1, 8, 8, 8), 1e-8, requires_grad=True)
    g = torch.zeros(1, 1, 8, 8, 8)
    g[0, 0, 4, 4, 4] = 1
    build_loss({"name": "dice", "bce": 1.0}, sigmoid=False)(p, g).backward()
    assert float(p.grad[0, 0, 4, 4, 4]) < -1.0
    for bad in (-1, float("nan"), "x"):
        with pytest.raises(ValueError, match="bce"):
            build_loss({"name": "dice", "bce": bad})
    with pytest.raises(ValueError, match="bce"):
        build_loss({"name": "topnet", "bce": 1.0})
    # fine-tuning adds its own cross-entropy over the annotated voxels: a card's is left out
    from napari_topo.topology.losses import SoftDiceLoss
    from napari_topo.training.finetune import _build_loss

    assert isinstance(_build_loss({"name": "dice", "bce": 1.0}), SoftDiceLoss)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        _build_loss({"name": "hinge"})


def test_a_wider_unet_starts_from_a_trained_narrow_one(tmp_path):
    """``init_from`` with 2x the widths: Net2WiderNet keeps what the narrow model learnt."""
    import numpy as np
    import torch

    from napari_topo.models.registry import load_model
    from napari_topo.models.unet import widen_unet

    narrow = train(tiny("narrow", steps=30), tmp_path / "n", log=lambda s: None)
    model, _ = load_model(tmp_path / "n" / "narrow.json")
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 1, 24, 24, 24)).astype("f4"))
    with torch.no_grad():
        before = model(x)
        exact = widen_unet(model, [8, 16], noise=0.0).eval()
        assert exact.widths == (8, 16)
        assert torch.allclose(exact(x), before, atol=1e-4)
        noisy = widen_unet(model, [8, 16]).eval()
        assert not torch.allclose(noisy(x), before, atol=1e-4)  # copies must be able to part
        assert torch.allclose(noisy(x), before, atol=0.2 * float(before.abs().max()))
    with pytest.raises(ValueError, match="integer multiple"):
        widen_unet(model, [6, 16])
    with pytest.raises(ValueError, match="levels"):
        widen_unet(model, [8, 16, 32])

    logs: list[str] = []
    cfg = tiny("wide", steps=2, init_from=str(tmp_path / "n" / "narrow.json"))
    cfg.arch_kwargs = {"widths": [8, 16]}
    card = train(cfg, tmp_path / "w", log=logs.append)
    assert card.arch_kwargs["widths"] == [8, 16] and narrow.name == "narrow"
    assert any("initialised from" in line for line in logs)
    cfg = tiny("odd", steps=2, init_from=str(tmp_path / "n" / "narrow.json"))
    cfg.arch_kwargs = {"widths": [6, 12]}
    with pytest.raises(ValueError, match="integer multiple"):
        train(cfg, tmp_path / "o", log=lambda s: None)
