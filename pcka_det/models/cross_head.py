"""Head levels: the dense heads of student and teacher, paired at tower
conv k for CrossKD (the losses are :mod:`pcka_det.losses.crosskd`).

Both heads are run by a forward of our own (:meth:`CrossHead.run`) that
returns, besides the head's usual outputs, the *held* feature of each
tower: the output of tower conv k (1-based) after its norm and before its
activation (mmcv's ``ConvModule`` is called with ``activate=False``; its
ReLU is in place, so a hook would see the activated values), or the neck
output itself for k = 0. The student's own head continues from it with the
activation applied out of place, so its outputs equal ``head(x)``.

The student's held features, aligned per channel to the teacher's
statistics, then go through the teacher's tail (its activation at conv k,
its convs from k on, its predictors and, for GFL/ATSS, its per-level
``Scale``) in fp32 whatever the teacher's dtype, with autocast off; the
teacher's parameters are frozen, so the gradient flows only to the input
(:meth:`CrossHead.cross`).

Supported heads (the exact classes): mmdet's ``RetinaHead`` (loss
``CrossKDLoss``), ``ATSSHead`` (``CrossKDLoss``; its centre-ness branch is
not distilled) and ``GFLHead`` (``CrossKDGFLLoss``). Others are refused,
FCOS with its reason (:data:`REFUSED_HEADS`).
"""
import copy
import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from mmcv.cnn import ConvModule
from torch import Tensor, nn

from mmdet.models.utils import images_to_levels, unpack_gt_instances
from mmdet.structures.bbox import cat_boxes
from mmdet.utils import reduce_mean
from ..losses.crosskd import CrossHeadPredictions, align_to_teacher

# head class -> (family, class predictor, box predictor, has Scale, loss)
HEADS = {
    'RetinaHead': ('retinanet', 'retina_cls', 'retina_reg', False,
                      'CrossKDLoss'),
    'ATSSHead': ('atss', 'atss_cls', 'atss_reg', True, 'CrossKDLoss'),
    'GFLHead': ('gfl', 'gfl_cls', 'gfl_reg', True, 'CrossKDGFLLoss'),
}

REFUSED_HEADS = {
    'FCOSHead': (
        'FCOS is not supported by head levels: it has no anchors and its '
        'point targets have no label_weights (the spec weights the '
        'classification term and masks the box weights with them), its box '
        'output is relu\'d (norm_on_bbox) or exp\'d and multiplied by the '
        'stride only outside training, and its centre-ness sits on either '
        'tower (centerness_on_reg); the CrossKD steps in our spec state no '
        'mapping of these, so it is refused rather than guessed. Distil '
        'FCOS on the neck (PCKA, PKD, CWD, FitNet levels).'),
}


@dataclass
class HeadOutputs:
    """A dense head's outputs and its held features, per FPN level.

    Attributes:
        outs (tuple[list[Tensor]]): What ``head(x)`` returns: class scores
            ``(B, A * C, H, W)``, box outputs ``(B, A * 4, H, W)`` (GFL:
            ``(B, 4 * (R + 1), H, W)``) and, for ATSS, centre-ness.
        held_cls (list[Tensor]): Held feature of the class tower
            ``(B, C_feat, H, W)``.
        held_reg (list[Tensor]): Held feature of the box tower.
    """

    outs: Tuple[List[Tensor], ...]
    held_cls: List[Tensor]
    held_reg: List[Tensor]


def fp32_call(module: nn.Module, *args, **kwargs):
    """Call ``module`` with its parameters and buffers in fp32 (cast
    copies, through ``torch.func.functional_call``, only when some are
    not: the module itself is left as it is).

    Args:
        module (nn.Module): E.g. a frozen teacher's conv in fp16.
        *args: Its inputs (fp32).
        **kwargs: Its keyword arguments.

    Returns:
        What ``module`` returns.
    """
    state = dict(module.named_parameters())
    state.update(module.named_buffers())
    if all(t.dtype == torch.float32 for t in state.values()
           if t.is_floating_point()):
        return module(*args, **kwargs)
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in state.items()}
    return torch.func.functional_call(module, state, args, kwargs)


def _activate(conv: ConvModule, x: Tensor) -> Tensor:
    """``conv``'s activation applied to ``x`` out of place (mmcv's ReLU is
    in place: it would overwrite the held feature)."""
    if not conv.with_activation:
        return x
    act = conv.activate
    if getattr(act, 'inplace', False):
        act = copy.copy(act)
        act.inplace = False
    return act(x)


def level_names(strides: Sequence) -> List[str]:
    """``p3``, ``p4``, ... from the levels' strides (``l<i>`` for a stride
    that is not a power of two)."""
    names = []
    for i, stride in enumerate(strides):
        s = stride[0] if isinstance(stride, (tuple, list)) else stride
        p = math.log2(s) if s > 0 else 0.5
        names.append(f'p{int(p)}' if p == int(p) else f'l{i}')
    return names


def head_kind(detector: nn.Module, side: str, where: str) -> str:
    """The registered class name of a detector's dense head, if
    supported.

    Args:
        detector (nn.Module): An mmdet detector.
        side (str): ``'student'`` or ``'teacher'``, for the messages.
        where (str): The config key, for the messages.

    Returns:
        str: A key of :data:`HEADS`.

    Raises:
        ValueError: No dense ``bbox_head`` (a two-stage detector), or a head
            class without a CrossKD mapping (FCOS: with the reason).
    """
    head = getattr(detector, 'bbox_head', None)
    if head is None or not hasattr(head, 'cls_convs'):
        raise ValueError(
            f'{where}: a head level needs single-stage detectors with a '
            f'dense bbox_head (RetinaNet, ATSS, GFL); the {side} is a '
            f'{type(detector).__name__}. Distil it on its neck instead.')
    kind = type(head).__name__
    if kind in REFUSED_HEADS:
        raise ValueError(f'{where}: the {side}\'s {kind}: '
                         f'{REFUSED_HEADS[kind]}')
    if kind not in HEADS:
        raise ValueError(
            f'{where}: head levels support {sorted(HEADS)} (those exact '
            f'classes); the {side}\'s head is {kind}, whose towers, '
            'predictors or targets may differ. Distil it on its neck '
            'instead.')
    return kind


class CrossHead:
    """The student's and the teacher's dense heads paired at tower conv
    ``conv`` (CrossKD's ``reused_teacher_head_idx``).

    A plain object: it holds no module (the heads are given to each call,
    so the teacher stays outside the distiller's module tree and a deep
    copy of the distiller, e.g. EMA's, shares nothing stale).

    Args:
        student (nn.Module): The student detector.
        teacher (nn.Module): The teacher detector.
        conv (int): k: 0 for the neck output, 1 for the first tower conv's
            output, ... up to the towers' length.
        where (str): The config key (``distill_losses.<name>``), for the
            messages.

    Raises:
        ValueError: Naming what to fix: unsupported heads, k beyond a
            tower, different head types, widths, classes, anchors or box
            coders.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, conv: int,
                 where: str) -> None:
        kind = head_kind(student, 'student', where)
        t_kind = head_kind(teacher, 'teacher', where)
        if kind != t_kind:
            raise ValueError(
                f'{where}: the student\'s head is a {kind}, the teacher\'s '
                f'a {t_kind}: the cross-head predictions go through the '
                'teacher\'s head and are read as the student\'s, so both '
                'need the same head type.')
        self.kind = kind
        (self.family, self.cls_pred, self.reg_pred, self.has_scale,
         self.loss_type) = HEADS[kind]
        self.conv = conv
        self.where = where
        s_head, t_head = student.bbox_head, teacher.bbox_head
        for side, head in (('student', s_head), ('teacher', t_head)):
            for tower in ('cls_convs', 'reg_convs'):
                convs = getattr(head, tower)
                if conv > len(convs):
                    raise ValueError(
                        f'{where}.head_conv = {conv}: the {side}\'s head '
                        f'has {len(convs)} convs in its {tower} '
                        f'(stacked_convs={len(convs)}); set head_conv to '
                        f'0..{len(convs)}.')
                for m in convs:
                    if not isinstance(m, ConvModule) or \
                            tuple(m.order) != ('conv', 'norm', 'act'):
                        raise ValueError(
                            f'{where}: the {side}\'s {tower} are not mmcv '
                            'ConvModules in the order conv, norm, act, so '
                            'the feature before conv k\'s activation is '
                            'not defined.')
            if not getattr(head, 'use_sigmoid_cls', False):
                raise ValueError(f'{where}: the {side}\'s head classifies '
                                 'with a softmax; CrossKD\'s targets are '
                                 'sigmoid probabilities.')
        self._check_same(s_head, t_head)
        self.levels = level_names(t_head.prior_generator.strides)

    def _check_same(self, s_head: nn.Module, t_head: nn.Module) -> None:
        where = self.where

        def refuse(what: str, s, t, fix: str) -> None:
            raise ValueError(
                f'{where}: the student\'s head has {what} {s}, the '
                f'teacher\'s {t}: {fix}')

        width = 'in_channels' if self.conv == 0 else 'feat_channels'
        if getattr(s_head, width) != getattr(t_head, width):
            refuse(width, getattr(s_head, width), getattr(t_head, width),
                   f'the held feature (after conv {self.conv}) goes into '
                   'the teacher\'s head, so the widths must agree; set the '
                   f'student\'s bbox_head.{width} (or the neck\'s '
                   'out_channels) to the teacher\'s.')
        if s_head.num_classes != t_head.num_classes:
            refuse('num_classes', s_head.num_classes, t_head.num_classes,
                   'the teacher\'s class scores are the targets; train both '
                   'on the same classes.')
        s_gen, t_gen = s_head.prior_generator, t_head.prior_generator
        s_strides = [tuple(s) for s in s_gen.strides]
        t_strides = [tuple(s) for s in t_gen.strides]
        same_anchors = s_strides == t_strides and \
            s_gen.num_base_priors == t_gen.num_base_priors and all(
                torch.equal(a, b) for a, b in zip(s_gen.base_anchors,
                                                  t_gen.base_anchors))
        if not same_anchors:
            refuse('anchors (strides, per-location counts, base anchors)',
                   (s_strides, s_gen.num_base_priors),
                   (t_strides, t_gen.num_base_priors),
                   'the cross-head predictions are decoded and weighted on '
                   'the student\'s anchors; give both heads the same '
                   'anchor_generator.')
        s_coder, t_coder = s_head.bbox_coder, t_head.bbox_coder
        if type(s_coder) is not type(t_coder) or \
                vars(s_coder) != vars(t_coder):
            refuse('bbox_coder', vars(s_coder), vars(t_coder),
                   'both box outputs are decoded with one coder; give both '
                   'heads the same bbox_coder.')
        if self.family == 'gfl' and s_head.reg_max != t_head.reg_max:
            refuse('reg_max', s_head.reg_max, t_head.reg_max,
                   'the box distributions are compared bin by bin; set the '
                   'same reg_max.')

    # ------------------------------------------------------------ forwards

    def run(self, head: nn.Module, feats: Sequence[Tensor],
            fp32: bool = False) -> HeadOutputs:
        """The head's forward, keeping each tower's held feature.

        Args:
            head (nn.Module): The student's or the teacher's ``bbox_head``.
            feats (Sequence[Tensor]): Neck outputs ``(B, C, H, W)``.
            fp32 (bool): Run every module with fp32 parameters
                (:func:`fp32_call`; the teacher's head).

        Returns:
            HeadOutputs: ``outs`` equal ``head(feats)``.
        """
        call = fp32_call if fp32 else (lambda m, *a, **k: m(*a, **k))
        cls_scores, bbox_preds, extras = [], [], []
        held_cls, held_reg = [], []
        for level, x in enumerate(feats):
            cls_feat, h_cls = self._tower(head.cls_convs, x, call)
            reg_feat, h_reg = self._tower(head.reg_convs, x, call)
            cls_score = call(getattr(head, self.cls_pred), cls_feat)
            bbox_pred = call(getattr(head, self.reg_pred), reg_feat)
            if self.has_scale:
                bbox_pred = call(head.scales[level], bbox_pred).float()
            if self.family == 'atss':
                extras.append(call(head.atss_centerness, reg_feat))
            cls_scores.append(cls_score)
            bbox_preds.append(bbox_pred)
            held_cls.append(h_cls)
            held_reg.append(h_reg)
        outs = (cls_scores, bbox_preds) + ((extras, ) if extras else ())
        return HeadOutputs(outs, held_cls, held_reg)

    def _tower(self, convs: nn.ModuleList, x: Tensor,
               call) -> Tuple[Tensor, Tensor]:
        """A tower's output and its held feature (the input for k = 0)."""
        held = x
        for j, conv in enumerate(convs):
            if j == self.conv - 1:
                held = call(conv, x, activate=False)
                x = _activate(conv, held)
            else:
                x = call(conv, x)
        return x, held

    def cross(self, teacher_head: nn.Module, student: HeadOutputs,
              teacher: HeadOutputs
              ) -> Tuple[List[Tensor], List[Tensor], List[Tensor],
                         List[Tensor]]:
        """The cross-head predictions: each student held feature aligned to
        the teacher's (:func:`align_to_teacher`), through the teacher's
        activation at conv k, its convs from k on and its predictors (and
        ``Scale``), in fp32 with autocast off.

        Args:
            teacher_head (nn.Module): The teacher's ``bbox_head`` (frozen).
            student (HeadOutputs): The student's :meth:`run`.
            teacher (HeadOutputs): The teacher's :meth:`run`.

        Returns:
            tuple: Per level: cross class scores ``(B, A * C, H, W)``,
            cross box outputs, and the two views of the student's held
            features the cross path starts from (class, box), on which a
            gradient gate can be registered.
        """
        device = student.held_cls[0].device.type
        cls_out, box_out, cls_in, box_in = [], [], [], []
        with torch.autocast(device_type=device, enabled=False):
            for level in range(len(student.held_cls)):
                s_cls = student.held_cls[level]
                s_reg = student.held_reg[level]
                # views of their own, so a gate acts on this path only
                s_cls, s_reg = s_cls.view_as(s_cls), s_reg.view_as(s_reg)
                cls_in.append(s_cls)
                box_in.append(s_reg)
                x = self._tail(teacher_head.cls_convs, s_cls,
                               teacher.held_cls[level])
                y = self._tail(teacher_head.reg_convs, s_reg,
                               teacher.held_reg[level])
                cls_out.append(fp32_call(getattr(teacher_head,
                                                 self.cls_pred), x))
                box = fp32_call(getattr(teacher_head, self.reg_pred), y)
                if self.has_scale:
                    box = fp32_call(teacher_head.scales[level], box).float()
                box_out.append(box)
        return cls_out, box_out, cls_in, box_in

    def _tail(self, convs: nn.ModuleList, student: Tensor,
              teacher: Tensor) -> Tensor:
        x = align_to_teacher(student.float(), teacher.float())
        if self.conv > 0:
            x = _activate(convs[self.conv - 1], x)
        for conv in convs[self.conv:]:
            x = fp32_call(conv, x)
        return x

    # ------------------------------------------------------------- targets

    @torch.no_grad()
    def targets(self, head: nn.Module, cls_scores: Sequence[Tensor],
                data_samples: list
                ) -> Tuple[List[Tensor], List[Tensor], float]:
        """The student's anchors, label weights and classification
        ``avg_factor`` from its own target assignment (what its
        ``loss_by_feat`` computes).

        Args:
            head (nn.Module): The student's ``bbox_head``.
            cls_scores (Sequence[Tensor]): Its class scores per level (for
                the feature map sizes).
            data_samples (list[DetDataSample]): The batch's annotations.

        Returns:
            tuple: Per level anchors ``(B * A_l, 4)`` and label weights
            ``(B * A_l, )``, and the avg_factor (RetinaNet: the positives;
            ATSS/GFL: their mean over processes, as the heads use it).
        """
        gt, gt_ignore, metas = unpack_gt_instances(data_samples)
        sizes = [c.shape[-2:] for c in cls_scores]
        device = cls_scores[0].device
        anchor_list, valid_list = head.get_anchors(sizes, metas,
                                                   device=device)
        if self.family == 'retinanet':
            per_level = [a.size(0) for a in anchor_list[0]]
            _, weights, _, _, avg = head.get_targets(
                anchor_list, valid_list, gt, metas,
                batch_gt_instances_ignore=gt_ignore)
            anchors = images_to_levels([cat_boxes(a) for a in anchor_list],
                                       per_level)
            avg = float(avg)
        else:
            anchors, _, weights, _, _, avg = head.get_targets(
                anchor_list, valid_list, gt, metas,
                batch_gt_instances_ignore=gt_ignore)
            avg = reduce_mean(torch.tensor(
                avg, dtype=torch.float, device=device)).item()
        return ([a.reshape(-1, 4) for a in anchors],
                [w.reshape(-1) for w in weights], avg)

    def predictions(self, teacher_head: nn.Module, cross_cls: List[Tensor],
                    cross_box: List[Tensor], teacher: HeadOutputs,
                    anchors: List[Tensor], label_weights: List[Tensor],
                    avg_factor: float) -> CrossHeadPredictions:
        """Flatten both sides' predictions per level and decode their boxes
        with the head's coder (GFL: the integral at anchor centres / stride,
        and the distributions).

        Args:
            teacher_head (nn.Module): The teacher's ``bbox_head`` (its coder,
                integral, strides: the same as the student's).
            cross_cls (list[Tensor]): From :meth:`cross`.
            cross_box (list[Tensor]): From :meth:`cross`.
            teacher (HeadOutputs): The teacher's :meth:`run`.
            anchors (list[Tensor]): From :meth:`targets`.
            label_weights (list[Tensor]): From :meth:`targets`.
            avg_factor (float): From :meth:`targets`.

        Returns:
            CrossHeadPredictions: fp32.
        """
        num_classes = teacher_head.cls_out_channels
        flat = {k: [] for k in ('cc', 'tc', 'cb', 'tb', 'cd', 'td')}
        strides = teacher_head.prior_generator.strides
        for level, (c_cls, c_box) in enumerate(zip(cross_cls, cross_box)):
            t_cls = teacher.outs[0][level].float()
            t_box = teacher.outs[1][level].float()
            anchor = anchors[level].float()
            flat['cc'].append(_flat(c_cls, num_classes))
            flat['tc'].append(_flat(t_cls, num_classes))
            if self.family == 'gfl':
                bins = teacher_head.reg_max + 1
                c_dist, t_dist = _flat(c_box, 4 * bins), _flat(t_box,
                                                               4 * bins)
                centres = teacher_head.anchor_center(anchor) / \
                    strides[level][0]
                for key, dist in (('c', c_dist), ('t', t_dist)):
                    flat[key + 'd'].append(dist.reshape(-1, bins))
                    flat[key + 'b'].append(teacher_head.bbox_coder.decode(
                        centres, teacher_head.integral(dist)))
            else:
                for key, box in (('c', c_box), ('t', t_box)):
                    flat[key + 'b'].append(teacher_head.bbox_coder.decode(
                        anchor, _flat(box, 4)))
        gfl = self.family == 'gfl'
        return CrossHeadPredictions(
            cross_cls=flat['cc'], teacher_cls=flat['tc'],
            cross_boxes=flat['cb'], teacher_boxes=flat['tb'],
            label_weights=[w.float() for w in label_weights],
            avg_factor=float(avg_factor),
            cross_dist=flat['cd'] if gfl else None,
            teacher_dist=flat['td'] if gfl else None)


def _flat(x: Tensor, channels: int) -> Tensor:
    """``(B, A * k, H, W)`` -> ``(B * H * W * A, k)``, mmdet's anchor
    order."""
    return x.permute(0, 2, 3, 1).reshape(-1, channels)


def head_log_keys(name: str, levels: Sequence[str]) -> Tuple[str, ...]:
    """The log keys of a head level: ``loss_<name>_cls_<p>`` and
    ``loss_<name>_box_<p>`` per FPN level, in that order."""
    from .levels import loss_key
    return tuple(loss_key(f'{name}_{term}_{p}') for p in levels
                 for term in ('cls', 'box'))


def head_terms(name: str, levels: Sequence[str]) -> List[str]:
    """The names of a head level's terms (``<name>_cls_p3``, ...), in the
    order of :func:`head_log_keys`."""
    return [f'{name}_{term}_{p}' for p in levels for term in ('cls', 'box')]
