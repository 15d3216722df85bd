import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

import pcka_det  # noqa: F401  (registers components and the pcka_det:: scope)
from format_once import format_each_config_once

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


format_each_config_once()  # in the suite's process (format_once.py)
# the tools' own modules (demo, study, benchmarks, analysis) for their tests
for _folder in ('demo', 'study', 'benchmark', 'analysis'):
    sys.path.insert(0, osp.join(ROOT, 'tools', _folder))


def load_distill_cfg(path: str) -> Config:
    """A repo distillation config that downloads nothing when built."""
    from pcka_det.testing import offline_distiller_cfg
    return offline_distiller_cfg(osp.join(ROOT, path))


def demo_batch(batch_size=2, size=(96, 128), num_classes=80, seed=0,
               with_mask=False):
    """A small random detection batch in the runner's data format (with
    instance masks if ``with_mask``)."""
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(seed)
    return demo_mm_inputs(
        batch_size=batch_size,
        image_shapes=[(3, *size)] * batch_size,
        num_items=[3] * batch_size,
        num_classes=num_classes,
        with_mask=with_mask)


@pytest.fixture(autouse=True)
def mmdet_scope():
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    yield


@pytest.fixture
def saved_figures(monkeypatch):
    """``[(path, figure)]``: every matplotlib figure saved during the test
    (each is still written), so a test can read what a figure shows (its
    axes' lines, bars, images) instead of the size of the file."""
    from matplotlib.figure import Figure
    saved = []
    savefig = Figure.savefig

    def record(fig, fname, *args, **kwargs):
        saved.append((str(fname), fig))
        return savefig(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, 'savefig', record)
    return saved


# The toy distillation config the multi-process, resume and AMP tests train.
TOY_DISTILL = osp.join(ROOT, 'configs', 'toy', 'pcka_retinanet_r18_thin-r18_toy.py')


@pytest.fixture(scope='session')
def tiny_coco(tmp_path_factory):
    """A few synthetic COCO images (8 train, 4 val) shared by a session."""
    from pcka_det.datasets import SyntheticConfig, generate_dataset
    root = tmp_path_factory.mktemp('tiny_coco')
    generate_dataset(str(root), SyntheticConfig(num_train=8, num_val=4))
    return root


@pytest.fixture(scope='session')
def toy_teacher_ckpt(tmp_path_factory):
    """A randomly initialised toy teacher saved as an mmdet checkpoint."""
    from pcka_det.models import build_detector
    cfg = Config.fromfile(TOY_DISTILL)
    torch.manual_seed(0)
    teacher = build_detector(cfg.model.teacher)
    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    torch.save(dict(state_dict=teacher.state_dict()), path)
    return path


def toy_options(data_root, teacher_ckpt, **extra) -> dict:
    """``--cfg-options`` that point the toy distillation config at a tiny
    dataset and a saved teacher (None: a random one), with few iterations
    and no validation."""
    from pcka_det.cli import data_root_options
    opts = {
        **data_root_options(data_root),
        'model.teacher_ckpt': str(teacher_ckpt),
        'train_dataloader.batch_size': 2,
        'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 100,
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 1,
    }
    if teacher_ckpt is None:  # a random teacher, on purpose
        opts['model.allow_random_teacher'] = True
    opts.update(extra)
    return opts

