"""Every COCO PCKA config resolves to its official training recipe.

The official PCKA configs (github.com/Klayand/PCKA, an mmrazor 1.x fork;
their values are restated in the project's method spec, sections 4 and 4b)
take the *models* from mmdet configs but the *data* from a plain
single-scale 1333x800 `coco_detection` base and the schedule from mmdet's
2x: SGD (momentum 0.9, wd 1e-4), 500-iter linear warm-up, steps at 16 and
22 of 24 epochs, 2 images per GPU. A config
that inherited e.g. FCOS's `ms-640-800` file would silently train
multi-scale with FCOS's own optimizer settings; this test resolves every
config (with its `_base_` chain) and compares the recipe fields with the
official values typed in below, not read from any config.

Deliberate, documented differences (configs/pcka/README.md):
- Cascade Mask R-CNN -> Mask R-CNN loads masks and evaluates bbox + segm
  (the official data base is box-only, on which a Mask R-CNN cannot train).
- RTMDet-L -> RTMDet-S has no official PCKA config: it must keep RTMDet-S's
  own 300-epoch recipe (mmdet 3.3 `rtmdet_s_8xb32-300e_coco.py`).
"""
import glob
import os.path as osp
import re

import pytest
from conftest import ROOT
from mmengine.config import Config

from mmdet.registry import MODELS
from pcka_det.config_paths import resolve_config_path

ZOO = 'https://download.openmmlab.com/mmdetection/v2.0/'
PCKA = osp.join(ROOT, 'configs', 'pcka')

# --- the official data and schedule, written out ---------------------------
TEST_META = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')


def plain_pipelines(with_mask: bool = False):
    """mmdet 3.3's single-scale 1333x800 train and test pipelines."""
    ann = dict(type='LoadAnnotations', with_bbox=True)
    if with_mask:
        ann['with_mask'] = True
    train = [
        dict(type='LoadImageFromFile'), ann,
        dict(type='Resize', scale=(1333, 800), keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs')
    ]
    test = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(1333, 800), keep_ratio=True), ann,
        dict(type='PackDetInputs', meta_keys=TEST_META)
    ]
    return train, test


SGD_2X = dict(
    optimizer=dict(type='SGD', momentum=0.9, weight_decay=0.0001),
    schedulers=[
        dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
             end=500),
        dict(type='MultiStepLR', begin=0, end=24, by_epoch=True,
             milestones=[16, 22], gamma=0.1)
    ],
    max_epochs=24,
    batch_size=2)


def pcka_levels(names, intra=10.0, inter=None):
    return {n: dict(index=i, patch_size=16, intra=intra, inter=inter,
                    connector=None) for i, n in enumerate(names)}


ONE_STAGE = ('pcka_p3', 'pcka_p4', 'pcka_p5', 'pcka_p6')  # FPN outputs 0-3
TWO_STAGE = ('pcka_p2', 'pcka_p3', 'pcka_p4', 'pcka_p5')
CASCADE_X101 = (ZOO + 'cascade_rcnn/cascade_mask_rcnn_x101_64x4d_fpn_20e_coco/'
                'cascade_mask_rcnn_x101_64x4d_fpn_20e_coco_20200512_161033'
                '-bdb5126a.pth')

OFFICIAL = {
    'retina_r101_r50.py': dict(
        student='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
        teacher='mmdet::retinanet/retinanet_r101_fpn_2x_coco.py',
        teacher_ckpt=ZOO + 'retinanet/retinanet_r101_fpn_2x_coco/'
        'retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth',
        levels=pcka_levels(ONE_STAGE), lr=0.01),
    'retina_x101_r50.py': dict(
        student='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
        teacher='mmdet::retinanet/retinanet_x101-64x4d_fpn_1x_coco.py',
        teacher_ckpt=ZOO + 'retinanet/retinanet_x101_64x4d_fpn_1x_coco/'
        'retinanet_x101_64x4d_fpn_1x_coco_20200130-366f5af1.pth',
        levels=pcka_levels(ONE_STAGE), lr=0.01),
    'faster_rcnn_r101_r50.py': dict(
        student='mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py',
        teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
        teacher_ckpt=ZOO + 'faster_rcnn/faster_rcnn_r101_fpn_2x_coco/'
        'faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455'
        '-1d2dac9c.pth',
        levels=pcka_levels(TWO_STAGE, inter=10.0), lr=0.02),
    'cascade_x101_faster_rcnn_r50.py': dict(
        student='mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py',
        teacher='mmdet::cascade_rcnn/'
        'cascade-mask-rcnn_x101-64x4d_fpn_20e_coco.py',
        teacher_ckpt=CASCADE_X101,
        levels=pcka_levels(TWO_STAGE, inter=10.0), lr=0.02),
    'fcos_r101_r50.py': dict(
        student='mmdet::fcos/fcos_r50-caffe_fpn_gn-head_ms-640-800-2x_coco.py',
        teacher='mmdet::fcos/'
        'fcos_r101-caffe_fpn_gn-head_ms-640-800-2x_coco.py',
        teacher_ckpt=ZOO + 'fcos/'
        'fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco/'
        'fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco-511424d6.pth',
        levels=pcka_levels(ONE_STAGE), lr=0.01),
    'gfl_r101_r50.py': dict(
        student='mmdet::gfl/gfl_r50_fpn_1x_coco.py',
        teacher='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py',
        teacher_ckpt=ZOO + 'gfl/gfl_r101_fpn_mstrain_2x_coco/'
        'gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth',
        levels=pcka_levels(ONE_STAGE, inter=10.0), lr=0.02),
    'reppoints_x101_r50.py': dict(
        student='mmdet::reppoints/'
        'reppoints-moment_r50_fpn-gn_head-gn_2x_coco.py',
        teacher='mmdet::reppoints/'
        'reppoints-moment_x101-dconv-c3-c5_fpn-gn_head-gn_2x_coco.py',
        teacher_ckpt=ZOO + 'reppoints/'
        'reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck%2Bhead_2x_coco/'
        'reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck%2Bhead_2x_coco'
        '_20200329-f87da1ea.pth',
        levels=pcka_levels(ONE_STAGE), lr=0.01),
    'cascade_mask_x101_mask_rcnn_r50.py': dict(
        student='mmdet::mask_rcnn/mask-rcnn_r50_fpn_2x_coco.py',
        teacher='mmdet::cascade_rcnn/'
        'cascade-mask-rcnn_x101-64x4d_fpn_20e_coco.py',
        teacher_ckpt=CASCADE_X101,
        levels=pcka_levels(TWO_STAGE, inter=10.0), lr=0.02,
        with_mask=True),  # documented difference: masks, bbox + segm
}

# RTMDet-S's own recipe (mmdet 3.3 rtmdet_s_8xb32-300e_coco.py, written out).
RTMDET_PAD = dict(type='Pad', size=(640, 640),
                  pad_val=dict(img=(114, 114, 114)))
RTMDET_S_STAGE2 = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=(640, 640), ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=(640, 640)),
    dict(type='YOLOXHSVRandomAug'),
    dict(type='RandomFlip', prob=0.5),
    RTMDET_PAD,
    dict(type='PackDetInputs')
]
RTMDET = {
    'rtmdet_l_s.py': dict(
        student='mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py',
        teacher='mmdet::rtmdet/rtmdet_l_8xb32-300e_coco.py',
        teacher_ckpt='https://download.openmmlab.com/mmdetection/v3.0/'
        'rtmdet/rtmdet_l_8xb32-300e_coco/'
        'rtmdet_l_8xb32-300e_coco_20220719_112030-5a0be7c4.pth',
        levels={
            name: dict(index=i, patch_size=16, intra=10.0, inter=None,
                       connector=dict(type='ConvConnector', in_channels=128,
                                      out_channels=256))
            for i, name in enumerate(('pcka_p3', 'pcka_p4', 'pcka_p5'))
        },
        train=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True),
            dict(type='CachedMosaic', img_scale=(640, 640), pad_val=114.0),
            dict(type='RandomResize', scale=(1280, 1280),
                 ratio_range=(0.5, 2.0), keep_ratio=True),
            dict(type='RandomCrop', crop_size=(640, 640)),
            dict(type='YOLOXHSVRandomAug'),
            dict(type='RandomFlip', prob=0.5),
            RTMDET_PAD,
            dict(type='CachedMixUp', img_scale=(640, 640),
                 ratio_range=(1.0, 1.0), max_cached_images=20,
                 pad_val=(114, 114, 114)),
            dict(type='PackDetInputs')
        ],
        test=[
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(640, 640), keep_ratio=True),
            RTMDET_PAD,
            dict(type='LoadAnnotations', with_bbox=True),
            dict(type='PackDetInputs', meta_keys=TEST_META)
        ],
        optim_wrapper=dict(
            type='OptimWrapper',
            optimizer=dict(type='AdamW', lr=0.004, weight_decay=0.05),
            paramwise_cfg=dict(norm_decay_mult=0, bias_decay_mult=0,
                               bypass_duplicate=True)),
        schedulers=[
            dict(type='LinearLR', start_factor=1e-5, by_epoch=False,
                 begin=0, end=1000),
            dict(type='CosineAnnealingLR', eta_min=0.004 * 0.05, begin=150,
                 end=300, T_max=150, by_epoch=True,
                 convert_to_iter_based=True)
        ],
        train_cfg=dict(type='EpochBasedTrainLoop', max_epochs=300,
                       val_interval=10, dynamic_intervals=[(280, 1)]),
        batch_size=32,
        custom_hooks=[
            dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.0002,
                 update_buffers=True, priority=49),
            dict(type='PipelineSwitchHook', switch_epoch=280,
                 switch_pipeline=RTMDET_S_STAGE2)
        ]),
}


# The pairs users bring (issue "Distil the pairs users bring"): no official
# recipe exists, so each keeps its student's own mmdet recipe (checked
# against the student's mmdet config below). Levels paired by stride, at
# per-side output indices where the pyramids start at different strides.
FASTER_R101 = (ZOO + 'faster_rcnn/faster_rcnn_r101_fpn_2x_coco/'
               'faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455'
               '-1d2dac9c.pth')
SWIN_T = (ZOO + 'swin/mask_rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco/'
          'mask_rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco_20210906_131725'
          '-bacf6f7b.pth')


def shifted(names, patches=(16, 16, 16, 16), intra=10.0, inter=None,
            connector=None):
    """Student output i paired with teacher output i + 1 (P3-P6 of a P2-P6
    teacher for a P3-P7 student; DINO 5-scale -> 4-scale)."""
    return {n: dict(index=dict(student=i, teacher=i + 1), patch_size=p,
                    intra=intra, inter=inter, connector=connector)
            for i, (n, p) in enumerate(zip(names, patches))}


PAIRS = {
    'faster_rcnn_r101_retina_r50.py': dict(
        student='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
        teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
        teacher_ckpt=FASTER_R101, levels=shifted(ONE_STAGE)),
    'faster_rcnn_r101_fcos_r50.py': dict(
        student='mmdet::fcos/fcos_r50-caffe_fpn_gn-head_ms-640-800-2x_coco.py',
        teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
        teacher_ckpt=FASTER_R101, levels=shifted(ONE_STAGE)),
    'mask_swin-t_faster_rcnn_r50.py': dict(
        student='mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py',
        teacher='mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py',
        teacher_ckpt=SWIN_T, levels=pcka_levels(TWO_STAGE, inter=10.0)),
    'mask_swin-t_retina_r50.py': dict(
        student='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
        teacher='mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py',
        teacher_ckpt=SWIN_T, levels=shifted(ONE_STAGE)),
    'yolox_l_s.py': dict(
        student='mmdet::yolox/yolox_s_8xb8-300e_coco.py',
        teacher='mmdet::yolox/yolox_l_8xb8-300e_coco.py',
        teacher_ckpt=ZOO + 'yolox/yolox_l_8x8_300e_coco/'
        'yolox_l_8x8_300e_coco_20211126_140236-d3bd2b23.pth',
        # 480x480 (the smallest BatchSyncRandomResize size): P5 is 15x15
        levels={n: dict(index=i, patch_size=p, intra=10.0, inter=None,
                        connector=dict(type='ConvConnector', in_channels=128,
                                       out_channels=256))
                for i, (n, p) in enumerate(zip(ONE_STAGE[:3], (16, 16, 8)))}),
    'dino_swin-l_r50.py': dict(
        student='mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',
        teacher='mmdet::dino/dino-5scale_swin-l_8xb2-12e_coco.py',
        teacher_ckpt='https://download.openmmlab.com/mmdetection/v3.0/dino/'
        'dino-5scale_swin-l_8xb2-12e_coco/'
        'dino-5scale_swin-l_8xb2-12e_coco_20230228_072924-a654145f.pth',
        levels=shifted(ONE_STAGE)),
}


def _plain(obj):
    """Config values as plain Python, without mmengine's `_scope_` and the
    `backend_args=None` every mmdet transform carries."""
    if hasattr(obj, 'to_dict'):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()
                if k != '_scope_' and not (k == 'backend_args' and v is None)}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def _load(name: str) -> Config:
    import pcka_det  # noqa: F401  (pcka_det:: scope, our loss types)
    return Config.fromfile(osp.join(PCKA, name))


def _levels(model) -> dict:
    """name -> the built loss's settings, its FPN index and connector."""
    levels = {}
    for name, spec in model.distill_losses.items():
        loss = MODELS.build(spec['loss'])
        levels[name] = dict(
            index=_plain(spec['index']),
            patch_size=loss.patch_size,
            intra=loss.intra_weight,
            inter=loss.inter_weight,
            connector=_plain(spec.get('connector')))
        assert type(loss).__name__ == 'PatchCKALoss', name
        assert not loss.centered and loss.loss_weight == 1.0, name
        assert spec['recorder'] in model.recorders, name
    assert set(model.recorders.values()) == {'neck'}
    return levels


def _check_pair(cfg, recipe):
    model = cfg.model
    assert model.type == 'FeatureDistiller'
    assert model.student.to_dict() == dict(cfg_path=recipe['student'])
    assert model.teacher.to_dict() == dict(cfg_path=recipe['teacher'])
    assert model.teacher_ckpt == recipe['teacher_ckpt']
    assert _levels(model) == recipe['levels']
    # DistillRunner: checked checkpoint loading and the student export
    assert cfg.runner_type == 'DistillRunner'
    assert 'pcka_det' in cfg.custom_imports.imports


def test_every_pcka_config_has_a_recipe():
    on_disk = {osp.basename(p) for p in glob.glob(osp.join(PCKA, '*.py'))}
    assert on_disk == set(OFFICIAL) | set(RTMDET) | set(PAIRS)


@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_official_recipe(name):
    recipe = OFFICIAL[name]
    cfg = _load(name)
    _check_pair(cfg, recipe)
    with_mask = recipe.get('with_mask', False)
    train, test = plain_pipelines(with_mask)
    # the pipelines the dataloaders really use, not a top-level variable
    assert _plain(cfg.train_dataloader.dataset.pipeline) == train
    assert _plain(cfg.val_dataloader.dataset.pipeline) == test
    assert _plain(cfg.test_dataloader.dataset.pipeline) == test
    assert cfg.train_dataloader.dataset.type == 'CocoDataset'
    assert cfg.train_dataloader.dataset.ann_file == \
        'annotations/instances_train2017.json'
    assert _plain(cfg.train_dataloader.dataset.filter_cfg) == dict(
        filter_empty_gt=True, min_size=32)
    assert cfg.val_dataloader.dataset.ann_file == \
        'annotations/instances_val2017.json'
    assert cfg.train_dataloader.batch_size == SGD_2X['batch_size']
    assert _plain(cfg.auto_scale_lr) == dict(enable=False, base_batch_size=16)
    metric = ['bbox', 'segm'] if with_mask else 'bbox'
    assert cfg.val_evaluator.metric == metric
    assert cfg.test_evaluator.metric == metric
    # plain SGD: no paramwise_cfg (e.g. FCOS's bias lr x2), no clip_grad
    # the recipe's optimizer and loop, as our declared subclasses (same
    # arguments): GuardedOptimWrapper, ExactResumeEpochBasedTrainLoop
    assert _plain(cfg.optim_wrapper) == dict(
        type='GuardedOptimWrapper',
        optimizer=dict(SGD_2X['optimizer'], lr=recipe['lr']))
    assert _plain(cfg.param_scheduler) == SGD_2X['schedulers']
    assert _plain(cfg.train_cfg) == dict(
        type='ExactResumeEpochBasedTrainLoop',
        max_epochs=SGD_2X['max_epochs'], val_interval=1)
    assert not cfg.get('custom_hooks')


@pytest.mark.parametrize('name', sorted(RTMDET))
def test_rtmdet_keeps_its_own_recipe(name):
    recipe = RTMDET[name]
    cfg = _load(name)
    _check_pair(cfg, recipe)
    assert _plain(cfg.train_dataloader.dataset.pipeline) == recipe['train']
    assert _plain(cfg.val_dataloader.dataset.pipeline) == recipe['test']
    assert _plain(cfg.test_dataloader.dataset.pipeline) == recipe['test']
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        assert (evaluator.type, evaluator.metric, evaluator.proposal_nums) \
            == ('CocoMetric', 'bbox', (100, 1, 10))
    assert cfg.train_dataloader.batch_size == recipe['batch_size']
    assert _plain(cfg.auto_scale_lr) == dict(enable=False, base_batch_size=16)
    # RTMDet-S's optimizer and loop, as our declared subclasses
    assert _plain(cfg.optim_wrapper) == dict(recipe['optim_wrapper'],
                                             type='GuardedOptimWrapper')
    assert _plain(cfg.param_scheduler) == recipe['schedulers']
    assert _plain(cfg.train_cfg) == dict(
        recipe['train_cfg'], type='ExactResumeEpochBasedTrainLoop')
    assert _plain(cfg.custom_hooks) == recipe['custom_hooks']


# what a pair's config takes from its student's mmdet config unchanged
# (the optimizer wrapper and loop as our declared subclasses)
OWN_RECIPE = ('train_dataloader', 'val_dataloader', 'test_dataloader',
              'val_evaluator', 'test_evaluator', 'param_scheduler',
              'auto_scale_lr', 'custom_hooks', 'val_cfg', 'test_cfg')


@pytest.mark.parametrize('name', sorted(PAIRS))
def test_pair_keeps_its_students_recipe(name):
    recipe = PAIRS[name]
    cfg = _load(name)
    _check_pair(cfg, recipe)
    # mmdet's file, not ours
    own = Config.fromfile(resolve_config_path(recipe['student']))
    for key in OWN_RECIPE:
        assert _plain(cfg.get(key)) == _plain(own.get(key)), (name, key)
    assert _plain(cfg.optim_wrapper) == dict(
        _plain(own.optim_wrapper), type='GuardedOptimWrapper')
    assert _plain(cfg.train_cfg) == dict(
        _plain(own.train_cfg), type='ExactResumeEpochBasedTrainLoop')


def test_readme_lists_every_pcka_config():
    with open(osp.join(PCKA, 'README.md')) as f:
        linked = set(re.findall(r'\]\(([\w.-]+\.py)\)', f.read()))
    on_disk = {osp.basename(p) for p in glob.glob(osp.join(PCKA, '*.py'))}
    assert on_disk <= linked, sorted(on_disk - linked)


def _model_zoo() -> dict:
    """mmdet's metafiles: ``mmdet::<config>`` -> its model-zoo weights."""
    import yaml

    import mmdet
    root = osp.join(osp.dirname(mmdet.__file__), '.mim')
    zoo = {}
    for path in glob.glob(osp.join(root, 'configs', '*', 'metafile.yml')):
        with open(path) as f:
            meta = yaml.safe_load(f)
        for entry in meta.get('Models', []) if isinstance(meta, dict) else []:
            config = entry.get('Config') or ''
            if entry.get('Weights') and config.startswith('configs/'):
                zoo['mmdet::' + config[len('configs/'):]] = entry['Weights']
    return zoo


def test_teacher_urls_are_mmdet_model_zoo_weights():
    """Each teacher checkpoint is the one mmdet's metafile lists for the
    teacher config, i.e. the weights that architecture was trained to."""
    zoo = _model_zoo()
    assert len(zoo) > 100
    for name in sorted({**OFFICIAL, **RTMDET, **PAIRS}):
        model = _load(name).model
        assert model.teacher_ckpt == zoo[model.teacher.cfg_path], name
