"""Checks shared by every feature-map distillation loss: its settings when
it is built, the feature pair it is given, and the warnings it gives."""
import logging
import math
import numbers
from typing import Hashable, Optional

from mmengine.logging import print_log
from torch import Tensor

_warned = set()


def warn_once(key: Hashable, message: str) -> None:
    """Log a warning through MMEngine's logger once per ``key``.

    It then lands in the run's log file as well as on the console. Losses run
    every step: the key names the cause and the loss instance (i.e. the
    level), so each dead level is reported, each once.

    Args:
        key (Hashable): What makes two warnings the same.
        message (str): The warning.
    """
    if key not in _warned:
        _warned.add(key)
        print_log(message, logger='current', level=logging.WARNING)


def validate_weight(method: str, name: str, value,
                    allow_none: bool = False) -> Optional[float]:
    """Refuse a loss weight that is not a finite number >= 0.

    A negative weight maximises misalignment and a string only fails at the
    first step, inside torch; both are refused when the loss is built.

    Args:
        method (str): Loss class name, for the message.
        name (str): Argument name (``loss_weight``, ``intra_weight``...).
        value: The configured value.
        allow_none (bool): Whether None (term disabled) is valid.

    Returns:
        float, optional: The value as a float (None if allowed and given).
    """
    if value is None and allow_none:
        return None
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value < 0):
        raise ValueError(
            f'{method}: {name} must be a finite number >= 0, got {value!r} '
            f'({type(value).__name__}). A negative weight would push the '
            'student away from the teacher.')
    return float(value)


def validate_patch_size(method: str, value) -> int:
    """Refuse a patch size that is not an integer >= 1.

    Args:
        method (str): Loss class name, for the message.
        value: The configured ``patch_size``.

    Returns:
        int: The patch size.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value < 1:
        raise ValueError(
            f'{method}: patch_size must be an integer >= 1 (feature cells '
            f'per patch side), got {value!r} ({type(value).__name__}).')
    return int(value)


def validate_feature_pair(student: Tensor, teacher: Tensor,
                          method: str = 'PCKA') -> None:
    """Raise a ``ValueError`` naming both shapes if they cannot be compared.

    Features of another spatial size are refused, not resized: on FPN levels
    they mean that the student and teacher levels are not paired (see the
    message). ``FeatureDistiller`` resizes on purpose when a loss spec says
    ``resize='bilinear'``.

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
    if student.shape[2:] != teacher.shape[2:]:
        raise ValueError(
            f'{method} needs features of the same spatial size; got {shapes}. '
            'The student and teacher levels are not paired: the necks likely '
            'start at different levels (FPN start_level), produce different '
            'strides (e.g. a P2-P6 Faster R-CNN neck against a P3-P7 '
            'RetinaNet neck: name the output of the same stride on each '
            'side, index=dict(student=i, teacher=j), as python -m '
            'pcka_det.new_config writes it), or the recorders point at '
            'stages of different depth. '
            'If resizing is really meant, set resize=\'bilinear\' on this '
            'distill_losses entry.')
