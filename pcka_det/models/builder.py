"""Build a detector from an inline dict or a reference to a config file."""
import copy
import os.path as osp
from typing import List, Union

from mmengine.config import Config, ConfigDict
from mmengine.utils import get_installed_path
from torch import nn

from mmdet.registry import MODELS


def resolve_config_path(path: str) -> str:
    """Turn ``'pkg::rel/path.py'`` into a file path; plain paths pass.

    Args:
        path (str): ``mmdet::...``, ``pcka_det::...`` or a file path.

    Returns:
        str: Absolute path to an existing file.
    """
    if '::' in path:
        package, rel = path.split('::', 1)
        try:
            root = get_installed_path(package)
        except Exception as e:  # the package is not installed
            raise FileNotFoundError(
                f'Cannot resolve "{path}": package "{package}" is not '
                f'installed ({e}).') from e
        full = osp.join(root, '.mim', 'configs', rel)
    else:
        full = osp.abspath(osp.expanduser(path))
    if not osp.isfile(full):
        raise FileNotFoundError(f'Config "{path}" not found (looked at {full})')
    return full


def offline_distiller_cfg(config: str) -> Config:
    """Load a distillation config so that building it downloads nothing:
    a random teacher (``teacher_ckpt=None``) and no pretrained backbones.

    For benchmarks and tests, whose timings and checks do not depend on the
    weights.

    Args:
        config (str): Config path (``pcka_det::``/``mmdet::`` scopes work).

    Returns:
        Config: The full config, its ``model`` changed as above.
    """
    cfg = Config.fromfile(resolve_config_path(config))
    cfg.model.teacher_ckpt = None
    cfg.model.allow_random_teacher = True
    for side in ('student', 'teacher'):
        spec = cfg.model[side]
        spec.backbone = dict(spec.get('backbone', {}), init_cfg=None)
    return cfg


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
    if spec:
        cfg.merge_from_dict(dict(model=spec))
    return cfg.model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a DDP (or other MMEngine) wrapper, or ``model``."""
    from mmengine.model import is_model_wrapper
    return model.module if is_model_wrapper(model) else model


def build_detector(spec: Union[dict, ConfigDict]) -> nn.Module:
    """Build a detector in MMDetection's scope from ``spec``.

    Args:
        spec (dict): See :func:`load_model_cfg`.

    Returns:
        nn.Module: The detector.
    """
    return MODELS.build(load_model_cfg(spec))


def head_num_classes(detector: nn.Module) -> List[int]:
    """The class counts of a detector's heads (the RPN excluded).

    Args:
        detector (nn.Module): An mmdet detector.

    Returns:
        list[int]: Sorted distinct ``num_classes`` of its head modules.
    """
    found = set()
    for name, module in detector.named_modules():
        if 'rpn' in name or 'loss' in name.rsplit('.', 1)[-1]:
            continue
        count = getattr(module, 'num_classes', None)
        if isinstance(count, int) and not isinstance(count, bool):
            found.add(count)
    return sorted(found)
