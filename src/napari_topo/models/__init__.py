"""Networks and the hashed model registry.

- :class:`UNet3D`: compact 3D U-Net returning vessel logits.
- :class:`TopNet`: shared encoder, three decoders (vessel logits, centerness, embedding).
- :func:`load_model` / :func:`save_model` / :func:`list_models`: named models stored as
  ``<name>.safetensors`` + ``<name>.json`` (:class:`ModelCard`, with the weights' SHA-256).
"""

from .registry import (
    ARCHITECTURES,
    WEIGHTS_DIR,
    ModelCard,
    ModelNotFoundError,
    WeightsIntegrityError,
    build_model,
    get_card,
    list_models,
    load_model,
    model_dirs,
    save_model,
    sha256_file,
)
from .topnet import TopNet
from .unet import UNet3D, count_parameters

__all__ = [
    "ARCHITECTURES",
    "WEIGHTS_DIR",
    "ModelCard",
    "ModelNotFoundError",
    "TopNet",
    "UNet3D",
    "WeightsIntegrityError",
    "build_model",
    "count_parameters",
    "get_card",
    "list_models",
    "load_model",
    "model_dirs",
    "save_model",
    "sha256_file",
]
