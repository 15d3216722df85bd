from .distill_schedule import DistillLossScheduleHook, schedule_factor
from .export_student import ExportStudentHook

__all__ = ['DistillLossScheduleHook', 'ExportStudentHook', 'schedule_factor']
