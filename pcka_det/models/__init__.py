from .builder import (build_detector, head_num_classes, load_model_cfg,
                      offline_distiller_cfg, resolve_config_path,
                      unwrap_model)
from .connectors import ConvConnector
from .distiller import FeatureDistiller
from .recorders import ModuleOutputRecorder, get_module, recording
from .teacher import FrozenTeacher, load_teacher_checkpoint
from .teacher_inputs import TeacherInputs

__all__ = [
    'build_detector', 'head_num_classes', 'load_model_cfg',
    'offline_distiller_cfg',
    'resolve_config_path', 'unwrap_model',
    'ConvConnector', 'FeatureDistiller', 'FrozenTeacher',
    'load_teacher_checkpoint',
    'ModuleOutputRecorder', 'get_module', 'recording', 'TeacherInputs'
]
