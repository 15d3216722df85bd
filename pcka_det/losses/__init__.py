from .cka import CKALoss, cka
from .kernels import gram_alignments, sample_alignment
from .patch_cka import PatchCKALoss, patch_cka, to_patches

__all__ = [
    'CKALoss', 'cka', 'gram_alignments', 'sample_alignment', 'PatchCKALoss',
    'patch_cka', 'to_patches'
]
