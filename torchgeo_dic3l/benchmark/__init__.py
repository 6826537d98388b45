"""Downstream segmentation benchmark: fine-tune pre-trained SAR backbones and compare them.

:mod:`.grid` describes the grid (inits x tasks x decoders x protocols x label
fractions x seeds), :mod:`.finetune` runs one run with TorchGeo's
``SemanticSegmentation`` (:mod:`.cached` trains on a frozen encoder's features
computed once), :mod:`.runner` runs a grid, :mod:`.metrics` scores
predictions, :mod:`.report` and :mod:`.figures` write tables and figures. The
command-line front end is ``experiments/benchmark.py``.
"""

from .figures import plot_f1_bars, plot_prediction_maps, write_figures
from .finetune import InitError, RunResult, build_model, build_task_data, finetune
from .grid import GridSpec, InitSpec, RunSpec, TaskSpec, TrainingSpec, scene_task
from .metrics import (
    SegmentationScores,
    confusion_matrix,
    scores_from_confusion,
    segmentation_scores,
)
from .report import format_markdown, read_results_json, summarize, write_results_json
from .runner import run_grid

__all__ = [
    "GridSpec",
    "InitError",
    "InitSpec",
    "RunResult",
    "RunSpec",
    "SegmentationScores",
    "TaskSpec",
    "TrainingSpec",
    "build_model",
    "build_task_data",
    "confusion_matrix",
    "finetune",
    "format_markdown",
    "plot_f1_bars",
    "plot_prediction_maps",
    "read_results_json",
    "run_grid",
    "scene_task",
    "scores_from_confusion",
    "segmentation_scores",
    "summarize",
    "write_figures",
    "write_results_json",
]
