teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/retinanet/retinanet_r101_fpn_2x_coco/retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth'  # noqa: E501
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
    '../_base_/distill_runtime.py',
]

# RetinaNet R101 2x -> RetinaNet R50, PCKA on FPN P3-P6 (intra 10), lr 0.01.
model = dict(
    _delete_=True,
    type='FeatureDistiller',
    student=dict(cfg_path='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py'),
    teacher=dict(cfg_path='mmdet::retinanet/retinanet_r101_fpn_2x_coco.py'),
    teacher_ckpt=teacher_ckpt,
    recorders=dict(fpn='neck'),
    distill_losses={
        f'pcka_p{level + 3}': dict(
            recorder='fpn',
            index=level,
            loss=dict(type='PatchCKALoss', patch_size=16, intra_weight=10.0))
        for level in range(4)
    })
optim_wrapper = dict(optimizer=dict(lr=0.01))
