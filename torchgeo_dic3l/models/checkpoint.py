"""Turn training checkpoints into plain backbone state dicts, and say what a weights spec is."""

import warnings
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from .weights import HASHED_NAME, UnverifiedWeightsWarning, load_weights, torch_load_tensors

#: Prefixes under which known tasks store the query backbone, tried in order.
#: ``model.``: this package's DI3CLTask and TorchGeo's supervised tasks;
#: ``backbone.``: TorchGeo's MoCo / SimCLR / BYOL tasks (TorchGeo issue 1379).
#: Where tasks keep the trained encoder, tried in order: DI3CLTask ``model``, the ViT
#: inside TorchGeo's MAE / SARMAETask masked encoder, TorchGeo's MoCo / SimCLR ``backbone``.
BACKBONE_PREFIXES = ("model.", "backbone.vit.", "backbone.")

#: First-layer weight of each supported backbone family: ``[out, in_chans, k, k]``.
FIRST_LAYER_KEYS = ("conv1.weight", "patch_embed.proj.weight")

#: Weights specs meaning random weights, and ImageNet weights (any letter case).
RANDOM_SOURCES: tuple[str, ...] = ("random", "none", "scratch")
IMAGENET_SOURCES: tuple[str, ...] = ("imagenet",)

#: File suffixes that mark a weights spec as a path even when the file is missing.
WEIGHT_SUFFIXES: tuple[str, ...] = (".ckpt", ".pth", ".pt", ".safetensors", ".bin")

WeightsSourceKind = Literal["random", "imagenet", "path", "weight_name"]


def weights_source_kind(source: str) -> WeightsSourceKind:
    """What a weights spec (a config value or command-line word) refers to.

    Args:
        source: ``random`` (or ``none``, ``scratch``), ``imagenet``, a file, or a
            weight name such as ``ResNet50_Weights.SENTINEL1_ALL_MOCO``.

    Returns:
        ``random``, ``imagenet``, ``path`` (an existing file, or a spec that looks
        like one: it holds a path separator or ends in a weights suffix, so that a
        missing file is reported as missing rather than as an unknown weight name)
        or ``weight_name``.
    """
    lowered = source.strip().lower()
    if lowered in RANDOM_SOURCES:
        return "random"
    if lowered in IMAGENET_SOURCES:
        return "imagenet"
    separated = "/" in source or "\\" in source
    if separated or lowered.endswith(WEIGHT_SUFFIXES) or Path(source).is_file():
        return "path"
    return "weight_name"


def extract_backbone(path: Path | str) -> dict[str, Tensor]:
    """Load the query backbone of a checkpoint as a plain state dict.

    The result loads with strict key matching into the timm model named in the
    checkpoint (``num_classes=0``; for a ViT with the checkpoint's ``img_size``) and
    into segmentation-models-pytorch ResNet encoders. Files are read with
    ``weights_only=True``: nothing is unpickled.

    Args:
        path: A Lightning checkpoint (``.ckpt``) of DI3CLTask, SARMAETask or TorchGeo's
            MoCo/SimCLR/BYOL/MAE tasks, or a file that already holds a plain state dict.

    Returns:
        Backbone weights keyed as in timm (``conv1.weight``, ... for a ResNet,
        ``patch_embed.proj.weight``, ... for a ViT).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file holds no recognizable backbone, or objects other than
            tensors (it is not unpickled).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint or weights file not found: {path}")
    content = torch_load_tensors(path, path)
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a dict, found {type(content).__name__}")
    if "state_dict" not in content:
        return _plain_state_dict(content, path)
    state_dict = content["state_dict"]
    for prefix in BACKBONE_PREFIXES:
        backbone = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if backbone:
            return backbone
    raise ValueError(
        f"{path}: the checkpoint's state_dict has no key starting with any of "
        f"{BACKBONE_PREFIXES}; is it a DI3CLTask or TorchGeo SSL checkpoint?"
    )


def _plain_state_dict(content: dict[str, Any], path: Path) -> dict[str, Tensor]:
    if not content or not all(isinstance(v, Tensor) for v in content.values()):
        raise ValueError(f"{path}: neither a Lightning checkpoint nor a state dict of tensors")
    return content


def read_backbone_file(path: Path | str) -> tuple[dict[str, Tensor], bool]:
    """Backbone weights of a file, verified if its name carries a hash.

    A ``<name>-<sha8>.pth`` file is checked against its hash (:func:`load_weights`);
    any other file (a Lightning checkpoint, a renamed or hand-made state dict) is read
    with :func:`extract_backbone` and warned about
    (:class:`UnverifiedWeightsWarning`), since nothing tells whether it was modified.

    Args:
        path: The file.

    Returns:
        The state dict and whether it was verified.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file holds no backbone state dict of tensors, or its hash
            does not match (:class:`WeightsHashError`).
    """
    path = Path(path)
    if HASHED_NAME.search(path.name):
        return load_weights(path), True
    state_dict = extract_backbone(path)
    warnings.warn(
        f"{path}: loaded unverified weights: the name has no '-<sha256 prefix>.pth' "
        "suffix to check the content against (torchgeo-dic3l-export writes such files)",
        UnverifiedWeightsWarning,
        stacklevel=2,
    )
    return state_dict, False
