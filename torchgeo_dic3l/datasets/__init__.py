"""SAR datasets: chip folders (alone or with optical pairs), scenes, labelled scenes, synthetic."""

from .chips import SARChips
from .labelled_scene import LabelledSARScene
from .paired import PairedSARChips
from .scenes import SARScenes
from .synthetic import SyntheticSARPretrain, SyntheticSARSegmentation
from .synthetic_world import CLASS_BACKSCATTER, LANDCOVER_CLASSES, SyntheticScene, simulate_scene

__all__ = [
    "CLASS_BACKSCATTER",
    "LANDCOVER_CLASSES",
    "LabelledSARScene",
    "PairedSARChips",
    "SARChips",
    "SARScenes",
    "SyntheticSARPretrain",
    "SyntheticSARSegmentation",
    "SyntheticScene",
    "simulate_scene",
]
