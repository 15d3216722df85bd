"""Two training processes on the CPU (gloo) through tools/dist_train.sh."""
import glob
import os
import os.path as osp
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ROOT, TOY_DISTILL, toy_options

DUMP_HOOK = '''
import torch
from mmengine.hooks import Hook
from mmdet.registry import HOOKS


@HOOKS.register_module()
class RankDumpHook(Hook):
    """Each rank saves its student parameters, how it was wrapped and its
    own first step's distillation losses (not all-reduced)."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.first_losses = None

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if self.first_losses is None:
            self.first_losses = {k: float(v) for k, v in outputs.items()
                                 if k.startswith('loss_pcka')}

    def after_train(self, runner):
        model = runner.model
        torch.save(dict(
            world_size=runner.world_size,
            backend=torch.distributed.get_backend(),
            wrapper=type(model).__name__,
            find_unused=getattr(model, 'find_unused_parameters', None),
            first_losses=self.first_losses,
            params={k: v.detach().clone() for k, v in
                    model.module.student.named_parameters()}),
            f'{self.out_dir}/rank{runner.rank}.pth')
'''


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _dist_train(tmp_path, cfg, work, opts, *extra, **env):
    """``tools/dist_train.sh CFG 2`` (gloo), ``tests/`` and ``tmp_path`` on
    the import path (the configs import test modules)."""
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_free_port()),
               OMP_NUM_THREADS='1',
               PYTHONPATH=f'{tmp_path}:{osp.join(ROOT, "tests")}:'
               f'{os.environ.get("PYTHONPATH", "")}', **env)
    return subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), str(cfg), '2',
         '--work-dir', str(work), *extra, '--cfg-options'] +
        [f'{k}={v}' for k, v in opts.items()],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def _options(tiny_coco, toy_teacher_ckpt):
    # 8 images over 2 ranks, batch 2: 2 steps an epoch, 4 in all
    return toy_options(tiny_coco, toy_teacher_ckpt, **{
        'train_cfg.max_epochs': 2, 'randomness.seed': 0})


@pytest.fixture(scope='module')
def straight(tmp_path_factory, tiny_coco, toy_teacher_ckpt):
    """One uninterrupted 2-process run (2 epochs), each rank dumping its
    student parameters and how it was wrapped."""
    tmp_path = tmp_path_factory.mktemp('dist')
    (tmp_path / 'rank_dump.py').write_text(DUMP_HOOK)
    cfg = tmp_path / 'dist_toy.py'
    cfg.write_text(textwrap.dedent(f"""
        _base_ = '{TOY_DISTILL}'
        custom_imports = dict(imports=['pcka_det', 'rank_dump'],
                              allow_failed_imports=False)
        custom_hooks = [dict(type='ExportStudentHook'),
                        dict(type='RankDumpHook', out_dir='{tmp_path}')]
        """))
    work = tmp_path / 'work'
    out = _dist_train(tmp_path, cfg, work,
                      _options(tiny_coco, toy_teacher_ckpt))
    return tmp_path, work, out


@pytest.mark.slow
def test_dist_train_two_cpu_processes(straight):
    tmp_path, work, out = straight
    assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]

    ranks = [torch.load(tmp_path / f'rank{r}.pth', weights_only=False)
             for r in (0, 1)]
    for r in ranks:
        assert r['world_size'] == 2 and r['backend'] == 'gloo'
        assert r['wrapper'] == 'MMDistributedDataParallel'
        assert r['find_unused'] is False
    # each rank distilled from its first step: no level 0 on any rank (a
    # "module." prefix under DDP made a distillation loss 0 on every step
    # in another toolkit)
    for r in ranks:
        assert sorted(r['first_losses']) == [
            'loss_pcka_p3', 'loss_pcka_p4', 'loss_pcka_p5', 'loss_pcka_p6']
        assert all(v > 0 for v in r['first_losses'].values()), r
    assert ranks[0]['first_losses'] != ranks[1]['first_losses']  # own data
    # DDP kept the two replicas identical
    for k, v in ranks[0]['params'].items():
        assert torch.equal(v, ranks[1]['params'][k]), k
    # one set of checkpoints (the toy schedule keeps 1) and one log, by rank 0
    assert sorted(osp.basename(p) for p in glob.glob(str(work / '*.pth'))) \
        == ['epoch_2.pth', 'student_last.pth']
    assert len(glob.glob(str(work / '*' / '*.log'))) == 1
    iter_lines = [line for line in (out.stdout + out.stderr).splitlines()
                  if 'Epoch(train) [2][2/2]' in line]
    assert len(iter_lines) == 1, iter_lines


@pytest.mark.slow
def test_one_rank_killed_then_resume(tmp_path, tiny_coco, toy_teacher_ckpt,
                                     straight):
    """Rank 1 of 2 is SIGKILLed at the start of step 4 (of 4; epoch 1 is
    checkpointed, and step 3's all-reduce means rank 0 finished writing
    it): torchrun ends rank 0 with an error, ``--resume`` on 2
    processes trains steps 3-4 only and ends with the uninterrupted 2-process
    run's student, bit for bit (RandomFlip on)."""
    cfg = tmp_path / 'dist_toy.py'
    cfg.write_text(textwrap.dedent(f"""
        _base_ = '{TOY_DISTILL}'
        custom_imports = dict(imports=['pcka_det', 'faults'],
                              allow_failed_imports=False)
        """))
    opts = _options(tiny_coco, toy_teacher_ckpt)
    work = tmp_path / 'work'
    killed = _dist_train(tmp_path, cfg, work, opts, KILL_AT='step:4',
                         KILL_RANK='1')
    assert killed.returncode != 0
    assert (work / 'epoch_1.pth').is_file(), killed.stderr[-4000:]
    assert not (work / 'epoch_2.pth').exists()
    resumed = _dist_train(tmp_path, cfg, work, opts, '--resume')
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    log = resumed.stdout + resumed.stderr
    assert 'Epoch(train) [2][2/2]' in log and 'Epoch(train) [1][' not in log
    want = torch.load(straight[1] / 'student_last.pth',
                      weights_only=False)['state_dict']
    got = torch.load(work / 'student_last.pth',
                     weights_only=False)['state_dict']
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k
