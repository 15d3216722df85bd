"""The launchers README shows for more than one machine, run for real on
127.0.0.1 (gloo, one process a node): ``NNODES=2 tools/dist_train.sh`` as
two "nodes", and ``tools/slurm_train.sh`` through stand-in ``srun`` and
``scontrol``. A stop decided on one node (a level's NaN streak) stops
both at the same step with the same error; a node killed ends the other."""
import os
import os.path as osp
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT, TOY_DISTILL, toy_options

TESTS = osp.join(ROOT, 'tests')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _config(tmp_path):
    """The toy distillation config with ``faults.py`` imported (a no-op
    unless its variables are set)."""
    cfg = tmp_path / 'multinode_toy.py'
    cfg.write_text(f"_base_ = {TOY_DISTILL!r}\ncustom_imports = dict("
                   "imports=['pcka_det', 'faults'], "
                   "allow_failed_imports=False)\n")
    return cfg


def _env(**extra):
    return dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1',
                PYTHONPATH=f'{TESTS}:{os.environ.get("PYTHONPATH", "")}',
                **extra)


def _opts(tiny_coco, teacher, **extra):
    # 8 images over 2 ranks, batch 2: 2 steps an epoch
    opts = toy_options(tiny_coco, teacher, **{'randomness.seed': 0,
                                              **extra})
    return ['--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]


def _two_nodes(tmp_path, opts, **env):
    """``NNODES=2 NODE_RANK=0|1 tools/dist_train.sh CFG 1``, started
    together; returns ``[(exit code, output, exit time)]`` by node."""
    port = str(_free_port())
    work = tmp_path / 'work'
    logs = [open(tmp_path / f'node{rank}.out', 'w') for rank in (0, 1)]
    nodes = [subprocess.Popen(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'),
         str(_config(tmp_path)), '1', '--work-dir', str(work), *opts],
        cwd=tmp_path, stdout=logs[rank], stderr=subprocess.STDOUT,
        start_new_session=True,  # a hung node is killed with its workers
        env=_env(NNODES='2', NODE_RANK=str(rank), MASTER_ADDR='127.0.0.1',
                 PORT=port, **env))
        for rank in (0, 1)]
    out = [None, None]
    deadline = time.monotonic() + 900  # far below gloo's 30 min timeout
    while None in out and time.monotonic() < deadline:
        for rank, node in enumerate(nodes):
            if out[rank] is None and node.poll() is not None:
                out[rank] = (node.returncode, time.monotonic())
        time.sleep(0.2)
    for rank, node in enumerate(nodes):
        if out[rank] is None:  # still waiting: what a hang looks like
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()
            out[rank] = (None, time.monotonic())
        logs[rank].close()
    return work, [(code, (tmp_path / f'node{rank}.out').read_text(), t)
                  for rank, (code, t) in enumerate(out)]


@pytest.mark.slow
def test_a_stop_on_one_node_stops_both_with_the_same_error(
        tmp_path, tiny_coco, toy_teacher_ckpt):
    # every PCKA loss NaN on node 1 only; the streaks are read every 2
    # steps and agreed (max over ranks): both stop at step 2, naming it
    opts = _opts(tiny_coco, toy_teacher_ckpt, **{
        'train_cfg.max_epochs': 3,
        'default_hooks.nonfinite_guard.max_level_streak': 2,
        'default_hooks.nonfinite_guard.level_check_interval': 2})
    start = time.monotonic()
    _, out = _two_nodes(tmp_path, opts, NAN_LOSS_RANK='1')
    error = re.compile(r'FloatingPointError: Distillation loss "pcka_p\d" '
                       r'has been NaN/Inf for 2 steps in a row')
    for code, log, _ in out:
        assert code != 0, log[-3000:]
        assert error.search(log), log[-4000:]
        assert 'Epoch(train) [2]' not in log  # the same step on both
    # node 0 ends with node 1, not after the backend's timeout (30 min)
    assert abs(out[0][2] - out[1][2]) < 60, (out[0][2] - start,
                                             out[1][2] - start)


@pytest.mark.slow
@pytest.mark.parametrize('where', ['step:3', 'checks'])
def test_an_error_on_one_node_ends_both_naming_it(
        tmp_path, tiny_coco, toy_teacher_ckpt, where):
    """Node 1 alone raises: in the dataset checks before the runner is
    built (a data root missing on one node), or at step 3 (a corrupt
    image). Node 0, waiting in a collective, ends within seconds and its
    log names node 1's error, not a broken connection or a timeout."""
    opts = _opts(tiny_coco, toy_teacher_ckpt, **{'train_cfg.max_epochs': 2})
    _, out = _two_nodes(tmp_path, opts, RAISE_AT=where, RAISE_RANK='1')
    error = {'step:3': 'ValueError: faults: image 7 of this rank is corrupt',
             'checks': 'FileNotFoundError: faults: data root missing on '
                       'this node'}[where]
    assert out[1][0] != 0 and error in out[1][1], out[1][1][-3000:]
    assert out[0][0] not in (0, None), out[0][1][-3000:]
    assert f'rank 1 stopped the run: {error}' in out[0][1], out[0][1][-3000:]
    assert abs(out[0][2] - out[1][2]) < 60


@pytest.mark.slow
def test_two_nodes_train_and_a_node_killed_ends_the_other(
        tmp_path, tiny_coco, toy_teacher_ckpt):
    """Both nodes train epoch 1 (2 iterations, world size 2) and write one
    set of checkpoints (rank 0's); node 1 is SIGKILLed at the start of
    step 3: node 0 exits non-zero within seconds, not at the backend's
    timeout."""
    opts = _opts(tiny_coco, toy_teacher_ckpt, **{'train_cfg.max_epochs': 2})
    work, out = _two_nodes(tmp_path, opts, KILL_AT='step:3',
                           KILL_GLOBAL_RANK='1')
    assert out[1][0] != 0 and out[0][0] != 0, out[0][1][-3000:]
    assert abs(out[0][2] - out[1][2]) < 60
    assert 'Epoch(train) [1][2/2]' in out[0][1]
    assert sorted(p.name for p in work.glob('*.pth')) == ['epoch_1.pth']


STAND_IN_SRUN = r'''#!/usr/bin/env bash
# stand-in srun: starts --ntasks copies of the command on this machine with
# the SLURM_* variables MMEngine's slurm launcher reads
ntasks=1
while [ $# -gt 0 ]; do
  case "$1" in
    --ntasks=*) ntasks="${1#*=}" ;;
    -p|-J) shift ;;
    -*) ;;
    *) break ;;
  esac
  shift
done
pids=()
for ((i = 0; i < ntasks; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NTASKS=$ntasks \
    SLURM_NODELIST=node0 "$@" &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
'''


@pytest.mark.slow
def test_slurm_train_through_srun(tmp_path, tiny_coco, toy_teacher_ckpt):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'srun').write_text(STAND_IN_SRUN)
    (bin_dir / 'scontrol').write_text('#!/bin/sh\necho 127.0.0.1\n')
    for tool in ('srun', 'scontrol'):
        (bin_dir / tool).chmod(0o755)
    work = tmp_path / 'work'
    env = _env(GPUS='2', GPUS_PER_NODE='2', MASTER_PORT=str(_free_port()),
               PATH=f'{bin_dir}:{os.environ["PATH"]}')
    env.pop('MASTER_ADDR', None)
    run = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'slurm_train.sh'), 'partition',
         'job', str(_config(tmp_path)), str(work),
         *_opts(tiny_coco, toy_teacher_ckpt)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert 'Epoch(train) [1][2/2]' in log
    assert sorted(p.name for p in work.glob('*.pth')) == [
        'epoch_1.pth', 'student_last.pth']
