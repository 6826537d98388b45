"""Lightning tasks."""

from .di3cl import DI3CLTask
from .sarmae import SARMAETask

__all__ = ["DI3CLTask", "SARMAETask"]
