"""Unit tests of :class:`pcka_det.engine.GuardedAmpOptimWrapper` on the CPU:
MMEngine's AMP wrapper needs CUDA and a real loss scaler, so a stand-in
scaler reports the skips (what ``GradScaler`` does on a GPU: a skipped
step halves the scale)."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.structures import BaseDataElement
from torch import nn

import pcka_det  # noqa: F401  (registers components)
from pcka_det.engine import GuardedAmpOptimWrapper
from pcka_det.engine.hooks import NonFiniteGuardHook


class _Scaler:
    """Dynamic loss scaling as ``GradScaler`` does it, with the overflow
    decided by the test: an overflowing step is skipped and halves the
    scale."""

    def __init__(self):
        self.value = 2.0 ** 16
        self.overflow = False

    def scale(self, loss):
        return loss * self.value

    def unscale_(self, optimizer):
        pass

    def step(self, optimizer, **kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g['params']
                 if p.grad is not None]
        if self.overflow or not all(torch.isfinite(g).all() for g in grads):
            self.skipped = True
            return
        self.skipped = False
        for g in grads:
            g.div_(self.value)
        optimizer.step()

    def update(self, new_scale=None):
        if self.skipped:
            self.value /= 2

    def get_scale(self):
        return self.value


@pytest.fixture
def wrapped(monkeypatch):
    # AmpOptimWrapper asserts a GPU when built; nothing here runs on one
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available',
                        lambda: True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train()
    wrapper = GuardedAmpOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    wrapper.loss_scaler = _Scaler()
    return model, wrapper


def _step(model, wrapper, overflow=False, bad_loss=False):
    wrapper.loss_scaler.overflow = overflow
    x = torch.randn(2, 3, 8, 8)
    with wrapper.optim_context(model):
        loss = model(x).square().mean()
    if bad_loss:
        loss = loss * float('nan')
    wrapper.update_params(loss)


def _stats(model):
    bn = model[1]
    return [bn.running_mean.clone(), bn.running_var.clone(),
            bn.num_batches_tracked.clone()]


def test_scaler_skip_restores_bn_and_is_not_a_bad_batch(wrapped):
    model, wrapper = wrapped
    before = _stats(model)
    weight = model[0].weight.detach().clone()
    _step(model, wrapper, overflow=True)
    assert wrapper.scaler_skipped and not wrapper.last_skipped
    assert wrapper.scaler_skips == 1 and wrapper.skipped_steps == 0
    # the skipped forward's BN update is gone, the weights unchanged
    for a, b in zip(_stats(model), before):
        assert torch.equal(a, b)
    assert torch.equal(model[0].weight, weight)
    # a step that is not skipped keeps its update
    _step(model, wrapper)
    assert not wrapper.scaler_skipped and not wrapper.last_skipped
    assert not torch.equal(_stats(model)[0], before[0])
    assert not torch.equal(model[0].weight, weight)


def test_guard_counts_bad_losses_not_scaler_skips(wrapped):
    model, wrapper = wrapped
    hook = NonFiniteGuardHook(max_consecutive=0, max_total=0)
    runner = SimpleNamespace(optim_wrapper=wrapper, model=model, iter=0)
    batch = dict(data_samples=[BaseDataElement(metainfo=dict(img_id=7))])
    for it in range(3):  # overflows at the start of a run, by design
        _step(model, wrapper, overflow=True)
        runner.iter = it
        hook.after_train_iter(runner, it, batch)
    assert hook.total == 0
    before = _stats(model)
    _step(model, wrapper, bad_loss=True)  # a NaN loss: a bad batch
    assert wrapper.last_skipped and wrapper.skipped_steps == 1
    for a, b in zip(_stats(model), before):
        assert torch.equal(a, b)
    with pytest.raises(FloatingPointError, match=r'images \[7\]'):
        hook.after_train_iter(runner, 3, batch)
