"""Two training runs in one process (a notebook, a script that trains
twice) each write their ``vis_data`` (``config.py``, ``scalars.json``) into
their own work dir: mmdet's runtime names every visualizer
``'visualizer'``, and MMEngine hands a second run the first run's instance,
so the second run's scalars went to the first run's folder, and the run
failed once that folder was gone."""
import glob
import shutil

import pytest
from conftest import TOY_DISTILL, toy_options

from pcka_det.train import main as train_main

pytestmark = pytest.mark.slow


def _train(work, tiny_coco, teacher):
    opts = toy_options(tiny_coco, teacher,
                       **{'train_dataloader.dataset.indices': 2})
    train_main([TOY_DISTILL, '--work-dir', str(work), '--cfg-options'] +
               [f'{k}={v}' for k, v in opts.items()])


def _vis_files(work, name):
    return glob.glob(str(work / '*' / 'vis_data' / name))


def test_each_run_writes_its_own_vis_data(tmp_path, tiny_coco,
                                          toy_teacher_ckpt):
    first, second, third = (tmp_path / n for n in ('a', 'b', 'c'))
    _train(first, tiny_coco, toy_teacher_ckpt)
    _train(second, tiny_coco, toy_teacher_ckpt)
    for work in (first, second):
        assert len(_vis_files(work, 'config.py')) == 1, work
        assert len(_vis_files(work, 'scalars.json')) == 1, work
    shutil.rmtree(first)  # the first run's folder gone: a third run trains
    _train(third, tiny_coco, toy_teacher_ckpt)
    assert len(_vis_files(third, 'scalars.json')) == 1
