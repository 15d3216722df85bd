"""The frozen teacher of a distillation run."""
import logging
import os
import os.path as osp
from typing import List, Optional

import torch
from mmengine.logging import MMLogger, print_log
from torch import Tensor, nn

from ..checkpoint import (CheckpointDownloadError, UnsafeCheckpointError,
                          fit_state_dict, has_student, is_url,
                          read_checkpoint, state_dict_of)
from .builder import build_detector
from .teacher_inputs import TeacherInputs, describe

TEACHER_DTYPES = {None: torch.float32, 'fp32': torch.float32,
                  'fp16': torch.float16, 'bf16': torch.bfloat16}


def load_teacher_checkpoint(teacher: nn.Module,
                            path: str) -> Optional[List[str]]:
    """Load ``path`` into ``teacher`` strictly, failing with clear messages.

    Args:
        teacher (nn.Module): The teacher detector.
        path (str): Local path or URL of an mmdet checkpoint (URLs are read
            with ``weights_only=True``, see :mod:`pcka_det.checkpoint`).

    Returns:
        list[str], optional: The class names the checkpoint's meta records
        (mmdet 3 ``dataset_meta.classes`` or mmdet 2 ``CLASSES``), if any.
    """
    if not is_url(path) and osp.isdir(path):
        found = sorted(n for n in os.listdir(path) if n.endswith('.pth'))
        raise IsADirectoryError(
            f'teacher_ckpt "{path}" is a directory; set model.teacher_ckpt '
            'to the checkpoint file'
            + (f' (it holds {found[:5]})' if found else ' (it holds no .pth '
               'file)') + '.')
    if not is_url(path) and not osp.isfile(path):
        raise FileNotFoundError(f'teacher_ckpt "{path}" does not exist')
    try:
        ckpt = read_checkpoint(path)
    except CheckpointDownloadError as e:
        raise CheckpointDownloadError(
            f'teacher_ckpt: {e} Set model.teacher_ckpt to a local file.'
        ) from e
    except UnsafeCheckpointError:
        raise
    except Exception as e:
        raise RuntimeError(
            f'teacher_ckpt "{path}" could not be read ({type(e).__name__}: '
            f'{e}); is it a complete PyTorch checkpoint?') from e
    state = state_dict_of(ckpt, path)
    if has_student(state) and not has_student(teacher.state_dict()):
        raise RuntimeError(
            f'teacher_ckpt "{path}" is a FeatureDistiller checkpoint (its '
            'weights are under "student."): it holds a distilled student, '
            'not the teacher. Point model.teacher_ckpt at the teacher '
            'detector\'s own checkpoint; to use a distilled student as a '
            'teacher, export it first (tools/export_student.py).')
    state, _ = fit_state_dict(teacher, state, path, max_unmatched=0,
                              map_keys=False, what='the teacher architecture')
    broken = sorted(k for k, v in state.items()
                    if v.is_floating_point() and not torch.isfinite(v).all())
    if broken:
        raise RuntimeError(
            f'teacher_ckpt "{path}" holds NaN/Inf in {len(broken)} tensors '
            f'({broken[:5]}): the distillation losses of the levels they '
            'feed would be NaN every step. Use a healthy checkpoint of the '
            'teacher.')
    teacher.load_state_dict(state, strict=True)
    meta = (ckpt.get('meta') if isinstance(ckpt, dict) else None) or {}
    classes = (meta.get('dataset_meta') or {}).get('classes') or \
        meta.get('CLASSES')
    return list(classes) if classes else None


class FrozenTeacher:
    """A teacher detector that extracts features, frozen (a head level's
    distiller also runs its dense head, by a forward of its own).

    It owns what makes a teacher: it is built without advancing the global
    RNG (the student is then initialised exactly as when trained alone),
    loaded strictly from its checkpoint (:func:`load_teacher_checkpoint`),
    kept in eval mode without gradients, run in its own precision and
    memory format, on the batch re-normalised as its own preprocessor
    would (:class:`TeacherInputs`). It is a plain object, not a module:
    ``FeatureDistiller`` keeps it outside its module tree (never in
    checkpoints, the optimizer or DDP) and moves ``model`` along.

    Args:
        spec (dict): Teacher detector: an inline mmdet model config or
            ``dict(cfg_path=..., **overrides)``.
        checkpoint (str, optional): Path or URL of its weights; None is an
            error unless ``allow_random``.
        student_preprocessor (nn.Module): The student's data preprocessor,
            whose output the teacher receives.
        dtype (str, optional): ``'fp16'``/``'bf16'`` (or None/``'fp32'``).
        channels_last (bool): Run in ``channels_last``.
        allow_random (bool): Accept ``checkpoint=None`` (tests, benchmarks);
            a warning is logged.
    """

    def __init__(self,
                 spec: dict,
                 checkpoint: Optional[str],
                 student_preprocessor: nn.Module,
                 dtype: Optional[str] = None,
                 channels_last: bool = False,
                 allow_random: bool = False) -> None:
        if dtype not in TEACHER_DTYPES:
            raise ValueError(f'teacher_dtype must be one of '
                             f'{sorted(TEACHER_DTYPES, key=str)}, got '
                             f'"{dtype}"')
        with torch.random.fork_rng():
            model = build_detector(spec)
        if checkpoint is None:
            if not allow_random:
                raise ValueError(
                    'FeatureDistiller: model.teacher_ckpt is None, so the '
                    'student would be distilled from a randomly initialised '
                    'teacher. Set model.teacher_ckpt to the teacher\'s '
                    'checkpoint (file or URL); allow_random_teacher=True '
                    'accepts a random teacher (tests, benchmarks).')
            print_log('FeatureDistiller: teacher_ckpt is None, the teacher '
                      'keeps random weights (allow_random_teacher=True). Use '
                      'this only in tests and benchmarks.', logger='current',
                      level=logging.WARNING)
        # the classes it was trained on, from its checkpoint (None: unknown)
        self.checkpoint_classes: Optional[List[str]] = None
        if checkpoint is not None:
            self.checkpoint_classes = load_teacher_checkpoint(
                model, checkpoint)
        model.eval()
        model.requires_grad_(False)
        self.model = model
        self.dtype = TEACHER_DTYPES[dtype]
        self.memory_format = (torch.channels_last if channels_last else
                              torch.contiguous_format)
        self.inputs = None
        if TeacherInputs.needed(student_preprocessor,
                                model.data_preprocessor):
            self.inputs = TeacherInputs(student_preprocessor,
                                        model.data_preprocessor)
            MMLogger.get_current_instance().info(
                'FeatureDistiller: the teacher normalises its inputs '
                f'differently ({describe(model.data_preprocessor)}) from the '
                f'student ({describe(student_preprocessor)}); the batch is '
                're-normalised for the teacher.')
        # after TeacherInputs read the normalisation in full precision
        model.to(dtype=self.dtype, memory_format=self.memory_format)

    def extract_feat(self, inputs: Tensor,
                     data_samples: Optional[list] = None,
                     with_head: bool = False):
        """The teacher's backbone and neck on its own normalisation of the
        batch, in eval mode without gradients (recorders on it fill up).

        Args:
            inputs (Tensor): ``(B, 3, H, W)`` as the student's preprocessor
                returned it.
            data_samples (list, optional): Their metainfo (``img_shape``
                bounds the padding kept at the teacher's pad value).
            with_head (bool): Run the heads too (mmdet's ``_forward``, the
                raw head outputs), for recorders on a head module.

        Returns:
            The neck's output (a tuple of ``(B, C, h, w)`` levels), or the
            heads' raw outputs with ``with_head``.
        """
        self.model.eval()
        with torch.no_grad():
            if self.inputs is not None:
                inputs = self.inputs(inputs, data_samples)
            inputs = inputs.to(dtype=self.dtype,
                               memory_format=self.memory_format)
            if with_head:
                return self.model._forward(inputs, data_samples)
            return self.model.extract_feat(inputs)
