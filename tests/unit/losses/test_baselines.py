"""Baseline feature losses (PKD, CWD, FitNet MSE) against their definitions."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmdet.registry import MODELS
from pcka_det.losses import (ChannelWiseDivergence, FeatureMSELoss, PKDLoss,
                             channel_kl, pearson_channels)


def _pair(seed=0, shape=(2, 4, 6, 10)):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(*shape, generator=g)
    return s, s + 0.7 * torch.randn(*shape, generator=g)


def test_pkd_is_one_minus_pearson():
    s, t = _pair()
    expected = [
        np.corrcoef(s[:, c].flatten().numpy(), t[:, c].flatten().numpy())[0, 1]
        for c in range(s.shape[1])
    ]
    corr = pearson_channels(s, t)
    np.testing.assert_allclose(corr.numpy(), expected, rtol=1e-4)
    loss = PKDLoss(loss_weight=6.0)(s, t)
    torch.testing.assert_close(loss, 6.0 * (1 - torch.tensor(expected).mean())
                               .float(), rtol=1e-4, atol=1e-6)
    # standardised MSE / 2 is the same number, the paper's formulation
    def std(x):
        x = x.transpose(0, 1).reshape(x.shape[1], -1)
        return (x - x.mean(1, keepdim=True)) / x.std(1, unbiased=False,
                                                      keepdim=True)
    torch.testing.assert_close(PKDLoss()(s, t),
                               F.mse_loss(std(s), std(t)) / 2, rtol=1e-4,
                               atol=1e-6)


def test_pkd_ignores_channel_scale_and_offset():
    s, t = _pair(1)
    scale = torch.tensor([0.1, 3.0, 50.0, 1.0]).view(1, 4, 1, 1)
    torch.testing.assert_close(PKDLoss()(s * scale + 7, t), PKDLoss()(s, t),
                               rtol=1e-4, atol=1e-5)
    assert PKDLoss()(t, t).abs() < 1e-5


def test_pkd_constant_channel_is_finite():
    s, t = _pair(2)
    s[:, 0] = 0
    corr = pearson_channels(s, t)
    assert torch.isfinite(corr).all() and corr[0] == 0


def test_cwd_matches_kl_definition():
    s, t = _pair(3)
    tau = 2.0
    b, c = s.shape[:2]
    p_t = F.softmax(t.reshape(b * c, -1) / tau, dim=1)
    log_p_s = F.log_softmax(s.reshape(b * c, -1) / tau, dim=1)
    expected = F.kl_div(log_p_s, p_t, reduction='sum') / (b * c) * tau**2
    loss = ChannelWiseDivergence(tau=tau, loss_weight=5.0)(s, t)
    torch.testing.assert_close(loss, 5.0 * expected, rtol=1e-5, atol=1e-6)
    assert channel_kl(s, t, tau).shape == (c, )
    assert ChannelWiseDivergence()(t, t).abs() < 1e-6
    # a softmax ignores a per-channel offset
    torch.testing.assert_close(ChannelWiseDivergence()(s + 4, t),
                               ChannelWiseDivergence()(s, t))
    with pytest.raises(ValueError, match='tau'):
        ChannelWiseDivergence(tau=0)


def test_fitnet_mse():
    s, t = _pair(4)
    torch.testing.assert_close(FeatureMSELoss(2.0)(s, t),
                               2.0 * F.mse_loss(s, t))


@pytest.mark.parametrize('cfg', [
    dict(type='PKDLoss'),
    dict(type='ChannelWiseDivergence', tau=1.0),
    dict(type='FeatureMSELoss'),
])
def test_registered_shapes_checked_and_gradients(cfg):
    loss = MODELS.build(cfg)
    with pytest.raises(ValueError, match=r'\(2, 8, 4, 4\).*\(2, 16, 4, 4\)'
                       ) as e:
        loss(torch.randn(2, 8, 4, 4), torch.randn(2, 16, 4, 4))
    assert 'connector' in str(e.value)
    s, t = _pair(5)
    s.requires_grad_(True)
    value = loss(s, t)
    value.backward()
    assert value.dim() == 0 and torch.isfinite(value)
    assert s.grad.abs().sum() > 0
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = loss(s.detach(), t)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, value.detach(), rtol=1e-3, atol=1e-5)
