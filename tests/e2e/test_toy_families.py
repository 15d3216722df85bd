"""The toy PCKA configs of three more detector families, end to end.

FCOS (anchor-free), Faster R-CNN (two-stage) and Mask R-CNN (instance
segmentation): ``tools/train.py`` trains each distiller for one short epoch
on a few synthetic images (random teacher), ``CocoMetric`` evaluates it, and
the student exported by ``ExportStudentHook`` loads into the plain student
config. About 10 s per family on 2 cores.
"""
import json
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, toy_options
from mmengine.config import Config

from mmdet.registry import MODELS
from pcka_det.losses.patch_cka import patch_count
from pcka_det.models import build_detector

COCO_KEYS = ['mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l']
FAMILIES = {
    # name: (PCKA config, student config, distilled FPN levels, CocoMetric
    #        metrics, the student's score threshold, a detection loss term
    #        of this family's own head)
    'fcos': ('pcka_fcos_r18_thin-r18_toy.py', 'fcos_thin-r18_toy.py',
             ['p3', 'p4', 'p5', 'p6'], ['bbox'], 'test_cfg.score_thr',
             'loss_centerness'),
    'faster_rcnn': ('pcka_faster_rcnn_r18_thin-r18_toy.py',
                    'faster_rcnn_thin-r18_toy.py', ['p2', 'p3', 'p4', 'p5'],
                    ['bbox'], 'test_cfg.rcnn.score_thr', 'loss_rpn_cls'),
    'mask_rcnn': ('pcka_mask_rcnn_r18_thin-r18_toy.py',
                  'mask_rcnn_thin-r18_toy.py', ['p2', 'p3', 'p4', 'p5'],
                  ['bbox', 'segm'], 'test_cfg.rcnn.score_thr', 'loss_mask'),
}


def toy(config: str) -> str:
    return osp.join(ROOT, 'configs', 'toy', config)


def read_scalars(work_dir) -> list:
    """The records of MMEngine's ``scalars.json`` of the (only) run."""
    [path] = list(work_dir.glob('*/vis_data/scalars.json'))
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_every_distilled_level_has_several_patches(family):
    """At the toy image size each distilled level is cut into >= 2 patches
    (one patch would leave PCKA's intra term without signal)."""
    cfg = Config.fromfile(toy(FAMILIES[family][0]))
    student = build_detector(cfg.model.student).eval()
    width, height = cfg.img_scale
    with torch.no_grad():
        feats = student.extract_feat(torch.zeros(1, 3, height, width))
    for name, spec in cfg.model.distill_losses.items():
        size = tuple(feats[spec.index].shape[2:])
        patches = patch_count(feats[spec.index], spec.loss.patch_size)
        assert patches >= 2, f'{name}: {size} cells, {patches} patch'


@pytest.mark.slow
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_toy_family_trains_evaluates_and_exports(family, tiny_coco,
                                                  tmp_path):
    pcka_cfg, student_cfg, levels, metrics, score_thr, own_term = \
        FAMILIES[family]
    work_dir = tmp_path / 'work'
    opts = toy_options(tiny_coco, None, **{
        'train_dataloader.batch_size': 4,
        'train_cfg.val_interval': 1,
        # a barely trained model may score every box below the threshold,
        # and CocoMetric then returns no metric at all
        f'model.student.{score_thr}': 0.0,
    })
    out = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'),
         toy(pcka_cfg), '--work-dir', str(work_dir),
         '--cfg-options', *[f'{k}={v}' for k, v in opts.items()]],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]

    records = read_scalars(work_dir)
    train = [r for r in records if 'loss' in r]
    assert train
    for rec in train:
        assert math.isfinite(rec[own_term]), (own_term, rec)
        for level in levels:
            value = rec.get(f'loss_pcka_{level}')
            assert value is not None and math.isfinite(value) and \
                value > 0, (level, rec)
    [val] = [r for r in records if any(k.startswith('coco/') for k in r)]
    assert {k for k in val if k.startswith('coco/')} == {
        f'coco/{m}_{k}' for m in metrics for k in COCO_KEYS}

    # the student-only export loads, strictly, into the plain student
    student = MODELS.build(Config.fromfile(toy(student_cfg)).model)
    state = torch.load(work_dir / 'student_last.pth', weights_only=True)
    student.load_state_dict(state['state_dict'], strict=True)
