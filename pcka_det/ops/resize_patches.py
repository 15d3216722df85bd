"""Fused bilinear resize + patch layout, from ``csrc/resize_patches.cpp``.

The extension ``pcka_det._ext`` is compiled by ``pip install`` when a C++
compiler and torch are there at build time; without it (or for CUDA
tensors) PCKA uses ``F.interpolate`` and a permute, with the same values.
``PCKA_DET_DISABLE_OPS=1`` switches the compiled path off at run time.
"""
import os

from torch import Tensor

try:
    from pcka_det import _ext
except ImportError:  # not compiled: the PyTorch path is used
    _ext = None


def resize_patches_available() -> bool:
    """Whether the compiled operator is there and not disabled."""
    return _ext is not None and os.environ.get('PCKA_DET_DISABLE_OPS',
                                               '0') in ('', '0')


def resize_patches_into(feat: Tensor, patch_size: int, c0: int, c1: int,
                        out: Tensor) -> None:
    """Write the patches of channels ``[c0, c1)`` into ``out``.

    Same values as ``to_patches(feat[:, c0:c1], patch_size)``: the map is
    resized bilinearly to the next multiple of ``patch_size`` and cut into
    ``n = u * v`` patches.

    Args:
        feat (Tensor): Contiguous CPU map ``(B, C, H, W)``, fp32 or fp64.
        patch_size (int): Patch side ``p``.
        c0 (int): First channel.
        c1 (int): One past the last channel.
        out (Tensor): ``(c1 - c0, rows, B * p * p)`` with ``rows >= n``,
            possibly a strided view; rows ``n..`` are left untouched.
    """
    _ext.resize_patches_forward(feat, patch_size, c0, c1, out)


def resize_patches_grad(grad: Tensor, patch_size: int, c0: int, c1: int,
                        grad_in: Tensor) -> None:
    """Adjoint of :func:`resize_patches_into` for channels ``[c0, c1)``.

    Args:
        grad (Tensor): Gradient of the patches ``(c1 - c0, rows, B * p * p)``,
            possibly a strided view whose last dimension is contiguous; rows
            past ``n`` are ignored.
        patch_size (int): Patch side ``p``.
        c0 (int): First channel.
        c1 (int): One past the last channel.
        grad_in (Tensor): Contiguous ``(B, C, H, W)``; channels ``[c0, c1)``
            are overwritten with the gradient of the map.
    """
    _ext.resize_patches_backward(grad, patch_size, c0, c1, grad_in)
