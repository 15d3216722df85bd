"""A total batch other than the recipe's ``auto_scale_lr.base_batch_size``
with ``auto_scale_lr`` off (yzd-v/FGD#52 lost 1.2 AP this way) is named, with
both numbers and the fix: in the run's log from the real world size, and in
``check`` from ``--gpus``."""
import glob

from conftest import TOY_DISTILL, toy_options

from pcka_det.check import WARN, run_check
from pcka_det.train import main as train_main


def test_run_log_names_the_unscaled_batch(tmp_path, tiny_coco,
                                          toy_teacher_ckpt):
    # the toy recipe: base_batch_size 8; this run: 2 per GPU x 1 GPU
    opts = toy_options(tiny_coco, toy_teacher_ckpt)
    train_main([TOY_DISTILL, '--work-dir', str(tmp_path / 'work'),
                '--cfg-options'] + [f'{k}={v}' for k, v in opts.items()])
    log = open(glob.glob(str(tmp_path / 'work' / '*' / '*.log'))[0]).read()
    assert 'the total batch is 2 (2 per GPU x 1 GPU)' in log
    assert 'base_batch_size 8' in log and 'lr x 0.25' in log


def test_run_log_is_quiet_when_scaled(tmp_path, tiny_coco, toy_teacher_ckpt):
    opts = toy_options(tiny_coco, toy_teacher_ckpt)
    train_main([TOY_DISTILL, '--work-dir', str(tmp_path / 'work'),
                '--auto-scale-lr', '--cfg-options']
               + [f'{k}={v}' for k, v in opts.items()])
    log = open(glob.glob(str(tmp_path / 'work' / '*' / '*.log'))[0]).read()
    assert 'the total batch is' not in log


def _lr_verdict(tiny_coco, teacher, gpus):
    report = run_check(TOY_DISTILL, toy_options(tiny_coco, teacher),
                       num_images=0, iters=0, gpus=gpus, device='cpu')
    return {v['check']: v for v in report['verdicts']}.get('recipe lr')


def test_check_warns_from_gpus(tiny_coco, toy_teacher_ckpt):
    found = _lr_verdict(tiny_coco, toy_teacher_ckpt, gpus=2)  # 2 x 2 = 4
    assert found['status'] == WARN
    assert 'the total batch is 4 (2 per GPU x 2 GPUs)' in found['message']
    assert '--auto-scale-lr' in found['message']
    assert _lr_verdict(tiny_coco, toy_teacher_ckpt, gpus=4) is None  # 8
