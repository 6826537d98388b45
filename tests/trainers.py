"""A quiet CPU Trainer for task and callback tests (no logger, checkpoints or bars)."""

from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer


def quiet_trainer(root: Path, **options: Any) -> Trainer:
    """A CPU Trainer that writes nothing and prints little; ``options`` override.

    Args:
        root: ``default_root_dir``.
        **options: Further or different ``Trainer`` arguments.

    Returns:
        The trainer.
    """
    defaults: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(root),
    }
    return Trainer(**(defaults | options))
