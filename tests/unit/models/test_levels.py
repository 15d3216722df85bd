"""The level API: ``distill_losses`` parsed once into ``DistillLevel``s, and
``FeatureDistiller.record`` as the one place student and teacher features
are paired (per-side indices, modules recorded per call)."""
import pytest
import torch
from conftest import demo_batch

from mmdet.registry import MODELS
from pcka_det.models import get_module, loss_key, parse_levels

STUDENT = dict(cfg_path='pcka_det::toy/retinanet_thin-r18_toy.py')
TEACHER = dict(cfg_path='pcka_det::toy/retinanet_r18_toy.py')
PCKA = dict(type='PatchCKALoss', patch_size=2)
KD = dict(type='CrossKDLoss')


def distiller(**kwargs):
    cfg = dict(type='FeatureDistiller', student=STUDENT, teacher=TEACHER,
               allow_random_teacher=True,
               distill_losses=dict(p3=dict(index=0, loss=PCKA)))
    cfg.update(kwargs)
    torch.manual_seed(0)
    return MODELS.build(cfg)


def test_log_key_rule():
    assert loss_key('pcka_p3') == 'loss_pcka_p3'
    assert loss_key('loss_fm') == 'loss_fm'  # not 'loss_loss_fm'


def test_parse_head_level():
    feature, head = parse_levels(
        dict(p3=dict(index=0, loss=PCKA), kd=dict(head_conv=0, loss=KD)),
        recorders=['neck'])
    assert not feature.is_head and feature.head_conv is None
    assert head.is_head and head.head_conv == 0
    assert (head.recorder, head.student_index, head.teacher_index,
            head.connector, head.resize) == (None, ) * 5
    # its log keys need the heads' FPN levels: the distiller names them
    assert head.log_keys == ()


def test_parse_levels_reads_every_field():
    levels = parse_levels(
        dict(a=dict(recorder='fpn', index=2, loss=PCKA, resize='bilinear',
                    connector=dict(type='ConvConnector', in_channels=1,
                                   out_channels=2)),
             b=dict(recorder='fpn', index=dict(student=1, teacher=3),
                    loss=PCKA)),
        recorders=['fpn'])
    a, b = levels
    assert (a.name, a.recorder, a.student_index, a.teacher_index,
            a.resize) == ('a', 'fpn', 2, 2, 'bilinear')
    assert a.connector['out_channels'] == 2 and a.loss['patch_size'] == 2
    assert (b.student_index, b.teacher_index) == (1, 3)
    assert b.index('student') == 1 and b.index('teacher') == 3
    assert b.log_keys == ('loss_b', )


@pytest.mark.parametrize('losses, match', [
    ({}, 'distill_losses is empty'),
    (dict(a=dict(index=dict(student=1), loss=PCKA)),
     r'dict\(student=..., teacher=...\)'),
    (dict(a=dict(index=dict(student=1, teacher='2'), loss=PCKA)),
     "'2' on the teacher side"),
    (dict(a=dict(index=True, loss=PCKA)), 'True'),
    (dict(a=dict(recorder='nope', loss=PCKA)), 'recorder "nope"'),
    (dict(a=dict(loss=PCKA), A=dict(loss=PCKA)), 'differ only in case'),
    (dict(a=dict(loss=PCKA, weight=2)), r"unknown key\(s\) \['weight'\]"),
    (dict(a=PCKA), 'is a loss config'),
    (dict(a=dict(loss=PCKA, resize='cubic')), 'resize'),
    (dict(h=dict(head_conv=1, index=0, loss=KD)),
     r"distill_losses.h sets head_conv, so it pairs the dense heads "
     r"\(CrossKD\) and takes no \['index'\]"),
    (dict(h=dict(head_conv=1, recorder='neck', loss=KD)),
     r"takes no \['recorder'\]"),
    (dict(h=dict(head_conv=1, loss=KD), g=dict(head_conv=2, loss=KD)),
     r"\['h', 'g'\] all set head_conv; one head level"),
    (dict(h=dict(head_conv=-1, loss=KD)),
     'distill_losses.h.head_conv = -1: must be >= 0'),
])
def test_parse_levels_refuses(losses, match):
    with pytest.raises(ValueError, match=match):
        parse_levels(losses, recorders=['neck'])


def _outputs(model, data):
    """What the recorded modules return, seen by hooks of our own (not the
    distiller's recorders), in call order."""
    seen = {}
    handles = []
    for side in ('student', 'teacher'):
        for name, rec in getattr(model, f'{side}_recorders').items():
            module = get_module(getattr(model, side), rec.source)
            handles.append(module.register_forward_hook(
                lambda m, i, out, key=(side, name):
                seen.setdefault(key, []).append(out)))
    return seen, handles


def test_record_pairs_per_side_indices():
    # student P3 with teacher P4 (resized): a pair at other output indices
    model = distiller(distill_losses=dict(
        x=dict(index=dict(student=0, teacher=1), resize='bilinear',
               loss=PCKA)))
    data = model.data_preprocessor(demo_batch(num_classes=6), True)
    seen, handles = _outputs(model, data)
    try:
        _, pairs = model.record(data['inputs'], data['data_samples'])
    finally:
        for h in handles:
            h.remove()
    s, t = pairs['x']
    torch.testing.assert_close(s, seen[('student', 'neck')][0][0])
    torch.testing.assert_close(t, seen[('teacher', 'neck')][0][1])
    assert s.shape[-1] == 2 * t.shape[-1]  # P3 is twice P4's size
    losses = model(**data, mode='loss')  # and the step trains it
    assert torch.isfinite(losses['loss_x']) and losses['loss_x'] > 0


def test_record_per_call_picks_the_call():
    # RetinaNet's head conv runs once per FPN level: per_call keeps each
    head = 'bbox_head.cls_convs.0'
    model = distiller(
        recorders=dict(neck='neck', head=dict(student=head, teacher=head,
                                              per_call=True)),
        distill_losses={
            f'head{k}': dict(recorder='head', index=k, loss=PCKA,
                             connector=dict(type='ConvConnector',
                                            in_channels=128,
                                            out_channels=128))
            for k in (0, 1)})
    data = model.data_preprocessor(demo_batch(num_classes=6), True)
    seen, handles = _outputs(model, data)
    try:
        _, pairs = model.record(
            data['inputs'], data['data_samples'],
            student_forward=lambda: model.student.loss(
                data['inputs'], data['data_samples']))
    finally:
        for h in handles:
            h.remove()
    for k in (0, 1):
        s, t = pairs[f'head{k}']
        torch.testing.assert_close(s, seen[('student', 'head')][k])
        torch.testing.assert_close(t, seen[('teacher', 'head')][k])
    assert pairs['head0'][0].shape[-1] == 2 * pairs['head1'][0].shape[-1]
    # and a training step records and trains them (the teacher's heads run)
    losses = model(**data, mode='loss')
    for k in (0, 1):
        assert torch.isfinite(losses[f'loss_head{k}'])


def test_record_names_the_level_of_a_bad_index():
    model = distiller(distill_losses=dict(
        x=dict(index=dict(student=0, teacher=9), loss=PCKA)))
    data = model.data_preprocessor(demo_batch(num_classes=6), True)
    with pytest.raises(IndexError, match=r'distill_losses.x: Level index 9'):
        model.record(data['inputs'])


def test_recorders_spec_refused_with_the_forms():
    with pytest.raises(ValueError, match='model.recorders.neck.teacher is '
                       'required'):
        distiller(recorders=dict(neck=dict(student='neck')))
    with pytest.raises(ValueError, match=r"model.recorders.neck: Recorder "
                       r"has no option \['per_level'\]"):
        distiller(recorders=dict(neck=dict(student='neck', teacher='neck',
                                           per_level=True)))
    with pytest.raises(ValueError, match="model.recorders.neck = 3: must be "
                       "a module path or dict"):
        distiller(recorders=dict(neck=3))
