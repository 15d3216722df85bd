"""Patch-based CKA (PCKA, Zhou et al., IJCAI 2024) for dense features."""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mmdet.registry import MODELS
from .base import AlignmentLoss
from .feature_pair import validate_feature_pair, validate_patch_size, warn_once
from .kernels import DEFAULT_EPS, gram_alignments
from ..options import Contract, Option, Rule, declare, validate


def patch_count(feat: Tensor, patch_size: int) -> int:
    """Patches ``n`` of a ``(B, C, H, W)`` map once resized up to a multiple
    of ``patch_size``."""
    h, w = feat.shape[2:]
    return math.ceil(h / patch_size) * math.ceil(w / patch_size)


def fitting_patch_size(patch_size: int, size) -> int:
    """``patch_size`` capped at half the shorter side of ``size = (H, W)``
    (at least 1): the patch the alignment metrics (training log, CKA
    report) use, so that a small level still gives several patches.

    Args:
        patch_size (int): The configured patch side.
        size (tuple[int, int]): ``(H, W)`` of the level.

    Returns:
        int: The patch side to use.
    """
    return min(patch_size, max(1, min(size) // 2))


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
    ``to_patches`` and ``gram_alignments`` on every device. Both maps must
    have the same shape. With a single patch the intra term carries no
    signal (uncentred it is identically 1, centred it is 0/0): it is defined
    as 1.

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
    validate_feature_pair(student, teacher, 'PCKA')
    n = patch_count(teacher, patch_size)
    with torch.autocast(device_type=student.device.type, enabled=False):
        student, teacher = student.float(), teacher.float()
        intra, inter_sim = gram_alignments(
            to_patches(student, patch_size), to_patches(teacher, patch_size),
            centered, inter, eps)
    if n == 1:
        intra = torch.ones_like(intra)
    return intra, inter_sim


def _trains_something(v) -> Optional[str]:
    """A PCKA level with every weight 0 trains nothing."""
    if v['loss_weight'] == 0 or (v['intra_weight'] == 0 and
                                 not v['inter_weight']):
        return ('every weight of this level is 0 (loss_weight '
                f'{v["loss_weight"]}, intra_weight {v["intra_weight"]}, '
                f'inter_weight {v["inter_weight"]}), so it trains nothing '
                'and costs a teacher forward; remove the level or give it '
                'a weight')
    return None


CONTRACT = declare(Contract(
    'PatchCKALoss', 'model.distill_losses.<level>.loss',
    'PCKA between a student and a teacher feature map of one level.',
    options=(
        Option('patch_size', 'int', 16, 'patch side in feature cells (the '
               'paper: 16)', low=1,
               examples=(2, )),
        Option('intra_weight', 'float', 10.0, 'weight of the patch '
               'relation term (the paper: 10)', low=0,
               examples=(1.0, )),
        Option('inter_weight', 'float', None, 'weight of the pixel '
               'relation term; None turns it off (the paper: 10 for '
               'two-stage students)', low=0, nullable=True,
               examples=(10.0, )),
        Option('centered', 'bool', False, 'centred CKA instead of the '
               'official uncentred alignment',
               examples=(True, )),
        Option('loss_weight', 'float', 1.0, 'global multiplier', low=0,
               examples=(0.5, )),
        Option('eps', 'float', DEFAULT_EPS, 'lower bound of squared Gram '
               'norms', low=1e-30,
               examples=(1e-6, )),
        Option('allow_single_patch', 'bool', False, 'accept a level of one '
               'patch at the training scale (its intra term is constant)',
               examples=(True, )),
    ),
    rules=(Rule('trains-something', 'a level with every weight 0 is '
                'refused: it trains nothing', _trains_something), )))


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
        allow_single_patch (bool): Accept a level that gives a single patch
            at the training scale, whose intra term is then constant (no
            signal; with no inter term the loss is identically 0).
            ``FeatureDistiller``'s pre-flight check refuses such a level
            unless this is True. Either way each such level is logged once.

    Weights must be finite numbers >= 0 and ``patch_size`` an integer >= 1
    (``ValueError`` when the loss is built).
    """

    def __init__(self,
                 patch_size: int = 16,
                 intra_weight: float = 10.0,
                 inter_weight: Optional[float] = None,
                 centered: bool = False,
                 loss_weight: float = 1.0,
                 eps: float = DEFAULT_EPS,
                 allow_single_patch: bool = False) -> None:
        validate('PatchCKALoss', dict(
            patch_size=patch_size, intra_weight=intra_weight,
            inter_weight=inter_weight, centered=centered,
            loss_weight=loss_weight, eps=eps,
            allow_single_patch=allow_single_patch), type(self).__name__)
        super().__init__(intra_weight, inter_weight, centered, loss_weight,
                         eps)
        self.patch_size = validate_patch_size(type(self).__name__, patch_size)
        self.allow_single_patch = bool(allow_single_patch)

    def _single_patch(self, teacher_feat: Tensor) -> bool:
        """Whether the intra term of this level carries no signal."""
        return (self.intra_weight > 0
                and patch_count(teacher_feat, self.patch_size) == 1)

    def validate_level(self, student_feat: Tensor, teacher_feat: Tensor,
                       name: str = 'PCKA') -> None:
        """Pre-flight check of one level at the training scale.

        Args:
            student_feat (Tensor): ``(B, C, H, W)``, after any connector.
            teacher_feat (Tensor): ``(B, C, H, W)``.
            name (str): The level's name in ``distill_losses``.

        Raises:
            ValueError: The level gives a single patch (its intra term is
                constant) and ``allow_single_patch`` is False.
        """
        validate_feature_pair(student_feat, teacher_feat, 'PCKA')
        if self._single_patch(teacher_feat) and not self.allow_single_patch:
            h, w = teacher_feat.shape[2:]
            largest = max(h, w) - 1  # p < max(h, w) gives >= 2 patches
            fix = (f'Use patch_size <= {largest} for it (at least 2 patches), '
                   if largest >= 1 else 'No patch size splits a 1x1 level: ')
            raise ValueError(
                f'{name}: a {h}x{w} level cut into {self.patch_size}x'
                f'{self.patch_size} patches gives a single patch, so its PCKA '
                'intra term is constant and '
                + ('the loss is identically 0' if not self.with_inter else
                   'only the inter term trains')
                + f'. {fix}distil another level, or set '
                'allow_single_patch=True on '
                'the loss if this is meant.')

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            student_feat (Tensor): ``(B, C, H, W)``.
            teacher_feat (Tensor): ``(B, C, H, W)``; gradients are not
                needed.

        Returns:
            Tensor: Scalar loss (fp32).
        """
        loss = self.combine(*patch_cka(
            student_feat, teacher_feat, self.patch_size, self.centered,
            inter=self.with_inter, eps=self.eps))
        if self._single_patch(teacher_feat):
            warn_once(
                (id(self), 'single_patch'),
                f'PatchCKALoss(patch_size={self.patch_size}): a level of size '
                f'{tuple(teacher_feat.shape[2:])} gives a single patch; its '
                'intra term is constant (defined as 1) and trains nothing. '
                'Use a smaller patch_size for it.')
        return loss

    def extra_repr(self) -> str:
        return (f'patch_size={self.patch_size}, ' + super().extra_repr() +
                (', allow_single_patch=True' if self.allow_single_patch
                 else ''))
