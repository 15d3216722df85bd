"""CWD baseline: channel-wise distillation (Shu et al. 2021, "Channel-wise
Knowledge Distillation for Dense Prediction")."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdet.registry import MODELS
from ..options import Contract, Option, declare, validate
from .feature_pair import validate_feature_pair, validate_weight


def channel_kl(student: Tensor, teacher: Tensor, tau: float = 1.0) -> Tensor:
    """KL divergence between per-channel spatial distributions.

    Each channel of each image becomes a distribution over its ``H * W``
    positions (softmax at temperature ``tau``); the teacher's is the target.

    Args:
        student (Tensor): ``(B, C, H, W)``.
        teacher (Tensor): ``(B, C, H, W)``.
        tau (float): Softmax temperature.

    Returns:
        Tensor: ``(C,)`` KL(teacher || student), averaged over the batch.
    """
    validate_feature_pair(student, teacher, 'CWD')
    b, c = teacher.shape[:2]
    with torch.autocast(device_type=student.device.type, enabled=False):
        log_s = F.log_softmax(student.float().reshape(b, c, -1) / tau, -1)
        log_t = F.log_softmax(teacher.float().reshape(b, c, -1) / tau, -1)
        kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    return kl.mean(0)


CONTRACT = declare(Contract(
    'ChannelWiseDivergence', 'model.distill_losses.<level>.loss',
    'CWD: KL divergence of the channels\' spatial softmax.',
    options=(
        Option('tau', 'float', 1.0, 'softmax temperature', low=1e-6,
               examples=(4.0, )),
        Option('loss_weight', 'float', 1.0, 'global multiplier', low=0, examples=(0.5, )),
    )))

@MODELS.register_module()
class ChannelWiseDivergence(nn.Module):
    """CWD loss: ``loss_weight * tau^2 * mean(channel_kl)``.

    Args:
        tau (float): Softmax temperature. Defaults to 1.0.
        loss_weight (float): Multiplier. Defaults to 1.0.
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0) -> None:
        validate('ChannelWiseDivergence', dict(tau=tau, loss_weight=loss_weight),
                 'ChannelWiseDivergence')
        super().__init__()
        validate_weight('ChannelWiseDivergence', 'tau', tau)
        if tau <= 0:
            raise ValueError(f'ChannelWiseDivergence: tau must be > 0, got '
                             f'{tau}')
        self.tau = float(tau)
        self.loss_weight = validate_weight('ChannelWiseDivergence',
                                        'loss_weight', loss_weight)

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        """Args: ``(B, C, H, W)`` student and teacher features.

        Returns:
            Tensor: Scalar loss (fp32).
        """
        kl = channel_kl(student_feat, teacher_feat, self.tau)
        return self.loss_weight * self.tau**2 * kl.mean()
