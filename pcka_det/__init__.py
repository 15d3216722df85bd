"""pcka_det: Patch-based CKA knowledge distillation for MMDetection 3.x.

Importing the package registers every component into MMDetection's
registries, so a config only needs ``custom_imports=dict(imports=['pcka_det'])``.
"""
from . import scope  # noqa: F401  (first: makes pcka_det:: resolvable)
from . import datasets, hooks, losses, models  # noqa: F401  (registration)
from .mmrazor_compat import register_in_mmrazor
from .version import __version__

# With the mmrazor extra installed, our losses are in its registry too.
register_in_mmrazor()

__all__ = ['__version__']
