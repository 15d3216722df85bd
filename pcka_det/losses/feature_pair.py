"""Checks and alignment shared by every feature-map distillation loss."""
import warnings
from typing import Tuple

import torch.nn.functional as F
from torch import Tensor

_warned = set()


def warn_once(key: str, message: str) -> None:
    """Warn once per ``key`` for the whole process (losses run every step)."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=3)


def check_feature_pair(student: Tensor, teacher: Tensor,
                       method: str = 'PCKA') -> None:
    """Raise a ``ValueError`` naming both shapes if they cannot be compared.

    Args:
        student (Tensor): Student feature, expected ``(B, C, H, W)``.
        teacher (Tensor): Teacher feature, expected ``(B, C, H, W)``.
        method (str): Loss name used in the message.
    """
    shapes = (f'student {tuple(student.shape)}, '
              f'teacher {tuple(teacher.shape)}')
    if student.dim() != 4 or teacher.dim() != 4:
        raise ValueError(
            f'{method} expects 4D features (B, C, H, W); got {shapes}')
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f'{method} needs the same batch size; got {shapes}')
    if student.shape[1] != teacher.shape[1]:
        raise ValueError(
            f'{method} needs the same number of channels; got {shapes}. Add '
            f'a connector (e.g. connector=dict(type="ConvConnector", '
            f'in_channels={student.shape[1]}, '
            f'out_channels={teacher.shape[1]})) to map the student width.')


def align_feature_pair(student: Tensor, teacher: Tensor,
                       method: str = 'PCKA') -> Tuple[Tensor, Tensor]:
    """Check a pair and resize the student to the teacher's spatial size.

    Args:
        student (Tensor): ``(B, C, h, w)``.
        teacher (Tensor): ``(B, C, H, W)``.
        method (str): Loss name used in messages.

    Returns:
        tuple[Tensor, Tensor]: Student ``(B, C, H, W)`` and the teacher.
    """
    check_feature_pair(student, teacher, method)
    if student.shape[2:] != teacher.shape[2:]:
        warn_once(
            f'resize{tuple(student.shape[2:])}{tuple(teacher.shape[2:])}',
            f'{method}: student feature {tuple(student.shape)} resized to '
            f'the teacher size {tuple(teacher.shape[2:])}.')
        student = F.interpolate(
            student.float(), size=teacher.shape[2:], mode='bilinear',
            align_corners=False)
    return student, teacher
