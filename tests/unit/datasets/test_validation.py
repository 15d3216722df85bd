"""Bad dataset paths, non-COCO files and annotations or images that
mmdet's CocoDataset would lose fail early, naming the key to fix
(``pcka_det.datasets.validation``; through ``tools/train.py``:
``e2e/test_dataset_commands.py``)."""
import json
import os.path as osp
import shutil

import pytest
from conftest import ROOT
from mmengine.config import Config
from mmengine.logging import MMLogger

from pcka_det.cli import data_root_options
from pcka_det.datasets import validate_dataloaders
from pcka_det.datasets.validation import (MAX_DROPPED_FRACTION,
                                      _annotation_problems, class_ids)

TOY = osp.join(ROOT, 'configs', 'toy', 'retinanet_thin-r18_toy.py')


def _cfg(root, config=TOY):
    """``config`` pointed at ``root`` as a user points it (datasets and
    evaluators, ``data_root_options``)."""
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(data_root_options(root))
    return cfg


def _coco(num_images=1, boxes_per_image=1, size=8, changes=None):
    """A valid COCO dict: ``num_images`` images ``<id>.png`` of ``size`` px
    with ``boxes_per_image`` 4x4 circles each; ``changes`` maps annotation
    ids (from 1, image by image) to the fields they override."""
    images = [dict(id=i, file_name=f'{i}.png', width=size, height=size)
              for i in range(1, num_images + 1)]
    anns = [dict(image_id=img['id'], category_id=1,
                 bbox=[0, 0, 4, 4], area=16, iscrowd=0)
            for img in images for _ in range(boxes_per_image)]
    for ann_id, ann in enumerate(anns, 1):
        ann['id'] = ann_id
        ann.update((changes or {}).get(ann_id, {}))
    return dict(images=images, annotations=anns,
                categories=[dict(id=1, name='circle')])


def _layout(root, train=None, val=None):
    """``annotations/instances_{train,val}.json`` (COCO dicts, or text as
    is) and an empty file for every image they list."""
    (root / 'annotations').mkdir(parents=True)
    for split, coco in (('train', train), ('val', val)):
        (root / split).mkdir()
        coco = _coco() if coco is None else coco
        text = coco if isinstance(coco, str) else json.dumps(coco)
        (root / 'annotations' / f'instances_{split}.json').write_text(text)
        for img in coco['images'] if isinstance(coco, dict) else []:
            (root / split / img['file_name']).touch()


def test_valid_layout_passes(tmp_path):
    _layout(tmp_path)
    assert validate_dataloaders(_cfg(tmp_path)) == []


def test_missing_data_root(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=r'train_dataloader\.dataset\.data_root.*nope'):
        validate_dataloaders(_cfg(tmp_path / 'nope'))


def test_missing_annotation_file(tmp_path):
    _layout(tmp_path)
    (tmp_path / 'annotations' / 'instances_val.json').unlink()
    with pytest.raises(FileNotFoundError,
                       match=r'val_dataloader\.dataset\.ann_file.*'
                       r'instances_val\.json'):
        validate_dataloaders(_cfg(tmp_path))


@pytest.mark.parametrize('content,match', [
    ('not json at all', 'not a JSON file'),
    (json.dumps(dict(images=[], annotations=[])), r"not COCO.*categories"),
    (json.dumps([1, 2, 3]), 'not COCO'),
])
def test_annotation_not_coco(tmp_path, content, match):
    _layout(tmp_path, content)
    with pytest.raises(ValueError, match=match) as e:
        validate_dataloaders(_cfg(tmp_path))
    assert 'train_dataloader.dataset.ann_file' in str(e.value)


def test_missing_image_folder(tmp_path):
    _layout(tmp_path)
    shutil.rmtree(tmp_path / 'train')
    with pytest.raises(FileNotFoundError, match=r'data_prefix\.img.*train'):
        validate_dataloaders(_cfg(tmp_path))


def test_wrapped_dataset_is_followed(tmp_path):
    cfg = _cfg(tmp_path / 'missing')
    cfg.train_dataloader.dataset = dict(
        type='RepeatDataset', times=2, dataset=cfg.train_dataloader.dataset)
    with pytest.raises(FileNotFoundError,
                       match=r'train_dataloader\.dataset\.dataset\.data_root'):
        validate_dataloaders(cfg, ['train_dataloader'])


def _mask_cfg(root):
    return _cfg(root, osp.join(ROOT, 'configs', 'toy',
                               'mask_rcnn_thin-r18_toy.py'))


def _coco_with(annotation: dict) -> dict:
    return _coco(changes={1: annotation})


def test_mask_pipeline_needs_segmentation(tmp_path):
    """A Mask R-CNN config on box-only annotations (e.g. synthetic data made
    before masks were added) is an error naming the file, not mmdet's
    ``KeyError: 'mask'`` at the first sample."""
    _layout(tmp_path, _coco_with({}))
    with pytest.raises(ValueError, match=r'train_dataloader\.dataset\.'
                       r'pipeline loads instance masks.*1 of the 1 '
                       r'annotations.*instances_train\.json'):
        validate_dataloaders(_mask_cfg(tmp_path))
    # box-only annotations are fine for a box-only pipeline
    validate_dataloaders(_cfg(tmp_path))


def test_mask_pipeline_with_segmentation_passes(tmp_path):
    coco = _coco_with(dict(segmentation=[[0, 0, 4, 0, 4, 4]]))
    _layout(tmp_path, coco, coco)
    validate_dataloaders(_mask_cfg(tmp_path))


TRAIN_KEY = 'train_dataloader.dataset.ann_file'


def _error(cfg) -> str:
    """The ValueError ``validate_dataloaders(cfg)`` must raise, as text."""
    with pytest.raises(ValueError) as e:
        validate_dataloaders(cfg)
    return str(e.value)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_empty_images_list(tmp_path, split):
    """Not MMEngine's failure deep in ``_serialize_data``."""
    _layout(tmp_path, **{split: dict(images=[], annotations=[],
                                     categories=[dict(id=1, name='c')])})
    msg = _error(_cfg(tmp_path))
    assert msg.startswith(
        f'{split}_dataloader.dataset.ann_file: "{tmp_path}/annotations/'
        f'instances_{split}.json" holds no images, so this dataset is empty')


def test_boxes_with_non_positive_size(tmp_path):
    """3 of 40 boxes CocoDataset would drop is far over the limit."""
    bad = {5: dict(bbox=[4, 0, -2, 4]), 17: dict(bbox=[0, 0, 4, 0]),
           30: dict(bbox=[0, 0, 4, -1])}
    _layout(tmp_path, _coco(10, 4, changes=bad))
    msg = _error(_cfg(tmp_path))
    assert f'{TRAIN_KEY}: "{tmp_path}/annotations/instances_train.json"' \
        in msg
    assert '3 of 40 annotations have non-positive width or height' in msg
    assert 'first ids [5, 17, 30], images [2, 5, 8]' in msg
    assert 'Fix: fix or remove these boxes' in msg
    assert 'of 10 images' not in msg  # every image keeps a box


@pytest.mark.parametrize('change,cause', [
    (dict(bbox=[0, 0, 0.5, 4]), 'have non-positive width or height'),
    (dict(bbox=[0, 0, 4, 0.9]), 'have non-positive width or height'),
    (dict(area=0), 'have non-positive width or height'),
    (dict(bbox=[8, 0, 4, 4]), 'have a bbox outside their image'),
    (dict(bbox=[0, -4, 4, 4]), 'have a bbox outside their image'),
    (dict(category_id=7), "have a category_id that is not one of"),
    (dict(image_id=99), 'have an image_id that is not in "images"'),
    (dict(bbox=[0, 0, 4]), 'are malformed'),
])
def test_annotations_coco_dataset_drops(tmp_path, change, cause):
    _layout(tmp_path, _coco(2, 1, changes={2: change}))
    msg = _error(_cfg(tmp_path))
    assert f'1 of 2 annotations {cause}' in msg
    assert 'first ids [2], images [' in msg


@pytest.mark.parametrize('change', [
    dict(bbox=[7, 7, 1, 1], area=1),  # mmdet keeps w, h >= 1
    dict(bbox=[7.5, -2, 4, 2.5]),  # overlaps the image by 0.5 x 0.5 px
    dict(iscrowd=1),  # kept as an ignored box
    dict(ignore=True, bbox=[0, 0, -4, 4]),  # skipped on purpose
])
def test_annotations_coco_dataset_keeps(tmp_path, change):
    _layout(tmp_path, _coco(2, 2, changes={1: change}))
    assert validate_dataloaders(_cfg(tmp_path)) == []


def _problem_file():
    """Every kind of annotation and image CocoDataset loses, once; only
    image 1 is larger than 8 px."""
    coco = _coco(8, 1, changes={2: dict(bbox=[0, 0, -3, 4]),
                                3: dict(category_id=7),
                                4: dict(bbox=[9, 0, 4, 4]),
                                5: dict(area=0),
                                6: dict(category_id=2),
                                7: dict(category_id=3),
                                8: dict(ignore=True)})
    coco['annotations'] += [
        dict(id=9, image_id=99, category_id=1, bbox=[0, 0, 4, 4], area=16),
        dict(id=10, image_id=8, category_id=1, bbox=[0, 0, 4, 4], area=16,
             iscrowd=1),
        dict(id=11, image_id=1, category_id=3, bbox=[30, 30, 9, 9], area=9)]
    coco['images'][0].update(width=40, height=40)
    coco['categories'] += [dict(id=2, name='square'),
                           dict(id=7, name='blob'), dict(id=3, name='person')]
    return coco


@pytest.mark.parametrize('classes', ['toy', ('circle', ), None])
def test_problems_match_coco_dataset(tmp_path, classes):
    """What the check finds is what mmdet's CocoDataset loses, for the
    config's classes, a subset, and CocoDataset's own 80 classes."""
    from mmdet.registry import DATASETS
    coco = _problem_file()
    _layout(tmp_path, coco)
    dataset = _cfg(tmp_path).train_dataloader.dataset
    dataset.pipeline = []
    if classes is None:
        del dataset['metainfo']
    elif classes != 'toy':
        dataset.metainfo = dict(classes=classes)
    problems, in_classes, _ = _annotation_problems(
        coco, class_ids(coco, dataset))
    dropped = {a for found in problems.values() for a, _ in found}
    loaded = DATASETS.build(dict(dataset, filter_cfg=None))
    kept = sum(len(loaded.get_data_info(i)['instances'])
               for i in range(len(loaded)))
    # annotation 8 is ignored and 9 belongs to no image: neither is loaded
    assert kept == len(coco['annotations']) - len(dropped) - 1
    filtered = DATASETS.build(dict(dataset, filter_cfg=dict(
        filter_empty_gt=True, min_size=10)))
    assert {filtered.get_data_info(i)['img_id']
            for i in range(len(filtered))} == \
        in_classes - {99} - {2, 3, 4, 5, 6, 7, 8}  # images of 8 px


def test_category_ids_follow_metainfo_classes(tmp_path):
    """Categories are matched by name, as CocoDataset's
    ``get_cat_ids(cat_names=metainfo['classes'])``, not by id."""
    coco = _coco(4, 1, changes={1: dict(category_id=30),
                                2: dict(category_id=30)})
    coco['categories'] = [dict(id=1, name='square'),
                          dict(id=30, name='circle')]
    _layout(tmp_path, coco)
    cfg = _cfg(tmp_path)
    validate_dataloaders(cfg, ['train_dataloader'])
    # training on a subset of the file's categories drops the others on
    # purpose: a warning, not an error (here 2 of 4, far above 1 %)
    cfg.train_dataloader.dataset.metainfo = dict(classes=('circle', ))
    found = validate_dataloaders(cfg, ['train_dataloader'])
    assert any('2 of 4 annotations belong to categories of the file that '
               'metainfo.classes leaves out' in m and 'first ids [3, 4]' in m
               for m in found), found
    # an id that is no category of the file at all stays an error
    coco['annotations'][2]['category_id'] = 7
    coco['annotations'][3]['category_id'] = 7
    _layout(tmp_path / 'b', coco)
    cfg = _cfg(tmp_path / 'b')
    cfg.train_dataloader.dataset.metainfo = dict(classes=('circle', ))
    msg = _error(cfg)
    assert '2 of 4 annotations have a category_id that is not one of' in msg
    assert 'first ids [3, 4], images [3, 4]' in msg
    assert "the classes are ['circle'] and the file's categories " \
        "['square', 'circle']: set train_dataloader.dataset.metainfo." \
        'classes' in msg


def test_missing_image_files(tmp_path):
    _layout(tmp_path, _coco(4, 1))
    for i in (2, 4):
        (tmp_path / 'train' / f'{i}.png').unlink()
    msg = _error(_cfg(tmp_path))
    assert f'{TRAIN_KEY}: "{tmp_path}/annotations/instances_train.json"' \
        in msg
    assert "2 of 4 images' files are missing (first: " \
        f"['{tmp_path}/train/2.png', '{tmp_path}/train/4.png'])" in msg
    assert 'Fix: fix train_dataloader.dataset.data_root' in msg


def test_one_missing_image_stops_training(tmp_path):
    """LoadImageFromFile raises at the first missing file, so one in 200 is
    an error too, unless it is told to skip them (``ignore_empty``)."""
    _layout(tmp_path, _coco(200, 1))
    (tmp_path / 'train' / '7.png').unlink()
    cfg = _cfg(tmp_path)
    assert "1 of 200 images' files are missing" in _error(cfg)
    cfg.train_dataloader.dataset.pipeline[0].ignore_empty = True
    warnings = validate_dataloaders(cfg)
    assert len(warnings) == 1
    assert "1 of 200 images' files are missing" in warnings[0]


def test_images_without_annotations_are_dropped(tmp_path):
    """``filter_empty_gt=True`` drops them in training, not in testing: mmdet's
    documented default (background images), so a warning at any share."""
    coco = _coco(4, 1)
    coco['annotations'] = coco['annotations'][:2]
    _layout(tmp_path, coco, coco)
    cfg = _cfg(tmp_path)
    found = validate_dataloaders(cfg)
    assert len(found) == 1
    msg = found[0]
    assert TRAIN_KEY in msg and 'val_dataloader' not in msg
    assert "2 of 4 images have no annotation of the dataset's classes" in msg
    assert 'first ids [3, 4]' in msg
    assert 'set train_dataloader.dataset.filter_cfg.filter_empty_gt=False' \
        in msg
    cfg.train_dataloader.dataset.filter_cfg.filter_empty_gt = False
    assert validate_dataloaders(cfg) == []


def test_image_with_only_bad_boxes_counts_as_dropped(tmp_path):
    """mmdet keeps it (its filter reads raw annotations) as background."""
    _layout(tmp_path, _coco(2, 2, changes={3: dict(bbox=[0, 0, -4, 4]),
                                          4: dict(bbox=[0, 0, 4, -4])}))
    msg = _error(_cfg(tmp_path))
    assert '2 of 4 annotations have non-positive width' in msg
    assert '1 of 2 images have annotations but no valid box' in msg
    assert 'first ids [2]' in msg


def test_small_images_are_dropped(tmp_path):
    _layout(tmp_path, _coco(2, 1))
    cfg = _cfg(tmp_path)
    cfg.train_dataloader.dataset.filter_cfg.min_size = 32  # mmdet's default
    msg = _error(cfg)
    assert '2 of 2 images are smaller than filter_cfg.min_size' in msg
    assert 'Fix: lower train_dataloader.dataset.filter_cfg.min_size' in msg


@pytest.fixture
def run_log(tmp_path):
    """A current MMEngine logger writing to ``tmp_path/run.log``, as the
    runner's is; the previous current logger is restored afterwards."""
    name = f'dataset_checks_{tmp_path.name}'
    logger = MMLogger.get_instance(name, log_file=str(tmp_path / 'run.log'))
    yield tmp_path / 'run.log'
    for handler in logger.handlers:
        handler.close()
    MMLogger._instance_dict.pop(name)


@pytest.mark.parametrize('bad', [1, 2])
def test_few_lost_annotations_are_logged(tmp_path, run_log, bad):
    """Up to MAX_DROPPED_FRACTION (1 %: 2 of 200) only warns, once per
    cause, in the current MMEngine logger (the run's log file)."""
    assert MAX_DROPPED_FRACTION * 200 == 2
    _layout(tmp_path / 'data', _coco(100, 2, changes={
        k: dict(bbox=[0, 0, -4, 4]) for k in (11, 51)[:bad]}))
    warnings = validate_dataloaders(_cfg(tmp_path / 'data'))
    text = f'{bad} of 200 annotations have non-positive width or height'
    assert len(warnings) == 1 and text in warnings[0]
    log = run_log.read_text()
    assert 'WARNING' in log and text in log
    assert f'{TRAIN_KEY}: "{tmp_path}/data/annotations/instances_train.json"' \
        in log


def test_over_the_limit_is_an_error(tmp_path):
    """3 of 200 is over 1 %."""
    _layout(tmp_path, _coco(100, 2, changes={
        k: dict(bbox=[0, 0, -4, 4]) for k in (11, 51, 99)}))
    assert '3 of 200 annotations have non-positive width or height' in \
        _error(_cfg(tmp_path))
