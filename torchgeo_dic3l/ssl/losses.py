"""Loss functions of DI3CL as pure functions."""

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(query: Tensor, key: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """InfoNCE logits of MoCo: the positive key first, then the queue of negatives.

    Args:
        query: ``[B, D]`` L2-normalized query embeddings.
        key: ``[B, D]`` L2-normalized positive keys (no gradient expected).
        negatives: ``[K, D]`` L2-normalized negative keys.
        temperature: Softmax temperature (tau).

    Returns:
        ``[B, 1 + K]`` logits; the target class of every row is 0.
    """
    positive = (query * key).sum(dim=1, keepdim=True)
    negative = query @ negatives.t()
    return torch.cat([positive, negative], dim=1) / temperature


def info_nce_loss(logits: Tensor) -> Tensor:
    """Cross-entropy of InfoNCE logits whose positive is at index 0.

    Args:
        logits: ``[B, 1 + K]`` logits from :func:`info_nce`.

    Returns:
        Scalar mean loss.
    """
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def top1_accuracy(logits: Tensor) -> Tensor:
    """Fraction of rows whose positive (index 0) has the highest logit.

    Args:
        logits: ``[B, 1 + K]`` logits from :func:`info_nce`.

    Returns:
        Scalar tensor in [0, 1] (stays on the device).
    """
    return (logits.argmax(dim=1) == 0).float().mean()


def masked_regression_loss(prediction: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """BYOL regression loss ``2 - 2 cos(p, z)`` averaged over valid rows only.

    Invalid rows contribute nothing; with no valid row the loss is exactly 0 (and
    still connected to the graph), so a batch without box pairs trains the other
    terms without a host-side check.

    Args:
        prediction: ``[N, D]`` predictor outputs (online side).
        target: ``[N, D]`` projections of the momentum side (no gradient expected).
        valid: ``[N]`` boolean mask of rows that hold a real box pair.

    Returns:
        Scalar loss.
    """
    cosine = F.cosine_similarity(prediction, target.detach(), dim=1)
    weight = valid.to(prediction.dtype)
    return ((2.0 - 2.0 * cosine) * weight).sum() / weight.sum().clamp_min(1.0)
