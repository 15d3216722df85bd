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
    """Each rank saves its student parameters and how it was wrapped."""

    def __init__(self, out_dir):
        self.out_dir = out_dir

    def after_train(self, runner):
        model = runner.model
        torch.save(dict(
            world_size=runner.world_size,
            backend=torch.distributed.get_backend(),
            wrapper=type(model).__name__,
            find_unused=getattr(model, 'find_unused_parameters', None),
            params={k: v.detach().clone() for k, v in
                    model.module.student.named_parameters()}),
            f'{self.out_dir}/rank{runner.rank}.pth')
'''


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dist_train_two_cpu_processes(tmp_path, tiny_coco, toy_teacher_ckpt):
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
    opts = toy_options(tiny_coco, toy_teacher_ckpt)
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_free_port()),
               PYTHONPATH=f'{tmp_path}:{os.environ.get("PYTHONPATH", "")}',
               OMP_NUM_THREADS='1')
    out = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), str(cfg), '2',
         '--work-dir', str(work), '--cfg-options'] +
        [f'{k}={v}' for k, v in opts.items()],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]

    ranks = [torch.load(tmp_path / f'rank{r}.pth', weights_only=False)
             for r in (0, 1)]
    for r in ranks:
        assert r['world_size'] == 2 and r['backend'] == 'gloo'
        assert r['wrapper'] == 'MMDistributedDataParallel'
        assert r['find_unused'] is False
    # DDP kept the two replicas identical
    for k, v in ranks[0]['params'].items():
        assert torch.equal(v, ranks[1]['params'][k]), k
    # one set of checkpoints and one log, written by rank 0
    assert sorted(osp.basename(p) for p in glob.glob(str(work / '*.pth'))) \
        == ['epoch_1.pth', 'student_last.pth']
    assert len(glob.glob(str(work / '*' / '*.log'))) == 1
    iter_lines = [line for line in (out.stdout + out.stderr).splitlines()
                  if 'Epoch(train) [1][2/2]' in line]
    assert len(iter_lines) == 1, iter_lines
