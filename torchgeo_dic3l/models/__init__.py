"""Backbones, heads and checkpoint utilities."""

from .backbone import create_backbone, global_pool, resnet_taps, tap_channels
from .checkpoint import extract_backbone
from .heads import ProjectionHead

__all__ = [
    "ProjectionHead",
    "create_backbone",
    "extract_backbone",
    "global_pool",
    "resnet_taps",
    "tap_channels",
]
