"""Every COCO distillation config, built as a user's run builds it, takes
one real step at a COCO-like size.

Each config is built from its own file: the student's backbone
``init_cfg`` (``torchvision://``, ``open-mmlab://``, ``https://``) and the
teacher's ``teacher_ckpt`` URL are real, served by the hub cache
(``tests/hub_cache.py``: random weights under the URLs' file names in a
private ``TORCH_HOME``), and ``model.init_weights()`` runs MMEngine's
``Pretrained`` init as the runner does. The student's backbone must then
hold the cached backbone weights and the teacher the cached checkpoint's.
Without torchvision, or with an empty cache, the build fails on the
download attempt (no network); nothing is skipped.

One 192x1088 image: RetinaNet's P6 (stride 64) is then 3x17 cells, two
16-cell patches, so no PCKA level degenerates to a single patch (whose intra
term is defined as 1, i.e. a loss of exactly 0). At 96x128 every RetinaNet
level is one patch and a "0 <= loss" check cannot fail.

For each config: every distillation loss is finite and > 0, every PCKA
level has >= 2 patches, the distillation losses alone (not the detection
losses) send a gradient into the student's neck and into every distilled
student map, and the teacher neither requires nor receives a gradient. A
head level (CrossKD, ``configs/crosskd``) logs a class and a box term per
FPN level, each finite and > 0; its gradient reaches the student's head
convs up to conv k and none after them or in its predictors.
"""
import glob
import math
import os.path as osp

import pytest
import torch
from conftest import ROOT, demo_batch
from hub_cache import hub_cache  # noqa: F401  (session fixture)
from mmengine.config import Config
from mmengine.logging import MessageHub

from mmdet.registry import MODELS
from pcka_det.losses import PatchCKALoss
from pcka_det.models import FeatureDistiller
from pcka_det.models.builder import load_model_cfg
from pcka_det.models.recorders import get_module

# Discovered, not listed: new or renamed configs are stepped too.
COCO_CONFIGS = sorted(
    osp.relpath(p, ROOT)
    for folder in ('pcka', 'baselines', 'crosskd')
    for p in glob.glob(osp.join(ROOT, 'configs', folder, '*.py')))

# (H, W): P6 of RetinaNet is 3x17 cells (two 16-cell patches), P7 2x9 (the
# CWD and FitNet baselines distil P7: >= 2 cells a side); P2 of Faster R-CNN
# 48x272. Wide and flat, so that every 16-cell PCKA level has >= 2 patches
# at a fifth of the pixels (and step time) of a COCO-size image.
IMAGE_SIZE = (192, 1088)
# Configs whose deepest distilled level has stride 32 (P5 4x17 cells: two
# 16-cell patches) step at 128x544; a config put here wrongly fails the
# ">= 2 patches" check below.
SIZES = {name: (128, 544) for name in (
    'faster_rcnn_r101_r50.py', 'cascade_x101_faster_rcnn_r50.py',
    'cascade_mask_x101_mask_rcnn_r50.py', 'rtmdet_l_s.py',
    'mask_swin-t_faster_rcnn_r50.py', 'yolox_l_s.py',
    'pkd_faster_rcnn_r101_r50.py')}
# Built with a random teacher and no cache file for it (DINO Swin-L's
# checkpoint would be about 0.9 GB); the URL path runs on every other config.
RANDOM_TEACHER = ('dino_swin-l_r50.py', )
# Students whose own mmdet recipe trains the backbone from scratch (YOLOX):
# no pretrained backbone to find in them.
FROM_SCRATCH = ('yolox_l_s.py', )
# A head level (CrossKD, configs/crosskd) adds the teacher's head and its
# tail on the student's features to the step: those configs step at fewer
# pixels, as few as keep every check meaningful. 128 rows leave P6 2x17
# cells (two 16-cell patches for the stacked PCKA levels) and P7 1x9; without
# PCKA levels 128x384 (P3 16x48, P7 1x3).
HEAD_LEVEL_SIZES = dict(with_pcka=(128, 1088), alone=(128, 384))


def image_size(model) -> tuple:
    """The step's image size for a built distiller (see above)."""
    if model.head_level is None:
        return IMAGE_SIZE
    pcka = any(isinstance(loss, PatchCKALoss)
               for loss in model.distill_losses.values())
    return HEAD_LEVEL_SIZES['with_pcka' if pcka else 'alone']


def test_configs_discovered():
    folders = {osp.basename(osp.dirname(p)) for p in COCO_CONFIGS}
    assert folders == {'pcka', 'baselines', 'crosskd'}, COCO_CONFIGS


@pytest.mark.slow
@pytest.mark.parametrize('path', COCO_CONFIGS)
def test_coco_config_real_step(path, hub_cache):  # noqa: F811
    name = osp.basename(path)
    random_teacher = name in RANDOM_TEACHER
    # files shared with other configs are kept
    hub_cache.fill([path], teacher=not random_teacher)
    cfg = Config.fromfile(osp.join(ROOT, path))
    assert 'pcka_det' in cfg.custom_imports.imports
    assert cfg.model.teacher_ckpt.startswith('https://')
    if random_teacher:
        cfg.model.update(teacher_ckpt=None, allow_random_teacher=True)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)  # reads teacher_ckpt from the cache
    assert isinstance(model, FeatureDistiller)
    model.init_weights()  # MMEngine's Pretrained init, as the runner runs it
    _check_cached_weights(model, cfg, hub_cache)
    # the teacher is outside the trainable module tree and the checkpoints
    assert not any(k.startswith('teacher') for k in model.state_dict())
    model.train()
    # the iteration mmdet's batch augments read (YOLOX's random resize)
    MessageHub.get_current_instance().update_info('iter', 0)
    try:
        _check_step(model, SIZES.get(name) or image_size(model))
    finally:
        model.zero_grad(set_to_none=True)
        del model


def _check_cached_weights(model, cfg, cache):
    """The student's backbone holds the cached pretrained backbone, the
    teacher the cached teacher checkpoint, every tensor of them."""
    init = load_model_cfg(cfg.model.student).backbone.get('init_cfg')
    if osp.basename(cfg.filename) in FROM_SCRATCH:
        assert init is None or init.type != 'Pretrained', init
    else:
        assert init is not None and init.type == 'Pretrained', init
        _check_student_backbone(model, init, cache)
    if not cfg.model.teacher_ckpt:  # built random (RANDOM_TEACHER)
        return
    teacher = cache.load(cfg.model.teacher_ckpt)['state_dict']
    own = model.teacher.state_dict()
    assert own.keys() == teacher.keys()
    for k, v in own.items():
        assert torch.equal(v, teacher[k].to(v.dtype)), f'teacher.{k}'


def _check_student_backbone(model, init, cache):
    ckpt = cache.load(init.checkpoint)
    state = ckpt.get('state_dict', ckpt)
    prefix = init.get('prefix')
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        state = {k[len(prefix):]: v for k, v in state.items()
                 if k.startswith(prefix)}
    own = model.student.backbone.state_dict()
    assert not set(own) - set(state), sorted(set(own) - set(state))[:8]
    for k, v in own.items():
        assert torch.equal(v, state[k]), f'student.backbone.{k}'


def _check_step(model, size=IMAGE_SIZE):
    assert len(model.distill_losses) >= 1
    # instance masks for a student with a mask head (Mask R-CNN)
    with_mask = getattr(model.student, 'with_mask', False)
    batch = demo_batch(batch_size=1, size=size, num_classes=80, seed=0,
                       with_mask=with_mask)
    data = model.data_preprocessor(batch, True)
    assert tuple(data['inputs'].shape[-2:]) == size
    # Our own hooks on the recorded modules (the distiller's recorders keep
    # nothing once loss() returns), so the test reads exactly the maps that
    # loss() distils.
    seen = {}
    handles = []
    for side in ('student', 'teacher'):
        for rec, recorder in getattr(model, f'{side}_recorders').items():
            module = get_module(getattr(model, side), recorder.source)

            def hook(mod, args, out, key=(side, rec)):
                seen[key] = out

            handles.append(module.register_forward_hook(hook))
    teacher_buffers = {k: v.clone() for k, v in model.teacher.named_buffers()}
    try:
        torch.manual_seed(0)
        losses = model(**data, mode='loss')  # the teacher runs as in training
    finally:
        for h in handles:
            h.remove()
    # the teacher ran in eval mode: BN running statistics untouched
    assert not model.teacher.training
    after = dict(model.teacher.named_buffers())
    assert after.keys() == teacher_buffers.keys()
    assert all(torch.equal(after[k], v) for k, v in teacher_buffers.items())

    # Every distilled level is a real map; PCKA levels have >= 2 patches.
    names = [n for n in model.distill_losses if not model.levels[n].is_head]
    feats = {}
    for name in names:
        level = model.levels[name]
        s_out = seen[('student', level.recorder)]
        t_out = seen[('teacher', level.recorder)]
        s_feat = s_out if level.student_index is None else \
            s_out[level.student_index]
        t_feat = t_out if level.teacher_index is None else \
            t_out[level.teacher_index]
        feats[name] = s_feat
        assert not t_feat.requires_grad, name
        h, w = t_feat.shape[-2:]
        assert tuple(s_feat.shape[-2:]) == (h, w), name
        assert min(h, w) >= 2, f'{name}: level of {h}x{w} cells'
        loss_fn = model.distill_losses[name]
        if isinstance(loss_fn, PatchCKALoss):
            p = loss_fn.patch_size
            n = math.ceil(h / p) * math.ceil(w / p)
            assert n >= 2, (f'{name}: a {h}x{w} level gives {n} patch of '
                            f'{p}x{p} cells; its PCKA loss is 0 by definition')

    # Every distillation term is logged, finite and strictly positive (a
    # head level: a class and a box term per FPN level).
    values = {}
    for term, (_, key) in model.terms.items():
        assert key in losses, sorted(losses)
        value = losses[key]
        assert value.dim() == 0 and torch.isfinite(value), (key, value)
        assert value.item() > 1e-6, f'{key} = {value.item()}'
        values[term] = value
    head = model.head_level
    if head is not None:
        assert len(head.log_keys) == 2 * len(
            model.student.bbox_head.prior_generator.strides)

    # The distillation losses alone (no detection loss) reach the student's
    # neck and backbone, and nothing reaches the frozen teacher.
    for feat in feats.values():
        if feat.requires_grad:
            feat.retain_grad()
    total = sum(values.values())
    if total.requires_grad:  # False if the student features were detached
        total.backward()
    neck_grads = [p.grad for p in model.student.neck.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in neck_grads), \
        'no distillation gradient reached the student neck'
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.student.backbone.parameters()), \
        'no distillation gradient reached the student backbone'
    teacher_params = list(model.teacher.parameters())
    assert teacher_params
    assert all(not p.requires_grad for p in teacher_params), \
        'teacher parameters require grad'
    assert all(p.grad is None for p in teacher_params), \
        'a gradient reached the teacher'
    # Every distilled student map received a non-zero gradient.
    for name, feat in feats.items():
        assert feat.grad is not None and feat.grad.abs().sum() > 0, name
    # A head level trains the student's head convs up to conv k, and
    # nothing after them (the teacher's tail replaces them).
    if head is not None:
        k = head.head_conv
        student_head = model.student.bbox_head
        for tower in ('cls_convs', 'reg_convs'):
            convs = getattr(student_head, tower)
            for j, conv in enumerate(convs):
                grads = [p.grad for p in conv.parameters()]
                reached = any(g is not None and g.abs().sum() > 0
                              for g in grads)
                assert reached == (j < k), (tower, j, k)
