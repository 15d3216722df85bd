from .synthetic import CLASSES, SyntheticConfig, generate_dataset

__all__ = ['CLASSES', 'SyntheticConfig', 'generate_dataset']
