"""``python -m pcka_det.new_config``: the configs it writes for the COCO
pairs equal ours in what they distil, and pairs it cannot pair are refused
with the reason."""
import pytest
from conftest import ROOT
from mmengine.config import Config

from pcka_det.new_config import PairingError, new_config, patch_size_for

COCO_PAIRS = [
    ('retinanet/retinanet_r101_fpn_2x_coco.py',
     'retinanet/retinanet_r50_fpn_2x_coco.py', 'retina_r101_r50.py'),
    ('faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
     'faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py', 'faster_rcnn_r101_r50.py'),
    ('rtmdet/rtmdet_l_8xb32-300e_coco.py',
     'rtmdet/rtmdet_s_8xb32-300e_coco.py', 'rtmdet_l_s.py'),
]


def distilled(cfg: Config) -> dict:
    """What a distillation config distils: per loss name, the level
    index, patch size, weights and connector widths (recorder names, a
    label, left out)."""
    out = {}
    for name, spec in cfg.model.distill_losses.items():
        loss = spec['loss']
        connector = spec.get('connector')
        out[name] = dict(
            index=spec['index'], type=loss['type'],
            patch_size=loss['patch_size'],
            intra=loss.get('intra_weight'), inter=loss.get('inter_weight'),
            connector=None if connector is None else
            (connector['type'], connector['in_channels'],
             connector['out_channels']))
    return out


@pytest.mark.parametrize('teacher, student, ours', COCO_PAIRS,
                         ids=['retina', 'faster_rcnn', 'rtmdet'])
def test_writes_the_coco_configs_we_ship(tmp_path, teacher, student, ours):
    out = tmp_path / 'my_distill.py'
    ckpt = 'https://download.openmmlab.com/teacher.pth'
    new_config('mmdet::' + teacher, ckpt, 'mmdet::' + student, str(out))
    written = Config.fromfile(str(out))
    shipped = Config.fromfile(f'{ROOT}/configs/pcka/{ours}')
    assert distilled(written) == distilled(shipped)
    assert written.model.teacher_ckpt == ckpt
    # the student's data and schedule are kept
    assert written.model.student.cfg_path == 'mmdet::' + student
    assert written.train_cfg == shipped.train_cfg
    assert written.runner_type == 'DistillRunner'


def test_patch_size_leaves_two_patches():
    assert patch_size_for((1, 8, 100, 168)) == 16
    assert patch_size_for((1, 8, 13, 21)) == 16  # 1 x 2 patches
    assert patch_size_for((1, 8, 12, 12)) == 8
    assert patch_size_for((1, 8, 3, 3)) == 2
    assert patch_size_for((1, 8, 1, 2)) == 1
    assert patch_size_for((1, 8, 1, 1)) is None


def test_refuses_other_class_counts(tmp_path):
    student = tmp_path / 'student.py'
    student.write_text("_base_ = 'pcka_det::toy/retinanet_thin-r18_toy.py'\n"
                       'model = dict(bbox_head=dict(num_classes=3))\n')
    with pytest.raises(PairingError, match=r'teacher predicts \[6\] classes '
                       r'and the student \[3\]'):
        new_config('pcka_det::toy/retinanet_r18_toy.py', 't.pth',
                   str(student), str(tmp_path / 'out.py'))
    assert not (tmp_path / 'out.py').exists()


def test_refuses_a_pair_without_a_common_stride(tmp_path):
    # a student whose one neck output has stride 4: the toy RetinaNet
    # teacher's are 8-128, so nothing can be paired without resizing
    student = tmp_path / 'student.py'
    student.write_text(
        "_base_ = 'pcka_det::toy/retinanet_thin-r18_toy.py'\n"
        'model = dict(backbone=dict(out_indices=(0, )), neck=dict('
        'in_channels=[16], start_level=0, num_outs=1, '
        'add_extra_convs=False), bbox_head=dict(anchor_generator=dict('
        'strides=[4])))\n')
    with pytest.raises(PairingError, match=r'no neck output of the student '
                       r'\(strides \[4\]\) has the stride of one of the '
                       r"teacher's \(\[8, 16, 32, 64, 128\]\)"):
        new_config('pcka_det::toy/retinanet_r18_toy.py', 't.pth',
                   str(student), str(tmp_path / 'out.py'))
    assert not (tmp_path / 'out.py').exists()


def test_pairs_shifted_levels_by_stride(tmp_path):
    # Faster R-CNN's FPN starts at stride 4, RetinaNet's at 8: the common
    # strides are different outputs of the two necks, each side names its
    # own (was refused: "FeatureDistiller pairs the same output index")
    out = tmp_path / 'out.py'
    p = new_config('pcka_det::toy/faster_rcnn_r18_toy.py', 't.pth',
                   'pcka_det::toy/retinanet_thin-r18_toy.py', str(out))
    assert [(lv['stride'], lv['index'], lv['teacher_index'])
            for lv in p['levels']] == [(8, 0, 1), (16, 1, 2), (32, 2, 3),
                                       (64, 3, 4)]
    cfg = Config.fromfile(str(out))
    assert {name: spec['index'] for name, spec in
            cfg.model.distill_losses.items()} == {
        f'pcka_p{k + 3}': dict(student=k, teacher=k + 1) for k in range(4)}
    assert 'stride 16 student 1 <-> teacher 2,' in out.read_text()


def test_student_with_custom_imports_gets_a_config_that_loads(tmp_path):
    """MMEngine refuses a key two _base_ files set: a student config with
    its own custom_imports (timm, ConvNeXt, user plugins) keeps them, with
    pcka_det added, and the written config loads."""
    student = tmp_path / 'student.py'
    student.write_text(
        "_base_ = 'pcka_det::toy/retinanet_thin-r18_toy.py'\n"
        "custom_imports = dict(imports=['mmdet.models'], "
        'allow_failed_imports=False)\n')
    out = tmp_path / 'out.py'
    new_config('pcka_det::toy/retinanet_r18_toy.py', 't.pth', str(student),
               str(out))
    cfg = Config.fromfile(str(out))
    assert cfg.custom_imports.imports == ['mmdet.models', 'pcka_det']
    assert cfg.runner_type == 'DistillRunner'
    assert [spec['loss']['patch_size'] for spec in
            cfg.model.distill_losses.values()] == [16, 8, 4, 2]
