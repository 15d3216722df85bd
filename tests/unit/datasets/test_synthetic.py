import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from pcka_det.datasets import CLASSES, SyntheticConfig, generate_dataset


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic')
    cfg = SyntheticConfig(num_train=40, num_val=12, image_size=(160, 128),
                          seed=7)
    return root, cfg, generate_dataset(str(root), cfg)


def test_valid_coco(dataset):
    root, cfg, files = dataset
    for split, ann_file in files.items():
        coco = COCO(ann_file)
        n = cfg.num_train if split == 'train' else cfg.num_val
        assert len(coco.getImgIds()) == n
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == \
            list(CLASSES)
        ann_ids = coco.getAnnIds()
        assert len(set(ann_ids)) == len(ann_ids)
        for ann in coco.loadAnns(ann_ids):
            img = coco.imgs[ann['image_id']]
            x, y, w, h = ann['bbox']
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= img['width'] and y + h <= img['height']
            assert 0 < ann['area'] <= w * h
            assert (root / split / img['file_name']).is_file()
            assert (img['width'], img['height']) == cfg.image_size


def test_every_class_and_size_present(dataset):
    _, _, files = dataset
    coco = COCO(files['train'])
    anns = coco.loadAnns(coco.getAnnIds())
    assert {a['category_id'] for a in anns} == set(range(1, len(CLASSES) + 1))
    areas = np.array([a['area'] for a in anns])
    assert (areas < 32**2).any() and ((areas >= 32**2) &
                                      (areas < 96**2)).any()


def test_large_objects_occur(tmp_path):
    cfg = SyntheticConfig(num_train=30, num_val=1, seed=1)
    files = generate_dataset(str(tmp_path), cfg)
    anns = json.load(open(files['train']))['annotations']
    assert any(a['area'] >= 96**2 for a in anns)


def test_deterministic(tmp_path):
    cfg = SyntheticConfig(num_train=5, num_val=2, seed=3)
    a = generate_dataset(str(tmp_path / 'a'), cfg)
    b = generate_dataset(str(tmp_path / 'b'), cfg)
    assert open(a['train']).read() == open(b['train']).read()
    assert (tmp_path / 'a' / 'train' / '000003.png').read_bytes() == \
        (tmp_path / 'b' / 'train' / '000003.png').read_bytes()
    c = generate_dataset(str(tmp_path / 'c'),
                         SyntheticConfig(num_train=5, num_val=2, seed=4))
    assert open(a['train']).read() != open(c['train']).read()


def test_masks_match_boxes_and_areas(dataset):
    """Each annotation's mask is the visible shape its bbox and area were
    computed from (and what Mask R-CNN's LoadAnnotations decodes)."""
    _, _, files = dataset
    for ann_file in files.values():
        coco = COCO(ann_file)
        for ann in coco.loadAnns(coco.getAnnIds()):
            img = coco.imgs[ann['image_id']]
            mask = coco.annToMask(ann)
            assert mask.shape == (img['height'], img['width'])
            ys, xs = np.nonzero(mask)
            x0, y0 = xs.min(), ys.min()
            assert [x0, y0, xs.max() - x0 + 1, ys.max() - y0 + 1] == \
                ann['bbox']
            assert mask.sum() == ann['area']
