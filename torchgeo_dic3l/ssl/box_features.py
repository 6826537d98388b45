"""Features of boxes: RoIAlign with adaptive sampling, pooled to one vector per box."""

from torch import Tensor
from torchvision.ops import roi_align


def box_features(
    features: Tensor, boxes: Tensor, output_size: int, spatial_scale: float
) -> Tensor:
    """Mean feature of each box, as DI3CL's Dynamic Instance term reads them.

    RoIAlign samples adaptively (``sampling_ratio=0``: about one bilinear sample per
    feature cell in each bin), so the result approximates the mean of the feature
    map over the whole box, as in the reference; a fixed ratio of 2 would average
    four points per bin however large the box. The ``output_size`` cells are then
    averaged.

    Args:
        features: ``[B, C, h, w]`` feature map; computed in float32 whatever its dtype,
            since box coordinates in bf16 would round by about a pixel.
        boxes: ``[K, 5]`` rows ``(batch index, x0, y0, x1, y1)`` in input pixels.
        output_size: RoIAlign output side.
        spatial_scale: Feature cells per input pixel (``1 / stride``).

    Returns:
        ``[K, C]`` box features.
    """
    rois = roi_align(
        features.float(), boxes, output_size, spatial_scale, sampling_ratio=0, aligned=True
    )
    return rois.mean(dim=(2, 3))
