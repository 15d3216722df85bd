"""Unit tests of :mod:`pcka_det.rng` and of
:class:`pcka_det.engine.train_loop.ExactResumeEpochBasedTrainLoop` on a tiny
MMEngine ``Runner``: a run resumed from a checkpoint taken inside an epoch
trains only the rest of that epoch, with the random states of the
interrupted run, and ends where an uninterrupted run ends."""
import itertools
import os.path as osp
import random

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from torch import nn
from torch.utils.data import Dataset

import pcka_det  # noqa: F401  (registers components)
from pcka_det.engine import DistillRunner, ExactResumeEpochBasedTrainLoop
from pcka_det.engine.hooks import AtomicCheckpointHook
from pcka_det.rng import rng_state, set_rng_state

_names = itertools.count()
ITERS_PER_EPOCH, EPOCHS = 3, 2  # 6 samples, batches of 2


def _draws():
    return (random.random(), np.random.rand(4).tolist(),
            torch.rand(4).tolist(), torch.randint(0, 1 << 30, (2,)).tolist())


def _same_state(a, b):
    return (a['python'] == b['python']
            and all(np.array_equal(x, y) if isinstance(x, np.ndarray)
                    else x == y for x, y in zip(a['numpy'], b['numpy']))
            and torch.equal(a['torch'], b['torch']))


# ------------------------------------------------------------------ rng.py
def test_rng_state_round_trip():
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    state = rng_state()
    after_save = _draws()
    more = _draws()
    assert more != after_save  # the streams did move on
    set_rng_state(state)
    assert _draws() == after_save
    assert _draws() == more


@pytest.mark.parametrize('stream', ['python', 'numpy', 'torch'])
def test_each_stream_is_restored(stream):
    """One stream moved after the save is brought back (each generator is
    restored, not only the first)."""
    random.seed(4), np.random.seed(4), torch.manual_seed(4)
    state = rng_state()
    expected = _draws()
    set_rng_state(state)
    dict(python=random.random, numpy=np.random.rand,
         torch=lambda: torch.rand(1))[stream]()
    set_rng_state(state)
    assert _draws() == expected


# ---------------------------------------------------------------- the loop
class _Data(Dataset):

    def __len__(self):
        return ITERS_PER_EPOCH * 2

    def __getitem__(self, i):
        # a random augmentation drawn from the global streams
        noise = random.random() + np.random.rand() + float(torch.rand(()))
        return dict(inputs=torch.tensor([float(i), noise]),
                    idx=torch.tensor(i))


class _Model(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, idx=None, mode='tensor'):
        out = self.linear(inputs)
        return dict(loss=(out - 1).square().mean()) if mode == 'loss' else out


class _Recorder(Hook):
    """What each trained iteration saw. At ``before_train`` (after the
    resume, before the loop runs) it sets the loop's pending random states
    to ``pending`` (DistillRunner.resume sets them from the checkpoint too;
    set here, the loop is tested on its own)."""

    priority = 'VERY_HIGH'

    def __init__(self, pending='unset'):
        self.pending = pending
        self.iters = []

    def before_train(self, runner):
        if not isinstance(self.pending, str):
            runner.train_loop.pending_rng_state = self.pending

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.iters.append(dict(
            iter=runner.iter, epoch=runner.epoch, batch_idx=batch_idx,
            idx=data_batch['idx'].tolist(),
            inputs=data_batch['inputs'].clone(), rng=rng_state(),
            pending=runner.train_loop.pending_rng_state))


def _runner(work_dir, recorder, checkpoint=None, resume_from=None):
    # DistillRunner: MMEngine's own resume reads checkpoints with torch.load's
    # default weights_only=True, which refuses them (torch >= 2.6)
    torch.manual_seed(0)
    return DistillRunner(
        model=_Model(),
        work_dir=str(work_dir),
        experiment_name=f'test_unit_exact_resume_{next(_names)}',
        train_dataloader=dict(
            dataset=_Data(), batch_size=2, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        train_cfg=dict(type=ExactResumeEpochBasedTrainLoop,
                       max_epochs=EPOCHS),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        default_hooks=dict(checkpoint=checkpoint,
                           logger=dict(type='LoggerHook', interval=100)),
        custom_hooks=[recorder],
        randomness=dict(seed=0),
        load_from=resume_from,
        resume=resume_from is not None,
        default_scope='mmdet',
        log_level='WARNING')


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """An uninterrupted run of 2 epochs x 3 iterations, a checkpoint (with
    random states) after every iteration."""
    work = tmp_path_factory.mktemp('exact_resume_ref')
    recorder = _Recorder()
    runner = _runner(work, recorder, AtomicCheckpointHook(
        interval=1, by_epoch=False))
    runner.train()
    assert [r['iter'] for r in recorder.iters] == list(
        range(ITERS_PER_EPOCH * EPOCHS))
    return dict(work=work, iters=recorder.iters,
                weights=[p.detach().clone()
                         for p in runner.model.parameters()])


def _resume(tmp_path, reference, name, set_pending=True, epoch_meta=None):
    ckpt_path = osp.join(reference['work'], name)
    ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=False)
    if epoch_meta is not None:  # as an epoch-end checkpoint would say
        ckpt['meta']['epoch'] = epoch_meta
        ckpt_path = str(tmp_path / f'epoch_{epoch_meta}.pth')
        torch.save(ckpt, ckpt_path)
    recorder = _Recorder(ckpt['rng_state'][0] if set_pending else None)
    runner = _runner(tmp_path, recorder, resume_from=ckpt_path)
    runner.train()
    return recorder.iters, runner


def _check_same(resumed, expected):
    assert len(resumed) == len(expected)
    for got, want in zip(resumed, expected):
        assert (got['iter'], got['epoch'], got['batch_idx'], got['idx']) == \
            (want['iter'], want['epoch'], want['batch_idx'], want['idx'])
        assert torch.equal(got['inputs'], want['inputs'])  # same augmentation
        assert _same_state(got['rng'], want['rng'])


# (checkpoint, iterations the interrupted run had trained, epoch in meta)
# iter_4: 1 of epoch 2's 3 iterations trained; iter_5: 2 of them;
# iter_3: all of epoch 1 (saved after its last iteration, before the epoch
# ended); iter_3 read as epoch_1.pth: the epoch-end checkpoint
RESUMES = [('iter_4.pth', 4, None), ('iter_5.pth', 5, None),
           ('iter_3.pth', 3, None), ('iter_3.pth', 3, 1)]


@pytest.mark.parametrize('name, done, epoch_meta', RESUMES,
                         ids=['iter4', 'iter5', 'iter3', 'epoch1'])
def test_resume_trains_only_the_rest(tmp_path, reference, name, done,
                                     epoch_meta):
    resumed, runner = _resume(tmp_path, reference, name,
                              epoch_meta=epoch_meta)
    # the iterations not yet trained, each once, with the batches, the
    # augmentation and the random states of the uninterrupted run
    expected = reference['iters'][done:]
    assert [r['iter'] for r in resumed] == list(
        range(done, ITERS_PER_EPOCH * EPOCHS))
    _check_same(resumed, expected)
    assert runner.iter == ITERS_PER_EPOCH * EPOCHS
    assert runner.epoch == EPOCHS
    # and the run ends on the uninterrupted run's model
    for got, want in zip(runner.model.parameters(), reference['weights']):
        assert torch.equal(got.detach(), want)


def test_pending_state_restored_before_the_first_resumed_iteration(
        tmp_path, reference):
    resumed, runner = _resume(tmp_path, reference, 'iter_4.pth')
    first = resumed[0]
    assert first['pending'] is None  # consumed ...
    # ... and in force: the random states at the first resumed iteration
    # are the uninterrupted run's at that iteration, i.e. the saved states
    # advanced by the fetch of that iteration's batch only
    assert _same_state(first['rng'], reference['iters'][4]['rng'])
    assert runner.train_loop.pending_rng_state is None


def test_without_pending_state_the_rest_is_trained_with_other_draws(
        tmp_path, reference):
    """No saved random states: the same batches (the sampler is seeded by
    epoch) are trained, but the augmentation differs. This shows the
    previous tests see the restored states, not a coincidence."""
    resumed, _ = _resume(tmp_path, reference, 'iter_4.pth',
                         set_pending=False)
    expected = reference['iters'][4:]
    assert [(r['iter'], r['batch_idx'], r['idx']) for r in resumed] == \
        [(r['iter'], r['batch_idx'], r['idx']) for r in expected]
    assert not torch.equal(resumed[0]['inputs'], expected[0]['inputs'])
