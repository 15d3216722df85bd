"""Linear kernel alignment between batched representations.

Every CKA-style quantity in the project is computed here, so the losses and
the analysis tools share one implementation.
"""
from typing import Tuple

import torch
from torch import Tensor

# Squared norms are clamped before the square root so that an all-zero
# representation gives similarity 0 with finite gradients.
DEFAULT_EPS = 1e-12


def _normalize(x: Tensor) -> Tensor:
    """Scale each representation to unit Frobenius norm.

    Alignment is scale invariant, so dividing by a *detached* norm leaves both
    the value and the gradient unchanged while keeping every Gram entry
    bounded by 1 (no fp32 overflow for large activations).
    """
    norm = x.detach().flatten(1).norm(dim=1).clamp_min(1e-30)
    return x / norm.view(-1, *([1] * (x.dim() - 1)))


def sample_alignment(x: Tensor, y: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Kernel alignment of the sample Gram matrices, batched.

    Computes ``<X X^T, Y Y^T>_F / (||X X^T||_F ||Y Y^T||_F)`` for every group
    without building a Gram matrix larger than ``min(n, p) x min(n, q)``:
    when there are more samples than features, the identities
    ``<X X^T, Y Y^T> = ||X^T Y||^2`` and ``||X X^T|| = ||X^T X||`` are used.

    Args:
        x (Tensor): Representations of shape ``(G, n, p)``.
        y (Tensor): Representations of shape ``(G, n, q)``.
        eps (float): Lower bound of the squared Gram norms.

    Returns:
        Tensor: Alignment per group, shape ``(G,)``, in ``[0, 1]``.
    """
    x, y = _normalize(x), _normalize(y)
    n = x.shape[1]
    if n <= max(x.shape[2], y.shape[2]):
        kx = x @ x.transpose(1, 2)
        ky = y @ y.transpose(1, 2)
        cross = (kx * ky).sum(dim=(1, 2))
    else:
        kx = x.transpose(1, 2) @ x
        ky = y.transpose(1, 2) @ y
        cross = (x.transpose(1, 2) @ y).square().sum(dim=(1, 2))
    norm_x = kx.square().sum(dim=(1, 2)).clamp_min(eps).sqrt()
    norm_y = ky.square().sum(dim=(1, 2)).clamp_min(eps).sqrt()
    return cross / (norm_x * norm_y)


def center_rows(x: Tensor) -> Tensor:
    """Apply the centring matrix ``H = I - 11^T/n`` over the sample axis.

    Args:
        x (Tensor): Shape ``(G, n, d)``.

    Returns:
        Tensor: ``H X`` for every group, shape ``(G, n, d)``.
    """
    return x - x.mean(dim=1, keepdim=True)


def gram_alignments(x: Tensor,
                    y: Tensor,
                    centered: bool = False,
                    inter: bool = True,
                    eps: float = DEFAULT_EPS) -> Tuple[Tensor, Tensor]:
    """Intra (sample Gram) and inter (feature Gram) alignment, batched.

    ``intra = A(X X^T, Y Y^T)`` relates the ``n`` samples to each other;
    ``inter = A(X^T X, Y^T Y)`` relates the ``d`` features. With
    ``centered=True`` both Gram matrices are double-centred, which gives
    linear CKA (Kornblith et al., 2019).

    Args:
        x (Tensor): Shape ``(G, n, d)``.
        y (Tensor): Shape ``(G, n, d)`` (``(G, n, q)`` if ``inter`` is off).
        centered (bool): Centre the Gram matrices.
        inter (bool): Whether to compute the inter term.
        eps (float): Lower bound of the squared Gram norms.

    Returns:
        tuple[Tensor, Tensor | None]: ``intra`` and ``inter``, each ``(G,)``;
        ``inter`` is None when not requested.
    """
    if centered:
        intra = sample_alignment(center_rows(x), center_rows(y), eps)
    else:
        intra = sample_alignment(x, y, eps)
    if not inter:
        return intra, None
    xt, yt = x.transpose(1, 2), y.transpose(1, 2)
    if centered:
        xt, yt = center_rows(xt), center_rows(yt)
    return intra, sample_alignment(xt, yt, eps)
