"""Stop a run whose optimizer steps keep being skipped."""
import logging
from typing import List, Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmdet.registry import HOOKS
from ...models.wrappers import unwrap_model
from ...options import Contract, Option, declare, validate

CONTRACT = declare(Contract(
    'NonFiniteGuardHook', 'default_hooks.nonfinite_guard',
    'Logs skipped non-finite steps and stops a run whose skips go on.',
    options=(
        Option('max_consecutive', 'int', 3, 'most skipped steps in a row',
               low=0,
               examples=(0, )),
        Option('max_total', 'int', 20, 'most skipped steps in the run',
               low=0,
               examples=(0, )),
        Option('max_level_streak', 'int', 20, 'most NaN/Inf steps in a row '
               'of one distillation level', low=1,
               examples=(1, )),
        Option('level_check_interval', 'int', 10, 'iterations between two '
               'reads of the levels\' streaks (each read is one host-device '
               'synchronisation; the stop comes at most this many - 1 '
               'steps after a streak reaches max_level_streak)', low=1,
               examples=(1, )),
    )))


def batch_ids(data_batch) -> List:
    """Image ids (or paths) of a training batch, for messages."""
    samples = (data_batch or {}).get('data_samples') or [] \
        if isinstance(data_batch, dict) else []
    ids = []
    for sample in samples:
        meta = getattr(sample, 'metainfo', {}) or {}
        ids.append(meta.get('img_id', meta.get('img_path')))
    return ids


@HOOKS.register_module()
class NonFiniteGuardHook(Hook):
    """Log every step :class:`~pcka_det.engine.GuardedOptimWrapper` skipped
    (non-finite gradients) and stop the run when they go on.

    Also stops when one distillation level has been non-finite (and hence
    skipped by ``FeatureDistiller``'s ``nonfinite='skip'``) for
    ``max_level_streak`` steps in a row: a level that never trains is a
    broken run (e.g. a teacher feature that overflows), not a bad batch.
    The streaks stay on the device; they are read every
    ``level_check_interval`` iterations (the longest streak since the last
    read), so this check adds no host-device synchronisation per step.

    ``DistillRunner`` adds it to every run that has none.

    Args:
        max_consecutive (int): Most skipped steps in a row.
        max_total (int): Most skipped steps in the whole run.
        max_level_streak (int): Most non-finite steps in a row of one
            distillation level.
        level_check_interval (int): Iterations between two reads of the
            levels' streaks.
    """

    priority = 'LOW'

    def __init__(self, max_consecutive: int = 3, max_total: int = 20,
                 max_level_streak: int = 20,
                 level_check_interval: int = 10) -> None:
        validate('NonFiniteGuardHook', dict(
            max_consecutive=max_consecutive, max_total=max_total,
            max_level_streak=max_level_streak,
            level_check_interval=level_check_interval))
        self.level_check_interval = level_check_interval
        self.max_consecutive = max_consecutive
        self.max_total = max_total
        self.max_level_streak = max_level_streak
        self.consecutive = 0
        self.total = 0
        self.first_bad: Optional[tuple] = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        wrapper = runner.optim_wrapper
        if getattr(wrapper, 'last_skipped', False):
            self.consecutive += 1
            self.total += 1
            ids = batch_ids(data_batch)
            if self.first_bad is None:
                self.first_bad = (runner.iter + 1, ids)
            print_log(
                f'Iteration {runner.iter + 1}: the gradient is not finite '
                f'(loss {_value(outputs, "loss")}); the optimizer step is '
                f'skipped (images {ids}). Skipped so far: {self.total}.',
                logger='current', level=logging.WARNING)
            if self.consecutive > self.max_consecutive or \
                    self.total > self.max_total:
                it, first = self.first_bad
                raise FloatingPointError(
                    f'{self.total} optimizer steps skipped for non-finite '
                    f'gradients ({self.consecutive} in a row; limits '
                    f'{self.max_consecutive} in a row, {self.max_total} in '
                    f'all). The first bad batch was iteration {it}, images '
                    f'{first}. Check those images and the learning rate; '
                    'the last checkpoint holds finite weights.')
        else:
            self.consecutive = 0
        if (runner.iter + 1) % self.level_check_interval:
            return  # the streaks stay on the device until the next read
        model = unwrap_model(runner.model)
        read = getattr(model, 'nonfinite_peaks', None)
        # empty with nonfinite='raise' and in steps no distillation ran
        streaks = read() if callable(read) else {}
        if streaks:
            name, streak = max(streaks.items(), key=lambda kv: kv[1])
            if streak >= self.max_level_streak:
                raise FloatingPointError(
                    f'Distillation loss "{name}" has been NaN/Inf for '
                    f'{streak} steps in a row, so that level trains '
                    'nothing. Check the teacher (its checkpoint, '
                    'teacher_dtype) and this level\'s features.')


def _value(outputs, key):
    value = (outputs or {}).get(key)
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
