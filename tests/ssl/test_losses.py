import math

import pytest
import torch
import torch.nn.functional as F

from torchgeo_dic3l.ssl.losses import (
    info_nce,
    info_nce_loss,
    masked_regression_loss,
    top1_accuracy,
)


def test_info_nce_matches_hand_computed_example() -> None:
    query = torch.tensor([[1.0, 0.0]])
    key = torch.tensor([[1.0, 0.0]])
    negatives = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    logits = info_nce(query, key, negatives, temperature=0.5)
    assert torch.allclose(logits, torch.tensor([[2.0, 0.0, -2.0]]))
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(0) + math.exp(-2)))
    assert info_nce_loss(logits).item() == pytest.approx(expected, rel=1e-6)


def test_top1_accuracy_counts_rows_whose_positive_wins() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    assert top1_accuracy(logits).item() == pytest.approx(0.5)


def test_regression_loss_hand_computed_and_masked() -> None:
    prediction = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    target = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    valid = torch.tensor([True, True, False])
    # Row 0: cos = 1 -> 0; row 1: cos = 0 -> 2; row 2 is masked out.
    assert masked_regression_loss(prediction, target, valid).item() == pytest.approx(1.0)


def test_regression_loss_without_valid_rows_is_zero_and_differentiable() -> None:
    prediction = torch.randn(4, 3, requires_grad=True)
    loss = masked_regression_loss(prediction, torch.randn(4, 3), torch.zeros(4, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert prediction.grad is not None
    assert torch.count_nonzero(prediction.grad) == 0


def test_regression_loss_does_not_backpropagate_into_target() -> None:
    target = torch.randn(3, 4, requires_grad=True)
    loss = masked_regression_loss(torch.randn(3, 4), target, torch.ones(3, dtype=torch.bool))
    assert not loss.requires_grad


def test_info_nce_loss_is_low_when_positive_dominates() -> None:
    query = F.normalize(torch.randn(8, 16), dim=1)
    negatives = F.normalize(torch.randn(64, 16), dim=1)
    good = info_nce_loss(info_nce(query, query, negatives, 0.1))
    bad = info_nce_loss(info_nce(query, -query, negatives, 0.1))
    assert good < bad
