"""Fail before training starts when a dataset in the config is unusable.

MMEngine builds datasets lazily, after the work dir and logs exist and
(for distillation) after the teacher has loaded; a wrong path then fails
deep inside pycocotools. These checks name the config key to fix instead.
"""
import json
import os.path as osp
from typing import Iterable, Optional

from mmengine.config import Config

# Above this size only the head of an annotation file is inspected: parsing
# COCO's 450 MB train file would cost tens of seconds on every launch.
FULL_PARSE_LIMIT = 64 * 2**20
COCO_KEYS = ('images', 'annotations', 'categories')


def _join(root, path):
    return path if not root or osp.isabs(path) else osp.join(root, path)


def check_coco_file(path: str, key: str) -> Optional[dict]:
    """Raise if ``path`` is missing or is not a COCO detection file.

    Args:
        path (str): Annotation file.
        key (str): Config key it came from, for the message.

    Returns:
        dict, optional: The parsed file, or None if it was too large to
        parse in full.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{key}: annotation file "{path}" does not exist. Fix the '
            'path in the config or with --cfg-options (for the synthetic '
            'data run tools/make_synthetic_coco.py).')
    if osp.getsize(path) > FULL_PARSE_LIMIT:
        with open(path, 'rb') as f:
            head = f.read(2**20).decode('utf-8', 'ignore')
        if not head.lstrip().startswith('{') or '"images"' not in head:
            raise ValueError(f'{key}: "{path}" does not look like COCO '
                             'JSON (no "images" near the start).')
        return None
    try:
        with open(path) as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f'{key}: "{path}" is not a JSON file ({e}); CocoDataset needs '
            'COCO-format annotations.') from e
    missing = [k for k in COCO_KEYS
               if not isinstance(data, dict) or
               not isinstance(data.get(k), list)]
    if missing:
        raise ValueError(
            f'{key}: "{path}" is not COCO format: no {missing} list(s). '
            f'A COCO detection file is a dict with {list(COCO_KEYS)}.')
    return data


def _loads_masks(pipeline) -> bool:
    """Whether a pipeline config loads instance masks."""
    return any(t.get('type') == 'LoadAnnotations' and t.get('with_mask')
               for t in pipeline or [] if isinstance(t, dict))


def check_dataloaders(cfg: Config,
                      names: Iterable[str] = ('train_dataloader',
                                              'val_dataloader')) -> None:
    """Check every annotation file and image folder the dataloaders use.

    Wrapped datasets (``RepeatDataset``, ...) are followed to the dataset
    that reads files; loaders absent from the config are skipped.

    Args:
        cfg (Config): Full config.
        names (Iterable[str]): Dataloader keys to check.
    """
    for name in names:
        loader = cfg.get(name)
        if not loader or 'dataset' not in loader:
            continue
        dataset, key = loader.dataset, f'{name}.dataset'
        while 'ann_file' not in dataset and 'dataset' in dataset:
            dataset, key = dataset.dataset, key + '.dataset'
        if 'ann_file' not in dataset:
            continue
        root = dataset.get('data_root')
        if root and not osp.isdir(root):
            raise FileNotFoundError(
                f'{key}.data_root: "{root}" does not exist. Fix the path in '
                'the config or with --cfg-options.')
        ann_file = _join(root, dataset.ann_file)
        data = check_coco_file(ann_file, f'{key}.ann_file')
        if data is not None and _loads_masks(dataset.get('pipeline')):
            # mmdet would fail at the first sample with KeyError: 'mask'
            bare = sum('segmentation' not in a for a in data['annotations'])
            if bare:
                raise ValueError(
                    f'{key}.pipeline loads instance masks (LoadAnnotations '
                    f'with_mask=True), but {bare} of the '
                    f'{len(data["annotations"])} annotations in "{ann_file}" '
                    'have no "segmentation". Use an instance-segmentation '
                    'annotation file (for the synthetic data, regenerate it: '
                    'python tools/make_synthetic_coco.py <data_root>).')
        img_dir = (dataset.get('data_prefix') or {}).get('img')
        if img_dir is not None and not osp.isdir(_join(root, img_dir)):
            raise FileNotFoundError(
                f'{key}.data_prefix.img: image folder '
                f'"{_join(root, img_dir)}" does not exist.')
