import json
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torchgeo.models.api as torchgeo_api
from torchgeo.tasks import SemanticSegmentation
from torchvision.models._api import Weights

from torchgeo_dic3l.models import (
    DI3CLResNet18_Weights,
    DI3CLResNet50_Weights,
    SARWeightsEnum,
    WeightsHashError,
    create_backbone,
    di3cl_resnet18,
    export_weights,
    load_weights,
)
from torchgeo_dic3l.models.export import main as export_main
from torchgeo_dic3l.models.export import ssl_method
from torchgeo_dic3l.models.weights import register_weights
from torchgeo_dic3l.tasks import DI3CLTask, SARMAETask

SMALL = {"model": "resnet18", "in_channels": 2, "size": 64, "memory_bank_size": 16}
SMALL |= {"hidden_dim": 16, "output_dim": 8}


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    task = DI3CLTask(**SMALL)
    with torch.no_grad():
        task.model.conv1.weight.fill_(0.5)
    path = tmp_path / "di3cl.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, path)
    return path


def test_export_names_file_by_hash_and_writes_meta(checkpoint: Path, tmp_path: Path) -> None:
    exported = export_weights(checkpoint, tmp_path / "out", "resnet18_sar", "synthetic", "repo")
    assert exported.path.name == f"resnet18_sar-{exported.sha256[:8]}.pth"
    meta = json.loads(exported.path.with_suffix(".json").read_text())
    assert meta["in_chans"] == 2 and meta["model"] == "resnet18"
    assert meta["ssl_method"] == "di3cl" and meta["bands"] == ["VV", "VH"]
    assert set(meta) >= {"dataset", "publication", "repo"}
    assert "url='https://host/resnet18_sar-" in exported.enum_entry("https://host/")


def test_exported_weights_round_trip_into_timm_and_smp(checkpoint: Path, tmp_path: Path) -> None:
    exported = export_weights(checkpoint, tmp_path, "w", "synthetic", "repo")
    state = load_weights(exported.path)
    timm.create_model("resnet18", in_chans=2, num_classes=0).load_state_dict(state, strict=True)
    smp.Unet("resnet18", encoder_weights=None, in_channels=2).encoder.load_state_dict(state)
    backbone = create_backbone("resnet18", 2, weights=str(exported.path))
    assert torch.all(backbone.conv1.weight == 0.5)


def test_truncated_or_tampered_file_is_rejected_before_unpickling(
    checkpoint: Path, tmp_path: Path
) -> None:
    exported = export_weights(checkpoint, tmp_path, "w", "synthetic", "repo")
    data = exported.path.read_bytes()
    exported.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsHashError, match="truncated, corrupted or was modified"):
        load_weights(exported.path)
    # A malicious pickle under a valid-looking name is never deserialized.
    exported.path.write_bytes(b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(WeightsHashError):
        load_weights(exported.path)


def test_unhashed_name_and_missing_file(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pth"
    torch.save({"a": torch.zeros(1)}, plain)
    with pytest.raises(WeightsHashError, match=r"has no '-<sha256 prefix>\.pth' suffix"):
        load_weights(plain)
    assert torch.equal(load_weights(plain, check_hash=False)["a"], torch.zeros(1))
    with pytest.raises(FileNotFoundError, match=r"nothing-12345678\.pth"):
        load_weights(tmp_path / "nothing-12345678.pth")


def test_export_rejects_bad_name_and_band_count(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="name must be"):
        export_weights(checkpoint, tmp_path, "../evil", "d", "r")
    with pytest.raises(ValueError, match=r"bands \['VV'\] has 1 entries but the backbone"):
        export_weights(checkpoint, tmp_path, "w", "d", "r", bands=["VV"])


def test_ssl_method_names_the_ablation_variants() -> None:
    assert ssl_method({"use_cc": False, "use_di": False}) == "mocov2"
    assert ssl_method({"use_cc": True, "use_di": False}) == "mocov2+cc"
    assert ssl_method({"use_cc": False, "use_di": True}) == "mocov2+di"
    assert ssl_method({"model": "resnet50"}) == "unknown"


def test_export_cli(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export_main(
        [
            str(checkpoint),
            *("--name", "cli", "--dataset", "synthetic", "--repo", "r"),
            *("--output", str(tmp_path / "cli"), "--url-prefix", "https://host/"),
        ]
    )
    printed = capsys.readouterr().out
    files = list((tmp_path / "cli").glob("cli-*.pth"))
    assert len(files) == 1 and str(files[0]) in printed
    assert "weight enum entry:" in printed


def test_enums_without_entries_stay_out_of_torchgeo_registries() -> None:
    # Importing the package registered nothing: neither enum has an entry yet.
    for name, enum in [
        ("di3cl_resnet18", DI3CLResNet18_Weights),
        ("di3cl_resnet50", DI3CLResNet50_Weights),
    ]:
        assert len(enum) == 0
        assert name not in torchgeo_api._model
        assert enum not in torchgeo_api._model_weights.values()
        assert not register_weights(name, di3cl_resnet18, enum)
    assert "di3cl_resnet18" not in torchgeo_api._model


def test_published_enums_hold_no_placeholder_entries() -> None:
    # Entries are added only for weights that are really hosted.
    for member in DI3CLResNet18_Weights:
        assert member.url.startswith("https://")


def test_weight_names_resolve_in_torchgeo_tasks(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exported = export_weights(checkpoint, tmp_path / "hosted", "w", "synthetic", "repo")

    class LocalWeights(SARWeightsEnum):  # type: ignore[misc]
        SYNTHETIC = Weights(url=exported.path.as_uri(), transforms=None, meta=dict(exported.meta))

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torchgeo_api, "_model", dict(torchgeo_api._model))
    monkeypatch.setattr(torchgeo_api, "_model_weights", dict(torchgeo_api._model_weights))
    assert register_weights("local_test", di3cl_resnet18, LocalWeights)
    assert torchgeo_api.get_weight("LocalWeights.SYNTHETIC") is LocalWeights.SYNTHETIC
    assert torchgeo_api.get_model_weights("local_test") is LocalWeights
    model = di3cl_resnet18(LocalWeights.SYNTHETIC, num_classes=0)  # type: ignore[arg-type]
    assert torch.all(model.conv1.weight == 0.5)
    task = SemanticSegmentation(
        model="unet",
        backbone="resnet18",
        weights="LocalWeights.SYNTHETIC",
        in_channels=2,
        num_classes=3,
    )
    assert torch.all(task.model.encoder.conv1.weight == 0.5)
    # The cached copy is verified again on every load.
    cached = next((tmp_path / "torch_home").rglob("w-*.pth"))
    cached.write_bytes(cached.read_bytes()[:100])
    with pytest.raises(WeightsHashError):
        LocalWeights.SYNTHETIC.get_state_dict()


def test_torchgeo_segmentation_accepts_di3cl_checkpoint_path(checkpoint: Path) -> None:
    task = SemanticSegmentation(
        model="unet", backbone="resnet18", weights=str(checkpoint), in_channels=2, num_classes=3
    )
    assert torch.all(task.model.encoder.conv1.weight == 0.5)


@pytest.mark.filterwarnings("ignore:MAEDecoderTIMM is deprecated")
def test_sarmae_vit_round_trips_checkpoint_export_and_hash_checked_load(tmp_path: Path) -> None:
    task = SARMAETask(
        model="vit_tiny_patch16_224",
        in_channels=1,
        size=48,
        decoder_dim=32,
        decoder_num_heads=2,
        sare_db_span=[25.0],
    )
    with torch.no_grad():
        task.backbone.vit.patch_embed.proj.weight.fill_(0.25)
    path = tmp_path / "sarmae.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, path)
    exported = export_weights(path, tmp_path / "out", "vit_tiny_sar", "synthetic", "repo", ["VH"])
    meta = json.loads(exported.path.with_suffix(".json").read_text())
    assert meta["ssl_method"] == "sarmae" and meta["in_chans"] == 1 and meta["img_size"] == 48
    assert meta["publication"] == "https://arxiv.org/abs/2512.16635"
    state = load_weights(exported.path)  # the hash in the name is checked
    vit = timm.create_model(meta["model"], in_chans=1, num_classes=0, img_size=48)
    vit.load_state_dict(state, strict=True)
    assert torch.all(vit.patch_embed.proj.weight == 0.25)
    assert ssl_method({"mask_ratio": 0.75, "sare": False}) == "mae"
