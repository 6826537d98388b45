"""SAR datasets: chip folders, Sentinel-1 scenes, labelled scenes and the synthetic world."""

from .chips import SARChips
from .labelled_scene import LabelledSARScene
from .scenes import SARScenes
from .synthetic import SyntheticSARPretrain, SyntheticSARSegmentation
from .synthetic_world import CLASS_BACKSCATTER, LANDCOVER_CLASSES, SyntheticScene, simulate_scene

__all__ = [
    "CLASS_BACKSCATTER",
    "LANDCOVER_CLASSES",
    "LabelledSARScene",
    "SARChips",
    "SARScenes",
    "SyntheticSARPretrain",
    "SyntheticSARSegmentation",
    "SyntheticScene",
    "simulate_scene",
]
