# Shared by every distillation config: register pcka_det's components and
# run with DistillRunner, which refuses checkpoints that do not fit the model
# and writes student-only checkpoints (plain mmdet keys) when training ends,
# whatever custom_hooks a config sets.
custom_imports = dict(imports=['pcka_det'], allow_failed_imports=False)
runner_type = 'DistillRunner'
