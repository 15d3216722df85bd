"""``--resume`` refuses a checkpoint saved by another run (rule
"resume-same-run"): the PCKA config resumed in a finished PKD work dir used
to exit 0 in seconds with the PKD student as ``student_last.pth``."""
import glob
import os.path as osp

import pytest
import torch
from conftest import ROOT, TOY_DISTILL, toy_options

from pcka_det.options import OptionError
from pcka_det.train import main as train_main

PKD = osp.join(ROOT, 'configs', 'toy', 'pkd_retinanet_r18_thin-r18_toy.py')


def _train(config, work, tiny_coco, teacher, *extra, **opts):
    opts = toy_options(tiny_coco, teacher, **opts)
    train_main([str(config), '--work-dir', str(work), *extra,
                '--cfg-options'] + [f'{k}={v}' for k, v in opts.items()])


def _log(work):
    """The newest run's log in ``work``."""
    return open(sorted(glob.glob(str(work / '*' / '*.log')))[-1]).read()


@pytest.fixture(scope='module')
def pkd_work(tmp_path_factory, tiny_coco, toy_teacher_ckpt):
    """A finished PKD run (1 epoch)."""
    work = tmp_path_factory.mktemp('pkd')
    _train(PKD, work, tiny_coco, toy_teacher_ckpt)
    return work


def test_another_methods_work_dir_is_refused(pkd_work, tiny_coco,
                                             toy_teacher_ckpt):
    student = (pkd_work / 'student_last.pth').read_bytes()
    with pytest.raises(OptionError) as e:
        _train(TOY_DISTILL, pkd_work, tiny_coco, toy_teacher_ckpt,
               '--resume')
    msg = str(e.value)
    assert f'Cannot resume from {pkd_work / "epoch_1.pth"}' in msg
    assert 'rule "resume-same-run"' in msg
    # the differing keys: another set of levels
    assert 'model.distill_losses.pcka_p3: unset there, set here' in msg
    assert 'model.distill_losses.pkd_p3: set there, unset here' in msg
    assert 'resume_override=True' in msg
    # nothing of the finished run was touched
    assert (pkd_work / 'student_last.pth').read_bytes() == student


def test_override_and_a_checkpoint_without_config(pkd_work, tmp_path,
                                                  tiny_coco,
                                                  toy_teacher_ckpt):
    ckpt = str(pkd_work / 'epoch_1.pth')
    work = tmp_path / 'on_purpose'
    _train(TOY_DISTILL, work, tiny_coco, toy_teacher_ckpt, '--resume', ckpt,
           resume_override=True)
    log = _log(work)
    assert f'Resuming from {ckpt}, saved by another run, on purpose ' \
        '(resume_override=True): model.distill_losses.' in log
    # a checkpoint without the saved config cannot be checked: a warning
    bare = torch.load(ckpt, map_location='cpu', weights_only=False)
    del bare['meta']['cfg']
    torch.save(bare, tmp_path / 'bare.pth')
    work = tmp_path / 'bare_resume'
    _train(TOY_DISTILL, work, tiny_coco, toy_teacher_ckpt, '--resume',
           str(tmp_path / 'bare.pth'))
    assert f'{tmp_path / "bare.pth"} holds no saved config' in _log(work)
