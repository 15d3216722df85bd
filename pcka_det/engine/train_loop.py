"""An epoch-based training loop that resumes where the checkpoint was taken.

MMEngine's ``EpochBasedTrainLoop`` resumed from an iteration checkpoint
(``CheckpointHook(by_epoch=False)``) replays the whole interrupted epoch,
runs past ``max_iters`` and ends on another model; and no loop restores the
random number generators, so random augmentation differs after a resume.
"""
from typing import Dict, Optional

from mmengine.runner import EpochBasedTrainLoop

from mmdet.registry import LOOPS
from ..datasets.sample_seeding import seed_samples
from ..rng import set_rng_state


@LOOPS.register_module()
class ExactResumeEpochBasedTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` that continues a resumed run exactly.

    * From a checkpoint taken inside an epoch, the batches that epoch
      already trained are drawn (so the sampler, the workers and the
      pipeline advance as they did) but not trained again; the run ends
      at ``max_epochs`` with the same number of iterations as an
      uninterrupted one.
    * The random states saved in the checkpoint (``rng_state``, written by
      :class:`~pcka_det.engine.hooks.AtomicCheckpointHook`) are restored where the
      interrupted run stood when it saved: after the skipped batches, or
      before the next epoch's first batch.

    * Each sample's random augmentation depends on (seed, epoch, rank,
      sample index) only (:func:`~pcka_det.datasets.seed_samples`), so
      data workers, persistent or not, any ``num_workers``, augment a
      resumed run as they did the uninterrupted one; the data pipeline
      no longer moves the process's own random streams.

    A resumed run is then bit-identical to an uninterrupted one. For a
    dataset that is not an MMEngine ``BaseDataset`` (no ``prepare_data``)
    the per-sample seeding is not installed and ``DistillRunner`` says,
    when it resumes with persistent workers, that their random streams
    cannot be restored. ``DistillRunner`` uses this loop in place of
    ``EpochBasedTrainLoop`` (same arguments).
    """

    pending_rng_state: Optional[Dict] = None

    def __init__(self, *args, **kwargs) -> None:  # EpochBasedTrainLoop's
        super().__init__(*args, **kwargs)
        self.samples_seeded = seed_samples(
            self.dataloader, self.runner.seed, self.runner.rank)

    def run_epoch(self) -> None:
        """Train one epoch, skipping what a resumed checkpoint covers."""
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        done = self._iter - self._epoch * len(self.dataloader)
        if done <= 0:
            self._restore_rng()
        for idx, data_batch in enumerate(self.dataloader):
            if idx < done:  # trained before the interruption
                if idx == done - 1:
                    self._restore_rng()
                continue
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1

    def _restore_rng(self) -> None:
        if self.pending_rng_state is not None:
            set_rng_state(self.pending_rng_state)
            self.pending_rng_state = None
