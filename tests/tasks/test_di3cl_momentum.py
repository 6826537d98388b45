"""The momentum encoders: frozen copies that follow the online modules by EMA."""

import pytest
import torch
from torch import nn

from torchgeo_dic3l.tasks import DI3CLTask
from torchgeo_dic3l.tasks.di3cl import momentum_twin

SMALL = {
    "model": "resnet18",
    "in_channels": 1,
    "size": 64,
    "memory_bank_size": 64,
    "hidden_dim": 32,
    "output_dim": 16,
    "boxes": {"boxes_per_image": 2},
}


def test_momentum_twin_is_exact_and_frozen() -> None:
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    twin = momentum_twin(online)
    for a, b in zip(online.state_dict().values(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert all(not p.requires_grad for p in twin.parameters())
    assert all(p.requires_grad for p in online.parameters())


@pytest.mark.parametrize(("use_cc", "use_di"), [(True, True), (False, False), (True, False)])
def test_every_momentum_module_is_paired_with_its_online_module(
    use_cc: bool, use_di: bool
) -> None:
    task = DI3CLTask(**SMALL, use_cc=use_cc, use_di=use_di)
    children = dict(task.named_children())
    twins = {name for name in children if name.endswith("_momentum")}
    pairs = {(id(online), id(twin)) for online, twin in task.momentum_pairs}
    expected = {
        (id(children[name.removesuffix("_momentum")]), id(children[name])) for name in twins
    }
    assert pairs == expected
    assert len(task.momentum_pairs) == 2 + use_cc + use_di


def test_update_is_an_ema_of_parameters_and_leaves_buffers_alone() -> None:
    task = DI3CLTask(**SMALL)
    with torch.no_grad():
        for online, twin in task.momentum_pairs:
            for parameter in twin.parameters():
                parameter.fill_(1.0)
            for parameter in online.parameters():
                parameter.fill_(3.0)
            for buffer in online.buffers():
                buffer.fill_(7)
    twin_buffers = [b.clone() for _, twin in task.momentum_pairs for b in twin.buffers()]
    task.update_momentum_encoders(0.75)
    for online, twin in task.momentum_pairs:
        for parameter in twin.parameters():
            assert torch.allclose(parameter, torch.full_like(parameter, 0.75 + 0.25 * 3.0))
        assert all(bool((p == 3.0).all()) for p in online.parameters())
    after = [b for _, twin in task.momentum_pairs for b in twin.buffers()]
    assert twin_buffers and all(
        torch.equal(a, b) for a, b in zip(twin_buffers, after, strict=True)
    )


def test_momentum_one_keeps_the_twins() -> None:
    task = DI3CLTask(**SMALL)
    before = [p.clone() for _, twin in task.momentum_pairs for p in twin.parameters()]
    with torch.no_grad():
        for online, _ in task.momentum_pairs:
            for parameter in online.parameters():
                parameter.add_(1.0)
    task.update_momentum_encoders(1.0)
    after = [p for _, twin in task.momentum_pairs for p in twin.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
