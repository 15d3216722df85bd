from .atomic_checkpoint import AtomicCheckpointHook
from .distill_schedule import DistillLossScheduleHook, schedule_factor
from .export_student import ExportStudentHook

__all__ = [
    'AtomicCheckpointHook', 'DistillLossScheduleHook', 'ExportStudentHook',
    'schedule_factor'
]
