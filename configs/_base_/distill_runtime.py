# Shared by every distillation config: register pcka_det's components and
# write student-only checkpoints (plain mmdet keys) when training ends.
custom_imports = dict(imports=['pcka_det'], allow_failed_imports=False)
custom_hooks = [dict(type='ExportStudentHook')]
