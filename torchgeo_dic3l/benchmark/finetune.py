"""One benchmark run: train a segmentation model on a task and score its test split.

The model is TorchGeo's ``SemanticSegmentation`` (an smp encoder-decoder) for every
protocol:

* ``full``: the whole model is fine-tuned with a Lightning ``Trainer``;
* ``frozen``: the encoder is frozen (weights and BatchNorm statistics); its features
  are computed once per run and the decoder and segmentation head are trained on them
  (:mod:`.cached`) with the same loss, optimizer and schedule;
* ``linear``: the frozen encoder's four stages (layer1 .. layer4 of a ResNet, strides
  4 to 32, not the stride-2 stem; the patch tokens of four evenly spaced blocks of a
  ViT, as the online probe reads them) feed a
  :class:`~torchgeo_dic3l.evaluation.MultiScaleLinearHead`, a 1x1 convolution on the
  standardized stages upsampled to the input size, fitted on cached features with
  :func:`~torchgeo_dic3l.evaluation.fit_linear_head`. The encoder is the one the
  run's decoder builds (DeepLabV3+ dilates layer4 to stride 16); the decoder is unused.

Vision Transformers (``training.backbone: tu-<timm ViT>``, e.g.
``tu-vit_tiny_patch16_224``, such as SARMAETask pre-trains) take the ``dpt`` decoder,
the only one of TorchGeo 0.10's ``SemanticSegmentation`` (smp 0.6) that accepts them
(smp refuses a ViT's single-stride features for ``unet``, ``deeplabv3+``, ``upernet``
and ``segformer``; ``fcn`` has no encoder). The ViT is set to the task's patch size,
its position embedding resampled. DPT's forward hands the class token to its decoder,
so its ``frozen`` protocol trains through Lightning on the frozen encoder instead of
on cached features (same loss, optimizer and steps; slower).

Every run takes exactly ``training.steps`` optimizer steps (or ``epochs`` times the
batches of an epoch). The datamodule's test split is its spatially disjoint (labelled
scene) or seed-disjoint (synthetic) one, predicted once. Pixels equal to the
datamodule's ``ignore_index`` are left out of the loss
(``SemanticSegmentation(ignore_index=...)``) and of every score. The model scored is
the one after the last step (no selection on the validation split).

Initialization of the encoder:

* ``random``: smp's default initialization;
* ``imagenet``: ``weights=True`` (smp downloads them; fails offline);
* a path: a Lightning checkpoint of DI3CLTask (DI3CL or its MoCo v2 ablation) or of
  TorchGeo's SSL tasks, or an exported plain state dict, read with
  :func:`torchgeo_dic3l.models.extract_backbone` and loaded with strict key matching
  into ``model.encoder`` after checking the input channels. (TorchGeo's own
  ``weights="x.ckpt"`` route gives the same encoder for checkpoints, but cannot read
  plain state dicts.)
* a TorchGeo weight name (``ResNet50_Weights.SENTINEL1_ALL_MOCO``): checked against the
  backbone and channels, then passed to ``SemanticSegmentation`` (downloads; fails
  offline).

Failures to resolve or load the initial weights raise :class:`InitError`, so a grid
runner can tell them from other errors.
"""

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import lightning
import torch
from lightning.pytorch import Trainer
from segmentation_models_pytorch.base.model import SegmentationModel
from segmentation_models_pytorch.encoders.timm_vit import TimmViTEncoder
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchgeo.datamodules import NonGeoDataModule
from torchgeo.datasets.utils import Sample
from torchgeo.models import get_weight
from torchgeo.tasks import SemanticSegmentation

from ..datamodules import LabelledSARSceneDataModule, SyntheticSARSegmentationDataModule
from ..evaluation import (
    MultiScaleLinearHead,
    fit_linear_head,
    predict_linear_head,
    stage_features,
)
from ..models import SARWeightsEnum
from ..models.backbone import fit_state_dict
from ..models.checkpoint import FIRST_LAYER_KEYS, read_backbone_file
from ..models.weights import HASHED_NAME
from .cached import encode, fit_decoder, runs_encoder_decoder_head, to_device
from .grid import FROZEN_PROTOCOLS, InitSpec, RunSpec, TaskSpec, TrainingSpec, run_identity
from .metrics import confusion_matrix_metric, scores_from_confusion

#: ResNet encoder outputs that feed the linear head: smp encoders return the input,
#: the stem, then the residual stages; the probe takes the stages (as the pre-training
#: callback's probe does), leaving out the stem, a low-level stride-2 filter bank.
RESNET_LINEAR_STAGES = slice(2, None)


class InitError(RuntimeError):
    """The initial weights of a run could not be resolved or loaded."""


@dataclass
class TaskData:
    """A datamodule set up for fitting, and what the model needs to know about it.

    Attributes:
        datamodule: The datamodule (``setup("fit")`` already called).
        classes: Class names in class-index order.
        in_channels: Image channels.
        image_size: ``(H, W)`` of the patches.
        ignore_index: Mask value left out of loss and scores, or None.
        num_train_patches: Training patches after the label fraction.
        batch_size: Batch size used (the grid's, or the training set size if smaller).
        colors: Display colour per class, if the dataset defines them.
    """

    datamodule: NonGeoDataModule
    classes: list[str]
    in_channels: int
    image_size: tuple[int, int]
    ignore_index: int | None
    num_train_patches: int
    batch_size: int
    colors: list[str] | None = None


@dataclass
class Example:
    """A test patch with its prediction, for figures.

    Attributes:
        index: Index in the test dataset.
        image: ``[C, H, W]`` image in dB (before normalization).
        mask: ``[H, W]`` target.
        prediction: ``[H, W]`` predicted classes.
    """

    index: int
    image: Tensor
    mask: Tensor
    prediction: Tensor


@dataclass
class RunResult:
    """Outcome of a successful run.

    Attributes:
        row: The results row (see :func:`finetune`).
        examples: Test patches with predictions, most varied first.
        classes: Class names in class-index order.
        colors: Display colour per class, if the dataset defines them.
        model: The trained task (for ``linear``, its encoder is the probed one and its
            decoder unused).
        linear_head: The fitted head of a ``linear`` run, else None.
    """

    row: dict[str, Any]
    examples: list[Example] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    colors: list[str] | None = None
    model: SemanticSegmentation | None = None
    linear_head: MultiScaleLinearHead | None = None


def build_task_data(
    task: TaskSpec, label_fraction: float, seed: int, training: TrainingSpec
) -> TaskData:
    """Build and set up the datamodule of a task for one run.

    Synthetic tasks keep their own data seed (option ``seed``, default 0), so every run
    sees the same test scenes and smaller label fractions take the first scenes of
    larger ones. Scene tasks draw their label subset with the run's ``seed``; the
    spatial split (``split_seed``) stays fixed.

    Args:
        task: The task.
        label_fraction: Fraction of the training patches kept.
        seed: Seed of the run.
        training: Batch size and workers.

    Returns:
        The set-up datamodule and its facts.

    Warns:
        UserWarning: If the training set is smaller than the batch size, which is then
            lowered to it.
    """
    common: dict[str, Any] = {
        "label_fraction": label_fraction,
        "batch_size": 1,
        "num_workers": training.num_workers,
    }
    datamodule: NonGeoDataModule
    if task.kind == "synthetic":
        datamodule = SyntheticSARSegmentationDataModule(**task.options, **common)
    else:
        datamodule = LabelledSARSceneDataModule(**task.options, **common, seed=seed)
    datamodule.setup("fit")
    train = datamodule.train_dataset
    assert train is not None
    num_train = len(train)  # type: ignore[arg-type]
    # The training loader drops incomplete batches: a batch larger than the training
    # set would leave every epoch empty.
    datamodule.batch_size = min(training.batch_size, num_train)
    if datamodule.batch_size < training.batch_size:
        warnings.warn(
            f"task {task.name!r}: label_fraction={label_fraction} leaves {num_train} "
            f"training patch(es); batch_size lowered from {training.batch_size} to "
            f"{num_train}",
            UserWarning,
            stacklevel=2,
        )
    first = train[0]["image"]
    return TaskData(
        datamodule=datamodule,
        classes=list(train.classes),  # type: ignore[attr-defined]
        in_channels=int(first.shape[0]),
        image_size=(int(first.shape[-2]), int(first.shape[-1])),
        ignore_index=getattr(datamodule, "ignore_index", None),
        num_train_patches=num_train,
        batch_size=datamodule.batch_size,
        colors=getattr(train, "colors", None),
    )


def encoder_module(encoder: nn.Module) -> nn.Module:
    """The timm model inside an smp encoder that backbone weights load into.

    Args:
        encoder: ``SemanticSegmentation.model.encoder``.

    Returns:
        The timm ViT of smp's ``TimmViTEncoder`` (DPT); the encoder itself otherwise
        (smp ResNets take timm / torchvision ResNet keys).
    """
    return encoder.model if isinstance(encoder, TimmViTEncoder) else encoder


def linear_stages(model: SegmentationModel, image: Tensor) -> list[Tensor]:
    """The four frozen-encoder feature maps that the linear protocol reads.

    Args:
        model: ``SemanticSegmentation.model``.
        image: Normalized ``[B, C, H, W]`` images.

    Returns:
        layer1 .. layer4 of a ResNet encoder; for a ViT, the patch tokens of four
        evenly spaced blocks as maps (:func:`~torchgeo_dic3l.evaluation.stage_features`,
        the online probe's choice).
    """
    if isinstance(model.encoder, TimmViTEncoder):
        return stage_features(model.encoder.model, image)
    return list(model.encoder(image)[RESNET_LINEAR_STAGES])


def load_encoder_state(encoder: nn.Module, state_dict: dict[str, Tensor], origin: str) -> None:
    """Load backbone weights into an smp encoder with strict key and shape checks.

    Args:
        encoder: ``SemanticSegmentation.model.encoder``.
        state_dict: Backbone weights (timm / torchvision ResNet keys, or timm ViT keys
            for DPT's encoder; a ViT's position embedding is resampled to its grid).
        origin: What the weights are, for error messages.

    Raises:
        InitError: If input channels, keys or shapes do not match.
    """
    module = encoder_module(encoder)
    own = module.state_dict()
    for key in FIRST_LAYER_KEYS:
        theirs, ours = state_dict.get(key), own.get(key)
        if theirs is not None and ours is not None and theirs.shape[1] != ours.shape[1]:
            raise InitError(
                f"{origin}: the weights take {theirs.shape[1]} input channel(s) but the "
                f"task's images have {ours.shape[1]}"
            )
    try:
        state = fit_state_dict(module, state_dict, origin)
    except ValueError as error:
        raise InitError(str(error)) from error
    module.load_state_dict(state)


def weights_verified(init: InitSpec) -> bool | None:
    """Whether a run's initial weights are checked against a hash when loaded.

    Hash-named ``<name>-<sha8>.pth`` files and this package's weight enums are
    checked at every load (a mismatch fails the run); other files, TorchGeo's weight
    names (checked once, when downloaded) and ImageNet weights are not.

    Args:
        init: The initialization.

    Returns:
        True or False, or None for random weights.
    """
    match init.kind:
        case "random":
            return None
        case "path":
            return HASHED_NAME.search(Path(init.source).name) is not None
        case "weight_name":
            return isinstance(get_weight(init.source), SARWeightsEnum)
    return False


def build_model(run: RunSpec, data: TaskData, training: TrainingSpec) -> SemanticSegmentation:
    """Create the segmentation task with the run's decoder, protocol and initial weights.

    Args:
        run: The run.
        data: Facts about the task's data.
        training: Backbone, learning rate, loss.

    Returns:
        The task, with the encoder frozen (no gradients, BatchNorm statistics fixed, in
        eval mode) for the ``frozen`` and ``linear`` protocols.

    Raises:
        InitError: If the initial weights cannot be resolved or loaded.
    """
    init = run.init
    origin = f"init {init.name!r} ({init.source})"
    weights: bool | str | None = None
    state_dict: dict[str, Tensor] | None = None
    match init.kind:
        case "imagenet":
            weights = True
        case "path":
            try:
                state_dict = read_backbone_file(init.source)[0]
            except (FileNotFoundError, ValueError) as error:
                raise InitError(f"{origin}: {error}") from error
        case "weight_name":
            weights = _check_weight_name(init.source, training.backbone, data.in_channels, origin)
    kwargs: dict[str, Any] = {
        "model": run.decoder,
        "backbone": training.backbone,
        "in_channels": data.in_channels,
        "task": "multiclass",
        "num_classes": len(data.classes),
        "labels": data.classes,
        "ignore_index": data.ignore_index,
        "loss": training.loss,
        "lr": training.lr,
        "patience": training.patience,
        "freeze_backbone": run.protocol in FROZEN_PROTOCOLS,
    }
    if weights is None:
        model = SemanticSegmentation(**kwargs)
    else:
        try:
            model = SemanticSegmentation(weights=weights, **kwargs)
        except Exception as error:
            raise InitError(
                f"{origin}: could not get the weights (offline?): {type(error).__name__}: {error}"
            ) from error
    encoder = model.model.encoder
    if isinstance(encoder, TimmViTEncoder):
        # TorchGeo builds the ViT for timm's default size (224 px); the benchmark feeds
        # its patches, and the unused classifier would be a missing key for SSL weights.
        encoder.model.set_input_size(img_size=data.image_size)
        encoder.model.reset_classifier(0)
    if state_dict is not None:
        load_encoder_state(encoder, state_dict, origin)
    if run.protocol in FROZEN_PROTOCOLS:
        # TorchGeo's freeze_backbone only stops gradients; smp's freeze_encoder also
        # makes model.train() skip the encoder, so eval() here holds for good (BatchNorm
        # statistics and any dropout fixed).
        model.model.freeze_encoder()
        model.model.encoder.eval()
    return model


def _check_weight_name(name: str, backbone: str, in_channels: int, origin: str) -> str:
    """Check a TorchGeo weight name against the backbone and channels before downloading.

    Raises:
        InitError: If the name is unknown or made for another model or channel count.
    """
    try:
        weight = get_weight(name)
    except Exception as error:
        raise InitError(
            f"{origin}: neither an existing file nor a TorchGeo weight name ({error})"
        ) from error
    model = weight.meta.get("model")
    channels = weight.meta.get("in_chans")
    if model is not None and model != backbone.removeprefix("tu-"):
        raise InitError(f"{origin}: weights for {model}, but the grid's backbone is {backbone}")
    if channels is not None and channels != in_channels:
        raise InitError(
            f"{origin}: weights for {channels} input channel(s), but the task has {in_channels}"
        )
    return name


class TestCollector:
    """Accumulate the test confusion matrix and keep the most varied test patches.

    Patches are ranked by the number of classes in their labelled pixels, then by
    their labelled share, then by index, which is deterministic across runs.
    """

    def __init__(self, num_classes: int, ignore_index: int | None, keep: int) -> None:
        """Initialize the collector.

        Args:
            num_classes: Number of classes.
            ignore_index: Mask value to leave out, or None.
            keep: Number of patches to keep for figures.
        """
        self.confusion = confusion_matrix_metric(num_classes, ignore_index)
        self.ignore_index = ignore_index
        self.keep = keep
        self.kept: list[tuple[tuple[int, float, int], Tensor, Tensor]] = []
        self._seen = 0

    def update(self, prediction: Tensor, mask: Tensor) -> None:
        """Add the next test batch, in test-dataset order.

        Args:
            prediction: ``[B, H, W]`` predicted classes.
            mask: ``[B, H, W]`` targets.
        """
        self.confusion.update(prediction, mask)
        for offset in range(mask.shape[0]):
            self._consider(self._seen + offset, mask[offset], prediction[offset])
        self._seen += mask.shape[0]

    def _consider(self, index: int, mask: Tensor, prediction: Tensor) -> None:
        if self.keep == 0:
            return
        labelled = mask if self.ignore_index is None else mask[mask != self.ignore_index]
        score = (int(labelled.unique().numel()), labelled.numel() / mask.numel(), -index)
        self.kept.append((score, mask.clone(), prediction.clone()))
        self.kept.sort(key=lambda item: item[0], reverse=True)
        del self.kept[self.keep :]

    def examples(self, dataset: Any) -> list[Example]:
        """The kept patches, with their images in dB read back from the dataset.

        Args:
            dataset: The test dataset.

        Returns:
            The examples, best first.
        """
        result = []
        for (_, _, negative_index), mask, prediction in self.kept:
            index = -negative_index
            image = dataset[index]["image"]
            result.append(Example(index, image, mask, prediction))
        return result


def resolve_device(accelerator: str) -> torch.device:
    """The device that a Lightning accelerator name stands for (one device).

    Args:
        accelerator: ``auto``, ``cpu``, ``gpu``, ``cuda`` or ``mps``.

    Returns:
        The device; ``auto`` picks CUDA, then MPS, then the CPU, as Lightning does.

    Raises:
        ValueError: For another accelerator.
    """
    match accelerator:
        case "cpu":
            return torch.device("cpu")
        case "gpu" | "cuda":
            return torch.device("cuda")
        case "mps":
            return torch.device("mps")
        case "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            if torch.backends.mps.is_available():
                return torch.device("mps")
            return torch.device("cpu")
    raise ValueError(f"accelerator {accelerator!r} is not one of auto, cpu, gpu, cuda, mps")


def _ordered(datamodule: NonGeoDataModule, split: str, num_workers: int) -> DataLoader[Sample]:
    """A split's batches in dataset order, every patch (unlike the training loader)."""
    return DataLoader(
        getattr(datamodule, f"{split}_dataset"),
        batch_size=datamodule.batch_size,
        num_workers=num_workers,
        collate_fn=datamodule.collate_fn,
    )


def evaluate(
    predict: Callable[[Tensor], Tensor], data: TaskData, device: torch.device, keep: int
) -> TestCollector:
    """Predict every test patch once and accumulate the scores.

    Args:
        predict: Normalized ``[B, C, H, W]`` images on ``device`` -> ``[B, H, W]``
            classes.
        data: The task's data.
        device: Where to predict.
        keep: Test patches to keep for figures.

    Returns:
        The collector with the confusion matrix and the kept patches.
    """
    datamodule = data.datamodule
    datamodule.setup("test")
    collector = TestCollector(len(data.classes), data.ignore_index, keep)
    with torch.inference_mode():
        for batch in datamodule.test_dataloader():
            sample = datamodule.aug(to_device(batch, device))
            collector.update(predict(sample["image"]).cpu(), sample["mask"].cpu())
    return collector


def fit_lightning(
    model: SemanticSegmentation, data: TaskData, training: TrainingSpec, steps: int
) -> Trainer:
    """Train a task with Lightning for a number of optimizer steps (validating each epoch).

    Args:
        model: The task.
        data: The task's data.
        training: Accelerator.
        steps: Optimizer steps.

    Returns:
        The trainer (``global_step`` is the number of optimizer steps taken).
    """
    trainer = Trainer(
        accelerator=training.accelerator,
        devices=1,
        max_steps=steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=data.datamodule)
    return trainer


def _train_frozen(
    model: SemanticSegmentation,
    data: TaskData,
    training: TrainingSpec,
    steps: int,
    device: torch.device,
    seed: int,
) -> tuple[Callable[[Tensor], Tensor], int]:
    """Train decoder and head on the frozen encoder's cached features."""
    net = model.model
    datamodule = data.datamodule
    train = encode(
        net, _ordered(datamodule, "train", training.num_workers), datamodule.aug, device
    )
    val = encode(net, datamodule.val_dataloader(), datamodule.aug, device)
    taken = fit_decoder(model, train, val, steps, data.batch_size, seed)
    return _classes_of(net), taken


def _classes_of(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """Predicted classes of a segmentation model, in eval mode."""
    model.eval()
    return lambda image: model(image).argmax(dim=1)


def _train_linear(
    model: SemanticSegmentation,
    data: TaskData,
    training: TrainingSpec,
    steps: int,
    device: torch.device,
    seed: int,
) -> tuple[Callable[[Tensor], Tensor], MultiScaleLinearHead]:
    """Fit the linear head on the frozen encoder's cached stages."""
    net = model.model
    datamodule = data.datamodule
    loader = _ordered(datamodule, "train", training.num_workers)
    train = encode(net, loader, datamodule.aug, device, partial(linear_stages, net))
    head = fit_linear_head(
        train.features,
        train.masks,
        len(data.classes),
        data.ignore_index,
        steps=steps,
        lr=training.linear_lr,
        batch_size=data.batch_size,
        seed=seed,
    )

    def predict(image: Tensor) -> Tensor:
        stages = linear_stages(net, image)
        size = (image.shape[-2], image.shape[-1])
        return predict_linear_head(head, stages, size, data.batch_size)

    return predict, head


def finetune(run: RunSpec, training: TrainingSpec, figure_patches: int = 2) -> RunResult:
    """Train and test one run.

    Args:
        run: What to run.
        training: Shared training settings.
        figure_patches: Test patches (with predictions) to return for figures.

    Returns:
        The result. ``row`` holds ``init``, ``init_source``, ``task``, ``decoder``,
        ``protocol``, ``label_fraction``, ``seed``, ``backbone``, ``status`` ("ok"),
        ``error`` (None), ``miou``, ``oa``, ``kappa``, ``f1_per_class``,
        ``iou_per_class``, ``train_seconds`` (for ``frozen`` and ``linear`` including
        the feature computation), ``test_seconds``, ``epochs`` (started),
        ``train_steps`` (optimizer steps taken), ``batch_size``,
        ``num_train_patches``, ``num_test_patches``, ``num_test_pixels``,
        ``in_channels``, ``ignore_index``, ``weights_verified`` (see
        :func:`weights_verified`) and ``run_id``.

    Raises:
        InitError: If the initial weights cannot be resolved or loaded.
        ValueError: If the protocol is unknown.
    """
    lightning.seed_everything(run.seed, workers=True, verbose=False)
    data = build_task_data(run.task, run.label_fraction, run.seed, training)
    model = build_model(run, data, training)
    per_epoch = data.num_train_patches // data.batch_size
    steps = training.steps if training.steps is not None else training.epochs * per_epoch
    device = resolve_device(training.accelerator)
    # The normalization runs on the device; Lightning moves batches, not the datamodule.
    cast(nn.Module, data.datamodule.aug).to(device)
    linear_head = None
    start = time.perf_counter()
    predict: Callable[[Tensor], Tensor]
    cached = run.protocol == "linear" or (
        run.protocol == "frozen" and runs_encoder_decoder_head(model.model)
    )
    if cached:
        # Channels-last weights (and features, see encode) speed up the convolutions.
        model.to(device, memory_format=torch.channels_last)
    if run.protocol == "linear":
        predict, linear_head = _train_linear(model, data, training, steps, device, run.seed)
        taken = steps
    elif run.protocol == "frozen" and cached:
        predict, taken = _train_frozen(model, data, training, steps, device, run.seed)
    elif run.protocol in ("full", "frozen"):
        # A frozen encoder stays frozen here too (see build_model).
        taken = fit_lightning(model, data, training, steps).global_step
        predict = _classes_of(model.to(device))
    else:
        raise ValueError(f"unknown protocol {run.protocol!r}")
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    collector = evaluate(predict, data, device, figure_patches)
    test_seconds = time.perf_counter() - start
    scores = scores_from_confusion(collector.confusion.compute().long(), data.classes)
    test_dataset = data.datamodule.test_dataset
    row: dict[str, Any] = {
        **run_identity(run),
        "backbone": training.backbone,
        "status": "ok",
        "error": None,
        "miou": scores.miou,
        "oa": scores.oa,
        "kappa": scores.kappa,
        "f1_per_class": scores.f1_per_class,
        "iou_per_class": scores.iou_per_class,
        "train_seconds": train_seconds,
        "test_seconds": test_seconds,
        "epochs": math.ceil(taken / per_epoch),
        "train_steps": taken,
        "batch_size": data.batch_size,
        "num_train_patches": data.num_train_patches,
        "num_test_patches": len(test_dataset),  # type: ignore[arg-type]
        "num_test_pixels": scores.num_pixels,
        "in_channels": data.in_channels,
        "ignore_index": data.ignore_index,
        "weights_verified": weights_verified(run.init),
    }
    return RunResult(
        row=row,
        examples=collector.examples(test_dataset),
        classes=data.classes,
        colors=data.colors,
        model=model.cpu(),
        linear_head=linear_head.cpu() if linear_head is not None else None,
    )
