"""README "Distil your own detector", step by step, as a user runs it.

In a fresh project folder (not the checkout): a COCO-format dataset with
its own class names, a teacher trained with plain mmdet, ``new_config``
for a student whose neck is half the teacher's width, ``check``, the
distillation, and the exported student tested with the student's plain
mmdet config. The same commands as the README, on 8 images and a few
steps, each through its module's ``main`` in the user's folder.
"""
import importlib
import json
import os.path as osp
import runpy
import shutil
import sys

import pytest
from conftest import ROOT

CLASSES = ['nut', 'washer', 'bracket', 'hinge', 'gasket', 'spring']
# The teacher's training in the test: enough steps on 8 images (the
# validation images are the training images) for the teacher to find
# objects again, so that the check's teacher verdict is a real pass.
TEACHER_OPTIONS = [
    'train_cfg.max_epochs=15', 'default_hooks.checkpoint.interval=15',
    'train_cfg.val_interval=100', 'train_dataloader.batch_size=4',
    'param_scheduler.0.end=5', 'default_hooks.logger.interval=10',
    "val_dataloader.dataset.ann_file=annotations/instances_train.json",
    "val_dataloader.dataset.data_prefix.img=train/",
    'val_evaluator.ann_file=data/parts/annotations/instances_train.json',
]
SHORT = ['train_cfg.max_epochs=1', 'default_hooks.checkpoint.interval=1',
         'train_dataloader.batch_size=4']


def run(command: str, args, capsys) -> str:
    """``python -m pcka_det.<command> ARGS`` (its ``main``, in-process to
    keep the suite fast: the module's ``__main__`` only calls it); what it
    printed and logged."""
    module = importlib.import_module(f'pcka_det.{command}')
    code = module.main(list(args))
    out = capsys.readouterr()
    assert not code, f'{command} {args}: exit {code}\n{out.out[-3000:]}'
    return out.out + out.err


@pytest.mark.slow
def test_distil_your_own_detector(tmp_path, monkeypatch, capsys):
    for name in ('parts_teacher.py', 'parts_student.py',
                 'parts_teacher_faster.py'):
        shutil.copy(osp.join(ROOT, 'docs', 'walkthrough', name), tmp_path)
    monkeypatch.chdir(tmp_path)  # the user's project folder
    # 1. the data: COCO format, its own class names
    monkeypatch.setattr(sys, 'argv', [
        'make_synthetic_coco.py', 'data/parts', '--num-train', '8',
        '--num-val', '4', '--class-names'] + CLASSES)
    runpy.run_path(osp.join(ROOT, 'tools', 'make_synthetic_coco.py'),
                   run_name='__main__')
    with open(tmp_path / 'data/parts/annotations/instances_val.json') as f:
        assert [c['name'] for c in json.load(f)['categories']] == CLASSES
    # 2. the teacher, plain mmdet
    run('train', ['parts_teacher.py', '--cfg-options'] + TEACHER_OPTIONS,
        capsys)
    teacher = 'work_dirs/parts_teacher/epoch_15.pth'
    assert (tmp_path / teacher).is_file()
    # 3. the distillation config
    out = run('new_config', [
        '--teacher', 'parts_teacher.py', '--teacher-ckpt', teacher,
        '--student', 'parts_student.py', '-o', 'parts_distill.py'], capsys)
    assert 'Wrote parts_distill.py: 4 levels' in out
    text = (tmp_path / 'parts_distill.py').read_text()
    assert text.count('in_channels=64, out_channels=128') == 4
    # 3b. a teacher of another family (Faster R-CNN, P2-P6) for the same
    # student (P3-P7): the levels are paired by stride, per side
    out = run('new_config', [
        '--teacher', 'parts_teacher_faster.py', '--teacher-ckpt', 'faster.pth',
        '--student', 'parts_student.py', '-o', 'parts_faster_distill.py'],
        capsys)
    assert 'Wrote parts_faster_distill.py: 4 levels (strides 8, 16, 32, ' \
        '64)' in out
    text = (tmp_path / 'parts_faster_distill.py').read_text()
    for level in range(4):
        assert f'index=dict(student={level}, teacher={level + 1})' in text
    assert text.count('in_channels=64, out_channels=128') == 4
    # 4. the pre-flight check passes
    out = run('check', ['parts_distill.py', '--num-images', '4', '--iters',
                        '1', '--out', 'check.json', '--cfg-options']
              + TEACHER_OPTIONS[-3:], capsys)
    report = json.loads((tmp_path / 'check.json').read_text())
    assert not [v for v in report['verdicts'] if v['status'] == 'FAIL'], \
        out
    assert report['evaluation']['teacher']['recall'] >= 0.05
    assert [lv['patches'] for lv in report['levels']] == [4, 4, 4, 4]
    # 5. the distillation, then the student in plain mmdet
    run('train', ['parts_distill.py', '--cfg-options'] + SHORT, capsys)
    student = 'work_dirs/parts_distill/student_last.pth'
    out = run('test', ['parts_student.py', student], capsys)
    # the exported student loads into its plain config (strictly) and runs
    # through the evaluation (after one epoch it detects nothing yet)
    assert 'Epoch(test) [1/1]' in out
