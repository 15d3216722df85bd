# Written by pcka_det.new_config on 2026-12-02:
#   python -m pcka_det.new_config --teacher
#   mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py --teacher-ckpt
#   https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/faster_rcnn_r101_fpn_2x_coco/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth
#   --student mmdet::retinanet/retinanet_r50_fpn_2x_coco.py -o
#   configs/pcka/faster_rcnn_r101_retina_r50.py --force
# Teacher mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py: neck strides [4,
#   8, 16, 32, 64], widths [256].
# Student mmdet::retinanet/retinanet_r50_fpn_2x_coco.py: neck strides [8, 16,
#   32, 64, 128], widths [256].
# Levels: the outputs both produce at the same stride, at most 4 (the paper
#   distils FPN outputs 0-3): strides 8/16/32/64.
#   Paired by stride, at other output indices: stride 8 student 0 <-> teacher
#   1, stride 16 student 1 <-> teacher 2, stride 32 student 2 <-> teacher 3,
#   stride 64 student 3 <-> teacher 4.
# Patches: per level the largest of [16, 8, 4, 2, 1] cells (16 is the paper's)
#   leaving >= 2 patches at the student's training scale 800x1344 (Resize scale
#   of the training pipeline): pcka_p3 100x168 -> 16, pcka_p4 50x84 -> 16,
#   pcka_p5 25x42 -> 16, pcka_p6 13x21 -> 16.
# Connectors: none, both necks have the same width.
# Weights: the paper's for a one-stage student, intra 10.
# Check before training: python -m pcka_det.check
#   configs/pcka/faster_rcnn_r101_retina_r50.py
# Cross family: a two-stage teacher for a one-stage student (mmrazor#589,
#   #367, #174; CrossKD#7). Faster R-CNN R101 2x (39.8 box AP, mmdet model
#   zoo) -> RetinaNet R50 2x (37.4). No published PCKA number for this pair.
#   The teacher's FPN is P2-P6, the student's P3-P7: the common strides sit
#   at other output indices, so each level names both (index=dict(...)).
# Recipe: the student's own mmdet 2x schedule and data (not the official
#   PCKA data base, which is defined for the paper's pairs only).
teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/faster_rcnn_r101_fpn_2x_coco/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth'  # noqa: E501
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
    'pcka_det::_base_/distill_runtime.py',
]

model = dict(
    _delete_=True,
    type='FeatureDistiller',
    student=dict(cfg_path='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py'),
    teacher=dict(
        cfg_path='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py'),
    teacher_ckpt=teacher_ckpt,
    recorders=dict(neck='neck'),
    distill_losses={
        f'pcka_p{level + 3}': dict(
            recorder='neck',
            index=dict(student=level, teacher=level + 1),
            loss=dict(type='PatchCKALoss', patch_size=16, intra_weight=10.0))
        for level in range(4)
    })

# What runs (pcka_det.engine), declared here: exact resume, non-finite steps
#   skipped and bounded, kill-safe checkpoints, the student exported as plain
#   mmdet weights.
train_cfg = dict(type='ExactResumeEpochBasedTrainLoop')
optim_wrapper = dict(type='GuardedOptimWrapper')
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook'),
    nonfinite_guard=dict(type='NonFiniteGuardHook'),
    export_student=dict(type='ExportStudentHook'))
