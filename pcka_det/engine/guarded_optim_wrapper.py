"""Optimizer wrappers that never apply a non-finite update, and put back
the normalisation statistics of a step they skip."""
from contextlib import contextmanager
from typing import List, Tuple

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from mmdet.registry import OPTIM_WRAPPERS


class _RestoresNormStats:
    """Keeps a copy of the running statistics (BN) at the first forward pass
    of an update, to put them back when the update is skipped."""

    def _snapshot_norm_stats(self, model: nn.Module) -> None:
        # at the first forward pass of an update (gradient accumulation:
        # of its window), so that a skip undoes every pass it drops
        if self._inner_count % self._accumulative_counts == 0 or \
                not getattr(self, '_stats', None):
            self._stats: List[Tuple[torch.Tensor, torch.Tensor]] = [
                (buf, buf.clone()) for module in model.modules()
                if isinstance(module, _NormBase)
                for buf in (module.running_mean, module.running_var,
                            module.num_batches_tracked) if buf is not None]

    def _restore_norm_stats(self) -> None:
        for buf, before in getattr(self, '_stats', []):
            buf.copy_(before)


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(_RestoresNormStats, OptimWrapper):
    """``OptimWrapper`` that skips the optimizer step when the gradient norm
    is not finite.

    One bad batch (an image of inf, a corrupt file decoded to garbage) gives
    a NaN loss; without this its NaN gradients pass through clipping into the
    optimizer and every weight becomes NaN for the rest of the run. Here the
    step is skipped, the normalisation layers' running statistics that the
    bad forward pass updated are put back as they were before it,
    ``train/skipped_steps`` counts the skips in the log, and
    ``last_skipped`` tells :class:`~pcka_det.engine.hooks.NonFiniteGuardHook`,
    which stops a run whose skips go on.

    The norm is taken after the backward pass, i.e. after DDP's all-reduce,
    so every rank sees the same norm and skips the same steps. One
    host-device synchronisation per update. ``DistillRunner`` uses it in
    place of ``OptimWrapper`` (same arguments); ``--amp`` uses
    :class:`GuardedAmpOptimWrapper`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.skipped_steps = 0
        self.last_skipped = False

    @contextmanager
    def optim_context(self, model: nn.Module):
        """MMEngine's context (entered around the forward pass), keeping a
        copy of the running statistics (BN) the forward pass updates."""
        self.last_skipped = False  # set by step(), for this iteration only
        self._snapshot_norm_stats(model)
        with super().optim_context(model):
            yield

    def grad_norm(self) -> torch.Tensor:
        """L2 norm of all the gradients of the optimized parameters."""
        grads = [p.grad for group in self.optimizer.param_groups
                 for p in group['params'] if p.grad is not None]
        if not grads:
            return torch.zeros(())
        return torch.nn.utils.get_total_norm(grads)

    def step(self, **kwargs) -> None:
        """Clip and step, unless the gradient norm is NaN or Inf (then the
        running statistics are restored instead)."""
        self.last_skipped = not bool(torch.isfinite(self.grad_norm()))
        if self.last_skipped:
            self._restore_norm_stats()
            self.skipped_steps += 1
            self.message_hub.update_scalar('train/skipped_steps',
                                           self.skipped_steps)
            return
        super().step(**kwargs)


@OPTIM_WRAPPERS.register_module()
class GuardedAmpOptimWrapper(_RestoresNormStats, AmpOptimWrapper):
    """``AmpOptimWrapper`` (``--amp``) that puts back the running statistics
    (BN) of every step its loss scaler skips, and tells a non-finite loss
    from a loss-scale overflow.

    Dynamic loss scaling skips a step whenever the scaled gradients
    overflow: at the start of a run and after each increase of the scale,
    by design. Those skips are not bad batches: they never count toward
    :class:`~pcka_det.engine.hooks.NonFiniteGuardHook`'s limits
    (``scaler_skipped``, ``train/scaler_skips`` in the log). A loss that is
    itself NaN/Inf is a bad batch: ``last_skipped``, which the guard hook
    logs with the batch's image ids and counts. In both cases the BN
    statistics the skipped forward pass updated are put back (MMEngine
    keeps them). A skip is seen as a drop of the scale (dynamic scaling,
    what ``--amp`` uses): one host-device synchronisation per update.
    Arguments are ``AmpOptimWrapper``'s.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.skipped_steps = 0
        self.scaler_skips = 0
        self.last_skipped = False
        self.scaler_skipped = False
        self._loss_finite = None

    @contextmanager
    def optim_context(self, model: nn.Module):
        """MMEngine's context (autocast), keeping a copy of the running
        statistics (BN) the forward pass updates."""
        self.last_skipped = self.scaler_skipped = False
        self._snapshot_norm_stats(model)
        with super().optim_context(model):
            yield

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        """MMEngine's scaled backward; whether the loss was finite is kept
        on the device until the step."""
        self._loss_finite = torch.isfinite(loss.detach())
        super().backward(loss, **kwargs)

    def step(self, **kwargs) -> None:
        """The scaler's step; a skipped one puts the statistics back."""
        scale = self.loss_scaler.get_scale()
        super().step(**kwargs)
        self.scaler_skipped = self.loss_scaler.get_scale() < scale
        self.last_skipped = self._loss_finite is not None and \
            not bool(self._loss_finite)
        if self.scaler_skipped or self.last_skipped:
            self._restore_norm_stats()
        if self.last_skipped:
            self.skipped_steps += 1
            self.message_hub.update_scalar('train/skipped_steps',
                                           self.skipped_steps)
        elif self.scaler_skipped:
            self.scaler_skips += 1
            self.message_hub.update_scalar('train/scaler_skips',
                                           self.scaler_skips)
