"""Make mmrazor 1.0.0 importable on torch 2.x, and register our losses there.

mmrazor 1.0.0 imports quantization helpers that newer torch releases
removed. Each patch below restores one removed name with the behaviour it
had in torch 1.13, only when it is missing; nothing else in torch changes.
"""
import importlib.util


def _reverse2(fuser):
    # torch 1.13: a fuser for the pattern (b, a) called as f(is_qat, a, b)
    def fuse(is_qat, x, y):
        return fuser(is_qat, y, x)

    return fuse


def _reverse3(fuser):
    # torch 1.13: pattern (c, (b, a)) -> f(is_qat, a, b, c)
    def fuse(is_qat, x, w):
        y, z = w
        return fuser(is_qat, z, y, x)

    return fuse


def _reverse_sequential_wrapper2(sequential):
    # torch 1.13: fuse (b, a) into sequential(a, b)
    def fuse(is_qat, x, y):
        return sequential(y, x)

    return fuse


def _setter(attr):
    # torch 1.13: these BackendPatternConfig._set_* setters stored the
    # value and returned self; mmrazor's quantization tables chain them.
    def set_value(self, value):
        setattr(self, attr, value)
        return self

    return set_value


def patch_torch_for_mmrazor() -> None:
    """Restore the torch names mmrazor 1.0.0 imports (idempotent)."""
    import torch.ao.quantization.fuser_method_mappings as fmm
    # BackendConfig.set_backend_pattern_config reaches this submodule as an
    # attribute of its package without importing it; mmrazor calls it at
    # import time.
    import torch.ao.quantization.backend_config.utils  # noqa: F401
    from torch.ao.quantization.backend_config import BackendPatternConfig
    for name in ('_set_overwrite_output_fake_quantize',
                 '_set_overwrite_output_observer',
                 '_set_input_output_observed'):
        if not hasattr(BackendPatternConfig, name):
            setattr(BackendPatternConfig, name, _setter(name[4:]))
    for name, value in (('reverse2', _reverse2), ('reverse3', _reverse3),
                        ('reverse_sequential_wrapper2',
                         _reverse_sequential_wrapper2)):
        if not hasattr(fmm, name):
            setattr(fmm, name, value)


def register_in_mmrazor() -> bool:
    """Register the CKA losses in mmrazor's ``MODELS`` too.

    Only names mmrazor lacks are added (its own PKD/CWD stay its own), so an
    mmrazor ``ConfigurableDistiller`` can use ``type='PatchCKALoss'``.

    Returns:
        bool: False when mmrazor is not installed (nothing is patched).
    """
    if importlib.util.find_spec('mmrazor') is None:
        return False
    patch_torch_for_mmrazor()
    from mmrazor.registry import MODELS as RAZOR_MODELS

    from .losses import CKALoss, PatchCKALoss
    for cls in (PatchCKALoss, CKALoss):
        if cls.__name__ not in RAZOR_MODELS.module_dict:
            RAZOR_MODELS.register_module(module=cls)
    return True
