"""Named models: architecture + ``.safetensors`` weights + a JSON model card with a SHA-256.

A model is two files side by side, ``<name>.safetensors`` (the weights) and
``<name>.json`` (its :class:`ModelCard`: architecture and constructor arguments, outputs,
input normalisation, how it was trained, its metrics and the SHA-256 of the weights file).
The bundled models live in :data:`WEIGHTS_DIR`; the user's own (fine-tuned) models in
:func:`user_models_dir` (platformdirs' user data folder, or the ``NAPARI_TOPO_MODELS``
environment variable); further folders can be listed in the ``NAPARI_TOPO_MODEL_PATH``
environment variable (``os.pathsep``-separated), and any card, weights file or folder
holding one model can be loaded by path.

Safety: weights are only ever read with :mod:`safetensors` (tensors, no code: never
unpickled), only after their SHA-256 matched the card's, and nothing is ever downloaded.
The architecture is built from the card, by name, from :data:`ARCHITECTURES`.

Examples
--------
>>> model, card = load_model("topnet-synthetic")  # doctest: +SKIP
>>> card = save_model(net, {"name": "my-unet", "summary": "..."}, "out/")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..inference.intensity import AUTO_NORMALIZATION, LEGACY_NORMALIZATION, card_normalization
from ..inference.pipeline import DEFAULT_MIN_SIZE, fine_tuned_reading
from .topnet import TopNet
from .unet import UNet3D
from .voxel_head import VoxelHeadNet

__all__ = [
    "ALLOWED_TASKS",
    "ARCHITECTURES",
    "AUTO_NORMALIZATION",
    "DEFAULT_NORMALIZATION",
    "DEFAULT_THRESHOLD",
    "MODEL_PATH_ENV",
    "TASKS",
    "USER_MODELS_ENV",
    "WEIGHTS_DIR",
    "ModelCard",
    "ModelNotFoundError",
    "WeightsIntegrityError",
    "build_model",
    "describe_card",
    "get_card",
    "list_models",
    "load_model",
    "model_card",
    "model_dirs",
    "save_model",
    "sha256_file",
    "user_models_dir",
]

#: Architecture name (as written in model cards) -> ``nn.Module`` class.
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "unet3d": UNet3D,
    "topnet": TopNet,
    # a U-Net plus a voxel classifier on its whole-volume output (finetune(layers="head"))
    "unet3d-voxel-head": VoxelHeadNet,
}
#: Default task of each architecture, i.e. which outputs are meaningful: ``"segmentation"``
#: (the vessel logits only) or ``"topnet"`` (vessel, centerness and embedding). A TopNet
#: trained with a segmentation loss alone is a ``"segmentation"`` model whose ``forward``
#: still returns a dict; inference reads the ``"vessel"`` entry.
TASKS: dict[str, str] = {
    "unet3d": "segmentation",
    "topnet": "topnet",
    "unet3d-voxel-head": "segmentation",
}
#: Tasks each architecture can do.
ALLOWED_TASKS: dict[str, tuple[str, ...]] = {
    "unet3d": ("segmentation",),
    "topnet": ("topnet", "segmentation"),
    "unet3d-voxel-head": ("segmentation",),
}
#: The bundled models' folder (inside the installed package).
WEIGHTS_DIR: Path = Path(str(resources.files(__package__).joinpath("weights")))
#: Vessel probability above which a voxel is vessel, for a card that names none.
DEFAULT_THRESHOLD = 0.5
#: Environment variable listing extra model folders, separated by ``os.pathsep``.
MODEL_PATH_ENV = "NAPARI_TOPO_MODEL_PATH"
#: Environment variable naming the user models folder (replaces the platformdirs default).
USER_MODELS_ENV = "NAPARI_TOPO_MODELS"
#: Input normalisation a card gets when it names none: the earlier models' percentile
#: scaling (a card that records nothing makes no claim about CT windows or polarity).
#: Models trained with the input policy of :mod:`napari_topo.inference.intensity` write
#: :data:`AUTO_NORMALIZATION` (``{"method": "auto", "ct_window": [-100, 300], "low": 0.5,
#: "high": 99.5, "polarity": "bright"}``) into their cards.
DEFAULT_NORMALIZATION = dict(LEGACY_NORMALIZATION)
CARD_FORMAT_VERSION = 1

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class ModelNotFoundError(ValueError):
    """No model of that name is registered, or the named file or its card is missing."""


class WeightsIntegrityError(ValueError):
    """The weights file's SHA-256 differs from the one its model card records."""


@dataclass
class ModelCard:
    """What a model is, how to feed it and where it came from; stored as ``<name>.json``.

    Attributes
    ----------
    name : str
        Registry name and file stem (letters, digits, ``_ . + -``).
    architecture : str
        Key of :data:`ARCHITECTURES`.
    arch_kwargs : dict
        JSON constructor arguments: ``ARCHITECTURES[architecture](**arch_kwargs)``.
    task : str
        ``"segmentation"`` or ``"topnet"``; inferred from the architecture when empty.
    summary : str
        One line, for tooltips and menus.
    outputs : dict
        Output name -> ``{"channels", "kind", "activation", ...}``; filled from the
        model's ``output_spec()`` by :func:`save_model` when empty.
    normalization : dict
        How inputs are mapped for the model, applied by
        :func:`napari_topo.inference.intensity.plan_input` (checked by
        :func:`~napari_topo.inference.intensity.card_normalization` when the card is made):
        ``{"method": "auto", "ct_window": [-100, 300], "low": 0.5, "high": 99.5,
        "polarity": "bright"}`` for models trained on bright vessels in [0, 1] (a CT in HU
        windowed to ``ct_window`` and clipped, other images scaled by the ``low``/``high``
        percentiles, dark-vessel images inverted, the zoom chosen automatically; optional
        ``target_radius_voxels`` (8) and ``ct_spacing_mm`` (0.5) tune the zoom), or
        ``{"method": "percentile", "low": 0.5, "high": 99.5}`` for earlier models
        (percentiles only, whatever the image).
    training : dict
        Free-form provenance: voxel spacing and radius range, patch size, steps, loss and
        its hyper-parameters, data generator version and seeds, command, git commit.
    metrics : dict
        Free-form evaluation results (name -> value or nested dict).
    sha256 : str
        Hex SHA-256 of the weights file's bytes (set by :func:`save_model`).
    weights_file : str
        Weights file name, relative to the card's folder (default ``<name>.safetensors``).
    description : str
        Longer free text (intended use, limitations).
    threshold : float or None
        The vessel probability above which this model's voxels are vessel, where it
        differs from 0.5: :func:`napari_topo.inference.segment`, the CLI and the Segment
        dock use it unless told another. A fine-tuned model gets the one that scored
        best on the held-out part of the user's annotation
        (:func:`napari_topo.training.finetune.finetune`). None: 0.5.
    min_size : int or None
        The smallest connected piece (26-connected, voxels) of this model's masks kept by
        default, where it differs from the package's
        (:data:`~napari_topo.inference.pipeline.DEFAULT_MIN_SIZE`, used for None):
        ``segment``, the CLI and the Segment dock use it unless told another. A
        fine-tuned model keeps its base model's.
    format_version : int
        Version of this card layout.
    created_with : str
        Package version that wrote the card.
    extra : dict
        Keys of the JSON this version does not know; kept so that re-saving loses nothing.
    path : Path or None
        Where the card was read from (not serialised).
    """

    name: str
    architecture: str
    arch_kwargs: dict = field(default_factory=dict)
    task: str = ""
    summary: str = ""
    outputs: dict = field(default_factory=dict)
    normalization: dict = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    sha256: str = ""
    weights_file: str = ""
    description: str = ""
    threshold: float | None = None
    min_size: int | None = None
    format_version: int = CARD_FORMAT_VERSION
    created_with: str = ""
    extra: dict = field(default_factory=dict, repr=False)
    path: Path | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(
                f"model name must be 1-128 characters of letters, digits, '_', '.', '+', '-' "
                f"starting with a letter or digit, got {self.name!r}"
            )
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"model {self.name!r}: unknown architecture {self.architecture!r}; "
                f"known: {', '.join(sorted(ARCHITECTURES))}"
            )
        if not self.task:
            self.task = TASKS[self.architecture]
        elif self.task not in ALLOWED_TASKS[self.architecture]:
            raise ValueError(
                f"model {self.name!r}: architecture {self.architecture!r} does task(s) "
                f"{ALLOWED_TASKS[self.architecture]}, the card says {self.task!r}"
            )
        for name in ("arch_kwargs", "outputs", "normalization", "training", "metrics", "extra"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(
                    f"model {self.name!r}: {name} must be a dict, "
                    f"got {type(getattr(self, name)).__name__}"
                )
        try:
            card_normalization(self.normalization)
        except ValueError as err:
            raise ValueError(f"model {self.name!r}: {err}") from None
        self.sha256 = str(self.sha256).lower()
        if self.sha256 and not _SHA256_RE.match(self.sha256):
            raise ValueError(
                f"model {self.name!r}: sha256 must be 64 hex digits, got {self.sha256!r}"
            )
        if not self.weights_file:
            self.weights_file = f"{self.name}.safetensors"
        if Path(self.weights_file).name != self.weights_file:
            raise ValueError(
                f"model {self.name!r}: weights_file must be a bare file name next to the "
                f"card, got {self.weights_file!r}"
            )
        if self.path is not None:
            self.path = Path(self.path)
        if self.threshold is not None:
            t = self.threshold
            if isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 < t < 1.0:
                raise ValueError(
                    f"model {self.name!r}: threshold must be a number between 0 and 1 "
                    f"(exclusive) or null, got {t!r}"
                )
            self.threshold = float(t)
        if self.min_size is not None:
            m = self.min_size
            if isinstance(m, bool) or not isinstance(m, int) or m < 0:
                raise ValueError(
                    f"model {self.name!r}: min_size must be an integer >= 0 or null, got {m!r}"
                )

    @property
    def mask_threshold(self) -> float:
        """The threshold this model's masks are cut at by default (``threshold`` or 0.5)."""
        return DEFAULT_THRESHOLD if self.threshold is None else self.threshold

    @property
    def mask_min_size(self) -> int:
        """The smallest mask piece (voxels) kept by default (``min_size`` or
        :data:`~napari_topo.inference.pipeline.DEFAULT_MIN_SIZE`)."""
        return DEFAULT_MIN_SIZE if self.min_size is None else self.min_size

    @property
    def weights_path(self) -> Path | None:
        """The weights file next to the card, or None for a card not read from a file."""
        return None if self.path is None else self.path.parent / self.weights_file

    # -- (de)serialisation --------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The card as a JSON-serialisable dict (``path`` left out, ``extra`` merged)."""
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name not in ("extra", "path"):
                out[f.name] = getattr(self, f.name)
        return _jsonable(out, "card")

    @classmethod
    def from_dict(cls, data: dict, *, path: str | os.PathLike | None = None) -> ModelCard:
        """Build a card from a dict; unknown keys go to ``extra``."""
        if not isinstance(data, dict):
            raise ValueError(f"a model card must be a JSON object, got {type(data).__name__}")
        missing = [k for k in ("name", "architecture") if k not in data]
        if missing:
            raise ValueError(f"model card lacks required key(s) {missing}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "path"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k != "extra"}
        extra.update(data.get("extra") or {})
        return cls(**kwargs, extra=extra, path=path)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The card as indented JSON with sorted keys; also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"
        if path is not None:
            _atomic_write(Path(path), text.encode("utf-8"))
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> ModelCard:
        """Read a card from JSON text or from a ``.json`` file.

        A ``str`` whose first non-blank character is ``{`` is parsed as JSON text; any
        other ``str`` or path-like is a file path (and becomes the card's ``path``).
        """
        if isinstance(source, str) and source.lstrip().startswith("{"):
            text, path = source, None
        else:
            path = Path(source).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError as err:
                raise ModelNotFoundError(f"no model card at {path}") from err
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            where = f" in {path}" if path else ""
            raise ValueError(f"model card{where} is not valid JSON: {err}") from err
        return cls.from_dict(data, path=path)


# -- helpers ---------------------------------------------------------------------------


def _jsonable(obj: Any, where: str) -> Any:
    """A deep copy of ``obj`` made of JSON types.

    Tuples become lists, numpy scalars and arrays Python numbers and lists, paths strings,
    and non-finite floats (a NaN metric) ``None``, so that the card stays strict JSON.
    Anything else raises ``ValueError`` naming where it was found.
    """
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and type(obj).__module__ == "numpy":
        return _jsonable(obj.tolist(), where)
    raise ValueError(f"{where} is a {type(obj).__name__}, which a JSON model card cannot hold")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_model(architecture: str, arch_kwargs: dict | None = None) -> nn.Module:
    """A freshly initialised ``ARCHITECTURES[architecture](**arch_kwargs)``.

    Raises
    ------
    ValueError
        An unknown ``architecture`` (the message lists the known ones), or
        ``arch_kwargs`` its constructor does not take or refuses.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}"
        )
    try:
        return ARCHITECTURES[architecture](**(arch_kwargs or {}))
    except TypeError as err:
        raise ValueError(
            f"arch_kwargs {arch_kwargs!r} do not fit architecture {architecture!r}: {err}"
        ) from err


def _architecture_of(model: nn.Module) -> str:
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ValueError(
        f"{type(model).__name__} is not a registered architecture "
        f"({', '.join(f'{k}: {v.__name__}' for k, v in ARCHITECTURES.items())})"
    )


# -- the registry ----------------------------------------------------------------------


def user_models_dir() -> Path:
    """The folder of the user's own models (fine-tuned ones are saved there).

    ``$NAPARI_TOPO_MODELS`` when set, else ``<user data dir>/models`` as
    :func:`platformdirs.user_data_dir` gives it for ``napari-topo`` (e.g.
    ``~/.local/share/napari-topo/models`` on Linux,
    ``~/Library/Application Support/napari-topo/models`` on macOS,
    ``%LOCALAPPDATA%\\napari-topo\\models`` on Windows). Not created here.
    """
    env = os.environ.get(USER_MODELS_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-topo", appauthor=False)) / "models"


def model_dirs(directory: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for model cards.

    ``directory`` alone if given; otherwise :data:`WEIGHTS_DIR`, then
    :func:`user_models_dir`, then the folders in the ``NAPARI_TOPO_MODEL_PATH``
    environment variable. A shipped name always wins over a user model of that name.
    """
    if directory is not None:
        return [Path(directory).expanduser()]
    dirs = [WEIGHTS_DIR, user_models_dir()]
    for entry in os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep):
        if entry.strip():
            dirs.append(Path(entry.strip()).expanduser())
    return dirs


def list_models(directory: str | os.PathLike | None = None) -> list[ModelCard]:
    """Cards of the registered models (every ``*.json`` in :func:`model_dirs`), by name.

    A card that cannot be read is skipped with a warning (one bad file does not hide the
    others). If two folders hold the same name, the first folder wins, with a warning.
    """
    cards: dict[str, ModelCard] = {}
    for folder in model_dirs(directory):
        if not folder.is_dir():
            continue
        for json_path in sorted(folder.glob("*.json")):
            try:
                card = ModelCard.from_json(json_path)
            except (ValueError, OSError) as err:
                warnings.warn(f"skipping unreadable model card {json_path}: {err}", stacklevel=2)
                continue
            if card.name in cards:
                warnings.warn(
                    f"model {card.name!r} in {json_path} ignored: already defined by "
                    f"{cards[card.name].path}",
                    stacklevel=2,
                )
                continue
            cards[card.name] = card
    return [cards[name] for name in sorted(cards)]


def get_card(name: str, *, directory: str | os.PathLike | None = None) -> ModelCard:
    """The card of the registered model ``name``; :class:`ModelNotFoundError` if none."""
    cards = list_models(directory)
    for card in cards:
        if card.name == name:
            return card
    available = ", ".join(c.name for c in cards) or "none"
    searched = ", ".join(str(d) for d in model_dirs(directory))
    import difflib

    by_lower = {c.name.lower(): c.name for c in cards}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.75)
    hint = f"did you mean {by_lower[close[0]]!r}? " if close else ""
    raise ModelNotFoundError(
        f"unknown model {name!r}; {hint}available models: {available} (searched: "
        f"{searched}); a .json card or .safetensors file can also be given by path"
    )


def _looks_like_path(name_or_path) -> bool:
    if isinstance(name_or_path, os.PathLike):
        return True
    s = str(name_or_path)
    return s.endswith((".json", ".safetensors")) or "/" in s or os.sep in s


def _card_in_folder(folder: Path) -> Path:
    """The one model card (``*.json`` with its weights beside it) in ``folder``."""
    cards = []
    for p in sorted(folder.glob("*.json")):
        try:
            card = ModelCard.from_json(p)
        except (ValueError, OSError):
            continue
        if card.weights_path is not None and card.weights_path.is_file():
            cards.append(p)
    if not cards:
        raise ModelNotFoundError(
            f"no model in folder {folder}: expected a <name>.json card with its "
            "<name>.safetensors weights"
        )
    if len(cards) > 1:
        raise ModelNotFoundError(
            f"folder {folder} holds {len(cards)} models ({', '.join(p.stem for p in cards)}); "
            "give the .json card of the one you want"
        )
    return cards[0]


def _resolve(name_or_path, directory) -> tuple[ModelCard, Path]:
    """The card and weights file for a registry name, a ``.json``/``.safetensors`` path
    or a folder holding exactly one model (a registry name wins over a folder)."""
    if not isinstance(name_or_path, str | os.PathLike):
        raise ValueError(f"expected a model name or a path, got {type(name_or_path).__name__}")
    if not str(name_or_path).strip():
        raise ModelNotFoundError("the model name is empty: give a name from 'napari-topo models'")
    if not _looks_like_path(name_or_path):
        try:
            card = get_card(str(name_or_path), directory=directory)
        except ModelNotFoundError:
            folder = Path(str(name_or_path)).expanduser()
            if not folder.is_dir():
                raise
            return _resolve(_card_in_folder(folder), directory)
        weights = card.weights_path
    else:
        path = Path(name_or_path).expanduser()
        if path.is_dir():
            path = _card_in_folder(path)
        elif not path.exists() and path.suffix not in (".json", ".safetensors"):
            raise ModelNotFoundError(f"no such model file or folder: {path}")
        if path.suffix not in (".json", ".safetensors"):
            raise ValueError(f"expected a .json model card or a .safetensors file, got {path}")
        if not path.is_file():
            raise ModelNotFoundError(f"no such file: {path}")
        if path.suffix == ".safetensors":
            card_path = path.with_suffix(".json")
            if not card_path.is_file():
                raise ModelNotFoundError(
                    f"{path} has no model card: expected {card_path.name} next to it "
                    "(architecture and sha256 are read from the card, never guessed)"
                )
            card, weights = ModelCard.from_json(card_path), path
        else:
            card = ModelCard.from_json(path)
            weights = card.weights_path
    if weights is None or not weights.is_file():
        raise ModelNotFoundError(
            f"model {card.name!r}: weights file {weights} named by its card is missing"
        )
    return card, weights


def model_card(model, *, directory: str | os.PathLike | None = None) -> ModelCard:
    """The card of ``model`` (a registry name, a card/weights path, a folder holding one
    model, or a ``(module, card)`` pair) without loading its weights.

    Raises
    ------
    ModelNotFoundError
        For a name or path that names no model.
    """
    if isinstance(model, tuple) and len(model) == 2:
        return model[1]
    return _resolve(model, directory)[0]


def _num(value: Any) -> float | None:
    """``value`` as a finite float, or None (cards are free-form JSON)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt_list(values: Any, sep: str = "x") -> str | None:
    """``2x1x1`` for a list of numbers; None when it is not one."""
    if isinstance(values, str) or not isinstance(values, list | tuple) or not values:
        return None
    nums = [_num(v) for v in values]
    return None if None in nums else sep.join(f"{v:g}" for v in nums)


#: How a stack's axes reach the model's grid before any zoom (inference.pipeline's
#: resample_factors and the input policy's kept axes), said once for both card kinds.
_GRID = (
    "axes up to 3x coarser than the finest are resampled to the finest spacing, coarser "
    "ones keep their slices"
)


def _input_line(card: ModelCard) -> str:
    """What the card says the model is fed (its normalisation), in words."""
    try:
        n = card_normalization(card.normalization)
    except ValueError as err:
        return f"input: unreadable normalization ({err})"
    pct = f"{n.low:g}..{n.high:g} percentiles"
    if n.legacy:
        return f"input: any image scaled to its {pct}, no CT window, no inversion; {_GRID}"
    lo, hi = n.ct_window
    return (
        f"input: a CT in HU is windowed to {lo:g}..{hi:g} HU and resampled to cubic voxels "
        f"of its finest spacing (at least {n.ct_spacing_mm:g} mm); other images are scaled "
        f"to their {pct}, {_GRID}, then shrunk (never enlarged, at most 4x) so that large "
        f"vessels are about {n.target_radius_voxels:g} voxels in radius; expects "
        f"{n.polarity} vessels (the other polarity is inverted when detected)"
    )


def _score_text(scores: Any, keys=("Dice", "clDice")) -> str:
    out = []
    for key in keys:
        v = scores.get(key) if isinstance(scores, dict) else None
        v = _num(v.get("mean") if isinstance(v, dict) else v)
        if v is not None:
            out.append(f"{key} {v:.3f}")
    return ", ".join(out)


def steps_text(training: dict) -> str | None:
    """A fine-tune's training steps in words, from its card's ``training``, or None.

    A voxel head's second stage counts apart, and says when it was not kept: a
    newcomer read "3500 steps" on a one-stage model whose second stage (500 steps) had
    not beaten the first.

    Parameters
    ----------
    training : dict
        A fine-tuned card's ``training`` (``steps``: every step trained; a voxel head's
        ``data["voxel_head"]["stage2"]``: its ``steps`` and whether it was ``kept``).

    Returns
    -------
    str or None
        None when ``steps`` is not an integer.

    Examples
    --------
    >>> steps_text({"steps": 3500, "data": {"voxel_head": {"stage2": {"steps": 500,
    ...     "kept": False}}}})
    '3000 steps (and a second stage of 500, not kept)'
    >>> steps_text({"steps": 5250, "data": {"voxel_head": {"stage2": {"steps": 2250,
    ...     "kept": True}}}})
    '5250 steps (3000 + 2250, in two stages)'
    >>> steps_text({"steps": 1})
    '1 step'
    """

    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    n = training.get("steps")
    if not whole(n):
        return None
    data = training.get("data") if isinstance(training.get("data"), dict) else {}
    head = data.get("voxel_head") if isinstance(data.get("voxel_head"), dict) else {}
    two = head.get("stage2") if isinstance(head.get("stage2"), dict) else {}
    second = two.get("steps")
    if not whole(second) or not 0 < second < n:
        return f"{n} step{'' if n == 1 else 's'}"
    first = n - second
    if two.get("kept"):
        return f"{n} steps ({first} + {second}, in two stages)"
    return f"{first} step{'' if first == 1 else 's'} (and a second stage of {second}, not kept)"


def _fine_tune_lines(card: ModelCard, t: dict, m: dict) -> list[str]:
    base = t["fine_tuned_from"]
    data = t.get("data") if isinstance(t.get("data"), dict) else {}
    shape = _fmt_list(data.get("shape"))
    where = f"a {shape} volume" if shape else "one volume"
    spacing = _fmt_list(data.get("spacing"))
    if spacing:
        unit = data.get("unit")
        where += f" (spacing {spacing}" + (f" {unit})" if isinstance(unit, str) else ")")
    sha = str(base.get("sha256") or "")[:12]
    line = f"fine-tuned from {base.get('name', '?')}" + (f" (sha256 {sha}...)" if sha else "")
    line += f" on {where}"
    if isinstance(data.get("annotated_voxels"), int):
        line += f", {data['annotated_voxels']} annotated voxels"
    if isinstance(t.get("loss"), dict) and t["loss"].get("name"):
        line += f", loss {t['loss']['name']}"
    steps = steps_text(t)
    if steps:
        line += f", {steps}"
    if _num(t.get("wall_time_s")) is not None:
        line += f" in {t['wall_time_s']:.0f} s"
    if isinstance(t.get("device"), str):
        line += f" on {t['device']}"
    lines = [line]
    before, after = m.get("validation_before"), m.get("validation")
    if isinstance(before, dict) and isinstance(after, dict):
        pairs = [
            f"{k} {before[k]:.3f} -> {after[k]:.3f}"
            for k in ("Dice", "clDice")
            if _num(before.get(k)) is not None and _num(after.get(k)) is not None
        ]
        if pairs:
            b = _num(before.get("threshold"))
            b = DEFAULT_THRESHOLD if b is None else b
            lines.append(
                f"held-out part of the annotation, base -> this model: {', '.join(pairs)} "
                f"(threshold {b:g} -> {card.mask_threshold:g})"
            )
    if t.get("kept_base"):
        lines.append(f"weights: the base model's ({t['kept_base']})")
    return lines


def _training_lines(t: dict) -> list[str]:
    parts = []
    if isinstance(t.get("data_pipeline"), str):
        parts.append(f"synthetic volumes (data pipeline {t['data_pipeline']})")
    rr = _fmt_list(t.get("radius_range_voxels"), "-")
    if rr and len(t["radius_range_voxels"]) == 2:
        parts.append(f"vessel radius {rr} voxels")
    if isinstance(t.get("train_seeds"), str | int):
        parts.append(f"seeds {t['train_seeds']}")
    if _num(t.get("wall_time_s")) is not None:
        staged = isinstance(t.get("provenance"), dict) and t["provenance"]
        parts.append(f"{t['wall_time_s']:.0f} s" + (" (last stage)" if staged else ""))
    lines = ["trained on " + ", ".join(parts)] if parts else []
    if isinstance(t.get("command"), str):
        lines.append(f"recipe: {t['command']}")
    return lines


def _score_lines(m: dict) -> list[str]:
    test = m.get("test")
    if isinstance(test, dict) and isinstance(test.get("summary"), dict):
        scores = _score_text(test["summary"])
        if scores:
            n, shape = test.get("n_volumes"), _fmt_list(test.get("shape"))
            what = f"{n} synthetic volumes" if isinstance(n, int) else "synthetic volumes"
            if shape:
                what += f" of {shape}"
            if isinstance(test.get("min_size"), int):
                what += (
                    ", no piece dropped"
                    if test["min_size"] == 0
                    else f", pieces under {test['min_size']} dropped"
                )
            return [f"test ({what}): {scores}"]
    if "fine_tuned_from" not in m:  # a trained model never evaluated: its validation
        scores = _score_text(m.get("validation"))
        if scores:
            return [f"validation (synthetic, during training): {scores}"]
    return []


#: Scores of a card's real-data entry (``metrics["real"]``), in the order shown.
REAL_SCORES = ("Dice", "clDice", "Precision", "Sensitivity", "Tree accuracy")


def _real_lines(m: dict) -> list[str]:
    """``metrics["real"]`` in words: one line per dataset, as ``benchmarks/real/run.py
    --update-cards`` measured it (means over the dataset's cases)."""
    real = m.get("real")
    if not isinstance(real, dict) or not isinstance(real.get("datasets"), list):
        return []
    lines = []
    for d in real["datasets"]:
        if not isinstance(d, dict) or not isinstance(d.get("dataset"), str):
            continue
        scores = ", ".join(
            f"{k if k in ('Dice', 'clDice') else k.lower()} {d[k]:.3f}"
            for k in REAL_SCORES
            if _num(d.get(k)) is not None
        )
        if not scores:
            continue
        n = d.get("n_cases")
        where = f"{d['dataset']}" + (
            f", mean of {n} volumes" if isinstance(n, int) and n > 1 else ""
        )
        if isinstance(d.get("region"), str):
            where += f", {d['region']}"
        when = f", measured {d['date'][:10]}" if isinstance(d.get("date"), str) else ""
        lines.append(f"real data, {where}{when}: {scores}")
    if lines:
        lines[-1] += " (README 'On real data')"
    return lines


def describe_card(card: ModelCard) -> list[str]:
    """A model card in words, one fact per line, for ``napari-topo models NAME`` and the
    Segment dock's tooltips.

    Parameters
    ----------
    card : ModelCard
        From :func:`model_card`, :func:`get_card` or :func:`list_models`.

    Returns
    -------
    list of str
        ``"<name>: <summary>"``, then the architecture, what the model is fed (its
        ``normalization``), how its mask is cut (threshold, smallest piece kept), how it
        was trained (or fine-tuned: base model, data, held-out scores before and after),
        its synthetic test scores (or, never tested, its validation scores), its scores
        on real volumes where the card holds them (``metrics["real"]``, written by
        ``benchmarks/real/run.py --update-cards``), where its
        card is and the SHA-256 it records for the weights (checked when they load, not
        here). Facts the card does not hold, or holds in a form not understood (cards
        are free-form JSON), are left out; nothing is computed or loaded, and nothing
        is raised for an odd card.

    Examples
    --------
    >>> card = ModelCard(name="m", architecture="unet3d", summary="A U-Net",
    ...                  normalization={"method": "percentile"}, min_size=64)
    >>> for line in describe_card(card):
    ...     print(line)  # doctest: +NORMALIZE_WHITESPACE
    m: A U-Net
    architecture: unet3d, task segmentation
    input: any image scaled to its 0.5..99.5 percentiles, no CT window, no inversion;
    axes up to 3x coarser than the finest are resampled to the finest spacing, coarser
    ones keep their slices
    mask: vessel probability above 0.5; pieces under 64 voxels dropped
    """
    lines = [f"{card.name}: {card.summary}" if card.summary else card.name]
    kwargs = card.arch_kwargs if isinstance(card.arch_kwargs, dict) else {}
    widths = _fmt_list(kwargs.get("widths"), ", ")
    task = card.task or TASKS.get(card.architecture, "?")
    lines.append(
        f"architecture: {card.architecture}, task {task}" + (f", widths {widths}" if widths else "")
    )
    lines.append(_input_line(card))
    if card.architecture == "unet3d-voxel-head":  # a newcomer could not see what it holds
        stages = int(kwargs.get("stages", 1))
        lines[-2] += (
            f"; a voxel classifier in {stages} stage{'s' if stages != 1 else ''} on the "
            "network's output"
        )
        tuned = fine_tuned_reading(card)  # what predict pins
        if tuned is not None:
            lines[-1] = (
                f"input: read as when fine-tuned, {tuned['summary']}, unless a modality, "
                "window or polarity is given"
            )
    size = card.mask_min_size
    lines.append(
        f"mask: vessel probability above {card.mask_threshold:g}; "
        + (f"pieces under {size} voxels dropped" if size > 1 else "no piece dropped for its size")
    )
    t = card.training if isinstance(card.training, dict) else {}
    m = card.metrics if isinstance(card.metrics, dict) else {}
    if isinstance(t.get("fine_tuned_from"), dict):
        lines += _fine_tune_lines(card, t, m)
        m = {**m, "fine_tuned_from": True}  # its "validation" is the held-out part's
    else:
        lines += _training_lines(t)
    lines += _score_lines(m)
    lines += _real_lines(m)
    if card.path is not None:
        lines.append(f"card: {card.path}")
    if card.sha256:
        lines.append(f"weights sha256 (recorded in the card): {card.sha256}")
    if card.description:
        lines.append(card.description)
    return lines


def load_model(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    directory: str | os.PathLike | None = None,
) -> tuple[nn.Module, ModelCard]:
    """Load a model by registry name, or from a ``.json`` card or ``.safetensors`` path.

    The weights file is read once; its SHA-256 is checked against the card's before the
    bytes are parsed (by :mod:`safetensors`, no pickle) and loaded strictly into the
    architecture the card names. The model is returned on ``device`` in ``eval()`` mode.

    Parameters
    ----------
    name_or_path : str or path
        A name from :func:`list_models`, or a path to a ``.json`` card, to a
        ``.safetensors`` file with its ``<stem>.json`` card beside it, or to a folder
        holding exactly one such pair (what ``napari-topo finetune --out`` writes). A
        ``str`` is a path when it ends in ``.json``/``.safetensors`` or contains a path
        separator; otherwise a registered name, else an existing folder of that name.
    device : str or torch.device
    directory : path, optional
        Registry folder to search instead of :func:`model_dirs`'s default.

    Returns
    -------
    model : nn.Module
    card : ModelCard

    Raises
    ------
    ModelNotFoundError
        Unknown name (the message lists the available ones) or missing file.
    WeightsIntegrityError
        The weights' SHA-256 differs from the card's, or the card records none.
    ValueError
        A card that does not parse, or weights that do not fit the architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    device = torch.device(device)
    card, weights = _resolve(name_or_path, directory)
    if not card.sha256:
        raise WeightsIntegrityError(
            f"model {card.name!r}: its card records no sha256, so {weights} cannot be "
            "verified; re-save it with save_model()"
        )
    data = weights.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != card.sha256:
        raise WeightsIntegrityError(
            f"model {card.name!r}: SHA-256 of {weights} is {actual}, but its card expects "
            f"{card.sha256}; the file is corrupt, truncated or not the one the card "
            "describes. Replace it, or re-save the model to write a matching card."
        )
    model = build_model(card.architecture, card.arch_kwargs)
    try:
        state = st_load(data)
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError) as err:
        raise ValueError(
            f"model {card.name!r}: weights in {weights} do not fit architecture "
            f"{card.architecture!r} with {card.arch_kwargs}: {err}"
        ) from err
    return model.to(device).eval(), card


def save_model(model: nn.Module, card: ModelCard | dict, directory: str | os.PathLike) -> ModelCard:
    """Write ``<name>.safetensors`` and its ``<name>.json`` card into ``directory``.

    ``architecture``, ``arch_kwargs``, ``task``, ``outputs`` (when empty), ``sha256``,
    ``weights_file`` and ``created_with`` are filled from ``model`` and the written bytes;
    a card whose ``architecture`` or ``arch_kwargs`` contradict the model is refused.
    Existing files of that name are replaced (each write is atomic). ``card`` is not
    modified; the completed card is returned, its ``path`` set to the written ``.json``.

    Raises
    ------
    ValueError
        ``model`` is not a registered architecture; the card names another
        architecture or other ``arch_kwargs``; the card holds a value JSON cannot hold
        (numpy arrays and scalars become lists and numbers, non-finite floats ``null``;
        anything else, e.g. a torch tensor, is refused) or a name that is not a valid
        model name.
    OSError
        ``directory`` cannot be created or written.
    """
    from safetensors.torch import save as st_save

    from .. import __version__

    arch = _architecture_of(model)
    data = card.to_dict() if isinstance(card, ModelCard) else _jsonable(dict(card), "card")
    data.setdefault("architecture", arch)
    if data["architecture"] != arch:
        raise ValueError(f"card says architecture {data['architecture']!r}, the model is {arch!r}")
    arch_kwargs = _jsonable(model.arch_kwargs, "arch_kwargs")
    if data.get("arch_kwargs") and _jsonable(data["arch_kwargs"], "arch_kwargs") != arch_kwargs:
        raise ValueError(
            f"card's arch_kwargs {data['arch_kwargs']} differ from the model's {arch_kwargs}"
        )
    data["arch_kwargs"] = arch_kwargs
    if not data.get("outputs"):
        data["outputs"] = model.output_spec()
    data.update(
        sha256="",
        weights_file="",
        created_with=f"napari-topo {__version__}",
        format_version=CARD_FORMAT_VERSION,
    )
    out = ModelCard.from_dict(data)  # validates the name before anything is written

    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()
    }
    metadata = {
        "format": "pt",
        "name": out.name,
        "architecture": out.architecture,
        "arch_kwargs": json.dumps(arch_kwargs, sort_keys=True),
    }
    blob = st_save(tensors, metadata=metadata)
    out.sha256 = hashlib.sha256(blob).hexdigest()
    _atomic_write(directory / out.weights_file, blob)
    out.path = directory / f"{out.name}.json"
    out.to_json(out.path)
    return out
