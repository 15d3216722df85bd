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
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

# Squared Gram norms (of trace-normalised Grams) are clamped at eps so that an
# all-zero representation gives similarity 0 with finite gradients.
DEFAULT_EPS = 1e-12
_TINY = 1e-30


def _bmm_t(a: Tensor, b: Tensor) -> Tensor:
    return torch.bmm(a, b.transpose(1, 2))


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-group Frobenius inner product of ``(G, n, m)`` tensors, ``(G,)``."""
    return (a * b).sum((1, 2))


def _sq_norm(a: Tensor) -> Tensor:
    """Per-group squared Frobenius norm of a ``(G, n, m)`` tensor, ``(G,)``.

    ``vector_norm`` makes one pass and no temporary (0.10 vs 0.32 ms for
    ``a.square().sum()`` on P3-sized Grams).
    """
    return torch.linalg.vector_norm(a.flatten(1), dim=1).square()


class GramScores(NamedTuple):
    """Trace-normalised Grams of ``x`` (G, n, d), ``y`` and the scores.

    ``kx = X X^T / tx``, ``ky = Y Y^T / ty``, ``mt = Y X^T / sqrt(tx ty)``
    (None without the inter term); ``nx2``, ``ny2`` their squared norms,
    ``den`` the clamped product of norms.
    """
    kx: Tensor
    ky: Tensor
    mt: Optional[Tensor]
    tx: Tensor
    ty: Tensor
    nx2: Tensor
    ny2: Tensor
    den: Tensor
    intra: Optional[Tensor]
    inter: Optional[Tensor]


def gram_scores(kx: Tensor, ky: Tensor, mt: Optional[Tensor],
                want_intra: bool, eps: float) -> GramScores:
    """Alignments from the raw Grams ``X X^T``, ``Y Y^T`` and ``Y X^T``.

    The Grams are divided by their traces in place: alignment is scale
    invariant, so value and gradient are unchanged while every entry stays
    in [-1, 1], which rules out fp32 overflow for large activations.
    """
    tx = kx.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(_TINY)
    ty = ky.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(_TINY)
    kx.div_(tx[:, None, None])
    ky.div_(ty[:, None, None])
    nx2, ny2 = _sq_norm(kx), _sq_norm(ky)
    den = nx2.clamp_min(eps).sqrt() * ny2.clamp_min(eps).sqrt()
    intra = _dot(kx, ky) / den if want_intra else None
    inter = None
    if mt is not None:
        mt.div_((tx * ty).sqrt()[:, None, None])
        inter = _sq_norm(mt) / den
    return GramScores(kx, ky, mt, tx, ty, nx2, ny2, den, intra, inter)


def grad_operators(s: GramScores, g_intra: Optional[Tensor],
                   g_inter: Optional[Tensor], eps: float, of_x: bool
                   ) -> Tuple[Tensor, Optional[Tensor]]:
    """Matrices that turn the inputs into the gradient of one side.

    For ``of_x`` the gradient is ``own @ X + cross_t^T @ Y`` (and with the
    roles swapped for ``y``); ``own`` is symmetric.

    Returns:
        tuple[Tensor, Tensor | None]: ``own`` and ``cross_t``, each
        ``(G, n, n)``; ``cross_t`` is None without the inter term.
    """
    # d sim / d x' = 2 (a Ky - b Kx) x' + c M y'   for x' = x / sqrt(tx)
    a = torch.zeros_like(s.den)
    b = torch.zeros_like(s.den)
    c = torch.zeros_like(s.den)
    if s.intra is not None and g_intra is not None:
        a = a + g_intra / s.den
        b = b + g_intra * s.intra
    if s.inter is not None and g_inter is not None:
        c = c + 2 * g_inter / s.den
        b = b + g_inter * s.inter
    k_own, k_other, n_own2, t_own = ((s.kx, s.ky, s.nx2, s.tx) if of_x else
                                     (s.ky, s.kx, s.ny2, s.ty))
    # a clamped norm is a constant: no gradient through it
    inv = torch.where(n_own2 < eps, torch.zeros_like(n_own2),
                      1 / n_own2.clamp_min(_TINY))
    own = k_other * (2 * a / t_own)[:, None, None]
    own.addcmul_(k_own, (-2 * b * inv / t_own)[:, None, None])
    cross_t = None
    if s.mt is not None:
        mt = s.mt if of_x else s.mt.transpose(1, 2)
        cross_t = mt * (c / (s.tx * s.ty).sqrt())[:, None, None]
    return own, cross_t


class _Alignment(torch.autograd.Function):
    """intra/inter alignment of ``x`` (G, n, d) and ``y`` (G, m, d)."""

    @staticmethod
    def forward(ctx, x, y, want_intra: bool, want_inter: bool, eps: float):
        s = gram_scores(_bmm_t(x, x), _bmm_t(y, y),
                        _bmm_t(y, x) if want_inter else None, want_intra,
                        eps)
        # an input is kept for backward only for its own gradient or for the
        # cross term of the other's: intra-only distillation keeps just x
        gx, gy = ctx.needs_input_grad[:2]
        keep_x = gx or (want_inter and gy)
        keep_y = gy or (want_inter and gx)
        ctx.save_for_backward(x if keep_x else None, y if keep_y else None,
                              *s)
        ctx.eps = eps
        empty = x.new_empty(0)
        return (empty if s.intra is None else s.intra,
                empty if s.inter is None else s.inter)

    @staticmethod
    def backward(ctx, g_intra, g_inter):
        if torch.is_grad_enabled():
            # the Grams saved by forward are constants here: a graph built
            # through this backward would be silently wrong
            raise RuntimeError(
                'PCKA/CKA has a hand-written first-order backward: '
                'create_graph=True (double backward, e.g. a gradient '
                'penalty through the distillation loss) is not supported.')
        x, y, *saved = ctx.saved_tensors
        s = GramScores(*saved)

        def side(of_x, own_in, other_in):
            own, cross_t = grad_operators(s, g_intra, g_inter, ctx.eps, of_x)
            grad = torch.bmm(own, own_in)
            if cross_t is not None:
                grad = torch.baddbmm(grad, cross_t.transpose(1, 2), other_in)
            return grad

        # fp32 like forward, also when backward is called under autocast
        with torch.autocast(device_type=s.den.device.type, enabled=False):
            gx = side(True, x, y) if ctx.needs_input_grad[0] else None
            gy = side(False, y, x) if ctx.needs_input_grad[1] else None
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
