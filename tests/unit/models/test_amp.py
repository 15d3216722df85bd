"""Mixed precision: what autocast changes in the PCKA loss, and the
distiller's forward/backward under autocast (bf16 on a CPU).

Under ``--amp`` the FPN features reach the loss rounded to fp16 (bf16 with
bf16 autocast); the loss itself runs in fp32. Measured on the toy pair's
FPN features (P3-P6 of two 256x256 images, random initialisation), the
rounding moves the PCKA loss by at most 1.6e-4 (bf16) and 2.2e-5 (fp16)
relative to the loss on the fp32 features (intra and intra+inter); running
the loss's own products in bf16 instead moves it by up to 1.5e-3, and in
fp16 overflows to NaN on P3. The tolerances below sit between the two.
"""
import pytest
import torch
from conftest import TOY_DISTILL, demo_batch, load_distill_cfg
from mmengine.optim import OptimWrapper

from mmdet.registry import MODELS
from pcka_det.losses import PatchCKALoss
from pcka_det.testing.reference import patch_cka_reference

ROUNDING_RTOL = {torch.bfloat16: 5e-4, torch.float16: 1e-4}


def _distiller():
    cfg = load_distill_cfg(TOY_DISTILL)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    return model.train()


def _batch(model):
    return model.data_preprocessor(
        demo_batch(batch_size=2, size=(256, 256), num_classes=6), True)


@pytest.fixture(scope='module')
def toy_features():
    """``{loss name: (loss, student feature, teacher feature)}``, fp32."""
    model = _distiller()
    data = _batch(model)
    with torch.no_grad():
        _, pairs = model.record(data['inputs'], data['data_samples'])
    return {name: (model.distill_losses[name], s, t)
            for name, (s, t) in pairs.items()}


def _with_inter(loss):
    return PatchCKALoss(loss.patch_size, loss.intra_weight, 10.0)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('inter', [False, True])
def test_loss_on_rounded_features_stays_within_measured_tolerance(
        toy_features, dtype, inter):
    for name, (loss, s, t) in toy_features.items():
        loss = _with_inter(loss) if inter else loss
        exact = loss(s, t)
        rounded = loss(s.to(dtype), t.to(dtype))
        assert rounded.dtype == torch.float32
        assert exact > 0.1, name  # a loss far from 0, the relative error
        torch.testing.assert_close(rounded, exact, atol=0,
                                   rtol=ROUNDING_RTOL[dtype],
                                   msg=lambda m: f'{name}: {m}')


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_loss_runs_in_fp32_under_autocast(toy_features, dtype):
    """Under autocast, on features already rounded to ``dtype``, the loss
    equals the float64 reference on the same values to fp32 precision."""
    for name, (loss, s, t) in toy_features.items():
        s, t = s.to(dtype), t.to(dtype)
        with torch.autocast('cpu', dtype=dtype):
            got = loss(s, t)
        intra, _ = patch_cka_reference(s.double(), t.double(),
                                       loss.patch_size)
        expected = loss.loss_weight * loss.intra_weight * (1 - intra.mean())
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), expected, rtol=2e-5,
                                   atol=0, msg=lambda m: f'{name}: {m}')


def _student_grads(model):
    return torch.cat([p.grad.flatten() for p in model.student.parameters()
                      if p.grad is not None])


def test_distiller_forward_backward_under_autocast():
    """The whole distiller step in bf16 autocast: finite fp32 losses near
    the fp32 step's, and student gradients pointing the same way."""
    runs = {}
    for amp in (False, True):
        model = _distiller()
        data = _batch(model)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
            losses = model(**data, mode='loss')
        pcka = {k: v for k, v in losses.items() if k.startswith('loss_pcka')}
        assert len(pcka) == 4
        assert all(v.dtype == torch.float32 for v in pcka.values())
        total = sum(v if torch.is_tensor(v) else sum(v)
                    for k, v in losses.items() if 'loss' in k)
        assert torch.isfinite(total)
        total.backward()
        grads = _student_grads(model)
        assert torch.isfinite(grads).all()
        assert all(p.grad is None for p in model.teacher.parameters())
        runs[amp] = (pcka, grads)
    (fp32, g32), (bf16, g16) = runs[False], runs[True]
    for k in fp32:
        # whole-network bf16 (convs included) moved them by at most 0.33 %
        torch.testing.assert_close(bf16[k], fp32[k], rtol=0.02, atol=0)
    cosine = torch.nn.functional.cosine_similarity(g16, g32, dim=0)
    assert cosine > 0.99, cosine  # measured 0.9975


def test_autocast_training_step_updates_student():
    model = _distiller()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    before = {k: v.clone() for k, v in model.student.named_parameters()}
    data = demo_batch(batch_size=2, size=(128, 128), num_classes=6)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        log_vars = model.train_step(data, optim)
    assert torch.isfinite(log_vars['loss'])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(p, before[k])
               for k, p in model.student.named_parameters())


def test_head_level_terms_under_autocast():
    """PCKA + CrossKD (head level) in bf16 autocast at 128 px, where P7 is
    1x1: the CrossKD terms stay fp32 and near the fp32 step's, and the
    student's gradient from them keeps its size and direction. Before the
    alignment gave a channel of equal values no gradient, bf16 rounding
    made P7's two values per channel equal and its gradient about
    t_std / 1e-6: the CrossKD gradient 31000 instead of 250, cosine -0.02
    with the fp32 one."""
    import os.path as osp

    from conftest import ROOT
    config = osp.join(ROOT, 'configs', 'toy',
                      'pcka_crosskd_retinanet_r18_thin-r18_toy.py')
    runs = {}
    for amp in (False, True):
        torch.manual_seed(0)
        model = MODELS.build(load_distill_cfg(config).model).train()
        data = model.data_preprocessor(
            demo_batch(batch_size=2, size=(128, 128), num_classes=6), True)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
            losses = model(**data, mode='loss')
        head = {k: v for k, v in losses.items() if 'crosskd' in k}
        assert len(head) == 10  # cls and box on P3-P7
        assert all(v.dtype == torch.float32 and torch.isfinite(v)
                   for v in head.values())
        sum(head.values()).backward()
        runs[amp] = (head, _student_grads(model))
    (fp32, g32), (bf16, g16) = runs[False], runs[True]
    for k in fp32:  # measured: at most 3.3 % (P7's cls term, ~0.016)
        torch.testing.assert_close(bf16[k], fp32[k], rtol=0.05, atol=1e-3)
    # measured: norm 247.6 vs 250.2, cosine 0.92
    assert 0.8 < g16.norm() / g32.norm() < 1.25
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.8
