"""Bad dataset paths and non-COCO files fail early, naming the key to fix."""
import json
import os.path as osp
import subprocess
import sys

import pytest
from conftest import ROOT
from mmengine.config import Config

from pcka_det.datasets import check_dataloaders

TOY = osp.join(ROOT, 'configs', 'toy', 'retinanet_thin-r18_toy.py')


def _cfg(root):
    cfg = Config.fromfile(TOY)
    for name in ('train_dataloader', 'val_dataloader'):
        cfg[name].dataset.data_root = str(root) + '/'
    return cfg


def _layout(root, train_json):
    (root / 'annotations').mkdir(parents=True)
    (root / 'train').mkdir()
    (root / 'val').mkdir()
    (root / 'annotations' / 'instances_train.json').write_text(train_json)
    (root / 'annotations' / 'instances_val.json').write_text(
        json.dumps(dict(images=[], annotations=[], categories=[])))


def test_valid_layout_passes(tmp_path):
    _layout(tmp_path, json.dumps(dict(images=[], annotations=[],
                                      categories=[])))
    check_dataloaders(_cfg(tmp_path))


def test_missing_data_root(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=r'train_dataloader\.dataset\.data_root.*nope'):
        check_dataloaders(_cfg(tmp_path / 'nope'))


def test_missing_annotation_file(tmp_path):
    _layout(tmp_path, json.dumps(dict(images=[], annotations=[],
                                      categories=[])))
    (tmp_path / 'annotations' / 'instances_val.json').unlink()
    with pytest.raises(FileNotFoundError,
                       match=r'val_dataloader\.dataset\.ann_file.*'
                       r'instances_val\.json'):
        check_dataloaders(_cfg(tmp_path))


@pytest.mark.parametrize('content,match', [
    ('not json at all', 'not a JSON file'),
    (json.dumps(dict(images=[], annotations=[])), r"not COCO.*categories"),
    (json.dumps([1, 2, 3]), 'not COCO'),
])
def test_annotation_not_coco(tmp_path, content, match):
    _layout(tmp_path, content)
    with pytest.raises(ValueError, match=match) as e:
        check_dataloaders(_cfg(tmp_path))
    assert 'train_dataloader.dataset.ann_file' in str(e.value)


def test_missing_image_folder(tmp_path):
    _layout(tmp_path, json.dumps(dict(images=[], annotations=[],
                                      categories=[])))
    (tmp_path / 'train').rmdir()
    with pytest.raises(FileNotFoundError, match=r'data_prefix\.img.*train'):
        check_dataloaders(_cfg(tmp_path))


def test_wrapped_dataset_is_followed(tmp_path):
    cfg = _cfg(tmp_path / 'missing')
    cfg.train_dataloader.dataset = dict(
        type='RepeatDataset', times=2, dataset=cfg.train_dataloader.dataset)
    with pytest.raises(FileNotFoundError,
                       match=r'train_dataloader\.dataset\.dataset\.data_root'):
        check_dataloaders(cfg, ['train_dataloader'])


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


def _mask_cfg(root):
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', 'toy', 'mask_rcnn_thin-r18_toy.py'))
    for name in ('train_dataloader', 'val_dataloader'):
        cfg[name].dataset.data_root = str(root) + '/'
    return cfg


def _coco_with(annotation: dict) -> str:
    return json.dumps(dict(
        images=[dict(id=1, file_name='a.png', width=8, height=8)],
        annotations=[dict(id=1, image_id=1, category_id=1, bbox=[0, 0, 4, 4],
                          area=16, iscrowd=0, **annotation)],
        categories=[dict(id=1, name='circle')]))


def test_mask_pipeline_needs_segmentation(tmp_path):
    """A Mask R-CNN config on box-only annotations (e.g. synthetic data made
    before masks were added) is an error naming the file, not mmdet's
    ``KeyError: 'mask'`` at the first sample."""
    _layout(tmp_path, _coco_with({}))
    with pytest.raises(ValueError, match=r'train_dataloader\.dataset\.'
                       r'pipeline loads instance masks.*1 of the 1 '
                       r'annotations.*instances_train\.json'):
        check_dataloaders(_mask_cfg(tmp_path))
    # box-only annotations are fine for a box-only pipeline
    check_dataloaders(_cfg(tmp_path))


def test_mask_pipeline_with_segmentation_passes(tmp_path):
    _layout(tmp_path, _coco_with(dict(segmentation=[[0, 0, 4, 0, 4, 4]])))
    check_dataloaders(_mask_cfg(tmp_path))
