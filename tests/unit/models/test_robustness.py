"""Bad input fails early with an error that names what to fix."""
import pytest
import torch
from conftest import demo_batch
from mmengine.optim import OptimWrapper

from mmdet.registry import MODELS
from pcka_det.models import build_detector

STUDENT = dict(cfg_path='pcka_det::toy/retinanet_thin-r18_toy.py')
TEACHER = dict(cfg_path='pcka_det::toy/retinanet_r18_toy.py')


def distiller(**kwargs):
    cfg = dict(
        type='FeatureDistiller',
        student=STUDENT,
        teacher=TEACHER,
        allow_random_teacher=True,
        distill_losses=dict(
            pcka_p3=dict(index=0, loss=dict(type='PatchCKALoss',
                                            patch_size=4))))
    cfg.update(kwargs)
    return MODELS.build(cfg)


@pytest.fixture(scope='module')
def teacher_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('ckpt') / 'teacher.pth'
    teacher = build_detector(TEACHER)
    torch.save(dict(meta={}, state_dict=teacher.state_dict()), path)
    return path, teacher.state_dict()


def test_teacher_checkpoint_is_loaded_exactly(teacher_file):
    path, state = teacher_file
    model = distiller(teacher_ckpt=str(path))
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, state[k])


def test_missing_teacher_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        distiller(teacher_ckpt=str(tmp_path / 'nope.pth'))


def test_corrupt_teacher_checkpoint(tmp_path):
    path = tmp_path / 'broken.pth'
    path.write_bytes(b'not a checkpoint at all')
    with pytest.raises(RuntimeError, match='could not be read'):
        distiller(teacher_ckpt=str(path))


def test_teacher_checkpoint_of_another_architecture(tmp_path):
    path = tmp_path / 'r18.pth'
    torch.save(dict(state_dict=build_detector(STUDENT).state_dict()), path)
    with pytest.raises(RuntimeError) as e:
        distiller(teacher_ckpt=str(path))
    msg = str(e.value)
    assert 'does not fit the teacher architecture' in msg
    assert 'missing keys' in msg and 'backbone.layer' in msg


def test_recorder_on_missing_module_lists_valid_names():
    with pytest.raises(ValueError) as e:
        distiller(recorders=dict(neck='nekc'))
    assert 'nekc' in str(e.value) and "'neck'" in str(e.value)
    assert "'backbone'" in str(e.value)


def test_loss_on_unknown_recorder():
    with pytest.raises(ValueError, match='recorder "fpn"'):
        distiller(distill_losses=dict(
            x=dict(recorder='fpn', loss=dict(type='PatchCKALoss'))))


def test_level_index_out_of_range():
    model = distiller(distill_losses=dict(
        p9=dict(index=7, loss=dict(type='PatchCKALoss'))))
    data = model.data_preprocessor(demo_batch(num_classes=6), True)
    with pytest.raises(IndexError, match=r'produces 5 levels \(0..4\)'):
        model(**data, mode='loss')


def test_channel_mismatch_without_connector_suggests_one():
    # a 64-wide student FPN against the 128-wide teacher
    model = distiller(student=dict(STUDENT, neck=dict(out_channels=64),
                                   bbox_head=dict(in_channels=64)))
    data = model.data_preprocessor(demo_batch(num_classes=6), True)
    with pytest.raises(ValueError, match='connector'):
        model(**data, mode='loss')


def narrow_student_with_connector():
    """A 64-wide student FPN, a connector to the 128-wide teacher on P3."""
    return distiller(
        student=dict(STUDENT, neck=dict(out_channels=64),
                     bbox_head=dict(in_channels=64)),
        distill_losses=dict(pcka_p3=dict(
            index=0,
            connector=dict(type='ConvConnector', in_channels=64,
                           out_channels=128),
            loss=dict(type='PatchCKALoss', patch_size=4))))


def test_connector_maps_student_width():
    model = narrow_student_with_connector()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    conv = model.connectors['pcka_p3'].conv.weight.clone()
    log = model.train_step(demo_batch(num_classes=6), optim)
    assert torch.isfinite(log['loss_pcka_p3'])
    assert not torch.equal(conv, model.connectors['pcka_p3'].conv.weight)


@pytest.mark.parametrize('policy', ['skip', 'raise'])
def test_nonfinite_distillation_loss(policy):
    model = distiller(nonfinite=policy)
    model.distill_losses['pcka_p3'].forward = \
        lambda s, t: (s.sum() + t.sum()) * float('nan')
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    before = {k: v.clone() for k, v in model.student.state_dict().items()}
    if policy == 'raise':
        with pytest.raises(FloatingPointError, match='pcka_p3'):
            model.train_step(demo_batch(num_classes=6), optim)
        return
    log = model.train_step(demo_batch(num_classes=6), optim)
    assert log['loss_pcka_p3'] == 0
    assert log['distill_nonfinite'] == 1  # the skip shows in the log
    after = model.student.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values()
               if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_bad_options():
    with pytest.raises(ValueError, match='nonfinite'):
        distiller(nonfinite='ignore')
    with pytest.raises(ValueError, match='predict_with'):
        distiller(predict_with='both')
    with pytest.raises(ValueError, match='a loss spec must be dict'):
        distiller(distill_losses=dict(x=dict(type='PatchCKALoss')))
    with pytest.raises(FileNotFoundError, match='nothere.py'):
        distiller(teacher=dict(cfg_path='pcka_det::toy/nothere.py'))


def test_predict_with_teacher_option():
    model = distiller(predict_with='teacher').eval()
    data = model.data_preprocessor(demo_batch(num_classes=6), False)
    got = model(**data, mode='predict')
    with torch.no_grad():
        ref = model.teacher.predict(data['inputs'], data['data_samples'])
    torch.testing.assert_close(got[0].pred_instances.scores,
                               ref[0].pred_instances.scores)


def test_recorder_on_backbone_stage_with_connector():
    # the quarter-width R18 layer3 has 64 channels, the R18 teacher's 256
    model = distiller(
        recorders=dict(neck='neck', c4='backbone.layer3'),
        distill_losses=dict(
            pcka_c4=dict(
                recorder='c4',
                connector=dict(type='ConvConnector', in_channels=64,
                               out_channels=256),
                loss=dict(type='PatchCKALoss', patch_size=2))))
    data = model.data_preprocessor(demo_batch(num_classes=6), True)
    losses = model(**data, mode='loss')
    losses['loss_pcka_c4'].backward()
    assert model.student.backbone.layer3[0].conv1.weight.grad.abs().sum() > 0
    assert model.student.backbone.layer4[0].conv1.weight.grad is None


def test_skipped_loss_sends_no_nan_gradient_through_its_connector():
    model = narrow_student_with_connector()
    # finite inputs, NaN value and NaN gradient: x * (0 * inf)
    model.distill_losses['pcka_p3'].forward = \
        lambda s, t: (s * t.sum() * 0 * float('inf')).sum()
    data = model.data_preprocessor(demo_batch(num_classes=6), True)
    losses = model(**data, mode='loss')
    assert losses['loss_pcka_p3'] == 0 and losses['distill_nonfinite'] == 1
    (losses['loss_pcka_p3'] + sum(losses['loss_cls'])).backward()
    conv = model.connectors['pcka_p3'].conv.weight.grad
    assert conv is not None and torch.equal(conv, torch.zeros_like(conv))
    grads = [p.grad for p in model.student.parameters()
             if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)  # loss_cls still flows


def test_skip_policy_has_no_host_device_sync():
    """On meta tensors any data-dependent branch (``if``, ``.item()``) fails:
    the 'skip' guard has none; the 'raise' guard, which must sync, does."""
    s = torch.randn(2, 128, 8, 8, device='meta', requires_grad=True)
    t = torch.randn(2, 128, 8, 8, device='meta')
    for policy in ('skip', 'raise'):
        model = distiller(nonfinite=policy)
        # any loss will do: what is checked is the guard around it
        model.distill_losses['pcka_p3'].forward = \
            lambda s, t: ((s - t)**2).mean()
        if policy == 'raise':
            with pytest.raises((RuntimeError, NotImplementedError)):
                model.distill_loss('pcka_p3', s, t)
            continue
        value, flag = model.distill_loss('pcka_p3', s, t)
        assert value.device.type == 'meta' and flag.device.type == 'meta'


def test_recorder_refuses_a_module_that_runs_twice_per_forward():
    # RetinaNet's head runs its convs once per FPN level
    model = distiller(recorders=dict(neck='neck',
                                     head='bbox_head.cls_convs.0'))
    data = model.data_preprocessor(demo_batch(num_classes=6), True)
    with pytest.raises(RuntimeError, match='ran more than once'):
        with model.recording():
            model.student(**data, mode='loss')


def test_recorded_features_do_not_outlive_the_loss():
    model = distiller()
    data = model.data_preprocessor(demo_batch(num_classes=6), True)
    model(**data, mode='loss')
    recorders = [*model.student_recorders.values(),
                 *model.teacher_recorders.values()]
    assert all(r.data is None for r in recorders)
    model.eval()
    with torch.no_grad():
        model(**model.data_preprocessor(demo_batch(num_classes=6), False),
              mode='predict')
    assert all(r.data is None for r in recorders)  # validation keeps none
