"""The ``pcka_det`` scope: ``pcka_det::`` config paths and registries.

MMEngine only accepts ``package::path`` for packages listed in its own
module-to-package table, so importing pcka_det adds itself there (one of
the process-wide changes listed in ``pcka_det/__init__.py``). The value is
the module name on purpose: MMEngine then finds the configs through the
import path, which is right for editable and regular installs alike.

A config that inherits ``_base_ = 'pcka_det::...'`` gets ``_scope_ =
'pcka_det'`` on every component our config files define, and MMEngine then
builds them from the registries of that scope (importing this module to
find them). Our components are registered in MMDetection's registries, so
these children hold nothing themselves: a lookup falls through to mmdet,
then to MMEngine, exactly as in the ``mmdet`` scope.
"""
from mmengine.config import utils as _config_utils
from mmengine.registry import Registry

from mmdet import registry as mmdet_registry

_config_utils.MODULE2PACKAGE.setdefault('pcka_det', 'pcka_det')

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
