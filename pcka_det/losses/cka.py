"""Plain linear CKA between flattened representations."""
from typing import Optional, Tuple

import torch
from torch import Tensor

from mmdet.registry import MODELS
from ..options import Contract, Option, declare, validate
from .base import AlignmentLoss
from .kernels import DEFAULT_EPS, gram_alignments


def cka(x: Tensor,
        y: Tensor,
        centered: bool = True,
        inter: bool = False,
        eps: float = DEFAULT_EPS) -> Tuple[Tensor, Optional[Tensor]]:
    """Linear CKA between two representations of the same N samples.

    Args:
        x (Tensor): Shape ``(N, *)``, flattened to ``(N, p)``.
        y (Tensor): Shape ``(N, *)``, flattened to ``(N, q)``.
        centered (bool): Centred CKA (Kornblith et al., 2019) when True,
            uncentred kernel alignment otherwise.
        inter (bool): Also align the feature Gram matrices (needs p == q).
        eps (float): Lower bound of squared Gram norms.

    Returns:
        tuple[Tensor, Tensor | None]: Scalar ``intra`` (sample Gram) and
        ``inter`` (feature Gram, or None) similarities, in fp32.
    """
    if x.dim() < 2 or y.dim() < 2 or x.shape[0] != y.shape[0]:
        raise ValueError('CKA needs (N, *) inputs with the same N; got '
                         f'{tuple(x.shape)} and {tuple(y.shape)}')
    x, y = x.flatten(1), y.flatten(1)
    if inter and x.shape[1] != y.shape[1]:
        raise ValueError('The inter (feature Gram) term needs the same '
                         f'feature size; got {tuple(x.shape)} and '
                         f'{tuple(y.shape)}')
    with torch.autocast(device_type=x.device.type, enabled=False):
        intra, inter_sim = gram_alignments(x.float()[None], y.float()[None],
                                           centered, inter, eps)
    return intra[0], None if inter_sim is None else inter_sim[0]


CONTRACT = declare(Contract(
    'CKALoss', 'model.distill_losses.<level>.loss',
    'Plain CKA between the flattened features of a level.',
    options=(
        Option('intra_weight', 'float', 1.0, 'weight of the sample-relation '
               'term', low=0, examples=(2.0, )),
        Option('inter_weight', 'float', None, 'weight of the feature-'
               'relation term; None turns it off', low=0, nullable=True,
               examples=(1.0, )),
        Option('centered', 'bool', True, 'centred CKA', examples=(False, )),
        Option('loss_weight', 'float', 1.0, 'global multiplier', low=0,
               examples=(0.5, )),
        Option('eps', 'float', DEFAULT_EPS, 'lower bound of squared Gram '
               'norms', low=1e-30),
    )))


@MODELS.register_module()
class CKALoss(AlignmentLoss):
    """Linear CKA loss for logits or pooled features.

    ``loss = loss_weight * (intra_weight * (1 - intra)
    + inter_weight * (1 - inter))``, the inter part only when
    ``inter_weight`` is set.

    Args:
        intra_weight (float): Weight of the sample-relation term.
        inter_weight (float, optional): Weight of the feature-relation term.
        centered (bool): Centred CKA. Defaults to True.
        loss_weight (float): Global multiplier.
        eps (float): Lower bound of squared Gram norms.
    """

    def __init__(self,
                 intra_weight: float = 1.0,
                 inter_weight: Optional[float] = None,
                 centered: bool = True,
                 loss_weight: float = 1.0,
                 eps: float = DEFAULT_EPS) -> None:
        validate('CKALoss', dict(
            intra_weight=intra_weight, inter_weight=inter_weight,
            centered=centered, loss_weight=loss_weight, eps=eps), 'CKALoss')
        super().__init__(intra_weight, inter_weight, centered, loss_weight,
                         eps)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            student (Tensor): ``(N, *)``.
            teacher (Tensor): ``(N, *)``.

        Returns:
            Tensor: Scalar loss.
        """
        return self.combine(*cka(student, teacher, self.centered,
                                 self.with_inter, self.eps))
