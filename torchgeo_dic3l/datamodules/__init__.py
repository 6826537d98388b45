"""Lightning datamodules that normalize SAR batches on the device."""

from .chips import SARChipsDataModule
from .labelled_scene import LabelledSARSceneDataModule
from .labelled_scene_pretrain import LabelledSARScenePretrainDataModule
from .paired import PairedSARChipsDataModule
from .scenes import SARScenesDataModule
from .synthetic import SyntheticSARPretrainDataModule, SyntheticSARSegmentationDataModule

__all__ = [
    "LabelledSARSceneDataModule",
    "LabelledSARScenePretrainDataModule",
    "PairedSARChipsDataModule",
    "SARChipsDataModule",
    "SARScenesDataModule",
    "SyntheticSARPretrainDataModule",
    "SyntheticSARSegmentationDataModule",
]
