"""Faults injected into a real ``tools/train.py`` run, for the crash-safety
tests: a kill (SIGKILL, as a pre-emption or the OOM killer does) at a
chosen point, or a batch of inf.

Imported before ``tools/train.py`` runs (see ``e2e/test_crash_safety.py``);
``KILL_AT`` in the environment names the point:

* ``write:<file>``: while ``torch.save`` or MMEngine's file backend
  writes ``<file>`` (or its temporary): half of the bytes are written and
  flushed, then the kill;
* ``open:<file>``: when ``<file>`` (or its temporary) is opened for
  writing, before anything is written;
* ``...@<n>``: at the n-th such write of the file, not the first;
* ``step:<n>``: at the start of the n-th training step;
* ``KILL_RANK=<r>`` (another variable) kills only that local rank of a
  multi-process run, ``KILL_GLOBAL_RANK=<r>`` only that global rank (one
  node of a multi-node run);
* ``inf:<n>,<m>,...``: not a kill: the first image of the batch of the
  n-th, m-th... training step is multiplied by inf (``inf:all``: every
  step).

``RAISE_AT`` (another variable): not a kill, an error raised on global
rank ``RAISE_RANK`` only (one node of a multi-node run): ``step:<n>`` at
the start of the n-th training step (a corrupt image met by one rank),
``checks`` in the dataset checks before the runner is built (a data root
missing on one node).

``NAN_LOSS_RANK=<r>`` (another variable): on the process of global rank
``r`` only, every PatchCKALoss returns NaN (a stop condition met on one
node of a multi-node run).

``RISING_METRIC=<key>`` (another variable) sets that validation metric to
the time of the validation, so every validation, in this process or a
resumed one, finds a new best (``save_best``).
"""
import builtins
import io
import os
import os.path as osp
import signal

import torch

POINT = os.environ.get('KILL_AT', '')
KIND, _, TARGET = POINT.partition(':')
TARGET, _, NTH = TARGET.partition('@')
_seen = [0]


def _die():
    """SIGKILL this process (only rank ``KILL_RANK`` when that is set)."""
    rank = os.environ.get('KILL_RANK')
    if rank and rank != os.environ.get('LOCAL_RANK', '0'):
        return
    rank = os.environ.get('KILL_GLOBAL_RANK')
    if rank and rank != os.environ.get('RANK', '0'):
        return
    os.kill(os.getpid(), signal.SIGKILL)


def _matches(path) -> bool:
    """Whether ``path`` is the target's ``NTH`` (default 1st) write."""
    name = osp.basename(str(path))
    if name != TARGET and not name.startswith(TARGET + '.'):
        return False
    _seen[0] += 1
    return _seen[0] == int(NTH or 1)


if os.environ.get('NAN_LOSS_RANK', 'none') == os.environ.get('RANK'):
    from pcka_det.losses import PatchCKALoss

    _pcka_forward = PatchCKALoss.forward

    def _nan_forward(self, *args, **kwargs):
        return _pcka_forward(self, *args, **kwargs) * float('nan')

    PatchCKALoss.forward = _nan_forward

RAISE_KIND, _, RAISE_TARGET = os.environ.get('RAISE_AT', '').partition(':')
if RAISE_KIND and os.environ.get('RAISE_RANK') == os.environ.get('RANK'):
    if RAISE_KIND == 'step':
        from mmengine.runner import EpochBasedTrainLoop

        _run_iter_before_raise = EpochBasedTrainLoop.run_iter

        def _run_iter_or_raise(self, idx, data_batch):
            if self._iter + 1 == int(RAISE_TARGET):
                raise ValueError('faults: image 7 of this rank is corrupt')
            return _run_iter_before_raise(self, idx, data_batch)

        EpochBasedTrainLoop.run_iter = _run_iter_or_raise
    elif RAISE_KIND == 'checks':
        import pcka_det.train

        def _checks_raise(*args, **kwargs):
            raise FileNotFoundError('faults: data root missing on this node')

        pcka_det.train.validate_dataloaders = _checks_raise

if os.environ.get('RISING_METRIC'):
    from mmengine.evaluator import Evaluator

    import time

    _evaluate = Evaluator.evaluate

    def _evaluate_rising(self, size):
        metrics = _evaluate(self, size)
        metrics[os.environ['RISING_METRIC']] = time.time()
        return metrics

    Evaluator.evaluate = _evaluate_rising

if KIND == 'write':
    _save = torch.save

    def _save_then_die(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and _matches(f):
            buf = io.BytesIO()
            _save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            with open(f, 'wb') as out:
                out.write(data[:len(data) // 2])
                out.flush()
                os.fsync(out.fileno())
            _die()
        return _save(obj, f, *args, **kwargs)

    torch.save = _save_then_die

    # MMEngine's checkpoints: torch.save into memory, then the file backend
    from mmengine.fileio.backends import LocalBackend
    _put = LocalBackend.put

    def _put_then_die(self, obj, filepath):
        if _matches(filepath):
            with open(filepath, 'wb') as out:
                out.write(obj[:len(obj) // 2])
                out.flush()
                os.fsync(out.fileno())
            _die()
        return _put(self, obj, filepath)

    LocalBackend.put = _put_then_die
elif KIND == 'open':
    _open = builtins.open

    def _open_then_die(file, mode='r', *args, **kwargs):
        if 'w' in mode and _matches(file):
            _die()
        return _open(file, mode, *args, **kwargs)

    builtins.open = _open_then_die
elif KIND == 'step':
    from mmengine.runner import EpochBasedTrainLoop

    _run_iter = EpochBasedTrainLoop.run_iter

    def _run_iter_or_die(self, idx, data_batch):
        if self._iter + 1 == int(TARGET):
            _die()
        return _run_iter(self, idx, data_batch)

    EpochBasedTrainLoop.run_iter = _run_iter_or_die
elif KIND == 'inf':
    from mmdet.models.data_preprocessors import DetDataPreprocessor

    _forward = DetDataPreprocessor.forward
    _steps = [0]

    def _forward_with_inf(self, data, training=False):
        out = _forward(self, data, training)
        if training:
            _steps[0] += 1
            if TARGET == 'all' or str(_steps[0]) in TARGET.split(','):
                out['inputs'][0] = out['inputs'][0] * float('inf')
        return out

    DetDataPreprocessor.forward = _forward_with_inf
