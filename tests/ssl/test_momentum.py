import pytest
import torch
from torch import nn

from torchgeo_dic3l.ssl.momentum import cosine_momentum, momentum_copy, update_momentum


def test_momentum_copy_is_exact_and_frozen() -> None:
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    twin = momentum_copy(online)
    for a, b in zip(online.state_dict().values(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert all(not p.requires_grad for p in twin.parameters())
    assert all(p.requires_grad for p in online.parameters())


def test_update_momentum_is_an_ema_of_parameters() -> None:
    online = nn.Linear(2, 2)
    target = momentum_copy(online)
    with torch.no_grad():
        target.weight.fill_(1.0)
        online.weight.fill_(3.0)
    update_momentum(online, target, momentum=0.75)
    assert torch.allclose(target.weight, torch.full((2, 2), 0.75 * 1.0 + 0.25 * 3.0))


def test_update_momentum_one_keeps_target() -> None:
    online = nn.Linear(2, 2)
    target = momentum_copy(online)
    before = target.weight.clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    update_momentum(online, target, momentum=1.0)
    assert torch.equal(target.weight, before)


def test_cosine_momentum_schedule_endpoints() -> None:
    assert cosine_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 50, 100) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 100, 100) == pytest.approx(1.0)
