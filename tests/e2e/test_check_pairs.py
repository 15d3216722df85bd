"""``pcka_det.check`` on pairs that train but cannot gain: a teacher smaller
than its student (swapped configs), and self-distillation (same network,
same weights), which check no longer advises to fix by raising a weight."""
import pytest
import torch
from conftest import TOY_DISTILL, toy_options

from pcka_det.check import FAIL, WARN, run_check
from pcka_det.models import build_detector

THIN = 'pcka_det::toy/retinanet_thin-r18_toy.py'
R18 = 'pcka_det::toy/retinanet_r18_toy.py'


def _verdicts(report):
    return {v['check']: v for v in report['verdicts']}


def test_swapped_pair_warns(tiny_coco, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / 'thin.pth'
    torch.save(dict(state_dict=build_detector(dict(
        cfg_path=THIN)).state_dict()), path)
    opts = toy_options(tiny_coco, path, **{
        'model.teacher.cfg_path': THIN, 'model.student.cfg_path': R18})
    found = _verdicts(run_check(TOY_DISTILL, opts, num_images=0, iters=0,
                                device='cpu'))
    assert found['teacher size']['status'] == WARN
    assert 'swapped' in found['teacher size']['message']


@pytest.fixture
def self_distillation(tiny_coco, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / 'thin.pth'
    torch.save(dict(state_dict=build_detector(dict(
        cfg_path=THIN)).state_dict()), path)
    return toy_options(tiny_coco, path, **{
        'model.teacher.cfg_path': THIN, 'model.student_ckpt': str(path)})


def test_self_distillation_is_named_not_given_a_weight(self_distillation):
    found = _verdicts(run_check(TOY_DISTILL, self_distillation,
                                num_images=0, iters=0, device='cpu'))
    assert found['step self-distillation']['status'] == WARN
    assert 'teacher size' not in found  # same size
    # no "raise it" per level: the loss is 0 by construction
    assert not [v for k, v in found.items() if k.startswith('step pcka')
                and v['status'] == FAIL]


def test_new_config_warns_on_a_swapped_pair(tmp_path, capsys):
    from pcka_det.new_config import main as new_config_main
    out = tmp_path / 'swapped.py'
    assert new_config_main(['--teacher', THIN, '--teacher-ckpt', 't.pth',
                            '--student', R18, '-o', str(out)]) == 0
    err = capsys.readouterr().err
    assert 'WARN: the teacher has' in err
    assert 'are teacher and student swapped? ' in err
    assert '(--teacher / --student)' in err
    assert '# WARN: the teacher has' in out.read_text()
    # the right way round: no warning
    assert new_config_main(['--teacher', R18, '--teacher-ckpt', 't.pth',
                            '--student', THIN, '-o', str(out),
                            '--force']) == 0
    assert 'WARN' not in capsys.readouterr().err
    assert 'WARN' not in out.read_text()


def test_run_log_names_a_swapped_pair(tmp_path):
    from mmengine.logging import MMLogger

    from conftest import load_distill_cfg
    from mmdet.registry import MODELS
    log = tmp_path / 'run.log'
    MMLogger.get_instance('swapped_pair_run', log_file=str(log))
    cfg = load_distill_cfg(TOY_DISTILL)
    cfg.model.teacher.cfg_path, cfg.model.student.cfg_path = THIN, R18
    MODELS.build(cfg.model)
    text = log.read_text()
    assert 'Teacher size: the teacher has' in text
    assert '(model.teacher / model.student)' in text
