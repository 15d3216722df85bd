import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

import pcka_det  # noqa: F401  (registers components and the pcka_det:: scope)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))


def load_distill_cfg(path: str) -> Config:
    """Load a distillation config with no download: random teacher, no
    pretrained backbones."""
    cfg = Config.fromfile(osp.join(ROOT, path))
    cfg.model.teacher_ckpt = None
    for side in ('student', 'teacher'):
        cfg.model[side].setdefault('backbone', {})['init_cfg'] = None
    return cfg


def demo_batch(batch_size=2, size=(96, 128), num_classes=80, seed=0):
    """A small random detection batch in the runner's data format."""
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(seed)
    return demo_mm_inputs(
        batch_size=batch_size,
        image_shapes=[(3, *size)] * batch_size,
        num_items=[3] * batch_size,
        num_classes=num_classes)


@pytest.fixture(autouse=True)
def mmdet_scope():
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    yield
