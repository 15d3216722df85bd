"""pcka_det: Patch-based CKA knowledge distillation for MMDetection 3.x.

Importing the package registers every component into MMDetection's
registries, so a config only needs ``custom_imports=dict(imports=['pcka_det'])``.

What importing it changes in the process, and nothing else:

* our components are added to MMDetection's registries (and, with the
  mmrazor extra installed, our losses to mmrazor's ``MODELS``);
* ``pcka_det`` is added to MMEngine's module-to-package table, so
  ``pcka_det::`` config paths resolve (``registry.py``);
* MMEngine's lookup of ``pkg::`` config paths reads a package's metafiles
  once per process instead of once per lookup, with the same answers
  (``config_paths.cache_metafile_reads``);
* the ``pkg_resources is deprecated`` warning, which mmengine's import
  raises on every start with setuptools<81, is filtered (message-scoped).
"""
import warnings

# mmengine 0.10.7 imports pkg_resources, which setuptools<81 (needed to
# build mmcv 2.1.0) flags as deprecated on every start; not actionable here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from . import registry  # noqa: E402,F401  (first: the pcka_det:: scope)
from .config_paths import cache_metafile_reads  # noqa: E402
from . import datasets, engine, losses, models  # noqa: E402,F401 (registers)
from .mmrazor_interop import register_in_mmrazor  # noqa: E402
from .version import __version__  # noqa: E402

cache_metafile_reads()

# With the mmrazor extra installed, our losses are in its registry too.
register_in_mmrazor()

__all__ = ['__version__']
