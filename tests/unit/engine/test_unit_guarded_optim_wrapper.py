"""Unit tests of :class:`pcka_det.engine.GuardedOptimWrapper`: a finite
gradient steps; a NaN/Inf gradient skips the step, counts it, and puts the
BatchNorm running statistics back as they were before the forward pass(es)
of the dropped update."""
import itertools

import pytest
import torch
from mmengine.logging import MessageHub
from torch import nn

import pcka_det  # noqa: F401  (registers components)
from pcka_det.engine import GuardedOptimWrapper

_hub_ids = itertools.count()


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()


def _wrapper(model, **kwargs):
    # OptimWrapper takes the current MessageHub: a fresh one per test, so
    # that the scalar read back is this wrapper's
    hub = MessageHub.get_instance(f'test_unit_guarded_{next(_hub_ids)}')
    wrapper = GuardedOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        **kwargs)
    assert wrapper.message_hub is hub
    return wrapper


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 6, 6, generator=g)


def _loss(model, x):
    # not a plain sum: BN's output sums to a constant, its gradient would
    # not reach the convolution
    return (model(x) - 1.0).square().mean()


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def _stats(model):
    bn = model[1]
    return [bn.running_mean.clone(), bn.running_var.clone(),
            bn.num_batches_tracked.clone()]


def _same(a, b):
    """Bit for bit (NaN differs from everything, as it should here)."""
    return len(a) == len(b) and all(
        x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(a, b))


def _scalar(wrapper):
    return wrapper.message_hub.get_scalar('train/skipped_steps').current()


def test_finite_gradient_steps():
    model = _model()
    wrapper = _wrapper(model)
    before = _params(model)
    with wrapper.optim_context(model):
        loss = _loss(model, _batch())
    wrapper.update_params(loss)
    after = _params(model)
    # every parameter (conv weight and bias, BN weight and bias) moved
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    assert all(torch.isfinite(p).all() for p in after)
    assert wrapper.last_skipped is False
    assert wrapper.skipped_steps == 0
    assert 'train/skipped_steps' not in wrapper.message_hub.log_scalars


def test_nan_input_skips_the_step_and_restores_bn():
    model = _model()
    wrapper = _wrapper(model)
    params, stats = _params(model), _stats(model)
    x = _batch()
    x[0, 0, 0, 0] = float('nan')
    with wrapper.optim_context(model):
        loss = _loss(model, x)
    # the bad forward pass did move the statistics (to NaN) and the counter
    assert torch.isnan(model[1].running_mean).any()
    assert int(model[1].num_batches_tracked) == 1
    wrapper.update_params(loss)
    assert _same(_params(model), params)
    assert _same(_stats(model), stats)
    assert wrapper.last_skipped is True
    assert wrapper.skipped_steps == 1
    assert _scalar(wrapper) == 1


@pytest.mark.parametrize('bad', [float('inf'), float('nan')])
def test_nonfinite_gradient_of_a_finite_forward_is_skipped(bad):
    """The forward pass is finite (the statistics move to finite values),
    one gradient entry is Inf/NaN: the step is skipped and the statistics
    are those before the forward pass, not those after it."""
    model = _model()
    wrapper = _wrapper(model)
    params, stats = _params(model), _stats(model)
    with wrapper.optim_context(model):
        loss = _loss(model, _batch())
        moved = _stats(model)
        assert not _same(moved, stats)
        assert all(torch.isfinite(s).all() for s in moved)
        wrapper.backward(loss)
        model[0].weight.grad[0, 0, 0, 0] = bad
        wrapper.step()
        wrapper.zero_grad()
    assert _same(_params(model), params)
    assert _same(_stats(model), stats)
    assert wrapper.last_skipped is True
    assert wrapper.skipped_steps == 1
    assert _scalar(wrapper) == 1


def test_skips_are_counted_and_a_good_step_follows():
    model = _model()
    wrapper = _wrapper(model)
    bad = _batch()
    bad[1, 2, 3, 4] = float('inf')
    for expected in (1, 2):
        with wrapper.optim_context(model):
            loss = _loss(model, bad)
        wrapper.update_params(loss)
        assert wrapper.last_skipped is True
        assert wrapper.skipped_steps == expected
        assert _scalar(wrapper) == expected
    params, stats = _params(model), _stats(model)
    with wrapper.optim_context(model):
        # optim_context clears the flag for the new iteration
        assert wrapper.last_skipped is False
        loss = _loss(model, _batch(2))
    wrapper.update_params(loss)
    assert wrapper.last_skipped is False
    assert wrapper.skipped_steps == 2  # not reset by a good step
    assert _scalar(wrapper) == 2
    assert not _same(_params(model), params)
    assert int(model[1].num_batches_tracked) == int(stats[2]) + 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize('bad_pass', [0, 1])
def test_accumulation_skip_restores_the_whole_window(bad_pass):
    """accumulative_counts=2: two forward passes, one step. When that step
    is skipped the statistics are those before the window's first pass,
    whichever pass was bad."""
    model = _model()
    wrapper = _wrapper(model, accumulative_counts=2)
    # one good update first, so that the window does not start from the
    # initial statistics (zeros, ones, 0) by chance
    for seed in (3, 4):
        with wrapper.optim_context(model):
            loss = _loss(model, _batch(seed))
        wrapper.update_params(loss)
    assert wrapper.last_skipped is False
    assert int(model[1].num_batches_tracked) == 2
    params, stats = _params(model), _stats(model)
    for i in range(2):
        x = _batch(10 + i)
        if i == bad_pass:
            x[0, 1, 2, 2] = float('nan')
        with wrapper.optim_context(model):
            loss = _loss(model, x)
        wrapper.update_params(loss)
        if i == 0:  # accumulating: no step yet, the weights wait
            assert _same(_params(model), params)
            assert int(model[1].num_batches_tracked) == 3
    assert wrapper.last_skipped is True
    assert wrapper.skipped_steps == 1
    assert _same(_params(model), params)
    assert _same(_stats(model), stats)  # both passes undone
    assert int(model[1].num_batches_tracked) == 2
