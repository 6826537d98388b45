import math

import pytest
import torch
from torchvision.ops import roi_align

from torchgeo_dic3l.ssl.box_features import box_features


def smooth_map(size: int) -> torch.Tensor:
    """``[1, 2, size, size]``: two smooth, non-linear channels sampled at cell centres."""
    y, x = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    return torch.stack(
        [torch.sin(0.9 * x + 0.3) * torch.cos(0.7 * y), (x / size) ** 2 + y / size]
    )[None]


def dense_box_mean(features: torch.Tensor, box: list[float], scale: float) -> torch.Tensor:
    """Mean of the bilinearly interpolated map over a box, from a 400 x 400 sample grid."""
    x0, y0, x1, y1 = (v * scale for v in box)
    steps = 400
    xs = x0 + (torch.arange(steps) + 0.5) / steps * (x1 - x0)
    ys = y0 + (torch.arange(steps) + 0.5) / steps * (y1 - y0)
    h, w = features.shape[-2:]
    # grid_sample with align_corners=False puts cell centres at (i + 0.5) / size.
    grid = torch.stack(torch.meshgrid(xs / w * 2 - 1, ys / h * 2 - 1, indexing="xy"), dim=-1)
    sampled = torch.nn.functional.grid_sample(
        features, grid[None], mode="bilinear", padding_mode="border", align_corners=False
    )
    return sampled.mean(dim=(2, 3))[0]


@pytest.mark.parametrize(
    "box", [[32.0, 32.0, 416.0, 416.0], [0.0, 64.0, 300.0, 200.0], [100.0, 40.0, 164.0, 104.0]]
)
def test_box_feature_is_the_mean_of_the_map_over_the_box(box: list[float]) -> None:
    # A 14 x 14 layer4 map of a 448 px view (stride 32), as in the reference.
    features = smooth_map(14)
    scale = 1 / 32
    expected = dense_box_mean(features, box, scale)
    got = box_features(features, torch.tensor([[0.0, *box]]), 1, scale)[0]
    torch.testing.assert_close(got, expected, atol=0.005, rtol=0.0)


def test_fixed_sampling_would_miss_the_box_mean() -> None:
    # The check above is sensitive: four samples (sampling_ratio=2) of a large box
    # differ from its mean by far more than the tolerance (0.19 against 0.002).
    features = smooth_map(14)
    box = [0.0, 64.0, 300.0, 200.0]
    expected = dense_box_mean(features, box, 1 / 32)
    fixed = roi_align(features, torch.tensor([[0.0, *box]]), 1, 1 / 32, 2, True)[0, :, 0, 0]
    assert (fixed - expected).abs().max() > 0.1


def test_output_cells_are_averaged_and_dtype_is_float32() -> None:
    features = smooth_map(8).to(torch.bfloat16)
    boxes = torch.tensor([[0.0, 0.0, 0.0, 128.0, 128.0], [0.0, 64.0, 32.0, 256.0, 256.0]])
    out = box_features(features, boxes, 2, 1 / 32)
    assert out.shape == (2, 2) and out.dtype == torch.float32
    assert math.isfinite(float(out.sum()))
