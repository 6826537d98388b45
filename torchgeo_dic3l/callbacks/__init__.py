"""Lightning callbacks for pre-training runs."""

from .probe import LinearProbe, ProbeData
from .reconstruction import ReconstructionFigure, reconstruction_figure

__all__ = ["LinearProbe", "ProbeData", "ReconstructionFigure", "reconstruction_figure"]
