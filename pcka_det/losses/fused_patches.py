"""Patch alignments on the CPU without materialising the patches.

``to_patches`` + ``gram_alignments`` keep two resized, permuted copies of
each map for backward (2 x 40 MB for RetinaNet P3 at 1333x800) and pass over
every one of them several times. Here the compiled ``resize_patches``
operator fills a small buffer with a few channels' patches at a time, the
Gram products of those channels are taken while the buffer is in cache, and
backward cuts the patches again instead of saving them: same values, a
fraction of the memory traffic and of the saved memory.
"""
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

from ..ops import resize_patches_grad, resize_patches_into
from .kernels import GramScores, grad_operators, gram_scores

# Channels per chunk: the patch buffer of one chunk should stay in cache.
_CHUNK_BYTES = 4 << 20
# bmm is markedly faster when a large patch count is a multiple of 8 (MKL
# blocking; 77 -> 80 rows: 20.5 -> 15.8 ms on P3); the extra rows are zero
# and change no Gram statistic. Small counts are left as they are.
_ROW_ALIGN = 8
_ALIGN_FROM = 16


def _layout(feat: Tensor, patch_size: int) -> Tuple[int, int, int]:
    """Patch count ``n``, padded row count and patch width ``B * p * p``."""
    b, _, h, w = feat.shape
    n = -(-h // patch_size) * -(-w // patch_size)
    rows = -(-n // _ROW_ALIGN) * _ROW_ALIGN if n >= _ALIGN_FROM else n
    return n, rows, b * patch_size * patch_size


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
            x, y = z[:, :rows], z[:, rows:]
            torch.bmm(x, x.transpose(1, 2), out=kx[c0:c1])
            torch.bmm(y, y.transpose(1, 2), out=ky[c0:c1])
            if want_inter:
                torch.bmm(y, x.transpose(1, 2), out=mt[c0:c1])
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
        p, rows = ctx.patch_size, s.kx.shape[1]
        want = ctx.needs_input_grad[:2]
        inter = s.mt is not None
        # gradient^T = z^T @ ops: for x, ops = [own; cross_t], for y the
        # other way round; without inter only the own side's rows are used
        ops, grads = [], []
        for i, wanted in enumerate(want):
            if not wanted:
                ops.append(None)
                grads.append(None)
                continue
            op = s.kx.new_empty(s.kx.shape[0], (2 if inter else 1) * rows,
                                rows)
            own_rows = slice(0, rows) if (i == 0 or not inter) else slice(
                rows, 2 * rows)
            cross_rows = slice(rows, 2 * rows) if i == 0 else slice(0, rows)
            grad_operators(s, g_intra, g_inter, ctx.eps, i == 0,
                           op[:, own_rows],
                           op[:, cross_rows] if inter else None)
            ops.append(op)
            grads.append(torch.empty_like(student if i == 0 else teacher))
        sides = tuple(want[i] or (inter and any(want)) for i in range(2))
        for c0, c1, z in _chunks(student, teacher, p, sides):
            for i in range(2):
                if ops[i] is None:
                    continue
                zi = z if inter else z[:, i * rows:(i + 1) * rows]
                g_t = torch.bmm(zi.transpose(1, 2), ops[i][c0:c1])
                resize_patches_grad(g_t.transpose(1, 2), p, c0, c1, grads[i])
        return grads[0], grads[1], None, None, None
