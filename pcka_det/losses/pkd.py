"""PKD baseline: Pearson correlation between feature maps (Cao et al. 2022,
"PKD: General Distillation Framework for Object Detectors via Pearson
Correlation Coefficient")."""
import torch
from torch import Tensor, nn

from mmdet.registry import MODELS
from ..options import Contract, Option, declare, validate
from .feature_pair import validate_feature_pair, validate_weight


def _standardize(feat: Tensor, eps: float) -> Tensor:
    """Zero mean, unit variance per channel over batch and positions."""
    flat = feat.transpose(0, 1).reshape(feat.shape[1], -1)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, unbiased=False, keepdim=True)
    return (flat - mean) / (std + eps)


def pearson_channels(student: Tensor, teacher: Tensor,
                     eps: float = 1e-6) -> Tensor:
    """Per-channel Pearson correlation of two feature maps.

    Args:
        student (Tensor): ``(B, C, H, W)``.
        teacher (Tensor): ``(B, C, H, W)``.
        eps (float): Added to the standard deviations; a constant channel
            has correlation 0.

    Returns:
        Tensor: ``(C,)`` correlations in ``[-1, 1]``, fp32.
    """
    validate_feature_pair(student, teacher, 'PKD')
    with torch.autocast(device_type=student.device.type, enabled=False):
        s = _standardize(student.float(), eps)
        t = _standardize(teacher.float(), eps)
        return (s * t).mean(dim=1)


CONTRACT = declare(Contract(
    'PKDLoss', 'model.distill_losses.<level>.loss',
    'PKD: 1 - the mean Pearson correlation of the standardised channels.',
    options=(
        Option('loss_weight', 'float', 1.0, 'global multiplier', low=0, examples=(0.5, )),
        Option('eps', 'float', 1e-6, 'added to the standard deviations',
               low=1e-30, examples=(1e-5, )),
    )))

@MODELS.register_module()
class PKDLoss(nn.Module):
    """PKD: half the mean squared error of standardised features.

    With standardised maps this equals ``1 - mean(pearson_channels)``.

    Args:
        loss_weight (float): Multiplier. Defaults to 1.0.
        eps (float): Added to the standard deviations.
    """

    def __init__(self, loss_weight: float = 1.0, eps: float = 1e-6) -> None:
        validate('PKDLoss', dict(loss_weight=loss_weight, eps=eps),
                 'PKDLoss')
        super().__init__()
        self.loss_weight = validate_weight('PKDLoss', 'loss_weight', loss_weight)
        self.eps = eps

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        """Args: ``(B, C, H, W)`` student and teacher features.

        Returns:
            Tensor: Scalar loss (fp32).
        """
        corr = pearson_channels(student_feat, teacher_feat, self.eps)
        return self.loss_weight * (1 - corr.mean())
