"""CrossKD: the student's head features, sent through the rest of the
teacher's head, mimic the teacher's predictions (Wang et al., "CrossKD:
Cross-Head Knowledge Distillation for Object Detection", CVPR 2024).

The math is here, as pure functions on flattened predictions; which
features are sent through which head (the towers, the teacher's tail, the
box decoding) is :mod:`pcka_det.models.cross_head`. Written from the
method's steps (``../shared/CROSSKD_SPEC.md``), not from the official code.

Shapes: per FPN level, ``M`` is images x anchors of that level (both
flattened), ``C`` the classes, ``R + 1`` the bins of a GFL distribution.
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_overlaps
from ..options import Contract, Option, Rule, declare, validate
from .feature_pair import validate_weight

# mmdet's weight_reduce_loss adds this to every avg_factor
AVG_EPS = torch.finfo(torch.float32).eps
# the std epsilon of the feature alignment (spec, step 3)
ALIGN_EPS = 1e-6
# mmdet's GIoULoss default
GIOU_EPS = 1e-6


def align_to_teacher(student: Tensor, teacher: Tensor,
                     eps: float = ALIGN_EPS) -> Tensor:
    """The student feature standardised per channel and rescaled to the
    teacher's per-channel statistics (CrossKD's step 3).

    Over all of (N, H, W) for each channel: ``(s - mean_s) / (std_s + eps)
    * std_t + mean_t``, both standard deviations unbiased. The teacher's
    statistics carry no gradient. A channel of a single value (one image
    and a 1x1 level) has no unbiased std: both stds are taken as 0 there,
    so the aligned feature is the teacher's mean (no gradient), not NaN;
    so is a channel whose values are all equal (its std 0: the formula
    gives the same value, but a gradient of about ``t_std / eps``).

    Args:
        student (Tensor): ``(N, C, H, W)``.
        teacher (Tensor): ``(N, C, H, W)``, the same shape.

    Returns:
        Tensor: ``(N, C, H, W)`` in the student's dtype.
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f'CrossKD alignment: the student\'s held head feature is '
            f'{tuple(student.shape)}, the teacher\'s '
            f'{tuple(teacher.shape)}: the heads must have the same width '
            'and the same FPN levels.')
    dims = (0, 2, 3)
    teacher = teacher.detach()
    s_mean = student.mean(dim=dims, keepdim=True)
    t_mean = teacher.mean(dim=dims, keepdim=True)
    if student.numel() == student.shape[1]:  # one value per channel
        return (student - s_mean) * 0 + t_mean
    s_std = student.std(dim=dims, keepdim=True, unbiased=True)
    t_std = teacher.std(dim=dims, keepdim=True, unbiased=True)
    # a channel whose values are all equal (a small level whose few values
    # fp16/bf16 rounded to one) is t_mean whatever the formula, but the
    # formula's gradient there is about t_std / eps: 200x the whole cls
    # term's on the toy pair under bf16 autocast. No gradient there, as
    # for a single value.
    flat = s_std == 0
    aligned = (student - s_mean) / (torch.where(flat, 1.0, s_std) + eps) \
        * t_std + t_mean
    return torch.where(flat, t_mean.expand_as(aligned), aligned)


def kd_quality_focal_loss(pred: Tensor, target_logits: Tensor,
                          beta: float = 1.0) -> Tensor:
    """Soft-target focal loss per anchor and class, not reduced.

    ``BCE-with-logits(pred, t) * |sigmoid(pred) - t| ** beta`` with
    ``t = sigmoid(target_logits)`` (detached).

    Args:
        pred (Tensor): Cross-head class logits ``(M, C)``.
        target_logits (Tensor): Teacher class logits ``(M, C)``.
        beta (float): Exponent of the modulating factor.

    Returns:
        Tensor: ``(M, C)``.
    """
    target = target_logits.detach().sigmoid()
    bce = F.binary_cross_entropy_with_logits(pred, target, reduction='none')
    return bce * (pred.sigmoid() - target).abs().pow(beta)


def box_weights(teacher_logits: Tensor, label_weights: Tensor) -> Tensor:
    """Per-anchor weight of the box terms: the teacher's highest class
    probability, 0 where the student's assignment ignores the anchor.

    Args:
        teacher_logits (Tensor): ``(M, C)``.
        label_weights (Tensor): ``(M, )`` from the student's targets.

    Returns:
        Tensor: ``(M, )``, no gradient.
    """
    weight = teacher_logits.detach().max(dim=1).values.sigmoid()
    return torch.where(label_weights > 0, weight, torch.zeros_like(weight))


def giou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - GIoU`` of aligned boxes (mmdet's ``GIoULoss`` term, eps 1e-6).

    Args:
        pred (Tensor): ``(M, 4)`` boxes ``x1, y1, x2, y2``.
        target (Tensor): ``(M, 4)`` (detached).

    Returns:
        Tensor: ``(M, )``.
    """
    return 1 - bbox_overlaps(pred, target.detach(), mode='giou',
                             is_aligned=True, eps=GIOU_EPS)


def kl_div_bins(pred: Tensor, target: Tensor,
                temperature: float = 1.0) -> Tensor:
    """KL divergence of the teacher's distribution to the cross-head's,
    summed over the bins (the GFL recipe; mmdet's
    ``KnowledgeDistillationKLDivLoss`` averages them instead).

    ``T^2 * sum_b softmax(t/T)_b * (log softmax(t/T)_b - log
    softmax(p/T)_b)``.

    Args:
        pred (Tensor): Cross-head logits ``(M * 4, R + 1)``.
        target (Tensor): Teacher logits ``(M * 4, R + 1)`` (detached).
        temperature (float): T.

    Returns:
        Tensor: ``(M * 4, )``.
    """
    target = F.softmax(target.detach() / temperature, dim=1)
    log_pred = F.log_softmax(pred / temperature, dim=1)
    kl = F.kl_div(log_pred, target, reduction='none').sum(dim=1)
    return kl * temperature * temperature


@dataclass
class CrossHeadPredictions:
    """One step's cross-head and teacher predictions, per FPN level,
    flattened over images and anchors (what the CrossKD losses read).

    Attributes:
        cross_cls (list[Tensor]): Cross-head class logits ``(M, C)``.
        teacher_cls (list[Tensor]): Teacher class logits ``(M, C)``.
        cross_boxes (list[Tensor]): Decoded cross-head boxes ``(M, 4)``
            (GFL: in units of the level's stride).
        teacher_boxes (list[Tensor]): Decoded teacher boxes ``(M, 4)``.
        label_weights (list[Tensor]): The student's ``(M, )``.
        avg_factor (float): The student head's classification
            ``avg_factor`` (its positives).
        cross_dist (list[Tensor], optional): GFL: cross-head box
            distributions ``(M * 4, R + 1)``.
        teacher_dist (list[Tensor], optional): GFL: the teacher's.
    """

    cross_cls: List[Tensor]
    teacher_cls: List[Tensor]
    cross_boxes: List[Tensor]
    teacher_boxes: List[Tensor]
    label_weights: List[Tensor]
    avg_factor: float
    cross_dist: Optional[List[Tensor]] = None
    teacher_dist: Optional[List[Tensor]] = None


def crosskd_cls_terms(preds: CrossHeadPredictions,
                      beta: float) -> List[Tensor]:
    """Classification term per level: KD quality focal loss weighted by
    the student's label weights, summed, divided by ``avg_factor``.

    Returns:
        list[Tensor]: One scalar per level.
    """
    return [(kd_quality_focal_loss(c, t, beta) * w[:, None]).sum()
            / (preds.avg_factor + AVG_EPS)
            for c, t, w in zip(preds.cross_cls, preds.teacher_cls,
                               preds.label_weights)]


def crosskd_giou_terms(preds: CrossHeadPredictions) -> List[Tensor]:
    """RetinaNet-recipe box term per level: GIoU between decoded boxes,
    weighted by :func:`box_weights`, divided by ``avg_factor``.

    Returns:
        list[Tensor]: One scalar per level.
    """
    return [(giou_loss(c, t) * box_weights(logits, w)).sum()
            / (preds.avg_factor + AVG_EPS)
            for c, t, logits, w in zip(
                preds.cross_boxes, preds.teacher_boxes, preds.teacher_cls,
                preds.label_weights)]


def crosskd_gfl_box_terms(preds: CrossHeadPredictions, ld_weight: float,
                          giou_weight: float, temperature: float
                          ) -> List[Tensor]:
    """GFL-recipe box term per level: ``ld_weight`` x the KL over the bins
    (box weight repeated for the 4 sides, avg_factor 4) plus
    ``giou_weight`` x GIoU (avg_factor 1), both divided by the sum over
    levels of the box weights (clamped at 1, as GFL's own head normalises
    its box terms).

    Returns:
        list[Tensor]: One scalar per level.
    """
    if preds.cross_dist is None or preds.teacher_dist is None:
        raise ValueError('CrossKDGFLLoss needs the box distributions of a '
                         'GFL head.')
    weights = [box_weights(logits, w) for logits, w in
               zip(preds.teacher_cls, preds.label_weights)]
    total = torch.stack([w.sum() for w in weights]).sum().clamp(min=1)
    terms = []
    for w, c, t, cd, td in zip(weights, preds.cross_boxes,
                               preds.teacher_boxes, preds.cross_dist,
                               preds.teacher_dist):
        ld = (kl_div_bins(cd, td, temperature)
              * w[:, None].expand(-1, 4).reshape(-1)).sum() / (4 + AVG_EPS)
        giou = (giou_loss(c, t) * w).sum() / (1 + AVG_EPS)
        terms.append((ld_weight * ld + giou_weight * giou) / total)
    return terms


def _trains_something(values: dict):
    weights = [v for k, v in values.items() if k.endswith('_weight')]
    if all(isinstance(w, (int, float)) and w == 0 for w in weights):
        return 'every weight is 0, so the head level trains nothing'
    return None


CONTRACT = declare(Contract(
    'CrossKDLoss', 'model.distill_losses.<level>.loss',
    'CrossKD on a RetinaNet or ATSS head level (head_conv set): KD '
    'quality focal loss on the classes, GIoU on the decoded boxes, both '
    'divided by the head\'s positives.',
    options=(
        Option('cls_weight', 'float', 1.0, 'weight of the classification '
               'term', low=0, examples=(0.5, )),
        Option('giou_weight', 'float', 1.0, 'weight of the GIoU box term '
               '(box weight: the teacher\'s top class probability)', low=0,
               examples=(2.0, )),
    ),
    rules=(Rule('trains-something', 'a level with every weight 0 is '
                'refused: it trains nothing', _trains_something), )))


@MODELS.register_module()
class CrossKDLoss(nn.Module):
    """CrossKD's losses for a RetinaNet (or ATSS) head level: the
    official recipe's forms, the focal exponent beta at its 1.

    Args:
        cls_weight (float): Weight of the classification term.
        giou_weight (float): Weight of the GIoU box term.
    """

    beta = 1.0

    def __init__(self, cls_weight: float = 1.0,
                 giou_weight: float = 1.0) -> None:
        validate('CrossKDLoss', dict(cls_weight=cls_weight,
                                     giou_weight=giou_weight),
                 'CrossKDLoss')
        super().__init__()
        self.cls_weight = validate_weight('CrossKDLoss', 'cls_weight',
                                          cls_weight)
        self.giou_weight = validate_weight('CrossKDLoss', 'giou_weight',
                                           giou_weight)

    def forward(self, preds: CrossHeadPredictions
                ) -> Tuple[List[Tensor], List[Tensor]]:
        """Args: the step's :class:`CrossHeadPredictions`.

        Returns:
            tuple[list[Tensor], list[Tensor]]: Per level, the
            classification and the box term (weighted scalars).
        """
        cls = crosskd_cls_terms(preds, self.beta)
        box = crosskd_giou_terms(preds)
        return ([self.cls_weight * v for v in cls],
                [self.giou_weight * v for v in box])

    def extra_repr(self) -> str:
        return (f'cls_weight={self.cls_weight}, giou_weight='
                f'{self.giou_weight}')


CONTRACT_GFL = declare(Contract(
    'CrossKDGFLLoss', 'model.distill_losses.<level>.loss',
    'CrossKD on a GFL head level (head_conv set): KD quality focal loss on '
    'the classes (/ the positives); KL over the box bins plus GIoU on the '
    'decoded boxes (/ the summed box weights).',
    options=(
        Option('cls_weight', 'float', 1.0, 'weight of the classification '
               'term', low=0),
        Option('ld_weight', 'float', 3.0, 'weight of the KL divergence of '
               'the box distributions, summed over the bins', low=0),
        Option('giou_weight', 'float', 2.0, 'weight of the GIoU box term',
               low=0),
    ),
    rules=(Rule('trains-something', 'a level with every weight 0 is '
                'refused: it trains nothing', _trains_something), )))


@MODELS.register_module()
class CrossKDGFLLoss(nn.Module):
    """CrossKD's losses for a GFL head level (the official GFL recipe's
    weights as defaults; its focal exponent beta and KL temperature T at
    their 1).

    Args:
        cls_weight (float): Weight of the classification term.
        ld_weight (float): Weight of the KL term of the box distributions.
        giou_weight (float): Weight of the GIoU term.
    """

    beta = 1.0
    temperature = 1.0

    def __init__(self, cls_weight: float = 1.0, ld_weight: float = 3.0,
                 giou_weight: float = 2.0) -> None:
        validate('CrossKDGFLLoss', dict(
            cls_weight=cls_weight, ld_weight=ld_weight,
            giou_weight=giou_weight), 'CrossKDGFLLoss')
        super().__init__()
        self.cls_weight = float(cls_weight)
        self.ld_weight = float(ld_weight)
        self.giou_weight = float(giou_weight)

    def forward(self, preds: CrossHeadPredictions
                ) -> Tuple[List[Tensor], List[Tensor]]:
        """Args: the step's :class:`CrossHeadPredictions` (with the
        distributions).

        Returns:
            tuple[list[Tensor], list[Tensor]]: Per level, the
            classification and the box term (weighted scalars).
        """
        cls = crosskd_cls_terms(preds, self.beta)
        box = crosskd_gfl_box_terms(preds, self.ld_weight, self.giou_weight,
                                    self.temperature)
        return [self.cls_weight * v for v in cls], box

    def extra_repr(self) -> str:
        return (f'cls_weight={self.cls_weight}, ld_weight={self.ld_weight}, '
                f'giou_weight={self.giou_weight}')
