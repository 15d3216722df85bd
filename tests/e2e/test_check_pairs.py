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
