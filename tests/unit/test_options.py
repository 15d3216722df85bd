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
            'ConvConnector', 'ExportStudentHook', 'DistillLevel',
            'Recorder', 'CrossKDLoss', 'CrossKDGFLLoss'}


# registered by pcka_det without a contract of their own: they take the
# arguments of the MMEngine class they extend, unchanged
EXEMPT = {'AtomicCheckpointHook': 'CheckpointHook',
          'ExactResumeEpochBasedTrainLoop': 'EpochBasedTrainLoop',
          'GuardedOptimWrapper': 'OptimWrapper',
          'GuardedAmpOptimWrapper': 'AmpOptimWrapper'}


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
        assert [o.name for o in contract.options] == [
            'resume_fallback', 'resume_override']
        return
    if name == 'DistillLevel':  # a distill_losses entry: no class
        from pcka_det.models.levels import SPEC_KEYS
        assert tuple(o.name for o in contract.options) == SPEC_KEYS
        return
    if name == 'Recorder':  # a recorders entry: no class of its own
        from pcka_det.models.recorders import ModuleOutputRecorder
        params = list(inspect.signature(
            ModuleOutputRecorder.__init__).parameters)
        assert params == ['self', 'source', 'per_call']
        assert [o.name for o in contract.options] == [
            'student', 'teacher', 'per_call']
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


# --- the commands' flags -------------------------------------------------

# the least each command needs before its flags are checked: nothing is
# read (the paths need not exist), the flags are refused first
BASE_ARGV = {
    'pcka_det.train': ['config.py'],
    'pcka_det.test': ['config.py', 'model.pth'],
    'pcka_det.check': ['config.py'],
    'pcka_det.new_config': ['--teacher', 't.py', '--teacher-ckpt', 't.pth',
                            '--student', 's.py', '-o', 'never_written.py'],
    'pcka_det.export': ['in.pth', 'never_written.pth'],
}


def _command(name):
    import importlib
    return importlib.import_module(name)


def test_every_command_flag_is_declared():
    from pcka_det.options import COMMANDS
    assert set(BASE_ARGV) == set(COMMANDS)
    for name in COMMANDS:
        parser = _command(name).build_parser()
        flags = [a for a in parser._actions if a.dest != 'help']
        declared = CONTRACTS[name].options
        assert len(declared) == len(flags), name
        for action, option in zip(flags, declared):
            assert option.name in action.option_strings or \
                option.name == action.dest, (name, option.name)
            assert option.doc, (name, option.name)


def test_a_flag_without_help_is_refused():
    import argparse

    from pcka_det.options import command_contract
    parser = argparse.ArgumentParser()
    parser.add_argument('--level', type=int, default=1)
    with pytest.raises(ValueError, match='--level has no help line'):
        command_contract('pcka_det.nothing', parser, 'A test command.')
    assert 'pcka_det.nothing' not in CONTRACTS


def _refusals():
    from pcka_det.options import COMMANDS
    for name in COMMANDS:
        _command(name)
        for option in CONTRACTS[name].options:
            value = option.refused_example()
            if value is not None and option.kind in ('int', 'float', 'str'):
                yield name, option.name, value
    yield 'pcka_det.new_config', '--weight', 0.0  # rule weight-above-zero
    yield 'pcka_det.new_config', '--weight', float('nan')


@pytest.mark.parametrize('command, flag, value', list(_refusals()))
def test_command_refuses_before_loading_anything(command, flag, value,
                                                 capsys, tmp_path,
                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        _command(command).main(BASE_ARGV[command] + [flag, str(value)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    if CONTRACTS[command].option(flag).choices:  # argparse's own refusal
        assert f'argument {flag}' in err and 'invalid choice' in err
    else:
        assert f'{command} {flag} = {value!r}' in err or \
            f'{flag} = {value!r}' in err, err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize('command', ['pcka_det.train', 'pcka_det.test'])
@pytest.mark.parametrize('launcher', ['pytorch', 'slurm', 'mpi'])
def test_launcher_without_its_starter_is_refused(command, launcher, capsys,
                                                 monkeypatch):
    # was: KeyError: 'RANK' (or 'SLURM_PROCID') deep in MMEngine's init_dist
    from pcka_det.cli import LAUNCHER_ENV
    for name in LAUNCHER_ENV[launcher][0]:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as e:
        _command(command).main(BASE_ARGV[command] + ['--launcher', launcher])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f'--launcher {launcher} needs {LAUNCHER_ENV[launcher][0][0]}' in err
    assert 'rule "launcher-environment"' in err
