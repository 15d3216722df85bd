"""``tools/train.py`` on a bad dataset stops before anything is written,
naming the config key and the file: the command, in a subprocess, as a
user runs it (what each check finds: ``unit/datasets/test_validation.py``).
"""
import json
import os.path as osp
import shutil
import subprocess
import sys

from conftest import ROOT, TOY_DISTILL, toy_options

TOY = osp.join(ROOT, 'configs', 'toy', 'retinanet_thin-r18_toy.py')
TRAIN_KEY = 'train_dataloader.dataset.ann_file'


def test_train_cli_bad_dataset_writes_nothing(tmp_path):
    work = tmp_path / 'work'
    out = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'), TOY,
         '--work-dir', str(work), '--cfg-options',
         f'train_dataloader.dataset.data_root={tmp_path}/absent/'],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert 'train_dataloader.dataset.data_root' in out.stderr
    assert not work.exists()


def test_train_cli_negative_boxes_stop_before_training(
        tmp_path, tiny_coco, toy_teacher_ckpt):
    """``tools/train.py`` on a copy of the tiny dataset where half the boxes
    have a negative width stops before the runner, with the message."""
    data = tmp_path / 'data'
    shutil.copytree(tiny_coco, data)
    ann_file = data / 'annotations' / 'instances_train.json'
    coco = json.loads(ann_file.read_text())
    for ann in coco['annotations'][::2]:
        ann['bbox'][2] = -ann['bbox'][2]
    ann_file.write_text(json.dumps(coco))
    work = tmp_path / 'work'
    opts = toy_options(data, toy_teacher_ckpt)
    out = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'), TOY_DISTILL,
         '--work-dir', str(work), '--cfg-options',
         *[f'{k}={v}' for k, v in opts.items()]],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    n = len(coco['annotations'])
    assert f'{TRAIN_KEY}: "{ann_file}": {(n + 1) // 2} of {n} annotations ' \
        'have non-positive width or height' in out.stderr
    assert not list(tmp_path.rglob('*.pth'))
    assert not work.exists()
