from .checks import check_coco_file, check_dataloaders
from .synthetic import CLASSES, SyntheticConfig, generate_dataset

__all__ = [
    'check_coco_file', 'check_dataloaders', 'CLASSES', 'SyntheticConfig',
    'generate_dataset'
]
