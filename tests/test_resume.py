"""A pre-empted distillation run resumed with --resume continues at the
saved iteration, runs only the remaining ones and ends where an
uninterrupted run ends; checkpoints never hold the teacher."""
import glob
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TOY_DISTILL, toy_options
from mmengine.hooks import Hook
from mmengine.runner import Runner

from pcka_det.runtime import prepare_cfg


class Preempted(Exception):
    pass


class PreemptAfterEpoch(Hook):
    """Stops training once epoch ``k`` and its checkpoint are done."""

    def __init__(self, k):
        self.k = k

    def after_train_epoch(self, runner):
        if runner.epoch + 1 == self.k:
            raise Preempted


def _options(tiny_coco, teacher, epochs):
    # No random flips: MMEngine does not restore the data pipeline's RNG on
    # resume, so only a deterministic pipeline can reproduce bit for bit.
    return toy_options(tiny_coco, teacher, **{
        'train_cfg.max_epochs': epochs,
        'train_dataloader.dataset.pipeline.3.prob': 0.0,
        'randomness.seed': 0,
        'default_hooks.checkpoint.max_keep_ckpts': 2,
    })


def _to_args(opts):
    return ['--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]


def _train_cli(work_dir, opts, *extra):
    out = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'), TOY_DISTILL,
         '--work-dir', str(work_dir), *extra, *_to_args(opts)],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _student(ckpt):
    state = torch.load(ckpt, map_location='cpu', weights_only=False)
    return {k[len('student.'):]: v for k, v in state['state_dict'].items()
            if k.startswith('student.')}


@pytest.mark.slow
def test_resume_matches_uninterrupted_run(tmp_path, tiny_coco,
                                          toy_teacher_ckpt):
    opts = _options(tiny_coco, toy_teacher_ckpt, epochs=2)
    assert prepare_cfg(TOY_DISTILL, opts).train_dataloader.dataset.pipeline[
        3].type == 'RandomFlip'

    _train_cli(tmp_path / 'straight', opts)

    # pre-empted after epoch 1 (of 2), then resumed from the CLI
    cfg = prepare_cfg(TOY_DISTILL, opts, str(tmp_path / 'resumed'))
    runner = Runner.from_cfg(cfg)
    runner.register_hook(PreemptAfterEpoch(1), priority='LOWEST')
    with pytest.raises(Preempted):
        runner.train()
    ckpt1 = torch.load(tmp_path / 'resumed' / 'epoch_1.pth',
                       weights_only=False)
    assert not any(k.startswith('teacher') for k in ckpt1['state_dict'])
    assert not (tmp_path / 'resumed' / 'epoch_2.pth').exists()
    runs_before = set(glob.glob(str(tmp_path / 'resumed' / '2*')))
    out = _train_cli(tmp_path / 'resumed', opts, '--resume')
    # 8 images, batch 2: 4 iterations an epoch. The resumed run starts
    # after iteration 4 and trains iterations 5-8 (epoch 2) only.
    assert 'resumed epoch: 1, iter: 4' in out.stdout + out.stderr
    (run_dir, ) = set(glob.glob(str(tmp_path / 'resumed' / '2*'))) - \
        runs_before
    with open(osp.join(run_dir, 'vis_data', 'scalars.json')) as f:
        logged = [json.loads(line) for line in f]
    trained = [(r['epoch'], r['iter']) for r in logged if 'loss' in r]
    assert trained == [(2, 5), (2, 6), (2, 7), (2, 8)], trained

    # Reproducible: the same seed gives bit-identical weights (the straight
    # CLI run and the pre-empted in-process run, after epoch 1)
    first = _student(tmp_path / 'straight' / 'epoch_1.pth')
    second = _student(tmp_path / 'resumed' / 'epoch_1.pth')
    assert first.keys() == second.keys()
    for k in first:
        assert torch.equal(first[k], second[k]), k

    straight = _student(tmp_path / 'straight' / 'epoch_2.pth')
    resumed = _student(tmp_path / 'resumed' / 'epoch_2.pth')
    assert straight.keys() == resumed.keys()
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=1e-5,
                                   atol=1e-6, msg=k)
    # the student moved during epoch 2 (the comparison is not vacuous)
    epoch1 = {k[len('student.'):]: v for k, v in ckpt1['state_dict'].items()
              if k.startswith('student.')}
    assert any(not torch.allclose(epoch1[k], straight[k])
               for k in straight if straight[k].is_floating_point())
