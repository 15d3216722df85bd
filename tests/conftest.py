import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

import pcka_det  # noqa: F401  (registers components and the pcka_det:: scope)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


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


# `make test` hands whole files to 2 processes (pytest-xdist, --dist
# loadfile). xdist's default queue is by number of tests, most first, which
# put the slowest files (a single 60-90 s test each: the demo, the
# walkthrough, the overhead benchmark) last, leaving one core idle while the
# other finished them. The queue is instead the slowest files first, by
# their seconds in a clean-clone suite run (2 cores, 2026-12-03), longest
# first; the files not listed follow in xdist's own order (most tests
# first). A listed file that no longer exists is ignored.
SLOWEST_FILES = [
    'e2e/test_crash_safety.py',
    'e2e/test_coco_configs.py',
    'e2e/test_coco_commands.py',
    'e2e/test_multinode.py',
    'e2e/test_demo.py',
    'e2e/test_distributed.py',
    'e2e/test_wheel.py',
    'e2e/test_benchmark_overhead_run.py',
    'e2e/test_gpu_report.py',
    'e2e/test_toy_families.py',
    'unit/test_checkpoint_loading.py',
    'e2e/test_walkthrough.py',
    'e2e/test_first_run.py',
    'unit/test_new_config.py',
    'e2e/test_export_cli.py',
    'e2e/test_schedule_resume.py',
    'e2e/test_rtmdet_hooks.py',
]


# The end-to-end tests' runs, checkpoints and hub caches held up to 3.8 GB
# at once in the temporary folder (clean-clone CI run, 2026-12-03; README);
# with less than this free the suite cannot finish, and fails half-way with
# ENOSPC scattered over every file (as CI did on 2026-12-03).
MIN_FREE_TMP_GB = 3


def pytest_configure(config):
    if hasattr(config.option, 'loadscopereorder'):  # pytest-xdist
        config.option.loadscopereorder = False  # the order set below
    if not hasattr(config, 'workerinput'):  # once, in the main process
        import shutil
        import tempfile
        folder = tempfile.gettempdir()
        free = shutil.disk_usage(folder).free / 2**30
        if free < MIN_FREE_TMP_GB:
            pytest.exit(f'{free:.1f} GB free in {folder}; the suite needs '
                        f'{MIN_FREE_TMP_GB} GB there. Free space or point '
                        'TMPDIR at a disk with room.', returncode=4)


def pytest_collection_modifyitems(config, items):
    """Whole files, the slowest first (``SLOWEST_FILES``), then the others
    by number of tests (xdist's own order); each file's tests keep theirs."""
    def path(item):
        return osp.relpath(str(item.path), osp.join(ROOT, 'tests'))

    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    count = {}
    for item in items:
        count[path(item)] = count.get(path(item), 0) + 1
    items.sort(key=lambda item: (rank.get(path(item), len(rank)),
                                 -count[path(item)]))
