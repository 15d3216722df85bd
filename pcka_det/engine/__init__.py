"""How training runs: the runner, its loop, optimizer wrapper and hooks
(MMDetection's ``engine/``). Importing it registers them."""
from .guarded_optim_wrapper import GuardedAmpOptimWrapper, GuardedOptimWrapper
from .hooks import (AtomicCheckpointHook, DistillLossScheduleHook,
                    ExportStudentHook, NonFiniteGuardHook, schedule_factor)
from .runner import DistillRunner, check_pretrained_sources
from .train_loop import ExactResumeEpochBasedTrainLoop

__all__ = [
    'GuardedOptimWrapper', 'GuardedAmpOptimWrapper', 'AtomicCheckpointHook', 'DistillLossScheduleHook',
    'ExportStudentHook', 'NonFiniteGuardHook', 'schedule_factor',
    'DistillRunner', 'check_pretrained_sources',
    'ExactResumeEpochBasedTrainLoop'
]
