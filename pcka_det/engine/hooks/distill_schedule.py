"""Scale the distillation losses over training: warm-up, decay, stop."""
import math
from typing import Optional

from mmengine.hooks import Hook

from mmdet.registry import HOOKS
from ...models.wrappers import unwrap_model
from ...options import Contract, Option, OptionError, Rule, declare, validate

CONTRACT = declare(Contract(
    'DistillLossScheduleHook', 'custom_hooks[i]',
    'Scales every distillation loss over training: warm-up, decay, stop.',
    options=(
        Option('warmup_iters', 'int', 0, 'linear warm-up steps', low=0,
               examples=(1, )),
        Option('decay', 'str', None, 'decay from 1 to min_factor over the '
               'run', choices=('linear', 'cosine'), nullable=True,
               examples=('linear', 'cosine')),
        Option('min_factor', 'float', 0.0, 'where the decay ends (a '
               'negative factor would push the student away from the '
               'teacher)', low=0, high=1,
               examples=(0.5, )),
        Option('stop_epoch', 'int', None, 'stop distilling after this many '
               'epochs', low=1, nullable=True,
               examples=(1, )),
        Option('stop_iter', 'int', None, 'stop distilling after this many '
               'steps', low=1, nullable=True,
               examples=(1, )),
    ),
    rules=(Rule('min-factor-with-decay', 'min_factor only acts with a '
                'decay: set decay, or leave min_factor at 0',
                lambda v: 'min_factor is set without a decay, so it does '
                'nothing' if v['min_factor'] and v['decay'] is None
                else None), ),
    run_rules=(('warm-up-within-run', 'warmup_iters is shorter than the '
                'run (else the factor never reaches 1 and distillation '
                'stays near 0)'),
               ('stop-within-run', 'stop_iter / stop_epoch fall inside the '
                'run (else they do nothing)'))))


def schedule_factor(iteration: int, epoch: int, max_iters: int,
                    warmup_iters: int = 0, decay: Optional[str] = None,
                    min_factor: float = 0.0, stop_epoch: Optional[int] = None,
                    stop_iter: Optional[int] = None) -> float:
    """The factor of the distillation losses at one training step.

    Args:
        iteration (int): Steps done before this one (``runner.iter``).
        epoch (int): Epochs done before this one (``runner.epoch``).
        max_iters (int): Steps of the whole run.
        warmup_iters (int): Linear warm-up from ``1/warmup_iters`` to 1.
        decay (str, optional): ``'linear'`` or ``'cosine'`` from 1 at the
            first step to ``min_factor`` at the last; None keeps 1.
        min_factor (float): Where the decay ends.
        stop_epoch (int, optional): From this epoch on (0-based count of
            epochs done) the factor is 0.
        stop_iter (int, optional): From this step on the factor is 0.

    Returns:
        float: The factor, in [0, 1].
    """
    if (stop_epoch is not None and epoch >= stop_epoch) or (
            stop_iter is not None and iteration >= stop_iter):
        return 0.0
    factor = 1.0
    if warmup_iters > 0 and iteration < warmup_iters:
        factor *= (iteration + 1) / warmup_iters
    if decay is not None:
        progress = min(iteration / max(max_iters - 1, 1), 1.0)
        if decay == 'linear':
            shape = 1 - progress
        elif decay == 'cosine':
            shape = (1 + math.cos(math.pi * progress)) / 2
        else:
            raise ValueError(f'decay must be "linear", "cosine" or None, got '
                             f'"{decay}"')
        factor *= min_factor + (1 - min_factor) * shape
    return factor


@HOOKS.register_module()
class DistillLossScheduleHook(Hook):
    """Scale every distillation loss of a ``FeatureDistiller`` by a schedule.

    Before each training step the distiller's ``distill_scale`` is set from
    the runner's step and epoch (:func:`schedule_factor`), so a resumed run
    continues the schedule where it stopped. The logged ``loss_<name>`` are
    the scaled values and ``distill_scale`` is logged too. Once the factor
    is 0 (``stop_epoch`` / ``stop_iter``) the teacher is not run at all.

    Args:
        warmup_iters (int): Linear warm-up steps.
        decay (str, optional): ``'linear'`` or ``'cosine'`` over the run.
        min_factor (float): Where the decay ends.
        stop_epoch (int, optional): Stop distilling after this many epochs.
        stop_iter (int, optional): Stop distilling after this many steps.

    Example:
        >>> custom_hooks = [dict(type='DistillLossScheduleHook',
        ...                      warmup_iters=500, stop_epoch=20)]
    """

    def __init__(self,
                 warmup_iters: int = 0,
                 decay: Optional[str] = None,
                 min_factor: float = 0.0,
                 stop_epoch: Optional[int] = None,
                 stop_iter: Optional[int] = None) -> None:
        self.kwargs = validate('DistillLossScheduleHook', dict(
            warmup_iters=warmup_iters, decay=decay, min_factor=min_factor,
            stop_epoch=stop_epoch, stop_iter=stop_iter))

    def before_train(self, runner) -> None:
        """The rules that need the run's length (the dataloader exists)."""
        total, epochs = runner.max_iters, runner.max_epochs
        k = self.kwargs
        if k['warmup_iters'] >= total:
            raise OptionError(
                f'DistillLossScheduleHook.warmup_iters = {k["warmup_iters"]}'
                f' but the run has {total} steps: the distillation factor '
                'would never reach 1 (rule "warm-up-within-run"). Set '
                f'warmup_iters well below {total}, or drop it.')
        if k['stop_iter'] is not None and k['stop_iter'] >= total:
            raise OptionError(
                f'DistillLossScheduleHook.stop_iter = {k["stop_iter"]} but '
                f'the run has {total} steps: it never stops distillation '
                '(rule "stop-within-run"). Lower it or drop it.')
        if k['stop_epoch'] is not None and epochs is not None and \
                k['stop_epoch'] >= epochs:
            raise OptionError(
                f'DistillLossScheduleHook.stop_epoch = {k["stop_epoch"]} but '
                f'the run has {epochs} epochs: it never stops distillation '
                '(rule "stop-within-run"). Lower it or drop it.')

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        model = unwrap_model(runner.model)
        if not hasattr(model, 'distill_scale'):
            raise TypeError('DistillLossScheduleHook needs a FeatureDistiller'
                            f' model, got {type(model).__name__}')
        model.distill_scale = schedule_factor(
            runner.iter, runner.epoch, runner.max_iters, **self.kwargs)
