# Toy anchor-free teacher: FCOS R18-FPN trained from scratch on the synthetic
# shapes. The model is mmdet's
# fcos_r18_fpn_gn-head-center-normbbox-centeronreg-giou_8xb8-amp-lsj-200e_coco
# (centre sampling, GIoU, centre-ness on the regression branch, normalised
# boxes), changed only where a 2-core CPU and 192 px images need it: no
# pretrained weights (nothing is downloaded), trainable BN, a 128-wide FPN
# and a 2-conv GroupNorm head like the toy RetinaNet, regress ranges halved
# for small objects (as the toy RetinaNet halves its anchors), the toy
# dataset (no large-scale jitter) and the toy AdamW schedule.
_base_ = [
    './_base_/synthetic_detection.py',
    './_base_/schedule_toy.py',
]

model = dict(
    type='FCOS',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='ResNet',
        depth=18,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None),
    neck=dict(
        type='FPN',
        in_channels=[64, 128, 256, 512],
        out_channels=128,
        start_level=1,
        add_extra_convs='on_output',  # P6 and P7 from P5
        num_outs=5,
        relu_before_extra_convs=True),
    bbox_head=dict(
        type='FCOSHead',
        num_classes=6,
        in_channels=128,
        stacked_convs=2,
        feat_channels=128,
        strides=[8, 16, 32, 64, 128],
        regress_ranges=((-1, 32), (32, 64), (64, 128), (128, 256),
                        (256, 1e8)),
        norm_on_bbox=True,
        centerness_on_reg=True,
        center_sampling=True,
        conv_bias=True,
        loss_cls=dict(
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0),
        loss_centerness=dict(
            type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.6),
        max_per_img=100))
