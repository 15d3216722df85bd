"""Compiled CPU operators (optional: every caller has a PyTorch path)."""
from .resize_patches import (resize_patches_available, resize_patches_grad,
                             resize_patches_into)

__all__ = [
    'resize_patches_available', 'resize_patches_into', 'resize_patches_grad'
]
