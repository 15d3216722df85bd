"""What the CKA-style losses share: weights and how the terms combine."""
from typing import Optional

from torch import Tensor, nn

from .feature_pair import validate_weight
from .kernels import DEFAULT_EPS


class AlignmentLoss(nn.Module):
    """``loss_weight * (intra_weight * (1 - intra) + inter_weight *
    (1 - inter))``, the inter part only when ``inter_weight`` is set.

    Weights must be finite numbers >= 0 (``ValueError`` otherwise, when the
    loss is built).

    Args:
        intra_weight (float): Weight of the sample-relation term.
        inter_weight (float, optional): Weight of the feature-relation term;
            None disables it (and its cost).
        centered (bool): Centred CKA instead of uncentred alignment.
        loss_weight (float): Global multiplier.
        eps (float): Lower bound of squared Gram norms.
    """

    def __init__(self,
                 intra_weight: float = 1.0,
                 inter_weight: Optional[float] = None,
                 centered: bool = False,
                 loss_weight: float = 1.0,
                 eps: float = DEFAULT_EPS) -> None:
        super().__init__()
        method = type(self).__name__
        self.intra_weight = validate_weight(method, 'intra_weight', intra_weight)
        self.inter_weight = validate_weight(method, 'inter_weight', inter_weight,
                                         allow_none=True)
        self.centered = centered
        self.loss_weight = validate_weight(method, 'loss_weight', loss_weight)
        self.eps = eps

    @property
    def with_inter(self) -> bool:
        return self.inter_weight is not None

    def combine(self, intra: Tensor, inter: Optional[Tensor]) -> Tensor:
        """Weighted dissimilarity from (mean) similarities."""
        loss = self.intra_weight * (1 - intra.mean())
        if inter is not None:
            loss = loss + self.inter_weight * (1 - inter.mean())
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return (f'intra_weight={self.intra_weight}, '
                f'inter_weight={self.inter_weight}, '
                f'centered={self.centered}, loss_weight={self.loss_weight}')
