"""A frozen teacher distilled into a trainable student, as one mmdet model."""
import copy
import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from torch import Tensor, nn

from mmdet.models.utils import unpack_gt_instances
from mmdet.registry import MODELS
from ..checkpoint import load_weights
from ..losses.patch_cka import fitting_patch_size, patch_cka, patch_count
from ..options import REQUIRED, Contract, Option, declare, validate
from .builder import build_detector, smaller_teacher_warning
from .cross_head import CrossHead, HeadOutputs, head_log_keys, head_terms
from .levels import DistillLevel, FeaturePairs, parse_levels
from .recorders import (ModuleOutputRecorder, get_module, recorder_sources,
                        recording)
from .teacher import TEACHER_DTYPES, FrozenTeacher
from .teacher_inputs import TeacherInputs

NONFINITE_POLICIES = ('skip', 'raise')


CONTRACT = declare(Contract(
    'FeatureDistiller', 'model',
    'A frozen teacher distilled into a trainable student, as one model.',
    options=(
        Option('student', 'dict', REQUIRED, 'the student detector: an '
               'inline model config or dict(cfg_path=..., **overrides)'),
        Option('teacher', 'dict', REQUIRED, 'the teacher detector, same '
               'forms'),
        Option('teacher_ckpt', 'str', None, 'path or URL of the teacher '
               'weights (None only with allow_random_teacher)',
               nullable=True),
        Option('recorders', 'dict', None, 'name -> module path (or dict('
               'student=, teacher=[, per_call=True])); default '
               'dict(neck=\'neck\')', nullable=True),
        Option('distill_losses', 'dict', None, 'name -> dict(loss=, '
               'recorder=, index=, connector=, resize=): the distilled '
               'levels, at least one', nullable=True),
        Option('nonfinite', 'str', 'skip', 'a NaN/Inf distillation loss: '
               'skipped for that step, or the run stops naming the level',
               choices=NONFINITE_POLICIES,
               examples=('raise', )),
        Option('predict_with', 'str', 'student', 'the model validation and '
               'testing run (\'teacher\': pcka_det.test only, refused in '
               'training)', choices=('student', 'teacher')),
        Option('student_ckpt', 'str', None, 'a checkpoint the student '
               'starts from', nullable=True),
        Option('inherit', 'list', None, 'teacher modules copied into the '
               'student at init (FGD/MGD\'s inherit strategy)',
               nullable=True),
        Option('teacher_dtype', 'str', None, 'run the teacher\'s backbone '
               'and neck in half precision', choices=tuple(
                   k for k in TEACHER_DTYPES if k is not None),
               nullable=True,
               examples=('bf16', 'fp16', 'fp32')),
        Option('teacher_channels_last', 'bool', False, 'run the teacher in '
               'channels_last',
               examples=(True, )),
        Option('log_alignment_interval', 'int', 0, 'log each level\'s PCKA '
               'intra/inter similarity every that many steps; 0 is off',
               low=0,
               examples=(1, )),
        Option('allow_random_teacher', 'bool', False, 'accept teacher_ckpt='
               'None (tests and benchmarks only)',
               examples=(True, )),
        Option('init_cfg', 'any', None, 'MMEngine init config',
               nullable=True),
    ),
    run_rules=(('not-teacher-in-training', 'predict_with=\'teacher\' is '
                'refused in training: every validation would report the '
                'teacher\'s AP and pick the best checkpoint on it'), )))


@MODELS.register_module()
class FeatureDistiller(BaseModel):
    """Feature distillation from a frozen teacher into a student detector.

    The teacher is kept outside the module tree: it is never saved in
    checkpoints, never seen by the optimizer or DDP, and stays in eval mode
    whatever ``train()`` is called with. It is moved with the distiller
    (``.to``, ``.cuda``) and reloaded from ``teacher_ckpt`` on every build,
    which is what makes resuming work without its weights.

    Args:
        student (dict): Student detector: an inline mmdet model config, or
            ``dict(cfg_path='mmdet::...', **overrides)``.
        teacher (dict): Teacher detector, same forms as ``student``.
        teacher_ckpt (str, optional): Path or URL of the teacher weights.
            None is an error unless ``allow_random_teacher``.
        recorders (dict): ``name -> module path`` recorded on both models,
            or ``name -> dict(student=path, teacher=path)``; add
            ``per_call=True`` to record every call of a module that runs
            once per FPN level (a detection head's conv): a level's
            ``index`` then picks the call.
        distill_losses (dict): ``name -> dict(loss=<loss cfg>,
            recorder=<recorder name>, index=<level, None, or
            dict(student=i, teacher=j) for outputs at other positions>,
            connector=<connector cfg or None>, resize=None)``. Each is
            logged as ``loss_<name>``. At least one is needed (without any,
            train the plain student config). Student and teacher features
            of a level must have the same spatial size; ``resize`` set to
            ``'bilinear'`` (or ``'nearest'``) resizes the student's to the
            teacher's instead, for those who mean it. An entry with
            ``head_conv=k`` (and ``loss=dict(type='CrossKDLoss')``, or
            ``'CrossKDGFLLoss'`` for GFL) is a *head level*: CrossKD on the
            dense heads (:mod:`~pcka_det.models.cross_head`), logged as
            ``loss_<name>_cls_p3``, ``loss_<name>_box_p3``, ... per FPN
            level; at most one, beside any feature levels.
        nonfinite (str): What to do when a distillation loss is NaN/Inf:
            ``'skip'`` (drop it for this step, warn) or ``'raise'``.
        predict_with (str): ``'student'`` (default) or ``'teacher'``: the
            model used by ``predict`` (validation, test, visualisation).
        student_ckpt (str, optional): A plain mmdet (or distiller)
            checkpoint the student starts from, loaded by ``init_weights``
            (so after MMEngine's own initialisation, before the first step).
        inherit (Sequence[str], optional): Teacher modules copied into the
            student by ``init_weights`` (e.g. ``('neck', 'bbox_head')``,
            FGD/MGD's "inherit" strategy); their parameters must match in
            names and shapes.
        teacher_dtype (str, optional): ``'fp16'`` or ``'bf16'``: run the
            frozen teacher's backbone and neck in half precision; its
            features are cast back to fp32 for the losses.
        teacher_channels_last (bool): Run the teacher in ``channels_last``.
        log_alignment_interval (int): Every that many training steps, log
            the PCKA intra/inter similarity of each distilled level
            (``distill/<name>_intra``, ``distill/<name>_inter``) from the
            features the step already has. 0 (default) turns it off.
        allow_random_teacher (bool): Accept ``teacher_ckpt=None`` (a random
            teacher: tests and benchmarks only); a warning is logged.
        init_cfg (dict, optional): Init config.
    """

    def __init__(self,
                 student: dict,
                 teacher: dict,
                 teacher_ckpt: Optional[str] = None,
                 recorders: Optional[dict] = None,
                 distill_losses: Optional[dict] = None,
                 nonfinite: str = 'skip',
                 predict_with: str = 'student',
                 student_ckpt: Optional[str] = None,
                 inherit: Optional[Sequence[str]] = None,
                 teacher_dtype: Optional[str] = None,
                 teacher_channels_last: bool = False,
                 log_alignment_interval: int = 0,
                 allow_random_teacher: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        validate('FeatureDistiller', dict(
            student=student, teacher=teacher, teacher_ckpt=teacher_ckpt,
            recorders=recorders, distill_losses=distill_losses,
            nonfinite=nonfinite, predict_with=predict_with,
            student_ckpt=student_ckpt, inherit=inherit,
            teacher_dtype=teacher_dtype,
            teacher_channels_last=teacher_channels_last,
            log_alignment_interval=log_alignment_interval,
            allow_random_teacher=allow_random_teacher, init_cfg=init_cfg))
        # the levels are refused before the detectors are built (seconds);
        # _build_losses parses them again beside the built recorders
        parse_levels(distill_losses or {}, (recorders or dict(neck='neck')))
        student_model = build_detector(student)
        super().__init__(
            data_preprocessor=student_model.data_preprocessor,
            init_cfg=init_cfg)
        self.student = student_model
        self.frozen_teacher = FrozenTeacher(
            teacher, teacher_ckpt, student_model.data_preprocessor,
            dtype=teacher_dtype, channels_last=teacher_channels_last,
            allow_random=allow_random_teacher)
        self.teacher_ckpt = teacher_ckpt
        swapped = smaller_teacher_warning(self.teacher, student_model)
        if swapped:  # in the run's log, once
            MMLogger.get_current_instance().warning(
                f'Teacher size: {swapped} (model.teacher / model.student)')

        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f'nonfinite must be one of {NONFINITE_POLICIES}, '
                             f'got "{nonfinite}"')
        if predict_with not in ('student', 'teacher'):
            raise ValueError('predict_with must be "student" or "teacher", '
                             f'got "{predict_with}"')
        self.nonfinite = nonfinite
        self.predict_with = predict_with
        self.student_ckpt = student_ckpt
        self.inherit = tuple(inherit or ())
        self.log_alignment_interval = log_alignment_interval
        self._steps = 0
        self._nonfinite_streak: Optional[Tensor] = None
        self._nonfinite_peak: Optional[Tensor] = None
        # Set (and then logged) by DistillLossScheduleHook; None means 1.
        # 0 skips the teacher and the losses.
        self.distill_scale: Optional[float] = None
        self._build_recorders(recorders or dict(neck='neck'))
        self._refuse_frozen_recorders()
        self._build_losses(distill_losses or {})

    def _build_recorders(self, cfg: dict) -> None:
        self.student_recorders: Dict[str, ModuleOutputRecorder] = {}
        self.teacher_recorders: Dict[str, ModuleOutputRecorder] = {}
        for name, entry in cfg.items():
            source = recorder_sources(name, entry)
            for side, model, table in (
                    ('student', self.student, self.student_recorders),
                    ('teacher', self.teacher, self.teacher_recorders)):
                recorder = ModuleOutputRecorder(
                    source[side], per_call=source['per_call'])
                recorder.attach(model, owner=side)
                table[name] = recorder

    def _refuse_frozen_recorders(self) -> None:
        """A student module recorded with every parameter frozen (mmdet's
        ResNet ``frozen_stages``): the distillation gradient would train
        only the connector, which the export drops."""
        for name, recorder in self.student_recorders.items():
            params = list(get_module(self.student, recorder.source,
                                     'student').parameters())
            if params and not any(p.requires_grad for p in params):
                raise ValueError(
                    f'recorders.{name}: the student\'s "{recorder.source}" '
                    'is frozen (every parameter has requires_grad=False, '
                    'e.g. the backbone\'s frozen_stages), so distilling it '
                    'trains nothing the exported student keeps. Record a '
                    'later stage, or unfreeze it (student backbone '
                    'frozen_stages).')

    def _build_losses(self, cfg: dict) -> None:
        self.levels: Dict[str, DistillLevel] = {
            level.name: level
            for level in parse_levels(cfg, self.student_recorders)}
        self.distill_losses = nn.ModuleDict()
        self.connectors = nn.ModuleDict()
        # the head level's pairing of the dense heads (None: none)
        self.cross_head: Optional[CrossHead] = None
        for name, level in self.levels.items():
            key = f'distill_losses.{name}'
            try:
                self.distill_losses[name] = MODELS.build(level.loss)
            except (ValueError, TypeError) as e:
                raise type(e)(f'{key}.loss: {e}') from e
            if level.connector is not None:
                self.connectors[name] = MODELS.build(level.connector)
            if level.is_head:
                self._build_head_level(level, key)
        # every logged term: term name -> (level name, log key); a feature
        # level is one term, a head level two per FPN level
        self.terms: Dict[str, Tuple[str, str]] = {}
        for name, level in self.levels.items():
            if level.is_head:
                self.terms.update(zip(
                    head_terms(name, self.cross_head.levels),
                    ((name, k) for k in level.log_keys)))
            else:
                self.terms[name] = (name, level.log_keys[0])

    def _build_head_level(self, level: DistillLevel, key: str) -> None:
        """Pair the dense heads for a head level (refusing what does not
        fit: :class:`CrossHead`), check its loss, name its log keys."""
        on_heads = sorted(
            f'{side}:{r.source}' for side, table in (
                ('student', self.student_recorders),
                ('teacher', self.teacher_recorders))
            for r in table.values()
            if not r.source.startswith(('backbone', 'neck')))
        if on_heads:
            raise ValueError(
                f'{key} is a head level, which runs the dense heads with a '
                'forward of its own, but recorders are on head modules '
                f'({on_heads}): their recordings would mix the two '
                'forwards. Record the neck or the backbone, or drop the '
                'head level.')
        self.cross_head = CrossHead(self.student, self.teacher,
                                    level.head_conv, key)
        kind = type(self.distill_losses[level.name]).__name__
        if kind != self.cross_head.loss_type:
            raise ValueError(
                f'{key}.loss: a {self.cross_head.kind} head level takes '
                f'loss=dict(type=\'{self.cross_head.loss_type}\'), got '
                f'{kind}' + (' (a feature loss: drop head_conv for a '
                             'feature level)' if not kind.startswith(
                                 'CrossKD') else '') + '.')
        self.levels[level.name] = dataclasses.replace(
            level, log_keys=head_log_keys(level.name,
                                          self.cross_head.levels))

    @property
    def head_level(self) -> Optional[DistillLevel]:
        """The head level (CrossKD on the dense heads), or None."""
        return next((lv for lv in self.levels.values() if lv.is_head), None)

    def init_weights(self) -> None:
        """MMEngine's initialisation, then ``student_ckpt`` and ``inherit``.

        The runner calls this before the first step (and before resuming,
        which then overrides it), so weights loaded here are the ones the
        student starts from.
        """
        super().init_weights()
        if self.student_ckpt is not None:
            load_weights(self.student, self.student_ckpt)
            MMLogger.get_current_instance().info(
                f'Student initialised from {self.student_ckpt}')
        for prefix in self.inherit:
            own = get_module(self.student, prefix, 'student',
                             'inherit').state_dict()
            theirs = get_module(self.teacher, prefix, 'teacher',
                                'inherit').state_dict()
            wrong = sorted(set(own) ^ set(theirs)) + sorted(
                k for k in set(own) & set(theirs)
                if own[k].shape != theirs[k].shape)
            if wrong:
                raise ValueError(
                    f'inherit: the student\'s "{prefix}" is not the '
                    f'teacher\'s ({len(wrong)} keys differ in name or shape, '
                    f'first {wrong[:5]}); inherit only modules the two '
                    'detectors share.')
            get_module(self.student, prefix, 'student',
                       'inherit').load_state_dict(
                {k: v.float() for k, v in theirs.items()})
            MMLogger.get_current_instance().info(
                f'Student "{prefix}" initialised from the teacher\'s')

    def _apply(self, fn, *args, **kwargs):
        # Move/cast the unregistered teacher together with the distiller.
        super()._apply(fn, *args, **kwargs)
        self.frozen_teacher.model._apply(fn, *args, **kwargs)
        return self

    def __deepcopy__(self, memo: dict) -> 'FeatureDistiller':
        # A copy (e.g. EMAHook's averaged model) shares the frozen teacher
        # and its recorders: one teacher in memory, and nothing of it is
        # averaged (it is outside the module tree, hence the state dict).
        memo[id(self.frozen_teacher)] = self.frozen_teacher
        memo[id(self.teacher)] = self.teacher
        for recorder in self.teacher_recorders.values():
            memo[id(recorder)] = recorder
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def forward(self,
                inputs: Tensor,
                data_samples: Optional[list] = None,
                mode: str = 'tensor'):
        """Dispatch like any mmdet detector.

        Args:
            inputs (Tensor): Images ``(B, 3, H, W)``.
            data_samples (list[DetDataSample], optional): Annotations.
            mode (str): ``'loss'``, ``'predict'`` or ``'tensor'``.
        """
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.student._forward(inputs, data_samples)
        raise RuntimeError(f'Invalid mode "{mode}"; use loss/predict/tensor')

    def predict(self, inputs: Tensor, data_samples: list) -> list:
        """Predict with the student (or the teacher if ``predict_with``)."""
        model = self.teacher if self.predict_with == 'teacher' else self.student
        with torch.no_grad():
            return model.predict(inputs, data_samples)

    def recording(self):
        """Context in which the student and teacher recorders record; they
        are emptied when it exits.

        Example:
            >>> with distiller.recording():
            ...     distiller.teacher_features(inputs)
            ...     distiller.student.extract_feat(inputs)
            ...     feat = distiller.student_recorders['fpn'].get(0)
        """
        return recording([*self.student_recorders.values(),
                          *self.teacher_recorders.values()])

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher detector (outside the module tree)."""
        return self.frozen_teacher.model

    @property
    def detector(self) -> nn.Module:
        """The detector being trained (the student), where mmdet's hooks
        look for it in a wrapper model: ``YOLOXModeSwitchHook`` switches
        ``model.detector.bbox_head`` to its L1 loss."""
        return self.student

    @property
    def teacher_inputs(self) -> Optional[TeacherInputs]:
        """The teacher's input re-normalisation (None when it normalises
        like the student)."""
        return self.frozen_teacher.inputs

    def teacher_features(self, inputs: Tensor,
                         data_samples: Optional[list] = None,
                         with_head: bool = False):
        """Run the teacher's backbone and neck, and its heads if
        ``with_head`` (see :meth:`FrozenTeacher.extract_feat`); its armed
        recorders fill up.

        Returns:
            The neck's outputs (the heads' with ``with_head``), in the
            teacher's dtype, without gradient.
        """
        return self.frozen_teacher.extract_feat(inputs, data_samples,
                                                with_head)

    def teacher_head(self, feats) -> HeadOutputs:
        """The teacher's dense head on its neck outputs, once, for the head
        level: no gradient, fp32 whatever ``teacher_dtype`` (autocast off),
        by :meth:`CrossHead.run` (the held features kept).

        Args:
            feats (Sequence[Tensor]): The teacher's neck outputs.

        Returns:
            HeadOutputs: Its predictions and held features, fp32.
        """
        feats = [f.float() for f in feats]
        with torch.no_grad(), torch.autocast(
                device_type=feats[0].device.type, enabled=False):
            return self.cross_head.run(self.teacher.bbox_head, feats,
                                       fp32=True)

    def student_loss(self, inputs: Tensor, data_samples: list
                     ) -> Tuple[dict, Optional[HeadOutputs]]:
        """The student's detection losses, its dense head run once by
        :meth:`CrossHead.run` when there is a head level (the held features
        kept; the losses are those of ``student.loss``), else
        ``student.loss`` itself.

        Args:
            inputs (Tensor): Images ``(B, 3, H, W)``.
            data_samples (list[DetDataSample]): Annotations.

        Returns:
            tuple: The losses, and the student's :class:`HeadOutputs` (None
            without a head level).
        """
        if self.cross_head is None:
            return self.student.loss(inputs, data_samples), None
        feats = self.student.extract_feat(inputs)
        out = self.cross_head.run(self.student.bbox_head, feats)
        gt, gt_ignore, metas = unpack_gt_instances(data_samples)
        losses = self.student.bbox_head.loss_by_feat(*out.outs, gt, metas,
                                                     gt_ignore)
        return losses, out

    @property
    def records_heads(self) -> bool:
        """Whether a teacher recorder is on a module outside the backbone
        and neck (a head), so the teacher must run its heads."""
        return any(not r.source.startswith(('backbone', 'neck'))
                   for r in self.teacher_recorders.values())

    def loss(self, inputs: Tensor, data_samples: list) -> dict:
        """Detection losses of the student plus one loss per distilled level.

        Args:
            inputs (Tensor): Images ``(B, 3, H, W)``.
            data_samples (list[DetDataSample]): Annotations.

        Returns:
            dict[str, Tensor]: The student's losses and ``loss_<name>`` for
            every distillation loss.
        """
        self._steps += 1
        scale = 1.0 if self.distill_scale is None else self.distill_scale
        if scale == 0:  # distillation stopped: the student alone
            losses = self.student.loss(inputs, data_samples)
            # connectors stay in the graph, so DDP sees every parameter used
            losses['loss_distill_off'] = sum(
                (p.sum() * 0 for p in self.connectors.parameters()),
                inputs.new_zeros(()))
            losses['distill_scale'] = inputs.new_zeros(())
            return losses
        log_alignment = (self.log_alignment_interval > 0 and self._steps %
                         self.log_alignment_interval == 0)
        losses, pairs = self.record(inputs, data_samples,
                                    detection_loss=True)
        nonfinite = []
        for name, (s_feat, t_feat) in pairs.items():
            if self.levels[name].is_head:
                for key, (value, bad) in self.head_loss(
                        name, s_feat, t_feat, data_samples).items():
                    losses[key] = value * scale
                    nonfinite.append(bad)
                continue
            value, bad = self.distill_loss(name, s_feat, t_feat)
            losses[self.levels[name].log_keys[0]] = value * scale
            nonfinite.append(bad)
            if log_alignment:
                losses.update(self.alignment(name, s_feat, t_feat))
        if self.distill_scale is not None:
            losses['distill_scale'] = inputs.new_tensor(scale)
        if nonfinite and self.nonfinite == 'skip':
            bad = torch.stack(nonfinite)
            # Logged (not summed: no "loss" in the name), so a skipped
            # loss shows in the training log without a host-device sync here.
            losses['distill_nonfinite'] = bad.sum()
            streak, peak = self._nonfinite_streak, self._nonfinite_peak
            if streak is None or streak.shape != bad.shape or \
                    streak.device != bad.device:
                streak = torch.zeros_like(bad)
            if peak is None or peak.shape != bad.shape or \
                    peak.device != bad.device:
                peak = torch.zeros_like(bad)
            # steps in a row each level was non-finite, and the longest
            # such streak since it was last read (both on the device)
            self._nonfinite_streak = (streak + 1) * bad
            self._nonfinite_peak = torch.maximum(peak,
                                                 self._nonfinite_streak)
        return losses

    def record(self, inputs: Tensor, data_samples: Optional[list] = None,
               student_forward: Optional[Callable[[], Any]] = None,
               skip_missing: bool = False,
               detection_loss: bool = False) -> Tuple[Any, FeaturePairs]:
        """Run the teacher and the student once and pair their recorded
        features per level: the one place where levels meet recorders.

        The teacher runs first (no gradient): its backbone and neck, and
        its heads when ``student_forward`` is given and a level records a
        head module (:attr:`records_heads`), or its dense head by
        :meth:`teacher_head` for a head level; then ``student_forward``
        (default: the student's ``extract_feat``, and its dense head for a
        head level; with ``detection_loss``, :meth:`student_loss`), all
        inside :meth:`recording`; the features returned outlive the block,
        the recorders do not keep them.

        Args:
            inputs (Tensor): Preprocessed images ``(B, 3, H, W)``.
            data_samples (list[DetDataSample], optional): Annotations,
                passed to the teacher's input conversion.
            student_forward (callable, optional): The student's forward to
                run, e.g. ``lambda: distiller.student.loss(inputs,
                samples)``; its return value is returned.
            skip_missing (bool): Leave out a level whose recorder did not
                run in ``student_forward`` (or a head level, which a given
                ``student_forward`` does not run) instead of raising.
            detection_loss (bool): Run :meth:`student_loss` as the
                student's forward (what a training step does).

        Returns:
            tuple: What the student's forward returned (the detection
            losses with ``detection_loss``), and ``{level name: (student
            feature, teacher feature)}`` in ``levels`` order, the
            student's as recorded (before its connector, with its graph),
            the teacher's in fp32 (``(B, C, H, W)`` for neck levels; the
            two :class:`HeadOutputs` for a head level).

        Raises:
            IndexError: A level index the recorded output does not have,
                naming the level.
            RuntimeError: A recorder that did not run (unless
                ``skip_missing``).
        """
        # the teacher runs what the student runs: backbone and neck for
        # extract_feat, its heads too for a full forward that a head level
        # records
        # the student's heads run in a training step (detection_loss) or a
        # forward of the caller's: the teacher's then run too if recorded
        with_head = (student_forward is not None or detection_loss) and \
            self.records_heads
        head = self.head_level
        # the dense heads' outputs of a head level (None: not run)
        heads: List[Optional[HeadOutputs]] = [None, None]
        runs_head = head is not None and student_forward is None
        if head is not None and student_forward is not None and \
                not skip_missing:
            raise RuntimeError(
                f'distill_losses.{head.name} is a head level: record() runs '
                'the dense heads itself (detection_loss=True for a training '
                'step); a student_forward of your own does not.')
        if detection_loss:
            def student_forward():
                losses, heads[0] = self.student_loss(inputs, data_samples)
                return losses
        elif student_forward is None:
            def student_forward():
                feats = self.student.extract_feat(inputs)
                if runs_head:
                    heads[0] = self.cross_head.run(self.student.bbox_head,
                                                   feats)
                return feats
        pairs: FeaturePairs = {}
        with self.recording():
            t_feats = self.teacher_features(inputs, data_samples, with_head)
            if runs_head:
                heads[1] = self.teacher_head(t_feats)
            out = student_forward()
            for name, level in self.levels.items():
                if level.is_head:
                    if heads[0] is not None:
                        pairs[name] = (heads[0], heads[1])
                    continue
                s_rec = self.student_recorders[level.recorder]
                t_rec = self.teacher_recorders[level.recorder]
                if skip_missing and (s_rec.data is None
                                     or t_rec.data is None):
                    continue
                try:
                    pairs[name] = (s_rec.get(level.student_index),
                                   t_rec.get(level.teacher_index).float())
                except IndexError as e:
                    raise IndexError(f'distill_losses.{name}: {e}') from e
        return out, pairs

    def nonfinite_streaks(self) -> Dict[str, int]:
        """For each distillation term (:attr:`terms`: a feature level, or
        one of a head level's per-FPN-level terms), the number of steps in
        a row up to the last one in which it was NaN/Inf and skipped
        (synchronises)."""
        if self._nonfinite_streak is None:
            return {}
        return dict(zip(self.terms,
                        map(int, self._nonfinite_streak.tolist())))

    def nonfinite_peaks(self) -> Dict[str, int]:
        """For each distillation term (:attr:`terms`), the longest run of
        steps in a row in which it was NaN/Inf and skipped, since the last
        call, over all ranks.

        One host-device synchronisation, and in a distributed run one
        all-reduce (max), so every rank sees the same values and takes the
        same decision at the same step (a stop on one node does not leave
        the others waiting in a collective). ``NonFiniteGuardHook`` calls it
        on every rank every ``level_check_interval`` iterations; a streak
        that ended between two calls is still seen.
        """
        if self._nonfinite_peak is None:
            return {}
        peak = self._nonfinite_peak
        if torch.distributed.is_available() and \
                torch.distributed.is_initialized() and \
                torch.distributed.get_world_size() > 1:
            peak = peak.clone()
            torch.distributed.all_reduce(peak,
                                         op=torch.distributed.ReduceOp.MAX)
        peaks = dict(zip(self.terms, map(int, peak.tolist())))
        self._nonfinite_peak = self._nonfinite_streak.clone()
        return peaks

    def paired_features(self, name: str, s_feat: Tensor,
                        t_feat: Tensor) -> Tuple[Tensor, Tensor]:
        """The student feature of one level as its loss compares it: through
        the level's connector, resized if its spec says ``resize``.

        Args:
            name (str): Key of ``distill_losses``.
            s_feat (Tensor): Recorded student feature ``(B, C_s, h, w)``.
            t_feat (Tensor): Recorded teacher feature ``(B, C_t, H, W)``.

        Returns:
            tuple[Tensor, Tensor]: Student ``(B, C_t, H, W)`` and teacher.
        """
        if not isinstance(s_feat, Tensor) or not isinstance(t_feat, Tensor):
            raise ValueError(
                f'distill_losses.{name}: the recorded outputs are not '
                f'tensors (student {type(s_feat).__name__}, teacher '
                f'{type(t_feat).__name__}); set index to pick one.')
        if name in self.connectors:
            s_feat = self.connectors[name](s_feat)
            if s_feat.dim() == 4 and t_feat.dim() == 4 and \
                    s_feat.shape[1] != t_feat.shape[1]:
                raise ValueError(
                    f'distill_losses.{name}.connector outputs '
                    f'{s_feat.shape[1]} channels, but the teacher\'s level '
                    f'has {t_feat.shape[1]} {tuple(t_feat.shape)}: set the '
                    f'connector\'s out_channels={t_feat.shape[1]}.')
        mode = self.levels[name].resize
        if mode is not None and s_feat.shape[2:] != t_feat.shape[2:]:
            s_feat = F.interpolate(
                s_feat, size=t_feat.shape[2:], mode=mode,
                **(dict(align_corners=False) if mode == 'bilinear' else {}))
        return s_feat, t_feat

    def distill_loss(self, name: str, s_feat: Tensor,
                     t_feat: Tensor) -> Tuple[Tensor, Tensor]:
        """One distillation loss: the level's connector (and resize), if
        any, then its loss, with the ``nonfinite`` policy applied.

        ``'skip'`` is branch-free (no host-device sync): a non-finite value
        becomes 0 and the gradient it sends back, NaN or not, is zeroed
        before it reaches the connector and the student. ``'raise'`` syncs.

        Args:
            name (str): Key of ``distill_losses``.
            s_feat (Tensor): Recorded student feature ``(B, C_s, H, W)``.
            t_feat (Tensor): Recorded teacher feature ``(B, C_t, H, W)``.

        Returns:
            tuple[Tensor, Tensor]: The loss and ``1.`` if it was non-finite,
            else ``0.`` (both scalars on the loss's device).
        """
        s_feat, t_feat = self.paired_features(name, s_feat, t_feat)
        # A view of its own, so the gradient gate acts on this loss's branch
        # only, after the connector.
        s_feat = s_feat.view_as(s_feat)
        try:
            value = self.distill_losses[name](s_feat, t_feat)
        except ValueError as e:
            raise ValueError(f'distill_losses.{name}: {e}') from e
        return self._guard(name, value, s_feat)

    def _guard(self, term: str, value: Tensor,
               gate: Tensor) -> Tuple[Tensor, Tensor]:
        """The ``nonfinite`` policy on one term: ``'raise'`` stops naming
        it; ``'skip'`` zeroes a non-finite value and the gradient that
        reaches ``gate`` (the tensor this term's branch starts from),
        branch-free.

        Args:
            term (str): The term's name, for the message.
            value (Tensor): Its scalar loss.
            gate (Tensor): A view of the student feature its branch
                starts from.

        Returns:
            tuple[Tensor, Tensor]: The value (0 if non-finite) and ``1.`` if
            it was non-finite, else ``0.``.
        """
        finite = torch.isfinite(value)
        if self.nonfinite == 'raise':
            if not finite:
                raise FloatingPointError(
                    f'Distillation loss "{term}" is {value.item()}')
            return value, (~finite).float()
        if gate.requires_grad:
            gate.register_hook(lambda grad: torch.where(
                finite, grad, torch.zeros((), dtype=grad.dtype,
                                          device=grad.device)))
        return (torch.where(finite, value, value.new_zeros(())),
                (~finite).float())

    def head_loss(self, name: str, student: HeadOutputs,
                  teacher: HeadOutputs, data_samples: list
                  ) -> Dict[str, Tuple[Tensor, Tensor]]:
        """The head level's terms: the cross-head predictions
        (:meth:`CrossHead.cross`), the student's own target assignment
        (label weights, avg_factor), the level's CrossKD loss, then the
        ``nonfinite`` policy per term (a skipped term's gradient is zeroed
        where its branch leaves the student: the held feature of its tower
        and level).

        Args:
            name (str): Key of ``distill_losses`` (the head level).
            student (HeadOutputs): The student's head, with its graph.
            teacher (HeadOutputs): The teacher's (no gradient, fp32).
            data_samples (list[DetDataSample]): The batch's annotations.

        Returns:
            dict[str, tuple[Tensor, Tensor]]: Log key -> (value, ``1.`` if
            it was non-finite), in :attr:`terms` order.
        """
        head = self.cross_head
        t_head = self.teacher.bbox_head
        cls, box, cls_in, box_in = head.cross(t_head, student, teacher)
        anchors, weights, avg = head.targets(self.student.bbox_head,
                                             student.outs[0], data_samples)
        with torch.autocast(device_type=cls[0].device.type, enabled=False):
            preds = head.predictions(t_head, cls, box, teacher, anchors,
                                     weights, avg)
            cls_terms, box_terms = self.distill_losses[name](preds)
        out = {}
        keys = iter(self.levels[name].log_keys)
        terms = iter(head_terms(name, head.levels))
        for level in range(len(head.levels)):
            for value, gate in ((cls_terms[level], cls_in[level]),
                                (box_terms[level], box_in[level])):
                out[next(keys)] = self._guard(next(terms), value, gate)
        return out

    @torch.no_grad()
    def preflight(self, image_size: Tuple[int, int]) -> List[dict]:
        """Check every distilled level on one dummy image, before training.

        Runs the teacher's and the student's ``extract_feat`` (eval mode, no
        gradient, BN statistics untouched) on one random image of
        ``image_size`` and applies what each training step does to the
        recorded features: level index, connector, spatial size and channel
        checks, and the loss's own ``validate_level`` (PCKA: at least two
        patches per level); a head level runs both dense heads and the
        student's held features through the teacher's tail. Errors then
        surface in seconds, before the data is loaded. The shapes are
        logged. The global RNG is not used.

        Args:
            image_size (tuple[int, int]): ``(H, W)`` of the padded training
                batch.

        Returns:
            list[dict]: Per level: ``name``, ``level`` (its key of
            ``distill_losses``), ``student`` and ``teacher`` feature shapes
            (the student's as recorded, before any connector), ``patches``
            and ``patch_size`` (None for losses without patches);
            ``student`` is None for a level whose recorder does not run in
            ``extract_feat``. A head level gives one row per FPN level
            (``<name>_p3``, ...: the held class-tower features).

        Raises:
            ValueError, IndexError: What the first training step would
                raise, or a level that would train nothing.
        """
        device = next(self.student.parameters()).device
        # its own generator: the global RNG, which initialises the student
        # and drives the data pipeline after this, is left untouched
        inputs = torch.randn(1, 3, *image_size,
                             generator=torch.Generator().manual_seed(0))
        inputs = inputs.to(device)
        modes = [(m, m.training) for m in (self.student, self.connectors,
                                             self.distill_losses)]
        for module, _ in modes:
            module.eval()
        lines, levels = [], []
        try:
            _, pairs = self.record(inputs, skip_missing=True)
            for name, level in self.levels.items():
                if level.is_head:
                    rows = self._preflight_head(name, *pairs[name])
                    levels += rows
                    lines += [f'{r["name"]}: student {r["student"]} teacher '
                              f'{r["teacher"]} (head conv '
                              f'{level.head_conv})' for r in rows]
                    continue
                if name not in pairs:
                    lines.append(f'{name}: "{level.recorder}" does not run '
                                 'in extract_feat; checked at the first step')
                    levels.append(dict(name=name, level=name, student=None,
                                       teacher=None, patches=None,
                                       patch_size=None))
                    continue
                recorded, t_feat = pairs[name]
                s_feat, t_feat = self.paired_features(name, recorded, t_feat)
                loss = self.distill_losses[name]
                try:
                    check = getattr(loss, 'validate_level', None)
                    if check is not None:
                        check(s_feat, t_feat, name=name)
                    loss(s_feat, t_feat)
                except ValueError as e:
                    msg = str(e)
                    raise ValueError(
                        msg if msg.startswith(name) else
                        f'distill_losses.{name}: {msg}') from e
                info = dict(name=name, level=name,
                            student=tuple(recorded.shape),
                            teacher=tuple(t_feat.shape), patches=None,
                            patch_size=getattr(loss, 'patch_size', None))
                patches = ''
                if info['patch_size'] is not None:
                    info['patches'] = patch_count(t_feat, loss.patch_size)
                    patches = (f', {info["patches"]} patches of '
                               f'{loss.patch_size}')
                levels.append(info)
                lines.append(f'{name}: student {info["student"]} '
                             f'teacher {info["teacher"]}{patches}')
        finally:
            for module, training in modes:
                module.train(training)
        MMLogger.get_current_instance().info(
            f'FeatureDistiller pre-flight on a dummy {image_size[0]}x'
            f'{image_size[1]} image: ' + '; '.join(lines))
        return levels

    def _preflight_head(self, name: str, student: HeadOutputs,
                        teacher: HeadOutputs) -> List[dict]:
        """The head level's part of :meth:`preflight`: the student's held
        features through the teacher's tail (shapes, widths), one row per
        FPN level (the losses need the annotations: the first step)."""
        try:
            cls, box, _, _ = self.cross_head.cross(self.teacher.bbox_head,
                                                   student, teacher)
        except (RuntimeError, ValueError) as e:
            raise ValueError(f'distill_losses.{name}: the student\'s head '
                             f'features do not fit the teacher\'s head: '
                             f'{e}') from e
        rows = []
        for level, p in enumerate(self.cross_head.levels):
            expected = (teacher.outs[0][level].shape,
                        teacher.outs[1][level].shape)
            if (cls[level].shape, box[level].shape) != expected:
                raise ValueError(
                    f'distill_losses.{name}: at {p} the cross-head outputs '
                    f'are {tuple(cls[level].shape)} and '
                    f'{tuple(box[level].shape)}, the teacher\'s '
                    f'{tuple(expected[0])} and {tuple(expected[1])}.')
            rows.append(dict(
                name=f'{name}_{p}', level=name,
                student=tuple(student.held_cls[level].shape),
                teacher=tuple(teacher.held_cls[level].shape),
                patches=None, patch_size=None))
        return rows

    @torch.no_grad()
    def alignment(self, name: str, s_feat: Tensor,
                  t_feat: Tensor) -> Dict[str, Tensor]:
        """PCKA intra and inter similarity of one distilled level, to log.

        Uses the level's ``PatchCKALoss`` patch size and centring, or the
        official 16-cell uncentred patches for other losses, capped by
        :func:`fitting_patch_size` as the CKA report does.

        Args:
            name (str): Key of ``distill_losses``.
            s_feat (Tensor): Student feature ``(B, C_s, H, W)`` (before the
                connector, which is applied here).
            t_feat (Tensor): Teacher feature ``(B, C_t, H, W)``.

        Returns:
            dict[str, Tensor]: ``distill/<name>_intra`` and ``_inter``, the
            channel means.
        """
        loss = self.distill_losses[name]
        s_feat, t_feat = self.paired_features(name, s_feat, t_feat)
        patch = fitting_patch_size(getattr(loss, 'patch_size', 16),
                                   t_feat.shape[2:])
        intra, inter = patch_cka(s_feat, t_feat, patch,
                                 getattr(loss, 'centered', False))
        return {f'distill/{name}_intra': intra.mean(),
                f'distill/{name}_inter': inter.mean()}

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(teacher={type(self.teacher).__name__}'
                f' [frozen, {self.teacher_ckpt}],\n'
                + super().__repr__().split('(', 1)[1])
