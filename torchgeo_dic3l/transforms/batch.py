"""Adapters that apply tensor transforms to TorchGeo sample dictionaries."""

from torch import nn
from torchgeo.datasets.utils import Sample


class ImageOnly(nn.Module):
    """Apply a tensor transform to the ``image`` entry of a sample or batch only.

    Datamodules use this as their ``aug`` so that normalization runs on the device in
    ``on_after_batch_transfer`` while masks and other entries pass through untouched.
    """

    def __init__(self, transform: nn.Module) -> None:
        """Initialize the adapter.

        Args:
            transform: Module applied to ``sample["image"]``.
        """
        super().__init__()
        self.transform = transform

    def forward(self, sample: Sample) -> Sample:
        """Transform the image of a sample dictionary.

        Args:
            sample: Dictionary with an ``image`` tensor.

        Returns:
            A new dictionary with the transformed image and the other entries unchanged.
        """
        return {**sample, "image": self.transform(sample["image"])}
