import copy

import pytest
import torch
from torch import nn

from torchgeo_dic3l.ssl.split_batch_norm import (
    SplitBatchNorm2d,
    largest_split,
    split_batch_norms,
)


def test_each_group_is_normalized_with_its_own_statistics() -> None:
    torch.manual_seed(0)
    layer = SplitBatchNorm2d(3, splits=4)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0)
        layer.bias.uniform_(-1.0, 1.0)
    # Samples with very different offsets: full-batch statistics would differ from each group's.
    x = torch.randn(8, 3, 5, 5) + torch.arange(8.0).view(8, 1, 1, 1) * 3
    out = layer(x)
    for group in range(4):
        members = torch.arange(group, 8, 4)
        alone = nn.functional.batch_norm(
            x[members], None, None, layer.weight, layer.bias, True, 0.0, layer.eps
        )
        torch.testing.assert_close(out[members], alone)
    full = nn.functional.batch_norm(x, None, None, layer.weight, layer.bias, True, 0.0, layer.eps)
    assert (out - full).abs().max() > 0.5


def test_running_statistics_are_the_mean_over_groups() -> None:
    torch.manual_seed(1)
    layer = SplitBatchNorm2d(2, splits=2, momentum=1.0)
    x = torch.randn(4, 2, 6, 6) * torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)
    layer(x)
    groups = [x[[0, 2]], x[[1, 3]]]
    mean = torch.stack([g.mean(dim=(0, 2, 3)) for g in groups]).mean(0)
    var = torch.stack([g.var(dim=(0, 2, 3), unbiased=True) for g in groups]).mean(0)
    torch.testing.assert_close(layer.running_mean, mean)
    torch.testing.assert_close(layer.running_var, var)
    assert int(layer.num_batches_tracked) == 1


def test_one_split_and_eval_mode_are_plain_batch_norm() -> None:
    torch.manual_seed(2)
    plain = nn.BatchNorm2d(3)
    split = SplitBatchNorm2d(3, splits=1)
    split.load_state_dict(plain.state_dict())
    x = torch.randn(6, 3, 4, 4)
    torch.testing.assert_close(split(x), plain(x))
    torch.testing.assert_close(split.running_mean, plain.running_mean)
    split.splits = 3
    split.eval()
    plain.eval()
    torch.testing.assert_close(split(x), plain(x))


def test_uneven_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="batch of 5 does not split into 2"):
        SplitBatchNorm2d(1, splits=2)(torch.randn(5, 1, 2, 2))


def test_replacement_keeps_state_dict_and_parameter_order() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    with torch.no_grad():
        net[1].running_mean.fill_(0.3)
    net.requires_grad_(False)
    before = copy.deepcopy(net.state_dict())
    names = [name for name, _ in net.named_parameters()]
    layers = split_batch_norms(net)
    assert len(layers) == 2 and all(isinstance(layer, SplitBatchNorm2d) for layer in layers)
    assert [name for name, _ in net.named_parameters()] == names
    after = net.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert not any(p.requires_grad for p in net.parameters())


@pytest.mark.parametrize(
    ("batch", "splits", "expected"),
    [(32, 8, 8), (30, 8, 6), (8, 8, 4), (7, 8, 1), (13, 4, 1), (4, 8, 2), (1, 8, 1)],
)
def test_largest_split_divides_the_batch(batch: int, splits: int, expected: int) -> None:
    assert largest_split(batch, splits) == expected
