"""A deterministic synthetic detection dataset in COCO format.

Shapes of six classes with varied size, colour and aspect ratio are painted
onto cluttered, noisy backgrounds; later shapes partly occlude earlier ones.
Each object is annotated, as in COCO, with the mask of its *visible*
pixels (compressed RLE, which also holds the ring's hole and shapes cut in
two by occlusion), the tight box of that mask and its pixel area; shapes that
end up mostly hidden are not annotated.
"""
import json
import os
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..fileio import atomic_write_text

CLASSES = ('circle', 'square', 'triangle', 'cross', 'ring', 'star')
# Boxes are kept only if this fraction of the shape stays visible.
MIN_VISIBLE = 0.35
# Smallest RGB distance between a shape's colour and the pixels it covers.
MIN_CONTRAST = 80.0


@dataclass
class SyntheticConfig:
    """Generator settings.

    Args:
        num_train (int): Training images.
        num_val (int): Validation images.
        image_size (tuple[int, int]): ``(width, height)`` of every image.
        max_objects (int): Most shapes per image (at least 1).
        min_size (int): Smallest shape side in pixels.
        max_size (int): Largest shape side in pixels.
        seed (int): Seed of the whole dataset.
        class_names (tuple[str]): Category names written for the six
            shapes, in :data:`CLASSES` order (another name per shape makes
            a dataset that is not ours, for walkthroughs and tests).
    """
    num_train: int = 600
    num_val: int = 150
    image_size: Tuple[int, int] = (192, 192)
    max_objects: int = 6
    min_size: int = 8
    max_size: int = 170
    seed: int = 0
    class_names: Tuple[str, ...] = CLASSES

    def __post_init__(self) -> None:
        if len(self.class_names) != len(CLASSES) or \
                len(set(self.class_names)) != len(CLASSES):
            raise ValueError(f'class_names must be {len(CLASSES)} distinct '
                             f'names (one per shape of {CLASSES}), got '
                             f'{self.class_names}')
        self.class_names = tuple(self.class_names)


def _background(rng: np.random.RandomState, w: int, h: int) -> np.ndarray:
    """Colour gradient, distractor strokes and blobs, sensor noise."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, w if rng.rand() < 0.5 else h)
    ramp = c0[None] * (1 - t[:, None]) + c1[None] * t[:, None]
    img = (np.broadcast_to(ramp[None], (h, w, 3)) if len(t) == w else
           np.broadcast_to(ramp[:, None], (h, w, 3))).copy()
    img = np.ascontiguousarray(img, dtype=np.float32)
    for _ in range(rng.randint(3, 9)):
        p1 = tuple(int(v) for v in rng.randint(0, [w, h]))
        p2 = tuple(int(v) for v in rng.randint(0, [w, h]))
        cv2.line(img, p1, p2, rng.uniform(0, 255, 3).tolist(),
                 int(rng.randint(1, 3)))
    for _ in range(rng.randint(2, 6)):
        center = tuple(int(v) for v in rng.randint(0, [w, h]))
        axes = tuple(int(v) for v in rng.randint(1, 4, 2))
        cv2.ellipse(img, center, axes, float(rng.uniform(0, 180)), 0, 360,
                    rng.uniform(0, 255, 3).tolist(), -1)
    return img


def _shape_mask(rng: np.random.RandomState, cls: str, w: int, h: int,
                size: float) -> np.ndarray:
    """Boolean mask ``(h, w)`` of one shape of class ``cls``."""
    aspect = rng.uniform(0.6, 1.6)
    sx, sy = size * np.sqrt(aspect) / 2, size / np.sqrt(aspect) / 2
    cx = rng.uniform(sx * 0.5, w - sx * 0.5)
    cy = rng.uniform(sy * 0.5, h - sy * 0.5)
    angle = rng.uniform(0, 360)
    mask = np.zeros((h, w), np.uint8)
    center = (int(round(cx)), int(round(cy)))
    axes = (max(1, int(round(sx))), max(1, int(round(sy))))
    if cls in ('circle', 'ring'):
        cv2.ellipse(mask, center, axes, angle, 0, 360, 1, -1)
        if cls == 'ring':
            inner = (max(1, axes[0] // 2), max(1, axes[1] // 2))
            cv2.ellipse(mask, center, inner, angle, 0, 360, 0, -1)
        return mask.astype(bool)
    if cls == 'square':
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    elif cls == 'triangle':
        pts = [(0, -1), (1, 1), (-1, 1)]
    elif cls == 'cross':
        a = 0.33
        pts = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1),
               (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)]
    else:  # star
        pts = [(np.cos(k * np.pi / 5 - np.pi / 2) * (1 if k % 2 == 0 else .4),
                np.sin(k * np.pi / 5 - np.pi / 2) * (1 if k % 2 == 0 else .4))
               for k in range(10)]
    theta = np.deg2rad(angle)
    rot = np.array([[np.cos(theta), -np.sin(theta)],
                    [np.sin(theta), np.cos(theta)]])
    poly = (np.array(pts) * [sx, sy]) @ rot.T + [cx, cy]
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    return mask.astype(bool)


def encode_mask(mask: np.ndarray) -> Dict:
    """COCO compressed RLE of a mask, JSON-ready.

    Args:
        mask (np.ndarray): Boolean ``(h, w)`` mask.

    Returns:
        dict: ``{'size': [h, w], 'counts': str}``.
    """
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    rle['counts'] = rle['counts'].decode('ascii')
    return rle


def render_image(rng: np.random.RandomState, cfg: SyntheticConfig
                 ) -> Tuple[np.ndarray, List[Dict]]:
    """Paint one image; return it (BGR uint8) and its visible objects."""
    w, h = cfg.image_size
    img = _background(rng, w, h)
    owner = np.full((h, w), -1, np.int32)
    masks, labels = [], []
    for i in range(rng.randint(1, cfg.max_objects + 1)):
        cls = int(rng.randint(len(CLASSES)))
        size = float(np.exp(rng.uniform(np.log(cfg.min_size),
                                        np.log(cfg.max_size))))
        mask = _shape_mask(rng, CLASSES[cls], w, h, size)
        if mask.sum() < 4:
            continue
        # keep shapes visible: re-draw colours too close to what is beneath
        under = img[mask].mean(0)
        for _ in range(10):
            color = rng.uniform(0, 255, 3)
            if np.linalg.norm(color - under) > MIN_CONTRAST:
                break
        shade = rng.uniform(0.85, 1.15, (h, w, 1))  # uneven lighting
        img[mask] = np.clip(color[None] * shade[mask], 0, 255)
        owner[mask] = len(masks)
        masks.append(mask)
        labels.append(cls)
    img += rng.normal(0, rng.uniform(3, 12), img.shape).astype(np.float32)
    objects = []
    for k, (mask, cls) in enumerate(zip(masks, labels)):
        visible = owner == k
        if visible.sum() < MIN_VISIBLE * mask.sum():
            continue
        ys, xs = np.nonzero(visible)
        x0, y0 = int(xs.min()), int(ys.min())
        bw, bh = int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1
        objects.append(dict(category_id=cls + 1,
                            bbox=[x0, y0, bw, bh],
                            area=int(visible.sum()),
                            segmentation=encode_mask(visible)))
    return np.clip(img, 0, 255).astype(np.uint8), objects


def generate_split(out_dir: str, split: str, num_images: int,
                   cfg: SyntheticConfig, seed: int) -> str:
    """Write ``<split>/*.png`` and ``annotations/instances_<split>.json``.

    Returns:
        str: Path of the annotation file.
    """
    rng = np.random.RandomState(seed)
    img_dir = osp.join(out_dir, split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    images, annotations = [], []
    for img_id in range(1, num_images + 1):
        img, objects = render_image(rng, cfg)
        name = f'{img_id:06d}.png'
        cv2.imwrite(osp.join(img_dir, name), img)
        images.append(dict(id=img_id, file_name=name, width=img.shape[1],
                           height=img.shape[0]))
        for obj in objects:
            annotations.append(dict(id=len(annotations) + 1,
                                    image_id=img_id, iscrowd=0, **obj))
    coco = dict(
        info=dict(description=f'pcka_det synthetic shapes, {split}',
                  seed=seed),
        images=images,
        annotations=annotations,
        categories=[dict(id=i + 1, name=n, supercategory='shape')
                    for i, n in enumerate(cfg.class_names)])
    ann_file = osp.join(out_dir, 'annotations', f'instances_{split}.json')
    # the json appears only when complete
    return atomic_write_text(ann_file, json.dumps(coco))


def generate_dataset(out_dir: str, cfg: SyntheticConfig) -> Dict[str, str]:
    """Generate the train and val splits.

    Args:
        out_dir (str): Dataset root (``data_root`` of the toy configs).
        cfg (SyntheticConfig): Settings.

    Returns:
        dict[str, str]: Annotation file per split.
    """
    return {
        'train': generate_split(out_dir, 'train', cfg.num_train, cfg,
                                cfg.seed),
        'val': generate_split(out_dir, 'val', cfg.num_val, cfg,
                              cfg.seed + 1_000_003),
    }
