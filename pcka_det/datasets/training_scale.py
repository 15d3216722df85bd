"""The image size a config trains at, read from its training pipeline."""
import math
from typing import Optional, Tuple

from mmengine.config import Config

# What mmdet's COCO configs train at, when a pipeline names no size.
DEFAULT_SCALE = (800, 1333)


def _hw(scale) -> Optional[Tuple[int, int]]:
    """mmdet's ``(w, h)`` scale (or a single side) as ``(short, long)``;
    a ``keep_ratio`` resize bounds the image by these two sides."""
    if isinstance(scale, (int, float)):
        return int(scale), int(scale)
    if isinstance(scale, (tuple, list)) and len(scale) == 2 and all(
            isinstance(v, (int, float)) for v in scale):
        return int(min(scale)), int(max(scale))
    return None


def _smallest(scales) -> Optional[Tuple[int, int]]:
    sizes = [hw for hw in map(_hw, scales) if hw is not None]
    return min(sizes, key=lambda hw: hw[0] * hw[1]) if sizes else None


def _pipelines(dataset) -> list:
    """The pipelines of a dataset config, through wrappers (``dataset``,
    ``RepeatDataset``...) and ``ConcatDataset``'s ``datasets``."""
    if not isinstance(dataset, dict):
        return []
    if 'pipeline' in dataset:
        return [[t for t in dataset.get('pipeline') or []
                 if isinstance(t, dict)]]
    if 'dataset' in dataset:
        return _pipelines(dataset['dataset'])
    return [p for d in dataset.get('datasets') or [] for p in _pipelines(d)]


def _pipeline_scale(pipeline: list):
    """The smallest ``((H, W), source)`` of one training pipeline, or None
    (see :func:`training_scale`)."""
    found = None
    for t in pipeline:
        kind = t.get('type', '')
        if kind == 'Pad' and _hw(t.get('size')) is not None:
            w, h = t['size'] if isinstance(t['size'], (tuple, list)) else \
                (t['size'], t['size'])
            return (int(h), int(w)), 'Pad size of the training pipeline'
        if kind == 'RandomCrop' and t.get('crop_type', 'absolute') == \
                'absolute' and _hw(t.get('crop_size')) is not None:
            w, h = t['crop_size']
            found = (int(h), int(w)), 'RandomCrop of the training pipeline'
        if kind == 'RandomChoice':  # DINO/DETR: one branch per image
            branches = [_pipeline_scale([x for x in b if isinstance(x, dict)])
                        for b in t.get('transforms') or []
                        if isinstance(b, (list, tuple))]
            branches = [b for b in branches if b is not None]
            if branches:
                hw = min((b[0] for b in branches),
                         key=lambda hw: hw[0] * hw[1])
                found = hw, ('RandomChoice of the training pipeline (its '
                             'smallest branch)')
        # a later resize decides the size an earlier one set
        if (found is None or found[1].endswith(' scale of the training '
                                               'pipeline')) and \
                kind in ('Resize', 'RandomResize', 'RandomChoiceResize'):
            scales = t.get('scales') if kind == 'RandomChoiceResize' else \
                t.get('scale')
            if _hw(scales) is not None:
                scales = [scales]
            hw = _smallest(scales or [])
            if hw is not None:
                low = min(t.get('ratio_range') or (1.0, ))
                hw = (math.ceil(hw[0] * low), math.ceil(hw[1] * low))
                found = hw, f'{kind} scale of the training pipeline'
    return found


def training_scale(cfg: Config, preprocessor=None
                   ) -> Tuple[Tuple[int, int], str]:
    """The smallest ``(H, W)`` image of the training pipeline.

    A fixed batch size of the model's preprocessor (``BatchFixedSizePad``,
    the LSJ configs; the smallest ``BatchSyncRandomResize``, YOLOX) wins,
    then a ``Pad`` to a fixed size (RTMDet) or a ``RandomCrop``; otherwise the
    smallest scale of the last ``Resize``, ``RandomResize`` (times the
    lowest ``ratio_range``) or ``RandomChoiceResize``, landscape
    (``H <= W``); a ``RandomChoice`` (DINO, DETR) gives its smallest
    branch. The
    smallest size is the one where a level has the fewest cells, hence where
    a patch size may leave a single patch.

    Args:
        cfg (Config): A full training config.
        preprocessor (nn.Module, optional): The (student's) built data
            preprocessor, whose ``batch_augments`` may fix the batch size.

    Returns:
        tuple: ``(H, W)`` and where it came from (for the log).
    """
    for aug in getattr(preprocessor, 'batch_augments', None) or []:
        size = getattr(aug, 'size', None)  # BatchFixedSizePad
        if type(aug).__name__ == 'BatchFixedSizePad' and _hw(size):
            return (int(size[0]), int(size[1])), \
                'BatchFixedSizePad of the preprocessor'
        low = getattr(aug, '_random_size_range', None)
        if type(aug).__name__ == 'BatchSyncRandomResize' and low:
            side = int(low[0] * getattr(aug, '_size_divisor', 1))
            return (side, side), 'BatchSyncRandomResize of the preprocessor'
    dataset = (cfg.get('train_dataloader') or {}).get('dataset') or {}
    sizes = [size for size in map(_pipeline_scale, _pipelines(dataset))
             if size is not None]
    # several datasets (ConcatDataset): the smallest image of any
    found = min(sizes, key=lambda s: s[0][0] * s[0][1]) if sizes else None
    if found is None:
        return DEFAULT_SCALE, ('no size in the training pipeline; mmdet\'s '
                               'COCO scale assumed')
    return found


def padded_training_scale(cfg: Config, preprocessor=None
                          ) -> Tuple[Tuple[int, int], str]:
    """:func:`training_scale` padded as the preprocessor pads a batch
    (``pad_size_divisor``): the size the pre-flight check runs at.

    Args:
        cfg (Config): A full training config.
        preprocessor (nn.Module, optional): The (student's) built data
            preprocessor.

    Returns:
        tuple: ``(H, W)`` and where it came from.
    """
    (h, w), source = training_scale(cfg, preprocessor)
    divisor = getattr(preprocessor, 'pad_size_divisor', 1) or 1
    return (math.ceil(h / divisor) * divisor,
            math.ceil(w / divisor) * divisor), source
