"""Backbones, checkpoint extraction, weight files, enums and builders."""

from .backbone import create_backbone, global_pool, resnet_taps, tap_channels
from .checkpoint import extract_backbone
from .export import ExportedWeights, export_weights
from .weights import (
    DI3CLResNet18_Weights,
    DI3CLResNet50_Weights,
    SARWeightsEnum,
    WeightsHashError,
    di3cl_resnet18,
    di3cl_resnet50,
    load_weights,
)

__all__ = [
    "DI3CLResNet18_Weights",
    "DI3CLResNet50_Weights",
    "ExportedWeights",
    "SARWeightsEnum",
    "WeightsHashError",
    "create_backbone",
    "di3cl_resnet18",
    "di3cl_resnet50",
    "export_weights",
    "extract_backbone",
    "global_pool",
    "load_weights",
    "resnet_taps",
    "tap_channels",
]
