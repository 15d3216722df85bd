"""Fail before training starts when a dataset in the config is unusable.

MMEngine builds datasets lazily, after the work dir and logs exist and
(for distillation) after the teacher has loaded; a wrong path then fails
deep inside pycocotools. These checks name the config key to fix instead.
"""
import json
import logging
import os.path as osp
from typing import Dict, Iterable, List, Optional, Set, Tuple

from mmengine.config import Config
from mmengine.logging import print_log

# Above this size only the head of an annotation file is inspected: parsing
# COCO's 450 MB train file would cost tens of seconds on every launch.
FULL_PARSE_LIMIT = 64 * 2**20
COCO_KEYS = ('images', 'annotations', 'categories')
# Real data has a few bad labels (COCO train2017: 1,021 of 118,287 images
# without a box, 0.9 %), and losing them changes nothing measurable. More
# than 1 % of annotations or images lost points to a broken file (a faulty
# converter, a wrong class list, the wrong image folder), and training on
# what is left would give a worse model without an error: stop instead.
MAX_DROPPED_FRACTION = 0.01
FIRST_IDS = 5  # ids a message names

# Why CocoDataset (mmdet 3.3) loses an annotation: (what, how to fix).
ANN_CAUSES = {
    'malformed': ('are malformed (a missing id, image_id, category_id or '
                  'area, or a bbox that is not 4 numbers): CocoDataset fails '
                  'on them with a KeyError', 'fix the converter that wrote '
                  'the file'),
    'orphan': ('have an image_id that is not in "images", so CocoDataset '
               'never loads them', 'add their images or fix the image ids'),
    'size': ('have non-positive width or height (or w or h < 1 px, or '
             'area <= 0: bbox is [x, y, w, h]), which CocoDataset drops',
             'fix or remove these boxes (COCO boxes are [x, y, width, '
             'height] in pixels)'),
    'outside': ('have a bbox outside their image, which CocoDataset drops',
                'check the boxes and the images\' width and height'),
    'category': ('have a category_id that is not one of the dataset\'s '
                 'classes, which CocoDataset drops', None),
    'unselected': ('belong to categories of the file that metainfo.classes '
                   'leaves out, which CocoDataset drops',
                   'nothing to do if those classes are left out on purpose'),
}
# Why an image is lost: (what, how to fix); {key} is the dataset's key.
IMG_CAUSES = {
    'malformed': ('images are malformed (a missing id, file_name, width or '
                  'height): CocoDataset fails on them with a KeyError',
                  'fix the converter that wrote the file'),
    'missing': ("images' files are missing", None),
    'unlabelled': ('images have no annotation of the dataset\'s classes, '
                   'and filter_cfg.filter_empty_gt=True drops them',
                   'add their annotations, or set {key}.filter_cfg.'
                   'filter_empty_gt=False to train on them as background'),
    'no_box': ('images have annotations but no valid box: '
               'filter_cfg.filter_empty_gt=True meant to drop them, but '
               'mmdet filters on raw annotations, so they train as pure '
               'background', 'fix their boxes (see the annotations above)'),
    'small': ('images are smaller than filter_cfg.min_size, which drops '
              'them', 'lower {key}.filter_cfg.min_size'),
}
# Losses that are mmdet's documented default, not a broken file: images with
# no annotation at all (background images, 0.9 % of COCO train2017) are
# dropped by filter_empty_gt=True, and a config that trains on a subset of
# the file's categories (metainfo.classes) drops the others. Always a
# warning, whatever their share. A category_id that is not in the file's
# categories at all stays an error.
BENIGN = ('unlabelled', 'unselected')


def _join(root, path):
    return path if not root or osp.isabs(path) else osp.join(root, path)


def validate_coco_file(path: str, key: str,
                       test_mode: bool = False) -> Optional[dict]:
    """Raise if ``path`` is missing or is not a COCO detection file.

    Args:
        path (str): Annotation file.
        key (str): Config key it came from, for the message.
        test_mode (bool): A test set, which may have no annotations
            (COCO test-dev's ``image_info_test-dev2017.json``).

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
    if test_mode and isinstance(data, dict) and 'annotations' not in data:
        data = dict(data, annotations=[])
    missing = [k for k in COCO_KEYS
               if not isinstance(data, dict) or
               not isinstance(data.get(k), list)]
    if missing:
        raise ValueError(
            f'{key}: "{path}" is not COCO format: no {missing} list(s). '
            f'A COCO detection file is a dict with {list(COCO_KEYS)}.')
    return data


def _is_coco(dataset) -> bool:
    """Whether the dataset reads COCO files as ``CocoDataset`` does (LVIS
    and other formats are left to mmdet)."""
    from mmdet.datasets import CocoDataset
    from mmdet.registry import DATASETS
    kind = dataset.get('type', 'CocoDataset')
    cls = kind if isinstance(kind, type) else DATASETS.get(kind)
    return (cls is not None and issubclass(cls, CocoDataset)
            and 'LVIS' not in cls.__name__)


def _loads_masks(pipeline) -> bool:
    """Whether a pipeline config loads instance masks."""
    return any(t.get('type') == 'LoadAnnotations' and t.get('with_mask')
               for t in pipeline or [] if isinstance(t, dict))


def _skips_missing_images(pipeline) -> bool:
    """Whether a pipeline's ``LoadImageFromFile`` skips unreadable images
    (``ignore_empty=True``) instead of raising."""
    return any(t.get('type') == 'LoadImageFromFile' and t.get('ignore_empty')
               for t in pipeline or [] if isinstance(t, dict))


def _class_names(dataset) -> Optional[List[str]]:
    """``metainfo['classes']`` of the dataset mmdet will build: the config's,
    else the dataset class's default (CocoDataset: the 80 COCO classes)."""
    classes = (dataset.get('metainfo') or {}).get('classes')
    if classes is None:
        try:
            from mmdet.registry import DATASETS
            cls = DATASETS.get(dataset.get('type'))
        except Exception:  # unknown or unregistered type: file's categories
            cls = None
        classes = getattr(cls, 'METAINFO', {}).get('classes')
    return [classes] if isinstance(classes, str) else classes


def class_ids(data: dict, dataset) -> Set:
    """Category ids CocoDataset keeps, as its
    ``coco.get_cat_ids(cat_names=metainfo['classes'])`` does.

    Args:
        data (dict): Parsed COCO file.
        dataset (dict): Dataset config.

    Returns:
        set: The kept ids; all of the file's when no classes are known.
    """
    names = _class_names(dataset)
    cats = [c for c in data['categories'] if isinstance(c, dict)]
    if names:  # pycocotools: no names select every category
        cats = [c for c in cats if c.get('name') in names]
    return {c.get('id') for c in cats}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _ann_cause(ann, images: dict, cat_ids: Set) -> Optional[str]:
    """Why ``CocoDataset.parse_data_info`` drops ``ann`` (its rule), or
    None if it keeps it."""
    if not isinstance(ann, dict) or any(
            k not in ann for k in ('id', 'image_id', 'category_id')) or \
            not _is_number(ann.get('area')) or \
            not isinstance(ann.get('bbox'), list) or \
            len(ann['bbox']) != 4 or not all(map(_is_number, ann['bbox'])):
        return 'malformed'
    img = images.get(ann['image_id'])
    if img is None:
        return 'orphan'
    x, y, w, h = ann['bbox']
    if ann['area'] <= 0 or w < 1 or h < 1:
        return 'size'
    inter_w = max(0, min(x + w, img['width']) - max(x, 0))
    inter_h = max(0, min(y + h, img['height']) - max(y, 0))
    if inter_w * inter_h == 0:
        return 'outside'
    return None if ann['category_id'] in cat_ids else 'category'


def _is_image(img) -> bool:
    return isinstance(img, dict) and 'id' in img and \
        isinstance(img.get('file_name'), str) and \
        _is_number(img.get('width')) and _is_number(img.get('height'))


def _annotation_problems(data: dict, cat_ids: Set
                         ) -> Tuple[Dict[str, list], Set, Set]:
    """Annotations CocoDataset drops, by cause.

    Returns:
        tuple: ``{cause: [(annotation id, image id), ...]}``, the ids of
        images with an annotation of the classes (what ``filter_empty_gt``
        keeps) and of images with a valid box.
    """
    images = {img['id']: img for img in data['images'] if _is_image(img)}
    problems = {cause: [] for cause in ANN_CAUSES}
    in_classes, with_box = set(), set()
    for ann in data['annotations']:
        if isinstance(ann, dict) and ann.get('category_id') in cat_ids:
            in_classes.add(ann.get('image_id'))
        if isinstance(ann, dict) and ann.get('ignore', False):
            continue  # mmdet skips these on purpose
        cause = _ann_cause(ann, images, cat_ids)
        if cause is None:
            with_box.add(ann['image_id'])
        elif isinstance(ann, dict):
            problems[cause].append((ann.get('id'), ann.get('image_id')))
        else:
            problems[cause].append((None, None))
    return problems, in_classes, with_box


def _image_problems(data: dict, dataset, img_dir: Optional[str],
                    in_classes: Set, with_box: Set) -> Dict[str, list]:
    """Images that are missing or that CocoDataset's ``filter_data`` (or
    the training) loses, by cause: ``{cause: [(image id, file), ...]}``."""
    problems = {cause: [] for cause in IMG_CAUSES}
    filter_cfg = dataset.get('filter_cfg') or {}
    train = not dataset.get('test_mode', False) and \
        dataset.get('filter_cfg') is not None
    empty_gt = train and filter_cfg.get('filter_empty_gt', False)
    min_size = filter_cfg.get('min_size', 0) if train else 0
    for img in data['images']:
        if not _is_image(img):
            problems['malformed'].append(
                (img.get('id') if isinstance(img, dict) else None, None))
            continue
        path = img['file_name'] if img_dir is None else \
            osp.join(img_dir, img['file_name'])
        entry = (img['id'], path)
        if img_dir is not None and not osp.isfile(path):
            problems['missing'].append(entry)
        if empty_gt and img['id'] not in in_classes:
            problems['unlabelled'].append(entry)
        elif empty_gt and img['id'] not in with_box:
            problems['no_box'].append(entry)
        if min(img['width'], img['height']) < min_size:
            problems['small'].append(entry)
    return problems


def _describe(cause: str, found: list, total: int, what: str) -> str:
    """``'3 of 40 annotations have ... (first ids [..], images [..])'``."""
    first = found[:FIRST_IDS]
    if what == 'annotations':
        where = (f'first ids {[a for a, _ in first]}, images '
                 f'{[i for _, i in first]}')
        return f'{len(found)} of {total} annotations ' \
            f'{ANN_CAUSES[cause][0]} ({where})'
    ids = [i for i, _ in first]
    if cause == 'missing':
        return f'{len(found)} of {total} {IMG_CAUSES[cause][0]} (first: ' \
            f'{[p for _, p in first]})'
    return f'{len(found)} of {total} {IMG_CAUSES[cause][0]} (first ids {ids})'


def _fix(cause: str, what: str, key: str, data: dict, dataset,
         img_dir: Optional[str]) -> str:
    """How to fix a cause, for the error message."""
    if what == 'annotations' and cause == 'category':
        names = [c.get('name') for c in data['categories']
                 if isinstance(c, dict)]
        classes = list(_class_names(dataset) or [])
        return (f'the classes are {classes[:20]} and the file\'s categories '
                f'{names[:20]}: set {key}.metainfo.classes to the names to '
                'train, or fix the category ids')
    if what == 'images' and cause == 'missing':
        return (f'fix {key}.data_root / {key}.data_prefix.img (images are '
                f'looked up in "{img_dir}") or copy the files there; '
                'LoadImageFromFile stops the training at the first one')
    fix = (ANN_CAUSES if what == 'annotations' else IMG_CAUSES)[cause][1]
    return fix.format(key=key)


def _picks_classes(dataset) -> bool:
    """Whether the config sets ``metainfo.classes`` itself: training on a
    subset of the file's categories drops the others on purpose."""
    return bool((dataset.get('metainfo') or {}).get('classes'))


def _over_limit(problems: Dict[str, list], what: str, total: int,
                fatal: Iterable[str]) -> bool:
    """Whether ``problems`` hold a fatal cause or lose more than
    ``MAX_DROPPED_FRACTION`` of the ``total`` annotations or images."""
    if any(problems[cause] for cause in fatal):
        return True
    if what == 'annotations':  # one cause each
        lost = sum(len(found) for cause, found in problems.items()
                   if cause not in BENIGN)
    else:  # an image may have several
        lost = len({entry[0] for cause, found in problems.items()
                    if cause not in BENIGN for entry in found})
    return lost > MAX_DROPPED_FRACTION * total


def validate_coco_content(data: dict, dataset, key: str, ann_file: str,
                          img_dir: Optional[str], log: bool = True) -> List[str]:
    """Raise if CocoDataset cannot load ``data`` or would lose more than a
    few of its annotations or images; log one warning per cause for a few.

    Args:
        data (dict): Parsed COCO file (see :func:`validate_coco_file`).
        dataset (dict): Dataset config.
        key (str): Config key of the dataset, for the messages.
        ann_file (str): Path of ``data``, for the messages.
        img_dir (str, optional): Image folder (``data_root`` joined with
            ``data_prefix.img``); None skips the file check.
        log (bool): Log the warnings (else only return them).

    Returns:
        list[str]: The warnings.
    """
    head = f'{key}.ann_file: "{ann_file}":'
    if not data['images']:
        raise ValueError(
            f'{head} "images" is empty, so the dataset would be empty (and '
            'MMEngine would fail in _serialize_data). Point ann_file at the '
            'annotation file of the split, or regenerate it.')
    ann_problems, in_classes, with_box = _annotation_problems(
        data, class_ids(data, dataset))
    if _picks_classes(dataset):  # the file's own categories, left out
        known = {c.get('id') for c in data['categories'] if isinstance(c, dict)}
        cat_of = {a.get('id'): a.get('category_id')
                  for a in data['annotations'] if isinstance(a, dict)}
        found = ann_problems['category']
        ann_problems['unselected'] = [e for e in found
                                      if cat_of.get(e[0]) in known]
        ann_problems['category'] = [e for e in found
                                    if cat_of.get(e[0]) not in known]
    img_fatal = ['malformed']
    if dataset.get('test_mode', False) or \
            not _skips_missing_images(dataset.get('pipeline')):
        img_fatal.append('missing')  # LoadImageFromFile would raise
    errors, warnings = [], []
    for what, problems, fatal in (
            ('annotations', ann_problems, ['malformed']),
            ('images', _image_problems(data, dataset, img_dir, in_classes,
                                       with_box), img_fatal)):
        total = len(data[what])
        over = _over_limit(problems, what, total, fatal)
        for cause, found in problems.items():
            if not found:
                continue
            msg = f'{head} {_describe(cause, found, total, what)}'
            benign = cause in BENIGN
            if over and not benign:
                errors.append(msg + '. Fix: ' + _fix(
                    cause, what, key, data, dataset, img_dir))
            else:
                warnings.append(msg + '; going on without them' + (
                    f' ({_fix(cause, what, key, data, dataset, img_dir)})'
                    if benign else '') + '.')
    if errors:
        raise ValueError('\n'.join(errors) + (
            f'\n(At most {MAX_DROPPED_FRACTION:.0%} of the annotations and '
            'of the images may be lost, none may be malformed, and no image '
            'file may be missing unless LoadImageFromFile has '
            'ignore_empty=True.)'))
    for msg in warnings if log else []:
        print_log(msg, logger='current', level=logging.WARNING)
    return warnings


def validate_dataloaders(cfg: Config,
                         names: Iterable[str] = ('train_dataloader',
                                                 'val_dataloader'),
                         log: bool = True) -> List[str]:
    """Check every annotation file and image folder the dataloaders use.

    Wrapped datasets (``RepeatDataset``, ...) are followed to the dataset
    that reads files; loaders absent from the config are skipped. A COCO
    file parsed in full is also checked by :func:`validate_coco_content`.

    Args:
        cfg (Config): Full config.
        names (Iterable[str]): Dataloader keys to check.
        log (bool): Log the warnings now. Before the runner is built the
            current MMEngine logger writes to the console only: the tools
            pass False and log them with the runner's logger, so that they
            are in the run's log file.

    Returns:
        list[str]: Warnings (a few annotations or images lost).
    """
    warnings = []
    for name in names:
        loader = cfg.get(name)
        if not loader or 'dataset' not in loader:
            continue
        dataset, key = loader.dataset, f'{name}.dataset'
        while 'ann_file' not in dataset and 'dataset' in dataset:
            dataset, key = dataset.dataset, key + '.dataset'
        if 'ann_file' not in dataset:
            continue
        validate_evaluator_file(cfg, name, dataset, key)
        warnings += validate_dataset(dataset, key, log)
    return warnings


def validate_evaluator_file(cfg: Config, loader: str, dataset,
                            key: str) -> None:
    """Refuse an evaluator that reads another annotation file than its
    loader's dataset: every validation would score the predictions against
    other images (AP 0.000 each epoch, the best checkpoint picked on it).

    Paths are compared after the dataset's ``data_root`` is joined.

    Args:
        cfg (Config): The full config.
        loader (str): ``'val_dataloader'`` or ``'test_dataloader'``.
        dataset (dict): The loader's dataset that has ``ann_file``.
        key (str): Its config key, for the message.

    Raises:
        ValueError: Naming both files and the fix.
    """
    if not loader.endswith('_dataloader'):
        return
    name = loader.replace('_dataloader', '_evaluator')
    evaluators = cfg.get(name)
    if isinstance(evaluators, dict):
        evaluators = [evaluators]
    theirs = _join(dataset.get('data_root'), dataset.ann_file)
    for i, evaluator in enumerate(evaluators or []):
        ann_file = (evaluator or {}).get('ann_file')
        if not ann_file:
            continue
        if osp.abspath(osp.normpath(ann_file)) != \
                osp.abspath(osp.normpath(theirs)):
            where = name if len(evaluators) == 1 and isinstance(
                cfg.get(name), dict) else f'{name}[{i}]'
            raise ValueError(
                f'{where}.ann_file is "{ann_file}" but {key} reads '
                f'"{theirs}" (data_root joined): the evaluator would score '
                'the predictions against other images (AP near 0 every '
                f'time). Set {where}.ann_file to "{theirs}" (with '
                '--cfg-options after changing data_root, both).')


def validate_dataset(dataset, key: str, log: bool = True) -> List[str]:
    """Check the files of one dataset config that has an ``ann_file``.

    Args:
        dataset (dict): Dataset config.
        key (str): Its config key, for the messages.
        log (bool): Log the warnings (else only return them).

    Returns:
        list[str]: Warnings.
    """
    root = dataset.get('data_root')
    if root and not osp.isdir(root):
        raise FileNotFoundError(
            f'{key}.data_root: "{root}" does not exist. Fix the path in '
            'the config or with --cfg-options.')
    ann_file = _join(root, dataset.ann_file)
    if not _is_coco(dataset):
        if not osp.exists(ann_file):
            raise FileNotFoundError(
                f'{key}.ann_file: annotation file "{ann_file}" does not '
                'exist. Fix the path in the config or with --cfg-options.')
        return []  # another format (VOC, LVIS, ...): mmdet reads it
    test_mode = bool(dataset.get('test_mode', False))
    data = validate_coco_file(ann_file, f'{key}.ann_file', test_mode)
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
    if data is not None and not data.get('images'):
        raise ValueError(
            f'{key}.ann_file: "{ann_file}" holds no images, so this '
            'dataset is empty (a validation would fail after the first '
            'epoch). Point it at an annotation file with images.')
    img_dir = (dataset.get('data_prefix') or {}).get('img')
    if img_dir is not None:
        img_dir = _join(root, img_dir)
        if not osp.isdir(img_dir):
            raise FileNotFoundError(
                f'{key}.data_prefix.img: image folder '
                f'"{img_dir}" does not exist.')
    if data is None:
        return []
    return validate_coco_content(data, dataset, key, ann_file, img_dir, log)
