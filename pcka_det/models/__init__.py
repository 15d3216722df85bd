from .builder import build_detector, load_model_cfg, smaller_teacher_warning
from .connectors import ConvConnector
from .cross_head import CrossHead, HeadOutputs
from .distiller import FeatureDistiller
from .levels import DistillLevel, loss_key, parse_level, parse_levels
from .recorders import ModuleOutputRecorder, get_module, recording
from .teacher import FrozenTeacher, load_teacher_checkpoint
from .teacher_inputs import TeacherInputs
from .heads import head_num_classes
from .wrappers import unwrap_model

__all__ = [
    'build_detector', 'head_num_classes', 'load_model_cfg', 'unwrap_model',
    'smaller_teacher_warning',
    'ConvConnector', 'CrossHead', 'HeadOutputs', 'FeatureDistiller',
    'DistillLevel', 'loss_key',
    'parse_level', 'parse_levels', 'FrozenTeacher',
    'load_teacher_checkpoint',
    'ModuleOutputRecorder', 'get_module', 'recording', 'TeacherInputs'
]
