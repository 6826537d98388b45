"""SARMAE's semantic anchor representation constraint (SARC): optical tokens as anchors.

SARMAE (arXiv 2512.16635) aligns the visible patch tokens of its SAR encoder with a
frozen optical encoder's patch tokens at the same positions, on images that have a
co-registered optical image: a small head (Linear, ReLU, Linear, LayerNorm) maps each
SAR token to the optical encoder's width, and the loss is ``1 - cos`` per token,
averaged over the tokens of the paired images. The optical encoder is never trained;
it anchors the SAR features to the semantics it already has.
"""

import warnings
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from lightly.models import utils
from timm.models import VisionTransformer, is_model_in_modules
from torch import Tensor, nn

from ..models.backbone import fit_state_dict


def build_optical_teacher(
    name: str, size: int, in_chans: int, patch_size: int, weights: str | None
) -> VisionTransformer:
    """Build the frozen optical ViT whose patch grid matches the SAR encoder's.

    The model is built without timm's pretrained download (``pretrained=False``), for
    ``size`` pixels with timm's dynamic image size, and its weights are read from
    ``weights``: a plain state dict of the same timm model (``in_chans``,
    ``num_classes=0``) saved with ``torch.save(model.state_dict(), path)``, loaded
    with ``weights_only=True`` and strict key matching. A position embedding made for
    another image size is resampled to this one, as timm does for pretrained weights.

    Args:
        name: timm Vision Transformer name, e.g. ``vit_small_patch16_224``.
        size: Side of the images the SAR encoder sees, in pixels.
        in_chans: Optical channels.
        patch_size: Patch size of the SAR encoder, which the teacher must share so
            that both token grids coincide.
        weights: The state dict file; None leaves random weights, with a warning.

    Returns:
        The teacher, frozen (no parameter requires gradients) and in eval mode.

    Raises:
        TypeError: If ``name`` is not a timm Vision Transformer.
        ValueError: If its patch size differs from ``patch_size``, or ``weights`` is
            not a state dict of this model.
        FileNotFoundError: If ``weights`` does not exist.
    """
    if not is_model_in_modules(name, ["vision_transformer"]):
        raise TypeError(f"sarc_teacher must be a timm Vision Transformer, got {name!r}")
    teacher = timm.create_model(
        name,
        pretrained=False,
        in_chans=in_chans,
        num_classes=0,
        img_size=size,
        dynamic_img_size=True,
    )
    if not isinstance(teacher, VisionTransformer):
        raise TypeError(f"sarc_teacher must be a timm Vision Transformer, got {name!r}")
    teacher_patch = tuple(teacher.patch_embed.patch_size)
    if teacher_patch != (patch_size, patch_size):
        raise ValueError(
            f"sarc_teacher {name!r} has {teacher_patch[0]}x{teacher_patch[1]} pixel patches "
            f"but the SAR encoder has {patch_size}x{patch_size}: their token grids would not "
            "coincide; choose a teacher with the encoder's patch size"
        )
    if weights is None:
        warnings.warn(
            f"sarc_teacher {name!r} has random weights (sarc_teacher_weights is None): the "
            "semantic anchor is then meaningless; save a pre-trained optical encoder's "
            "state dict and set sarc_teacher_weights to it",
            stacklevel=2,
        )
    else:
        _load_teacher_weights(teacher, name, weights)
    teacher.requires_grad_(False)
    return teacher.eval()


def _load_teacher_weights(teacher: VisionTransformer, name: str, weights: str) -> None:
    """Load a plain timm state dict strictly, resampling the position embedding if needed.

    Args:
        teacher: The freshly built teacher.
        name: Its timm name, for errors.
        weights: The state dict file.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is not a state dict of this model.
    """
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"sarc_teacher_weights {weights!r} does not exist; save one with "
            f"torch.save(timm.create_model({name!r}, in_chans=..., num_classes=0)"
            ".state_dict(), path) on a machine with network access"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    # Strict, except that a position embedding made for another size is resampled.
    teacher.load_state_dict(fit_state_dict(teacher, state, f"sarc_teacher_weights {path}"))


class SemanticAnchor(nn.Module):
    """The SARC head and its frozen optical teacher, with the alignment loss.

    The teacher stays in eval mode whatever mode the module is put in, and none of its
    parameters requires gradients; it is a submodule, so it is saved in checkpoints
    (which makes resuming exact without the weights file).
    """

    def __init__(self, embed_dim: int, teacher: VisionTransformer, hidden_dim: int) -> None:
        """Initialize the head for a SAR encoder of width ``embed_dim``.

        Args:
            embed_dim: Token width of the SAR encoder.
            teacher: The frozen optical encoder (:func:`build_optical_teacher`).
            hidden_dim: Hidden width of the head.
        """
        super().__init__()
        self.head = nn.Sequential(
            nn.Linear(embed_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, teacher.embed_dim),
            nn.LayerNorm(teacher.embed_dim),
        )
        self.teacher = teacher

    def train(self, mode: bool = True) -> "SemanticAnchor":
        """Set the head's mode; the teacher stays in eval mode (dropout off, fixed norms).

        Args:
            mode: Training (True) or evaluation mode.

        Returns:
            This module.
        """
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(
        self, sar_tokens: Tensor, patch_index: Tensor, optical: Tensor | None, paired: Tensor
    ) -> Tensor:
        """Mean ``1 - cos`` between projected SAR tokens and the optical tokens beneath them.

        Args:
            sar_tokens: ``[B, K, D]`` visible patch tokens of the SAR encoder (no
                prefix tokens).
            patch_index: ``[B, K]`` patch of each token, in the patch grid's row-major
                order.
            optical: ``[B, C_o, H, W]`` optical images on the SAR images' pixel grid,
                or None when the batch has none (all unpaired).
            paired: ``[B]`` bool, which images have a real optical partner.

        Returns:
            The loss averaged over the tokens of the paired images; exactly 0 (with
            the head still in the graph, so that every parameter gets a gradient, as
            distributed training expects) when no image is paired.
        """
        projected = self.head(sar_tokens)
        # A boolean index: only real pairs pay for the teacher's forward pass.
        if optical is None or not bool(paired.any()):
            return projected.sum() * 0.0
        with torch.no_grad():
            anchors = self.teacher.forward_features(optical[paired])
            anchors = anchors[:, self.teacher.num_prefix_tokens :]
            anchors = utils.get_at_index(anchors, patch_index[paired])
        cosine = F.cosine_similarity(projected[paired], anchors.type_as(projected), dim=-1)
        return (1.0 - cosine).mean()
