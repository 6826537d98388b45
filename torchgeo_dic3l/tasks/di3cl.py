"""DI3CL: MoCo v2 with Dynamic Instance and Contour Consistency terms."""

import copy
import warnings
from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any

import torch
import torch.nn.functional as F
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead, MoCoProjectionHead
from lightly.models.utils import (
    batch_shuffle_distributed,
    batch_unshuffle_distributed,
    deactivate_requires_grad,
    update_momentum,
)
from lightly.utils.scheduler import cosine_schedule
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor, nn
from torch.optim import SGD
from torchgeo.datasets.utils import Sample
from torchgeo.tasks import BaseTask
from torchvision.models._api import WeightsEnum

from ..models import create_backbone, global_pool, resnet_taps, tap_channels
from ..models.backbone import LAYER4_STRIDE
from ..ssl.box_features import box_features
from ..ssl.box_graph import BoxMatcher
from ..ssl.box_matching import BoxOptions, BoxPairs
from ..ssl.distributed import gather_keys, is_distributed
from ..ssl.losses import info_nce, info_nce_loss, masked_regression_loss, top1_accuracy
from ..ssl.queue import KeyQueue
from ..ssl.split_batch_norm import SplitBatchNorm2d, largest_split, split_batch_norms
from ..transforms.radiometry import normalization_db_span
from ..transforms.views import TwoViewAugmentation, TwoViews, ViewOptions
from .random_state import RandomStateCheckpointing
from .schedule import warmup_cosine_schedule

#: Fewest layer4 cells per side for which boxes can differ from the whole view.
MIN_LAYER4_CELLS = 4


class DI3CLTask(RandomStateCheckpointing, BaseTask):
    """DI3CL self-supervised pre-training (arXiv 2511.07808) as a TorchGeo task.

    The loss is ``global_weight * global + cc_weight * CC + di_weight * DI``:

    * **global**: MoCo v2 InfoNCE on pooled layer4 features against a queue;
    * **CC** (Contour Consistency): a second InfoNCE on pooled layer3 features with
      its own projector, momentum projector and queue;
    * **DI** (Dynamic Instance): boxes matched inside the overlap of the two views,
      RoIAligned from layer4 of the query (view 1) and key (view 2) encoders, a BN
      projector (with a momentum twin) and a predictor, regressed with ``2 - 2 cos``.

    With ``use_cc=False`` and ``use_di=False`` the task is MoCo v2; the four
    combinations are the ablation of the paper. Views and box pairs are made on
    the device inside :meth:`training_step`, so the datamodule only needs to yield
    normalized images (``batch["image"]``, values roughly in [0, 1]).

    The query backbone is stored as ``self.model`` (a timm ResNet), so TorchGeo's
    ``SemanticSegmentation(weights="path/to.ckpt")`` and
    :func:`torchgeo_dic3l.models.extract_backbone` read it from checkpoints directly.
    """

    ignore = ("weights",)
    monitor = "train_loss"

    def __init__(
        self,
        model: str = "resnet50",
        weights: WeightsEnum | str | bool | None = None,
        adapt_channels: bool = False,
        in_channels: int = 2,
        size: int = 448,
        lr: float = 0.03,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        warmup_epochs: float = 0.0,
        temperature: float = 0.2,
        memory_bank_size: int = 65536,
        moco_momentum: float = 0.999,
        moco_momentum_schedule: bool = False,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        global_weight: float = 0.8,
        use_cc: bool = True,
        cc_weight: float = 0.2,
        use_di: bool = True,
        di_weight: float = 5.0,
        views: ViewOptions | Mapping[str, Any] | None = None,
        boxes: BoxOptions | Mapping[str, Any] | None = None,
        roi_output_size: int = 1,
        key_bn_splits: int = 8,
        channels_last: bool = True,
        cuda_graphs: bool = False,
        compile_backbones: bool = False,
    ) -> None:
        """Initialize a DI3CL task.

        Defaults are the published values (ResNet-50 at 448 px, SGD lr 0.03 for
        batch 256, cosine schedule, tau 0.2, K 65,536, m 0.999, weights 0.8/0.2/5.0,
        boxes from one layer4 cell (32 px) up to the whole overlap, RoIAlign averaging
        the whole box) with one exception: the reference starts both encoders from
        ImageNet weights, this task from random weights unless ``weights`` says
        otherwise (``weights=True`` gives the reference's start).

        Args:
            model: timm ResNet name (``resnet18``, ``resnet50``, ``resnet101``, ...).
            weights: Initial backbone weights: None/False (random), True (ImageNet,
                first convolution adapted to ``in_channels``), a ``WeightsEnum``, its
                name, or a path to a checkpoint or state dict, whose keys must match
                the backbone's exactly. The momentum encoders start as exact copies
                of the loaded query side.
            adapt_channels: Adapt the first convolution of weights made for another
                number of input channels than ``in_channels`` (timm's
                ``adapt_input_conv``); without it, such weights are an error.
            in_channels: Input channels (1 single-pol, 2 for VV + VH, ...).
            size: Side of each augmented view in pixels.
            lr: Peak learning rate of SGD (scale linearly with batch size / 256).
            weight_decay: SGD weight decay.
            momentum: SGD momentum.
            warmup_epochs: Linear warm-up length before the cosine decay.
            temperature: InfoNCE temperature of the global and CC terms.
            memory_bank_size: Queue length K of the global and CC terms.
            moco_momentum: EMA coefficient of the momentum encoders.
            moco_momentum_schedule: Raise the EMA coefficient to 1 along a cosine.
            hidden_dim: Hidden width of all projectors and the predictor.
            output_dim: Embedding dimension of all heads.
            global_weight: Weight of the global InfoNCE term.
            use_cc: Whether to add the Contour Consistency term.
            cc_weight: Weight of the CC term.
            use_di: Whether to add the Dynamic Instance term.
            di_weight: Weight of the DI term.
            views: Crop, flip, jitter, blur and speckle options of both views
                (:class:`~torchgeo_dic3l.transforms.views.ViewOptions`, or a mapping of
                its fields, as LightningCLI and checkpoints give them); MoCo v2's if
                None. Speckle's ``speckle_db_span``, if unset, is read from the
                datamodule's ``RangeNormalize`` at the start of fit.
            boxes: How the Dynamic Instance boxes are drawn
                (:class:`~torchgeo_dic3l.ssl.box_matching.BoxOptions` or a mapping of
                its fields); the reference's if None: up to 10 boxes per image, sides
                from one layer4 cell (32 px) to the whole overlap, IoU below 0.5.
            roi_output_size: RoIAlign output side; its cells are averaged. Sampling is
                adaptive, so each output cell is the mean of its whole bin.
            key_bn_splits: In a single process, the key batch is permuted at random
                and its batch norm statistics are computed in this many groups (the
                largest divisor of the batch size up to it that leaves at least two
                samples per group), so that the key encoder
                cannot match the query through the batch's statistics. Under DDP the
                batch is shuffled across ranks instead and this is unused. 1 turns
                the remedy off.
            channels_last: Use the channels-last memory format (faster convolutions
                on GPUs and CPUs).
            cuda_graphs: Replay the box matching as a CUDA graph on CUDA (captured
                once per batch size), which removes about a hundred kernel launches
                per step. Off by default until it has been measured on a GPU.
            compile_backbones: Run both encoders' layers through ``torch.compile``
                (compiled on the first step; needs a working Triton or C++ compiler).

        Raises:
            ValueError: If a hyper-parameter is out of its valid range.
        """
        _validate(
            in_channels=in_channels,
            size=size,
            temperature=temperature,
            memory_bank_size=memory_bank_size,
            moco_momentum=moco_momentum,
            roi_output_size=roi_output_size,
            key_bn_splits=key_bn_splits,
        )
        view_options = _options(ViewOptions, views, "views")
        box_options = _options(BoxOptions, boxes, "boxes")
        # Built first: they check the options against the view size before any model is.
        augmentation = TwoViewAugmentation(size, view_options)
        box_matcher = BoxMatcher(size, box_options, cuda_graph=cuda_graphs)
        if use_di and size < MIN_LAYER4_CELLS * LAYER4_STRIDE:
            warnings.warn(
                f"DI3CLTask: size={size} gives layer4 only {size // LAYER4_STRIDE} x "
                f"{size // LAYER4_STRIDE} cell(s) (stride {LAYER4_STRIDE}); the Dynamic "
                "Instance boxes then cover nearly the whole map and DI degenerates into a "
                f"global term. Use views of at least {MIN_LAYER4_CELLS * LAYER4_STRIDE} px.",
                UserWarning,
                stacklevel=2,
            )
        self.weights = weights
        # save_hyperparameters (in BaseTask) reads these locals: checkpoints then keep
        # plain mappings, which torch.load(weights_only=True) reads without allow-listed
        # classes (TorchGeo's extract_backbone loads checkpoints that way).
        views, boxes = asdict(view_options), asdict(box_options)
        super().__init__()
        self.augmentation = augmentation
        self.box_matcher = box_matcher
        # One compiled function serves both encoders: they share the architecture.
        self._taps = torch.compile(resnet_taps) if compile_backbones else resnet_taps

    def configure_models(self) -> None:
        """Build the query and momentum encoders, heads and queues."""
        hidden: int = self.hparams["hidden_dim"]
        out: int = self.hparams["output_dim"]
        self.model = create_backbone(
            self.hparams["model"],
            self.hparams["in_channels"],
            self.weights,
            self.hparams["adapt_channels"],
        )
        layer3_dim, layer4_dim = tap_channels(self.model)
        self.projection_head = MoCoProjectionHead(layer4_dim, hidden, out)
        self.model_momentum = momentum_twin(self.model)
        self._key_batch_norms = split_batch_norms(self.model_momentum)
        self.projection_head_momentum = momentum_twin(self.projection_head)
        self.queue = KeyQueue(self.hparams["memory_bank_size"], out)
        # (online, momentum) modules, in the order their EMA is updated each step.
        self.momentum_pairs: list[tuple[nn.Module, nn.Module]] = [
            (self.model, self.model_momentum),
            (self.projection_head, self.projection_head_momentum),
        ]
        if self.hparams["use_cc"]:
            self.cc_head = MoCoProjectionHead(layer3_dim, hidden, out)
            self.cc_head_momentum = momentum_twin(self.cc_head)
            self.cc_queue = KeyQueue(self.hparams["memory_bank_size"], out)
            self.momentum_pairs.append((self.cc_head, self.cc_head_momentum))
        if self.hparams["use_di"]:
            self.di_projector = BYOLProjectionHead(layer4_dim, hidden, out)
            self.di_projector_momentum = momentum_twin(self.di_projector)
            self.di_predictor = BYOLPredictionHead(out, hidden, out)
            self.momentum_pairs.append((self.di_projector, self.di_projector_momentum))
        # Every rank enqueues the same all-gathered keys, so the queues stay equal
        # without DDP broadcasting megabytes of buffers from rank 0 at every step.
        self._ddp_params_and_buffers_to_ignore = [
            name for name, _ in self.named_buffers() if "queue." in name
        ]

    def configure_optimizers(self) -> OptimizerLRScheduler:
        """SGD with linear warm-up and cosine decay, stepped every batch.

        Returns:
            Optimizer and per-step learning-rate scheduler.
        """
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = SGD(
            trainable,
            lr=self.hparams["lr"],
            momentum=self.hparams["momentum"],
            weight_decay=self.hparams["weight_decay"],
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": warmup_cosine_schedule(
                optimizer, self.trainer, self.hparams["warmup_epochs"]
            ),
        }

    def current_moco_momentum(self) -> float:
        """EMA coefficient for the current step (constant unless scheduled).

        Returns:
            The momentum m.
        """
        base: float = self.hparams["moco_momentum"]
        if not self.hparams["moco_momentum_schedule"] or self._trainer is None:
            return base
        return cosine_schedule(
            self.trainer.global_step, int(self.trainer.estimated_stepping_batches), base, 1.0
        )

    def training_step(self, batch: Sample, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Make views, match boxes, compute all terms, update momentum and queues.

        Args:
            batch: Batch with ``image`` ``[B, C, H, W]``, normalized.
            batch_idx: Index of the batch.
            dataloader_idx: Index of the dataloader.

        Returns:
            The total loss.
        """
        momentum = self.current_moco_momentum()
        self.update_momentum_encoders(momentum)
        loss, logs, keys = self._step(batch["image"])
        self._pending_keys = keys  # enqueued in on_after_backward
        batch_size = batch["image"].shape[0]
        self.log("train_loss", loss, batch_size=batch_size, prog_bar=True)
        self.log("train_loss_epoch", loss, batch_size=batch_size, on_step=False, on_epoch=True)
        self.log_dict({f"train_{k}": v for k, v in logs.items()}, batch_size=batch_size)
        self.log("moco_momentum", momentum, batch_size=batch_size)
        return loss

    @torch.no_grad()
    def update_momentum_encoders(self, momentum: float) -> None:
        """Move every momentum module towards its online module by EMA.

        Only parameters move; buffers (batch-norm statistics) are left alone, since the
        momentum encoder runs in training mode and tracks its own, as in MoCo.

        Args:
            momentum: EMA coefficient m in [0, 1]: ``twin = m * twin + (1 - m) * online``.
        """
        for online, twin in self.momentum_pairs:
            update_momentum(online, twin, momentum)

    def on_after_backward(self) -> None:
        """Add this step's keys, gathered from all ranks, to the queues.

        Backward still needs the queues as they were (writing them inside the step
        would force a copy of each per step); this hook runs after it and before any
        callback's ``on_train_batch_end``, so a checkpoint written there (e.g. by
        ``ModelCheckpoint(every_n_train_steps=...)``) holds this step's keys.
        """
        keys = self._pending_keys
        self.queue.enqueue(gather_keys(keys["global"]))
        if self.hparams["use_cc"]:
            self.cc_queue.enqueue(gather_keys(keys["cc"]))

    def validation_step(self, batch: Sample, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Compute the same losses on held-out images, without updating any state.

        Args:
            batch: Batch with ``image`` ``[B, C, H, W]``, normalized.
            batch_idx: Index of the batch.
            dataloader_idx: Index of the dataloader.
        """
        loss, logs, _ = self._step(batch["image"])
        batch_size = batch["image"].shape[0]
        self.log("val_loss", loss, batch_size=batch_size, sync_dist=True)
        self.log_dict({f"val_{k}": v for k, v in logs.items()}, batch_size=batch_size)

    def test_step(self, batch: Sample, batch_idx: int, dataloader_idx: int = 0) -> None:
        """No-op: pre-training has no test metric; evaluate downstream instead."""

    def predict_step(self, batch: Sample, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Pooled layer4 features of the query backbone.

        Args:
            batch: Batch with ``image``.
            batch_idx: Index of the batch.
            dataloader_idx: Index of the dataloader.

        Returns:
            ``[B, D]`` features.
        """
        return self(batch["image"])

    def _step(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """All loss terms of one batch; no state is changed.

        Returns:
            Total loss, detached values to log, and the normalized keys to enqueue.
        """
        self._check_channels(images)
        with torch.no_grad():
            views = self.augmentation(images)
        query3, query4 = self._taps(self.model, self._memory_format(views.view1))
        key3, key4 = self._key_features(self._memory_format(views.view2))

        pooled = global_pool(query4)
        logs: dict[str, Tensor] = {}
        keys: dict[str, Tensor] = {}
        terms = [("global", self.projection_head, self.projection_head_momentum, self.queue)]
        features = {"global": (pooled, global_pool(key4))}
        if self.hparams["use_cc"]:
            terms.append(("cc", self.cc_head, self.cc_head_momentum, self.cc_queue))
            features["cc"] = (global_pool(query3), global_pool(key3))
        total = pooled.new_zeros(())
        for name, head, head_momentum, queue in terms:
            loss, logits, keys[name] = self._contrastive_term(
                head, head_momentum, *features[name], queue
            )
            total = total + self.hparams[f"{name}_weight"] * loss
            logs |= {f"{name}_loss": loss.detach(), f"{name}_top1": top1_accuracy(logits.detach())}
        if images.shape[0] > 1:  # undefined (NaN) for one image, e.g. a one-chip split
            logs["embedding_std"] = F.normalize(pooled.detach(), dim=1).std(0).mean()

        if self.hparams["use_di"]:
            pairs = self.box_matcher(views.geom1, views.geom2)
            di_loss = self.dynamic_instance_loss(query4, key4, pairs, views)
            total = total + self.hparams["di_weight"] * di_loss
            logs |= {
                "di_loss": di_loss.detach(),
                "boxes_per_image": pairs.valid.float().sum() / images.shape[0],
            }
        return total, logs, keys

    def _contrastive_term(
        self,
        head: nn.Module,
        head_momentum: nn.Module,
        query_features: Tensor,
        key_features: Tensor,
        queue: KeyQueue,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One MoCo InfoNCE term: query projections against the key and the queue.

        Args:
            head: Online projector of the query features.
            head_momentum: Its momentum twin, for the key features.
            query_features: ``[B, D]`` pooled query-encoder features.
            key_features: ``[B, D]`` pooled key-encoder features.
            queue: Negative keys of this term.

        Returns:
            The loss, the logits and the normalized keys to enqueue.
        """
        query = F.normalize(head(query_features), dim=1)
        with torch.no_grad():
            key = F.normalize(head_momentum(key_features), dim=1)
        logits = info_nce(query, key, queue.keys, self.hparams["temperature"])
        return info_nce_loss(logits), logits, key

    def _check_channels(self, images: Tensor) -> None:
        """Name the option before the first convolution fails on the channel count.

        Raises:
            ValueError: If the images do not have ``in_channels`` channels.
        """
        expected: int = self.hparams["in_channels"]
        channels = images.shape[1]
        if channels != expected:
            raise ValueError(
                f"DI3CLTask: in_channels={expected}, but the images of the batch have "
                f"{channels} channel(s) (shape {tuple(images.shape)}); set the task's "
                f"in_channels (model.init_args.in_channels) to {channels}"
            )

    def _key_features(self, view2: Tensor) -> tuple[Tensor, Tensor]:
        """layer3 and layer4 of the momentum encoder, without a BN leak.

        Under DDP the batch is shuffled across ranks (batch-shuffle BN); in a single
        process it is permuted and normalized in ``key_bn_splits`` groups.
        """
        with torch.no_grad():
            if is_distributed():
                self._set_key_bn_splits(1)
                shuffled, inverse = batch_shuffle_distributed(view2)
                key3, key4 = self._taps(self.model_momentum, shuffled)
                return (
                    batch_unshuffle_distributed(key3, inverse),
                    batch_unshuffle_distributed(key4, inverse),
                )
            self._set_key_bn_splits(largest_split(view2.shape[0], self.hparams["key_bn_splits"]))
            permutation = torch.randperm(view2.shape[0], device=view2.device)
            inverse = torch.argsort(permutation)
            key3, key4 = self._taps(self.model_momentum, view2[permutation])
            return key3[inverse], key4[inverse]

    def _set_key_bn_splits(self, splits: int) -> None:
        layer: SplitBatchNorm2d
        for layer in self._key_batch_norms:
            layer.splits = splits

    def dynamic_instance_loss(
        self, query4: Tensor, key4: Tensor, pairs: BoxPairs, views: TwoViews
    ) -> Tensor:
        """The Dynamic Instance term: matched boxes' RoI features regressed with ``2 - 2 cos``.

        Args:
            query4: ``[B, C, h, w]`` layer4 features of the query view.
            key4: The momentum encoder's layer4 features of the key view.
            pairs: Matched boxes in both views' pixel coordinates.
            views: The two views (for the feature stride).

        Returns:
            The mean regression loss over the valid box pairs (0 without any).
        """
        scale = query4.shape[-1] / views.view1.shape[-1]
        output = self.hparams["roi_output_size"]
        prediction = self.di_predictor(
            self.di_projector(box_features(query4, pairs.boxes1, output, scale))
        )
        with torch.no_grad():
            target = self.di_projector_momentum(box_features(key4, pairs.boxes2, output, scale))
        return masked_regression_loss(prediction, target, pairs.valid)

    def _memory_format(self, images: Tensor) -> Tensor:
        if self.hparams["channels_last"]:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def on_fit_start(self) -> None:
        """Read the speckle's dB span if needed; switch to channels-last.

        cuDNN and oneDNN both prefer channels-last: a ResNet-18 forward and backward
        at batch 32 and 224 px took 15 % less time on this project's 2-core CPU.

        Raises:
            ValueError: If speckle is on, ``speckle_db_span`` is None and the
                datamodule has no ``RangeNormalize`` to read it from.
        """
        speckle = self.augmentation.speckle
        if speckle is not None and speckle.db_span is None:
            datamodule = getattr(self.trainer, "datamodule", None)
            self.augmentation.set_speckle_db_span(
                normalization_db_span(datamodule, "DI3CLTask: views.speckle_db_span")
            )
            # The new span buffer is built on the CPU; the task is already on its device.
            self.augmentation.to(self.device)
        if self.hparams["channels_last"]:
            self.to(memory_format=torch.channels_last)


def momentum_twin(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` (pre-trained weights included) as its momentum twin.

    Args:
        module: Online module.

    Returns:
        The copy; it never receives gradients and follows ``module`` by EMA.
    """
    twin = copy.deepcopy(module)
    deactivate_requires_grad(twin)
    return twin


def _validate(**values: Any) -> None:
    positive = (
        "in_channels",
        "size",
        "temperature",
        "memory_bank_size",
        "roi_output_size",
    )
    for name in positive:
        if not values[name] > 0:
            raise ValueError(f"DI3CLTask: {name} must be positive, got {values[name]}")
    if not 0.0 <= values["moco_momentum"] <= 1.0:
        raise ValueError(
            f"DI3CLTask: moco_momentum must be in [0, 1], got {values['moco_momentum']}"
        )
    if values["key_bn_splits"] < 1:
        raise ValueError(
            f"DI3CLTask: key_bn_splits must be at least 1, got {values['key_bn_splits']}"
        )


def _options[T: (ViewOptions, BoxOptions)](
    kind: type[T], value: T | Mapping[str, Any] | None, name: str
) -> T:
    """``value`` as ``kind``: its defaults if None, else built from a mapping's fields.

    Raises:
        TypeError: If ``value`` is neither a ``kind`` nor a mapping.
        ValueError: If a mapping holds a key that is not a field of ``kind``, or a
            value out of range; the message names the option.
    """
    if value is None:
        return kind()
    if not isinstance(value, Mapping):
        if not isinstance(value, kind):
            raise TypeError(f"DI3CLTask: {name} must be a {kind.__name__} or a mapping")
        return value
    known = [field.name for field in fields(kind)]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"DI3CLTask: {name} has no option(s) {unknown}; expected some of {known}")
    try:
        return kind(**value)
    except ValueError as error:
        raise ValueError(f"DI3CLTask: {name}: {error}") from error
