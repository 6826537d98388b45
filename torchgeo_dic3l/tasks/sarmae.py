"""SARMAE: a masked autoencoder that learns to see through speckle, as a TorchGeo task."""

from collections.abc import Sequence

import timm
import torch
from lightly.models import utils
from lightly.models.modules import MAEDecoderTIMM, MaskedVisionTransformerTIMM
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from timm.models import VisionTransformer, is_model_in_modules
from torch import Tensor, nn
from torchgeo.datasets.utils import Sample
from torchgeo.models import get_weight
from torchgeo.tasks import MAE
from torchgeo.tasks.utils import load_state_dict
from torchvision.models._api import WeightsEnum

from ..ssl.sare import NoiseLaw, SpeckleAwareNoise
from ..transforms.radiometry import normalization_db_span
from .random_state import RandomStateCheckpointing
from .schedule import warmup_cosine_schedule


class SARMAETask(RandomStateCheckpointing, MAE):
    """SARMAE self-supervised pre-training (arXiv 2512.16635) on TorchGeo's MAE task.

    TorchGeo's ``MAE`` (lightly's masked timm ViT and MAE decoder, per-patch
    normalized pixel loss on the masked patches, AdamW with warm-up and cosine decay)
    with SARMAE's speckle-aware representation enhancement (SARE): with ``sare=True``
    the encoder sees a speckled copy of each augmented image
    (:class:`~torchgeo_dic3l.ssl.sare.SpeckleAwareNoise`, the exact multiplication
    of the linear power on range-normalized dB values) while the reconstruction
    target stays the clean image. With ``sare=False`` it is plain MAE, so the two are
    compared with everything else equal.

    Unlike TorchGeo's ``MAE``, the ViT is built for ``size`` (any size divisible by
    the patch size; TorchGeo's takes the timm model's default), with dynamic image
    sizes so that probes and fine-tuning can feed other sizes, and any channel count.
    The encoder is ``self.backbone.vit``, a plain timm ``VisionTransformer``, which the
    online probe (:class:`~torchgeo_dic3l.callbacks.LinearProbe`) reads.

    Not built yet: SARMAE's semantic anchor constraint (SARC, alignment of the visible
    tokens with a frozen optical encoder on paired images).
    """

    def __init__(
        self,
        model: str = "vit_base_patch16_224",
        weights: WeightsEnum | str | bool | None = None,
        in_channels: int = 2,
        transform: nn.Module | None = None,
        decoder_dim: int = 512,
        lr: float = 1e-3,
        decoder_num_heads: int = 8,
        decoder_depth: int = 1,
        weight_decay: float = 0.05,
        mask_ratio: float = 0.75,
        size: int = 224,
        norm_pix_loss: bool = True,
        warmup_epochs: int = 40,
        sare: bool = True,
        sare_law: NoiseLaw = "lognormal",
        sare_sigma: Sequence[float] = (0.0, 0.7),
        sare_p: float = 0.5,
        sare_db_span: Sequence[float] | None = None,
    ) -> None:
        """Initialize a SARMAE task.

        Defaults are the published values where the paper gives them (ViT-B/16 at
        224 px, mask ratio 0.75, AdamW with base learning rate 1e-3 for batch 256 and
        weight decay 0.05, normalized pixel loss, SARE with log-normal speckle of
        strength up to 0.7 on half of the images); the decoder's size and the warm-up
        are TorchGeo's ``MAE`` defaults. The paper's 800 epochs, batch 4,096 and
        gradient clipping at 1.0 are trainer and datamodule settings (see
        ``experiments/configs/pretrain_sarmae_chips.yaml``).

        Args:
            model: timm Vision Transformer name, e.g. ``vit_tiny_patch16_224``.
            weights: Initial encoder weights: None/False (random), True (timm's
                pretrained weights, which need the network), a ``WeightsEnum`` or its
                name.
            in_channels: Input channels (1 single-pol, 2 for VV + VH, ...).
            transform: Augmentation of the training batches on the device; TorchGeo's
                MAE augmentation (random resized crop to ``size``, flips) if None.
            decoder_dim: Embedding width of the decoder.
            lr: Peak AdamW learning rate; scale it linearly with batch size / 256.
            decoder_num_heads: Attention heads of the decoder.
            decoder_depth: Transformer blocks of the decoder.
            weight_decay: AdamW weight decay.
            mask_ratio: Fraction of patches hidden from the encoder.
            size: Side of the augmented images in pixels, divisible by the patch size.
            norm_pix_loss: Normalize each target patch to zero mean and unit variance.
            warmup_epochs: Linear warm-up epochs before the cosine decay.
            sare: Show the encoder speckled images and reconstruct the clean ones.
            sare_law: ``"lognormal"`` (as released) or ``"gamma"`` (unit-mean, with
                coefficient of variation ``2 sigma``).
            sare_sigma: Range of the per-image noise strength ``sigma``.
            sare_p: Fraction of the images that are speckled.
            sare_db_span: dB width ``high - low`` of each channel's range
                normalization; read from the datamodule's ``RangeNormalize`` at the
                start of fit if None.

        Raises:
            ValueError: If ``size`` is not a multiple of the patch size, or a SARE
                option is out of range.
            TypeError: If ``model`` is not a timm Vision Transformer.
        """
        noise = (
            SpeckleAwareNoise(sare_law, (sare_sigma[0], sare_sigma[1]), sare_p, sare_db_span)
            if sare
            else None
        )
        super().__init__(
            model=model,
            weights=weights,
            in_channels=in_channels,
            transform=transform,
            decoder_dim=decoder_dim,
            lr=lr,
            decoder_num_heads=decoder_num_heads,
            decoder_depth=decoder_depth,
            weight_decay=weight_decay,
            mask_ratio=mask_ratio,
            size=size,
            norm_pix_loss=norm_pix_loss,
            warmup_epochs=warmup_epochs,
        )
        self.noise = noise

    def configure_models(self) -> None:
        """Build the masked ViT encoder for ``size`` and the MAE decoder.

        Raises:
            TypeError: If ``model`` is not a timm Vision Transformer.
            ValueError: If ``size`` is not a multiple of the patch size.
        """
        name: str = self.hparams["model"]
        size: int = self.hparams["size"]
        # Checked by name first: other timm models reject the ViT-only arguments below.
        if not is_model_in_modules(name, ["vision_transformer"]):
            raise TypeError(f"SARMAETask needs a timm Vision Transformer, got {name!r}")
        vit = timm.create_model(
            name,
            in_chans=self.hparams["in_channels"],
            num_classes=0,
            pretrained=self.weights is True,
            img_size=size,
            dynamic_img_size=True,
        )
        if not isinstance(vit, VisionTransformer):
            raise TypeError(f"SARMAETask needs a timm Vision Transformer, got {name!r}")
        patch = int(vit.patch_embed.patch_size[0])
        if size % patch:
            raise ValueError(
                f"SARMAETask: size={size} is not a multiple of the patch size {patch}"
            )
        if self.weights and self.weights is not True:
            weight = (
                self.weights if isinstance(self.weights, WeightsEnum) else get_weight(self.weights)
            )
            load_state_dict(
                vit, weight.get_state_dict(progress=True, check_hash=True, weights_only=True)
            )
        self.patch_size = patch
        self.num_prefix_tokens = vit.num_prefix_tokens
        self.backbone = MaskedVisionTransformerTIMM(vit=vit)
        self.decoder = MAEDecoderTIMM(
            num_patches=vit.patch_embed.num_patches,
            patch_size=patch,
            embed_dim=vit.embed_dim,
            decoder_embed_dim=self.hparams["decoder_dim"],
            decoder_depth=self.hparams["decoder_depth"],
            decoder_num_heads=self.hparams["decoder_num_heads"],
            mlp_ratio=4.0,
            proj_drop_rate=0.0,
            attn_drop_rate=0.0,
            in_chans=self.hparams["in_channels"],
        )
        self.sequence_length = self.backbone.sequence_length

    def configure_optimizers(self) -> OptimizerLRScheduler:
        """AdamW as TorchGeo's ``MAE`` (betas 0.9, 0.95), with a per-step schedule.

        TorchGeo's ``MAE`` steps its warm-up and cosine decay once per epoch over
        ``max_epochs``, so a run bounded by ``max_steps`` (``max_epochs=-1``) would
        stay at the warm-up's starting rate; this task uses the package's per-step
        warm-up and cosine decay over the run's steps instead.

        Returns:
            Optimizer and per-step learning-rate scheduler.
        """
        optimizer = torch.optim.AdamW(
            self.parameters(),
            lr=self.hparams["lr"],
            weight_decay=self.hparams["weight_decay"],
            betas=(0.9, 0.95),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": warmup_cosine_schedule(
                optimizer, self.trainer, self.hparams["warmup_epochs"]
            ),
        }

    def on_fit_start(self) -> None:
        """Read the noise's dB span from the datamodule if it was not given.

        Raises:
            ValueError: If SARE is on, ``sare_db_span`` is None and the datamodule
                has no ``RangeNormalize`` to read it from.
        """
        if self.noise is not None and self.noise.db_span is None:
            datamodule = getattr(self.trainer, "datamodule", None)
            self.noise.set_db_span(normalization_db_span(datamodule, "SARMAETask: sare_db_span"))

    def reconstruction_loss(
        self, clean: Tensor, encoder_input: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Mask ``encoder_input``, reconstruct the masked patches and score them on ``clean``.

        Args:
            clean: ``[B, C, H, W]`` augmented images, the reconstruction target.
            encoder_input: The same images as the encoder sees them (speckled or not).

        Returns:
            The mean loss over the masked patches and the per-step diagnostics
            (``loss_std`` over images, ``pred_std``, ``target_std``).
        """
        batch = clean.shape[0]
        idx_keep, idx_mask = utils.random_token_mask(
            size=(batch, self.sequence_length),
            mask_ratio=self.hparams["mask_ratio"],
            device=clean.device,
        )
        prediction = self(encoder_input, idx_keep, idx_mask)
        # The decoder's indices count the class token; the patches have none.
        patches = utils.patchify(clean, self.patch_size)
        target = utils.get_at_index(patches, idx_mask - self.num_prefix_tokens)
        if self.hparams["norm_pix_loss"]:
            target = utils.normalize_mean_var(target, dim=-1)
        per_image = self.criterion(prediction, target).mean(dim=(1, 2))
        logs = {
            "loss_std": per_image.detach().std(),
            "pred_std": prediction.detach().std(),
            "target_std": target.std(),
        }
        return per_image.mean(), logs

    @torch.no_grad()
    def reconstruct(self, images: Tensor) -> dict[str, Tensor]:
        """Speckle, mask and reconstruct images, for looking at what the model learnt.

        With ``norm_pix_loss`` the decoder predicts normalized patches; they are
        shown with the mean and spread of the clean patches they replace, as the
        MAE authors draw them.

        Args:
            images: ``[B, C, size, size]`` range-normalized dB images.

        Returns:
            ``input`` (what the encoder would see), ``masked`` (its visible patches,
            the hidden ones set to NaN) and ``reconstruction`` (visible patches of
            the input, hidden ones predicted), each ``[B, C, size, size]``.
        """
        encoder_input = images if self.noise is None else self.noise(images)[0]
        batch, channels = images.shape[:2]
        idx_keep, idx_mask = utils.random_token_mask(
            size=(batch, self.sequence_length),
            mask_ratio=self.hparams["mask_ratio"],
            device=images.device,
        )
        prediction = self(encoder_input, idx_keep, idx_mask)
        index = idx_mask - self.num_prefix_tokens
        patches = utils.patchify(encoder_input, self.patch_size)
        if self.hparams["norm_pix_loss"]:
            clean = utils.get_at_index(utils.patchify(images, self.patch_size), index)
            mean, var = clean.mean(-1, keepdim=True), clean.var(-1, keepdim=True)
            prediction = prediction * (var + 1e-6).sqrt() + mean
        hidden = torch.full_like(prediction, torch.nan)
        return {
            "input": encoder_input,
            "masked": utils.unpatchify(
                utils.set_at_index(patches, index, hidden), self.patch_size, channels
            ),
            "reconstruction": utils.unpatchify(
                utils.set_at_index(patches, index, prediction), self.patch_size, channels
            ),
        }

    def training_step(self, batch: Sample, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Augment, speckle the encoder's copy, mask, reconstruct the clean patches.

        Args:
            batch: Batch with ``image`` ``[B, C, H, W]``, range-normalized dB.
            batch_idx: Index of the batch.
            dataloader_idx: Index of the dataloader.

        Returns:
            The loss.
        """
        with torch.no_grad():
            clean = self.transform(batch["image"].float())
            if self.noise is not None:
                encoder_input, noised = self.noise(clean)
            else:
                noised = torch.zeros(clean.shape[0], dtype=torch.bool, device=clean.device)
                encoder_input = clean
        loss, logs = self.reconstruction_loss(clean, encoder_input)
        size = clean.shape[0]
        self.log("train_loss", loss, batch_size=size, prog_bar=True)
        self.log("train_mae_loss", loss, batch_size=size)
        self.log("train_loss_epoch", loss, batch_size=size, on_step=False, on_epoch=True)
        self.log("train_noised_fraction", noised.float().mean(), batch_size=size)
        self.log_dict({f"train_{k}": v for k, v in logs.items()}, batch_size=size)
        return loss

    def validation_step(self, batch: Sample, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Score the reconstruction of held-out images, augmented and speckled as in training.

        Args:
            batch: Batch with ``image`` ``[B, C, H, W]``, range-normalized dB.
            batch_idx: Index of the batch.
            dataloader_idx: Index of the dataloader.
        """
        clean = self.transform(batch["image"].float())
        encoder_input = clean if self.noise is None else self.noise(clean)[0]
        loss, _ = self.reconstruction_loss(clean, encoder_input)
        self.log("val_loss", loss, batch_size=clean.shape[0], prog_bar=True)
