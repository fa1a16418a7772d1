"""Train any registered model with any loss of ``topology.losses`` from one config file.

``napari-topo train --config unet-cldice`` (a config shipped in ``training/configs``) or
``--config path/to/file.yaml``. A run is reproducible from its config and seed: the
synthetic training volumes, the crops, the augmentation and the weight initialisation all
derive from ``seed``. Training data are generated on the fly: a pool of synthetic volumes
of which one is replaced every ``data.refresh_every`` steps, so a run sees many more
vessel trees than the pool holds. A checkpoint (``checkpoint.pt``: model, optimiser and
random states, loaded with ``torch.load(weights_only=True)``, which never runs pickled
code) is written every ``checkpoint_every`` steps and on Ctrl-C; running the same
command again resumes from it.

At the end the model is validated on held-out synthetic volumes (seeds never used for
training) and saved with :func:`napari_topo.models.registry.save_model` as
``<name>.safetensors`` plus its JSON model card.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import subprocess
import time
import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["TrainConfig", "load_config", "train", "validate"]

#: Bumped whenever the synthetic generator or the training data pipeline changes output.
#: 2: realistic appearances; 3: CT lumen <= 300 HU, ribs; 5: optional faint branches;
#: 6: optional soft-tissue sheets and wide ribs in CT; 7: optional original synthetic
#: volumes among realistic ones (``data.classic_prob``, given to the model as inference
#: maps them; at commit 1b5b5f6 the option kept the run's radii and growth) and optional
#: vessel-free crops (``data.empty_crop_prob``). Existing configs' volumes are unchanged.
DATA_PIPELINE_VERSION = "synthetic-7"
#: Held-out validation volumes use seeds from here on; training volumes use lower seeds.
VALIDATION_BASE_SEED = 900_000
#: Random crops tried for a vessel-free one (``data.empty_crop_prob``).
EMPTY_CROP_TRIES = 16


def _initialise(model, init_model, *, seed: int):
    """``model`` with ``init_model``'s weights (``init_from``).

    A U-Net whose widths are one integer multiple of ``init_model``'s starts as a widened
    copy of it (:func:`~napari_topo.models.unet.widen_unet`, Net2WiderNet): a larger
    network trained on from a shipped one instead of from scratch. Any other mismatch
    raises ``load_state_dict``'s error.
    """
    from napari_topo.models.unet import UNet3D, widen_unet

    if (
        isinstance(model, UNet3D)
        and isinstance(init_model, UNet3D)
        and tuple(model.widths) != tuple(init_model.widths)
    ):
        wide = widen_unet(init_model, model.widths, seed=seed)
        if wide.arch_kwargs != model.arch_kwargs:
            raise ValueError(
                f"init_from has {init_model.arch_kwargs}; this run's architecture "
                f"{model.arch_kwargs} differs by more than its widths"
            )
        return wide
    model.load_state_dict(init_model.state_dict())
    return model


@dataclasses.dataclass
class TrainConfig:
    """A training run. Every field has a default; a YAML config overrides some of them."""

    name: str = "unet-dice"
    architecture: str = "unet3d"
    arch_kwargs: dict = dataclasses.field(default_factory=dict)
    loss: dict = dataclasses.field(default_factory=lambda: {"name": "dice"})
    seed: int = 0
    steps: int = 1000
    batch_size: int = 2
    patch: tuple = (48, 48, 48)
    lr: float = 1e-3
    lr_final: float = 1e-5
    weight_decay: float = 0.0
    init_from: str | None = None
    #: optional first phase with another loss, e.g. ``{"steps": 600, "loss": {"name": "dice"}}``
    #: (projected pooling is fine-tuned from a Dice-trained model, as in Fu et al.)
    pretrain: dict | None = None
    data: dict = dataclasses.field(
        default_factory=lambda: {
            "volume_shape": [80, 80, 80],
            "n_trees": [2, 3],
            "pool_size": 8,
            "refresh_every": 4,
        }
    )
    validation: dict = dataclasses.field(
        default_factory=lambda: {
            "every": 250,
            "n_volumes": 4,
            "volume_shape": [64, 64, 64],
            "threshold": 0.5,
        }
    )
    checkpoint_every: int = 100
    log_every: int = 25
    threads: int = 0
    summary: str = ""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["patch"] = list(self.patch)
        return d


def _packaged_configs() -> dict[str, Path]:
    folder = resources.files("napari_topo.training").joinpath("configs")
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def load_config(path_or_name: str | Path, **overrides) -> TrainConfig:
    """Read a YAML config (a path, or the name of a config shipped with the package)."""
    import yaml

    path = Path(path_or_name)
    if not path.exists():
        shipped = _packaged_configs()
        if str(path_or_name) not in shipped:
            raise FileNotFoundError(
                f"no config file {str(path_or_name)!r}; "
                f"shipped configs: {', '.join(sorted(shipped))}"
            )
        path = shipped[str(path_or_name)]
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a config must be a mapping, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{path}: unknown config keys {sorted(unknown)}; known: {sorted(known)}")
    base = TrainConfig()
    for key in ("data", "validation"):  # merge nested dicts over the defaults
        if key in raw:
            raw[key] = {**getattr(base, key), **raw[key]}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    cfg = TrainConfig(**{**dataclasses.asdict(base), **raw})
    cfg.patch = tuple(int(p) for p in cfg.patch)
    if len(cfg.patch) != 3 or min(cfg.patch) < 8:
        raise ValueError(f"patch must be three sizes >= 8, got {cfg.patch}")
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {cfg.steps}, {cfg.batch_size}")
    return cfg


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------


def _volume_kwargs(cfg: TrainConfig, seed: int | None = None) -> dict:
    """Generator options of the data config for one volume (``seed`` for the radius draw).

    ``data.appearance``, ``data.growth``, ``data.faint_branch_prob``,
    ``data.tissue_distractor_prob`` and ``data.large_bone_prob`` are passed to
    :func:`~napari_topo.data.synthetic.make_vessel_volume`; ``data.radius_max`` is either
    a number or a ``[low, high]`` range from which each volume's largest radius is drawn
    log-uniformly (from the volume's own seed, so a volume does not depend on the order
    in which it is made). ``data.classic_prob`` makes that share of the volumes the
    original synthetic data instead (drawn from the volume's seed too): the generator's
    defaults, i.e. the classic look, Murray growth, radii 1-6, no faint branches or
    distractors, as the synthetic test set of ``evaluate-models`` (only the volume shape
    and tree count come from the config; :func:`make_training_volume` says how they
    reach the model).
    """
    d = cfg.data
    classic_prob = float(d.get("classic_prob", 0.0))
    if not 0.0 <= classic_prob <= 1.0:
        raise ValueError(f"data.classic_prob must be in [0, 1], got {classic_prob}")
    if classic_prob > 0 and np.random.default_rng([int(seed or 0), 11]).random() < classic_prob:
        return {"appearance": "classic"}
    out = {}
    if "appearance" in d:
        out["appearance"] = d["appearance"]
    if "growth" in d:
        out["growth"] = d["growth"]
    if "faint_branch_prob" in d:
        out["faint_branch_prob"] = float(d["faint_branch_prob"])
    if "tissue_distractor_prob" in d:
        out["tissue_distractor_prob"] = float(d["tissue_distractor_prob"])
    if "large_bone_prob" in d:
        out["large_bone_prob"] = float(d["large_bone_prob"])
    if "radius_max" in d:
        r = d["radius_max"]
        if isinstance(r, (list, tuple)):
            draw = np.random.default_rng([int(seed or 0), 7]).uniform
            r = float(np.exp(draw(np.log(float(r[0])), np.log(float(r[1])))))
        out["radius_range"] = (float(d.get("radius_min", 1.0)), float(r))
    return out


def make_training_volume(cfg: TrainConfig, shape, n_trees: int, seed: int):
    """One training or validation volume of ``cfg``'s data stream, as the model sees it.

    Realistic appearances are rendered on the scale inference gives the model. A volume
    drawn in the classic look (``data.classic_prob``, in a run whose own appearance is a
    realistic one) is mapped by the input policy the trained model's card will carry
    (:func:`napari_topo.inference.intensity.plan_intensity` with every choice on auto):
    percentile-scaled, dark vessels inverted where the polarity heuristic says so, as
    ``predict`` treats such a volume. Labels are unchanged.

    Parameters
    ----------
    cfg : TrainConfig
        Its ``data`` options (:func:`_volume_kwargs`).
    shape : sequence of 3 int
        Volume shape ``(Z, Y, X)`` in voxels.
    n_trees : int
        Number of trees, 1 to 6.
    seed : int
        The volume's seed (the generator's and the option draws').

    Returns
    -------
    SyntheticVessels
        ``image`` float32 (z, y, x); ``mask`` bool and ``trees`` int32 as the generator
        makes them.

    Raises
    ------
    ValueError
        ``data.classic_prob`` outside [0, 1], or a generator option out of range
        (:func:`~napari_topo.data.synthetic.make_vessel_volume`).
    """
    from ..data.synthetic import make_vessel_volume

    kwargs = _volume_kwargs(cfg, seed)
    vol = make_vessel_volume(shape=shape, n_trees=n_trees, seed=seed, **kwargs)
    if kwargs.get("appearance") == "classic" and cfg.data.get("appearance", "classic") != (
        "classic"
    ):
        from ..inference.intensity import plan_intensity

        plan = plan_intensity(vol.image, _card_normalization(cfg))
        vol = dataclasses.replace(vol, image=np.asarray(plan(vol.image), dtype=np.float32))
    return vol


def _card_normalization(cfg: TrainConfig) -> dict:
    """The input policy the trained model expects (applied by ``inference``).

    Models trained on the classic look take percentile-scaled input of either polarity.
    Models trained on the realistic appearances (``data/appearance.py``) expect bright
    vessels: a CT in HU windowed with :data:`~napari_topo.data.appearance.CT_WINDOW` and
    clipped, anything else percentile-scaled, dark-vessel images inverted.
    """
    if cfg.data.get("appearance", "classic") == "classic":
        return {"method": "percentile", "low": 0.5, "high": 99.5}
    from ..data.appearance import CT_WINDOW

    return {
        "method": "auto",
        "ct_window": list(CT_WINDOW),
        "low": 0.5,
        "high": 99.5,
        "polarity": "bright",
    }


def _radius_range_voxels(cfg: TrainConfig) -> list[float]:
    """The vessel radii (voxels) the run's data hold, for the card (the automatic zoom)."""
    r = cfg.data.get("radius_max", 6.0)
    hi = max(r) if isinstance(r, (list, tuple)) else r
    lo = float(cfg.data.get("radius_min", 1.0))
    if float(cfg.data.get("classic_prob", 0.0)) > 0:  # the generator's defaults, 1-6
        lo, hi = min(lo, 1.0), max(float(hi), 6.0)
    return [lo, float(hi)]


class VolumePool:
    """Synthetic training volumes, refreshed one at a time, with seeded random crops."""

    def __init__(
        self, cfg: TrainConfig, rng: np.random.Generator, first_seed: int, topnet: bool = False
    ):
        self.cfg, self.rng, self.topnet = cfg, rng, topnet
        self.shape = tuple(int(s) for s in cfg.data["volume_shape"])
        if any(s < p for s, p in zip(self.shape, cfg.patch, strict=True)):
            raise ValueError(f"data.volume_shape {self.shape} is smaller than patch {cfg.patch}")
        empty = float(cfg.data.get("empty_crop_prob", 0.0))
        if not 0.0 <= empty <= 1.0:
            raise ValueError(f"data.empty_crop_prob must be in [0, 1], got {empty}")
        self.next_seed = first_seed
        self.volumes = [self._make() for _ in range(int(cfg.data["pool_size"]))]

    def _make(self):
        """A new volume and, for TopNet, its distance-to-centerline map (voxels)."""
        from scipy import ndimage as ndi

        lo, hi = self.cfg.data["n_trees"]
        n_trees = int(self.rng.integers(lo, hi + 1))
        vol = make_training_volume(self.cfg, self.shape, n_trees, self.next_seed)
        self.next_seed += 1
        dist = ndi.distance_transform_edt(~vol.centerline) if self.topnet else None
        return vol, dist

    def refresh(self) -> None:
        """Replace one volume (the oldest) by a new one."""
        self.volumes.pop(0)
        self.volumes.append(self._make())

    def _start(self, shape) -> list[int]:
        return [
            int(self.rng.integers(0, s - q + 1)) for s, q in zip(shape, self.cfg.patch, strict=True)
        ]

    def _empty_start(self, vol) -> list[int]:
        """The first of :data:`EMPTY_CROP_TRIES` random crops without a vessel voxel, else
        the one with the fewest."""
        best, fewest = None, None
        for _ in range(EMPTY_CROP_TRIES):
            start = self._start(vol.shape)
            sl = tuple(slice(a, a + q) for a, q in zip(start, self.cfg.patch, strict=True))
            count = int(np.count_nonzero(vol.mask[sl]))
            if fewest is None or count < fewest:
                best, fewest = start, count
            if count == 0:
                break
        return best

    def sample(self, n: int) -> dict[str, np.ndarray]:
        """``n`` random crops with random flips and axis permutations.

        With ``data.empty_crop_prob`` a crop is instead sought without vessels
        (:meth:`_empty_start`), so that the model sees tiles of background alone, as
        inference does wherever vessels are sparse: each tile is normalised on its own
        (instance norm), and a model that rarely saw an empty tile may read its
        amplified noise as vessel (unet-cldice on the four-tube volume of issue 9).
        """
        batch: dict[str, list] = {"image": [], "vessel": []}
        if self.topnet:
            batch.update(distance=[], trees=[], centerline=[])
        p = self.cfg.patch
        empty_prob = float(self.cfg.data.get("empty_crop_prob", 0.0))
        for _ in range(n):
            vol, dist = self.volumes[int(self.rng.integers(len(self.volumes)))]
            if empty_prob > 0 and self.rng.random() < empty_prob:
                start = self._empty_start(vol)
            else:
                start = self._start(vol.shape)
            sl = tuple(slice(a, a + q) for a, q in zip(start, p, strict=True))
            perm = self.rng.permutation(3) if len(set(p)) == 1 else np.arange(3)
            flips = [ax for ax in range(3) if self.rng.random() < 0.5]

            def aug(a, perm=perm, flips=flips):
                a = np.transpose(a, perm)
                return np.ascontiguousarray(np.flip(a, flips) if flips else a)

            batch["image"].append(aug(vol.image[sl]))
            batch["vessel"].append(aug(vol.mask[sl]))
            if self.topnet:
                batch["distance"].append(aug(dist[sl]))
                batch["trees"].append(aug(vol.trees[sl]))
                batch["centerline"].append(aug(vol.centerline[sl]))
        return {k: np.stack(v) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------
# losses and models
# ---------------------------------------------------------------------------------------


def _with_cross_entropy(loss, weight: float, sigmoid: bool):
    """``loss(input, target) + weight * BCE(input, target)``, a module.

    The cross-entropy is the voxel mean of each sample and channel, reduced over them as
    ``loss`` reduces its own terms (its ``reduction``: "mean", the training default, gives
    the voxel mean of the whole batch; "sum" and "none" add per sample).

    Soft Dice is taken per patch, so on a patch without vessels it is
    ``1 - 1 / (sum(p) + 1)``, whose gradient ``1 / (sum(p) + 1)**2`` all but vanishes
    once the model marks a few hundred voxels there; the cross-entropy keeps a gradient
    on every voxel (nnU-Net trains with Dice + cross-entropy for this reason).
    """
    import torch
    from torch.nn import functional as F

    class _WithCE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.base = loss

        def forward(self, input, target):
            base = self.base(input, target)  # checks the shapes first, in its own words
            with torch.autocast(device_type=input.device.type, enabled=False):
                x, t = input.float(), target.float()
                # no clamp on probabilities: torch clamps the log at -100 itself, and a
                # clamp would stop the gradient exactly on the confidently wrong voxels
                ce = (
                    F.binary_cross_entropy_with_logits(x, t, reduction="none")
                    if sigmoid
                    else F.binary_cross_entropy(x, t, reduction="none")
                )
                # per sample and channel, then reduced as the base loss reduces its own
                ce = ce.flatten(2).mean(-1)
                if not getattr(self.base, "include_background", True) and ce.shape[1] > 1:
                    ce = ce[:, 1:]  # the channels the base loss scores
                reduction = getattr(self.base, "reduction", "mean")
                ce = ce.mean() if reduction == "mean" else ce.sum() if reduction == "sum" else ce
            return base + weight * ce

    return _WithCE()


def build_loss(spec: dict, sigmoid: bool = True):
    """A loss from its config: ``{"name": "dice"|"cldice"|"projpool"|"topnet", ...}``.

    ``sigmoid``: the mask losses take logits (True) or probabilities (False). An optional
    ``"bce": w`` adds ``w`` times the voxel-mean binary cross-entropy to a mask loss
    (:func:`_with_cross_entropy`).

    Raises
    ------
    ValueError
        An unknown name, a ``bce`` weight that is not a finite number >= 0, or ``bce``
        with the topnet loss.
    """
    from ..topology import losses as L

    spec = dict(spec)
    name = spec.pop("name")
    bce = spec_bce = spec.pop("bce", 0.0)
    try:
        bce = float(bce)
    except (TypeError, ValueError):
        bce = math.nan
    if not (math.isfinite(bce) and bce >= 0):
        raise ValueError(f"loss bce weight must be a finite number >= 0, got {spec_bce!r}")
    if bce and name in ("dice", "cldice", "projpool"):
        return _with_cross_entropy(build_loss({"name": name, **spec}, sigmoid), bce, sigmoid)
    if bce:
        raise ValueError(f"loss bce applies to dice, cldice and projpool, not {name}")
    if name == "dice":
        return L.SoftDiceLoss(sigmoid=sigmoid, **spec)
    if name == "cldice":
        return L.DiceclDiceLoss(sigmoid=sigmoid, **spec)
    if name == "projpool":
        return L.ProjectedPoolingLoss(sigmoid=sigmoid, **spec)
    if name == "topnet":
        return L.TopNetLoss(**spec)
    raise ValueError(f"unknown loss {name!r}; known: dice, cldice, projpool, topnet")


def _loss_args(spec: dict) -> dict:
    """The loss constructor's arguments: the pair-sampling keys belong to the data side."""
    return {k: v for k, v in spec.items() if k not in ("n_anchors", "partners", "radius")}


def _topnet_pairs(batch: dict, rng: np.random.Generator, pairs_cfg: dict, restrict=None):
    """Embedding pairs among the centerline voxels of each patch (and, with
    ``restrict`` (B, z, y, x) bool, only where it is True)."""
    import torch

    from ..topology.losses import sample_embedding_pairs

    parts = [[], [], [], []]
    for b in range(batch["trees"].shape[0]):
        keep = batch["centerline"][b].astype(bool)
        if restrict is not None:
            keep &= restrict[b]
        res = sample_embedding_pairs(
            batch["trees"][b], points=np.argwhere(keep), rng=rng, batch_index=b, **pairs_cfg
        )
        for acc, r in zip(parts, res, strict=True):
            acc.append(r)
    return tuple(torch.from_numpy(np.concatenate(p)) for p in parts)


def _forward_loss(model, loss_fn, batch, topnet: bool, rng, loss_spec: dict):
    import torch

    x = torch.from_numpy(batch["image"]).float()[:, None]
    vessel = torch.from_numpy(batch["vessel"]).float()[:, None]
    out = model(x)
    if not topnet:
        return loss_fn(out, vessel), {}
    pairs_cfg = {k: loss_spec[k] for k in ("n_anchors", "partners", "radius") if k in loss_spec}
    targets = {
        "vessel": vessel,
        "distance": torch.from_numpy(batch["distance"]).float()[:, None],
        "pairs": _topnet_pairs(batch, rng, pairs_cfg),
    }
    total, parts = loss_fn(out, targets)
    return total, parts


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------


def validation_volumes(cfg: TrainConfig, n: int | None = None, base_seed: int | None = None):
    """The held-out volumes: seeds ``VALIDATION_BASE_SEED + i``, never used for training."""
    n = int(n if n is not None else cfg.validation["n_volumes"])
    base = VALIDATION_BASE_SEED if base_seed is None else base_seed
    shape = tuple(cfg.validation["volume_shape"])
    return [make_training_volume(cfg, shape, 2 + i % 2, base + i) for i in range(n)]


def predict_volume(model, image: np.ndarray) -> dict[str, np.ndarray] | np.ndarray:
    """Whole-volume forward pass of a small volume; probabilities for the vessel channel."""
    import torch

    with torch.inference_mode():
        out = model(torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None])
    if isinstance(out, dict):
        res = {k: v[0].numpy() for k, v in out.items()}
        res["vessel"] = torch.sigmoid(torch.from_numpy(res["vessel"]))[0].numpy()
        return res
    return torch.sigmoid(out)[0, 0].numpy()


def validate(model, volumes, threshold: float = 0.5) -> dict[str, float]:
    """Mean of the topology metrics over ``volumes`` (whole-volume prediction).

    NaN values (undefined for a volume, e.g. precision of an empty prediction) are left
    out of the mean; a metric undefined on every volume is ``None``.
    """
    from ..topology.metrics import compute_metrics

    model.eval()
    rows = []
    for vol in volumes:
        out = predict_volume(model, vol.image)
        prob = out["vessel"] if isinstance(out, dict) else out
        rows.append(compute_metrics(prob > threshold, vol.mask, spacing=vol.spacing))
    model.train()
    keys = [k for k in rows[0] if k != "Tree accuracy"]
    out: dict[str, float | None] = {}
    for k in keys:
        values = np.array([r[k] for r in rows], dtype=float)
        finite = values[np.isfinite(values)]
        # None (JSON null) where every volume's value is undefined, e.g. an empty prediction
        out[k] = float(finite.mean()) if finite.size else None
    return out


# ---------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _lr_at(cfg: TrainConfig, step: int) -> float:
    """Cosine decay from ``lr`` to ``lr_final`` over the run."""
    t = min(1.0, step / max(1, cfg.steps))
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1.0 + math.cos(math.pi * t))


def _save_checkpoint(path: Path, model, opt, step, rng, history, curve, pool_seed):
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "rng": json.dumps(rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
            "history": json.dumps(history),
            "curve": json.dumps(curve),
            "pool_seed": pool_seed,
        },
        tmp,
    )
    tmp.replace(path)


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
    resume: bool = True,
):
    """Run (or resume) a training run and save the model with its card into ``out_dir``.

    Returns the completed :class:`~napari_topo.models.registry.ModelCard`.
    """
    import torch

    from ..models.registry import ARCHITECTURES, ModelCard, load_model, save_model

    if log is None:  # flushed, so that a run's log file can be followed while it trains

        def log(message: str) -> None:
            print(message, flush=True)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    commit = _git_commit()  # the code this run starts with, not whatever HEAD is at the end
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if cfg.architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {cfg.architecture!r}; known: {sorted(ARCHITECTURES)}"
        )
    topnet = cfg.loss.get("name") == "topnet"
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = ARCHITECTURES[cfg.architecture](**cfg.arch_kwargs)
    if cfg.init_from:
        init_model, _ = load_model(cfg.init_from)
        model = _initialise(model, init_model, seed=cfg.seed)
        log(f"initialised from {cfg.init_from}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_spec = dict(cfg.loss)
    loss_fn = build_loss(_loss_args(loss_spec))
    pre_steps = int(cfg.pretrain["steps"]) if cfg.pretrain else 0
    pre_loss_fn = build_loss(_loss_args(cfg.pretrain["loss"])) if cfg.pretrain else None
    ckpt = out_dir / "checkpoint.pt"
    step, history, curve = 0, [], []
    pool_seed = 1000 * (cfg.seed + 1)
    if resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        rng.bit_generator.state = json.loads(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        history = json.loads(state["history"])
        curve = json.loads(state["curve"])
        pool_seed = int(state["pool_seed"])
        log(f"resumed {cfg.name} from step {step}")
    pool = VolumePool(cfg, rng, first_seed=pool_seed, topnet=topnet)
    val_vols = validation_volumes(cfg)
    model.train()
    t_start, losses = time.perf_counter(), []
    step0 = step
    try:
        while step < cfg.steps:
            for group in opt.param_groups:
                group["lr"] = _lr_at(cfg, step)
            batch = pool.sample(cfg.batch_size)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                phase_fn = pre_loss_fn if step < pre_steps else loss_fn
                loss, parts = _forward_loss(model, phase_fn, batch, topnet, rng, loss_spec)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            if step % int(cfg.data["refresh_every"]) == 0:
                pool.refresh()
            if step % cfg.log_every == 0 or step == cfg.steps:
                curve.append([step, float(np.mean(losses[-cfg.log_every :]))])
                rate = (time.perf_counter() - t_start) / max(1, step - step0)
                eta = rate * (cfg.steps - step)
                extra = " ".join(f"{k} {v:.3f}" for k, v in parts.items())
                log(
                    f"[{cfg.name}] step {step}/{cfg.steps} loss {curve[-1][1]:.4f} "
                    f"{extra} lr {_lr_at(cfg, step):.1e} {rate:.2f} s/step ETA {eta / 60:.1f} min"
                )
            if step % int(cfg.validation["every"]) == 0 or step == cfg.steps:
                metrics = validate(model, val_vols, cfg.validation["threshold"])
                history.append({"step": step, "loss": float(np.mean(losses[-50:])), **metrics})
                log(
                    f"[{cfg.name}] validation at {step}: "
                    + ", ".join(
                        f"{k} " + ("n/a" if metrics[k] is None else f"{metrics[k]:.3f}")
                        for k in ("Dice", "clDice", "Betti-0 error", "Betti-1 error", "CCE 3D")
                    )
                )
            if step % cfg.checkpoint_every == 0:
                _save_checkpoint(ckpt, model, opt, step, rng, history, curve, pool.next_seed)
    except KeyboardInterrupt:
        _save_checkpoint(ckpt, model, opt, step, rng, history, curve, pool.next_seed)
        log(f"interrupted at step {step}; checkpoint saved, run the same command to resume")
        raise
    model.eval()
    card = ModelCard(
        name=cfg.name,
        architecture=cfg.architecture,
        arch_kwargs=copy.deepcopy(model.arch_kwargs),
        task="topnet" if topnet else "segmentation",
        normalization=_card_normalization(cfg),
        training={
            "config": cfg.to_dict(),
            "data_pipeline": DATA_PIPELINE_VERSION,
            "train_seeds": f"{1000 * (cfg.seed + 1)}..{pool.next_seed - 1}",
            "validation_seeds": [VALIDATION_BASE_SEED + i for i in range(len(val_vols))],
            "voxel_spacing": [1.0, 1.0, 1.0],
            "radius_range_voxels": _radius_range_voxels(cfg),
            "command": command or f"napari-topo train --config {cfg.name}",
            "git_commit": commit,
            "wall_time_s": round(time.perf_counter() - t_start, 1),
            "torch": torch.__version__,
            "history": history,
            "loss_curve": curve,
        },
        metrics={"validation": history[-1] if history else {}},
        summary=cfg.summary or f"{cfg.architecture} trained with {loss_spec['name']} loss",
    )
    card = save_model(model, card, out_dir)
    log(f"saved {out_dir / (cfg.name + '.safetensors')} (sha256 {card.sha256[:12]}...)")
    return card
