"""Patch-based CKA (PCKA, Zhou et al., IJCAI 2024) for dense features."""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mmdet.registry import MODELS
from .base import AlignmentLoss
from .feature_pair import align_feature_pair, warn_once
from .kernels import DEFAULT_EPS, gram_alignments


def patch_count(feat: Tensor, patch_size: int) -> int:
    """Patches ``n`` of a ``(B, C, H, W)`` map once resized up to a multiple
    of ``patch_size``."""
    h, w = feat.shape[2:]
    return math.ceil(h / patch_size) * math.ceil(w / patch_size)


def to_patches(feat: Tensor, patch_size: int) -> Tensor:
    """Cut a feature map into patches, one row per patch, per channel.

    The map is resized bilinearly so that H and W become the next multiple of
    ``patch_size`` (as the official code does), then cut into ``u x v``
    patches; the batch is folded into the feature axis.

    Args:
        feat (Tensor): Shape ``(B, C, H, W)``.
        patch_size (int): Patch side ``p`` in feature cells.

    Returns:
        Tensor: Shape ``(C, u * v, B * p * p)``.
    """
    b, c, h, w = feat.shape
    p = patch_size
    u, v = math.ceil(h / p), math.ceil(w / p)
    if (u * p, v * p) != (h, w):
        feat = F.interpolate(
            feat, size=(u * p, v * p), mode='bilinear', align_corners=False)
    feat = feat.reshape(b, c, u, p, v, p).permute(1, 2, 4, 0, 3, 5)
    return feat.reshape(c, u * v, b * p * p)


def patch_cka(student: Tensor,
              teacher: Tensor,
              patch_size: int = 16,
              centered: bool = False,
              inter: bool = True,
              eps: float = DEFAULT_EPS) -> Tuple[Tensor, Optional[Tensor]]:
    """Per-channel patch CKA similarities between two feature maps.

    Computed in fp32 whatever the input dtype or autocast state, by
    ``to_patches`` and ``gram_alignments`` on every device. A student map of
    another spatial size is resized to the teacher's (one warning). With a
    single patch the intra term carries no signal (uncentred it is
    identically 1, centred it is 0/0): it is defined as 1 with one warning.

    Args:
        student (Tensor): Student feature ``(B, C, H, W)``.
        teacher (Tensor): Teacher feature ``(B, C, H, W)``.
        patch_size (int): Patch side in feature cells. Defaults to 16.
        centered (bool): Use centred CKA instead of the official uncentred
            alignment. Defaults to False.
        inter (bool): Also compute the inter (pixel relation) term.
        eps (float): Lower bound of squared Gram norms.

    Returns:
        tuple[Tensor, Tensor | None]: ``intra`` and ``inter`` similarities,
        each of shape ``(C,)``; ``inter`` is None when not requested.
    """
    student, teacher = align_feature_pair(student, teacher, 'PCKA')
    n = patch_count(teacher, patch_size)
    with torch.autocast(device_type=student.device.type, enabled=False):
        student, teacher = student.float(), teacher.float()
        intra, inter_sim = gram_alignments(
            to_patches(student, patch_size), to_patches(teacher, patch_size),
            centered, inter, eps)
    if n == 1:
        warn_once(
            'single_patch',
            f'PCKA: a level of size {tuple(teacher.shape[2:])} gives a '
            f'single {patch_size}x{patch_size} patch; its intra term is '
            f'skipped (defined as 1). Use a smaller patch_size for it.')
        intra = torch.ones_like(intra)
    return intra, inter_sim


@MODELS.register_module()
class PatchCKALoss(AlignmentLoss):
    """PCKA distillation loss for one feature level.

    ``loss = loss_weight * (intra_weight * (1 - mean(intra))
    + inter_weight * (1 - mean(inter)))``; it is 0 at perfect alignment and
    has the gradients of the official ``-(w * intra + w * inter)``.

    Args:
        patch_size (int): Patch side in feature cells. Defaults to 16.
        intra_weight (float): Weight of the patch relation term.
        inter_weight (float, optional): Weight of the pixel relation term;
            None disables it (and its cost).
        centered (bool): Centred CKA instead of the official uncentred
            alignment.
        loss_weight (float): Global multiplier.
        eps (float): Lower bound of squared Gram norms.
    """

    def __init__(self,
                 patch_size: int = 16,
                 intra_weight: float = 10.0,
                 inter_weight: Optional[float] = None,
                 centered: bool = False,
                 loss_weight: float = 1.0,
                 eps: float = DEFAULT_EPS) -> None:
        super().__init__(intra_weight, inter_weight, centered, loss_weight,
                         eps)
        if patch_size < 1:
            raise ValueError(f'patch_size must be >= 1, got {patch_size}')
        self.patch_size = patch_size

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            student_feat (Tensor): ``(B, C, H, W)``.
            teacher_feat (Tensor): ``(B, C, H, W)``; gradients are not
                needed.

        Returns:
            Tensor: Scalar loss (fp32).
        """
        return self.combine(*patch_cka(
            student_feat, teacher_feat, self.patch_size, self.centered,
            inter=self.with_inter, eps=self.eps))

    def extra_repr(self) -> str:
        return f'patch_size={self.patch_size}, ' + super().extra_repr()
