"""Segmentation scores from a confusion matrix: OA, Cohen's kappa, IoU and F1.

The confusion matrix is accumulated with torchmetrics
(:class:`~torchmetrics.classification.MulticlassConfusionMatrix`), which drops pixels
whose target is ``ignore_index``; every score is then derived from that one matrix, so
all of them see exactly the same pixels.

Undefined values are ``None`` rather than NaN: the IoU and F1 of a class absent from
the target, and every score of an empty matrix. The mIoU averages the defined
per-class IoUs only. A class without test pixels cannot be scored: counting it as 0
when some pixel was predicted as it (torchmetrics' ``average="macro"`` does) would
pull the mIoU down for a property of the split, not of the model; its false
positives still lower the IoU of the classes those pixels belong to, and the OA.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix


def confusion_matrix_metric(
    num_classes: int, ignore_index: int | None
) -> MulticlassConfusionMatrix:
    """Create the torchmetrics accumulator used for all scores.

    Args:
        num_classes: Number of classes K.
        ignore_index: Target value whose pixels are left out, or None.

    Returns:
        A metric whose ``compute()`` is the ``[K, K]`` matrix, rows = target,
        columns = prediction.
    """
    return MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index)


def confusion_matrix(
    prediction: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None
) -> Tensor:
    """Confusion matrix of class-index maps, without the ignored pixels.

    Args:
        prediction: Predicted class indices, any shape.
        target: Target class indices (or ``ignore_index``), same shape.
        num_classes: Number of classes K.
        ignore_index: Target value whose pixels are left out, or None.

    Returns:
        int64 ``[K, K]`` counts, rows = target, columns = prediction.

    Raises:
        ValueError: If the shapes differ.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction has shape {tuple(prediction.shape)} but target has {tuple(target.shape)}"
        )
    metric = confusion_matrix_metric(num_classes, ignore_index)
    return metric(prediction.reshape(-1), target.reshape(-1)).long()


@dataclass(frozen=True)
class SegmentationScores:
    """Scores of one evaluation, all in [0, 1] (kappa in [-1, 1]).

    Attributes:
        oa: Overall accuracy, correct pixels / evaluated pixels.
        kappa: Cohen's kappa.
        miou: Mean of the defined per-class IoUs.
        iou_per_class: Class name -> IoU, None where the class is absent from the
            target.
        f1_per_class: Class name -> F1, None where the class is absent from the target.
        num_pixels: Number of evaluated (not ignored) pixels.
    """

    oa: float | None
    kappa: float | None
    miou: float | None
    iou_per_class: dict[str, float | None]
    f1_per_class: dict[str, float | None]
    num_pixels: int


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def cohen_kappa(matrix: Tensor) -> float | None:
    """Cohen's kappa of a confusion matrix.

    Args:
        matrix: ``[K, K]`` counts, rows = target, columns = prediction.

    Returns:
        ``(p_o - p_e) / (1 - p_e)``; 1.0 when chance agreement is already perfect
        (one class everywhere, predicted everywhere); None for an empty matrix.
    """
    counts = matrix.double()
    total = counts.sum().item()
    if total == 0:
        return None
    observed = counts.trace().item() / total
    expected = (counts.sum(1) * counts.sum(0)).sum().item() / total**2
    if expected >= 1.0:
        # p_o = p_e = 1: a single class, and it was predicted everywhere.
        return 1.0
    return (observed - expected) / (1.0 - expected)


def scores_from_confusion(matrix: Tensor, classes: Sequence[str]) -> SegmentationScores:
    """Derive all scores from a confusion matrix.

    Args:
        matrix: ``[K, K]`` counts, rows = target, columns = prediction.
        classes: The K class names, in class-index order.

    Returns:
        The scores.

    Raises:
        ValueError: If the matrix is not ``[K, K]`` for the K class names or holds
            negative counts.
    """
    k = len(classes)
    if matrix.shape != (k, k):
        raise ValueError(
            f"confusion matrix has shape {tuple(matrix.shape)}; expected ({k}, {k}) for "
            f"classes {list(classes)}"
        )
    if (matrix < 0).any():
        raise ValueError("confusion matrix holds negative counts")
    counts = matrix.double()
    total = counts.sum().item()
    true_positive = counts.diagonal()
    false_positive = counts.sum(0) - true_positive
    false_negative = counts.sum(1) - true_positive
    iou: dict[str, float | None] = {}
    f1: dict[str, float | None] = {}
    for index, name in enumerate(classes):
        tp, fp, fn = (float(v[index]) for v in (true_positive, false_positive, false_negative))
        present = tp + fn > 0
        iou[name] = _ratio(tp, tp + fp + fn) if present else None
        f1[name] = _ratio(2 * tp, 2 * tp + fp + fn) if present else None
    defined = [value for value in iou.values() if value is not None]
    return SegmentationScores(
        oa=_ratio(float(true_positive.sum()), total),
        kappa=cohen_kappa(matrix),
        miou=sum(defined) / len(defined) if defined else None,
        iou_per_class=iou,
        f1_per_class=f1,
        num_pixels=int(total),
    )


def segmentation_scores(
    prediction: Tensor,
    target: Tensor,
    classes: Sequence[str],
    ignore_index: int | None = None,
) -> SegmentationScores:
    """Scores of class-index maps, ignoring pixels whose target is ``ignore_index``.

    Args:
        prediction: Predicted class indices, any shape.
        target: Target class indices (or ``ignore_index``), same shape.
        classes: Class names in class-index order.
        ignore_index: Target value to leave out, or None.

    Returns:
        The scores.
    """
    matrix = confusion_matrix(prediction, target, len(classes), ignore_index)
    return scores_from_confusion(matrix, classes)


__all__ = [
    "SegmentationScores",
    "cohen_kappa",
    "confusion_matrix",
    "confusion_matrix_metric",
    "scores_from_confusion",
    "segmentation_scores",
]
