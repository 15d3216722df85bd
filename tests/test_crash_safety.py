"""A job killed at any point loses at most the steps since its last
checkpoint, and ``--resume`` ends with the uninterrupted run's student.

Each kill is a real SIGKILL of ``tools/train.py`` (``kill_points.py``), at a
point where MMEngine's own ``CheckpointHook`` loses data: while a
checkpoint is written with ``max_keep_ckpts=1`` (MMEngine deleted the only
other checkpoint first), between a checkpoint and ``last_checkpoint``,
during the student export, and mid-step. The pipeline is deterministic
(RandomFlip off), so "the same student" means bit for bit.
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

TESTS = osp.dirname(osp.abspath(__file__))


def _options(tiny_coco, teacher, **extra):
    return toy_options(tiny_coco, teacher, **{
        'train_cfg.max_epochs': 2,
        'train_dataloader.dataset.pipeline.3.prob': 0.0,
        'randomness.seed': 0,
        'default_hooks.checkpoint.max_keep_ckpts': 1,
        **extra
    })


def _train(work_dir, opts, *extra, kill_at=None):
    """``tools/train.py`` in a subprocess, SIGKILLed at ``kill_at``."""
    argv = [osp.join(ROOT, 'tools', 'train.py'), TOY_DISTILL, '--work-dir',
            str(work_dir), *extra, '--cfg-options',
            *[f'{k}={v}' for k, v in opts.items()]]
    code = ('import sys, runpy; sys.path.insert(0, sys.argv.pop(1)); '
            'import kill_points; sys.argv = sys.argv[1:]; '
            'runpy.run_path(sys.argv[0], run_name="__main__")')
    env = dict(os.environ, KILL_AT=kill_at or '')
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
    out = _train(work, _options(tiny_coco, toy_teacher_ckpt))
    assert out.returncode == 0, out.stderr[-3000:]
    return work


@pytest.mark.slow
@pytest.mark.parametrize('kill_at', [
    'write:epoch_2.pth',     # during the checkpoint write (keep 1)
    'open:last_checkpoint@2',  # between checkpoint 2 and last_checkpoint
    'write:student_last.pth',  # during the student export
    'step:7',                # mid-epoch 2
])
def test_kill_then_resume_gives_the_same_student(tmp_path, tiny_coco,
                                                 toy_teacher_ckpt,
                                                 reference, kill_at):
    opts = _options(tiny_coco, toy_teacher_ckpt)
    work = tmp_path / 'work'
    killed = _train(work, opts, kill_at=kill_at)
    assert killed.returncode == -9, killed.stderr[-2000:]
    # a complete checkpoint survived, and last_checkpoint names one
    with open(work / 'last_checkpoint') as f:
        named = f.read().strip()
    read_checkpoint(named)
    resumed = _train(work, opts, '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list(work.glob('*.tmp'))
    assert sorted(p.name for p in work.glob('epoch_*.pth')) == ['epoch_2.pth']
    _assert_same_student(work, reference)


@pytest.mark.slow
def test_truncated_newest_checkpoint_falls_back(tmp_path, tiny_coco,
                                                toy_teacher_ckpt, reference):
    """A truncated newest checkpoint (a disk that filled up, a copy cut
    short): --resume names it and resumes from the newest readable one, or,
    with resume_fallback=False, stops naming both."""
    work = tmp_path / 'work'
    opts = _options(tiny_coco, toy_teacher_ckpt,
                    **{'default_hooks.checkpoint.max_keep_ckpts': 2})
    killed = _train(work, opts, kill_at='write:student_last.pth')
    assert killed.returncode == -9
    newest = work / 'epoch_2.pth'
    data = newest.read_bytes()
    newest.write_bytes(data[:len(data) // 3])

    strict = _train(work, {**opts, 'resume_fallback': False}, '--resume')
    assert strict.returncode != 0
    assert 'truncated or corrupt' in strict.stderr
    assert str(newest) in strict.stderr and 'epoch_1.pth' in strict.stderr

    resumed = _train(work, opts, '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert f'Cannot resume from "{newest}"' in log
    assert 'epoch_1.pth' in log
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
