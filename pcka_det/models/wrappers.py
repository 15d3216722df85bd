"""The model inside MMEngine's wrappers (DDP and others)."""
from torch import nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a DDP (or other MMEngine) wrapper, or ``model``."""
    from mmengine.model import is_model_wrapper
    return model.module if is_model_wrapper(model) else model
