"""Distillation configs built without downloads: a random teacher and no
pretrained backbones, for tests and benchmarks whose timings and checks do
not depend on the weights."""
from mmengine.config import Config

from ..config_paths import resolve_config_path


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
