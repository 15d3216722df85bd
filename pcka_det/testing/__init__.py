"""What exists for tests and benchmarks, not for training: a distillation
config built without downloads, the slow reference PCKA written from the
definitions, and a torch hub cache that serves model-zoo URLs offline.

Shipped in the package because ``tools/benchmark/benchmark_loss.py``,
``tools/benchmark/benchmark_overhead.py`` and the GPU report use them from an
installed copy. Importing it registers nothing and changes nothing.
"""
from .offline import offline_distiller_cfg

__all__ = ['offline_distiller_cfg']
