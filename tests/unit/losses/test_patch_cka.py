import importlib
import logging

import pytest
import torch

from pcka_det.losses import CKALoss, PatchCKALoss, cka, patch_cka
from pcka_det.testing.reference import (alignment_reference,
                                       patch_cka_reference)

SHAPES = [
    (2, 5, 32, 48),  # exact multiple of the patch size
    (2, 4, 25, 42),  # resized up
    (1, 3, 7, 11),  # smaller than a patch: one patch
    (3, 2, 17, 16),  # two patches
]


def _pair(shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(shape, generator=g, dtype=dtype)
    t = 0.6 * s + torch.randn(shape, generator=g, dtype=dtype)
    return s, t


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('centered', [False, True])
def test_matches_reference_random(shape, centered):
    s, t = _pair(shape)
    intra, inter = patch_cka(s, t, 16, centered=centered)
    ref_intra, ref_inter = patch_cka_reference(s, t, 16, centered=centered)
    assert intra.shape == inter.shape == (shape[1], )
    # intra is defined as 1 for a single patch; the reference is 1 only
    # when uncentred (centred it is 0/0).
    single = -(-shape[2] // 16) * -(-shape[3] // 16) == 1
    if not single:
        torch.testing.assert_close(intra.double(), ref_intra, rtol=1e-5,
                                   atol=1e-6)
    else:
        assert torch.all(intra == 1)
    torch.testing.assert_close(inter.double(), ref_inter, rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize('centered', [False, True])
def test_matches_reference_structured(centered):
    # ReLU maps with spatial structure and a shared component, patch 4.
    g = torch.Generator().manual_seed(1)
    base = torch.randn(2, 6, 12, 20, generator=g, dtype=torch.float64)
    ramp = torch.linspace(0, 3, 20, dtype=torch.float64)
    s = torch.relu(base + ramp)
    t = torch.relu(base.flip(-1) * 2 + ramp)
    intra, inter = patch_cka(s, t, 4, centered=centered)
    ref_intra, ref_inter = patch_cka_reference(s, t, 4, centered=centered)
    torch.testing.assert_close(intra.double(), ref_intra, rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(inter.double(), ref_inter, rtol=1e-5,
                               atol=1e-6)
    assert torch.all((intra >= 0) & (intra <= 1 + 1e-6))


def test_identical_features_give_one_and_zero_loss():
    s, _ = _pair((2, 4, 32, 32))
    for centered in (False, True):
        intra, inter = patch_cka(s, s.clone(), 16, centered=centered)
        torch.testing.assert_close(intra, torch.ones_like(intra))
        torch.testing.assert_close(inter, torch.ones_like(inter))
    loss = PatchCKALoss(intra_weight=10, inter_weight=3)(s, s.clone())
    assert abs(loss.item()) < 1e-5


def test_loss_value_formula():
    s, t = _pair((2, 3, 32, 32), dtype=torch.float32)
    intra, inter = patch_cka(s, t, 8)
    loss = PatchCKALoss(8, intra_weight=10, inter_weight=4,
                        loss_weight=0.5)(s, t)
    expected = 0.5 * (10 * (1 - intra.mean()) + 4 * (1 - inter.mean()))
    torch.testing.assert_close(loss, expected)
    intra_only = PatchCKALoss(8, intra_weight=10)(s, t)
    torch.testing.assert_close(intra_only, 10 * (1 - intra.mean()))


# The last case is the official setting: patch 16, uncentred, maps resized
# up to a multiple of 16, both weights 10.
@pytest.mark.parametrize('centered,shape,patch', [
    (False, (2, 3, 20, 24), 8),
    (True, (2, 3, 20, 24), 8),
    (False, (2, 3, 40, 56), 16),
])
def test_gradients_equal_reference_loss(centered, shape, patch):
    s, t = _pair(shape)
    s1 = s.clone().requires_grad_()
    PatchCKALoss(patch, 10, 10, centered)(s1, t).backward()
    s2 = s.clone().requires_grad_()
    ri, re = patch_cka_reference(s2, t, patch, centered)
    (-(10 * ri.mean() + 10 * re.mean())).backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize('centered', [False, True])
def test_gradcheck(centered):
    s, t = _pair((2, 2, 6, 8))
    s.requires_grad_()

    def fn(x):
        intra, inter = patch_cka(x.double(), t, 4, centered=centered)
        return torch.cat([intra, inter])

    # patch_cka computes in fp32; check the float64 path of the kernel.
    from pcka_det.losses.kernels import gram_alignments
    from pcka_det.losses.patch_cka import to_patches

    def fn64(x):
        i, e = gram_alignments(to_patches(x, 4), to_patches(t, 4), centered)
        return torch.cat([i, e])

    assert torch.autograd.gradcheck(fn64, (s, ), eps=1e-6, atol=1e-5)
    assert fn(s).dtype == torch.float32


@pytest.mark.parametrize('centered', [False, True])
def test_invariances(centered):
    s, t = _pair((2, 4, 32, 32))
    intra, inter = patch_cka(s, t, 16, centered=centered)
    # isotropic scaling of either side
    i2, e2 = patch_cka(7.5 * s, 0.01 * t, 16, centered=centered)
    torch.testing.assert_close(i2, intra)
    torch.testing.assert_close(e2, inter)
    if centered:
        # constant offset of a representation
        i3, e3 = patch_cka(s + 3.0, t - 2.0, 16, centered=True)
        torch.testing.assert_close(i3, intra, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(e3, inter, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('centered', [False, True])
def test_cka_orthogonal_invariance(centered):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(30, 12, generator=g, dtype=torch.float64)
    y = x @ torch.randn(12, 9, generator=g, dtype=torch.float64)
    y = y + 0.5 * torch.randn(30, 9, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g,
                                       dtype=torch.float64))
    base, _ = cka(x, y, centered)
    rotated, _ = cka(x @ q, y, centered)
    torch.testing.assert_close(rotated, base, rtol=1e-5, atol=1e-6)
    # and the value equals the explicit definition
    ref = alignment_reference(x @ x.T, y @ y.T, centered)
    torch.testing.assert_close(base.double(), ref, rtol=1e-5, atol=1e-6)
    if centered:
        shifted, _ = cka(x + 5.0, y - 1.0, True)
        torch.testing.assert_close(shifted, base, rtol=1e-4, atol=1e-5)


def test_cka_many_samples_route_and_inter():
    # n > d takes the feature-Gram route; values must not change.
    g = torch.Generator().manual_seed(4)
    x = torch.randn(50, 6, generator=g, dtype=torch.float64)
    y = torch.randn(50, 6, generator=g, dtype=torch.float64) + x
    for centered in (False, True):
        intra, inter = cka(x, y, centered, inter=True)
        torch.testing.assert_close(
            intra.double(), alignment_reference(x @ x.T, y @ y.T, centered),
            rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            inter.double(), alignment_reference(x.T @ x, y.T @ y, centered),
            rtol=1e-5, atol=1e-6)
    loss = CKALoss(intra_weight=2.0, inter_weight=1.0)(x, y)
    intra, inter = cka(x, y, True, inter=True)
    torch.testing.assert_close(loss, 2 * (1 - intra) + (1 - inter))


def test_cka_errors():
    with pytest.raises(ValueError, match=r'\(4, 3\).*\(5, 3\)'):
        cka(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match='same feature size'):
        cka(torch.randn(4, 3), torch.randn(4, 5), inter=True)


def test_degenerate_cases_are_finite():
    # all-zero channel, batch size 1, single patch, H < patch size
    s = torch.randn(1, 3, 5, 9)
    t = torch.randn(1, 3, 5, 9)
    s[:, 1] = 0
    t[:, 2] = 0
    for centered in (False, True):
        x = s.clone().requires_grad_()
        loss = PatchCKALoss(16, 10, 10, centered)(x, t)
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(x.grad).all()
        intra, inter = patch_cka(s, t, 16, centered=centered)
        assert torch.isfinite(intra).all() and torch.isfinite(inter).all()
        assert inter[1] == 0 and inter[2] == 0


def test_single_patch_warns_once_per_level(monkeypatch):
    """One warning per level (loss instance) and cause, not per process, at
    WARNING level through MMEngine's logger (hence in the run's log)."""
    module = importlib.import_module('pcka_det.losses.feature_pair')
    logged = []
    monkeypatch.setattr(module, 'print_log',
                        lambda msg, logger, level: logged.append((msg, level)))
    p6, p7 = PatchCKALoss(16), PatchCKALoss(16)
    for _ in range(3):
        p6(torch.randn(2, 2, 7, 11), torch.randn(2, 2, 7, 11))
        p7(torch.randn(2, 2, 4, 6), torch.randn(2, 2, 4, 6))
    assert [level for _, level in logged] == [logging.WARNING] * 2
    assert '(7, 11)' in logged[0][0] and '(4, 6)' in logged[1][0]
    assert all('single patch' in msg for msg, _ in logged)
    # the pure function stays silent (analysis tools call it)
    patch_cka(torch.randn(2, 2, 7, 11), torch.randn(2, 2, 7, 11))
    assert len(logged) == 2


def test_bad_shapes_name_both():
    loss = PatchCKALoss()
    with pytest.raises(ValueError, match=r'\(2, 8, 8, 8\).*\(2, 16, 8, 8\)'
                       ) as e:
        loss(torch.randn(2, 8, 8, 8), torch.randn(2, 16, 8, 8))
    assert 'connector' in str(e.value)
    with pytest.raises(ValueError, match='batch size'):
        loss(torch.randn(1, 8, 8, 8), torch.randn(2, 8, 8, 8))
    with pytest.raises(ValueError, match='4D'):
        loss(torch.randn(8, 8, 8), torch.randn(8, 8, 8))


def test_spatial_mismatch_is_an_error_naming_the_causes():
    """Levels of different sizes are not paired: no silent resize."""
    s, t = torch.randn(2, 3, 16, 24), torch.randn(2, 3, 32, 48)
    for fn in (lambda: patch_cka(s, t, 16), lambda: PatchCKALoss(4)(s, t)):
        with pytest.raises(ValueError, match=r'\(2, 3, 16, 24\).*'
                           r'\(2, 3, 32, 48\)') as e:
            fn()
        assert 'start_level' in str(e.value)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_low_precision_inputs_and_autocast_compute_in_fp32(dtype):
    """Activations up to 1e3 in fp16/bf16 (Gram entries would overflow fp16):
    the loss equals the float64 reference on the same rounded values, in
    and out of autocast."""
    g = torch.Generator().manual_seed(5)
    s = torch.relu(torch.randn(2, 8, 40, 56, generator=g)) * 1e3
    t = torch.relu(s + 300 * torch.randn(2, 8, 40, 56, generator=g))
    s, t = s.to(dtype), t.to(dtype)
    ri, re = patch_cka_reference(s.double(), t.double(), 16)
    expected = 10 * (1 - ri.mean()) + 10 * (1 - re.mean())
    loss = PatchCKALoss(16, 10, 10)
    low = loss(s, t)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low.double(), expected, rtol=2e-5, atol=0)
    with torch.autocast('cpu', dtype=dtype):
        auto = loss(s, t)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto.double(), expected, rtol=2e-5, atol=0)


def test_double_backward_is_a_clear_error():
    s, t = _pair((2, 2, 8, 8))
    s = s.float().requires_grad_()
    loss = PatchCKALoss(4, 10, 10)(s, t.float())
    with pytest.raises(RuntimeError, match='create_graph=True'):
        torch.autograd.grad(loss, s, create_graph=True)
    # first-order gradients are unaffected
    (grad, ) = torch.autograd.grad(PatchCKALoss(4, 10, 10)(s, t.float()), s)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_registered_in_mmdet():
    from mmdet.registry import MODELS
    import pcka_det  # noqa: F401
    built = MODELS.build(dict(type='PatchCKALoss', patch_size=4,
                              inter_weight=2.0))
    assert isinstance(built, PatchCKALoss) and built.inter_weight == 2.0
    assert isinstance(MODELS.build(dict(type='CKALoss')), CKALoss)
