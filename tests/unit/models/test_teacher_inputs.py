"""The teacher sees the batch normalised its own way, not the student's."""
import copy

import pytest
import torch
from mmdet.testing import demo_mm_inputs

from mmdet.registry import MODELS

STUDENT = dict(cfg_path='pcka_det::toy/retinanet_thin-r18_toy.py')
TEACHER = dict(cfg_path='pcka_det::toy/retinanet_r18_toy.py')
# mmdet's caffe-style backbones (e.g. FCOS R101-caffe): BGR, std 1
CAFFE = dict(type='DetDataPreprocessor', mean=[103.53, 116.28, 123.675],
             std=[1.0, 1.0, 1.0], bgr_to_rgb=False, pad_size_divisor=32)
# YOLO-style: RGB scaled to [0, 1]; the student's padding (0 after its
# normalisation) is not 0 after this one, so padding must be restored
UNIT = dict(type='DetDataPreprocessor', mean=[0.0, 0.0, 0.0],
            std=[255.0, 255.0, 255.0], bgr_to_rgb=True, pad_size_divisor=32)


def _distiller(teacher):
    return MODELS.build(dict(
        type='FeatureDistiller', student=STUDENT, teacher=teacher,
        recorders=dict(fpn='neck'), allow_random_teacher=True,
        distill_losses=dict(p3=dict(recorder='fpn', index=0, loss=dict(
            type='PatchCKALoss', patch_size=4)))))


def _raw_batch():
    # two sizes, so the batch has padding below and right of one image
    torch.manual_seed(0)
    return demo_mm_inputs(batch_size=2, image_shapes=[(3, 96, 128),
                                                      (3, 70, 100)],
                          num_items=[2, 2], num_classes=6)


@pytest.mark.parametrize('preprocessor', [CAFFE, UNIT])
def test_teacher_gets_its_own_normalisation(preprocessor):
    model = _distiller(dict(TEACHER, data_preprocessor=preprocessor))
    raw = _raw_batch()
    student_batch = model.data_preprocessor(copy.deepcopy(raw), True)
    expected = model.teacher.data_preprocessor(copy.deepcopy(raw),
                                               True)['inputs']
    assert not torch.allclose(student_batch['inputs'], expected, atol=0.1)
    got = model.teacher_inputs(student_batch['inputs'],
                               student_batch['data_samples'])
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-3)

    # and the teacher's backbone really receives it during the loss
    seen = []
    handle = model.teacher.backbone.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].clone()))
    model(**student_batch, mode='loss')
    handle.remove()
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=1e-3)


def test_same_normalisation_costs_nothing():
    model = _distiller(TEACHER)
    assert model.teacher_inputs is None
