from .atomic_checkpoint import AtomicCheckpointHook
from .distill_schedule import DistillLossScheduleHook, schedule_factor
from .export_student import ExportStudentHook
from .nonfinite_guard import NonFiniteGuardHook

__all__ = [
    'AtomicCheckpointHook', 'DistillLossScheduleHook', 'ExportStudentHook',
    'NonFiniteGuardHook', 'schedule_factor'
]
