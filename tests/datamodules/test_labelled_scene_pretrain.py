from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from torchgeo_dic3l.datamodules import (
    LabelledSARSceneDataModule,
    LabelledSARScenePretrainDataModule,
)

from .test_labelled_scene import scene  # noqa: F401  (the generated scene fixture)


def test_serves_the_training_region_images_without_masks(
    scene: dict[str, Any],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    options = scene | {"label_fraction": 0.25}
    pretrain = LabelledSARScenePretrainDataModule(**options)
    pretrain.setup("fit")
    downstream = LabelledSARSceneDataModule(**(scene | {"label_fraction": 1.0}))
    downstream.setup("fit")
    downstream.setup("test")
    # The same split as the downstream benchmark, every training patch (label_fraction
    # ignored), the same normalization range, and images only.
    assert len(pretrain.train_dataset) == len(downstream.train_dataset)  # type: ignore[arg-type]
    assert pretrain.low == downstream.low and pretrain.high == downstream.high
    sample = pretrain.train_dataset[0]  # type: ignore[index]
    assert set(sample) == {"image"}
    assert torch.equal(sample["image"], downstream.train_dataset[0]["image"])  # type: ignore[index]
    served = {
        tuple(pretrain.train_dataset.dataset.patches[i])  # type: ignore[union-attr]
        for i in range(len(pretrain.train_dataset))  # type: ignore[arg-type]
    }
    test_patches = {tuple(p) for p in downstream.test_dataset.patches}  # type: ignore[union-attr]
    assert served and not served & test_patches
    batch = next(iter(pretrain.train_dataloader()))
    assert set(batch) == {"image"} and batch["image"].shape[1:] == (2, 16, 16)
    assert "training and" in capsys.readouterr().out


def test_test_stage_is_refused(scene: dict[str, Any]) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="test region stays unseen"):
        LabelledSARScenePretrainDataModule(**scene).setup("test")


def test_real_san_francisco_training_region(polsar_sf: Path) -> None:
    dm = LabelledSARScenePretrainDataModule(
        images=[str(polsar_sf / "T3" / "T33.bin")],
        label=str(polsar_sf / "SF-AIRSAR-label2d.png"),
        classes=["bare_soil", "mountain", "water", "urban", "vegetation"],
        label_values=[1, 2, 3, 4, 5],
        ignore_values=[0],
        bands=["T33"],
        patch_size=64,
        gap=16,
        block_size=128,
        split_seed=20,
        split_method="random",  # the SF benchmark layout: 73 training patches
    )
    dm.setup("fit")
    assert len(dm.train_dataset) == 73  # type: ignore[arg-type]
    image = dm.train_dataset[0]["image"]  # type: ignore[index]
    assert image.shape == (1, 64, 64) and bool(np.isfinite(image.numpy()).all())
