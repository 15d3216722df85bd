"""Unit tests of :class:`pcka_det.engine.hooks.AtomicCheckpointHook` on a
tiny MMEngine ``Runner``: the order of the writes (a complete checkpoint,
renamed into place, then ``last_checkpoint``, then old checkpoints
deleted), stale temporaries removed, random states in the checkpoints.

Every write, rename and delete the run makes is recorded (``LocalBackend.put``,
``os.replace``, ``os.remove`` wrapped), and before each one the directory is
checked: ``last_checkpoint``, when present, names a complete checkpoint."""
import itertools
import os
import os.path as osp
import random

import numpy as np
import pytest
import torch
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

import pcka_det  # noqa: F401  (registers components)
from pcka_det.engine.hooks import AtomicCheckpointHook
from pcka_det.rng import rng_state, set_rng_state

_names = itertools.count()
STALE = ('epoch_7.pth.tmp', 'iter_40.pth.tmp')


class _Data(Dataset):

    def __len__(self):
        return 4

    def __getitem__(self, i):
        # a random augmentation: moves the global streams at every batch
        noise = random.random() + np.random.rand() + float(torch.rand(()))
        return dict(inputs=torch.tensor([float(i), noise]))


class _Model(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        return dict(loss=out.square().mean()) if mode == 'loss' else out


class _RngBeforeSave(Hook):
    """Records the random states in ``after_train_iter``/``after_train_epoch``
    just before the checkpoint hook (priority VERY_LOW) runs."""

    priority = 'LOW'

    def __init__(self):
        self.states = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.states.append(('iter', runner.iter + 1, rng_state()))

    def after_train_epoch(self, runner):
        self.states.append(('epoch', runner.epoch + 1, rng_state()))


def _read_ckpt(path):
    return torch.load(path, map_location='cpu', weights_only=False)


class _Rising(BaseMetric):
    """A validation metric that improves at every validation."""

    def __init__(self):
        super().__init__()
        self.validations = 0

    def process(self, data_batch, data_samples):
        self.results.append(0)

    def compute_metrics(self, results):
        self.validations += 1
        return dict(score=float(self.validations))


def _train(work_dir, hook_args, train_cfg, validate=False):
    """Run a tiny Runner with an AtomicCheckpointHook, recording every
    checkpoint write, rename and delete under ``work_dir`` (``validate``:
    a validation after every epoch, each a new best; the validation data
    move the random streams)."""
    work_dir = str(work_dir)
    events, broken = [], []
    last = osp.join(work_dir, 'last_checkpoint')

    def check(when):
        # at any instant: last_checkpoint names a complete checkpoint
        if not osp.exists(last):
            return
        with open(last) as f:
            named = f.read().strip()
        try:
            ckpt = _read_ckpt(named)
            assert 'state_dict' in ckpt and 'meta' in ckpt
        except Exception as e:  # noqa: BLE001  (recorded, asserted below)
            broken.append((when, named, repr(e)))

    def mine(path):
        return osp.dirname(osp.abspath(str(path))) == work_dir

    put, replace, remove = LocalBackend.put, os.replace, os.remove

    def put_rec(self, obj, filepath):
        if mine(filepath):
            check(('put', osp.basename(str(filepath))))
            events.append(('put', osp.basename(str(filepath))))
        put(self, obj, filepath)
        if mine(filepath):
            check(('after put', osp.basename(str(filepath))))

    def replace_rec(src, dst, *args, **kwargs):
        if mine(dst):
            check(('replace', osp.basename(str(dst))))
            if str(src).endswith('.pth.tmp'):  # renamed once complete
                _read_ckpt(src)
            events.append(('replace', osp.basename(str(src)),
                           osp.basename(str(dst))))
        replace(src, dst, *args, **kwargs)
        if mine(dst):
            check(('after replace', osp.basename(str(dst))))

    def remove_rec(path, *args, **kwargs):
        if mine(path):
            check(('remove', osp.basename(str(path))))
            events.append(('remove', osp.basename(str(path))))
        remove(path, *args, **kwargs)
        if mine(path):
            check(('after remove', osp.basename(str(path))))

    recorder = _RngBeforeSave()
    val = dict(val_dataloader=dict(
        dataset=_Data(), batch_size=2, num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False),
        collate_fn=dict(type='default_collate')),
        val_cfg=dict(), val_evaluator=Evaluator(_Rising())) if validate \
        else {}
    runner = Runner(
        model=_Model(),
        work_dir=work_dir,
        experiment_name=f'test_unit_atomic_{next(_names)}',
        train_dataloader=dict(
            dataset=_Data(), batch_size=2, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        train_cfg=train_cfg,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(checkpoint=AtomicCheckpointHook(**hook_args),
                           logger=dict(type='LoggerHook', interval=100)),
        custom_hooks=[recorder],
        randomness=dict(seed=0),
        default_scope='mmdet',
        log_level='WARNING', **val)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LocalBackend, 'put', put_rec)
        mp.setattr(os, 'replace', replace_rec)
        mp.setattr(os, 'remove', remove_rec)
        runner.train()
    return dict(events=events, broken=broken, states=recorder.states,
                work_dir=work_dir)


@pytest.fixture(scope='module')
def by_epoch(tmp_path_factory):
    """3 epochs of 2 iterations, a checkpoint each epoch, keep 1; two stale
    temporaries of a killed save in the work dir beforehand."""
    work = tmp_path_factory.mktemp('atomic_epoch')
    for name in STALE:
        (work / name).write_bytes(b'half a checkpoint')
    (work / 'notes.txt').write_text('not ours')
    return _train(work, dict(interval=1, max_keep_ckpts=1),
                  dict(by_epoch=True, max_epochs=3))


@pytest.fixture(scope='module')
def with_best(tmp_path_factory):
    """3 epochs of 2 iterations, a checkpoint and a validation each epoch,
    each validation a new best (``save_best``), keep 1."""
    work = tmp_path_factory.mktemp('atomic_best')
    return _train(work, dict(interval=1, max_keep_ckpts=1, save_best='score',
                             rule='greater'),
                  dict(by_epoch=True, max_epochs=3, val_interval=1),
                  validate=True)


@pytest.fixture(scope='module')
def by_iter(tmp_path_factory):
    """6 iterations, a checkpoint every 2, keep 2."""
    work = tmp_path_factory.mktemp('atomic_iter')
    return _train(work, dict(interval=2, by_epoch=False, max_keep_ckpts=2),
                  dict(by_epoch=False, max_iters=6))


def _save(name):
    """The events of one save of checkpoint ``name``, in order."""
    return [('put', f'{name}.tmp'), ('replace', f'{name}.tmp', name),
            ('replace', 'last_checkpoint.tmp', 'last_checkpoint')]


def test_write_order_by_epoch(by_epoch):
    # the stale temporaries go first (before_train), then each save:
    # temporary written, renamed complete, last_checkpoint rewritten
    # through its own temporary, and only then the oldest checkpoint deleted
    events = by_epoch['events']
    assert set(events[:2]) == {('remove', name) for name in STALE}
    assert events[2:] == [
        *_save('epoch_1.pth'),
        *_save('epoch_2.pth'), ('remove', 'epoch_1.pth'),
        *_save('epoch_3.pth'), ('remove', 'epoch_2.pth'),
    ]


def test_write_order_by_iter_keeps_two(by_iter):
    assert by_iter['events'] == [
        *_save('iter_2.pth'),
        *_save('iter_4.pth'),
        *_save('iter_6.pth'), ('remove', 'iter_2.pth'),
    ]


@pytest.mark.parametrize('run', ['by_epoch', 'by_iter'])
def test_last_checkpoint_always_names_a_complete_file(run, request):
    result = request.getfixturevalue(run)
    assert result['broken'] == []


@pytest.mark.parametrize('run, left, newest', [
    ('by_epoch', {'epoch_3.pth'}, 'epoch_3.pth'),
    ('by_iter', {'iter_4.pth', 'iter_6.pth'}, 'iter_6.pth'),
])
def test_what_the_directory_holds_at_the_end(run, left, newest, request):
    result = request.getfixturevalue(run)
    work = result['work_dir']
    files = {f for f in os.listdir(work) if osp.isfile(osp.join(work, f))}
    assert {f for f in files if '.pth' in f} == left  # no temporaries
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read() == osp.join(work, newest)


def test_stale_temporaries_removed_other_files_kept(by_epoch):
    work = by_epoch['work_dir']
    assert not any(osp.exists(osp.join(work, name)) for name in STALE)
    assert osp.isfile(osp.join(work, 'notes.txt'))


def _same_state(a, b):
    return (a['python'] == b['python']
            and all(np.array_equal(x, y) if isinstance(x, np.ndarray)
                    else x == y for x, y in zip(a['numpy'], b['numpy']))
            and torch.equal(a['torch'], b['torch']))


@pytest.mark.parametrize('run, kind, names', [
    ('by_epoch', 'epoch', {3: 'epoch_3.pth'}),
    ('by_iter', 'iter', {4: 'iter_4.pth', 6: 'iter_6.pth'}),
])
def test_checkpoints_hold_the_rng_state_of_the_save(run, kind, names,
                                                     request):
    """``rng_state`` is a list (one entry per rank) holding the random
    states of the moment of the save: those a hook read just before the
    checkpoint hook ran, at the same step."""
    result = request.getfixturevalue(run)
    seen = {step: s for k, step, s in result['states'] if k == kind}
    for step, name in names.items():
        ckpt = _read_ckpt(osp.join(result['work_dir'], name))
        states = ckpt['rng_state']
        assert isinstance(states, list) and len(states) == 1
        assert set(states[0]) >= {'python', 'numpy', 'torch'}
        assert _same_state(states[0], seen[step])
        # and not those of any other step
        others = [s for st, s in seen.items() if st != step]
        assert not any(_same_state(states[0], s) for s in others)


def test_best_written_atomically_then_the_previous_deleted(with_best):
    # each new best: written to a temporary, renamed complete; MMEngine's
    # re-save of the regular checkpoint (recording the new best); and only
    # then the previous best deleted (MMEngine deletes it first)
    def best(e):
        name = f'best_score_epoch_{e}.pth'
        return [('put', f'{name}.tmp'), ('replace', f'{name}.tmp', name)]

    assert with_best['events'] == [
        *_save('epoch_1.pth'), *best(1), *_save('epoch_1.pth'),
        *_save('epoch_2.pth'), ('remove', 'epoch_1.pth'),
        *best(2), *_save('epoch_2.pth'), ('remove', 'best_score_epoch_1.pth'),
        *_save('epoch_3.pth'), ('remove', 'epoch_2.pth'),
        *best(3), *_save('epoch_3.pth'), ('remove', 'best_score_epoch_2.pth'),
    ]
    assert with_best['broken'] == []


def test_resave_after_a_new_best_keeps_the_training_streams(with_best):
    """The regular checkpoint MMEngine saves again during the validation
    holds the random states of the end of the epoch, not the validation's
    (its data drew from every stream)."""
    seen = {step: s for k, step, s in with_best['states'] if k == 'epoch'}
    ckpt = _read_ckpt(osp.join(with_best['work_dir'], 'epoch_3.pth'))
    assert ckpt['message_hub']['runtime_info']['best_ckpt'].endswith(
        'best_score_epoch_3.pth')  # the re-saved one
    assert _same_state(ckpt['rng_state'][0], seen[3])


def test_validation_does_not_move_the_training_streams():
    hook = AtomicCheckpointHook(interval=1)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    before = rng_state()
    hook.before_val(None)
    random.random(), np.random.rand(), torch.rand(3)  # a validation run
    hook.after_val(None)
    assert _same_state(rng_state(), before)
    set_rng_state(before)

