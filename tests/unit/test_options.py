"""The option contracts: one table that the components validate against,
that docs/options.md is generated from, and that must name every argument
of every declared component."""
import inspect
import os.path as osp

import pytest
from conftest import ROOT
from mmengine.registry import HOOKS as ENGINE_HOOKS
from mmengine.registry import RUNNERS

from mmdet.registry import HOOKS, MODELS
from pcka_det.options import CONTRACTS, Option, OptionError, validate
from pcka_det.options_doc import markdown

# every component that has a contract today (README's options reference);
# the list only grows
DECLARED = {'FeatureDistiller', 'PatchCKALoss', 'DistillLossScheduleHook',
            'NonFiniteGuardHook', 'DistillRunner', 'PKDLoss',
            'ChannelWiseDivergence', 'FeatureMSELoss', 'CKALoss',
            'ConvConnector', 'ExportStudentHook', 'DistillLevel'}


# registered by pcka_det without a contract of their own: they take the
# arguments of the MMEngine class they extend, unchanged
EXEMPT = {'AtomicCheckpointHook': 'CheckpointHook',
          'ExactResumeEpochBasedTrainLoop': 'EpochBasedTrainLoop',
          'GuardedOptimWrapper': 'OptimWrapper'}


def test_every_registered_component_has_a_contract():
    from mmdet import registry
    ours = set()
    for name in ('MODELS', 'HOOKS', 'LOOPS', 'OPTIM_WRAPPERS'):
        for key, cls in getattr(registry, name).module_dict.items():
            if cls.__module__.startswith('pcka_det'):
                ours.add(key)
    assert {'FeatureDistiller', 'PatchCKALoss'} <= ours
    missing = ours - set(CONTRACTS) - set(EXEMPT)
    assert not missing, f'components without a contract: {sorted(missing)}'
    for key, parent in EXEMPT.items():  # truly the parent's arguments
        cls = next(getattr(registry, n).get(key) for n in (
            'HOOKS', 'LOOPS', 'OPTIM_WRAPPERS')
            if getattr(registry, n).get(key) is not None)
        base = next(b for b in cls.__mro__[1:] if b.__name__ == parent)
        params = list(inspect.signature(cls.__init__).parameters)
        assert cls.__init__ is base.__init__ or params in (
            ['self', 'args', 'kwargs'],  # passed through unchanged
            list(inspect.signature(base.__init__).parameters)), key


def test_reference_is_generated_from_the_contracts():
    with open(osp.join(ROOT, 'docs', 'options.md')) as f:
        assert f.read() == markdown(), (
            'docs/options.md differs from the contracts: run '
            'python -m pcka_det.options_doc --write')


def _component(name):
    for registry in (MODELS, HOOKS, ENGINE_HOOKS):
        cls = registry.get(name)
        if cls is not None:
            return cls
    return RUNNERS.get(name)


@pytest.mark.parametrize('name', sorted(DECLARED))
def test_contract_names_every_argument(name):
    assert name in CONTRACTS
    contract = CONTRACTS[name]
    if name == 'DistillRunner':  # its own config keys, not Runner's
        assert [o.name for o in contract.options] == ['resume_fallback']
        return
    if name == 'DistillLevel':  # a distill_losses entry: no class
        from pcka_det.models.levels import SPEC_KEYS
        assert tuple(o.name for o in contract.options) == SPEC_KEYS
        return
    params = [p for p in inspect.signature(
        _component(name).__init__).parameters if p != 'self']
    assert [o.name for o in contract.options] == params
    defaults = {p: v.default for p, v in inspect.signature(
        _component(name).__init__).parameters.items()
        if v.default is not inspect.Parameter.empty}
    for option in contract.options:
        if option.name in defaults:
            assert option.default == defaults[option.name], option.name


@pytest.mark.parametrize('value, problem', [
    (3, None), (0, None), (-1, 'must be >= 0'), (2.0, 'must be an integer'),
    (True, 'must be an integer'), ('3', 'not str'), (None, 'None is not'),
])
def test_int_option(value, problem):
    option = Option('n', 'int', 1, 'a count', low=0)
    found = option.check(value)
    assert (found is None) if problem is None else problem in found


@pytest.mark.parametrize('value, problem', [
    (0.5, None), (1, None), (1.5, 'must be <= 1'), (float('nan'),
                                                    'must be finite'),
    (None, None),
])
def test_float_range_option(value, problem):
    option = Option('f', 'float', 0.0, 'a factor', low=0, high=1,
                    nullable=True)
    found = option.check(value)
    assert (found is None) if problem is None else problem in found


def test_messages_name_key_value_rule_and_fix():
    with pytest.raises(OptionError) as e:
        validate('DistillLossScheduleHook', dict(min_factor=-1.0))
    msg = str(e.value)
    assert 'custom_hooks[i].min_factor = -1.0: must be >= 0' in msg
    assert 'float in [0, 1]' in msg
    with pytest.raises(OptionError, match='has no option'):
        validate('NonFiniteGuardHook', dict(max_streak=3))
    with pytest.raises(OptionError, match='rule "trains-something"'):
        MODELS.build(dict(type='PatchCKALoss', intra_weight=0.0))
