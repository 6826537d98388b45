import pytest
import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_cohen_kappa,
    multiclass_f1_score,
    multiclass_jaccard_index,
)

from torchgeo_dic3l.benchmark.metrics import (
    cohen_kappa,
    confusion_matrix,
    scores_from_confusion,
    segmentation_scores,
)

CLASSES = ["a", "b", "c"]


def _pairs(matrix: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Target and prediction vectors realizing a confusion matrix (rows = target)."""
    target, prediction = [], []
    for t, row in enumerate(matrix):
        for p, count in enumerate(row):
            target += [t] * count
            prediction += [p] * count
    return torch.tensor(prediction), torch.tensor(target)


# 10 pixels: 7 correct. Row sums (target) 4, 3, 3; column sums (prediction) 4, 3, 3.
MATRIX = [[3, 1, 0], [0, 2, 1], [1, 0, 2]]


def test_confusion_matrix_counts_rows_as_target() -> None:
    prediction, target = _pairs(MATRIX)
    assert confusion_matrix(prediction, target, 3).tolist() == MATRIX


def test_hand_computed_scores() -> None:
    prediction, target = _pairs(MATRIX)
    scores = segmentation_scores(prediction, target, CLASSES)
    assert scores.num_pixels == 10
    assert scores.oa == pytest.approx(0.7)
    # p_e = (4*4 + 3*3 + 3*3) / 100 = 0.34; kappa = (0.7 - 0.34) / 0.66
    assert scores.kappa == pytest.approx(0.36 / 0.66)
    # IoU = TP / (TP + FP + FN): a 3/5, b 2/4, c 2/4
    assert scores.iou_per_class == pytest.approx({"a": 0.6, "b": 0.5, "c": 0.5})
    assert scores.miou == pytest.approx(1.6 / 3)
    # F1 = 2TP / (2TP + FP + FN): a 6/8, b 4/6, c 4/6
    assert scores.f1_per_class == pytest.approx({"a": 0.75, "b": 4 / 6, "c": 4 / 6})


def test_ignore_index_pixels_change_nothing() -> None:
    prediction, target = _pairs(MATRIX)
    noisy_prediction = torch.cat([prediction, torch.tensor([0, 1, 2, 2])])
    ignored_target = torch.cat([target, torch.full((4,), 255)])
    with_ignored = segmentation_scores(noisy_prediction, ignored_target, CLASSES, ignore_index=255)
    assert with_ignored == segmentation_scores(prediction, target, CLASSES)
    assert with_ignored.num_pixels == 10


def test_absent_class_is_undefined_and_left_out_of_miou() -> None:
    # Class c appears in neither target nor prediction.
    prediction, target = _pairs([[2, 1, 0], [1, 4, 0], [0, 0, 0]])
    scores = segmentation_scores(prediction, target, CLASSES)
    assert scores.iou_per_class["c"] is None
    assert scores.f1_per_class["c"] is None
    assert scores.miou == pytest.approx((2 / 4 + 4 / 6) / 2)


def test_class_absent_from_target_but_predicted_is_left_out_of_miou() -> None:
    # No test pixel of class c, yet one pixel of a was predicted as c: c cannot be
    # scored (it used to enter the mIoU as 0), while the miss still lowers a's IoU.
    prediction, target = _pairs([[2, 0, 1], [0, 3, 0], [0, 0, 0]])
    scores = segmentation_scores(prediction, target, CLASSES)
    assert scores.iou_per_class["c"] is None and scores.f1_per_class["c"] is None
    assert scores.iou_per_class["a"] == pytest.approx(2 / 3)
    assert scores.miou == pytest.approx((2 / 3 + 1.0) / 2)
    assert scores.oa == pytest.approx(5 / 6)


def test_class_in_target_never_predicted_scores_zero() -> None:
    prediction, target = _pairs([[2, 0, 0], [0, 3, 0], [1, 0, 0]])
    scores = segmentation_scores(prediction, target, CLASSES)
    assert scores.iou_per_class["c"] == 0.0 and scores.f1_per_class["c"] == 0.0
    assert scores.miou == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_empty_matrix_has_no_scores() -> None:
    scores = scores_from_confusion(torch.zeros(3, 3, dtype=torch.long), CLASSES)
    assert (scores.oa, scores.kappa, scores.miou, scores.num_pixels) == (None, None, None, 0)


def test_kappa_edge_cases() -> None:
    # One class everywhere, predicted everywhere: perfect agreement.
    assert cohen_kappa(torch.tensor([[5, 0], [0, 0]])) == 1.0
    # Predictions independent of the target: no agreement beyond chance.
    assert cohen_kappa(torch.tensor([[2, 2], [2, 2]])) == pytest.approx(0.0)
    # Always wrong on two balanced classes.
    assert cohen_kappa(torch.tensor([[0, 5], [5, 0]])) == pytest.approx(-1.0)


def test_agrees_with_torchmetrics_on_random_maps() -> None:
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (2, 32, 32), generator=generator)
    prediction = torch.where(
        torch.rand(target.shape, generator=generator) < 0.6,
        target,
        torch.randint(0, 4, target.shape, generator=generator),
    )
    target[:, :5] = 255
    names = ["w", "x", "y", "z"]
    scores = segmentation_scores(prediction, target, names, ignore_index=255)
    kwargs = {"num_classes": 4, "ignore_index": 255}
    assert scores.num_pixels == 2 * 27 * 32
    assert scores.oa == pytest.approx(
        multiclass_accuracy(prediction, target, average="micro", **kwargs).item()
    )
    assert scores.kappa == pytest.approx(
        multiclass_cohen_kappa(prediction, target, **kwargs).item()
    )
    iou = multiclass_jaccard_index(prediction, target, average="none", **kwargs)
    f1 = multiclass_f1_score(prediction, target, average="none", **kwargs)
    assert list(scores.iou_per_class.values()) == pytest.approx(iou.tolist())
    assert list(scores.f1_per_class.values()) == pytest.approx(f1.tolist())
    assert scores.miou == pytest.approx(iou.mean().item())


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"prediction has shape \(4,\) but target has \(5,\)"):
        confusion_matrix(torch.zeros(4, dtype=torch.long), torch.zeros(5, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"shape \(2, 2\); expected \(3, 3\) for classes"):
        scores_from_confusion(torch.zeros(2, 2), CLASSES)
    with pytest.raises(ValueError, match="negative counts"):
        scores_from_confusion(torch.tensor([[1, -1], [0, 1]]), ["a", "b"])
