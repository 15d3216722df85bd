"""A frozen teacher distilled into a trainable student, as one mmdet model."""
import copy
import os.path as osp
import warnings
from typing import Dict, Optional

import torch
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.runner.checkpoint import _load_checkpoint
from torch import Tensor, nn

from mmdet.registry import MODELS
from .builder import build_detector
from .recorders import ModuleOutputRecorder

NONFINITE_POLICIES = ('skip', 'raise')


def _is_url(path: str) -> bool:
    return path.startswith(('http://', 'https://', 's3://', 'open-mmlab://',
                            'torchvision://', 'modelzoo://'))


def state_dict_mismatch(model: nn.Module,
                        state: Dict[str, Tensor]) -> Optional[str]:
    """Describe how ``state`` fails to fit ``model``; None if it fits.

    Args:
        model (nn.Module): The model to load into.
        state (dict): A state dict with the model's own key names.

    Returns:
        str | None: Counts and first names of missing, unexpected and
        shape-mismatched keys.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state)
                        if tuple(own[k].shape) != tuple(state[k].shape))
    if not (missing or unexpected or mismatched):
        return None

    def head(keys):
        return f'{keys[:8]}{" ..." if len(keys) > 8 else ""}'

    return (f'{len(missing)} missing keys {head(missing)}, '
            f'{len(unexpected)} unexpected keys {head(unexpected)}, '
            f'{len(mismatched)} shape mismatches {head(mismatched)}')


def load_teacher_checkpoint(teacher: nn.Module, path: str) -> None:
    """Load ``path`` into ``teacher`` strictly, failing with clear messages.

    Args:
        teacher (nn.Module): The teacher detector.
        path (str): Local path or URL of an mmdet checkpoint.
    """
    if not _is_url(path) and not osp.isfile(path):
        raise FileNotFoundError(f'teacher_ckpt "{path}" does not exist')
    try:
        ckpt = _load_checkpoint(path, map_location='cpu')
    except Exception as e:
        raise RuntimeError(
            f'teacher_ckpt "{path}" could not be read ({type(e).__name__}: '
            f'{e}); is it a complete PyTorch checkpoint?') from e
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise RuntimeError(f'teacher_ckpt "{path}" holds no state_dict')
    state = {k[7:] if k.startswith('module.') else k: v
             for k, v in state.items()}
    problem = state_dict_mismatch(teacher, state)
    if problem:
        raise RuntimeError(
            f'teacher_ckpt "{path}" does not match the teacher architecture: '
            f'{problem}. Check that the teacher config is the one the '
            'checkpoint was trained with.')
    teacher.load_state_dict(state, strict=True)


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
            None keeps a random teacher (tests only) and warns.
        recorders (dict): ``name -> module path`` recorded on both models,
            or ``name -> dict(student=path, teacher=path)``.
        distill_losses (dict): ``name -> dict(loss=<loss cfg>,
            recorder=<recorder name>, index=<level or None>,
            connector=<connector cfg or None>)``. Each is logged as
            ``loss_<name>``.
        nonfinite (str): What to do when a distillation loss is NaN/Inf:
            ``'skip'`` (drop it for this step, warn) or ``'raise'``.
        predict_with (str): ``'student'`` (default) or ``'teacher'``: the
            model used by ``predict`` (validation, test, visualisation).
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
                 init_cfg: Optional[dict] = None) -> None:
        student_model = build_detector(student)
        super().__init__(
            data_preprocessor=student_model.data_preprocessor,
            init_cfg=init_cfg)
        self.student = student_model
        # Building the teacher must not advance the global RNG: with the same
        # seed the student is then initialised exactly as when trained alone.
        with torch.random.fork_rng():
            teacher_model = build_detector(teacher)
        if teacher_ckpt is None:
            warnings.warn('FeatureDistiller: teacher_ckpt is None, the '
                          'teacher keeps random weights. Use this only in '
                          'tests.')
        else:
            load_teacher_checkpoint(teacher_model, teacher_ckpt)
        teacher_model.eval()
        teacher_model.requires_grad_(False)
        # Bypass nn.Module registration on purpose (see class docstring).
        object.__setattr__(self, 'teacher', teacher_model)
        self.teacher_ckpt = teacher_ckpt

        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f'nonfinite must be one of {NONFINITE_POLICIES}, '
                             f'got "{nonfinite}"')
        if predict_with not in ('student', 'teacher'):
            raise ValueError('predict_with must be "student" or "teacher", '
                             f'got "{predict_with}"')
        self.nonfinite = nonfinite
        self.predict_with = predict_with
        self._build_recorders(recorders or dict(neck='neck'))
        self._build_losses(distill_losses or {})

    def _build_recorders(self, cfg: dict) -> None:
        self.student_recorders: Dict[str, ModuleOutputRecorder] = {}
        self.teacher_recorders: Dict[str, ModuleOutputRecorder] = {}
        for name, source in cfg.items():
            if isinstance(source, str):
                source = dict(student=source, teacher=source)
            for side, model, table in (
                    ('student', self.student, self.student_recorders),
                    ('teacher', self.teacher, self.teacher_recorders)):
                recorder = ModuleOutputRecorder(source[side])
                recorder.attach(model, owner=side)
                table[name] = recorder

    def _build_losses(self, cfg: dict) -> None:
        self.distill_losses = nn.ModuleDict()
        self.connectors = nn.ModuleDict()
        self.loss_mappings = {}
        for name, spec in cfg.items():
            spec = copy.deepcopy(dict(spec))
            unknown = set(spec) - {'loss', 'recorder', 'index', 'connector'}
            if 'loss' not in spec or unknown:
                raise ValueError(
                    f'distill_losses.{name} must be dict(loss=..., '
                    'recorder=..., index=..., connector=...); got keys '
                    f'{sorted(spec)}')
            recorder = spec.get('recorder', 'neck')
            if recorder not in self.student_recorders:
                raise ValueError(
                    f'distill_losses.{name} uses recorder "{recorder}", but '
                    f'the recorders are {sorted(self.student_recorders)}')
            self.distill_losses[name] = MODELS.build(spec['loss'])
            if spec.get('connector') is not None:
                self.connectors[name] = MODELS.build(spec['connector'])
            self.loss_mappings[name] = (recorder, spec.get('index'))

    def _apply(self, fn, *args, **kwargs):
        # Move/cast the unregistered teacher together with the distiller.
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        return self

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

    def teacher_features(self, inputs: Tensor) -> None:
        """Run the teacher's backbone and neck; its recorders fill up."""
        for recorder in self.teacher_recorders.values():
            recorder.reset()
        self.teacher.eval()
        with torch.no_grad():
            self.teacher.extract_feat(inputs)

    def loss(self, inputs: Tensor, data_samples: list) -> dict:
        """Detection losses of the student plus one loss per distilled level.

        Args:
            inputs (Tensor): Images ``(B, 3, H, W)``.
            data_samples (list[DetDataSample]): Annotations.

        Returns:
            dict[str, Tensor]: The student's losses and ``loss_<name>`` for
            every distillation loss.
        """
        self.teacher_features(inputs)
        for recorder in self.student_recorders.values():
            recorder.reset()
        losses = self.student.loss(inputs, data_samples)
        for name, (rec, index) in self.loss_mappings.items():
            s_feat = self.student_recorders[rec].get(index)
            t_feat = self.teacher_recorders[rec].get(index)
            value = self.distill_loss(name, s_feat, t_feat)
            losses[name if name.startswith('loss') else f'loss_{name}'] = \
                self._guard_nonfinite(name, value)
        return losses

    def distill_loss(self, name: str, s_feat: Tensor,
                     t_feat: Tensor) -> Tensor:
        """One distillation loss: the level's connector, if any, then its loss.

        Args:
            name (str): Key of ``distill_losses``.
            s_feat (Tensor): Recorded student feature ``(B, C_s, H, W)``.
            t_feat (Tensor): Recorded teacher feature ``(B, C_t, H, W)``.

        Returns:
            Tensor: Scalar loss.
        """
        if name in self.connectors:
            s_feat = self.connectors[name](s_feat)
        return self.distill_losses[name](s_feat, t_feat)

    def _guard_nonfinite(self, name: str, value: Tensor) -> Tensor:
        if torch.isfinite(value).all():
            return value
        if self.nonfinite == 'raise':
            raise FloatingPointError(
                f'Distillation loss "{name}" is {value.item()}')
        MMLogger.get_current_instance().warning(
            f'Distillation loss "{name}" is {value.item()}; skipped for this '
            'step (set model.nonfinite="raise" to stop instead).')
        # Keep the connector in the graph so DDP sees every parameter used.
        zero = value.new_zeros(())
        if name in self.connectors:
            zero = zero + sum(
                p.sum() * 0 for p in self.connectors[name].parameters())
        return zero

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(teacher={type(self.teacher).__name__}'
                f' [frozen, {self.teacher_ckpt}],\n'
                + super().__repr__().split('(', 1)[1])
