"""Lightning callbacks for pre-training runs."""

from .probe import LinearProbe, ProbeData

__all__ = ["LinearProbe", "ProbeData"]
