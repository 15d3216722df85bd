from .cka import CKALoss, cka
from .crosskd import (CrossHeadPredictions, CrossKDGFLLoss, CrossKDLoss,
                      align_to_teacher, kd_quality_focal_loss, kl_div_bins)
from .cwd import ChannelWiseDivergence, channel_kl
from .fitnet import FeatureMSELoss
from .kernels import gram_alignments
from .patch_cka import (PatchCKALoss, fitting_patch_size, patch_count,
                        patch_cka, to_patches)
from .pkd import PKDLoss, pearson_channels

__all__ = [
    'CKALoss', 'cka', 'CrossHeadPredictions', 'CrossKDLoss', 'CrossKDGFLLoss',
    'align_to_teacher', 'kd_quality_focal_loss', 'kl_div_bins',
    'ChannelWiseDivergence', 'channel_kl',
    'FeatureMSELoss', 'gram_alignments', 'PatchCKALoss', 'fitting_patch_size',
    'patch_count', 'patch_cka',
    'to_patches', 'PKDLoss', 'pearson_channels'
]
