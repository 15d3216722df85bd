import pytest
import torch
from conftest import demo_batch, load_distill_cfg

from mmdet.registry import MODELS
from pcka_det.export import export_student
from pcka_det.models import build_detector


def test_distill_loss_has_gradient_only_to_student():
    cfg = load_distill_cfg('configs/pcka/retina_r101_r50.py')
    model = MODELS.build(cfg.model)
    # P3 of a 256x320 image is 32x40 cells: 2x3 patches of 16
    data = model.data_preprocessor(demo_batch(size=(256, 320)), True)
    losses = model(**data, mode='loss')
    losses['loss_pcka_p3'].backward()
    grads = [p.grad for p in model.student.neck.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    # the head gets nothing from a neck-level distillation loss
    assert all(p.grad is None for p in model.student.bbox_head.parameters())


def test_export_round_trip(tmp_path):
    cfg = load_distill_cfg('configs/pcka/retina_r101_r50.py')
    model = MODELS.build(cfg.model)
    model.eval()
    data = model.data_preprocessor(demo_batch(size=(128, 160)), False)
    with torch.no_grad():
        expected = model(**data, mode='predict')
    ckpt = tmp_path / 'epoch_1.pth'
    torch.save(dict(meta=dict(epoch=1), state_dict=model.state_dict()), ckpt)
    out = export_student(str(ckpt), str(tmp_path / 'student.pth'))

    from mmengine.runner import load_checkpoint
    plain = build_detector(cfg.model.student)  # plain mmdet RetinaNet
    load_checkpoint(plain, out, map_location='cpu', strict=True)
    plain.eval()
    with torch.no_grad():
        got = plain.predict(data['inputs'], data['data_samples'])
    for a, b in zip(expected, got):
        torch.testing.assert_close(a.pred_instances.bboxes,
                                   b.pred_instances.bboxes)
        torch.testing.assert_close(a.pred_instances.scores,
                                   b.pred_instances.scores)
        assert torch.equal(a.pred_instances.labels, b.pred_instances.labels)
    saved = torch.load(out, weights_only=False)
    assert set(saved) == {'meta', 'state_dict'}
    assert not any(k.startswith(('student.', 'teacher.'))
                   for k in saved['state_dict'])


def test_export_rejects_plain_checkpoint(tmp_path):
    path = tmp_path / 'plain.pth'
    torch.save(dict(state_dict={'backbone.conv1.weight': torch.zeros(1)}),
               path)
    with pytest.raises(ValueError, match='no "student." weights'):
        export_student(str(path), str(tmp_path / 'out.pth'))
    assert not (tmp_path / 'out.pth').exists()


def test_student_initialised_as_when_trained_alone():
    from mmengine.runner import set_random_seed
    student_cfg = dict(cfg_path='pcka_det::toy/retinanet_thin-r18_toy.py')
    set_random_seed(3)
    alone = build_detector(student_cfg)
    alone.init_weights()
    set_random_seed(3)
    model = MODELS.build(dict(
        type='FeatureDistiller', student=student_cfg,
        teacher=dict(cfg_path='pcka_det::toy/retinanet_r18_toy.py'),
        allow_random_teacher=True,
        distill_losses=dict(p3=dict(index=0, loss=dict(
            type='PatchCKALoss', patch_size=4)))))
    model.init_weights()
    a, b = alone.state_dict(), model.student.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_distiller_backward_equals_reference(monkeypatch):
    """The distiller's PCKA loss and gradients (one path on every device,
    the one GPUs run) equal those of the per-channel reference loss,
    through the whole student."""
    from conftest import TOY_DISTILL
    from pcka_det.testing.reference import patch_cka_reference
    cfg = load_distill_cfg(TOY_DISTILL)
    for spec in cfg.model.distill_losses.values():
        spec.loss.inter_weight = 2.0  # both terms
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    data = model.data_preprocessor(
        demo_batch(batch_size=2, size=(128, 160), num_classes=6), True)
    neck = list(model.student.neck.parameters())

    def pcka_grads():
        losses = model(**data, mode='loss')
        total = sum(v for k, v in losses.items() if k.startswith('loss_pcka'))
        # P7's conv is not distilled: no gradient
        grads = torch.autograd.grad(total, neck, allow_unused=True)
        return total, [g for g in grads if g is not None]

    ours, grads = pcka_grads()
    for loss in model.distill_losses.values():
        def reference(s, t, loss=loss):
            intra, inter = patch_cka_reference(s.double(), t.double(),
                                               loss.patch_size)
            return loss.combine(intra, inter).float()
        monkeypatch.setattr(loss, 'forward', reference)
    expected, expected_grads = pcka_grads()
    assert expected > 0.1
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=0)
    for g, e in zip(grads, expected_grads):
        # fp32 against a float64 reference: tolerance relative to the tensor
        torch.testing.assert_close(g, e, rtol=1e-4,
                                   atol=1e-5 * float(e.abs().max()))
    assert sum(g.abs().sum() for g in grads) > 0


def test_yolox_mode_switch_reaches_the_student():
    """mmdet's YOLOXModeSwitchHook sets ``model.detector.bbox_head.use_l1``
    (or ``model.bbox_head``) at its switch epoch: on a distiller it must
    reach the student's head (was: AttributeError at epoch 285 of 300)."""
    from types import SimpleNamespace

    from conftest import TOY_DISTILL, load_distill_cfg
    from mmdet.engine.hooks import YOLOXModeSwitchHook
    from mmdet.registry import MODELS
    model = MODELS.build(load_distill_cfg(TOY_DISTILL).model)
    skipped = []
    runner = SimpleNamespace(
        epoch=284, max_epochs=300, model=model,
        logger=SimpleNamespace(info=lambda msg: None),
        train_dataloader=SimpleNamespace(
            persistent_workers=False, dataset=SimpleNamespace(
                update_skip_type_keys=skipped.append)))
    YOLOXModeSwitchHook(num_last_epochs=15).before_train_epoch(runner)
    assert model.student.bbox_head.use_l1 is True
    assert skipped == [('Mosaic', 'RandomAffine', 'MixUp')]
    assert 'detector' not in dict(model.named_children())  # no new module
