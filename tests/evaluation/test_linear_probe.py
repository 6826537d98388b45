import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from torchgeo_dic3l.benchmark.metrics import segmentation_scores
from torchgeo_dic3l.evaluation import MultiScaleLinearHead, fit_linear_head, predict_linear_head

CLASSES = ["a", "b", "c", "d"]


def _random_head(channels: list[int], num_classes: int) -> MultiScaleLinearHead:
    generator = torch.Generator().manual_seed(1)
    head = MultiScaleLinearHead(channels, num_classes)
    with torch.no_grad():
        for stage in head.stages:
            stage.conv.weight.normal_(generator=generator)
            stage.conv.bias.normal_(generator=generator)
            stage.mean.normal_(generator=generator)
            stage.std.uniform_(0.5, 2.0, generator=generator)
    return head


def _stages(batch: int, shapes: list[tuple[int, int, int]], seed: int = 0) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, h, w, generator=generator) for c, h, w in shapes]


# Coarser and finer than the output, and a stage with a single row.
SHAPES = [(4, 10, 13), (5, 5, 7), (6, 1, 2), (3, 40, 60)]
SIZE = (37, 50)


def test_head_equals_one_conv_over_the_concatenated_upsampled_features() -> None:
    head = _random_head([c for c, _, _ in SHAPES], 3)
    stages = _stages(2, SHAPES)
    standardized = [
        (x - s.mean[None, :, None, None]) / s.std[None, :, None, None]
        for x, s in zip(stages, head.stages, strict=True)
    ]
    upsampled = torch.cat(
        [F.interpolate(x, size=SIZE, mode="bilinear", align_corners=False) for x in standardized],
        dim=1,
    )
    weight = torch.cat([s.conv.weight for s in head.stages], dim=1)
    bias = torch.stack([s.conv.bias for s in head.stages]).sum(0)
    expected = F.conv2d(upsampled, weight, bias)
    with torch.no_grad():
        actual = head(stages, SIZE)
    assert actual.shape == (2, 3, *SIZE)
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_sampled_logits_equal_the_full_map_at_those_pixels() -> None:
    head = _random_head([c for c, _, _ in SHAPES], 3)
    stages = _stages(2, SHAPES)
    generator = torch.Generator().manual_seed(2)
    rows = torch.randint(SIZE[0], (2, 300), generator=generator)
    cols = torch.randint(SIZE[1], (2, 300), generator=generator)
    # The corners and edges, where the source coordinates are clamped.
    rows[:, :4] = torch.tensor([0, 0, SIZE[0] - 1, SIZE[0] - 1])
    cols[:, :4] = torch.tensor([0, SIZE[1] - 1, 0, SIZE[1] - 1])
    with torch.no_grad():
        full = head(stages, SIZE)
        sampled = head.sample(stages, rows, cols, SIZE)
    expected = full[torch.arange(2)[:, None], :, rows, cols].permute(0, 2, 1)
    torch.testing.assert_close(sampled, expected, atol=1e-4, rtol=1e-4)


def test_a_new_head_predicts_uniformly_and_draws_no_random_numbers() -> None:
    state = torch.get_rng_state()
    head = MultiScaleLinearHead([8, 16], 5)
    assert torch.equal(torch.get_rng_state(), state)
    with torch.no_grad():
        logits = head(_stages(1, [(8, 4, 4), (16, 2, 2)]), (8, 8))
    assert torch.equal(logits, torch.zeros(1, 5, 8, 8))


def _encoded(count: int, seed: int, informative: bool) -> tuple[list[Tensor], Tensor]:
    """Masks of 8x8 blocks of random classes; the features one-hot encode them or not."""
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randint(len(CLASSES), (count, 4, 4), generator=generator)
    masks = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)  # [N, 32, 32]
    noise = torch.randn(count, 8, 8, 8, generator=generator)
    if informative:
        # One stage at 1/8 of the label resolution, one cell per block: the label is a
        # linear function of these features (plus noise channels).
        onehot = F.one_hot(blocks, len(CLASSES)).permute(0, 3, 1, 2).float()
        coarse = torch.cat([3 * onehot, torch.randn(count, 4, 4, 4, generator=generator)], 1)
    else:
        coarse = torch.randn(count, 8, 4, 4, generator=generator)
    return [noise, coarse], masks


def _fit_and_score(informative: bool) -> float:
    train, train_masks = _encoded(24, 0, informative)
    val, val_masks = _encoded(12, 1, informative)
    head = fit_linear_head(train, train_masks, len(CLASSES), steps=150, batch_size=8)
    prediction = predict_linear_head(head, val, (32, 32), batch_size=5)
    assert prediction.shape == val_masks.shape and prediction.dtype == torch.int64
    scores = segmentation_scores(prediction, val_masks, CLASSES)
    assert scores.miou is not None
    return scores.miou


def test_features_that_encode_the_label_give_a_near_perfect_probe() -> None:
    # Only the pixels on block borders, where bilinear upsampling mixes two blocks'
    # features, can be wrong.
    assert _fit_and_score(informative=True) > 0.85


def test_random_features_give_a_probe_near_chance() -> None:
    # Random guessing among 4 balanced classes: IoU 1 / 7 per class.
    assert _fit_and_score(informative=False) < 0.25


def test_fit_sets_the_standardization_from_the_training_features() -> None:
    stages = [3 + 2 * torch.randn(6, 4, 5, 5), torch.rand(6, 2, 3, 3)]
    masks = torch.randint(2, (6, 10, 10))
    head = fit_linear_head(stages, masks, 2, steps=1)
    for stage, module in zip(stages, head.stages, strict=True):
        torch.testing.assert_close(module.mean, stage.mean(dim=(0, 2, 3)))
        torch.testing.assert_close(module.std, stage.std(dim=(0, 2, 3)))


def test_fit_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    stages, masks = _encoded(8, 0, informative=True)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = fit_linear_head(stages, masks, len(CLASSES), steps=20, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    second = fit_linear_head(stages, masks, len(CLASSES), steps=20, seed=3)
    other = fit_linear_head(stages, masks, len(CLASSES), steps=20, seed=4)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first.stages[0].conv.weight, other.stages[0].conv.weight)


def test_ignored_pixels_do_not_train_the_head() -> None:
    stages, masks = _encoded(16, 0, informative=True)
    # Relabel half of every image with a class that contradicts its features, then
    # ignore exactly those pixels: the fit must not see the wrong labels.
    corrupted = masks.clone()
    corrupted[:, :, :16] = (masks[:, :, :16] + 1) % len(CLASSES)
    ignored = corrupted.clone()
    ignored[:, :, :16] = 255
    val, val_masks = _encoded(8, 1, informative=True)
    scores = {}
    for name, target in (("corrupted", corrupted), ("ignored", ignored)):
        head = fit_linear_head(
            stages, target, len(CLASSES), ignore_index=255, steps=150, batch_size=8
        )
        prediction = predict_linear_head(head, val, (32, 32))
        scores[name] = segmentation_scores(prediction, val_masks, CLASSES).miou
    assert scores["ignored"] > 0.85
    assert scores["corrupted"] < 0.6


def test_fit_rejects_bad_inputs() -> None:
    stages = [torch.randn(4, 3, 2, 2)]
    masks = torch.zeros(4, 8, 8, dtype=torch.int64)
    with pytest.raises(ValueError, match="no labelled pixel"):
        fit_linear_head(stages, torch.full_like(masks, 255), 2, ignore_index=255)
    with pytest.raises(ValueError, match=r"stage 0 has shape \(4, 3, 2, 2\)"):
        fit_linear_head(stages, masks[:3], 2)
    with pytest.raises(ValueError, match="integer"):
        fit_linear_head(stages, masks.float(), 2)
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\)"):
        fit_linear_head(stages, masks + 2, 2)
    with pytest.raises(ValueError, match="at least one stage"):
        fit_linear_head([], masks, 2)
    with pytest.raises(ValueError, match="stage 0 needs"):
        MultiScaleLinearHead([5], 2)(stages, (8, 8))
