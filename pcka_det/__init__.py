"""pcka_det: Patch-based CKA knowledge distillation for MMDetection 3.x.

Importing the package registers every component into MMDetection's
registries, so a config only needs ``custom_imports=dict(imports=['pcka_det'])``.
"""
from . import scope  # noqa: F401  (first: makes pcka_det:: resolvable)
from . import datasets, hooks, losses, models  # noqa: F401  (registration)
from .version import __version__

__all__ = ['__version__']
