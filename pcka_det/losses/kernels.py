"""Linear kernel alignment between batched representations.

Every CKA-style quantity in the project is computed here, so the losses and
the analysis tools share one implementation.

For ``X`` (n x d) and ``Y`` (m x d) the two alignments need only the small
Gram matrices ``X X^T``, ``Y Y^T`` and ``X Y^T``:

    intra = <X X^T, Y Y^T>_F / (||X X^T||_F ||Y Y^T||_F)
    inter = <X^T X, Y^T Y>_F / (...) = ||X Y^T||_F^2 / (||X X^T|| ||Y Y^T||)

and, transposing, the ``d x d`` forms when ``d < n``. The backward pass is
written out by hand so that it costs two batched products per side instead
of autograd's eight.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

# Squared Gram norms (of trace-normalised Grams) are clamped at eps so that an
# all-zero representation gives similarity 0 with finite gradients.
DEFAULT_EPS = 1e-12
_TINY = 1e-30


def _bmm_t(a: Tensor, b: Tensor) -> Tensor:
    return torch.bmm(a, b.transpose(1, 2))


class _Alignment(torch.autograd.Function):
    """intra/inter alignment of ``x`` (G, n, d) and ``y`` (G, m, d).

    Grams are divided by their (detached) traces: alignment is scale
    invariant, so value and gradient are unchanged while every entry stays
    in [-1, 1], which rules out fp32 overflow for large activations.
    """

    @staticmethod
    def forward(ctx, x, y, want_intra: bool, want_inter: bool, eps: float):
        kx, ky = _bmm_t(x, x), _bmm_t(y, y)
        tx = kx.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(_TINY)
        ty = ky.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(_TINY)
        kx = kx / tx[:, None, None]
        ky = ky / ty[:, None, None]
        nx2 = kx.square().sum((1, 2))
        ny2 = ky.square().sum((1, 2))
        den = nx2.clamp_min(eps).sqrt() * ny2.clamp_min(eps).sqrt()
        intra = inter = m = None
        if want_intra:
            intra = (kx * ky).sum((1, 2)) / den
        if want_inter:
            m = _bmm_t(x, y) / (tx * ty).sqrt()[:, None, None]
            inter = m.square().sum((1, 2)) / den
        # an input is kept for backward only for its own gradient or for the
        # cross term of the other's: intra-only distillation keeps just x
        gx, gy = ctx.needs_input_grad[:2]
        keep_x = gx or (want_inter and gy)
        keep_y = gy or (want_inter and gx)
        ctx.save_for_backward(x if keep_x else None, y if keep_y else None,
                              kx, ky, m, tx, ty, nx2, ny2, den, intra, inter)
        ctx.eps = eps
        empty = x.new_empty(0)
        return (empty if intra is None else intra,
                empty if inter is None else inter)

    @staticmethod
    def backward(ctx, g_intra, g_inter):
        x, y, kx, ky, m, tx, ty, nx2, ny2, den, intra, inter = \
            ctx.saved_tensors
        # d sim / d x' = 2 (a Ky - b Kx) x' + c M y'   for x' = x / sqrt(tx)
        a = torch.zeros_like(den)
        b = torch.zeros_like(den)
        c = torch.zeros_like(den)
        if intra is not None and g_intra is not None:
            a = a + g_intra / den
            b = b + g_intra * intra
        if inter is not None and g_inter is not None:
            c = c + 2 * g_inter / den
            b = b + g_inter * inter

        def side(k_own, k_other, n_own2, t_own, t_other, own, other, cross):
            # a clamped norm is a constant: no gradient through it
            inv = torch.where(n_own2 < ctx.eps, torch.zeros_like(n_own2),
                              1 / n_own2.clamp_min(_TINY))
            coef = (2 * a)[:, None, None] * k_other - (2 * b * inv)[
                :, None, None] * k_own
            grad = torch.bmm(coef / t_own[:, None, None], own)
            if cross is not None:
                scale = (c / (t_own * t_other).sqrt())[:, None, None]
                grad = torch.baddbmm(grad, cross * scale, other)
            return grad

        gx = gy = None
        if ctx.needs_input_grad[0]:
            gx = side(kx, ky, nx2, tx, ty, x, y, m)
        if ctx.needs_input_grad[1]:
            gy = side(ky, kx, ny2, ty, tx, y, x,
                      None if m is None else m.transpose(1, 2))
        return gx, gy, None, None, None


def _align(x: Tensor, y: Tensor, want_intra: bool, want_inter: bool,
           eps: float) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """Pick the cheaper of the ``n x n`` and ``d x d`` forms."""
    if x.shape[1] > max(x.shape[2], y.shape[2]):
        # intra(X, Y) == inter(X^T, Y^T) and vice versa
        inter, intra = _Alignment.apply(
            x.transpose(1, 2), y.transpose(1, 2), want_inter, want_intra, eps)
    else:
        intra, inter = _Alignment.apply(x, y, want_intra, want_inter, eps)
    return (intra if want_intra else None, inter if want_inter else None)


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
                    eps: float = DEFAULT_EPS
                    ) -> Tuple[Tensor, Optional[Tensor]]:
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
        eps (float): Lower bound of the squared (trace-normalised) Gram
            norms.

    Returns:
        tuple[Tensor, Tensor | None]: ``intra`` and ``inter``, each ``(G,)``;
        ``inter`` is None when not requested.
    """
    if not centered:
        return _align(x, y, True, inter, eps)
    intra, _ = _align(center_rows(x), center_rows(y), True, False, eps)
    if not inter:
        return intra, None
    _, inter_sim = _align(
        center_rows(x.transpose(1, 2)).transpose(1, 2),
        center_rows(y.transpose(1, 2)).transpose(1, 2), False, True, eps)
    return intra, inter_sim
