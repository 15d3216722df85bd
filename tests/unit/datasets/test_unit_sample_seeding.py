"""Each sample's random augmentation depends on (seed, epoch, rank, index)
only (:func:`pcka_det.datasets.seed_samples`): the same with 0 or 2 data
workers, persistent or new (a resumed run's), and the process's own random
streams are not moved by the data pipeline."""
import random

import numpy as np
import pytest
import torch
from mmengine.dataset import DefaultSampler
from torch.utils.data import DataLoader, Dataset

from pcka_det.datasets import seed_samples
from pcka_det.rng import rng_state


class _Draws(Dataset):
    """An MMEngine-style dataset (``__getitem__`` calls ``prepare_data``)
    whose "augmentation" draws from every global stream."""

    def __len__(self):
        return 8

    def prepare_data(self, index):
        return (int(index), random.random(), float(np.random.rand()),
                float(torch.rand(())))

    def __getitem__(self, index):
        return self.prepare_data(index)


def _as_list(batch):
    return batch


def _loader(workers, seed=0, rank=0, seeded=True):
    dataset = _Draws()
    loader = DataLoader(
        dataset, batch_size=2, num_workers=workers,
        persistent_workers=workers > 0, collate_fn=_as_list,
        sampler=DefaultSampler(dataset, shuffle=True, seed=0))
    if seeded:
        assert seed_samples(loader, seed, rank)
    return loader


def _draws(loader, epochs):
    """``{(epoch, index): draws}`` over ``epochs``, as a training loop
    iterates them (``set_epoch`` on the loader's sampler first)."""
    out = {}
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            for index, *values in batch:
                out[(epoch, index)] = tuple(values)
    return out


def test_same_augmentation_whatever_the_workers():
    reference = _draws(_loader(0), range(3))
    assert len(reference) == 24
    # two persistent workers, living across the epochs
    assert _draws(_loader(2), range(3)) == reference
    # a resumed run: new workers, starting at epoch 2
    resumed = _draws(_loader(2), [2])
    assert resumed == {k: v for k, v in reference.items() if k[0] == 2}
    # the epoch, the seed and the rank each change the draws
    assert reference[(0, 3)] != reference[(1, 3)]
    assert _draws(_loader(0, seed=1), [0])[(0, 3)] != reference[(0, 3)]
    assert _draws(_loader(0, rank=1), [0])[(0, 3)] != reference[(0, 3)]


def test_without_it_persistent_workers_differ_on_resume():
    """What the seeding fixes: MMEngine-less workers seeded once."""
    torch.manual_seed(0)
    straight = _draws(_loader(2, seeded=False), range(3))
    torch.manual_seed(0)
    resumed = _draws(_loader(2, seeded=False), [2])
    assert resumed != {k: v for k, v in straight.items() if k[0] == 2}


class _Quiet(_Draws):
    """Draws nothing."""

    def prepare_data(self, index):
        return (int(index), )


def _same(a, b):
    return a['python'] == b['python'] and torch.equal(a['torch'], b[
        'torch']) and all(np.array_equal(x, y) if isinstance(x, np.ndarray)
                          else x == y for x, y in zip(a['numpy'], b['numpy']))


def _streams_after(loader):
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    _draws(loader, range(2))
    return rng_state()


def test_main_process_streams_untouched_with_num_workers_0():
    # the pipeline's draws leave the main streams where a pipeline that
    # draws nothing leaves them (the DataLoader itself draws its workers'
    # base seed from torch's stream, seeded or not)
    quiet = _loader(0, seeded=False)
    quiet.dataset.__class__ = _Quiet
    assert _same(_streams_after(_loader(0)), _streams_after(quiet))
    assert not _same(_streams_after(_loader(0, seeded=False)),
                     _streams_after(quiet))


def test_other_datasets_are_left_as_they_are():
    loader = DataLoader(list(range(4)), batch_size=2)  # no prepare_data
    assert not seed_samples(loader, 0, 0)
