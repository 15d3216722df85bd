"""FitNet-style baseline: mean squared error between feature maps (Romero et
al. 2015, "FitNets: Hints for Thin Deep Nets")."""
import torch
from torch import Tensor, nn

from mmdet.registry import MODELS
from ..options import Contract, Option, declare, validate
from .feature_pair import validate_feature_pair, validate_weight


CONTRACT = declare(Contract(
    'FeatureMSELoss', 'model.distill_losses.<level>.loss',
    'FitNet: mean squared error between the feature maps.',
    options=(
        Option('loss_weight', 'float', 1.0, 'global multiplier', low=0, examples=(0.5, )),
    )))

@MODELS.register_module()
class FeatureMSELoss(nn.Module):
    """``loss_weight * mean((student - teacher)^2)`` over all elements.

    A student of another width needs a connector (the FitNet "regressor").

    Args:
        loss_weight (float): Multiplier. Defaults to 1.0.
    """

    def __init__(self, loss_weight: float = 1.0) -> None:
        validate('FeatureMSELoss', dict(loss_weight=loss_weight),
                 'FeatureMSELoss')
        super().__init__()
        self.loss_weight = validate_weight('FeatureMSELoss', 'loss_weight',
                                        loss_weight)

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        """Args: ``(B, C, H, W)`` student and teacher features.

        Returns:
            Tensor: Scalar loss (fp32).
        """
        validate_feature_pair(student_feat, teacher_feat, 'FitNet')
        with torch.autocast(device_type=student_feat.device.type,
                            enabled=False):
            return self.loss_weight * (
                student_feat.float() - teacher_feat.float()).pow(2).mean()
