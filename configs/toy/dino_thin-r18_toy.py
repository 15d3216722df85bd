# Toy DETR-family student: a small DINO (4 scales, strides 8-64) on the
# quarter-width R18 of the toy RetinaNet student, with the toy data and
# schedule. Differs from mmdet's dino-4scale_r50_8xb2-12e_coco.py where a
# 2-core CPU and 192 px images need it: 2 encoder and 2 decoder layers with
# 256-wide FFNs (embed_dims stays 256: mmdet's DINO decoder encodes the
# reference points with 128 features per coordinate, whatever embed_dims),
# 100 queries, 20 denoising queries, no pretrained weights, trainable BN;
# AdamW at DINO's lr (1e-4) and gradient clipping.
# Distilled from the demo's CNN teacher (toy RetinaNet R18) by a config
# that python -m pcka_det.new_config writes (README, "Pairs").
_base_ = './retinanet_thin-r18_toy.py'

embed_dims = 256
model = dict(
    _delete_=True,
    type='DINO',
    num_queries=100,
    with_box_refine=True,
    as_two_stage=True,
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    backbone=dict(
        type='ResNet',
        depth=18,
        base_channels=16,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None),
    neck=dict(
        type='ChannelMapper',
        in_channels=[32, 64, 128],
        kernel_size=1,
        out_channels=embed_dims,
        act_cfg=None,
        norm_cfg=dict(type='GN', num_groups=32),
        num_outs=4),
    encoder=dict(
        num_layers=2,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims, num_levels=4,
                               dropout=0.0),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=256,
                         ffn_drop=0.0))),
    decoder=dict(
        num_layers=2,
        return_intermediate=True,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims, num_heads=4,
                               dropout=0.0),
            cross_attn_cfg=dict(embed_dims=embed_dims, num_levels=4,
                                dropout=0.0),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=256,
                         ffn_drop=0.0)),
        post_norm_cfg=None),
    positional_encoding=dict(
        num_feats=embed_dims // 2, normalize=True, offset=0.0,
        temperature=20),
    bbox_head=dict(
        type='DINOHead',
        num_classes=6,
        embed_dims=embed_dims,
        sync_cls_avg_factor=True,
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0,
                      alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
    dn_cfg=dict(
        label_noise_scale=0.5,
        box_noise_scale=1.0,
        group_cfg=dict(dynamic=True, num_groups=None, num_dn_queries=20)),
    train_cfg=dict(
        assigner=dict(
            type='HungarianAssigner',
            match_costs=[
                dict(type='FocalLossCost', weight=2.0),
                dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                dict(type='IoUCost', iou_mode='giou', weight=2.0)
            ])),
    test_cfg=dict(max_per_img=100))

optim_wrapper = dict(
    optimizer=dict(lr=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2))
