"""Slow reference PCKA written straight from the definitions.

One Python loop over channels, explicit centring matrices and full d x d
Gram matrices, like the official implementation. Used by the tests to check
``patch_cka`` and by ``tools/benchmark/benchmark_loss.py`` as the baseline; never use
it for training.
"""
import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def alignment_reference(k: Tensor, m: Tensor, centered: bool) -> Tensor:
    """``<K, M>_F / (||K||_F ||M||_F)``, optionally of ``HKH`` and ``HMH``."""
    if centered:
        n = k.shape[0]
        h = torch.eye(n, dtype=k.dtype, device=k.device) - 1.0 / n
        k, m = h @ k @ h, h @ m @ h
    return torch.trace(k @ m.T) / (torch.linalg.norm(k) * torch.linalg.norm(m))


def patch_cka_reference(student: Tensor,
                        teacher: Tensor,
                        patch_size: int = 16,
                        centered: bool = False) -> Tuple[Tensor, Tensor]:
    """Per-channel intra and inter similarities, one channel at a time.

    Args:
        student (Tensor): ``(B, C, H, W)``.
        teacher (Tensor): ``(B, C, H, W)``.
        patch_size (int): Patch side.
        centered (bool): Centre the Gram matrices.

    Returns:
        tuple[Tensor, Tensor]: ``intra`` and ``inter``, each ``(C,)``.
    """
    b, c, h, w = student.shape
    p = patch_size
    size = (math.ceil(h / p) * p, math.ceil(w / p) * p)
    if size != (h, w):
        student = F.interpolate(student, size, mode='bilinear',
                                align_corners=False)
        teacher = F.interpolate(teacher, size, mode='bilinear',
                                align_corners=False)
    xs, ys = [], []
    for i in range(0, size[0], p):
        for j in range(0, size[1], p):
            # (B, C, p, p) -> (C, B*p*p): one row per patch, per channel
            xs.append(student[:, :, i:i + p, j:j + p].transpose(0, 1)
                      .reshape(c, -1))
            ys.append(teacher[:, :, i:i + p, j:j + p].transpose(0, 1)
                      .reshape(c, -1))
    return per_channel_reference(
        torch.stack(xs, 1), torch.stack(ys, 1), centered)


def per_channel_reference(x: Tensor, y: Tensor,
                          centered: bool = False) -> Tuple[Tensor, Tensor]:
    """Intra and inter alignment with a Python loop over channels.

    Mirrors the official implementation: full ``d x d`` Gram matrices and a
    matmul for the trace.

    Args:
        x (Tensor): Student patches ``(C, n, d)``.
        y (Tensor): Teacher patches ``(C, n, d)``.
        centered (bool): Centre the Gram matrices.

    Returns:
        tuple[Tensor, Tensor]: ``intra`` and ``inter``, each ``(C,)``.
    """
    intra, inter = [], []
    for xc, yc in zip(x, y):
        intra.append(alignment_reference(xc @ xc.T, yc @ yc.T, centered))
        inter.append(alignment_reference(xc.T @ xc, yc.T @ yc, centered))
    return torch.stack(intra), torch.stack(inter)
