"""Training controls: distillation loss schedules, student initialisation,
alignment in the log, a cheaper teacher."""
import math

import pytest
import torch
from conftest import TOY_DISTILL, demo_batch, load_distill_cfg, toy_options
from mmengine.hooks import Hook
from mmengine.registry import RUNNERS

from mmdet.registry import MODELS
from pcka_det.engine import DistillLossScheduleHook, schedule_factor
from pcka_det.testing.reference import patch_cka_reference
from pcka_det.models import build_detector
from pcka_det.cli import prepare_cfg


def _distiller(**model):
    cfg = load_distill_cfg(TOY_DISTILL)
    cfg.model.update(model)
    torch.manual_seed(0)
    return MODELS.build(cfg.model).train()


def _batch(model, size=(128, 128)):
    return model.data_preprocessor(
        demo_batch(batch_size=2, size=size, num_classes=6), True)


def test_schedule_factor_values():
    # cosine from 1 to 0 over 11 steps: the middle step is exactly halfway
    assert schedule_factor(0, 0, 11, decay='cosine') == 1.0
    assert schedule_factor(5, 0, 11, decay='cosine') == pytest.approx(0.5)
    assert schedule_factor(10, 0, 11, decay='cosine') == pytest.approx(0.0)
    assert schedule_factor(5, 0, 11, decay='linear') == pytest.approx(0.5)
    assert schedule_factor(10, 0, 11, decay='linear',
                           min_factor=0.2) == pytest.approx(0.2)
    # linear warm-up over 4 steps: 1/4, 2/4, 3/4, 1, then 1
    assert [schedule_factor(i, 0, 100, warmup_iters=4)
            for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    # warm-up and cosine multiply
    assert schedule_factor(1, 0, 11, warmup_iters=4, decay='cosine') == \
        pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)) / 2)
    assert schedule_factor(3, 1, 10, stop_epoch=1) == 0.0
    assert schedule_factor(3, 0, 10, stop_epoch=1) == 1.0
    assert schedule_factor(7, 0, 10, stop_iter=7) == 0.0
    with pytest.raises(ValueError, match='decay'):
        DistillLossScheduleHook(decay='step')


def test_scaled_losses_and_logged_factor():
    model = _distiller()
    data = _batch(model)
    full = model(**data, mode='loss')
    assert 'distill_scale' not in full  # no schedule, nothing extra logged
    model.distill_scale = 0.25
    scaled = model(**data, mode='loss')
    assert scaled['distill_scale'] == 0.25
    for k in [k for k in full if k.startswith('loss_pcka')]:
        torch.testing.assert_close(scaled[k], 0.25 * full[k])


def test_stopped_distillation_skips_the_teacher():
    model = _distiller()
    calls = []
    model.teacher.backbone.register_forward_hook(
        lambda *args: calls.append(1))
    data = _batch(model)
    model(**data, mode='loss')
    assert calls == [1]
    model.distill_scale = 0.0
    losses = model(**data, mode='loss')
    assert calls == [1]  # not run again
    assert not any(k.startswith('loss_pcka') for k in losses)
    assert losses['distill_scale'] == 0 and losses['loss_distill_off'] == 0


class _Capture(Hook):
    """Keeps the student's state, the distill factor and what the step
    logs (its ``log_vars``) at every step."""

    def __init__(self):
        self.first_state = None
        self.scales = []
        self.logged = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = runner.model
        if self.first_state is None:
            self.first_state = {k: v.clone() for k, v in
                                model.student.state_dict().items()}
        self.scales.append(model.distill_scale)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.logged.append({k: float(v) for k, v in outputs.items()})


@pytest.mark.slow
def test_schedule_and_student_init_in_a_real_run(tmp_path, tiny_coco,
                                                 toy_teacher_ckpt):
    """Two epochs with warm-up and a stop after epoch 1, the student started
    from a checkpoint and its head inherited from the teacher: the weights
    are there before the first step, the factor follows the runner's step,
    and the log shows it."""
    torch.manual_seed(21)
    student = build_detector(
        dict(cfg_path='pcka_det::toy/retinanet_thin-r18_toy.py'))
    student.init_weights()
    ckpt = tmp_path / 'student_r18_4.pth'
    torch.save(dict(meta={}, state_dict=student.state_dict()), ckpt)
    opts = toy_options(tiny_coco, toy_teacher_ckpt, **{
        'train_cfg.max_epochs': 2,
        'train_dataloader.batch_size': 4,  # 2 steps an epoch
        'model.student_ckpt': str(ckpt),
        'model.inherit': ['bbox_head'],
    })
    cfg = prepare_cfg(TOY_DISTILL, opts, str(tmp_path / 'work'))
    cfg.custom_hooks = [dict(type='DistillLossScheduleHook', warmup_iters=2,
                             stop_epoch=1)]
    runner = RUNNERS.build(cfg)
    capture = _Capture()
    runner.register_hook(capture, priority='LOWEST')
    runner.train()

    first = capture.first_state
    expected = student.state_dict()
    teacher_head = runner.model.teacher.bbox_head.state_dict()
    for k, v in first.items():
        if k.startswith('bbox_head.'):
            assert torch.equal(v, teacher_head[k[len('bbox_head.'):]]), k
        else:
            assert torch.equal(v, expected[k]), k
    # warm-up 1/2, 1 in epoch 1; stopped in epoch 2
    assert capture.scales == [0.5, 1.0, 0.0, 0.0]
    logged = capture.logged
    assert [r['distill_scale'] for r in logged] == [0.5, 1.0, 0.0, 0.0]
    assert [('loss_pcka_p3' in r) for r in logged] == [True, True, False,
                                                       False]
    assert [('loss_distill_off' in r) for r in logged] == [False, False,
                                                           True, True]


def test_schedule_continues_from_the_restored_step():
    """The factor is a function of the runner's step and epoch, which
    ``--resume`` restores (tests/e2e/test_crash_safety.py)."""

    class Runner:
        def __init__(self, it, epoch):
            self.iter, self.epoch, self.max_iters = it, epoch, 20
            self.model = _distiller()

    hook = DistillLossScheduleHook(warmup_iters=10, decay='linear')
    runner = Runner(it=6, epoch=1)
    hook.before_train_iter(runner, 0)
    assert runner.model.distill_scale == pytest.approx(0.7 * (1 - 6 / 19))


def test_inherit_refuses_modules_that_differ():
    # the quarter-width student's FPN takes other input widths
    model = _distiller(inherit=['neck'])
    with pytest.raises(ValueError, match='"neck" is not the teacher'):
        model.init_weights()


def test_alignment_is_logged_every_n_steps():
    model = _distiller(log_alignment_interval=2)
    data = _batch(model)
    seen = {}
    model.student.neck.register_forward_hook(
        lambda m, i, out: seen.update(s=out[0].detach()))
    model.teacher.neck.register_forward_hook(
        lambda m, i, out: seen.update(t=out[0].detach()))
    first = model(**data, mode='loss')
    assert not any(k.startswith('distill/') for k in first)
    second = model(**data, mode='loss')
    assert {f'distill/pcka_p{i}_{t}' for i in range(3, 7)
            for t in ('intra', 'inter')} <= set(second)
    intra, inter = patch_cka_reference(seen['s'].double(),
                                       seen['t'].double(), 4)
    torch.testing.assert_close(second['distill/pcka_p3_intra'].double(),
                               intra.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(second['distill/pcka_p3_inter'].double(),
                               inter.mean(), rtol=1e-5, atol=1e-6)
    assert not second['distill/pcka_p3_intra'].requires_grad


# PCKA on the toy pair's P3-P6 (two 256x256 images, random weights) moved by
# at most 5.3e-4 relative with the teacher in bf16, 6.2e-5 in fp16 (measured)
TEACHER_DTYPE_RTOL = {'bf16': 2e-3, 'fp16': 3e-4}


@pytest.mark.parametrize('dtype', ['bf16', 'fp16'])
def test_half_precision_teacher(dtype):
    fp32 = _distiller(teacher_channels_last=True)
    half = _distiller(teacher_dtype=dtype)
    half.teacher.load_state_dict(fp32.teacher.state_dict())
    # the normalisation constants are not rounded with the weights
    assert half.teacher_inputs is None
    assert all(p.dtype == {'bf16': torch.bfloat16, 'fp16': torch.float16}[
        dtype] for p in half.teacher.parameters())
    conv = fp32.teacher.backbone.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    data = _batch(fp32, size=(256, 256))
    a = fp32(**data, mode='loss')
    b = half(**data, mode='loss')
    for k in [k for k in a if k.startswith('loss_pcka')]:
        assert b[k].dtype == torch.float32
        torch.testing.assert_close(b[k], a[k], atol=0,
                                   rtol=TEACHER_DTYPE_RTOL[dtype])
    with pytest.raises(ValueError, match='teacher_dtype'):
        _distiller(teacher_dtype='int8')
