"""The toy CrossKD configs train through ``tools/train.py``'s own ``main``:
CrossKD alone and PCKA + CrossKD on the toy RetinaNet pair, two steps each
on the tiny dataset. Every head term is logged per FPN level and finite,
the stacked config logs its PCKA levels too, and ``student_last.pth`` is a
plain student that mmdet loads strictly (nothing of the teacher's head)."""
import glob
import math
import os.path as osp
import re

import torch
from conftest import ROOT, toy_options
from mmengine.runner import load_checkpoint

from pcka_det.models import build_detector
from pcka_det.train import main as train_main

CONFIGS = {
    'crosskd_retinanet_r18_thin-r18_toy.py': False,
    'pcka_crosskd_retinanet_r18_thin-r18_toy.py': True,  # with PCKA
}
LEVELS = ('p3', 'p4', 'p5', 'p6', 'p7')


def test_toy_crosskd_configs_train(tmp_path, tiny_coco, toy_teacher_ckpt):
    for name, with_pcka in CONFIGS.items():
        work = tmp_path / name
        # 8 images, 4 a step: 2 steps
        opts = toy_options(tiny_coco, toy_teacher_ckpt,
                           **{'train_dataloader.batch_size': 4})
        train_main([osp.join(ROOT, 'configs', 'toy', name), '--work-dir',
                    str(work), '--cfg-options']
                   + [f'{k}={v}' for k, v in opts.items()])
        log = open(glob.glob(str(work / '*' / '*.log'))[0]).read()
        steps = re.findall(r'Epoch\(train\).*', log)
        assert len(steps) == 2, name
        for line in steps:
            values = dict(re.findall(r'(loss\w*): (\S+)', line))
            for p in LEVELS:
                for term in ('cls', 'box'):
                    value = float(values[f'loss_crosskd_{term}_{p}'])
                    assert math.isfinite(value), (name, term, p)
            assert ('loss_pcka_p3' in values) == with_pcka, name
            assert math.isfinite(float(values['loss']))
        # the exported student is a plain mmdet RetinaNet
        student = build_detector(
            dict(cfg_path='pcka_det::toy/retinanet_thin-r18_toy.py'))
        ckpt = torch.load(work / 'student_last.pth', weights_only=False)
        assert not any(k.startswith(('teacher', 'student.'))
                       for k in ckpt['state_dict'])
        load_checkpoint(student, str(work / 'student_last.pth'),
                        map_location='cpu', strict=True)
