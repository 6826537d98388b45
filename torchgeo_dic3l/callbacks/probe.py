"""Online linear probe: score the backbone's frozen features during pre-training."""

import re
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from ..benchmark.metrics import segmentation_scores
from ..datamodules import SyntheticSARSegmentationDataModule
from ..evaluation import (
    fit_linear_head,
    input_channels,
    predict_linear_head,
    ssl_backbone,
    stage_features,
)


@dataclass(frozen=True)
class ProbeData:
    """Normalized patches of the probe task, cached on the CPU.

    Attributes:
        train_images: ``[N, C, H, W]`` float32 training images.
        train_masks: ``[N, H, W]`` int64 training targets.
        val_images: ``[M, C, H, W]`` float32 validation images.
        val_masks: ``[M, H, W]`` int64 validation targets.
        classes: Class names in class-index order.
        ignore_index: Target value of unlabelled pixels, or None.
    """

    train_images: Tensor
    train_masks: Tensor
    val_images: Tensor
    val_masks: Tensor
    classes: list[str]
    ignore_index: int | None


class LinearProbe(Callback):
    """Fit a linear segmentation probe on the frozen backbone during pre-training.

    Before the first training step (the initial weights' baseline) and after every
    ``every_n_epochs`` training epochs, the callback extracts the layer1..layer4
    features of the probe task's training and validation patches with the backbone in
    eval mode and without gradients, fits a
    :class:`~torchgeo_dic3l.evaluation.MultiScaleLinearHead` on the training patches
    (:func:`~torchgeo_dic3l.evaluation.fit_linear_head`) and scores the validation
    patches with :func:`~torchgeo_dic3l.benchmark.segmentation_scores`. It logs
    ``probe_miou``, ``probe_oa`` and, with ``log_per_class``, ``probe_iou_<class>`` to
    every logger at the current global step, and puts them in
    ``trainer.callback_metrics`` (``probe_miou`` also in the progress bar), so a
    ``ModelCheckpoint(monitor="probe_miou", mode="max")`` with the same
    ``every_n_epochs`` can keep the best backbone (Lightning runs checkpoint callbacks
    last).

    Works with :class:`~torchgeo_dic3l.tasks.DI3CLTask` and TorchGeo's ``MoCo``,
    ``SimCLR`` and ``BYOL`` (see :func:`~torchgeo_dic3l.evaluation.ssl_backbone`). The
    probe changes nothing in the model: BatchNorm in eval mode updates no running
    statistics, no parameter or buffer is written, each module's train/eval mode is
    restored afterwards, and the fit draws from its own generator (with the same seed
    at every probe, so successive scores differ only through the features). Patches
    are read once, at fit start, under a forked global RNG, since a datamodule's
    datasets and normalization could draw from it.

    The datamodule needs TorchGeo's layout: ``setup("fit")`` builds ``train_dataset``
    and ``val_dataset`` of ``{"image", "mask"}`` samples of one size. Images are
    normalized with its ``val_aug`` (or ``aug``), as its ``on_after_batch_transfer``
    does for validation batches; the class names come from the dataset's or the
    datamodule's ``classes`` and unlabelled pixels from its ``ignore_index``.

    Under DDP every rank computes the same probe (it is deterministic and needs no
    communication), so every rank holds the metrics, which a ``ModelCheckpoint``
    monitoring them needs; only rank 0's loggers write. Under ``fast_dev_run`` the
    patches are still read and the channels checked, but no probe is fitted.
    """

    def __init__(
        self,
        datamodule: LightningDataModule | None = None,
        every_n_epochs: int = 1,
        steps: int = 100,
        lr: float = 0.03,
        batch_size: int = 8,
        max_train_patches: int | None = 16,
        max_val_patches: int | None = 16,
        log_per_class: bool = True,
        seed: int = 0,
    ) -> None:
        """Initialize the callback.

        Args:
            datamodule: The probe task; None for the synthetic land-cover task,
                :class:`~torchgeo_dic3l.datamodules.SyntheticSARSegmentationDataModule`
                at 96 px with the backbone's channel count (VH for one channel, VV and
                VH for two). Its images must have as many channels as the backbone's
                first convolution.
            every_n_epochs: Probe after every this many training epochs.
            steps: Optimizer steps of each fit.
            lr: Peak learning rate of the fit (AdamW, cosine decay).
            batch_size: Patches per fitting step and per feature-extraction batch.
            max_train_patches: Training patches used, evenly spaced over the split;
                None for all.
            max_val_patches: Validation patches used, evenly spaced; None for all.
            log_per_class: Also log the IoU of every class.
            seed: Seed of the fit's image and pixel draws.

        Raises:
            ValueError: If a count is not positive.
        """
        counts: dict[str, int | None] = {
            "every_n_epochs": every_n_epochs,
            "steps": steps,
            "batch_size": batch_size,
            "max_train_patches": max_train_patches,
            "max_val_patches": max_val_patches,
        }
        for name, value in counts.items():
            if value is not None and value < 1:
                raise ValueError(f"LinearProbe: {name} must be positive, got {value}")
        self.datamodule = datamodule
        self.every_n_epochs = every_n_epochs
        self.steps = steps
        self.lr = lr
        self.batch_size = batch_size
        self.max_train_patches = max_train_patches
        self.max_val_patches = max_val_patches
        self.log_per_class = log_per_class
        self.seed = seed
        self.data: ProbeData | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Read the probe patches and check their channels against the backbone.

        Done before the sanity check and the first step, so that a wrong probe
        configuration fails at once.

        Args:
            trainer: The trainer.
            pl_module: The self-supervised task.

        Raises:
            ValueError: If the probe images' channels differ from the backbone's.
        """
        expected = input_channels(ssl_backbone(pl_module))
        if self.data is None:
            self.data = self._load(expected)
        channels = self.data.train_images.shape[1]
        if channels != expected:
            raise ValueError(
                f"LinearProbe: the probe images have {channels} channel(s) but the "
                f"backbone's first convolution takes {expected}; configure a probe "
                "datamodule with matching channels (LinearProbe's datamodule, e.g. "
                "init_args.bands of SyntheticSARSegmentationDataModule) or change "
                "the model's in_channels"
            )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Probe the initial weights (after a checkpoint, if any, is restored).

        Args:
            trainer: The trainer.
            pl_module: The self-supervised task.
        """
        self._run(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Probe after every ``every_n_epochs`` epochs.

        Args:
            trainer: The trainer.
            pl_module: The self-supervised task.
        """
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._run(trainer, pl_module)

    def probe(self, pl_module: LightningModule) -> dict[str, float]:
        """Fit and score the probe on the current backbone.

        Args:
            pl_module: The self-supervised task.

        Returns:
            ``probe_miou``, ``probe_oa`` and (with ``log_per_class``) the defined
            ``probe_iou_<class>`` values.

        Raises:
            RuntimeError: If the patches have not been read (``on_fit_start``).
        """
        if self.data is None:
            raise RuntimeError("LinearProbe: the probe patches are read in on_fit_start")
        data = self.data
        backbone = ssl_backbone(pl_module)
        device = pl_module.device
        modes = {module: module.training for module in backbone.modules()}
        backbone.eval()
        try:
            train = _features(backbone, data.train_images, device, self.batch_size)
            val = _features(backbone, data.val_images, device, self.batch_size)
        finally:
            # Per module, not backbone.train(mode): parts may have been frozen in eval.
            for module, training in modes.items():
                module.training = training
        head = fit_linear_head(
            train,
            data.train_masks,
            len(data.classes),
            ignore_index=data.ignore_index,
            steps=self.steps,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=self.seed,
        )
        size = (data.val_masks.shape[-2], data.val_masks.shape[-1])
        prediction = predict_linear_head(head, val, size, self.batch_size).cpu()
        scores = segmentation_scores(prediction, data.val_masks, data.classes, data.ignore_index)
        metrics = {"probe_miou": scores.miou, "probe_oa": scores.oa}
        if self.log_per_class:
            metrics |= {f"probe_iou_{_slug(k)}": v for k, v in scores.iou_per_class.items()}
        # Undefined scores (a class neither present nor predicted) are left out.
        return {name: value for name, value in metrics.items() if value is not None}

    def _run(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Probe, then log to every logger and publish the metrics to the trainer."""
        # Set by Lightning at run time (not declared on the class, hence getattr).
        if getattr(trainer, "fast_dev_run", False):
            rank_zero_info("LinearProbe: no probe under fast_dev_run")
            return
        metrics = self.probe(pl_module)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        if "probe_miou" in metrics:
            trainer.progress_bar_metrics["probe_miou"] = metrics["probe_miou"]

    def _load(self, channels: int) -> ProbeData:
        """Set the probe datamodule up and read its (capped) patches, normalized."""
        datamodule = self.datamodule or _default_datamodule(channels)
        # A datamodule may draw from the global RNG while it builds or reads data;
        # the fork keeps that from shifting the pre-training's random stream.
        with torch.random.fork_rng(devices=[]):
            datamodule.setup("fit")
            normalize = getattr(datamodule, "val_aug", None) or getattr(datamodule, "aug", None)
            train_dataset = _dataset(datamodule, "train_dataset")
            train = _read(train_dataset, self.max_train_patches, normalize)
            val = _read(_dataset(datamodule, "val_dataset"), self.max_val_patches, normalize)
        classes = getattr(train_dataset, "classes", None) or getattr(datamodule, "classes", None)
        if classes is None:
            raise ValueError(
                f"LinearProbe: {type(datamodule).__name__} and its training dataset have "
                "no `classes` (the class names in class-index order)"
            )
        return ProbeData(
            train_images=train["image"],
            train_masks=train["mask"],
            val_images=val["image"],
            val_masks=val["mask"],
            classes=[str(name) for name in classes],
            ignore_index=getattr(datamodule, "ignore_index", None),
        )


def _default_datamodule(channels: int) -> LightningDataModule:
    """Synthetic land cover at 96 px with the backbone's channels.

    96 px rather than the datamodule's 256 px keeps the probe near a tenth of the
    shipped CPU pre-training runs.
    """
    names = {1: ["VH"], 2: ["VV", "VH"]}.get(channels)
    if names is None:
        raise ValueError(
            f"LinearProbe: the synthetic probe makes 1 or 2 channels but the backbone "
            f"takes {channels}; pass a probe datamodule with {channels} channel(s)"
        )
    return SyntheticSARSegmentationDataModule(size=96, bands=names)


def _dataset(datamodule: LightningDataModule, name: str) -> Any:
    """A dataset that ``setup("fit")`` made, or a clear error."""
    dataset = getattr(datamodule, name, None)
    if dataset is None or len(dataset) == 0:
        raise ValueError(
            f"LinearProbe: {type(datamodule).__name__}.setup('fit') made no (or an empty) "
            f"{name}; the probe needs labelled training and validation patches"
        )
    return dataset


def _read(dataset: Any, limit: int | None, normalize: nn.Module | None) -> dict[str, Tensor]:
    """Stack up to ``limit`` evenly spaced samples and normalize their images.

    Evenly spaced rather than the first ones: the patches of a scene come in reading
    order, and the first few would all lie in one corner.
    """
    count = len(dataset) if limit is None else min(limit, len(dataset))
    samples = [dataset[i * len(dataset) // count] for i in range(count)]
    batch = {
        "image": torch.stack([sample["image"] for sample in samples]).float(),
        "mask": torch.stack([sample["mask"] for sample in samples]).long(),
    }
    if normalize is not None:
        batch = normalize(batch)
    return batch


@torch.no_grad()
def _features(
    backbone: nn.Module, images: Tensor, device: torch.device, batch_size: int
) -> list[Tensor]:
    """Stage features of all images, extracted batch by batch on the device."""
    batches = [
        stage_features(backbone, images[start : start + batch_size].to(device))
        for start in range(0, images.shape[0], batch_size)
    ]
    return [torch.cat(stage) for stage in zip(*batches, strict=True)]


def _slug(name: str) -> str:
    """A class name as a metric-name suffix: ``"bare soil"`` -> ``"bare_soil"``."""
    return re.sub(r"\W+", "_", name).strip("_")
