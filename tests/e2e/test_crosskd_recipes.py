"""Every COCO CrossKD config resolves to the official CrossKD recipe
(``../shared/CROSSKD_SPEC.md``: teacher, schedule, k, loss weights), the
values typed in below, not read from any config; the stacked ones add the
PCKA levels of the PCKA recipe for the same pair. The data and the schedule
are the student's own mmdet config (single-scale 1333x800, 2 images per
GPU, SGD 0.01; RetinaNet 2x, GFL 1x)."""
import functools
import glob
import os.path as osp
import re

import pytest
from conftest import ROOT
from mmengine.config import Config
from test_pcka_recipes import ZOO, _model_zoo, _plain, plain_pipelines

CROSSKD = osp.join(ROOT, 'configs', 'crosskd')
model_zoo = functools.lru_cache(maxsize=None)(_model_zoo)  # read once
RETINA = dict(
    student='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
    teacher='mmdet::retinanet/retinanet_r101_fpn_2x_coco.py',
    teacher_ckpt=ZOO + 'retinanet/retinanet_r101_fpn_2x_coco/'
    'retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth',
    head=dict(head_conv=3, loss=dict(type='CrossKDLoss', cls_weight=1.0,
                                     giou_weight=1.0)),
    epochs=24, milestones=[16, 22])
GFL = dict(
    student='mmdet::gfl/gfl_r50_fpn_1x_coco.py',
    teacher='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py',
    teacher_ckpt=ZOO + 'gfl/gfl_r101_fpn_mstrain_2x_coco/'
    'gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth',
    head=dict(head_conv=3, loss=dict(
        type='CrossKDGFLLoss', cls_weight=1.0, ld_weight=3.0,
        giou_weight=2.0)),
    epochs=12, milestones=[8, 11])


def pcka(inter=None):
    """The PCKA recipe's levels: FPN outputs 0-3, 16-cell patches."""
    return {f'pcka_p{i + 3}': dict(
        recorder='fpn', index=i, loss=dict(
            type='PatchCKALoss', patch_size=16, intra_weight=10.0,
            **(dict(inter_weight=inter) if inter else {})))
        for i in range(4)}


RECIPES = {
    'crosskd_retina_r101_r50.py': dict(RETINA, features={}),
    'pcka_crosskd_retina_r101_r50.py': dict(RETINA, features=pcka()),
    'crosskd_gfl_r101_r50.py': dict(GFL, features={}),
    'pcka_crosskd_gfl_r101_r50.py': dict(GFL, features=pcka(inter=10.0)),
}


def test_every_crosskd_config_has_a_recipe_and_a_readme_row():
    on_disk = {osp.basename(p) for p in glob.glob(osp.join(CROSSKD, '*.py'))}
    assert on_disk == set(RECIPES)
    with open(osp.join(CROSSKD, 'README.md')) as f:
        linked = set(re.findall(r'\]\(([\w.-]+\.py)\)', f.read()))
    assert on_disk <= linked


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_crosskd_recipe(name):
    import pcka_det  # noqa: F401  (pcka_det:: scope, our loss types)
    recipe = RECIPES[name]
    cfg = Config.fromfile(osp.join(CROSSKD, name))
    model = cfg.model
    assert model.type == 'FeatureDistiller'
    assert model.student.to_dict() == dict(cfg_path=recipe['student'])
    assert model.teacher.to_dict() == dict(cfg_path=recipe['teacher'])
    assert model.teacher_ckpt == recipe['teacher_ckpt']
    levels = _plain(model.distill_losses)
    assert levels.pop('crosskd') == recipe['head']
    assert levels == recipe['features']
    if recipe['features']:
        assert _plain(model.recorders) == dict(fpn='neck')
    # the student's data and schedule: 1333x800, SGD 0.01, 2 per GPU
    train, test = plain_pipelines()
    assert _plain(cfg.train_dataloader.dataset.pipeline) == train
    assert _plain(cfg.val_dataloader.dataset.pipeline) == test
    assert cfg.train_dataloader.batch_size == 2
    assert _plain(cfg.auto_scale_lr) == dict(enable=False, base_batch_size=16)
    assert _plain(cfg.optim_wrapper) == dict(
        type='GuardedOptimWrapper', optimizer=dict(
            type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
    assert _plain(cfg.train_cfg) == dict(
        type='ExactResumeEpochBasedTrainLoop', max_epochs=recipe['epochs'],
        val_interval=1)
    assert _plain(cfg.param_scheduler)[1] == dict(
        type='MultiStepLR', begin=0, end=recipe['epochs'], by_epoch=True,
        milestones=recipe['milestones'], gamma=0.1)
    assert cfg.runner_type == 'DistillRunner'
    assert 'pcka_det' in cfg.custom_imports.imports
    # the teacher checkpoint is the one mmdet's metafile lists for it
    assert model.teacher_ckpt == model_zoo()[recipe['teacher']]
