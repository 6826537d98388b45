"""Hash-checked weight files, weight enums in TorchGeo's style, and model builders.

A weights file is a plain backbone state dict saved as ``<name>-<sha8>.pth``, where
``sha8`` is the first 8 hex digits of the file's SHA-256 (torchvision's convention).
:func:`load_weights` verifies that hash on every load, before anything is
deserialized, and then reads with ``weights_only=True``.

This project has not published any weights yet, so the enums below have no
entries: an entry is added only once a file is really hosted at its URL (see
:func:`torchgeo_dic3l.models.export.export_weights`, which prints the entry).
Importing this module registers each builder and enum that has entries with
TorchGeo (:func:`register_weights`), so that entry names resolve through
:func:`torchgeo.models.get_weight` in TorchGeo's tasks and in CLI configs.
"""

import hashlib
import io
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
import torchgeo.models.api as torchgeo_api
from torch import Tensor, nn
from torchvision.models._api import WeightsEnum

#: A weights file name ends with ``-<hex sha256 prefix>.pth``.
HASHED_NAME = re.compile(r"-(?P<digest>[0-9a-f]{8,64})\.pth$")


class WeightsHashError(ValueError):
    """A weights file's content does not match the hash in its name."""


class UnverifiedWeightsWarning(UserWarning):
    """Weights are loaded from a file whose name carries no hash to check it against."""


#: How ``torch.load(weights_only=True)`` names a pickled object it refused to build.
_PICKLED_OBJECT = re.compile(
    r"GLOBAL (\S+) was not an allowed global|whose module (\S+) is blocked"
)


def torch_load_tensors(source: Path | io.BytesIO, path: Path) -> Any:
    """``torch.load(weights_only=True)`` with messages that name the file and the cause.

    Args:
        source: The file, or its bytes.
        path: The file's path, for messages.

    Returns:
        The loaded content.

    Raises:
        ValueError: If the file holds objects other than tensors and plain containers,
            or is no PyTorch file at all.
    """
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:
        # PyTorch's own message suggests weights_only=False, which would run the file's code.
        raise ValueError(_load_failure(path, error)) from None


def _load_failure(path: Path, error: Exception) -> str:
    found = _PICKLED_OBJECT.search(str(error))
    if found is not None:
        return (
            f"{path}: the file holds objects other than tensors ({found[1] or found[2]}), "
            "and it will not be unpickled; save the backbone's state dict of tensors instead"
        )
    if isinstance(error, pickle.UnpicklingError):
        return f"{path}: not a loadable PyTorch checkpoint or state dict (unreadable data)"
    return f"{path}: not a loadable PyTorch checkpoint or state dict ({error})"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file.

    Args:
        path: File to hash.

    Returns:
        64 hex digits.
    """
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def load_weights(path: Path | str, check_hash: bool = True) -> dict[str, Tensor]:
    """Load a ``<name>-<sha8>.pth`` weights file after verifying its hash.

    Args:
        path: The weights file.
        check_hash: Verify the SHA-256 prefix in the file name before loading.

    Returns:
        The state dict.

    Raises:
        FileNotFoundError: If the file does not exist.
        WeightsHashError: If the name carries no hash or the content does not match
            it (a truncated, corrupted or tampered file); nothing is unpickled then.
        ValueError: If the file does not hold a state dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    data = path.read_bytes()
    if check_hash:
        match = HASHED_NAME.search(path.name)
        if match is None:
            raise WeightsHashError(
                f"{path}: the name has no '-<sha256 prefix>.pth' suffix to verify; "
                "export it with torchgeo-dic3l-export or pass check_hash=False"
            )
        actual = hashlib.sha256(data).hexdigest()
        if not actual.startswith(match["digest"]):
            raise WeightsHashError(
                f"{path}: SHA-256 {actual[:16]}... does not match {match['digest']} from the "
                "file name; the file is truncated, corrupted or was modified"
            )
    content = torch_load_tensors(io.BytesIO(data), path)
    if not isinstance(content, dict) or not all(isinstance(v, Tensor) for v in content.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return content


class SARWeightsEnum(WeightsEnum):
    """Base of this project's weight enums: downloads once, verifies on every load.

    torchvision checks a file's hash only when it downloads it; a cached file that
    was modified later would be loaded silently. Here the cached file is verified
    each time through :func:`load_weights`.
    """

    def get_state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Download the weights to TorchGeo's cache if needed and load them.

        Args:
            *args: Ignored; accepted for compatibility with torchvision.
            **kwargs: ``progress`` and ``check_hash`` are honoured, others ignored.

        Returns:
            The verified state dict.
        """
        url: str = self.url
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        cache.mkdir(parents=True, exist_ok=True)
        target = cache / url.rsplit("/", 1)[-1]
        if not target.is_file():
            torch.hub.download_url_to_file(url, str(target), progress=kwargs.get("progress", True))
        return load_weights(target, check_hash=kwargs.get("check_hash", True))


class DI3CLResNet18_Weights(SARWeightsEnum):  # noqa: N801
    """ResNet-18 weights pre-trained on SAR with DI3CL (no published entries yet)."""


class DI3CLResNet50_Weights(SARWeightsEnum):  # noqa: N801
    """ResNet-50 weights pre-trained on SAR with DI3CL (no published entries yet)."""


def _build(name: str, weights: WeightsEnum | None, **kwargs: Any) -> nn.Module:
    if weights is not None:
        kwargs["in_chans"] = weights.meta["in_chans"]
    model: nn.Module = timm.create_model(name, **kwargs)
    if weights is not None:
        missing, unexpected = model.load_state_dict(weights.get_state_dict(), strict=False)
        if set(missing) - {"fc.weight", "fc.bias"} or unexpected:
            raise ValueError(
                f"{weights}: weights do not fit {name} "
                f"(missing {missing}, unexpected {unexpected})"
            )
    return model


def di3cl_resnet18(weights: DI3CLResNet18_Weights | None = None, **kwargs: Any) -> nn.Module:
    """ResNet-18 with optional DI3CL weights, like TorchGeo's ``resnet18``.

    Args:
        weights: Pre-trained weights, or None for random initialization.
        **kwargs: Passed to :func:`timm.create_model` (``in_chans`` is taken from
            the weights when given).

    Returns:
        The model.
    """
    return _build("resnet18", weights, **kwargs)


def di3cl_resnet50(weights: DI3CLResNet50_Weights | None = None, **kwargs: Any) -> nn.Module:
    """ResNet-50 with optional DI3CL weights, like TorchGeo's ``resnet50``.

    Args:
        weights: Pre-trained weights, or None for random initialization.
        **kwargs: Passed to :func:`timm.create_model` (``in_chans`` is taken from
            the weights when given).

    Returns:
        The model.
    """
    return _build("resnet50", weights, **kwargs)


def register_weights(
    name: str, builder: Callable[..., nn.Module], weights: type[WeightsEnum]
) -> bool:
    """Make a model builder and its weight enum known to TorchGeo by name.

    TorchGeo resolves ``"Enum.ENTRY"`` strings (in its tasks and CLI configs) and
    :func:`torchgeo.models.get_model` names by scanning its model registries. An enum
    without entries is not registered: no name could resolve to it, and TorchGeo's
    registries stay as TorchGeo made them.

    Args:
        name: Model name, as :func:`torchgeo.models.get_model` takes it.
        builder: Function building the model, taking ``weights`` like TorchGeo's.
        weights: The weight enum of the builder.

    Returns:
        Whether the builder and enum were registered.
    """
    if len(weights.__members__) == 0:
        return False
    torchgeo_api._model[name] = builder
    torchgeo_api._model_weights[name] = weights
    torchgeo_api._model_weights[builder] = weights
    return True


# Registered as soon as they have entries (none is published yet, see the module doc).
register_weights("di3cl_resnet18", di3cl_resnet18, DI3CLResNet18_Weights)
register_weights("di3cl_resnet50", di3cl_resnet50, DI3CLResNet50_Weights)
