"""Unit tests of :class:`pcka_det.engine.hooks.NonFiniteGuardHook`, called
directly with a fake runner: the limits on skipped optimizer steps and on a
distillation level's non-finite streak."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.structures import BaseDataElement
from torch import nn

import pcka_det  # noqa: F401  (registers components)
from pcka_det.engine.hooks import NonFiniteGuardHook


class _Streaks(nn.Module):
    """A model that reports its levels' non-finite streaks."""

    def __init__(self, streaks):
        super().__init__()
        self.streaks = streaks

    reads = 0

    def nonfinite_peaks(self):
        self.reads += 1
        return dict(self.streaks)


def _runner(model=None, skipped=False, it=0):
    return SimpleNamespace(
        optim_wrapper=SimpleNamespace(last_skipped=skipped),
        model=model if model is not None else nn.Linear(1, 1), iter=it)


def _batch(*ids):
    return dict(inputs=[torch.zeros(1)] * len(ids), data_samples=[
        BaseDataElement(metainfo=dict(img_id=i)) for i in ids
    ])


# ------------------------------------------------- distillation level streaks
@pytest.mark.parametrize('model', [
    nn.Linear(1, 1),  # no nonfinite_peaks at all (a plain detector)
    _Streaks({}),  # nonfinite='raise', or a step without distillation
    _Streaks(dict(pcka_p3=0, pcka_p4=4)),  # below the limit (5)
], ids=['no-method', 'empty', 'below'])
def test_level_streaks_that_do_not_raise(model):
    hook = NonFiniteGuardHook(max_level_streak=5, level_check_interval=1)
    for it in range(10):
        hook.after_train_iter(_runner(model, it=it), it)


def test_level_streak_read_through_a_model_wrapper():
    from mmengine.model import MMDistributedDataParallel

    # is_model_wrapper() looks at the registry, not at the process group
    wrapped = MMDistributedDataParallel.__new__(MMDistributedDataParallel)
    nn.Module.__init__(wrapped)
    wrapped.module = _Streaks(dict(pcka_p5=5))
    hook = NonFiniteGuardHook(max_level_streak=5, level_check_interval=1)
    with pytest.raises(FloatingPointError, match='"pcka_p5"'):
        hook.after_train_iter(_runner(wrapped), 0)


@pytest.mark.parametrize('streak', [5, 6])
def test_level_streak_at_the_limit_raises_naming_the_level(streak):
    model = _Streaks(dict(pcka_p3=1, pcka_p4=streak, pcka_p5=0))
    hook = NonFiniteGuardHook(max_level_streak=5, level_check_interval=1)
    with pytest.raises(FloatingPointError,
                       match=f'"pcka_p4" has been NaN/Inf for {streak} '
                       'steps in a row'):
        hook.after_train_iter(_runner(model), 0)


def test_level_streak_names_the_longest():
    model = _Streaks(dict(pcka_p3=7, pcka_p4=9, pcka_p5=8))
    hook = NonFiniteGuardHook(max_level_streak=5, level_check_interval=1)
    with pytest.raises(FloatingPointError) as err:
        hook.after_train_iter(_runner(model), 0)
    assert '"pcka_p4"' in str(err.value)
    assert 'pcka_p3' not in str(err.value)


def test_level_streak_growing_raises_when_it_reaches_the_limit():
    model = _Streaks(dict(pcka_p6=0))
    hook = NonFiniteGuardHook(max_level_streak=3, level_check_interval=1)
    for it in range(2):
        model.streaks['pcka_p6'] = it + 1
        hook.after_train_iter(_runner(model, it=it), it)
    model.streaks['pcka_p6'] = 3
    with pytest.raises(FloatingPointError, match='"pcka_p6"'):
        hook.after_train_iter(_runner(model, it=2), 2)


def test_level_streaks_read_every_interval_only():
    # each read is a host-device synchronisation: one per interval
    model = _Streaks(dict(pcka_p3=0))
    hook = NonFiniteGuardHook(max_level_streak=5)
    assert hook.level_check_interval == 10  # the documented default
    for it in range(25):
        hook.after_train_iter(_runner(model, it=it), it)
    assert model.reads == 2  # after iterations 10 and 20
    # the limit is still met at the next read
    model.streaks['pcka_p3'] = 7
    for it in range(25, 29):
        hook.after_train_iter(_runner(model, it=it), it)
    with pytest.raises(FloatingPointError, match='"pcka_p3"'):
        hook.after_train_iter(_runner(model, it=29), 29)
    assert model.reads == 3


# --------------------------------------------------- skipped optimizer steps
def _feed(hook, pattern, start=0):
    """Call the hook once per entry of ``pattern`` (True: the step was
    skipped); the batch of iteration ``it`` holds image ids it*10, it*10+1."""
    for it, skipped in enumerate(pattern, start):
        hook.after_train_iter(_runner(skipped=skipped, it=it), it,
                              _batch(it * 10, it * 10 + 1),
                              dict(loss=torch.tensor(float('nan'))))


def test_skips_up_to_max_consecutive_do_not_raise():
    hook = NonFiniteGuardHook(max_consecutive=3, max_total=20)
    # 3 in a row, a good step resets the run, 3 in a row again
    _feed(hook, [True, True, True, False, True, True, True, False])
    assert hook.total == 6
    assert hook.consecutive == 0


def test_one_beyond_max_consecutive_raises_naming_the_first_bad_iteration():
    hook = NonFiniteGuardHook(max_consecutive=3, max_total=20)
    _feed(hook, [False, False, True, False])  # first bad: runner.iter 2
    _feed(hook, [True, True, True], start=4)
    with pytest.raises(FloatingPointError) as err:
        _feed(hook, [True], start=7)  # the 4th in a row
    msg = str(err.value)
    # runner.iter counts from 0, the messages count iterations from 1
    assert 'iteration 3,' in msg
    assert '[20, 21]' in msg  # the first bad batch's images
    assert '5 optimizer steps skipped' in msg
    assert '4 in a row' in msg


def test_beyond_max_total_raises_naming_the_first_bad_iteration():
    hook = NonFiniteGuardHook(max_consecutive=3, max_total=4)
    # never more than 2 in a row, 4 in all: allowed
    _feed(hook, [False, True, True, False, True, False, True, False])
    assert hook.total == 4
    with pytest.raises(FloatingPointError) as err:
        _feed(hook, [True], start=8)  # the 5th in all
    msg = str(err.value)
    assert 'iteration 2,' in msg
    assert '[10, 11]' in msg
    assert '5 optimizer steps skipped' in msg
    assert '1 in a row' in msg


def test_wrapper_without_last_skipped_counts_nothing():
    """An optimizer wrapper that is not guarded (AmpOptimWrapper) has no
    last_skipped: nothing is counted."""
    hook = NonFiniteGuardHook(max_consecutive=0, max_total=0)
    runner = SimpleNamespace(optim_wrapper=SimpleNamespace(),
                             model=nn.Linear(1, 1), iter=0)
    hook.after_train_iter(runner, 0)
    assert hook.total == 0
