# Written by pcka_det.new_config on 2026-12-02:
#   python -m pcka_det.new_config --teacher
#   mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py --teacher-ckpt
#   https://download.openmmlab.com/mmdetection/v2.0/swin/mask_rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco/mask_rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco_20210906_131725-bacf6f7b.pth
#   --student mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py -o
#   configs/pcka/mask_swin-t_faster_rcnn_r50.py --force
# Teacher mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py: neck
#   strides [4, 8, 16, 32, 64], widths [256].
# Student mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py: neck strides [4,
#   8, 16, 32, 64], widths [256].
# Levels: the outputs both produce at the same stride, at most 4 (the paper
#   distils FPN outputs 0-3): strides 4/8/16/32.
#   Not distilled: stride 64 (beyond the first 4).
# Patches: per level the largest of [16, 8, 4, 2, 1] cells (16 is the paper's)
#   leaving >= 2 patches at the student's training scale 800x1344 (Resize scale
#   of the training pipeline): pcka_p2 200x336 -> 16, pcka_p3 100x168 -> 16,
#   pcka_p4 50x84 -> 16, pcka_p5 25x42 -> 16.
# Connectors: none, both necks have the same width.
# Weights: the paper's for a two-stage student, intra 10 + inter 10.
# Check before training: python -m pcka_det.check
#   configs/pcka/mask_swin-t_faster_rcnn_r50.py
# Transformer teacher, CNN student: Mask R-CNN Swin-T ms-crop 3x (46.0 box
#   AP, mmdet's swin metafile; its mask head is built and never run) ->
#   Faster R-CNN R50 2x (38.4). No published PCKA number for this pair.
# Recipe: the student's own mmdet 2x schedule and data.
teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/swin/mask_rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco/mask_rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco_20210906_131725-bacf6f7b.pth'  # noqa: E501
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py',
    'pcka_det::_base_/distill_runtime.py',
]

model = dict(
    _delete_=True,
    type='FeatureDistiller',
    student=dict(cfg_path='mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py'),
    teacher=dict(
        cfg_path='mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'),
    teacher_ckpt=teacher_ckpt,
    recorders=dict(neck='neck'),
    distill_losses={
        f'pcka_p{level + 2}': dict(
            recorder='neck',
            index=level,
            loss=dict(
                type='PatchCKALoss',
                patch_size=16,
                intra_weight=10.0,
                inter_weight=10.0))
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
