teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/cascade_rcnn/cascade_mask_rcnn_x101_64x4d_fpn_20e_coco/cascade_mask_rcnn_x101_64x4d_fpn_20e_coco_20200512_161033-bdb5126a.pth'  # noqa: E501
_base_ = './faster_rcnn_r101_r50.py'

# Cascade Mask R-CNN X101-64x4d 20e -> Faster R-CNN R50: different heads,
# same FPN width (256), so only the teacher changes.
model = dict(
    teacher=dict(
        _delete_=True,
        cfg_path='mmdet::cascade_rcnn/'
        'cascade-mask-rcnn_x101-64x4d_fpn_20e_coco.py'),
    teacher_ckpt=teacher_ckpt)
