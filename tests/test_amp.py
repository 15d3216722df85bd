"""Mixed precision: the distiller under torch.autocast (bf16 on a CPU)."""
import pytest
import torch
from conftest import TOY_DISTILL, demo_batch, load_distill_cfg
from mmengine.optim import OptimWrapper

from mmdet.registry import MODELS


@pytest.fixture
def distiller():
    cfg = load_distill_cfg(TOY_DISTILL)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match='teacher_ckpt is None'):
        model = MODELS.build(cfg.model)
    return model.train()


def test_autocast_step_is_finite_and_pcka_matches_fp32(distiller):
    data = distiller.data_preprocessor(
        demo_batch(batch_size=2, size=(128, 128), num_classes=6), True)
    with torch.no_grad():
        fp32 = distiller.loss(**data)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            bf16 = distiller.loss(**data)
    pcka = sorted(k for k in bf16 if k.startswith('loss_pcka'))
    assert len(pcka) == 4
    for k, v in bf16.items():
        values = v if isinstance(v, list) else [v]
        assert all(torch.isfinite(x).all() for x in values), k
    # the features were recorded in bf16 ...
    s_feats = distiller.student_recorders['fpn'].get(None)
    t_feats = distiller.teacher_recorders['fpn'].get(None)
    assert s_feats[0].dtype == torch.bfloat16
    # ... and the loss on them equals the fp32 loss on the same values
    for name in pcka:
        level = distiller.loss_mappings[name[len('loss_'):]][1]
        loss_fn = distiller.distill_losses[name[len('loss_'):]]
        assert bf16[name].dtype == torch.float32
        ref = loss_fn(s_feats[level].float(), t_feats[level].float())
        torch.testing.assert_close(bf16[name], ref, rtol=1e-3, atol=0)
        # whole-network bf16 rounding moves it only slightly from fp32
        torch.testing.assert_close(bf16[name], fp32[name], rtol=0.05,
                                   atol=0.05)


def test_autocast_training_step_updates_student(distiller):
    optim = OptimWrapper(torch.optim.SGD(distiller.parameters(), lr=0.01))
    before = {k: v.clone() for k, v in distiller.student.named_parameters()}
    data = demo_batch(batch_size=2, size=(128, 128), num_classes=6)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        log_vars = distiller.train_step(data, optim)
    assert torch.isfinite(log_vars['loss'])
    assert all(p.dtype == torch.float32 for p in distiller.parameters())
    assert any(not torch.equal(p, before[k])
               for k, p in distiller.student.named_parameters())
