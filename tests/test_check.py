"""``python -m pcka_det.check``: each verdict on the run it is meant to
stop, and a clean report on a sound one.

The toy PCKA config on a few synthetic images, as a user would point it at
their data (``--cfg-options``); the report is read from ``run_check``
(in-process, to keep the suite fast) or, once, from the real command's
JSON and exit status.
"""
import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TOY_DISTILL, toy_options

from pcka_det.check import FAIL, OK, RATIO_BAND, render, run_check
from pcka_det.evaluation import box_recall
from pcka_det.models import head_num_classes

TOY_TEACHER = 'pcka_det::toy/retinanet_r18_toy.py'


def check(data_root, teacher_ckpt, config=TOY_DISTILL, num_images=4,
          iters=0, **extra):
    opts = toy_options(data_root, teacher_ckpt, **extra)
    if teacher_ckpt is None:
        opts['model.teacher_ckpt'] = None
    return run_check(config, opts, num_images=num_images, iters=iters,
                     device='cpu')


def verdicts(report, status=FAIL):
    return {v['check']: v['message'] for v in report['verdicts']
            if v['status'] == status}


def test_box_recall_counts_objects_found_by_class_and_any_class():
    gt = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.],
                       [50., 50., 60., 60.]])
    gt_labels = torch.tensor([0, 1, 2])
    # object 0 found with its class (IoU 0.81), object 1 by a box of
    # another class, object 2 only at IoU 0.25
    boxes = torch.tensor([[0., 0., 9., 9.], [20., 20., 30., 30.],
                          [50., 50., 55., 55.]])
    labels = torch.tensor([0, 0, 2])
    assert box_recall(gt, gt_labels, boxes, labels) == dict(
        objects=3, found=1, found_any_class=2)
    assert box_recall(gt, gt_labels, boxes[:0], labels[:0]) == dict(
        objects=3, found=0, found_any_class=0)


def test_random_teacher_fails_and_the_report_is_complete(tiny_coco,
                                                         toy_teacher_ckpt):
    report = check(tiny_coco, toy_teacher_ckpt, iters=1)
    failed = verdicts(report)
    assert list(failed) == ['teacher'], report['verdicts']
    assert 'not a trained detector' in failed['teacher']
    assert report['evaluation']['teacher']['recall'] == 0
    assert report['evaluation']['teacher']['objects'] > 0
    # the rest of the run is sound, and every section is there
    assert {'levels', 'step'} <= set(verdicts(report, OK))
    assert [lv['name'] for lv in report['levels']] == [
        'pcka_p3', 'pcka_p4', 'pcka_p5', 'pcka_p6']
    assert report['levels'][0]['teacher'] == (1, 128, 24, 24)
    assert report['levels'][0]['patches'] == 36
    step = {row['name']: row for row in report['step']}
    assert step['detection']['loss'] > 0
    assert step['all distillation']['loss'] == pytest.approx(sum(
        step[f'pcka_p{i}']['loss'] for i in range(3, 7)))
    for name in ('pcka_p3', 'pcka_p6'):
        assert RATIO_BAND[0] < step[name]['ratio'] < RATIO_BAND[1]
        assert step[name]['grad'] > 0
    cost = report['cost']
    assert set(cost['rows']) == {'student alone', 'distiller',
                                 'teacher forward'}
    assert cost['rows']['distiller']['seconds'] > 0
    # 8 images, batch 2, 4 GPUs from auto_scale_lr (8 / 2), 1 epoch
    assert report['recipe']['iterations'] == 1
    text = render(report)
    for word in ('Recipe', 'pcka_p6', 'teacher forward', 'FAILED'):
        assert word in text


def test_teacher_for_another_class_count_fails(tiny_coco):
    report = check(tiny_coco, None, **{
        'model.teacher.bbox_head.num_classes': 3})
    assert 'predict [3] classes, the dataset has 6' in \
        verdicts(report)['teacher classes']


def test_teacher_checkpoint_of_other_classes_fails(tiny_coco, tmp_path,
                                                   toy_teacher_ckpt):
    ckpt = torch.load(toy_teacher_ckpt, weights_only=False)
    names = ['circle', 'square', 'triangle', 'cross', 'star', 'ring']
    ckpt['meta'] = dict(dataset_meta=dict(classes=names))
    torch.save(ckpt, tmp_path / 'other.pth')
    message = verdicts(check(tiny_coco, tmp_path / 'other.pth'))[
        'teacher classes']
    assert "(4, 'star', 'ring')" in message and 'metainfo.classes' in message


def test_single_patch_level_fails(tiny_coco, toy_teacher_ckpt):
    # P4 of the 192x192 images is 12x12: one 16-cell patch
    report = check(tiny_coco, toy_teacher_ckpt, **{
        'model.distill_losses.pcka_p4.loss.patch_size': 16})
    assert 'single patch' in verdicts(report)['levels']
    assert 'step' not in report  # nothing trained on a broken pairing


def test_shifted_level_fails(tiny_coco):
    # a teacher whose FPN starts one level later: P4 paired with P3
    report = check(tiny_coco, None, **{
        'model.teacher.neck.start_level': 2})
    assert 'same spatial size' in verdicts(report)['levels']


def test_zero_weight_level_fails(tiny_coco, toy_teacher_ckpt):
    report = check(tiny_coco, toy_teacher_ckpt, num_images=0, **{
        'model.distill_losses.pcka_p5.loss.intra_weight': 0.})
    failed = verdicts(report)
    assert 'loss is 0' in failed['step pcka_p5']
    assert 'step pcka_p4' not in failed


def test_exploding_ratio_fails_in_a_config_inheriting_ours(
        tiny_coco, toy_teacher_ckpt, tmp_path):
    config = tmp_path / 'my_distill.py'
    config.write_text(f'_base_ = {TOY_DISTILL!r}\n'
                      'model = dict(distill_losses=dict(pcka_p3=dict('
                      'loss=dict(intra_weight=500.))))\n')
    report = check(tiny_coco, toy_teacher_ckpt, config=str(config),
                   num_images=0)
    message = verdicts(report)['step pcka_p3']
    assert 'drowns the detection loss' in message
    assert 'model.distill_losses.pcka_p3.loss.intra_weight' in message
    assert 'step pcka_p4' not in verdicts(report)


def test_nonfinite_level_fails_as_nonfinite(tiny_coco, toy_teacher_ckpt,
                                            monkeypatch):
    """A NaN level (zeroed by nonfinite='skip' before the report sees it)
    is reported as NaN, not as a level at 0."""
    from pcka_det.losses import PatchCKALoss
    forward = PatchCKALoss.forward

    def nan_on_p6(self, student, teacher):
        value = forward(self, student, teacher)
        return value * float('nan') if student.shape[-1] == 3 else value

    monkeypatch.setattr(PatchCKALoss, 'forward', nan_on_p6)
    failed = verdicts(check(tiny_coco, toy_teacher_ckpt, num_images=0))
    assert 'NaN/Inf' in failed['step pcka_p6']
    assert 'step pcka_p5' not in failed


def test_teacher_receiving_gradient_fails(tiny_coco, toy_teacher_ckpt,
                                          monkeypatch):
    """A distiller that let gradient into its teacher (trained, or its
    activations kept, every step) is caught by the step check."""
    from pcka_det.models import FeatureDistiller

    def leaky(self, inputs, data_samples=None, with_head=False):
        self.teacher.requires_grad_(True)
        return self.teacher.extract_feat(inputs)

    monkeypatch.setattr(FeatureDistiller, 'teacher_features', leaky)
    report = check(tiny_coco, toy_teacher_ckpt, num_images=0)
    assert 'received gradient' in verdicts(report)['step teacher']


def test_plain_detector_config_is_checked_too(tiny_coco):
    opts = toy_options(tiny_coco, None)
    opts = {k: v for k, v in opts.items() if not k.startswith('model.')}
    report = run_check('configs/toy/retinanet_thin-r18_toy.py', opts,
                       num_images=2, iters=1, device='cpu')
    assert 'teacher' not in report['evaluation']
    assert set(report['cost']['rows']) == {'student alone'}
    assert not verdicts(report)


def test_head_num_classes_skips_the_rpn():
    from pcka_det.models import build_detector
    detector = build_detector(dict(cfg_path='pcka_det::toy/'
                                   'faster_rcnn_r18_toy.py'))
    assert head_num_classes(detector) == [6]


@pytest.mark.slow
def test_command_exit_status_and_json(tiny_coco, toy_teacher_ckpt,
                                      tmp_path):
    """The real command: table on stdout, JSON, exit 1 on a failure, and
    nothing written into the config's work dir."""
    opts = toy_options(tiny_coco, toy_teacher_ckpt)
    out = tmp_path / 'report.json'
    work = tmp_path / 'work'
    run = subprocess.run(
        [sys.executable, 'tools/check.py', TOY_DISTILL, '--num-images',
         '2', '--iters', '0', '--out', str(out), '--cfg-options',
         f'work_dir={work}'] + [f'{k}={v}' for k, v in opts.items()],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout + run.stderr
    assert 'FAIL  teacher' in run.stdout
    report = json.loads(out.read_text())
    assert [v['check'] for v in report['verdicts']
            if v['status'] == FAIL] == ['teacher']
    assert not work.exists()


def test_training_scale_through_dataset_wrappers():
    """The pre-flight size (used by the runner, check and new_config)
    reads the pipelines inside RepeatDataset and ConcatDataset; without
    any size it says mmdet's COCO scale is assumed."""
    from mmengine.config import Config

    from pcka_det.datasets import training_scale

    def cfg(dataset):
        return Config(dict(train_dataloader=dict(dataset=dataset)))

    small = dict(pipeline=[dict(type='Resize', scale=(192, 192))])
    large = dict(pipeline=[dict(type='Resize', scale=(1333, 800))])
    assert training_scale(cfg(dict(type='RepeatDataset', times=3,
                                   dataset=small)))[0] == (192, 192)
    assert training_scale(cfg(dict(type='ConcatDataset',
                                   datasets=[large, small])))[0] == (192, 192)
    size, source = training_scale(cfg(dict(pipeline=[])))
    assert size == (800, 1333) and 'assumed' in source


def test_misspelled_hook_fails_before_anything_is_built(tiny_coco,
                                                        toy_teacher_ckpt,
                                                        tmp_path):
    config = tmp_path / 'my_distill.py'
    config.write_text(f'_base_ = {TOY_DISTILL!r}\n'
                      "custom_hooks = [dict(type='EMAHok')]\n")
    report = check(tiny_coco, toy_teacher_ckpt, config=str(config))
    assert 'EMAHok' in verdicts(report)['config']
    assert 'recipe' not in report
