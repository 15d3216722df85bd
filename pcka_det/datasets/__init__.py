from .validation import validate_coco_file, validate_dataloaders
from .synthetic import CLASSES, SyntheticConfig, generate_dataset
from .training_scale import padded_training_scale, training_scale
from .sample_seeding import seed_samples

__all__ = [
    'validate_coco_file', 'validate_dataloaders', 'CLASSES', 'SyntheticConfig',
    'generate_dataset', 'padded_training_scale', 'training_scale',
    'seed_samples'
]
