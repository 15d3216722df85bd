"""What runs is declared: every distillation config we ship names its loop,
optimizer wrapper, checkpoint hook and our hooks; a config that does not
(a user's own) gets them written in by ``DistillRunner`` with one log line
each, and the config dumped into the work dir names what ran."""
import glob
import os.path as osp

import pytest
from conftest import ROOT, toy_options
from mmengine.config import Config

from pcka_det.engine.runner import declare_run_components
from pcka_det.train import main as train_main

DISTILL_CONFIGS = sorted(
    glob.glob(osp.join(ROOT, 'configs', 'pcka', '*.py'))
    + glob.glob(osp.join(ROOT, 'configs', 'baselines', '*.py'))
    + glob.glob(osp.join(ROOT, 'configs', 'crosskd', '*.py'))
    + [p for p in glob.glob(osp.join(ROOT, 'configs', 'toy', '*.py'))
       if osp.basename(p).startswith(('pcka_', 'pkd_', 'cwd_', 'fitnet_',
                                      'crosskd_'))])
DECLARED = dict(loop='ExactResumeEpochBasedTrainLoop',
                wrapper='GuardedOptimWrapper',
                checkpoint='AtomicCheckpointHook',
                nonfinite_guard='NonFiniteGuardHook',
                export_student='ExportStudentHook')


def _declared(cfg) -> dict:
    hooks = cfg.default_hooks
    return dict(loop=cfg.train_cfg.type, wrapper=cfg.optim_wrapper.type,
                checkpoint=hooks.checkpoint.type,
                nonfinite_guard=hooks.nonfinite_guard.type,
                export_student=hooks.export_student.type)


def test_configs_found():
    names = {osp.basename(p) for p in DISTILL_CONFIGS}
    assert {'retina_r101_r50.py', 'rtmdet_l_s.py', 'pkd_retina_x101_r50.py',
            'pcka_retinanet_r18_thin-r18_toy.py',
            'cwd_retinanet_r18_thin-r18_toy.py'} <= names
    assert len(DISTILL_CONFIGS) >= 20


@pytest.mark.parametrize('path', DISTILL_CONFIGS,
                         ids=lambda p: osp.relpath(p, ROOT))
def test_shipped_configs_declare_what_runs(path):
    cfg = Config.fromfile(path)
    assert _declared(cfg) == DECLARED
    # nothing left for the runner to write in
    assert declare_run_components(cfg) == []


USER_CONFIG = """_base_ = [
    'pcka_det::toy/retinanet_thin-r18_toy.py',
    'pcka_det::_base_/distill_runtime.py',
]
model = dict(
    _delete_=True,
    type='FeatureDistiller',
    student=dict(cfg_path='pcka_det::toy/retinanet_thin-r18_toy.py'),
    teacher=dict(cfg_path='pcka_det::toy/retinanet_r18_toy.py'),
    distill_losses=dict(pcka_p3=dict(
        index=0, loss=dict(type='PatchCKALoss', patch_size=4))))
"""


def _run(tmp_path, config, data_root, teacher):
    work = tmp_path / 'work'
    opts = toy_options(data_root, teacher, **{'train_cfg.max_epochs': 1})
    argv = [str(config), '--work-dir', str(work), '--cfg-options']
    train_main(argv + [f'{k}={v}' for k, v in opts.items()])
    dumped = Config.fromfile(str(work / osp.basename(str(config))))
    log = open(glob.glob(str(work / '*' / '*.log'))[0]).read()
    assert (work / 'student_last.pth').is_file()
    return dumped, log


def test_undeclared_config_gets_them_logged_and_dumped(tmp_path, tiny_coco,
                                                       toy_teacher_ckpt):
    config = tmp_path / 'my_distill.py'
    config.write_text(USER_CONFIG)
    assert declare_run_components(Config.fromfile(str(config)))  # not yet
    dumped, log = _run(tmp_path, config, tiny_coco, toy_teacher_ckpt)
    assert _declared(dumped) == DECLARED
    swaps = [line.split('DistillRunner: ', 1)[1] for line in log.splitlines()
             if 'DistillRunner: ' in line]
    assert [s.split(':')[0] for s in swaps] == [
        'train_cfg', 'optim_wrapper', 'default_hooks.checkpoint',
        'default_hooks.nonfinite_guard', 'default_hooks.export_student']
    assert 'EpochBasedTrainLoop -> ExactResumeEpochBasedTrainLoop' in swaps[0]


def test_declared_config_runs_as_declared(tmp_path, tiny_coco,
                                          toy_teacher_ckpt):
    config = osp.join(ROOT, 'configs/toy/pcka_retinanet_r18_thin-r18_toy.py')
    dumped, log = _run(tmp_path, config, tiny_coco, toy_teacher_ckpt)
    assert _declared(dumped) == DECLARED
    assert 'DistillRunner: ' not in log  # nothing written in


def test_plain_student_config_gets_no_export_hook():
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/toy/retinanet_thin-r18_toy.py'))
    lines = declare_run_components(cfg)
    assert 'export_student' not in cfg.default_hooks
    assert cfg.default_hooks.nonfinite_guard.type == 'NonFiniteGuardHook'
    assert len(lines) == 4
