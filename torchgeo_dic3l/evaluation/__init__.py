"""Evaluation of frozen backbones: multi-scale features and a linear segmentation probe.

:mod:`.features` finds the backbone of a self-supervised task and runs its stages;
:mod:`.linear_probe` fits and applies a linear head on those features. The
:class:`~torchgeo_dic3l.callbacks.LinearProbe` callback runs both during pre-training.
"""

from .features import input_channels, ssl_backbone, stage_features
from .linear_probe import MultiScaleLinearHead, fit_linear_head, predict_linear_head

__all__ = [
    "MultiScaleLinearHead",
    "fit_linear_head",
    "input_channels",
    "predict_linear_head",
    "ssl_backbone",
    "stage_features",
]
