"""Lightning tasks."""

from .di3cl import DI3CLTask

__all__ = ["DI3CLTask"]
