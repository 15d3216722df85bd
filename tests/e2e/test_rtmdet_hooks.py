"""RTMDet-L -> RTMDet-S (configs/pcka/rtmdet_l_s.py) trains with the hooks
of RTMDet's own recipe: EMAHook and PipelineSwitchHook; YOLOX-L -> YOLOX-S
(configs/pcka/yolox_l_s.py) with YOLOX's: YOLOXModeSwitchHook (last test).

The real config and architectures (RTMDet-L teacher, RTMDet-S student, the
128 -> 256 connectors), shrunk only in data: a few 192 px synthetic images,
every 640/1280 px size of the pipelines divided by 5, two epochs with the
pipeline switch after the first, EMA gamma 1 (so the average lags the
weights within a few steps instead of ~2000). Checked:
- the EMA copy shares the frozen teacher (no second teacher in memory) and
  holds no teacher weights;
- the exported student (`student_last.pth`) is the exponential moving
  average of the student's weights, recomputed here from the weights after
  every step with ExpMomentumEMA's formula (typed in, not mmengine's code),
  and not the last raw weights;
- from the second epoch on the dataset uses the stage-2 pipeline (no
  Mosaic/MixUp).
"""
import math

import pytest
import torch
from conftest import load_distill_cfg
from mmengine.hooks import Hook
from mmengine.registry import RUNNERS

from pcka_det.datasets.synthetic import CLASSES


CONFIG = 'configs/pcka/rtmdet_l_s.py'
SHRINK = 5  # 640 -> 128 px, 1280 -> 256 px
WATCHED = 'student.bbox_head.rtm_cls.0.weight'  # one tensor to average
MOMENTUM, GAMMA = 0.0002, 1


def _shrink(obj):
    """Divide every image size in a pipeline config by SHRINK."""
    if isinstance(obj, dict):
        return {k: (tuple(s // SHRINK for s in v)
                    if k in ('img_scale', 'scale', 'crop_size', 'size',
                             'border')
                    else _shrink(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shrink(v) for v in obj]
    return obj


class _Watch(Hook):
    """Keeps a copy of one student tensor after every optimiser step, before
    EMAHook (priority 49) averages it."""
    priority = 48

    def __init__(self):
        self.raw = []
        self.ema_hook = None

    def before_train(self, runner):
        self.ema_hook = next(h for h in runner.hooks
                             if type(h).__name__ == 'EMAHook')

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.raw.append(dict(runner.model.named_parameters())[WATCHED]
                        .detach().clone())


def _expected_ema(raw):
    """mmdet's ExpMomentumEMA: step 0 copies the weights, then
    avg <- avg + m_t * (w - avg) with m_t = (1 - m) exp(-(1 + t) / gamma) + m.
    """
    avg = raw[0].clone()
    for t, w in enumerate(raw[1:], start=1):
        m_t = (1 - MOMENTUM) * math.exp(-(1 + t) / GAMMA) + MOMENTUM
        avg = avg + m_t * (w - avg)
    return avg


@pytest.mark.slow
def test_rtmdet_ema_and_pipeline_switch(tmp_path, tiny_coco):
    cfg = load_distill_cfg(CONFIG)
    root = str(tiny_coco) + '/'
    for split, loader in (('train', cfg.train_dataloader),
                          ('val', cfg.val_dataloader)):
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.dataset.update(
            data_root=root, metainfo=dict(classes=CLASSES),
            ann_file=f'annotations/instances_{split}.json',
            data_prefix=dict(img=f'{split}/'),
            pipeline=_shrink(loader.dataset.pipeline))
        loader.dataset.pop('filter_cfg', None)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator.ann_file = root + 'annotations/instances_val.json'
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=2,
                         val_interval=2)
    cfg.param_scheduler = []
    ema, switch = cfg.custom_hooks
    assert (ema.type, switch.type) == ('EMAHook', 'PipelineSwitchHook')
    ema.gamma = GAMMA
    switch.switch_epoch = 1
    switch.switch_pipeline = _shrink(switch.switch_pipeline)
    for side in ('student', 'teacher'):  # the dataset's 6 classes
        cfg.model[side].bbox_head = dict(num_classes=len(CLASSES))
    # 4 x 4 cells at stride 32: 2-cell patches give every level > 1 patch
    for spec in cfg.model.distill_losses.values():
        spec.loss.patch_size = 2
    cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(tmp_path / 'work')
    cfg.launcher = 'none'
    cfg.randomness = dict(seed=0)

    runner = RUNNERS.build(cfg)
    watch = _Watch()
    runner.register_hook(watch)
    runner.train()

    model = runner.model
    ema_model = watch.ema_hook.ema_model
    # one teacher: the EMA copy shares it, and averages none of it
    assert ema_model.module.teacher is model.teacher, \
        'the EMA copy holds a second teacher'
    assert not any('teacher' in k for k in ema_model.state_dict())
    # ... and its recorders, so the copy's loss() would see the teacher
    assert all(ema_model.module.teacher_recorders[k] is r
               for k, r in model.teacher_recorders.items()), \
        'the EMA copy has teacher recorders attached to no teacher'
    # 8 images, 2 per step, 2 epochs
    assert len(watch.raw) == 8
    raw = watch.raw
    assert not torch.equal(raw[0], raw[-1])  # the student did train

    # student_last.pth: the EMA of the student, in plain mmdet keys
    exported = torch.load(tmp_path / 'work' / 'student_last.pth',
                          map_location='cpu', weights_only=False)
    state = exported['state_dict']
    assert not any(k.startswith(('student.', 'teacher.', 'connectors.'))
                   for k in state)
    key = WATCHED[len('student.'):]
    expected = _expected_ema(raw)
    torch.testing.assert_close(state[key], expected, rtol=1e-5, atol=1e-7)
    assert (state[key] - raw[-1]).abs().max() > 1e-5, \
        'the exported student holds the raw weights, not their average'

    # the pipeline switched to stage 2 (no Mosaic/MixUp) for epoch 2
    transforms = [type(t).__name__ for t in
                  runner.train_dataloader.dataset.pipeline.transforms]
    assert 'CachedMosaic' not in transforms
    assert 'CachedMixUp' not in transforms
    assert transforms[:3] == ['LoadImageFromFile', 'LoadAnnotations',
                              'RandomResize']


@pytest.mark.slow
def test_yolox_mode_switch_in_a_real_run(tmp_path, tiny_coco):
    """YOLOX-S's own recipe through the distiller: Mosaic/MixUp data, EMA,
    and YOLOXModeSwitchHook, moved from epoch 286 of 300 to epoch 2 of 2.
    The switch reaches the student (its L1 box loss is logged from epoch 2
    on, never before) and the distillation losses go on after it."""
    cfg = load_distill_cfg('configs/pcka/yolox_l_s.py')
    root = str(tiny_coco) + '/'
    loader = cfg.train_dataloader
    loader.update(batch_size=2, num_workers=0, persistent_workers=False)
    inner = loader.dataset.dataset  # MultiImageMixDataset's CocoDataset
    inner.update(data_root=root, metainfo=dict(classes=CLASSES),
                 ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'))
    inner.pop('filter_cfg', None)
    loader.dataset.pipeline = _shrink(loader.dataset.pipeline)
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=2,
                         val_interval=10)
    cfg.param_scheduler = []
    switch = [h for h in cfg.custom_hooks
              if h.type == 'YOLOXModeSwitchHook']
    assert len(switch) == 1
    switch[0].num_last_epochs = 0  # switches before the 2nd (last) epoch
    for side in ('student', 'teacher'):  # the dataset's 6 classes
        cfg.model[side].bbox_head = dict(num_classes=len(CLASSES))
    # 4 x 4 cells at stride 32 (128 px): 2-cell patches, > 1 patch a level
    for spec in cfg.model.distill_losses.values():
        spec.loss.patch_size = 2
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(tmp_path / 'work')
    cfg.launcher = 'none'
    cfg.randomness = dict(seed=0)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None

    runner = RUNNERS.build(cfg)
    runner.train()
    assert runner.model.student.bbox_head.use_l1 is True
    log = open(runner.logger.handlers[-1].baseFilename).read()
    lines = [ln for ln in log.splitlines() if 'Epoch(train)' in ln]
    first = [ln for ln in lines if 'Epoch(train)  [1]' in ln
             or 'Epoch(train) [1]' in ln]
    second = [ln for ln in lines if ln not in first]
    assert first and second, log[-2000:]
    assert not any('loss_l1' in ln for ln in first)
    assert all('loss_l1' in ln for ln in second)
    for ln in lines:
        for level in ('pcka_p3', 'pcka_p4', 'pcka_p5'):
            assert f'loss_{level}: ' in ln, ln
