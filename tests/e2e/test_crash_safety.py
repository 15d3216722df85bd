"""A job killed at any point loses at most the steps since its last
checkpoint, and ``--resume`` ends with the uninterrupted run's student.

Each kill is a real SIGKILL of ``tools/train.py`` (``faults.py``), at a
point where MMEngine's own ``CheckpointHook`` loses data: while a
checkpoint is written with ``max_keep_ckpts=1`` (MMEngine deleted the only
other checkpoint first), between a checkpoint and ``last_checkpoint``,
during the student export, and mid-step, with epoch and with iteration
checkpoints. RandomFlip stays on: the checkpoints hold the random states,
and "the same student" means bit for bit.
"""
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TOY_DISTILL, toy_options

from pcka_det.checkpoint import CorruptCheckpointError, read_checkpoint
from pcka_det.export import export_student

# faults.py lives at the top of tests/, whatever folder this file is in
TESTS = osp.join(ROOT, 'tests')


def _options(tiny_coco, teacher, **extra):
    return toy_options(tiny_coco, teacher, **{
        'train_cfg.max_epochs': 2,
        'randomness.seed': 0,
        'default_hooks.checkpoint.max_keep_ckpts': 1,
        **extra
    })


def _train(work_dir, opts, *extra, kill_at=None, **env_extra):
    """``tools/train.py`` in a subprocess, SIGKILLed at ``kill_at``
    (``env_extra``: more variables for ``faults.py``)."""
    argv = [osp.join(ROOT, 'tools', 'train.py'), TOY_DISTILL, '--work-dir',
            str(work_dir), *extra, '--cfg-options',
            *[f'{k}={v}' for k, v in opts.items()]]
    code = ('import sys, runpy; sys.path.insert(0, sys.argv.pop(1)); '
            'import faults; sys.argv = sys.argv[1:]; '
            'runpy.run_path(sys.argv[0], run_name="__main__")')
    env = dict(os.environ, KILL_AT=kill_at or '', **env_extra)
    return subprocess.run([sys.executable, '-c', code, TESTS, *argv],
                          capture_output=True, text=True, timeout=600,
                          env=env, cwd=ROOT)


def _student(path):
    return torch.load(path, map_location='cpu', weights_only=False)[
        'state_dict']


def _assert_same_student(work_dir, reference):
    got = _student(work_dir / 'student_last.pth')
    want = _student(reference / 'student_last.pth')
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


@pytest.fixture(scope='module')
def reference(tmp_path_factory, tiny_coco, toy_teacher_ckpt):
    """The uninterrupted run."""
    work = tmp_path_factory.mktemp('straight')
    out = _train(work, _options(
        tiny_coco, toy_teacher_ckpt,
        **{'default_hooks.checkpoint.max_keep_ckpts': 2}))
    assert out.returncode == 0, out.stderr[-3000:]
    return work


# 8 images, batch 2, 2 epochs: 8 iterations (4 an epoch). Iteration
# checkpoints every 3 iterations: iter_3 (inside epoch 1), iter_6, iter_8.
ITER_CKPT = {'default_hooks.checkpoint.by_epoch': False,
             'default_hooks.checkpoint.interval': 3}


def _trained(log):
    """``(epoch, iteration in epoch)`` of every logged training step."""
    import re
    return [tuple(map(int, m)) for m in
            re.findall(r'Epoch\(train\)\s+\[(\d+)\]\[\s*(\d+)/\d+\]', log)]


# mmdet's COCO loaders: 2 persistent workers (the reference run loads in
# the main process: each sample's augmentation depends on the seed, epoch,
# rank and index only)
WORKERS = {'train_dataloader.num_workers': 2,
           'train_dataloader.persistent_workers': True}


@pytest.mark.slow
@pytest.mark.parametrize('extra, kills, steps', [
    # killed while epoch_2.pth is written (MMEngine had deleted epoch_1.pth,
    # the only other one, first), then while student_last.pth is written
    ({}, ['write:epoch_2.pth', 'write:student_last.pth'],
     [[(2, i) for i in range(1, 5)], []]),
    # with 2 persistent data workers (mmdet's COCO loaders), iteration
    # checkpoints: killed at the start of step 6 (last checkpoint iter_3,
    # inside epoch 1: new workers resume inside an epoch), then between
    # iter_8.pth and the last_checkpoint that names it
    ({**WORKERS, **ITER_CKPT}, ['step:6', 'open:last_checkpoint@2'],
     [[(1, 4), (2, 1), (2, 2), (2, 3), (2, 4)], [(2, 3), (2, 4)]]),
], ids=['epoch_ckpts', 'iter_ckpts_workers'])
def test_kills_then_resume_give_the_same_student(tmp_path, tiny_coco,
                                                 toy_teacher_ckpt,
                                                 reference, extra, kills,
                                                 steps):
    """Each kill is followed by ``--resume``; the resumed runs train only
    the steps the checkpoint does not cover (none replayed) and the last
    one ends with the uninterrupted run's student, bit for bit."""
    opts = _options(tiny_coco, toy_teacher_ckpt, **extra)
    work = tmp_path / 'work'
    killed = _train(work, opts, kill_at=kills[0])
    assert killed.returncode == -9, killed.stderr[-2000:]
    for i, kill_at in enumerate(kills[1:] + [None]):
        # a complete checkpoint survived, and last_checkpoint names it
        with open(work / 'last_checkpoint') as f:
            read_checkpoint(f.read().strip())
        resumed = _train(work, opts, '--resume', kill_at=kill_at)
        assert resumed.returncode == (-9 if kill_at else 0), \
            resumed.stderr[-3000:]
        log = resumed.stdout + resumed.stderr
        assert _trained(log) == steps[i], _trained(log)
    assert not list(work.glob('*.tmp'))
    final = 'iter_8.pth' if extra.get('default_hooks.checkpoint.by_epoch') \
        is False else 'epoch_2.pth'
    kept = [*work.glob('epoch_*.pth'), *work.glob('iter_*.pth')]
    assert [p.name for p in kept] == [final]
    _assert_same_student(work, reference)


@pytest.mark.slow
def test_save_best_kill_keeps_a_best_and_resume_stays_exact(
        tmp_path, tiny_coco, toy_teacher_ckpt, reference):
    """With ``save_best`` and a validation every epoch (each finding a new
    best): a kill while the new best is written leaves the previous best
    readable, and the run resumed from the regular checkpoint MMEngine
    re-saved after a validation ends with the uninterrupted run's student.
    (That the re-save holds the training random states, not the
    validation's, is checked in test_unit_atomic_checkpoint_hook.py: this
    toy's training draws only from streams its validation leaves alone.)"""
    opts = _options(tiny_coco, toy_teacher_ckpt, **{
        'train_cfg.val_interval': 1,
        'default_hooks.checkpoint.save_best': 'coco/bbox_mAP',
        'default_hooks.checkpoint.rule': 'greater'})
    rising = dict(RISING_METRIC='coco/bbox_mAP')
    work = tmp_path / 'work'
    # killed in epoch 2: epoch_1.pth is the re-save after validation 1
    killed = _train(work, opts, kill_at='step:6', **rising)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (work / 'best_coco_bbox_mAP_epoch_1.pth').is_file()
    # resumed, then killed while the new best (validation 2) is written
    killed = _train(work, opts, '--resume',
                    kill_at='write:best_coco_bbox_mAP_epoch_2.pth', **rising)
    assert killed.returncode == -9, killed.stderr[-2000:]
    best = sorted(p.name for p in work.glob('best_*'))
    assert 'best_coco_bbox_mAP_epoch_1.pth' in best, best
    assert 'best_coco_bbox_mAP_epoch_2.pth' not in best, best
    read_checkpoint(str(work / 'best_coco_bbox_mAP_epoch_1.pth'))
    # the last resume finds training done: it cleans up and exports
    done = _train(work, opts, '--resume', **rising)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(work.glob('*.tmp'))
    # epoch 2 was trained after a resume from the re-saved epoch_1.pth
    _assert_same_student(work, reference)


@pytest.mark.slow
def test_truncated_newest_checkpoint_falls_back(tmp_path, tiny_coco,
                                                toy_teacher_ckpt, reference):
    """A truncated newest checkpoint (a disk that filled up, a copy cut
    short): --resume names it and resumes from the newest readable one, or,
    with resume_fallback=False, stops naming both."""
    work = tmp_path / 'work'
    shutil.copytree(reference, work)
    os.remove(work / 'student_last.pth')
    newest = work / 'epoch_2.pth'
    with open(work / 'last_checkpoint', 'w') as f:
        f.write(str(newest))
    data = newest.read_bytes()
    newest.write_bytes(data[:len(data) // 3])
    opts = _options(tiny_coco, toy_teacher_ckpt,
                    **{'default_hooks.checkpoint.max_keep_ckpts': 2})

    strict = _train(work, {**opts, 'resume_fallback': False}, '--resume')
    assert strict.returncode != 0
    assert 'truncated or corrupt' in strict.stderr
    assert str(newest) in strict.stderr and 'epoch_1.pth' in strict.stderr

    resumed = _train(work, opts, '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert f'Cannot resume from "{newest}"' in log
    assert 'epoch_1.pth' in log
    assert _trained(log) == [(2, i) for i in range(1, 5)]
    _assert_same_student(work, reference)


@pytest.mark.parametrize('cut', [0, 100, None])
def test_every_reader_names_a_broken_file(tmp_path, reference, cut):
    """Empty, truncated: torch's zip/EOF errors become one naming the file,
    for the runner's readers and for export_student."""
    path = tmp_path / 'epoch_2.pth'
    data = (reference / 'epoch_2.pth').read_bytes()
    path.write_bytes(data[:len(data) // 2 if cut is None else cut])
    for read in (read_checkpoint,
                 lambda p: export_student(p, str(tmp_path / 'out.pth'))):
        with pytest.raises(CorruptCheckpointError,
                           match='truncated or corrupt') as e:
            read(str(path))
        assert str(path) in str(e.value)
    assert not (tmp_path / 'out.pth').exists()


def _finite(state):
    return all(torch.isfinite(v).all() for v in state.values()
               if v.is_floating_point())


@pytest.mark.slow
def test_inf_batch_is_skipped_and_logged(tmp_path, tiny_coco,
                                         toy_teacher_ckpt):
    """One batch of inf (step 3 of 8): that step is skipped and logged, the
    run goes on, and no saved weight is NaN. Before, every weight became
    NaN from that step on and the run still exited 0."""
    work = tmp_path / 'work'
    out = _train(work, _options(tiny_coco, toy_teacher_ckpt),
                 kill_at='inf:3')
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert 'Iteration 3: the gradient is not finite' in log
    assert 'Skipped so far: 1.' in log and 'Skipped so far: 2' not in log
    for name in ('epoch_2.pth', 'student_last.pth'):
        assert _finite(_student(work / name)), name


@pytest.mark.slow
def test_inf_every_batch_stops_the_run(tmp_path, tiny_coco,
                                       toy_teacher_ckpt):
    work = tmp_path / 'work'
    out = _train(work, _options(tiny_coco, toy_teacher_ckpt),
                 kill_at='inf:all')
    assert out.returncode != 0
    assert '4 optimizer steps skipped for non-finite gradients' in out.stderr
    assert 'The first bad batch was iteration 1, images [' in out.stderr
    assert not list(work.glob('*.pth'))  # nothing NaN was saved


def test_nan_teacher_weight_refused(tmp_path, toy_teacher_ckpt):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    ckpt = torch.load(toy_teacher_ckpt, weights_only=False)
    ckpt['state_dict']['neck.fpn_convs.0.conv.bias'][3] = float('nan')
    path = tmp_path / 'nan_teacher.pth'
    torch.save(ckpt, path)
    cfg = Config.fromfile(TOY_DISTILL)
    cfg.model.teacher_ckpt = str(path)
    with pytest.raises(RuntimeError, match=r'NaN/Inf in 1 tensors.*'
                       r'neck\.fpn_convs\.0\.conv\.bias'):
        MODELS.build(cfg.model)


def test_level_nan_for_many_steps_is_an_error(monkeypatch):
    """A level whose loss is NaN every step (skipped by nonfinite='skip')
    stops the run once its streak reaches max_level_streak, naming it, even
    when the streak ended before the hook read it (the streaks are read
    every level_check_interval iterations, not every step)."""
    from conftest import demo_batch, load_distill_cfg

    from mmdet.registry import MODELS
    from pcka_det.engine import NonFiniteGuardHook
    model = MODELS.build(load_distill_cfg(TOY_DISTILL).model).train()
    p4 = model.distill_losses['pcka_p4']
    forward = p4.forward
    monkeypatch.setattr(p4, 'forward', lambda s, t: s.sum() * float('nan'))
    data = model.data_preprocessor(demo_batch(num_classes=6), True)

    class Runner:
        optim_wrapper = object()

    Runner.model = model
    hook = NonFiniteGuardHook(max_level_streak=3, level_check_interval=5)
    for step in range(5):
        if step == 3:  # finite again after 3 NaN steps
            monkeypatch.setattr(p4, 'forward', forward)
        model(**data, mode='loss')
        Runner.iter = step
        if step < 4:
            hook.after_train_iter(Runner, step)  # no read before step 5
    assert model.nonfinite_streaks() == dict(
        pcka_p3=0, pcka_p4=0, pcka_p5=0, pcka_p6=0)
    with pytest.raises(FloatingPointError,
                       match='"pcka_p4" has been NaN/Inf for 3 steps'):
        hook.after_train_iter(Runner, 4)
