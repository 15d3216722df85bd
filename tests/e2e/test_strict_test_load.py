"""``tools/test.py`` (``pcka_det.test``) loads strictly: a checkpoint with a
re-sized head (another class count) is refused, where ``load_from``
fine-tuning tolerates it (tests/unit/test_checkpoint_loading.py)."""
import os.path as osp

import pytest
import torch
from conftest import ROOT, toy_options

from pcka_det.models import build_detector
from pcka_det import test as pcka_test

STUDENT_CFG = osp.join(ROOT, 'configs', 'toy', 'retinanet_thin-r18_toy.py')


def _test(tmp_path, tiny_coco, ckpt):
    opts = toy_options(tiny_coco, None)
    opts = {k: v for k, v in opts.items() if not k.startswith('model.')}
    return pcka_test.main([STUDENT_CFG, str(ckpt), '--work-dir',
                      str(tmp_path / 'work'), '--cfg-options',
                      *[f'{k}={v}' for k, v in opts.items()]])


@pytest.fixture
def student_state():
    torch.manual_seed(0)
    model = build_detector(dict(cfg_path=STUDENT_CFG))
    model.init_weights()
    return model.state_dict()


def test_checkpoint_of_another_class_count_is_refused(tmp_path, tiny_coco,
                                                      student_state):
    state = dict(student_state)  # COCO's 80 classes, 9 anchors
    state['bbox_head.retina_cls.weight'] = torch.zeros(9 * 80, 128, 3, 3)
    state['bbox_head.retina_cls.bias'] = torch.zeros(9 * 80)
    path = tmp_path / 'coco80.pth'
    torch.save(dict(meta={}, state_dict=state), path)
    with pytest.raises(RuntimeError, match='a test loads strictly') as e:
        _test(tmp_path, tiny_coco, path)
    assert 'bbox_head.retina_cls.weight' in str(e.value)


def test_matching_checkpoint_is_tested(tmp_path, tiny_coco, student_state):
    path = tmp_path / 'student.pth'
    torch.save(dict(meta={}, state_dict=student_state), path)
    _test(tmp_path, tiny_coco, path)  # no error
