"""torchgeo-dic3l: DI3CL self-supervised pre-training for SAR as a TorchGeo extension."""

__version__ = "0.1.0"
