teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r101_fpn_mstrain_2x_coco/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth'  # noqa: E501
_base_ = './retina_r101_r50.py'

# GFL R101 ms-2x -> GFL R50, PCKA on FPN P3-P6 (intra 10 + inter 10), lr 0.02
# (the 2x schedule's own); data single-scale 1333x800, schedule 2x, as in the
# official config (not GFL R50's 1x file, whose model alone is used).
model = dict(
    student=dict(
        _delete_=True, cfg_path='mmdet::gfl/gfl_r50_fpn_1x_coco.py'),
    teacher=dict(
        _delete_=True, cfg_path='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py'),
    teacher_ckpt=teacher_ckpt,
    distill_losses={
        f'pcka_p{level + 3}': dict(loss=dict(inter_weight=10.0))
        for level in range(4)
    })
optim_wrapper = dict(optimizer=dict(lr=0.02))
