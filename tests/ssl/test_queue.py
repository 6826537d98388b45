import pytest
import torch

from torchgeo_dic3l.ssl.queue import KeyQueue


def test_enqueue_writes_at_pointer_and_advances() -> None:
    queue = KeyQueue(size=8, dim=3)
    keys = torch.arange(9.0).view(3, 3)
    queue.enqueue(keys)
    assert torch.equal(queue.keys[:3], keys)
    assert int(queue.ptr) == 3


def test_enqueue_wraps_around_instead_of_dropping() -> None:
    queue = KeyQueue(size=5, dim=2)
    queue.enqueue(torch.zeros(4, 2))
    new = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    queue.enqueue(new)
    # Slots 4, 0, 1 receive the three keys in order.
    assert torch.equal(queue.keys[4], new[0])
    assert torch.equal(queue.keys[0], new[1])
    assert torch.equal(queue.keys[1], new[2])
    assert int(queue.ptr) == 2


def test_enqueue_more_than_size_keeps_the_latest_keys() -> None:
    queue = KeyQueue(size=4, dim=1)
    queue.enqueue(torch.arange(6.0).view(6, 1))
    # Sequential enqueueing of 0..5 leaves slots 0..3 as 4, 5, 2, 3.
    assert queue.keys.flatten().tolist() == [4.0, 5.0, 2.0, 3.0]
    assert int(queue.ptr) == 2


def test_queue_state_survives_state_dict_round_trip() -> None:
    queue = KeyQueue(size=6, dim=4)
    queue.enqueue(torch.randn(5, 4))
    restored = KeyQueue(size=6, dim=4)
    restored.load_state_dict(queue.state_dict())
    assert torch.equal(restored.keys, queue.keys)
    assert int(restored.ptr) == 5
    batch = torch.randn(2, 4)
    queue.enqueue(batch)
    restored.enqueue(batch)
    assert torch.equal(restored.keys, queue.keys)


def test_queue_rejects_wrong_dimension() -> None:
    queue = KeyQueue(size=4, dim=3)
    with pytest.raises(ValueError, match=r"expected keys of shape \[N, 3\]"):
        queue.enqueue(torch.zeros(2, 5))


def test_queue_rejects_non_positive_size() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        KeyQueue(size=0, dim=3)
