"""Turn training checkpoints into plain backbone state dicts."""

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

#: Prefixes under which known tasks store the query backbone, tried in order.
#: ``model.``: this package's DI3CLTask and TorchGeo's supervised tasks;
#: ``backbone.``: TorchGeo's MoCo / SimCLR / BYOL tasks (TorchGeo issue 1379).
BACKBONE_PREFIXES = ("model.", "backbone.")


def extract_backbone(path: Path | str) -> dict[str, Tensor]:
    """Load the query backbone of a checkpoint as a plain state dict.

    The result loads with strict key matching into the timm model named in the
    checkpoint (``num_classes=0``) and into segmentation-models-pytorch ResNet
    encoders. Files are read with ``weights_only=True``: nothing is unpickled.

    Args:
        path: A Lightning checkpoint (``.ckpt``) of DI3CLTask or of TorchGeo's
            MoCo/SimCLR/BYOL tasks, or a file that already holds a plain state dict.

    Returns:
        Backbone weights keyed as in timm / torchvision ResNets (``conv1.weight``, ...).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file holds no recognizable backbone.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint or weights file not found: {path}")
    try:
        content: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path}: not a loadable PyTorch checkpoint or state dict ({error})"
        ) from error
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
