"""Initial weights load with exact keys and channels, verified or with a warning."""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import timm
import torch
from timm.models import adapt_input_conv

from torchgeo_dic3l.models import create_backbone
from torchgeo_dic3l.models.weights import UnverifiedWeightsWarning, sha256_of


def _state(in_channels: int = 2) -> dict[str, torch.Tensor]:
    return timm.create_model("resnet18", in_chans=in_channels, num_classes=0).state_dict()


def _save(state: object, path: Path) -> str:
    torch.save(state, path)
    return str(path)


def _hash_named(state: dict[str, torch.Tensor], folder: Path) -> str:
    path = Path(_save(state, folder / "plain.pth"))
    return str(path.rename(folder / f"w-{sha256_of(path)[:8]}.pth"))


def test_partial_state_dict_is_refused_naming_the_missing_keys(tmp_path: Path) -> None:
    state = _state()
    partial = dict(list(state.items())[:30])
    path = _hash_named(partial, tmp_path)
    with pytest.raises(ValueError, match=rf"{len(state) - 30} missing key\(s\) e\.g\. \["):
        create_backbone("resnet18", 2, path)


def test_other_channel_count_is_an_error_unless_adaptation_is_asked(tmp_path: Path) -> None:
    state = _state(in_channels=3)
    path = _hash_named(state, tmp_path)
    with pytest.raises(
        ValueError, match=r"takes 3 input channel\(s\).*in_channels=2.*adapt_channels"
    ):
        create_backbone("resnet18", 2, path)
    loaded = create_backbone("resnet18", 2, path, adapt_channels=True).state_dict()
    assert torch.equal(loaded["conv1.weight"], adapt_input_conv(2, state["conv1.weight"]))
    assert torch.equal(loaded["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])


def test_prefixed_keys_are_refused_naming_the_prefix(tmp_path: Path) -> None:
    path = _hash_named({f"model.{k}": v for k, v in _state().items()}, tmp_path)
    with pytest.raises(ValueError, match=r"the keys carry the prefix 'model\.'"):
        create_backbone("resnet18", 2, path)


def test_a_classifier_is_dropped_but_nothing_else_is(tmp_path: Path) -> None:
    full = timm.create_model("resnet18", in_chans=2).state_dict()
    loaded = create_backbone("resnet18", 2, _hash_named(full, tmp_path)).state_dict()
    assert torch.equal(loaded["conv1.weight"], full["conv1.weight"])
    extra = _state() | {"head.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"1 unexpected e\.g\. \['head\.weight'\]"):
        create_backbone("resnet18", 2, _hash_named(extra, tmp_path))


def test_files_without_a_hash_load_with_an_unverified_warning(tmp_path: Path) -> None:
    state = _state()
    hashed = _hash_named(state, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnverifiedWeightsWarning)
        create_backbone("resnet18", 2, hashed)
    renamed = Path(hashed).rename(tmp_path / "renamed.pth")
    with pytest.warns(UnverifiedWeightsWarning, match=r"renamed\.pth: loaded unverified"):
        loaded = create_backbone("resnet18", 2, str(renamed)).state_dict()
    assert torch.equal(loaded["conv1.weight"], state["conv1.weight"])


class _Custom:
    pass


@pytest.mark.parametrize("name", ["objects.pth", "objects-00000000.pth"])
def test_files_of_objects_are_not_unpickled(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    torch.save({"conv1.weight": torch.zeros(1), "extra": _Custom()}, path)
    if name.startswith("objects-"):  # a valid hash, so that the content is what fails
        path = path.rename(tmp_path / f"objects-{sha256_of(path)[:8]}.pth")
    with (
        pytest.raises(ValueError, match="holds objects other than tensors") as error,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", UnverifiedWeightsWarning)
        create_backbone("resnet18", 2, str(path))
    assert "_Custom" in str(error.value) and "weights_only" not in str(error.value)


def test_missing_weights_file_says_it_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pth"
    with pytest.raises(FileNotFoundError, match=r"missing\.pth: the file does not exist"):
        create_backbone("resnet18", 2, str(missing))
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "torchgeo-dic3l"),
            "fit",
            "--model=DI3CLTask",
            "--model.model=resnet18",
            f"--model.weights={missing}",
            "--data=SyntheticSARPretrainDataModule",
            "--trainer.fast_dev_run=true",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "missing.pth: the file does not exist" in result.stderr
    assert "is not a valid WeightsEnum" not in result.stderr
