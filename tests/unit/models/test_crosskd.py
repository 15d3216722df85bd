"""Head levels (CrossKD on the dense heads): the terms against a float64
re-implementation written here from the method's steps
(``../shared/CROSSKD_SPEC.md``), where the gradient goes, the teacher's
head run only when needed and in fp32, the refusals, and the training
controls on the head terms.

Small shapes: the toy RetinaNet pair (2 stacked convs, 6 classes) and
small GFL / ATSS pairs (R18, 32-wide heads, 80 classes), two images of
different sizes, so that the smaller one's padded anchors are ignored
(label weight 0) besides RetinaNet's IoU ignore band.
"""
import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import demo_batch

from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from pcka_det.models.builder import load_model_cfg

F32_EPS = torch.finfo(torch.float32).eps


@functools.lru_cache(maxsize=None)
def _resolved(path: str, small: bool) -> dict:
    # resolving an mmdet:: config reads mmdet's metafiles (about a second):
    # once per module, then inline model dicts
    spec = dict(cfg_path=path)
    if small:  # R18, 32-wide neck and head, 2 stacked convs, no downloads
        spec.update(backbone=dict(depth=18, init_cfg=None, frozen_stages=-1),
                    neck=dict(in_channels=[64, 128, 256, 512],
                              out_channels=32),
                    bbox_head=dict(in_channels=32, feat_channels=32,
                                   stacked_convs=2))
    return load_model_cfg(spec).to_dict()


def model_cfg(path: str, small: bool = False, **bbox_head) -> dict:
    """An inline model config, its ``bbox_head`` updated (nested dicts
    merged)."""
    cfg = copy.deepcopy(_resolved(path, small))

    def merge(into, new):
        for k, v in new.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                merge(into[k], v)
            else:
                into[k] = v

    if bbox_head:
        merge(cfg['bbox_head'], bbox_head)
    return cfg


STUDENT = 'pcka_det::toy/retinanet_thin-r18_toy.py'
TEACHER = 'pcka_det::toy/retinanet_r18_toy.py'
PAIRS = {  # family -> student, teacher, small, loss, k, classes
    'retinanet': (STUDENT, TEACHER, False, 'CrossKDLoss', 1, 6),
    'gfl': ('mmdet::gfl/gfl_r50_fpn_1x_coco.py', ) * 2 + (
        True, 'CrossKDGFLLoss', 2, 80),
    'atss': ('mmdet::atss/atss_r50_fpn_1x_coco.py', ) * 2 + (
        True, 'CrossKDLoss', 0, 80),
}


def distiller(student=None, teacher=None, loss='CrossKDLoss', head_conv=1,
              seed=0, **kwargs):
    cfg = dict(type='FeatureDistiller',
               student=student or model_cfg(STUDENT),
               teacher=teacher or model_cfg(TEACHER),
               allow_random_teacher=True,
               distill_losses=dict(crosskd=dict(
                   head_conv=head_conv, loss=dict(type=loss))))
    cfg.update(kwargs)
    torch.manual_seed(seed)
    return MODELS.build(cfg).train()


def pair(family):
    """``distiller`` arguments and the class count of a family's pair."""
    student, teacher, small, loss, k, classes = PAIRS[family]
    return dict(student=model_cfg(student, small),
                teacher=model_cfg(teacher, small), loss=loss,
                head_conv=k), classes


def vary_scales(model):
    """GFL/ATSS: the teacher's per-level box ``Scale`` away from its initial
    1, so that one applied wrongly (or not) shows."""
    for level, scale in enumerate(getattr(model.teacher.bbox_head, 'scales',
                                          [])):
        scale.scale.data.fill_(0.5 + 0.25 * level)


def uneven_batch(model, num_classes):
    """Two images of different sizes: the smaller one's anchors beyond its
    own padded shape get label weight 0."""
    torch.manual_seed(0)
    batch = demo_mm_inputs(batch_size=2,
                           image_shapes=[(3, 96, 128), (3, 64, 96)],
                           num_items=[3, 2], num_classes=num_classes)
    return model.data_preprocessor(batch, True)


def head_keys(losses):
    return sorted(k for k in losses if k.startswith('loss_crosskd'))


# ------------------------------------------------- the float64 reference


def _tower(convs, x, upto, k):
    """The spec's tower: each conv then its norm, the held feature taken
    after conv k's norm, before its ReLU (k = 0: the input itself)."""
    held = x if k == 0 else None
    for j, m in enumerate(convs[:upto]):
        x = m.norm(m.conv(x))
        if j == k - 1:
            held = x
        x = x.relu()
    return x, held


def _align(s, t):
    """Step 3: per channel over (N, H, W), unbiased std, eps 1e-6 on the
    student's std."""
    n = s.numel() // s.shape[1]
    dims = (0, 2, 3)
    ms, mt = s.mean(dims, keepdim=True), t.mean(dims, keepdim=True)
    ss = ((s - ms)**2).sum(dims, keepdim=True).div(n - 1).sqrt()
    st = ((t - mt)**2).sum(dims, keepdim=True).div(n - 1).sqrt()
    return (s - ms) / (ss + 1e-6) * st + mt


def _flat(x, c):
    return x.permute(0, 2, 3, 1).reshape(-1, c)


def _giou(a, b, eps=1e-6):
    """1 - GIoU of aligned x1y1x2y2 boxes (GIoULoss's eps)."""
    lt = torch.max(a[:, :2], b[:, :2])
    rb = torch.min(a[:, 2:], b[:, 2:])
    overlap = (rb - lt).clamp(min=0).prod(1)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    union = (area_a + area_b - overlap).clamp(min=eps)
    enclose = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])
               ).clamp(min=0).prod(1).clamp(min=eps)
    return 1 - (overlap / union - (enclose - union) / enclose)


def _kdqfl(p, tl, beta=1.0):
    t = tl.sigmoid()
    bce = -(t * F.logsigmoid(p) + (1 - t) * F.logsigmoid(-p))
    return bce * (p.sigmoid() - t).abs()**beta


def reference_terms(student, teacher, fp32_head, inputs, samples, family,
                    k):
    """Every head term, in float64, from the spec's steps: log key ->
    value. ``student``/``teacher`` are float64 copies; ``fp32_head`` (the
    distiller's student head) gives the target assignment (anchors, label
    weights, positives), which the spec takes from the detection head."""
    x = inputs.double()
    fs, ft = student.extract_feat(x), teacher.extract_feat(x)
    hs, ht = student.bbox_head, teacher.bbox_head
    cls_name, reg_name = dict(retinanet=('retina_cls', 'retina_reg'),
                              gfl=('gfl_cls', 'gfl_reg'),
                              atss=('atss_cls', 'atss_reg'))[family]
    num_convs = len(ht.cls_convs)
    cross_cls, cross_box, t_cls, t_box = [], [], [], []
    for level, (s, t) in enumerate(zip(fs, ft)):
        # teacher: the whole head; student: its towers up to conv k
        tc, tc_held = _tower(ht.cls_convs, t, num_convs, k)
        tr, tr_held = _tower(ht.reg_convs, t, num_convs, k)
        _, sc_held = _tower(hs.cls_convs, s, k, k)
        _, sr_held = _tower(hs.reg_convs, s, k, k)
        scale = ht.scales[level].scale if family != 'retinanet' else 1.0
        t_cls.append(getattr(ht, cls_name)(tc))
        t_box.append(getattr(ht, reg_name)(tr) * scale)
        outs = []
        for held_s, held_t, convs, pred in (
                (sc_held, tc_held, ht.cls_convs, cls_name),
                (sr_held, tr_held, ht.reg_convs, reg_name)):
            y = _align(held_s, held_t)
            if k > 0:
                y = y.relu()  # step 4
            for m in convs[k:]:  # step 5: the teacher's tail
                y = m.norm(m.conv(y)).relu()
            outs.append(getattr(ht, pred)(y))
        cross_cls.append(outs[0])
        cross_box.append(outs[1] * scale)

    # the student's own target assignment (mmdet's, not the spec's part)
    gts = [d.gt_instances for d in samples]
    metas = [d.metainfo for d in samples]
    sizes = [c.shape[-2:] for c in cross_cls]
    anchor_list, valid = fp32_head.get_anchors(sizes, metas,
                                               device=inputs.device)
    if family == 'retinanet':
        _, weights, _, _, avg = fp32_head.get_targets(anchor_list, valid,
                                                      gts, metas)
        # per level, image after image (label weights are (B, A_l))
        anchors = [torch.cat([a[i] for a in anchor_list])
                   for i in range(len(sizes))]
    else:
        anchors, _, weights, _, _, avg = fp32_head.get_targets(
            anchor_list, valid, gts, metas)
        anchors = [a.reshape(-1, 4) for a in anchors]
    weights = [w.reshape(-1).double() for w in weights]
    assert all((w == 0).any() for w in weights[:3]), 'no ignored anchor'
    assert all((w > 0).any() for w in weights), 'every anchor ignored'
    avg = float(avg)

    C = ht.cls_out_channels
    names = [f'p{int(math.log2(s[0]))}' for s in ht.prior_generator.strides]
    terms, box_w, giou, kl = {}, [], [], []
    for level, p in enumerate(names):
        w = weights[level]
        cc, tc = _flat(cross_cls[level], C), _flat(t_cls[level], C)
        terms[f'loss_crosskd_cls_{p}'] = \
            (_kdqfl(cc, tc).sum(1) * w).sum() / (avg + F32_EPS)
        bw = torch.where(w > 0, tc.max(1).values.sigmoid(),
                         torch.zeros_like(w))
        anchor = anchors[level].double()
        if family == 'gfl':
            bins = ht.reg_max + 1
            stride = ht.prior_generator.strides[level][0]
            centre = torch.stack([(anchor[:, 0] + anchor[:, 2]) / 2,
                                  (anchor[:, 1] + anchor[:, 3]) / 2],
                                 1) / stride
            boxes = []
            for box in (cross_box[level], t_box[level]):
                dist = _flat(box, 4 * bins).reshape(-1, bins)
                side = (dist.softmax(1) @ torch.arange(
                    bins, dtype=dist.dtype)).reshape(-1, 4)
                boxes.append((dist, torch.cat([centre - side[:, :2],
                                               centre + side[:, 2:]], 1)))
            (cd, cb), (td, tb) = boxes
            pt = td.softmax(1)
            kl.append((pt * (pt.log() - cd.log_softmax(1))).sum(1))
            giou.append(_giou(cb, tb))
            box_w.append(bw)
        else:
            coder = ht.bbox_coder
            cb = coder.decode(anchor, _flat(cross_box[level], 4))
            tb = coder.decode(anchor, _flat(t_box[level], 4))
            terms[f'loss_crosskd_box_{p}'] = \
                (_giou(cb, tb) * bw).sum() / (avg + F32_EPS)
    if family == 'gfl':
        total = max(float(sum(w.sum() for w in box_w)), 1.0)
        for level, p in enumerate(names):
            ld = (kl[level] * box_w[level].repeat_interleave(4)).sum() / 4
            g = (giou[level] * box_w[level]).sum()
            terms[f'loss_crosskd_box_{p}'] = (3.0 * ld + 2.0 * g) / total
    return terms


@pytest.mark.parametrize('family', sorted(PAIRS))
def test_head_terms_equal_the_float64_reference(family):
    args, classes = pair(family)
    k = args['head_conv']
    model = distiller(**args)
    vary_scales(model)
    data = uneven_batch(model, classes)
    student64 = copy.deepcopy(model.student).double()
    teacher64 = copy.deepcopy(model.teacher).double()
    # our forward of the student's head is mmdet's: same detection losses
    feats = model.student.extract_feat(data['inputs'])
    ours = model.cross_head.run(model.student.bbox_head, feats)
    for a, b in zip(ours.outs, model.student.bbox_head(feats)):
        for x, y in zip(a, b):
            assert torch.equal(x, y)

    losses = model(**data, mode='loss')
    expected = reference_terms(student64, teacher64, model.student.bbox_head,
                               data['inputs'], data['data_samples'], family,
                               k)
    assert head_keys(losses) == sorted(expected)
    assert len(expected) == 10  # cls and box on P3-P7
    for key, value in expected.items():
        assert value > 1e-3 or key.endswith('p7'), (key, float(value))
        torch.testing.assert_close(losses[key].double(), value, rtol=2e-4,
                                   atol=1e-7, msg=key)
    # and their gradient at the student's first head convs (the neck's
    # output for k = 0)
    where = [model.student.neck.fpn_convs[0].conv.weight] if k == 0 else [
        model.student.bbox_head.cls_convs[0].conv.weight,
        model.student.bbox_head.reg_convs[0].conv.weight]
    where64 = [student64.neck.fpn_convs[0].conv.weight] if k == 0 else [
        student64.bbox_head.cls_convs[0].conv.weight,
        student64.bbox_head.reg_convs[0].conv.weight]
    got = torch.autograd.grad(sum(losses[k] for k in expected), where)
    want = torch.autograd.grad(sum(expected.values()), where64)
    for g, w in zip(got, want):
        assert w.abs().max() > 0
        torch.testing.assert_close(g.double(), w, rtol=1e-3,
                                   atol=1e-4 * float(w.abs().max()))


# ---------------------------------------------------------- where it acts


def test_head_terms_train_the_first_k_convs_and_below_only():
    model = distiller(head_conv=1)  # toy towers: conv 1 student, 2 teacher
    data = model.data_preprocessor(demo_batch(num_classes=6), True)
    losses = model(**data, mode='loss')
    keys = head_keys(losses)
    assert len(keys) == 10
    model.zero_grad(set_to_none=True)
    sum(losses[k] for k in keys).backward()

    def reached(module):
        return any(p.grad is not None and p.grad.abs().sum() > 0
                   for p in module.parameters())

    head = model.student.bbox_head
    assert reached(head.cls_convs[0]) and reached(head.reg_convs[0])
    for after in (head.cls_convs[1], head.reg_convs[1], head.retina_cls,
                  head.retina_reg):
        assert not reached(after)
    assert reached(model.student.neck) and reached(model.student.backbone)
    teacher = list(model.teacher.parameters())
    assert all(not p.requires_grad and p.grad is None for p in teacher)


def _count_calls(modules):
    calls = []
    for m in modules:
        m.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_teacher_head_runs_only_for_a_head_level():
    feature_only = distiller(distill_losses=dict(p3=dict(
        index=0, loss=dict(type='PatchCKALoss', patch_size=2))))
    head = feature_only.teacher.bbox_head
    calls = _count_calls([head, head.cls_convs[0], head.retina_cls])
    data = feature_only.data_preprocessor(demo_batch(num_classes=6), True)
    feature_only(**data, mode='loss')
    feature_only.preflight((64, 64))
    assert calls == []
    # with a head level it runs, once per FPN level (5)
    model = distiller()
    head = model.teacher.bbox_head
    calls = _count_calls([head.retina_cls])
    model(**data, mode='loss')
    assert len(calls) == 5 * 2  # its own predictions, then the tail's
    # a schedule scales the head terms, and once stopped runs no teacher
    full = model(**data, mode='loss')
    model.distill_scale = 0.25
    scaled = model(**data, mode='loss')
    assert len(head_keys(full)) == 10
    for key in head_keys(full):
        torch.testing.assert_close(scaled[key], 0.25 * full[key])
    calls.clear()
    model.distill_scale = 0.0
    losses = model(**data, mode='loss')
    assert calls == [] and not head_keys(losses)


def test_teacher_tail_runs_in_fp32_with_a_half_teacher():
    model = distiller(teacher_dtype='bf16')
    head = model.teacher.bbox_head
    assert head.retina_cls.weight.dtype == torch.bfloat16
    seen = []
    for m in (head.cls_convs[1], head.retina_cls, head.retina_reg):
        m.register_forward_hook(
            lambda mod, args, out: seen.append((args[0].dtype, out.dtype)))
    data = model.data_preprocessor(demo_batch(num_classes=6), True)
    _, pairs = model.record(data['inputs'], data['data_samples'],
                            detection_loss=True)
    student, teacher = pairs['crosskd']
    assert all(o.dtype == torch.float32 for o in teacher.outs[0])
    seen.clear()
    cls, box, cls_in, box_in = model.cross_head.cross(head, student,
                                                      teacher)
    assert seen and set(seen) == {(torch.float32, torch.float32)}
    assert all(t.dtype == torch.float32 for t in cls + box)
    grads = torch.autograd.grad(sum(c.sum() for c in cls),
                                cls_in[:2])
    assert all(g.dtype == torch.float32 and g.abs().sum() > 0 for g in grads)
    # the teacher itself is left as it was: bf16, frozen
    assert head.retina_cls.weight.dtype == torch.bfloat16
    assert all(not p.requires_grad and p.grad is None
               for p in model.teacher.parameters())


def test_self_distillation_has_nothing_to_teach():
    """Student = teacher (same architecture, weights inherited): the
    cross-head predictions are the teacher's own (up to the 1e-6 of the
    alignment), so every term is at its minimum, 0."""
    for family in PAIRS:
        args, classes = pair(family)
        args['student'] = args['teacher']
        model = distiller(**args, inherit=('backbone', 'neck', 'bbox_head'))
        vary_scales(model)
        model.init_weights()  # the student inherits them
        # the student's BN on its running statistics, as the teacher's
        model.eval()
        data = uneven_batch(model, classes)
        losses = model(**data, mode='loss')
        keys = head_keys(losses)
        assert len(keys) == 10
        for key in keys:
            assert 0 <= losses[key] < 1e-4, (family, key, float(losses[key]))


# ---------------------------------------------------------- the refusals

@pytest.mark.parametrize('overrides, match', [
    (dict(head_conv=3), r'distill_losses.crosskd.head_conv = 3: the '
     r'student\'s head has 2 convs in its cls_convs \(stacked_convs=2\); '
     r'set head_conv to 0..2'),
    (dict(student=dict(bbox_head=dict(feat_channels=64))),
     r'feat_channels 64, the teacher\'s 128'),
    (dict(student=dict(bbox_head=dict(num_classes=5))),
     'num_classes 5, the teacher\'s 6'),
    (dict(student=dict(bbox_head=dict(
        anchor_generator=dict(octave_base_scale=4)))), 'anchors'),
    (dict(student=dict(bbox_head=dict(bbox_coder=dict(
        target_stds=[0.1, 0.1, 0.2, 0.2])))), 'bbox_coder'),
    (dict(student='fcos', teacher='fcos'),
     'FCOS is not supported by head levels: it has no anchors'),
    (dict(loss='CrossKDGFLLoss'),
     r"a RetinaHead head level takes loss=dict\(type='CrossKDLoss'\)"),
    (dict(loss='PatchCKALoss'), 'a feature loss: drop head_conv'),
    (dict(recorders=dict(neck='neck', head=dict(
        student='bbox_head.cls_convs.0', teacher='bbox_head.cls_convs.0',
        per_call=True))), 'recorders are on head modules'),
])
def test_what_does_not_fit_is_refused(overrides, match):
    for side in ('student', 'teacher'):
        toy = STUDENT if side == 'student' else TEACHER
        if overrides.get(side) == 'fcos':  # the toy pair with FCOS's head
            cfg = model_cfg(toy)
            cfg.update(type='FCOS', bbox_head=dict(
                type='FCOSHead', num_classes=6, in_channels=128,
                feat_channels=128, stacked_convs=2,
                norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)))
            cfg.pop('train_cfg')
            overrides[side] = cfg
        elif isinstance(overrides.get(side), dict):  # the toy one, changed
            overrides[side] = model_cfg(toy, **overrides[side]['bbox_head'])
    with pytest.raises(ValueError, match=match):
        distiller(**overrides)


def test_two_stage_detectors_are_refused():
    from torch import nn

    from pcka_det.models.cross_head import head_kind
    two_stage = nn.Module()
    two_stage.roi_head = nn.Module()  # Faster R-CNN: no dense bbox_head
    with pytest.raises(ValueError, match='single-stage detectors with a '
                       'dense bbox_head .* the student is a Module'):
        head_kind(two_stage, 'student', 'distill_losses.crosskd')


# ---------------------------------------------- training controls, terms


def test_nonfinite_head_term_is_skipped_named_and_streaked(monkeypatch):
    model = distiller()
    loss = model.distill_losses['crosskd']
    forward = loss.forward

    def broken_p3_cls(preds):
        cls, box = forward(preds)
        return [cls[0] * float('nan')] + cls[1:], box

    monkeypatch.setattr(loss, 'forward', broken_p3_cls)
    data = model.data_preprocessor(demo_batch(num_classes=6), True)
    losses = model(**data, mode='loss')
    assert losses['loss_crosskd_cls_p3'] == 0
    assert losses['distill_nonfinite'] == 1
    streaks = model.nonfinite_streaks()
    assert streaks['crosskd_cls_p3'] == 1
    assert sum(streaks.values()) == 1 and len(streaks) == 10
    # what NonFiniteGuardHook reads, by the same names
    assert model.nonfinite_peaks() == streaks
    model.zero_grad(set_to_none=True)
    model.parse_losses(losses)[0].backward()
    grads = [p.grad for p in model.student.parameters()
             if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # the other terms still train the first conv
    assert model.student.bbox_head.cls_convs[0].conv.weight.grad.abs().sum()
    model.nonfinite = 'raise'
    with pytest.raises(FloatingPointError,
                       match='Distillation loss "crosskd_cls_p3" is nan'):
        model(**data, mode='loss')




def test_a_channel_of_equal_values_aligns_to_the_teachers_mean_without_gradient():
    """All values of a student channel equal (what fp16/bf16 rounding makes
    of a small level): the aligned channel is the teacher's mean, as the
    formula gives, with no gradient (the formula's is about t_std / 1e-6);
    the other channels are untouched."""
    from pcka_det.losses.crosskd import align_to_teacher
    torch.manual_seed(0)
    student = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    student[:, 1] = 0.25
    student.requires_grad_()
    teacher = torch.randn(2, 3, 2, 2, dtype=torch.float64) * 3
    out = align_to_teacher(student, teacher)
    t_mean = teacher.mean(dim=(0, 2, 3))
    assert torch.equal(out[:, 1], t_mean[1].expand(2, 2, 2))
    # the other channels by the formula, typed out here
    s = student.detach()
    for c in (0, 2):
        want = (s[:, c] - s[:, c].mean()) / (s[:, c].std() + 1e-6) * \
            teacher[:, c].std() + t_mean[c]
        torch.testing.assert_close(out[:, c], want)
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(student.grad).all()
    assert torch.equal(student.grad[:, 1], torch.zeros(2, 2, 2,
                                                       dtype=torch.float64))
    assert student.grad[:, 0].abs().sum() > 0
