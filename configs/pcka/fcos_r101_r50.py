teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/fcos/fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco/fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco-511424d6.pth'  # noqa: E501
_base_ = './retina_r101_r50.py'

# FCOS R101-caffe 2x -> FCOS R50-caffe, PCKA on FPN P3-P6 (intra 10), lr 0.01.
# As in the official config, only the models come from the FCOS files: the
# data (single-scale 1333x800, not FCOS's ms-640-800), the SGD schedule (no
# FCOS bias-lr/clip-grad settings) and lr come from the RetinaNet recipe.
# Both FCOS models are caffe-style (BGR, std 1), so the teacher sees the
# student's normalisation unchanged.
model = dict(
    student=dict(
        _delete_=True,
        cfg_path='mmdet::fcos/'
        'fcos_r50-caffe_fpn_gn-head_ms-640-800-2x_coco.py'),
    teacher=dict(
        _delete_=True,
        cfg_path='mmdet::fcos/'
        'fcos_r101-caffe_fpn_gn-head_ms-640-800-2x_coco.py'),
    teacher_ckpt=teacher_ckpt)
