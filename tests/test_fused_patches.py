"""The compiled resize+patch operator and the chunked CPU PCKA built on it."""
import os

import pytest
import torch

from pcka_det.losses import PatchCKALoss, patch_cka, to_patches
from pcka_det.losses.fused_patches import FusedPatchAlignment
from pcka_det.losses.kernels import gram_alignments
from pcka_det.ops import (resize_patches_available, resize_patches_grad,
                          resize_patches_into)

# `make test` installs pcka_det with its operator; only a deliberate
# PCKA_DET_WITH_OPS=0 install may run without it.
pytestmark = pytest.mark.skipif(
    os.environ.get('PCKA_DET_WITH_OPS') == '0',
    reason='installed without the compiled operator')

# (B, C, H, W, patch): exact multiples, resized up, smaller than a patch,
# a patch count >= 16 (rows padded to a multiple of 8), odd patch sizes.
CASES = [(2, 3, 32, 48, 16), (2, 4, 25, 42, 16), (1, 2, 7, 11, 16),
         (2, 3, 80, 72, 16), (3, 2, 17, 16, 8), (1, 2, 12, 20, 4),
         (2, 2, 9, 13, 5)]


def _maps(b, c, h, w, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = torch.relu(torch.randn(b, c, h, w, generator=g, dtype=dtype))
    t = torch.relu(0.5 * s + torch.randn(b, c, h, w, generator=g,
                                         dtype=dtype))
    return s, t


def test_operator_is_built():
    assert resize_patches_available(), (
        'pcka_det._ext is missing: reinstall with a C++ compiler '
        '(pip install --no-build-isolation -e .)')


@pytest.mark.parametrize('case', CASES)
def test_patches_equal_interpolate_and_permute(case):
    b, c, h, w, p = case
    s, _ = _maps(b, c, h, w)
    ref = to_patches(s, p)
    n = ref.shape[1]
    out = torch.full((c, n + 3, b * p * p), 7.0, dtype=s.dtype)
    resize_patches_into(s, p, 0, c, out)
    torch.testing.assert_close(out[:, :n], ref, rtol=0, atol=1e-12)
    assert torch.all(out[:, n:] == 7.0)  # rows past n are not touched
    # a channel sub-range into a strided view
    part = torch.zeros(2, c - 1, n, b * p * p, dtype=s.dtype)[0]
    resize_patches_into(s, p, 1, c, part)
    torch.testing.assert_close(part, ref[1:], rtol=0, atol=1e-12)


def test_patches_match_interpolate_in_fp32():
    # taps computed in the dtype's precision, like PyTorch's kernel
    s, _ = _maps(2, 4, 100, 168, dtype=torch.float32)
    ref = to_patches(s, 16)
    out = torch.empty_like(ref)
    resize_patches_into(s, 16, 0, 4, out)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('case', CASES)
def test_gradient_is_the_adjoint(case):
    b, c, h, w, p = case
    s, _ = _maps(b, c, h, w)
    s.requires_grad_()
    ref = to_patches(s, p)
    g = torch.randn(ref.shape, dtype=s.dtype,
                    generator=torch.Generator().manual_seed(1))
    ref.backward(g)
    # padded rows (what the chunked backward passes) are ignored, and the
    # gradient may be a channel slice of a larger buffer
    padded = torch.cat([g, torch.randn(c, 2, g.shape[2], dtype=g.dtype)], 1)
    strided = torch.stack([padded, padded.flip(0)], 1)[:, 0]
    for grad in (padded, strided):
        grad_in = torch.full_like(s, float('nan')).detach()
        resize_patches_grad(grad, p, 0, c, grad_in)
        torch.testing.assert_close(grad_in, s.grad, rtol=0, atol=1e-12)


def test_operator_rejects_bad_buffers():
    s, _ = _maps(2, 3, 32, 32)
    with pytest.raises(RuntimeError, match=r'out must be \(3, >= 4, 512\)'):
        resize_patches_into(s, 16, 0, 3, torch.empty(3, 2, 512,
                                                     dtype=s.dtype))
    with pytest.raises(RuntimeError, match='grad must be contiguous'):
        resize_patches_grad(torch.empty(3, 512, 4, dtype=s.dtype).mT, 16, 0,
                            3, torch.empty_like(s))
    with pytest.raises(RuntimeError, match='channel range'):
        resize_patches_into(s, 16, 2, 5, torch.empty(3, 4, 512,
                                                     dtype=s.dtype))


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('inter', [False, True])
def test_fused_alignment_equals_materialised(case, inter):
    b, c, h, w, p = case
    s, t = _maps(b, c, h, w)
    s1, t1 = s.clone().requires_grad_(), t.clone().requires_grad_()
    intra, inter_sim = FusedPatchAlignment.apply(s1, t1, p, inter, 1e-12)
    s2, t2 = s.clone().requires_grad_(), t.clone().requires_grad_()
    ref_intra, ref_inter = gram_alignments(to_patches(s2, p),
                                           to_patches(t2, p), False, inter)
    torch.testing.assert_close(intra, ref_intra)
    loss = 3 * intra.sum()
    ref_loss = 3 * ref_intra.sum()
    if inter:
        torch.testing.assert_close(inter_sim, ref_inter)
        loss = loss - 2 * inter_sim.sum()
        ref_loss = ref_loss - 2 * ref_inter.sum()
    else:
        assert inter_sim.numel() == 0
    loss.backward()
    ref_loss.backward()
    torch.testing.assert_close(s1.grad, s2.grad)
    torch.testing.assert_close(t1.grad, t2.grad)


@pytest.mark.parametrize('inter', [False, True])
def test_fused_gradcheck(inter):
    s, t = _maps(2, 2, 10, 13, seed=3)
    s.requires_grad_()
    t.requires_grad_()

    def fn(x, y):
        i, e = FusedPatchAlignment.apply(x, y, 4, inter, 1e-12)
        return torch.cat([i, e])

    assert torch.autograd.gradcheck(fn, (s, t), eps=1e-6, atol=1e-6)


def test_patch_cka_takes_the_fused_path_with_the_same_result(monkeypatch):
    s, t = _maps(2, 6, 50, 84, dtype=torch.float32)
    s.requires_grad_()
    calls = []
    original = FusedPatchAlignment.forward

    def spy(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(FusedPatchAlignment, 'forward', staticmethod(spy))
    intra, inter = patch_cka(s, t, 16)
    (intra.mean() + inter.mean()).backward()
    assert calls, 'the CPU path did not use the compiled operator'
    grad = s.grad.clone()
    s.grad = None
    monkeypatch.setenv('PCKA_DET_DISABLE_OPS', '1')
    ref_intra, ref_inter = patch_cka(s, t, 16)
    (ref_intra.mean() + ref_inter.mean()).backward()
    assert len(calls) == 1
    torch.testing.assert_close(intra, ref_intra)
    torch.testing.assert_close(inter, ref_inter)
    torch.testing.assert_close(grad, s.grad)


def test_backward_under_autocast_stays_fp32():
    # mmdet's AMP wrappers call backward inside the autocast context
    s, t = _maps(2, 4, 40, 56, dtype=torch.float32)
    x = s.clone().requires_grad_()
    intra, inter = patch_cka(x, t, 16)
    (intra.mean() + inter.mean()).backward()
    y = s.clone().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        intra, inter = patch_cka(y, t, 16)
        (intra.mean() + inter.mean()).backward()
    assert y.grad.dtype == torch.float32
    torch.testing.assert_close(y.grad, x.grad)


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('inter_weight', [None, 4.0])
def test_loss_with_gradient_formed_forward_equals_patch_cka(
        case, inter_weight):
    b, c, h, w, p = case
    s, t = _maps(b, c, h, w)
    loss_fn = PatchCKALoss(p, 10.0, inter_weight, loss_weight=0.5)
    s1, t1 = s.clone().requires_grad_(), t.clone().requires_grad_()
    loss = loss_fn(s1, t1)
    fused = type(loss.grad_fn).__name__ == 'FusedPatchLossBackward'
    # one patch: intra is defined as 1, which patch_cka handles
    assert fused == (to_patches(s, p).shape[1] > 1)
    s2, t2 = s.clone().requires_grad_(), t.clone().requires_grad_()
    intra, inter = patch_cka(s2, t2, p, inter=inter_weight is not None)
    ref = loss_fn.combine(intra, inter)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    if not loss.requires_grad:  # one patch, intra only: a constant 0
        assert not fused and inter_weight is None and loss == 0
        return
    # an upstream factor other than 1 scales the gradient formed forward
    (3 * loss).backward()
    (3 * ref).backward()
    torch.testing.assert_close(s1.grad, s2.grad)
    torch.testing.assert_close(t1.grad, t2.grad)


def test_loss_student_only_gradient_and_second_backward():
    s, t = _maps(2, 4, 50, 84)
    x = s.clone().requires_grad_()
    loss = PatchCKALoss(16, 10.0, 10.0)(x, t)
    loss.backward(retain_graph=True)
    assert t.grad is None and x.grad.shape == s.shape
    with pytest.raises(RuntimeError, match='backward ran a second time'):
        loss.backward()
    # without gradients the loss is patch_cka's, nothing formed forward
    with torch.no_grad():
        value = PatchCKALoss(16, 10.0, 10.0)(x, t)
    assert value.grad_fn is None
    torch.testing.assert_close(value, loss.detach(), rtol=1e-12, atol=0)


def test_loss_under_autocast_is_fp32_and_equal():
    s, t = _maps(2, 4, 40, 56, dtype=torch.float32)
    loss_fn = PatchCKALoss(16, 10.0, 10.0)
    x = s.clone().requires_grad_()
    loss_fn(x, t).backward()
    y = s.clone().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = loss_fn(y.bfloat16(), t.bfloat16())
        loss.backward()
    assert loss.dtype == torch.float32 and y.grad.dtype == torch.float32
    # bf16 inputs: the value within the 1e-3 relative bound
    torch.testing.assert_close(y.grad, x.grad, rtol=0.05, atol=1e-4)


def test_loss_formed_forward_zero_channels_and_large_activations():
    s, t = _maps(2, 4, 40, 56, dtype=torch.float32)
    s[:, 1] = 0
    t[:, 2] = 0
    for scale in (1.0, 1e3):
        x = (s * scale).requires_grad_()
        loss = PatchCKALoss(16, 10.0, 10.0)(x, t * scale)
        assert type(loss.grad_fn).__name__ == 'FusedPatchLossBackward'
        loss.backward()
        y = (s * scale).requires_grad_()
        intra, inter = patch_cka(y, t * scale, 16)
        ref = 10 * (1 - intra.mean()) + 10 * (1 - inter.mean())
        ref.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
        torch.testing.assert_close(loss, ref)
        torch.testing.assert_close(x.grad, y.grad)
    assert inter[1] == 0 and inter[2] == 0
