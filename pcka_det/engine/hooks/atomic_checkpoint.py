"""MMEngine's ``CheckpointHook`` with writes that a kill cannot break.

MMEngine 0.10.7 deletes the oldest checkpoint first, then writes the new one
straight to its final name, then ``last_checkpoint``: a job killed while
saving (pre-emption, OOM killer, a full disk) can leave a truncated newest
file, a ``last_checkpoint`` naming a file that does not exist, and with
``max_keep_ckpts=1`` no checkpoint at all.
"""
import glob
import os
import os.path as osp
from typing import List

from mmengine.dist import all_gather_object, get_world_size, is_main_process
from mmengine.hooks import CheckpointHook

from mmdet.registry import HOOKS
from ...fileio import atomic_write_text, fsync_replace
from ...rng import rng_state, set_rng_state

TMP_SUFFIX = '.tmp'


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose checkpoints are written atomically, in order.

    Each save writes ``<name>.tmp`` in the output directory, flushes and
    fsyncs it, renames it to ``<name>`` (``os.replace``), then rewrites
    ``last_checkpoint`` the same way, and only then deletes checkpoints
    beyond ``max_keep_ckpts``. At any instant the directory holds a complete
    newest checkpoint that ``last_checkpoint`` names (or the previous one
    and its ``last_checkpoint``). Temporaries left by a killed save are
    removed when training starts. Arguments are ``CheckpointHook``'s;
    ``DistillRunner`` puts this hook in place of MMEngine's for every run.

    The best checkpoint (``save_best``) is written the same way, and the
    previous best is deleted only after the new one is complete: a kill in
    between leaves one of the two readable (MMEngine deletes the previous
    best first). A regular checkpoint that MMEngine re-saves after a
    validation (to record the new best) holds the random states of before
    the validation, as the one saved before it did.

    Local output directories only: for other backends (``out_dir`` on a
    remote store) MMEngine's own behaviour is kept.
    """

    _rng_states = None
    _val_rng = None  # the training states while a validation runs

    def before_train(self, runner) -> None:
        """MMEngine's set-up, then stale temporaries are removed."""
        super().before_train(runner)
        self._local = self._is_local()
        if self._local and is_main_process():
            for stale in glob.glob(osp.join(self.out_dir, '*' + TMP_SUFFIX)):
                os.remove(stale)
                runner.logger.warning(
                    f'Removed {stale}: a checkpoint write that did not '
                    'finish (the job was killed while saving).')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store every rank's random states, for an exact resume (see
        :class:`~pcka_det.engine.train_loop.ExactResumeEpochBasedTrainLoop`)."""
        checkpoint['rng_state'] = (self._rng_states if self._rng_states
                                   else [rng_state()])

    def before_val(self, runner) -> None:
        """Validation must not move the training random streams (its
        loaders draw from torch's), or a resumed run would differ."""
        self._val_rng = rng_state()

    def after_val(self, runner) -> None:
        if self._val_rng is not None:
            set_rng_state(self._val_rng)
            self._val_rng = None

    def _is_local(self) -> bool:
        return (self.file_client_args is None and '://' not in str(
            self.out_dir) and type(self.file_backend).__name__ ==
                'LocalBackend')

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not getattr(self, '_local', False):
            return super()._save_checkpoint_with_step(runner, step, meta)
        dropped: List[int] = []
        if self.max_keep_ckpts > 0 and not (
                self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            kept = list(self.keep_ckpt_ids) + [step]
            dropped = kept[:-self.max_keep_ckpts]
            # the deque has maxlen max_keep_ckpts: this drops the oldest id
            # from the bookkeeping, its file is deleted after the save
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        # on every rank (save_checkpoint itself runs on rank 0 only); during
        # a validation (the re-save after a new best), the training states
        # it will restore
        state = self._val_rng if self._val_rng is not None else rng_state()
        self._rng_states = all_gather_object(state) \
            if get_world_size() > 1 else [state]
        name = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, name)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            name + TMP_SUFFIX,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        fsync_replace(self.last_ckpt + TMP_SUFFIX, self.last_ckpt)
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'),
                          self.last_ckpt)
        for old in dropped:
            path = osp.join(self.out_dir, self.filename_tmpl.format(old))
            if osp.isfile(path):
                os.remove(path)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """MMEngine's choice of the best checkpoint, written atomically, the
        previous best deleted after."""
        if not self.save_best or not getattr(self, '_local', False):
            return super()._save_best_checkpoint(runner, metrics)
        backend, save = self.file_backend, runner.save_checkpoint
        previous = []  # MMEngine's deletions of the previous best, deferred

        class _Deferred:
            """The file backend, with ``remove`` deferred."""

            def __getattr__(self, name):
                return getattr(backend, name)

            def remove(self, path):
                previous.append(path)

        def save_atomically(out_dir, filename, *args, **kwargs):
            if not filename.startswith('best_'):  # the regular re-save
                return save(out_dir, filename, *args, **kwargs)
            save(out_dir, filename + TMP_SUFFIX, *args, **kwargs)
            if is_main_process():
                path = osp.join(out_dir, filename)
                fsync_replace(path + TMP_SUFFIX, path)

        self.file_backend = _Deferred()
        runner.save_checkpoint = save_atomically
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
            del runner.save_checkpoint  # the method again
        if is_main_process():
            best = {getattr(self, 'best_ckpt_path', None),
                    *getattr(self, 'best_ckpt_path_dict', {}).values()}
            for path in previous:
                if path not in best and osp.isfile(path):
                    os.remove(path)
