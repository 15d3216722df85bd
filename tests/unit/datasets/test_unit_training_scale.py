"""The training image size read from a config's pipeline
(:func:`pcka_det.datasets.training_scale`), which the pre-flight check and
``new_config`` use."""
import pytest
from mmengine.config import Config

from pcka_det.config_paths import resolve_config_path
from pcka_det.datasets import training_scale


def _scale(path):
    return training_scale(Config.fromfile(resolve_config_path(path)))


@pytest.mark.parametrize('path, size, source', [
    # DINO's RandomChoice: both branches end on a 480-800 x 1333 resize
    # (was: no size found, the COCO default 800x1333 assumed)
    ('mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py', (480, 1333),
     'RandomChoice'),
    ('mmdet::retinanet/retinanet_r50_fpn_2x_coco.py', (800, 1333),
     'Resize scale'),
], ids=['dino', 'retinanet'])
def test_mmdet_configs(path, size, source):
    found, where = _scale(path)
    assert found == size and where.startswith(source), (found, where)


def _pipeline(*transforms):
    return Config(dict(train_dataloader=dict(dataset=dict(
        pipeline=[dict(type='LoadImageFromFile'), *transforms]))))


def test_random_choice_takes_its_smallest_branch_and_its_last_resize():
    cfg = _pipeline(dict(type='RandomChoice', transforms=[
        [dict(type='Resize', scale=(1333, 800), keep_ratio=True)],
        # the second resize decides this branch's size
        [dict(type='Resize', scale=(4200, 400), keep_ratio=True),
         dict(type='Resize', scale=(1000, 600), keep_ratio=True)],
    ]))
    assert training_scale(cfg)[0] == (600, 1000)
