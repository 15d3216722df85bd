teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/retinanet/retinanet_x101_64x4d_fpn_1x_coco/retinanet_x101_64x4d_fpn_1x_coco_20200130-366f5af1.pth'  # noqa: E501
_base_ = './retina_r101_r50.py'

# RetinaNet X101-64x4d 1x -> RetinaNet R50; everything else as R101 -> R50.
model = dict(
    teacher=dict(
        _delete_=True,
        cfg_path='mmdet::retinanet/retinanet_x101-64x4d_fpn_1x_coco.py'),
    teacher_ckpt=teacher_ckpt)
