"""A user's first run cannot go silently wrong.

Each case is a short config inheriting the toy PCKA config, as a user would
write it, run through ``tools/train.py``'s own ``main`` (the same function,
in-process to keep the suite fast): every mistake that used to train for
the whole schedule now stops at build time or at the pre-flight check (one
dummy image at the training scale, before the dataloaders), with a message
naming the fix. One end-to-end run (subprocess, the real command) checks
that our warnings land in the run's log file, per level.
"""
import glob
import math
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TOY_DISTILL, toy_options

from pcka_det.train import main as train_main

TOY_TEACHER = 'pcka_det::toy/retinanet_r18_toy.py'


def write_config(tmp_path, body: str) -> str:
    """A user config: ``_base_`` on the toy PCKA config plus ``body``."""
    path = tmp_path / 'user_distill.py'
    path.write_text(f'_base_ = {TOY_DISTILL!r}\n{body}\n')
    return str(path)


def train(tmp_path, config: str, data_root, teacher_ckpt, **extra):
    """``tools/train.py CONFIG --work-dir W --cfg-options ...``."""
    opts = toy_options(data_root, teacher_ckpt, **extra)
    if 'teacher_ckpt=None' in open(config).read():
        del opts['model.teacher_ckpt']  # the config's own setting counts
    argv = [config, '--work-dir', str(tmp_path / 'work'), '--cfg-options']
    argv += [f'{k}={v}' for k, v in opts.items()]
    return train_main(argv)


def fails(tmp_path, tiny_coco, teacher, body, error, match, **extra):
    config = write_config(tmp_path, body)
    with pytest.raises(error, match=match) as e:
        train(tmp_path, config, tiny_coco, teacher, **extra)
    # nothing was trained: no checkpoint in the work dir
    assert not glob.glob(str(tmp_path / 'work' / '*.pth'))
    return str(e.value)


def losses_with(**loss) -> str:
    """distill_losses overriding the inherited P3 loss's settings."""
    args = ', '.join(f'{k}={v!r}' for k, v in loss.items())
    return f'model = dict(distill_losses=dict(pcka_p3=dict(loss=dict({args}))))'


# 1. negative or non-numeric weights, non-integer patch sizes: at build time


@pytest.mark.parametrize('loss, words', [
    (dict(loss_weight=-1.0), ['loss_weight', '-1.0']),
    (dict(intra_weight=-2.0), ['intra_weight', '-2.0']),
    (dict(intra_weight='2'), ['intra_weight', "'2'", 'str']),
    (dict(patch_size=2.5), ['patch_size', '2.5', 'integer']),
])
def test_bad_loss_settings_refused_when_built(tmp_path, tiny_coco,
                                              toy_teacher_ckpt, loss, words):
    msg = fails(tmp_path, tiny_coco, toy_teacher_ckpt, losses_with(**loss),
                ValueError, 'PatchCKALoss')
    assert 'distill_losses.pcka_p3.loss' in msg
    for word in words:
        assert word in msg, msg


# 2. a patch size that leaves one patch on a level


def test_single_patch_level_refused_before_training(tmp_path, tiny_coco,
                                                    toy_teacher_ckpt):
    # P3 of the 192x192 toy images is 24x24: a 32-cell patch covers it all
    msg = fails(tmp_path, tiny_coco, toy_teacher_ckpt,
                losses_with(patch_size=32), ValueError, 'single patch')
    assert 'pcka_p3' in msg and '24x24' in msg
    assert 'patch_size <= 23' in msg and 'allow_single_patch' in msg


# 3.-5. levels that are not paired: an error, not a resize


@pytest.mark.parametrize('body', [
    # 3. a teacher whose FPN starts one level later
    f'model = dict(teacher=dict(cfg_path={TOY_TEACHER!r}, '
    'neck=dict(start_level=2)), teacher_ckpt=None, '
    'allow_random_teacher=True)',
    # 4. a Faster R-CNN teacher (P2-P6) for a RetinaNet student (P3-P7)
    "model = dict(teacher=dict(cfg_path='pcka_det::toy/"
    "faster_rcnn_r18_toy.py'), teacher_ckpt=None, "
    'allow_random_teacher=True)',
    # 5. recorders on stages of different depth
    "model = dict(recorders=dict(_delete_=True, c=dict("
    "student='backbone.layer2', teacher='backbone.layer3')), "
    'distill_losses=dict(_delete_=True, c=dict(recorder="c", '
    'connector=dict(type="ConvConnector", in_channels=32, '
    'out_channels=256), loss=dict(type="PatchCKALoss", patch_size=4))))',
], ids=['start_level', 'faster_teacher', 'stage_depth'])
def test_unpaired_levels_refused_before_training(tmp_path, tiny_coco,
                                                 toy_teacher_ckpt, body):
    msg = fails(tmp_path, tiny_coco, toy_teacher_ckpt, body, ValueError,
                'same spatial size')
    assert 'start_level' in msg and "resize='bilinear'" in msg
    assert 'index=dict(student=i, teacher=j)' in msg  # the per-side fix


def test_resize_on_request_passes(tmp_path):
    """``resize='bilinear'`` on every level keeps the old behaviour for
    those who mean it: the pre-flight check passes."""
    from mmengine.config import Config

    from mmdet.registry import MODELS
    cfg = Config.fromfile(write_config(
        tmp_path, "model = dict(teacher=dict(cfg_path='pcka_det::toy/"
        "faster_rcnn_r18_toy.py'), teacher_ckpt=None, "
        'allow_random_teacher=True, distill_losses={f"pcka_p{i}": '
        'dict(resize="bilinear") for i in range(3, 7)})'))
    model = MODELS.build(cfg.model)
    model.preflight((192, 192))
    del cfg.model.distill_losses['pcka_p6']['resize']
    model = MODELS.build(cfg.model)
    with pytest.raises(ValueError, match='pcka_p6.*same spatial size'):
        model.preflight((192, 192))


# 6. no distillation loss at all


def test_empty_distill_losses_refused(tmp_path, tiny_coco, toy_teacher_ckpt):
    msg = fails(tmp_path, tiny_coco, toy_teacher_ckpt,
                'model = dict(distill_losses=dict(_delete_=True))',
                ValueError, 'distill_losses is empty')
    assert 'plain student config' in msg


# 7. a random teacher


def test_random_teacher_refused(tmp_path, tiny_coco, toy_teacher_ckpt):
    msg = fails(tmp_path, tiny_coco, toy_teacher_ckpt,
                'model = dict(teacher_ckpt=None)', ValueError,
                'teacher_ckpt is None')
    assert 'allow_random_teacher' in msg


# late or misleading errors, now early and naming the fix


def test_index_none_on_fpn_names_outputs(tmp_path, tiny_coco,
                                         toy_teacher_ckpt):
    msg = fails(tmp_path, tiny_coco, toy_teacher_ckpt,
                'model = dict(distill_losses=dict(pcka_p3=dict(index=None)))',
                IndexError, 'index=None')
    assert 'pcka_p3' in msg and '5 outputs' in msg


def test_connector_of_wrong_width_names_width(tmp_path, tiny_coco,
                                              toy_teacher_ckpt):
    # both toy FPNs are 128 wide: a connector to 32 channels is wrong
    msg = fails(tmp_path, tiny_coco, toy_teacher_ckpt,
                'model = dict(distill_losses=dict(pcka_p3=dict(connector='
                'dict(type="ConvConnector", in_channels=128, '
                'out_channels=32))))', ValueError, 'connector outputs 32')
    assert 'out_channels=128' in msg and 'add a connector' not in msg


def test_loss_name_differing_in_case_is_named(tmp_path, tiny_coco,
                                              toy_teacher_ckpt):
    msg = fails(tmp_path, tiny_coco, toy_teacher_ckpt,
                'model = dict(distill_losses=dict(pcka_P3=dict(loss=dict('
                'patch_size=2))))', ValueError, 'differ only in case')
    assert 'pcka_p3' in msg and 'recorder' not in msg


def test_unknown_spec_key_singled_out(tmp_path, tiny_coco, toy_teacher_ckpt):
    msg = fails(tmp_path, tiny_coco, toy_teacher_ckpt,
                'model = dict(distill_losses=dict(pcka_p3=dict(indx=1)))',
                ValueError, r"unknown key\(s\) \['indx'\]")
    assert 'distill_losses.pcka_p3' in msg


def test_teacher_ckpt_directory(tmp_path, tiny_coco, toy_teacher_ckpt):
    msg = fails(tmp_path, tiny_coco, toy_teacher_ckpt, '',
                IsADirectoryError, 'is a directory',
                **{'model.teacher_ckpt': str(toy_teacher_ckpt.parent)})
    assert 'teacher.pth' in msg  # what the directory holds


def test_teacher_url_without_network(tmp_path, tiny_coco, toy_teacher_ckpt,
                                     monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'hub'))
    # connection refused at once: the same branch as a model-zoo URL offline
    url = 'http://127.0.0.1:9/retinanet_r101_fpn_2x_coco.pth'
    msg = fails(tmp_path, tiny_coco, toy_teacher_ckpt, '', RuntimeError,
                'download of .* failed', **{'model.teacher_ckpt': url})
    assert 'no network?' in msg and 'model.teacher_ckpt to a local file' in msg


def test_distiller_checkpoint_as_teacher(tmp_path, tiny_coco,
                                         toy_teacher_ckpt):
    state = torch.load(toy_teacher_ckpt)['state_dict']
    path = tmp_path / 'epoch_1.pth'
    torch.save(dict(state_dict={f'student.{k}': v for k, v in state.items()}),
               path)
    msg = fails(tmp_path, tiny_coco, toy_teacher_ckpt, '', RuntimeError,
                'is a FeatureDistiller checkpoint',
                **{'model.teacher_ckpt': str(path)})
    assert 'export_student' in msg


# 10. warnings reach the run's log file, per level


@pytest.mark.slow
def test_warnings_in_log_file_per_level(tmp_path, tiny_coco):
    """Two single-patch levels the user accepted, a random teacher and a
    training image without annotations: each warning is in the work dir's
    log file, once per level and cause."""
    import json
    import shutil
    data = tmp_path / 'data'
    shutil.copytree(tiny_coco, data)
    ann = data / 'annotations' / 'instances_train.json'
    coco = json.loads(ann.read_text())
    first = coco['images'][0]['id']
    coco['annotations'] = [a for a in coco['annotations']
                           if a['image_id'] != first]
    ann.write_text(json.dumps(coco))
    config = write_config(
        tmp_path, 'model = dict(teacher_ckpt=None, allow_random_teacher=True,'
        ' distill_losses=dict('
        'pcka_p3=dict(loss=dict(patch_size=32, allow_single_patch=True)), '
        'pcka_p4=dict(loss=dict(patch_size=32, allow_single_patch=True))))')
    opts = toy_options(data, 'unused', **{'train_cfg.max_epochs': 1})
    del opts['model.teacher_ckpt']
    work = tmp_path / 'work'
    out = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
         '--work-dir', str(work), '--cfg-options',
         *[f'{k}={v}' for k, v in opts.items()]],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    logs = glob.glob(str(work / '*' / '*.log'))
    assert len(logs) == 1, logs
    log = open(logs[0]).read()
    single = [line for line in log.splitlines()
              if 'gives a single patch' in line and 'WARNING' in line]
    # one per dead level (24x24 P3 and 12x12 P4), not one per process
    assert len(single) == 2, single
    assert any('(24, 24)' in line for line in single)
    assert any('(12, 12)' in line for line in single)
    assert sum('teacher keeps random weights' in line
               for line in log.splitlines()) == 1
    assert 'pre-flight' in log
    unlabelled = [line for line in log.splitlines()
                  if "have no annotation of the dataset's classes" in line]
    assert len(unlabelled) == 1 and 'WARNING' in unlabelled[0], unlabelled


def test_missing_torchvision_named_before_data(monkeypatch):
    """A student whose backbone inits from ``torchvision://`` (every COCO
    student) needs torchvision: named before the data is loaded, not by
    MMEngine's raw ModuleNotFoundError after it."""
    from pcka_det.models import build_detector
    from pcka_det.engine import check_pretrained_sources
    student = build_detector(
        dict(cfg_path='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py'))
    check_pretrained_sources(student)  # torchvision is installed
    monkeypatch.setitem(sys.modules, 'torchvision', None)
    with pytest.raises(ModuleNotFoundError,
                       match='torchvision://resnet50.*torchvision built'):
        check_pretrained_sources(student)


# 10. nonfinite='raise', the documented alternative to 'skip', through the
# user's command: it trains, and it stops on the first NaN distillation loss


def test_nonfinite_raise_trains(tmp_path, tiny_coco, toy_teacher_ckpt):
    config = write_config(tmp_path, "model = dict(nonfinite='raise')")
    train(tmp_path, config, tiny_coco, toy_teacher_ckpt)
    work = tmp_path / 'work'
    assert (work / 'student_last.pth').is_file()
    # the run's text log (the visualizer's files are shared in a process)
    log = open(glob.glob(str(work / '*' / '*.log'))[0]).read()
    values = [float(v) for v in re.findall(r'loss_pcka_p\d: (\S+)', log)]
    assert len(values) == 4 * 4  # 4 levels x 4 steps, all logged
    assert all(math.isfinite(v) and v > 0 for v in values)


def test_nonfinite_raise_stops_naming_the_level(tmp_path, tiny_coco,
                                                toy_teacher_ckpt,
                                                monkeypatch):
    from mmdet.models.data_preprocessors import DetDataPreprocessor
    forward, steps = DetDataPreprocessor.forward, []

    def inf_at_step_2(self, data, training=False):
        out = forward(self, data, training)
        if training:
            steps.append(1)
            if len(steps) == 2:
                out['inputs'][0] = out['inputs'][0] * float('inf')
        return out

    monkeypatch.setattr(DetDataPreprocessor, 'forward', inf_at_step_2)
    config = write_config(tmp_path, "model = dict(nonfinite='raise')")
    with pytest.raises(FloatingPointError, match='"pcka_p3" is nan'):
        train(tmp_path, config, tiny_coco, toy_teacher_ckpt)
    assert len(steps) == 2  # the first bad step, not later
