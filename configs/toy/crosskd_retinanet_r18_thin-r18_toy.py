# CrossKD alone on the toy RetinaNet pair (data, schedule and teacher of
# ./pcka_retinanet_r18_thin-r18_toy.py): a head level at k = 1 of the toy
# heads' 2 stacked convs (COCO: k = 3 of 4), CrossKD's RetinaNet weights
# (KDQFL 1, GIoU 1); not tuned on the toy data.
_base_ = './pcka_retinanet_r18_thin-r18_toy.py'

model = dict(
    distill_losses=dict(
        _delete_=True,
        crosskd=dict(
            head_conv=1,
            loss=dict(type='CrossKDLoss', cls_weight=1.0, giou_weight=1.0))))
