from .export_student import ExportStudentHook

__all__ = ['ExportStudentHook']
