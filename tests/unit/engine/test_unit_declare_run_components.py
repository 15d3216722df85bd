"""Unit tests of :func:`pcka_det.engine.runner.declare_run_components`: what
it writes into a config that does not declare the run components, what it
leaves alone, and the lines it returns."""
import copy

import pytest
from mmengine.config import Config
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

import pcka_det  # noqa: F401  (registers components)
from pcka_det.engine.runner import declare_run_components
from pcka_det.models import FeatureDistiller

SGD = dict(type='SGD', lr=0.01, momentum=0.9)
DECLARED_HOOKS = dict(
    checkpoint=dict(type='AtomicCheckpointHook', interval=1),
    nonfinite_guard=dict(type='NonFiniteGuardHook'),
    export_student=dict(type='ExportStudentHook'))


def _cfg(**parts) -> Config:
    return Config(parts)


def _keys(lines):
    """The config key each line names (what precedes the first ': ')."""
    return [line.split(': ', 1)[0] for line in lines]


def _full(**over):
    """A config that declares everything (a distiller model)."""
    parts = dict(
        model=dict(type='FeatureDistiller'),
        train_cfg=dict(type='ExactResumeEpochBasedTrainLoop', max_epochs=2),
        optim_wrapper=dict(type='GuardedOptimWrapper', optimizer=SGD),
        default_hooks=copy.deepcopy(DECLARED_HOOKS))
    parts.update(over)
    return _cfg(**parts)


# ---------------------------------------------------------------- train_cfg
@pytest.mark.parametrize('kind', [
    'EpochBasedTrainLoop', 'mmengine.EpochBasedTrainLoop',
    EpochBasedTrainLoop
], ids=['str', 'scoped', 'class'])
def test_epoch_loop_becomes_exact_resume(kind):
    cfg = _cfg(train_cfg=dict(type=kind, max_epochs=3, val_interval=2))
    lines = declare_run_components(cfg)
    assert dict(cfg.train_cfg) == dict(type='ExactResumeEpochBasedTrainLoop',
                                       max_epochs=3, val_interval=2)
    line = [x for x in lines if x.startswith('train_cfg: ')]
    assert len(line) == 1
    assert 'EpochBasedTrainLoop -> ExactResumeEpochBasedTrainLoop' in line[0]


def test_by_epoch_only_becomes_exact_resume_without_by_epoch():
    cfg = _cfg(train_cfg=dict(by_epoch=True, max_epochs=4))
    lines = declare_run_components(cfg)
    # by_epoch is MMEngine's way of choosing a loop without a type: with a
    # type it would reach the loop's __init__, which takes no by_epoch
    assert dict(cfg.train_cfg) == dict(type='ExactResumeEpochBasedTrainLoop',
                                       max_epochs=4)
    assert 'train_cfg: not declared -> ExactResumeEpochBasedTrainLoop' in \
        '\n'.join(lines)


@pytest.mark.parametrize('train_cfg', [
    dict(type='IterBasedTrainLoop', max_iters=100, val_interval=50),
    dict(type=IterBasedTrainLoop, max_iters=100),
    dict(by_epoch=False, max_iters=100),
    dict(type='ExactResumeEpochBasedTrainLoop', max_epochs=1),
], ids=['iter-str', 'iter-class', 'by_epoch-false', 'already-exact'])
def test_other_loops_stay(train_cfg):
    cfg = _cfg(train_cfg=copy.deepcopy(train_cfg))
    lines = declare_run_components(cfg)
    assert dict(cfg.train_cfg) == train_cfg
    assert 'train_cfg' not in _keys(lines)


def test_no_train_cfg_stays_absent():
    cfg = _cfg(optim_wrapper=dict(type='GuardedOptimWrapper', optimizer=SGD))
    lines = declare_run_components(cfg)
    assert 'train_cfg' not in cfg
    assert 'train_cfg' not in _keys(lines)


# ------------------------------------------------------------ optim_wrapper
@pytest.mark.parametrize('wrapper', [
    dict(type='OptimWrapper', optimizer=SGD, clip_grad=dict(max_norm=35)),
    dict(type=OptimWrapper, optimizer=SGD, clip_grad=dict(max_norm=35)),
    dict(optimizer=SGD, clip_grad=dict(max_norm=35)),
], ids=['str', 'class', 'no-type'])
def test_plain_wrapper_becomes_guarded(wrapper):
    cfg = _cfg(optim_wrapper=copy.deepcopy(wrapper))
    lines = declare_run_components(cfg)
    assert dict(cfg.optim_wrapper) == dict(
        type='GuardedOptimWrapper', optimizer=SGD,
        clip_grad=dict(max_norm=35))
    assert _keys(lines).count('optim_wrapper') == 1


@pytest.mark.parametrize('wrapper', [
    dict(type='OptimWrapper', optimizer=SGD,
         constructor='LearningRateDecayOptimizerConstructor'),
    dict(optimizer=SGD, constructor='MyConstructor'),
    dict(type='GuardedOptimWrapper', optimizer=SGD),
    dict(type='GuardedAmpOptimWrapper', optimizer=SGD),
], ids=['constructor', 'constructor-no-type', 'already-guarded',
        'amp-already-guarded'])
def test_other_wrappers_stay(wrapper):
    cfg = _cfg(optim_wrapper=copy.deepcopy(wrapper))
    lines = declare_run_components(cfg)
    assert dict(cfg.optim_wrapper) == wrapper
    assert 'optim_wrapper' not in _keys(lines)


# ----------------------------------------------------------------- hooks
def test_checkpoint_hook_becomes_atomic_keeping_its_args():
    cfg = _cfg(default_hooks=dict(
        checkpoint=dict(type='CheckpointHook', interval=2, max_keep_ckpts=3,
                        save_best='auto', by_epoch=False),
        logger=dict(type='LoggerHook', interval=50)))
    lines = declare_run_components(cfg)
    assert dict(cfg.default_hooks['checkpoint']) == dict(
        type='AtomicCheckpointHook', interval=2, max_keep_ckpts=3,
        save_best='auto', by_epoch=False)
    assert dict(cfg.default_hooks['logger']) == dict(type='LoggerHook',
                                                     interval=50)
    assert _keys(lines).count('default_hooks.checkpoint') == 1


def test_checkpoint_hook_in_custom_hooks_becomes_atomic():
    cfg = _cfg(
        default_hooks=dict(checkpoint=dict(type='AtomicCheckpointHook',
                                           interval=1)),
        custom_hooks=[
            dict(type='EMAHook', momentum=0.0002),
            dict(type='CheckpointHook', interval=500, by_epoch=False,
                 max_keep_ckpts=2),
        ])
    lines = declare_run_components(cfg)
    assert [dict(h) for h in cfg.custom_hooks] == [
        dict(type='EMAHook', momentum=0.0002),
        dict(type='AtomicCheckpointHook', interval=500, by_epoch=False,
             max_keep_ckpts=2)
    ]
    assert dict(cfg.default_hooks['checkpoint']) == dict(
        type='AtomicCheckpointHook', interval=1)
    keys = _keys(lines)
    assert keys.count('custom_hooks[1]') == 1
    assert 'custom_hooks[0]' not in keys
    assert 'default_hooks.checkpoint' not in keys


@pytest.mark.parametrize('default_hooks', [None, {}, 'absent'])
def test_missing_checkpoint_hook_is_atomic_interval_1(default_hooks):
    parts = {} if default_hooks == 'absent' else dict(
        default_hooks=default_hooks)
    cfg = _cfg(**parts)
    lines = declare_run_components(cfg)
    assert dict(cfg.default_hooks['checkpoint']) == dict(
        type='AtomicCheckpointHook', interval=1)
    assert _keys(lines).count('default_hooks.checkpoint') == 1


def test_checkpoint_none_stays_none():
    cfg = _cfg(default_hooks=dict(checkpoint=None))
    lines = declare_run_components(cfg)
    assert cfg.default_hooks['checkpoint'] is None
    assert 'default_hooks.checkpoint' not in _keys(lines)


def test_nonfinite_guard_added_when_not_declared():
    cfg = _cfg(default_hooks=dict(
        checkpoint=dict(type='AtomicCheckpointHook', interval=1)))
    lines = declare_run_components(cfg)
    assert dict(cfg.default_hooks['nonfinite_guard']) == dict(
        type='NonFiniteGuardHook')
    assert _keys(lines) == ['default_hooks.nonfinite_guard']


@pytest.mark.parametrize('where', ['default_hooks', 'custom_hooks'])
def test_nonfinite_guard_declared_anywhere_is_not_added(where):
    guard = dict(type='NonFiniteGuardHook', max_total=5)
    hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', interval=1))
    parts = dict(default_hooks=hooks)
    if where == 'default_hooks':
        hooks['my_guard'] = guard  # under another key than ours
    else:
        parts['custom_hooks'] = [guard]
    cfg = _cfg(**copy.deepcopy(parts))
    lines = declare_run_components(cfg)
    assert 'nonfinite_guard' not in cfg.default_hooks
    assert lines == []
    assert cfg.to_dict() == parts  # nothing written


@pytest.mark.parametrize('kind', ['FeatureDistiller', FeatureDistiller],
                         ids=['str', 'class'])
def test_export_student_added_for_a_distiller(kind):
    cfg = _cfg(model=dict(type=kind),
               default_hooks=copy.deepcopy(DECLARED_HOOKS))
    del cfg.default_hooks['export_student']
    lines = declare_run_components(cfg)
    assert dict(cfg.default_hooks['export_student']) == dict(
        type='ExportStudentHook')
    assert _keys(lines) == ['default_hooks.export_student']


@pytest.mark.parametrize('model', [
    dict(type='RetinaNet'), dict(type='NoSuchModel'), None
], ids=['detector', 'unknown', 'no-model'])
def test_export_student_not_added_for_other_models(model):
    parts = dict(default_hooks=copy.deepcopy(DECLARED_HOOKS))
    del parts['default_hooks']['export_student']
    if model is not None:
        parts['model'] = model
    cfg = _cfg(**parts)
    lines = declare_run_components(cfg)
    assert 'export_student' not in cfg.default_hooks
    assert lines == []


def test_export_student_declared_in_custom_hooks_is_not_added():
    hooks = copy.deepcopy(DECLARED_HOOKS)
    del hooks['export_student']
    cfg = _cfg(model=dict(type='FeatureDistiller'), default_hooks=hooks,
               custom_hooks=[dict(type='ExportStudentHook')])
    assert declare_run_components(cfg) == []
    assert 'export_student' not in cfg.default_hooks


# ----------------------------------------------------------------- lines
def test_bare_config_gets_everything_one_line_per_key():
    cfg = _cfg(model=dict(type='FeatureDistiller'),
               train_cfg=dict(type='EpochBasedTrainLoop', max_epochs=12),
               optim_wrapper=dict(optimizer=SGD),
               custom_hooks=[dict(type='CheckpointHook', interval=3)])
    lines = declare_run_components(cfg)
    assert sorted(_keys(lines)) == sorted([
        'train_cfg', 'optim_wrapper', 'default_hooks.checkpoint',
        'custom_hooks[0]', 'default_hooks.nonfinite_guard',
        'default_hooks.export_student'
    ])
    assert cfg.train_cfg['type'] == 'ExactResumeEpochBasedTrainLoop'
    assert cfg.optim_wrapper['type'] == 'GuardedOptimWrapper'
    assert cfg.default_hooks['checkpoint']['type'] == 'AtomicCheckpointHook'
    assert cfg.custom_hooks[0]['type'] == 'AtomicCheckpointHook'
    assert cfg.default_hooks['nonfinite_guard']['type'] == \
        'NonFiniteGuardHook'
    assert cfg.default_hooks['export_student']['type'] == \
        'ExportStudentHook'
    # each line tells how to declare what it wrote
    for line in lines:
        key = line.split(': ', 1)[0]
        assert f"declare {key}.type='" in line
    # what was written is declared now: a second call writes nothing
    assert declare_run_components(cfg) == []


def test_fully_declared_config_returns_nothing_and_is_unchanged():
    cfg = _full(custom_hooks=[dict(type='EMAHook')])
    before = copy.deepcopy(cfg.to_dict())
    assert declare_run_components(cfg) == []
    assert cfg.to_dict() == before


def test_model_differences_names_each_differing_leaf():
    from pcka_det.engine.runner import model_differences
    saved = dict(type='FeatureDistiller', teacher_ckpt='a.pth',
                 distill_losses=dict(p3=dict(loss=dict(
                     type='PatchCKALoss', intra_weight=10.0)),
                     p4=dict(loss=dict(type='PatchCKALoss'))),
                 log_alignment_interval=0)
    same = dict(saved, log_alignment_interval=50)  # not part of the run
    assert model_differences(saved, same) == []
    other = dict(saved, teacher_ckpt='b.pth', distill_losses=dict(
        p3=dict(loss=dict(type='PatchCKALoss', intra_weight=1.0)),
        p5=dict(loss=dict(type='PatchCKALoss'))))
    assert model_differences(saved, other) == [
        "model.distill_losses.p3.loss.intra_weight: 10.0 there, 1.0 here",
        'model.distill_losses.p4: set there, unset here',
        'model.distill_losses.p5: unset there, set here',
        "model.teacher_ckpt: 'a.pth' there, 'b.pth' here"]
    # a plain detector: its whole model config
    assert model_differences(dict(type='RetinaNet', bbox_head=dict(
        num_classes=80)), dict(type='RetinaNet', bbox_head=dict(
            num_classes=6))) == [
        'model.bbox_head.num_classes: 80 there, 6 here']


@pytest.mark.parametrize('kind', ['AmpOptimWrapper', AmpOptimWrapper],
                         ids=['str', 'class'])
def test_amp_wrapper_is_guarded(kind):
    cfg = _cfg(optim_wrapper=dict(type=kind, loss_scale='dynamic',
                                  optimizer=SGD))
    lines = declare_run_components(cfg)
    assert cfg.optim_wrapper.type == 'GuardedAmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert any(line.startswith('optim_wrapper: AmpOptimWrapper -> '
                               'GuardedAmpOptimWrapper') for line in lines)
