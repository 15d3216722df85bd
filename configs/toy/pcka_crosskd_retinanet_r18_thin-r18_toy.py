# PCKA on the FPN + CrossKD on the head: the toy RetinaNet pair of
# ./pcka_retinanet_r18_thin-r18_toy.py (same levels, data, schedule) with a
# head level. The toy heads have 2 stacked convs (COCO's have 4, k = 3 there):
# k = 1 keeps the same split, the teacher's last tower conv and predictors
# reused. Loss weights are CrossKD's RetinaNet recipe (KDQFL 1, GIoU 1);
# not tuned on the toy data.
_base_ = './pcka_retinanet_r18_thin-r18_toy.py'

model = dict(
    distill_losses=dict(
        crosskd=dict(
            head_conv=1,
            loss=dict(type='CrossKDLoss', cls_weight=1.0, giou_weight=1.0))))
