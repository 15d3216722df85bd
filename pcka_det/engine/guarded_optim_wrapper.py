"""An optimizer wrapper that never applies a non-finite update."""
from contextlib import contextmanager
from typing import List, Tuple

import torch
from mmengine.optim import OptimWrapper
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from mmdet.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(OptimWrapper):
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
    place of ``OptimWrapper`` (same arguments); ``AmpOptimWrapper`` is left
    as it is, its loss scaler already skips non-finite steps.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.skipped_steps = 0
        self.last_skipped = False
        self._stats: List[Tuple[torch.Tensor, torch.Tensor]] = []

    @contextmanager
    def optim_context(self, model: nn.Module):
        """MMEngine's context (entered around the forward pass), keeping a
        copy of the running statistics (BN) the forward pass updates."""
        self.last_skipped = False  # set by step(), for this iteration only
        # at the first forward pass of an update (gradient accumulation:
        # of its window), so that a skip undoes every pass it drops
        if self._inner_count % self._accumulative_counts == 0 or \
                not self._stats:
            self._stats = [(buf, buf.clone()) for module in model.modules()
                           if isinstance(module, _NormBase)
                           for buf in (module.running_mean,
                                       module.running_var,
                                       module.num_batches_tracked)
                           if buf is not None]
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
            for buf, before in self._stats:
                buf.copy_(before)
            self.skipped_steps += 1
            self.message_hub.update_scalar('train/skipped_steps',
                                           self.skipped_steps)
            return
        super().step(**kwargs)
