"""Training on a frozen encoder's features, computed once per run instead of every step.

The ``linear`` and ``frozen`` protocols never change the encoder, and the benchmark's
datamodules feed it the same input every epoch (their only batch transform is the
fixed dB range normalization, and the datasets are deterministic per index), so the
encoder's output for each training patch is the same at every step. :func:`encode`
computes it once; :func:`fit_decoder` then trains an smp decoder and segmentation
head on those features, and the linear probe of
:mod:`torchgeo_dic3l.evaluation.linear_probe` fits on them directly.

:func:`fit_decoder` repeats what Lightning does with TorchGeo's
``SemanticSegmentation`` for a frozen encoder: the task's own loss
(``task.criterion``) and optimizer and learning-rate schedule
(``task.configure_optimizers()``: AdamW, ReduceLROnPlateau on the validation loss
after each epoch), shuffled batches that drop the incomplete last one, decoder and
head in train mode, the encoder's BatchNorm statistics fixed.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from segmentation_models_pytorch.base.model import SegmentationModel
from torch import Tensor, nn
from torchgeo.datasets.utils import Sample
from torchgeo.tasks import SemanticSegmentation


@dataclass
class EncodedSplit:
    """Encoder features of every patch of a split, in dataset order.

    Attributes:
        features: One tensor per encoder output, ``[N, C_s, h_s, w_s]`` (for smp
            ResNets: the input itself, the stem, layer1 .. layer4).
        masks: ``[N, H, W]`` targets.
    """

    features: list[Tensor]
    masks: Tensor

    def __len__(self) -> int:
        """Number of patches.

        Returns:
            N.
        """
        return int(self.masks.shape[0])

    def take(self, index: Tensor | slice) -> tuple[list[Tensor], Tensor]:
        """Features and masks of some patches.

        Args:
            index: Patch indices (on the features' device) or a slice.

        Returns:
            The features, one tensor per encoder output, and the masks.
        """
        return [feature[index] for feature in self.features], self.masks[index]


def runs_encoder_decoder_head(model: SegmentationModel) -> bool:
    """Whether an smp model's forward is ``encoder -> decoder -> segmentation_head``.

    Only then can its decoder be trained on cached encoder features; DPT overrides
    smp's forward (its ViT encoder also hands the class token to the decoder), and a
    classification head would need the features too.

    Args:
        model: ``SemanticSegmentation.model``.

    Returns:
        True for smp's own forward without a classification head.
    """
    return type(model).forward is SegmentationModel.forward and model.classification_head is None


@torch.no_grad()
def encode(
    model: SegmentationModel,
    batches: Iterable[Sample],
    transform: Callable[[Sample], Sample],
    device: torch.device,
    extract: Callable[[Tensor], Sequence[Tensor]] | None = None,
) -> EncodedSplit:
    """Run the (frozen) encoder once over a split.

    Args:
        model: ``SemanticSegmentation.model``, its encoder in eval mode (channels-last
            weights are fastest: the input is made channels-last).
        batches: The split's batches (``image`` and ``mask``), in a fixed order.
        transform: The datamodule's ``aug`` (normalization), applied on ``device``.
        device: Where to run and keep the features.
        extract: Image batch -> the feature maps to keep; all of ``model.encoder``'s
            outputs if None.

    Returns:
        The features and masks, on ``device``.
    """
    extract = extract or model.encoder
    features: list[Sequence[Tensor]] = []
    masks = []
    for batch in batches:
        sample = transform(to_device(batch, device))
        model.check_input_shape(sample["image"])
        # Channels-last features make the decoder's convolutions ~15 % faster on a CPU.
        image = sample["image"].contiguous(memory_format=torch.channels_last)
        features.append(extract(image))
        masks.append(sample["mask"])
    return EncodedSplit(
        [torch.cat(stage) for stage in zip(*features, strict=True)], torch.cat(masks)
    )


def to_device(batch: Sample, device: torch.device) -> Sample:
    """The image and mask of a batch, on a device.

    Args:
        batch: A collated batch.
        device: Target device.

    Returns:
        A new batch with only ``image`` and ``mask``.
    """
    return {key: cast(Tensor, batch[key]).to(device) for key in ("image", "mask")}


def decode(model: SegmentationModel, features: list[Tensor]) -> Tensor:
    """Logits from encoder features: what smp's forward does after the encoder.

    Args:
        model: ``SemanticSegmentation.model``.
        features: Encoder outputs of a batch.

    Returns:
        ``[B, K, H, W]`` logits.
    """
    return cast(Tensor, model.segmentation_head(model.decoder(features)))


def fit_decoder(
    task: SemanticSegmentation,
    train: EncodedSplit,
    val: EncodedSplit,
    steps: int,
    batch_size: int,
    seed: int,
) -> int:
    """Train the decoder and segmentation head of a frozen-encoder task on its features.

    Args:
        task: The task; its encoder frozen (``freeze_encoder``) and in eval mode.
        train: Training features.
        val: Validation features, for the plateau schedule.
        steps: Optimizer steps.
        batch_size: Patches per step (at most ``len(train)``).
        seed: Seed of the batch order.

    Returns:
        The number of optimizer steps taken (``steps``).
    """
    model = task.model
    config = cast(dict[str, Any], task.configure_optimizers())
    optimizer: torch.optim.Optimizer = config["optimizer"]
    scheduler = config["lr_scheduler"]["scheduler"]
    criterion = cast(nn.Module, task.criterion)
    device = train.masks.device
    generator = torch.Generator().manual_seed(seed)
    per_epoch = len(train) // batch_size
    taken = 0
    while taken < steps:
        order = torch.randperm(len(train), generator=generator).to(device)
        epoch = order[: per_epoch * batch_size].view(per_epoch, batch_size)
        model.train()  # decoder and head; smp leaves a frozen encoder as it is
        for index in epoch[: steps - taken]:
            features, masks = train.take(index)
            loss = criterion(decode(model, features), masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            taken += 1
        if taken < steps:  # a whole epoch: Lightning validates, then steps the schedule
            scheduler.step(validation_loss(task, val, batch_size))
    return taken


@torch.no_grad()
def validation_loss(task: SemanticSegmentation, val: EncodedSplit, batch_size: int) -> float:
    """The epoch's ``val_loss`` as Lightning logs it: batch losses weighted by batch size.

    Args:
        task: The task.
        val: Validation features.
        batch_size: Patches per batch (the validation loader's).

    Returns:
        The mean loss.
    """
    task.model.eval()
    total = 0.0
    for start in range(0, len(val), batch_size):
        features, masks = val.take(slice(start, start + batch_size))
        total += float(task.criterion(decode(task.model, features), masks)) * len(masks)
    return total / len(val)
