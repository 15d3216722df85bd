"""Random augmentation that depends on (seed, epoch, rank, sample index)
only: not on which data worker drew the sample, nor on how long that worker
has lived.

MMEngine seeds each data worker once, when it starts; with
``persistent_workers=True`` (every mmdet COCO config) a worker's random
streams then run on across epochs, and a resumed run, whose workers start
afresh, augments differently from the uninterrupted one. Here each sample
is prepared with Python's, NumPy's and torch's (CPU) random streams seeded
from (seed, epoch, rank, index) and put back afterwards, so the data
pipeline neither depends on nor moves the process's own streams (with
``num_workers=0`` mmdet's RPN/RoI samplers draw from torch's in the main
process). :class:`~pcka_det.engine.train_loop.ExactResumeEpochBasedTrainLoop`
installs it on its dataloader.
"""
import random
from typing import Any, Iterator

import numpy as np
import torch


class EpochSampleIndex(int):
    """A dataset index that carries the epoch it was drawn for (it crosses
    to the data workers with the index)."""

    epoch: int

    def __new__(cls, value: int, epoch: int) -> 'EpochSampleIndex':
        index = super().__new__(cls, value)
        index.epoch = epoch
        return index

    def __reduce__(self):
        return EpochSampleIndex, (int(self), self.epoch)


class EpochIndexSampler:
    """A sampler's indices, each as an :class:`EpochSampleIndex` of the
    sampler's current epoch (``set_epoch`` and every other attribute go
    to the wrapped sampler).

    Args:
        sampler: The sampler to wrap (MMEngine's ``DefaultSampler``...).
    """

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[EpochSampleIndex]:
        epoch = int(getattr(self.sampler, 'epoch', 0))
        for index in self.sampler:
            yield EpochSampleIndex(index, epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __getattr__(self, name: str) -> Any:
        if name == 'sampler' or name.startswith('__'):  # while unpickling
            raise AttributeError(name)
        return getattr(self.sampler, name)


def sample_seed(seed: int, epoch: int, rank: int, index: int) -> int:
    """The 32-bit seed of one sample's augmentation."""
    return int(np.random.SeedSequence(
        [seed % 2**32, epoch, rank, index]).generate_state(1)[0])


class SeededPrepare:
    """``dataset.prepare_data`` with the random streams seeded per sample
    and restored after (picklable: data workers may be spawned).

    Args:
        dataset: An MMEngine ``BaseDataset``.
        seed (int): The run's seed.
        rank (int): This process's rank.
    """

    def __init__(self, dataset, seed: int, rank: int) -> None:
        self.dataset = dataset
        self.prepare = type(dataset).prepare_data
        self.seed = seed
        self.rank = rank

    def __call__(self, index):
        epoch = getattr(index, 'epoch', None)
        if epoch is None:  # a re-fetch after a filtered sample: same stream
            return self.prepare(self.dataset, index)
        state = (random.getstate(), np.random.get_state(),
                 torch.get_rng_state())
        seed = sample_seed(self.seed, epoch, self.rank, int(index))
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)  # not the CUDA streams
        try:
            return self.prepare(self.dataset, int(index))
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])
            torch.set_rng_state(state[2])


def seed_samples(dataloader, seed: int, rank: int) -> bool:
    """Make the augmentation of every sample ``dataloader`` loads depend on
    (seed, epoch, rank, index) only.

    Args:
        dataloader (DataLoader): A training dataloader whose dataset is an
            MMEngine ``BaseDataset`` (it has ``prepare_data``) and whose
            batch sampler has a ``sampler``.
        seed (int): The run's seed.
        rank (int): This process's rank.

    Returns:
        bool: Whether it was installed (False: another kind of dataset or
        sampler, left as it is).
    """
    dataset = dataloader.dataset
    batch_sampler = getattr(dataloader, 'batch_sampler', None)
    if not callable(getattr(type(dataset), 'prepare_data', None)) or \
            not hasattr(batch_sampler, 'sampler'):
        return False
    if not isinstance(batch_sampler.sampler, EpochIndexSampler):
        batch_sampler.sampler = EpochIndexSampler(batch_sampler.sampler)
        dataset.prepare_data = SeededPrepare(dataset, seed, rank)
    return True
