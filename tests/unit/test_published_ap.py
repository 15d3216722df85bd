"""check's teacher AP beside the model zoo's: the AP mmdet's metafiles list
for a checkpoint URL, and the verdict when the measured AP is far below."""
import pytest

from pcka_det.check import OK, WARN, Report, teacher_ap_verdict
from pcka_det.evaluation import published_box_ap

RETINA_R101_2X = ('https://download.openmmlab.com/mmdetection/v2.0/retinanet/'
                  'retinanet_r101_fpn_2x_coco/'
                  'retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth')


def test_model_zoo_ap_of_a_url():
    # mmdet's RetinaNet README: R-101-FPN 2x, box AP 38.9
    assert published_box_ap(RETINA_R101_2X) == ('retinanet_r101_fpn_2x_coco',
                                                38.9)
    assert published_box_ap('work_dirs/teacher/epoch_12.pth') is None
    assert published_box_ap(None) is None


@pytest.mark.parametrize('measured, status', [(0.10, WARN), (0.19, WARN),
                                              (0.20, OK), (0.37, OK)])
def test_teacher_ap_verdict(measured, status):
    report = Report('x.py')
    found = dict(images=50, metrics={'coco/bbox_mAP': measured})
    teacher_ap_verdict(report, found, RETINA_R101_2X)
    (verdict, ) = report.data['verdicts']
    assert verdict['check'] == 'teacher AP' and verdict['status'] == status
    assert f'box AP {100 * measured:.1f} on 50 images' in verdict['message']
    assert 'lists 38.9' in verdict['message']
    assert found['published_box_ap'] == dict(
        model='retinanet_r101_fpn_2x_coco', box_ap=38.9)


def test_no_verdict_without_a_model_zoo_url():
    report = Report('x.py')
    teacher_ap_verdict(report, dict(images=5, metrics={'coco/bbox_mAP': 0.0}),
                       'my_teacher.pth')
    assert report.data['verdicts'] == []
