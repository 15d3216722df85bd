teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/reppoints/reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck%2Bhead_2x_coco/reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck%2Bhead_2x_coco_20200329-f87da1ea.pth'  # noqa: E501
_base_ = './retina_r101_r50.py'

# RepPoints-moment X101-64x4d-DCN 2x -> RepPoints-moment R50, PCKA on FPN
# P3-P6 (intra 10), lr 0.01; data and schedule as RetinaNet R101 -> R50.
model = dict(
    student=dict(
        _delete_=True,
        cfg_path='mmdet::reppoints/'
        'reppoints-moment_r50_fpn-gn_head-gn_2x_coco.py'),
    teacher=dict(
        _delete_=True,
        cfg_path='mmdet::reppoints/'
        'reppoints-moment_x101-dconv-c3-c5_fpn-gn_head-gn_2x_coco.py'),
    teacher_ckpt=teacher_ckpt)
