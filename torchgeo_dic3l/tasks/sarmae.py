"""SARMAE: a masked autoencoder that learns to see through speckle, as a TorchGeo task."""

from collections.abc import Sequence
from typing import NamedTuple

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

from ..ssl.sarc import SemanticAnchor, build_optical_teacher
from ..ssl.sare import NoiseLaw, SpeckleAwareNoise
from ..transforms.radiometry import normalization_db_span
from .random_state import RandomStateCheckpointing
from .schedule import warmup_cosine_schedule


class VisibleTokens(NamedTuple):
    """The encoder's output for the visible tokens of a masked batch.

    Attributes:
        tokens: ``[B, K, D]`` encoded tokens, the prefix (class) token first.
        idx_keep: ``[B, K]`` position of each in the token sequence (prefix counted).
        idx_mask: ``[B, M]`` positions of the hidden tokens.
    """

    tokens: Tensor
    idx_keep: Tensor
    idx_mask: Tensor


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

    With ``sarc=True`` it adds SARMAE's semantic anchor representation constraint
    (SARC, :class:`~torchgeo_dic3l.ssl.sarc.SemanticAnchor`) on batches with an
    ``optical`` image (``[B, C_o, H, W]`` on the SAR pixel grid, as
    :class:`~torchgeo_dic3l.datamodules.PairedSARChipsDataModule` serves them) and a
    ``paired`` flag per image: the SAR and optical images get one random crop and
    flips together, the encoder runs once on the SAR image's visible patches, and its
    output feeds both the MAE decoder and a head (Linear, ReLU, Linear, LayerNorm)
    whose tokens are aligned with a frozen optical ViT's patch tokens at the same
    positions (``1 - cos`` per token, over the paired images only). The loss is the
    MAE loss plus ``sarc_weight`` times the alignment; unpaired images (and batches
    without ``optical``) get the MAE loss only. The teacher is saved in checkpoints
    (under ``anchor.teacher.``, which
    :func:`~torchgeo_dic3l.models.extract_backbone` ignores), is never in the optimizer
    and stays in eval mode.

    Logged in training: ``train_loss`` (the total), ``train_mae_loss``,
    ``train_noised_fraction`` and the reconstruction diagnostics, and with SARC on
    ``train_align_loss`` and ``train_paired_fraction`` (not logged with SARC off);
    likewise ``val_loss`` and, with SARC on, ``val_mae_loss`` and ``val_align_loss``.

    Unlike TorchGeo's ``MAE``, the ViT is built for ``size`` (any size divisible by
    the patch size; TorchGeo's takes the timm model's default), with dynamic image
    sizes so that probes and fine-tuning can feed other sizes, and any channel count.
    The encoder is ``self.backbone.vit``, a plain timm ``VisionTransformer``, which the
    online probe (:class:`~torchgeo_dic3l.callbacks.LinearProbe`) reads.
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
        sarc: bool = False,
        sarc_teacher: str = "vit_small_patch16_224",
        sarc_teacher_weights: str | None = None,
        sarc_optical_channels: int = 3,
        sarc_weight: float = 1.0,
        sarc_hidden_dim: int = 512,
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
            sarc: Align the visible SAR tokens with a frozen optical encoder's tokens
                on paired images (SARC).
            sarc_teacher: timm Vision Transformer name of the optical encoder; built
                for ``size`` with the encoder's patch size.
            sarc_teacher_weights: File with a plain timm state dict of
                ``sarc_teacher`` (``in_chans=sarc_optical_channels``,
                ``num_classes=0``); None keeps random weights, which makes the anchor
                meaningless (a warning says so).
            sarc_optical_channels: Channels of the optical images.
            sarc_weight: Weight of the alignment loss beside the MAE loss.
            sarc_hidden_dim: Hidden width of the SARC head.

        Raises:
            ValueError: If ``size`` is not a multiple of the patch size, a SARE
                option is out of range, or the SARC teacher's patch size differs from
                the encoder's.
            TypeError: If ``model`` or ``sarc_teacher`` is not a timm Vision
                Transformer.
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
            TypeError: If ``model`` (or the SARC teacher) is not a timm Vision
                Transformer.
            ValueError: If ``size`` is not a multiple of the patch size, or SARC
                cannot pair the encoder's tokens with the teacher's.
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
        self.anchor: SemanticAnchor | None = None
        if self.hparams["sarc"]:
            # The visible patch tokens follow the prefix tokens only if the mask keeps
            # all of them, which lightly's random_token_mask does for one class token.
            if vit.num_prefix_tokens > 1:
                raise ValueError(
                    f"SARC needs a ViT with at most one prefix token; {name!r} has "
                    f"{vit.num_prefix_tokens} (register tokens)"
                )
            teacher = build_optical_teacher(
                self.hparams["sarc_teacher"],
                size,
                self.hparams["sarc_optical_channels"],
                patch,
                self.hparams["sarc_teacher_weights"],
            )
            self.anchor = SemanticAnchor(vit.embed_dim, teacher, self.hparams["sarc_hidden_dim"])

    def configure_optimizers(self) -> OptimizerLRScheduler:
        """AdamW as TorchGeo's ``MAE`` (betas 0.9, 0.95), with a per-step schedule.

        TorchGeo's ``MAE`` steps its warm-up and cosine decay once per epoch over
        ``max_epochs``, so a run bounded by ``max_steps`` (``max_epochs=-1``) would
        stay at the warm-up's starting rate; this task uses the package's per-step
        warm-up and cosine decay over the run's steps instead. Frozen parameters (the
        SARC teacher) are left out.

        Returns:
            Optimizer and per-step learning-rate scheduler.
        """
        optimizer = torch.optim.AdamW(
            [parameter for parameter in self.parameters() if parameter.requires_grad],
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

    def encode_visible(self, encoder_input: Tensor) -> VisibleTokens:
        """Draw a random mask and encode the visible tokens of ``encoder_input``.

        Args:
            encoder_input: ``[B, C, H, W]`` images as the encoder sees them.

        Returns:
            The encoded visible tokens and the kept and hidden token positions.
        """
        idx_keep, idx_mask = utils.random_token_mask(
            size=(encoder_input.shape[0], self.sequence_length),
            mask_ratio=self.hparams["mask_ratio"],
            device=encoder_input.device,
        )
        tokens = self.backbone.encode(images=encoder_input, idx_keep=idx_keep)
        return VisibleTokens(tokens, idx_keep, idx_mask)

    def predict_masked(self, visible: VisibleTokens) -> Tensor:
        """Decode the encoded visible tokens into the pixels of the hidden patches.

        Args:
            visible: Output of :meth:`encode_visible`.

        Returns:
            ``[B, M, patch * patch * C]`` predicted patches, in ``idx_mask`` order.
        """
        embedded = self.decoder.embed(visible.tokens)
        sequence = utils.repeat_token(
            self.decoder.mask_token, (embedded.shape[0], self.sequence_length)
        )
        sequence = utils.set_at_index(sequence, visible.idx_keep, embedded.type_as(sequence))
        decoded = self.decoder.decode(sequence)
        return self.decoder.predict(utils.get_at_index(decoded, visible.idx_mask))

    def forward(self, images: Tensor, idx_keep: Tensor, idx_mask: Tensor) -> Tensor:
        """Encode the visible tokens and predict the hidden patches, as TorchGeo's ``MAE``.

        Args:
            images: ``[B, C, H, W]`` images.
            idx_keep: ``[B, K]`` positions of the visible tokens.
            idx_mask: ``[B, M]`` positions of the hidden tokens.

        Returns:
            ``[B, M, patch * patch * C]`` predicted patches.
        """
        tokens = self.backbone.encode(images=images, idx_keep=idx_keep)
        return self.predict_masked(VisibleTokens(tokens, idx_keep, idx_mask))

    def reconstruction_loss(
        self, clean: Tensor, visible: VisibleTokens
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Reconstruct the hidden patches from the encoded visible ones; score them on ``clean``.

        Args:
            clean: ``[B, C, H, W]`` augmented images, the reconstruction target.
            visible: The encoded visible tokens of the same images as the encoder saw
                them (speckled or not), from :meth:`encode_visible`.

        Returns:
            The mean loss over the masked patches and the per-step diagnostics
            (``loss_std`` over images, ``pred_std``, ``target_std``).
        """
        prediction = self.predict_masked(visible)
        # The decoder's indices count the class token; the patches have none.
        patches = utils.patchify(clean, self.patch_size)
        target = utils.get_at_index(patches, visible.idx_mask - self.num_prefix_tokens)
        if self.hparams["norm_pix_loss"]:
            target = utils.normalize_mean_var(target, dim=-1)
        per_image = self.criterion(prediction, target).mean(dim=(1, 2))
        logs = {
            "loss_std": per_image.detach().std(),
            "pred_std": prediction.detach().std(),
            "target_std": target.std(),
        }
        return per_image.mean(), logs

    def alignment_loss(
        self, visible: VisibleTokens, optical: Tensor | None, paired: Tensor
    ) -> Tensor:
        """SARC: align the visible SAR patch tokens with the optical teacher's.

        Args:
            visible: The encoded visible tokens, from :meth:`encode_visible`.
            optical: ``[B, C_o, H, W]`` optical images augmented with the SAR ones,
                or None when the batch has none.
            paired: ``[B]`` bool, which images have a real optical partner.

        Returns:
            Mean ``1 - cos`` over the visible tokens of the paired images; 0 when
            none is paired.

        Raises:
            RuntimeError: If SARC is off.
        """
        if self.anchor is None:
            raise RuntimeError("SARMAETask.alignment_loss needs sarc=True")
        prefix = self.num_prefix_tokens
        patch_index = visible.idx_keep[:, prefix:] - prefix
        return self.anchor(visible.tokens[:, prefix:], patch_index, optical, paired)

    def _augment(self, batch: Sample) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor]:
        """Augment a batch and speckle the encoder's copy, SAR and optical alike.

        With SARC on and an ``optical`` image in the batch, the SAR and optical images
        are stacked on the channel axis so that one random crop and flip moves both
        (the augmentation must not depend on the channel count, as TorchGeo's MAE
        augmentation does not); speckle reaches the SAR channels only.

        Args:
            batch: Batch with ``image`` and, optionally, ``optical`` and ``paired``.

        Returns:
            The clean SAR images, the encoder's copy, which images were speckled, the
            optical images (None if SARC is off or the batch has none) and which
            images are paired.

        Raises:
            ValueError: If the optical images do not have ``sarc_optical_channels``
                channels or the SAR images' height and width.
        """
        sar = batch["image"].float()
        optical = batch.get("optical") if self.anchor is not None else None
        if optical is None:
            clean = self.transform(sar)
            paired = torch.zeros(sar.shape[0], dtype=torch.bool, device=sar.device)
        else:
            expected = self.hparams["sarc_optical_channels"]
            if optical.shape[1] != expected or optical.shape[-2:] != sar.shape[-2:]:
                raise ValueError(
                    f"optical images of shape {tuple(optical.shape[1:])} do not fit SAR "
                    f"images of shape {tuple(sar.shape[1:])} with "
                    f"sarc_optical_channels={expected}"
                )
            both = self.transform(torch.cat([sar, optical.float()], dim=1))
            clean, optical = both[:, : sar.shape[1]], both[:, sar.shape[1] :]
            default = torch.ones(sar.shape[0], dtype=torch.bool, device=sar.device)
            paired = batch.get("paired", default).bool()
        if self.noise is not None:
            encoder_input, noised = self.noise(clean)
        else:
            noised = torch.zeros(clean.shape[0], dtype=torch.bool, device=clean.device)
            encoder_input = clean
        return clean, encoder_input, noised, optical, paired

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
        channels = images.shape[1]
        visible = self.encode_visible(encoder_input)
        prediction = self.predict_masked(visible)
        index = visible.idx_mask - self.num_prefix_tokens
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
        """Augment, speckle the encoder's copy, mask, reconstruct the clean patches, align.

        Args:
            batch: Batch with ``image`` ``[B, C, H, W]``, range-normalized dB, and for
                SARC ``optical`` ``[B, C_o, H, W]`` and ``paired`` ``[B]`` (all
                images are taken as paired if ``paired`` is missing).
            batch_idx: Index of the batch.
            dataloader_idx: Index of the dataloader.

        Returns:
            The loss.
        """
        with torch.no_grad():
            clean, encoder_input, noised, optical, paired = self._augment(batch)
        # One encoder pass feeds both the decoder and the SARC head.
        visible = self.encode_visible(encoder_input)
        mae_loss, logs = self.reconstruction_loss(clean, visible)
        loss = mae_loss
        size = clean.shape[0]
        if self.anchor is not None:
            align_loss = self.alignment_loss(visible, optical, paired)
            loss = mae_loss + self.hparams["sarc_weight"] * align_loss
            self.log("train_align_loss", align_loss, batch_size=size)
            self.log("train_paired_fraction", paired.float().mean(), batch_size=size)
        self.log("train_loss", loss, batch_size=size, prog_bar=True)
        self.log("train_mae_loss", mae_loss, batch_size=size)
        self.log("train_loss_epoch", loss, batch_size=size, on_step=False, on_epoch=True)
        self.log("train_noised_fraction", noised.float().mean(), batch_size=size)
        self.log_dict({f"train_{k}": v for k, v in logs.items()}, batch_size=size)
        return loss

    def validation_step(self, batch: Sample, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Score held-out images, augmented and speckled as in training.

        Args:
            batch: Batch as in :meth:`training_step`.
            batch_idx: Index of the batch.
            dataloader_idx: Index of the dataloader.
        """
        clean, encoder_input, _, optical, paired = self._augment(batch)
        visible = self.encode_visible(encoder_input)
        loss, _ = self.reconstruction_loss(clean, visible)
        size = clean.shape[0]
        if self.anchor is not None:
            align_loss = self.alignment_loss(visible, optical, paired)
            self.log("val_mae_loss", loss, batch_size=size)
            self.log("val_align_loss", align_loss, batch_size=size)
            loss = loss + self.hparams["sarc_weight"] * align_loss
        self.log("val_loss", loss, batch_size=size, prog_bar=True)
