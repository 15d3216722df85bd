"""``python -m pcka_det.check``: each verdict on the run it is meant to
stop, and a clean report on a sound one.

The toy PCKA config on a few synthetic images, as a user would point it at
their data (``--cfg-options``); the report is read from ``run_check``
(in-process, to keep the suite fast) or, once, from the real command's
JSON and exit status.
"""
import json
import re
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TOY_DISTILL, toy_options

from pcka_det.check import FAIL, OK, RATIO_BAND, WARN, render, run_check
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


def statuses(report):
    """Every verdict as ``(check, status)``, in the report's order."""
    return [(v['check'], v['status']) for v in report['verdicts']]


def step_rows(report):
    return {row['name']: row for row in report['step']}


def printed_rows(text, title):
    """The lines of the printed table whose title starts with ``title``
    (its header first), as lists of cells (columns are 2+ spaces apart)."""
    block = text.split('\n' + title, 1)[1].split('\n\n', 1)[0]
    return [re.split(r' {2,}', line.strip())
            for line in block.splitlines()[1:]]


def printed_step(row):
    """A ``report['step']`` row as the table prints it."""
    return [row['name'], f'{row["loss"]:.4g}', f'{row["ratio"]:.3g}',
            f'{row["grad"]:.3g}', f'{row["grad_ratio"]:.3g}']


def val_objects(data_root):
    """Objects in the tiny dataset's validation annotations (4 images, all
    evaluated), counted from the file."""
    coco = json.loads((data_root / 'annotations' /
                       'instances_val.json').read_text())
    return sum(not a.get('iscrowd', 0) for a in coco['annotations'])


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
    # the random teacher is the one failure; the rest of the run is sound
    assert statuses(report) == [('levels', OK), ('teacher', FAIL),
                                ('step', OK)]
    teacher = report['evaluation']['teacher']
    assert teacher == dict(teacher, images=4, objects=val_objects(tiny_coco),
                           recall=0.0)
    assert verdicts(report)['teacher'].startswith(
        f'the teacher finds 0.0% of the {teacher["objects"]} objects in 4 '
        'validation images')
    assert 'not a trained detector' in verdicts(report)['teacher']
    assert set(report['evaluation']) == {'teacher',
                                         'student (initialisation)'}
    # 192 px: P3-P6 are 24, 12, 6 and 3 cells; patches of 4, 4, 4 (P5 is
    # resized up to 8x8: 2x2 patches) and 2 (3x3 -> 4x4: 2x2)
    assert [(lv['name'], tuple(lv['student']), tuple(lv['teacher']),
             lv['patch_size'], lv['patches'], lv['connector'])
            for lv in report['levels']] == [
        ('pcka_p3', (1, 128, 24, 24), (1, 128, 24, 24), 4, 36, None),
        ('pcka_p4', (1, 128, 12, 12), (1, 128, 12, 12), 4, 9, None),
        ('pcka_p5', (1, 128, 6, 6), (1, 128, 6, 6), 4, 4, None),
        ('pcka_p6', (1, 128, 3, 3), (1, 128, 3, 3), 2, 4, None)]
    assert report['training_scale']['size'] == [192, 192]
    # every ratio is its row's number over the detection row's
    step = step_rows(report)
    assert list(step) == ['detection', 'pcka_p3', 'pcka_p4', 'pcka_p5',
                          'pcka_p6', 'all distillation']
    det = step['detection']
    assert det['loss'] > 0 and det['grad'] > 0
    assert (det['ratio'], det['grad_ratio']) == (1.0, 1.0)
    assert step['all distillation']['loss'] == pytest.approx(sum(
        step[f'pcka_p{i}']['loss'] for i in range(3, 7)))
    for name, row in step.items():
        assert row['ratio'] == pytest.approx(row['loss'] / det['loss']), name
        assert row['grad_ratio'] == pytest.approx(
            row['grad'] / det['grad']), name
        if name.startswith('pcka_'):
            assert row['loss'] > 0 and row['grad'] > 0, name
            assert RATIO_BAND[0] < row['ratio'] < RATIO_BAND[1], name
    # 8 images, batch 2, 4 GPUs from auto_scale_lr (8 / 2), 1 epoch
    assert (report['recipe']['iterations'], report['recipe']['gpus']) == (
        1, 4)
    cost = report['cost']
    rows = {k: v['seconds'] for k, v in cost['rows'].items()}
    assert set(rows) == {'student alone', 'distiller', 'teacher forward'}
    assert all(v > 0 for v in rows.values())
    assert cost['overhead'] == pytest.approx(
        rows['distiller'] / rows['student alone'])
    assert cost['teacher_share'] == pytest.approx(
        rows['teacher forward'] / rows['distiller'])
    assert cost['projected_hours'] == pytest.approx(rows['distiller'] * 1 /
                                                    3600)
    # the printed table shows the report's numbers
    text = render(report)
    assert printed_rows(text, 'One training step')[1:] == [
        printed_step(row) for row in report['step']]  # after the header
    assert f'distiller / student {cost["overhead"]:.2f}x' in text
    assert printed_rows(text, 'Verdicts')[1:] == [
        [v['status'], v['check'], v['message']] for v in report['verdicts']]
    assert text.endswith('FAILED: 1 failed, 0 warnings')


def test_head_level_terms_in_the_tables(tiny_coco, toy_teacher_ckpt):
    """PCKA + CrossKD: the levels table has the head level's rows (its held
    features per FPN level), the step table a row per head term, their
    sum judged by the ratio band, and the gradient at the head convs."""
    config = f'{ROOT}/configs/toy/pcka_crosskd_retinanet_r18_thin-r18_toy.py'
    report = check(tiny_coco, toy_teacher_ckpt, config=config, num_images=0)
    levels = [(lv['name'], lv['loss'], tuple(lv['student']))
              for lv in report['levels']]
    sizes = dict(p3=24, p4=12, p5=6, p6=3, p7=2)
    assert levels[4:] == [
        (f'crosskd_{p}', 'CrossKDLoss cls 1 giou 1', (1, 128, n, n))
        for p, n in sizes.items()]
    step = step_rows(report)
    terms = [f'crosskd_{t}_{p}' for p in sizes for t in ('cls', 'box')]
    assert list(step) == ['detection'] + [
        f'pcka_p{i}' for i in range(3, 7)] + terms + [
        'crosskd', 'all distillation']
    for name in terms:
        assert step[name]['loss'] > 0 and step[name]['grad'] > 0, name
    assert step['crosskd']['loss'] == pytest.approx(
        sum(step[t]['loss'] for t in terms))
    assert step['all distillation']['loss'] == pytest.approx(
        step['crosskd']['loss'] + sum(step[f'pcka_p{i}']['loss']
                                      for i in range(3, 7)))
    checked = [v['check'] for v in report['verdicts']]
    assert not any(c.startswith('step crosskd_') for c in checked), checked
    assert printed_rows(render(report), 'One training step')[1:] == [
        printed_step(row) for row in report['step']]


def test_teacher_for_another_class_count_fails(tiny_coco):
    report = check(tiny_coco, None, **{
        'model.teacher.bbox_head.num_classes': 3})
    assert ('teacher classes', FAIL) in statuses(report)
    assert verdicts(report)['teacher classes'].startswith(
        "the teacher's heads predict [3] classes, the dataset has 6 (")


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
    assert statuses(report) == [('levels', FAIL), ('teacher', FAIL)]
    message = verdicts(report)['levels']
    assert message.startswith('pcka_p4: a 12x12 level cut into 16x16 '
                              'patches gives a single patch')
    assert 'Use patch_size <= 11 for it' in message
    assert report['training_scale']['size'] == [192, 192]
    # nothing trained or reported on a broken pairing
    assert 'step' not in report and 'levels' not in report


def test_shifted_level_fails(tiny_coco):
    # a teacher whose FPN starts one level later: P4 paired with P3
    report = check(tiny_coco, None, **{
        'model.teacher.neck.start_level': 2})
    assert ('levels', FAIL) in statuses(report)
    message = verdicts(report)['levels']
    assert message.startswith('distill_losses.pcka_p3: PCKA needs features '
                              'of the same spatial size; got student (1, '
                              '128, 24, 24), teacher (1, 128, 12, 12).')
    assert 'step' not in report


def test_zero_weight_level_fails(tiny_coco, toy_teacher_ckpt):
    """A level with every weight 0 trains nothing: the config is refused
    when loaded (the option rule), so no later section runs."""
    report = check(tiny_coco, toy_teacher_ckpt, num_images=0, **{
        'model.distill_losses.pcka_p5.loss.intra_weight': 0.})
    assert statuses(report) == [('config', FAIL)]
    message = verdicts(report)['config']
    assert message.startswith('OptionError: model.distill_losses.pcka_p5.'
                              'loss: every weight of this level is 0 '
                              '(loss_weight 1.0, intra_weight 0.0, ')
    assert not {'recipe', 'levels', 'step'} & set(report)


def test_exploding_ratio_fails_in_a_config_inheriting_ours(
        tiny_coco, toy_teacher_ckpt, tmp_path):
    config = tmp_path / 'my_distill.py'
    config.write_text(f'_base_ = {TOY_DISTILL!r}\n'
                      'model = dict(distill_losses=dict(pcka_p3=dict('
                      'loss=dict(intra_weight=500.))))\n')
    report = check(tiny_coco, toy_teacher_ckpt, config=str(config),
                   num_images=0)
    # only pcka_p3 fails: no 'step' ok, no other level
    assert statuses(report) == [('levels', OK), ('teacher', WARN),
                                ('step pcka_p3', FAIL)]
    step = step_rows(report)
    det, p3 = step['detection'], step['pcka_p3']
    assert p3['ratio'] == pytest.approx(p3['loss'] / det['loss'])
    assert p3['ratio'] > RATIO_BAND[1]
    for name in ('pcka_p4', 'pcka_p5', 'pcka_p6'):
        assert RATIO_BAND[0] < step[name]['ratio'] < RATIO_BAND[1], name
    message = verdicts(report)['step pcka_p3']
    assert message.startswith(
        f'loss {p3["loss"]:.4g} (detection {det["loss"]:.4g}): the loss is '
        f'{p3["ratio"]:.3g}x the detection loss, outside '
        f'[{RATIO_BAND[0]:g}, {RATIO_BAND[1]:g}]')
    assert 'drowns the detection loss' in message
    assert message.endswith('(model.distill_losses.pcka_p3.loss.intra_weight)')


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
    report = check(tiny_coco, toy_teacher_ckpt, num_images=0)
    assert statuses(report) == [('levels', OK), ('teacher', WARN),
                                ('step pcka_p6', FAIL)]
    p6 = step_rows(report)['pcka_p6']
    assert p6['loss'] == 0  # zeroed by nonfinite='skip', reported as NaN
    assert verdicts(report)['step pcka_p6'].startswith(
        'loss 0 (detection ')
    assert 'the loss is NaN/Inf' in verdicts(report)['step pcka_p6']


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
    assert statuses(report) == [('levels', OK), ('teacher', WARN),
                                ('step teacher', FAIL)]
    assert verdicts(report)['step teacher'].startswith(
        "the teacher received gradient (['backbone.")


def test_plain_detector_config_is_checked_too(tiny_coco):
    opts = toy_options(tiny_coco, None)
    opts = {k: v for k, v in opts.items() if not k.startswith('model.')}
    report = run_check('configs/toy/retinanet_thin-r18_toy.py', opts,
                       num_images=2, iters=1, device='cpu')
    assert statuses(report) == []  # no level, no step: nothing to judge
    assert set(report['evaluation']) == {'student (initialisation)'}
    # --num-images is a minimum: whole batches are evaluated
    assert report['evaluation']['student (initialisation)']['images'] >= 2
    assert report['recipe']['teacher'] == 'none (not a distillation config)'
    assert 'levels' not in report and 'step' not in report
    assert set(report['cost']['rows']) == {'student alone'}
    assert 'overhead' not in report['cost']


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
    report = json.loads(out.read_text())
    assert statuses(report) == [('levels', OK), ('teacher', FAIL),
                                ('step', OK)]
    assert report['evaluation']['teacher']['objects'] == val_objects(
        tiny_coco)
    # stdout is the JSON's table: its verdicts, rows and count
    assert printed_rows(run.stdout, 'Verdicts')[1:] == [
        [v['status'], v['check'], v['message']] for v in report['verdicts']]
    assert printed_rows(run.stdout, 'One training step')[1:] == [
        printed_step(row) for row in report['step']]
    assert run.stdout.rstrip().endswith('FAILED: 1 failed, 0 warnings')
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


def test_teacher_that_detects_nothing_gets_its_ap_verdict():
    """mmdet's CocoMetric reports no AP at all when nothing was detected (a
    random Faster R-CNN teacher scores every box under its threshold): that
    is an AP of 0, far below the model zoo's, not a missing verdict."""
    from pcka_det.check import Report, teacher_ap_verdict
    url = ('https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/'
           'faster_rcnn_r101_fpn_2x_coco/faster_rcnn_r101_fpn_2x_coco_bbox_'
           'mAP-0.398_20200504_210455-1d2dac9c.pth')
    report = Report('teacher.py')
    teacher_ap_verdict(report, dict(metrics={}, images=4), url)
    [verdict] = report.data['verdicts']
    assert verdict['check'] == 'teacher AP' and verdict['status'] == 'WARN'
    assert verdict['message'].startswith(
        'box AP 0.0 on 4 images, the model zoo lists 39.8 for '
        'faster-rcnn_r101_fpn_2x_coco on COCO val')
    # an evaluation that failed says so elsewhere: no AP verdict from it
    report = Report('teacher.py')
    teacher_ap_verdict(report, dict(metrics=dict(error='ValueError: x'),
                                    images=4), url)
    assert report.data['verdicts'] == []
