"""Patch alignments on the CPU without materialising the patches.

``to_patches`` + ``gram_alignments`` keep two resized, permuted copies of
each map for backward (2 x 40 MB for RetinaNet P3 at 1333x800) and pass over
every one of them several times. Here the compiled ``resize_patches``
operator fills a small buffer with a few channels' patches at a time, the
Gram products of those channels are taken while the buffer is in cache, and
backward cuts the patches again instead of saving them: same values, a
fraction of the memory traffic and of the saved memory. For the loss itself
(:class:`FusedPatchLoss`) the gradient is formed in the same pass, so the
maps are cut once per step.
"""
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

from ..ops import (resize_patches_available, resize_patches_grad,
                   resize_patches_into)
from .kernels import GramScores, grad_operators, gram_scores

# Channels per chunk: the patch buffer of one chunk should stay in cache.
_CHUNK_BYTES = 4 << 20
# bmm is markedly faster when a large patch count is a multiple of 8 (MKL
# blocking; 77 -> 80 rows: 20.5 -> 15.8 ms on P3); the extra rows are zero
# and change no Gram statistic. Small counts are left as they are.
_ROW_ALIGN = 8
_ALIGN_FROM = 16


def patch_count(feat: Tensor, patch_size: int) -> int:
    """Patches ``n`` of a ``(B, C, H, W)`` map once resized up to a multiple
    of ``patch_size``."""
    h, w = feat.shape[2:]
    return -(-h // patch_size) * -(-w // patch_size)


def _layout(feat: Tensor, patch_size: int) -> Tuple[int, int, int]:
    """Patch count ``n``, padded row count and patch width ``B * p * p``."""
    n = patch_count(feat, patch_size)
    rows = -(-n // _ROW_ALIGN) * _ROW_ALIGN if n >= _ALIGN_FROM else n
    return n, rows, feat.shape[0] * patch_size * patch_size


def fused_applies(feat: Tensor, patch_size: int, centered: bool) -> bool:
    """Whether :class:`FusedPatchAlignment` computes PCKA for this map.

    It covers the uncentred alignments in their ``n x n`` form
    (``n <= B * p * p``) of CPU maps, when the operator is compiled.
    """
    n, _, d = _layout(feat, patch_size)
    return (not centered and n <= d and feat.device.type == 'cpu'
            and resize_patches_available())


def _chunks(student: Tensor, teacher: Tensor, patch_size: int,
            sides: Tuple[bool, bool]) -> Iterator[Tuple[int, int, Tensor]]:
    """Yield ``(c0, c1, z)`` with ``z = [X; Y]`` of channels ``[c0, c1)``.

    ``z`` has shape ``(c1 - c0, 2 * rows, d)``: student patches in the first
    ``rows`` rows, teacher patches in the rest, zero padding rows. Only the
    sides flagged in ``sides`` are filled. The buffer is reused.
    """
    n, rows, d = _layout(student, patch_size)
    channels = student.shape[1]
    step = max(1, min(channels,
                      _CHUNK_BYTES // (2 * rows * d * student.element_size())))
    buf = student.new_empty(step, 2, rows, d)
    buf[:, :, n:] = 0
    buf = buf.view(step, 2 * rows, d)
    for c0 in range(0, channels, step):
        c1 = min(channels, c0 + step)
        z = buf[:c1 - c0]
        for i, (feat, wanted) in enumerate(zip((student, teacher), sides)):
            if wanted:
                resize_patches_into(feat, patch_size, c0, c1,
                                    z[:, i * rows:i * rows + n])
        yield c0, c1, z


class FusedPatchAlignment(torch.autograd.Function):
    """Uncentred intra/inter patch alignment of two ``(B, C, H, W)`` maps.

    Same values and gradients as ``gram_alignments(to_patches(student),
    to_patches(teacher))`` in its ``n x n`` form (``n <= B * p * p``).
    """

    @staticmethod
    def forward(ctx, student: Tensor, teacher: Tensor, patch_size: int,
                want_inter: bool, eps: float):
        channels = student.shape[1]
        _, rows, _ = _layout(student, patch_size)
        kx = student.new_empty(channels, rows, rows)
        ky = torch.empty_like(kx)
        mt = torch.empty_like(kx) if want_inter else None
        for c0, c1, z in _chunks(student, teacher, patch_size, (True, True)):
            _grams(z, rows, kx[c0:c1], ky[c0:c1],
                   mt[c0:c1] if want_inter else None)
        s = gram_scores(kx, ky, mt, True, eps)
        ctx.save_for_backward(student, teacher, *s)
        ctx.patch_size, ctx.eps = patch_size, eps
        return s.intra, s.inter if want_inter else s.intra.new_empty(0)

    @staticmethod
    def backward(ctx, g_intra: Optional[Tensor], g_inter: Optional[Tensor]):
        # fp32 like forward, also when backward is called under autocast
        with torch.autocast(device_type='cpu', enabled=False):
            return FusedPatchAlignment._backward(ctx, g_intra, g_inter)

    @staticmethod
    def _backward(ctx, g_intra: Optional[Tensor], g_inter: Optional[Tensor]):
        student, teacher, *saved = ctx.saved_tensors
        s = GramScores(*saved)
        rows, inter = s.kx.shape[1], s.mt is not None
        ops = [
            _stacked_operator(s, g_intra, g_inter, ctx.eps, of_x)
            if wanted else None
            for of_x, wanted in zip((True, False), ctx.needs_input_grad[:2])
        ]
        grads = [
            None if op is None else torch.empty_like(feat)
            for op, feat in zip(ops, (student, teacher))
        ]
        # with inter, either gradient needs both sides' patches
        needed = [op is not None for op in ops]
        sides = tuple(n or (inter and any(needed)) for n in needed)
        for c0, c1, z in _chunks(student, teacher, ctx.patch_size, sides):
            for i, (op, grad) in enumerate(zip(ops, grads)):
                if op is not None:
                    _patch_grad(op[c0:c1], z, rows, inter, i, ctx.patch_size,
                                c0, grad)
        return grads[0], grads[1], None, None, None


class FusedPatchLoss(torch.autograd.Function):
    """The PCKA loss of two ``(B, C, H, W)`` maps, its gradient formed forward.

    ``intra_weight * (1 - mean(intra)) + inter_weight * (1 - mean(inter))``
    (no inter part when ``inter_weight`` is None), with ``intra`` and
    ``inter`` the uncentred patch alignments of
    :class:`FusedPatchAlignment`. With fixed channel weights every
    similarity's upstream gradient is known in forward, so each chunk's
    gradient is taken while its patches are still in cache and backward
    does not cut the patches again. Backward may run once per forward.

    Returns the loss and the per-channel ``intra`` and ``inter``
    (``(C,)`` each, not differentiable; ``inter`` empty without it).
    """

    @staticmethod
    def forward(ctx, student: Tensor, teacher: Tensor, patch_size: int,
                intra_weight: float, inter_weight: Optional[float],
                eps: float):
        channels = student.shape[1]
        _, rows, _ = _layout(student, patch_size)
        want_inter = inter_weight is not None
        grads = [
            torch.empty_like(feat) if needed else None
            for feat, needed in zip((student, teacher),
                                    ctx.needs_input_grad[:2])
        ]
        intra = student.new_empty(channels)
        inter = student.new_empty(channels if want_inter else 0)
        for c0, c1, z in _chunks(student, teacher, patch_size, (True, True)):
            kx = z.new_empty(c1 - c0, rows, rows)
            ky = torch.empty_like(kx)
            mt = torch.empty_like(kx) if want_inter else None
            s = gram_scores(*_grams(z, rows, kx, ky, mt), True, eps)
            intra[c0:c1] = s.intra
            g_intra = torch.full_like(s.intra, -intra_weight / channels)
            g_inter = None
            if want_inter:
                inter[c0:c1] = s.inter
                g_inter = torch.full_like(s.inter, -inter_weight / channels)
            for i, grad in enumerate(grads):
                if grad is not None:
                    op = _stacked_operator(s, g_intra, g_inter, eps, i == 0)
                    _patch_grad(op, z, rows, want_inter, i, patch_size, c0,
                                grad)
        loss = intra_weight * (1 - intra.mean())
        if want_inter:
            loss = loss + inter_weight * (1 - inter.mean())
        # kept off save_for_backward so that autograd can take the buffers
        # as .grad without a copy
        ctx.grads = grads
        ctx.mark_non_differentiable(intra, inter)
        return loss, intra, inter

    @staticmethod
    def backward(ctx, g_loss: Tensor, _g_intra, _g_inter):
        grads = getattr(ctx, 'grads', None)
        if grads is None:
            raise RuntimeError(
                'FusedPatchLoss: backward ran a second time; the gradient '
                'formed in forward is handed over by the first backward. '
                'Recompute the loss, or use patch_cka for repeated '
                'backward passes.')
        del ctx.grads
        if g_loss.item() != 1:
            for grad in grads:
                if grad is not None:
                    grad.mul_(g_loss)
        return grads[0], grads[1], None, None, None, None


def _grams(z: Tensor, rows: int, kx: Tensor, ky: Tensor,
           mt: Optional[Tensor]) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Write ``X X^T``, ``Y Y^T`` and ``Y X^T`` of ``z = [X; Y]`` into the
    given ``(G, rows, rows)`` tensors (``mt`` skipped when None)."""
    x, y = z[:, :rows], z[:, rows:]
    torch.bmm(x, x.transpose(1, 2), out=kx)
    torch.bmm(y, y.transpose(1, 2), out=ky)
    if mt is not None:
        torch.bmm(y, x.transpose(1, 2), out=mt)
    return kx, ky, mt


def _patch_grad(op: Tensor, z: Tensor, rows: int, inter: bool, side: int,
                patch_size: int, c0: int, grad: Tensor) -> None:
    """Write the map gradient ``op^T z`` of one side for ``z``'s channels.

    ``op`` is the chunk's :func:`_stacked_operator`; side 0 is the student,
    1 the teacher; ``grad`` is the side's whole ``(B, C, H, W)`` gradient.
    """
    zi = z if inter else z[:, side * rows:(side + 1) * rows]
    resize_patches_grad(torch.bmm(op.transpose(1, 2), zi), patch_size, c0,
                        c0 + z.shape[0], grad)


def _stacked_operator(s: GramScores, g_intra: Optional[Tensor],
                      g_inter: Optional[Tensor], eps: float,
                      of_x: bool) -> Tensor:
    """``op`` with ``grad = op^T @ z`` for one side, ``z = [X; Y]``.

    The side's own and cross operators are stacked in ``z``'s row order;
    without the inter term ``op`` is the own operator alone (``z`` is then
    the side's own patches).

    Returns:
        Tensor: ``(C, 2 * rows, rows)``, or ``(C, rows, rows)`` without
        inter.
    """
    if s.mt is None:
        return grad_operators(s, g_intra, g_inter, eps, of_x)[0]
    rows = s.kx.shape[1]
    op = s.kx.new_empty(s.kx.shape[0], 2 * rows, rows)
    x_rows, y_rows = op[:, :rows], op[:, rows:]
    own, cross = (x_rows, y_rows) if of_x else (y_rows, x_rows)
    grad_operators(s, g_intra, g_inter, eps, of_x, own, cross)
    return op
