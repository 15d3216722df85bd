"""``pkg::`` config paths: MMEngine's metafile lookup, cached per process,
answers as MMEngine's own and reads mmdet's metafiles once."""
import importlib

import pytest
from mmengine.config import Config
from mmengine.config import utils as config_utils
from mmengine.utils import get_installed_path

from pcka_det import config_paths

MMDET = get_installed_path('mmdet')


def _mmengine_original():
    """MMEngine's own ``_get_cfg_metainfo``, from a fresh copy of its
    module (the imported one is patched by ``import pcka_det``)."""
    fresh = importlib.util.module_from_spec(
        importlib.util.find_spec('mmengine.config.utils'))
    fresh.__spec__.loader.exec_module(fresh)
    return fresh._get_cfg_metainfo


def test_import_installs_the_cached_lookup():
    assert config_utils._get_cfg_metainfo is \
        config_paths.cached_cfg_metainfo


@pytest.mark.parametrize('name', [
    'retinanet/retinanet_r50_fpn_1x_coco.py',
    'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    'dino/dino-5scale_swin-l_8xb2-12e_coco.py',
    'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    # two entries (albu's Mask R-CNN, RPN 2x) whose Config has no folder
    # share this name: MMEngine keeps the first
    '',
])
def test_same_entry_as_mmengine(name):
    original = _mmengine_original()
    assert config_paths.cached_cfg_metainfo(MMDET, name) == \
        original(MMDET, name)


@pytest.mark.parametrize('name', [
    '_base_/models/retinanet_r50_fpn',
    # what MMEngine 0.10.7 asks for a model-zoo config (``.py`` stripped,
    # while the metafiles' names keep it): not found either, and MMEngine
    # falls back to the plain path
    'retinanet/retinanet_r50_fpn_1x_coco',
])
def test_same_error_for_a_name_not_in_the_metafiles(name):
    """MMEngine's ValueError (it lists every name), on which it resolves
    the plain path."""
    original = _mmengine_original()
    with pytest.raises(ValueError) as want:
        original(MMDET, name)
    with pytest.raises(ValueError) as got:
        config_paths.cached_cfg_metainfo(MMDET, name)
    assert str(got.value) == str(want.value)


def test_metafiles_read_once_per_process(monkeypatch, tmp_path):
    """Two loads of a config with four ``mmdet::`` bases read mmdet's
    model index once (MMEngine alone: once per base and load, 8 times)."""
    monkeypatch.setattr(config_paths, '_METAINFO', {})
    reads = []
    load = config_paths.mmengine_load
    monkeypatch.setattr(config_paths, 'mmengine_load',
                        lambda path: reads.append(path) or load(path))
    cfg = tmp_path / 'toy.py'
    cfg.write_text("_base_ = [\n" + ''.join(
        f"    'mmdet::_base_/{rel}',\n" for rel in (
            'models/retinanet_r50_fpn.py', 'datasets/coco_detection.py',
            'schedules/schedule_1x.py', 'default_runtime.py')) + ']\n')
    for _ in range(2):
        assert Config.fromfile(str(cfg)).model.type == 'RetinaNet'
    assert sum(p.endswith('model-index.yml') for p in reads) == 1
    assert len(reads) == len(set(reads)) > 50
