from .checks import check_coco_file, check_dataloaders
from .synthetic import CLASSES, SyntheticConfig, generate_dataset
from .training_scale import padded_training_scale, training_scale

__all__ = [
    'check_coco_file', 'check_dataloaders', 'CLASSES', 'SyntheticConfig',
    'generate_dataset', 'padded_training_scale', 'training_scale'
]
