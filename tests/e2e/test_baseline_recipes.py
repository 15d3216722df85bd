"""The COCO baseline configs reproduce mmrazor 1.0.0's published recipes,
and the toy baselines distil the same levels as the toy PCKA config.

The expected values are typed in from the mmrazor 1.0.0 configs
(``mmrazor/.mim/configs/distill/mmdet/``), not read from our configs, so a
change to a config, or to the PCKA config it inherits, that moves a
baseline off its published recipe fails here. Configs are only parsed.
"""
import glob
import os.path as osp

import pytest
from conftest import ROOT
from mmengine.config import Config

ZOO = 'https://download.openmmlab.com/mmdetection/v2.0/'

# config -> recipe of the mmrazor 1.0.0 file named in `source`, with its
# _base_ chain and the mmdet configs that chain inherits resolved.
RECIPES = {
    'pkd_retina_x101_r50.py': dict(
        source='pkd/pkd_fpn_retina_x101_retina_r50_2x_coco.py',
        published_ap='40.8',
        student='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
        teacher='mmdet::retinanet/retinanet_x101-64x4d_fpn_1x_coco.py',
        teacher_ckpt=ZOO + 'retinanet/retinanet_x101_64x4d_fpn_1x_coco/'
        'retinanet_x101_64x4d_fpn_1x_coco_20200130-366f5af1.pth',
        indices=[0, 1, 2, 3],
        loss=dict(type='PKDLoss', loss_weight=10),
        lr=0.01,
        max_epochs=24,
        milestones=[16, 22]),
    'pkd_faster_rcnn_r101_r50.py': dict(
        source='pkd/pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py',
        published_ap='40.4',
        student='mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py',
        teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
        teacher_ckpt=ZOO + 'faster_rcnn/faster_rcnn_r101_fpn_2x_coco/'
        'faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455'
        '-1d2dac9c.pth',
        indices=[0, 1, 2, 3],
        loss=dict(type='PKDLoss', loss_weight=6),
        lr=0.02,
        max_epochs=24,
        milestones=[16, 22]),
    'cwd_retina_r101_r50_1x.py': dict(
        source='cwd/cwd_fpn_retina_r101_retina_r50_1x_coco.py',
        published_ap=None,  # mmrazor 1.0.0 publishes none for this config
        student='mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
        teacher='mmdet::retinanet/retinanet_r101_fpn_2x_coco.py',
        # mmrazor: teacher pretrained=True, i.e. mmdet's model-zoo weights of
        # retinanet_r101_fpn_2x_coco (its inherited teacher_ckpt, a local
        # Faster R-CNN file name, is a leftover of its base config).
        teacher_ckpt=ZOO + 'retinanet/retinanet_r101_fpn_2x_coco/'
        'retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth',
        indices=[0, 1, 2, 3, 4],
        loss=dict(type='ChannelWiseDivergence', tau=1, loss_weight=10),
        lr=0.01,
        max_epochs=12,
        milestones=[8, 11]),
}
# Baselines with no published detection recipe (said so in their header).
UNPUBLISHED = {'fitnet_retina_r101_r50.py'}

BASELINES = osp.join(ROOT, 'configs', 'baselines')


def _load(name: str) -> Config:
    import pcka_det  # noqa: F401  (pcka_det:: scope, our loss types)
    return Config.fromfile(osp.join(BASELINES, name))


def test_every_baseline_has_a_recipe_or_says_it_has_none():
    on_disk = {osp.basename(p) for p in glob.glob(osp.join(BASELINES, '*.py'))}
    assert on_disk == set(RECIPES) | UNPUBLISHED
    for name in UNPUBLISHED:
        with open(osp.join(BASELINES, name)) as f:
            assert 'No published recipe' in f.read(), name


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_baseline_matches_mmrazor_recipe(name):
    recipe = RECIPES[name]
    cfg = _load(name)
    model = cfg.model
    assert model.type == 'FeatureDistiller'
    # pair and teacher weights
    assert model.student.to_dict() == dict(cfg_path=recipe['student'])
    assert model.teacher.to_dict() == dict(cfg_path=recipe['teacher'])
    assert model.teacher_ckpt == recipe['teacher_ckpt']
    # mmrazor records `neck` on both models; one loss per FPN output index
    assert model.recorders.to_dict() == dict(fpn='neck')
    specs = list(model.distill_losses.values())
    assert sorted(s['index'] for s in specs) == recipe['indices']
    for spec in specs:
        assert spec['recorder'] == 'fpn'
        assert spec.get('connector') is None
        assert spec['loss'].to_dict() == recipe['loss']
    # schedule: mmdet's SGD (momentum 0.9, wd 1e-4), 500-iter linear warm-up
    # and step decay, 2 images per GPU; lr, epochs, steps per recipe
    optim = cfg.optim_wrapper.optimizer
    assert (optim.type, optim.lr, optim.momentum, optim.weight_decay) == (
        'SGD', recipe['lr'], 0.9, 0.0001)
    assert cfg.train_cfg.max_epochs == recipe['max_epochs']
    warmup, step = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end,
            warmup.by_epoch) == ('LinearLR', 0.001, 500, False)
    assert (step.type, step.end, step.milestones, step.gamma) == (
        'MultiStepLR', recipe['max_epochs'], recipe['milestones'], 0.1)
    assert cfg.train_dataloader.batch_size == 2
    # the header names its source and the published AP
    with open(osp.join(BASELINES, name)) as f:
        header = f.read().split('_base_')[0].replace('#', ' ')
    assert 'mmrazor 1.0.0' in header
    assert recipe['source'].split('/')[-1] in ''.join(header.split())
    if recipe['published_ap'] is None:
        assert 'no AP' in header
    else:
        assert f'AP {recipe["published_ap"]}' in header


TOY_METHODS = ('pcka', 'pkd', 'cwd', 'fitnet')


def _toy_levels(method: str):
    import pcka_det  # noqa: F401
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs', 'toy', f'{method}_retinanet_r18_thin-r18_toy.py'))
    model = cfg.model
    levels = sorted((s['recorder'], s['index'])
                    for s in model.distill_losses.values())
    return dict(levels=levels,
                recorders=model.recorders.to_dict(),
                student=model.student.to_dict(),
                teacher=model.teacher.to_dict(),
                max_epochs=cfg.train_cfg.max_epochs)


def test_toy_methods_distil_the_same_levels():
    pcka = _toy_levels('pcka')
    assert pcka['levels'] == [('fpn', 0), ('fpn', 1), ('fpn', 2), ('fpn', 3)]
    for method in TOY_METHODS[1:]:
        assert _toy_levels(method) == pcka, method
