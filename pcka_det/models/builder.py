"""Build a detector from an inline dict or a reference to a config file."""
import copy
from typing import Optional, Union

from mmengine.config import Config, ConfigDict
from torch import nn

from mmdet.registry import MODELS
from ..config_paths import resolve_config_path


def load_model_cfg(spec: Union[dict, ConfigDict]) -> ConfigDict:
    """Return the model dict described by ``spec``.

    Args:
        spec (dict): Either an inline model config (with ``type``), or
            ``dict(cfg_path=..., **overrides)`` where the overrides are merged
            recursively into the ``model`` of that config file.

    Returns:
        ConfigDict: A model config ready for ``MODELS.build``.
    """
    spec = copy.deepcopy(dict(spec))
    cfg_path = spec.pop('cfg_path', None)
    if cfg_path is None:
        if 'type' not in spec:
            raise ValueError('A detector spec needs "type" (inline config) or '
                             f'"cfg_path"; got keys {sorted(spec)}')
        return ConfigDict(spec)
    cfg = Config.fromfile(resolve_config_path(cfg_path))
    if 'model' not in cfg:
        raise ValueError(f'Config "{cfg_path}" has no "model" field')
    if {'student', 'teacher'} <= set(cfg.model):
        raise ValueError(
            f'"{cfg_path}" is a distillation config (its model has a '
            'student and a teacher), not a detector config: give the '
            'detector\'s own config here (its model.student.cfg_path, '
            f'{cfg.model.student.get("cfg_path", "an mmdet config")!r}).')
    if spec:
        cfg.merge_from_dict(dict(model=spec))
    return cfg.model


def build_detector(spec: Union[dict, ConfigDict]) -> nn.Module:
    """Build a detector in MMDetection's scope from ``spec``.

    Args:
        spec (dict): See :func:`load_model_cfg`.

    Returns:
        nn.Module: The detector.
    """
    return MODELS.build(load_model_cfg(spec))


def smaller_teacher_warning(teacher: nn.Module,
                            student: nn.Module) -> Optional[str]:
    """Why a pair looks swapped: the teacher has fewer parameters than the
    student (``new_config``, ``check`` and the run's log say it).

    Args:
        teacher (nn.Module): The teacher detector.
        student (nn.Module): The student detector.

    Returns:
        str, optional: The warning with both counts, or None.
    """
    sizes = [sum(p.numel() for p in m.parameters())
             for m in (teacher, student)]
    if sizes[0] >= sizes[1]:
        return None
    return (f'the teacher has {sizes[0]:,} parameters, fewer than the '
            f'student\'s {sizes[1]:,}: are teacher and student swapped? '
            'Distilling a smaller network into a larger one rarely helps.')
