from .cka import CKALoss, cka
from .kernels import gram_alignments
from .patch_cka import PatchCKALoss, patch_cka, to_patches

__all__ = [
    'CKALoss', 'cka', 'gram_alignments', 'PatchCKALoss',
    'patch_cka', 'to_patches'
]
