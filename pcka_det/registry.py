"""The ``pcka_det`` registry scope: children of MMDetection's registries.

A config that inherits ``_base_ = 'pcka_det::...'`` gets ``_scope_ =
'pcka_det'`` on every component our config files define, and MMEngine then
builds them from the registries of that scope (importing this module to
find them). Our components are registered in MMDetection's registries, so
these children hold nothing themselves: a lookup falls through to mmdet,
then to MMEngine, exactly as in the ``mmdet`` scope.
"""
from mmengine.registry import Registry

from mmdet import registry as mmdet_registry

_NAMES = ('RUNNERS', 'RUNNER_CONSTRUCTORS', 'LOOPS', 'HOOKS', 'DATASETS',
          'DATA_SAMPLERS', 'TRANSFORMS', 'MODELS', 'MODEL_WRAPPERS',
          'WEIGHT_INITIALIZERS', 'OPTIMIZERS', 'OPTIM_WRAPPERS',
          'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS', 'METRICS',
          'EVALUATOR', 'TASK_UTILS', 'VISUALIZERS', 'VISBACKENDS',
          'LOG_PROCESSORS')

for _name in _NAMES:
    _parent = getattr(mmdet_registry, _name)
    # importing pcka_det registers everything (into mmdet's registries)
    globals()[_name] = Registry(_parent.name, parent=_parent,
                                scope='pcka_det', locations=['pcka_det'])
