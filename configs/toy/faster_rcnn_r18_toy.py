# Toy two-stage teacher: Faster R-CNN R18-FPN trained from scratch on the
# synthetic shapes. Differs from mmdet's faster-rcnn_r50_fpn_1x_coco.py only
# where a 2-core CPU and 192 px images need it: no pretrained weights
# (nothing is downloaded), trainable BN, a 128-wide FPN, RoI features and a
# 256-wide box head, RPN anchors halved for small objects (as the toy
# RetinaNet's), fewer proposals for images of at most 6 objects, and the toy
# AdamW schedule.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    './_base_/synthetic_detection.py',
    './_base_/schedule_toy.py',
]

model = dict(
    backbone=dict(
        depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=128),
    rpn_head=dict(
        in_channels=128,
        feat_channels=128,
        anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=dict(in_channels=128, fc_out_channels=256,
                       num_classes=6)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=1000, max_per_img=300)))
