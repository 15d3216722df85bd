teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/cascade_rcnn/cascade_mask_rcnn_x101_64x4d_fpn_20e_coco/cascade_mask_rcnn_x101_64x4d_fpn_20e_coco_20200512_161033-bdb5126a.pth'  # noqa: E501
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_2x_coco.py',
    '../_base_/distill_runtime.py',
]

# Cascade Mask R-CNN X101-64x4d 20e -> Mask R-CNN R50, PCKA on FPN P2-P5
# (intra 10 + inter 10), lr 0.02, 2x. Deliberate difference from the official
# config: its data base is box-only (no masks, bbox metric), on which a Mask
# R-CNN student cannot train; this one loads masks and reports box and mask
# AP (mmdet's coco_instance base, via the student's own 2x file).
model = dict(
    _delete_=True,
    type='FeatureDistiller',
    student=dict(cfg_path='mmdet::mask_rcnn/mask-rcnn_r50_fpn_2x_coco.py'),
    teacher=dict(
        cfg_path='mmdet::cascade_rcnn/'
        'cascade-mask-rcnn_x101-64x4d_fpn_20e_coco.py'),
    teacher_ckpt=teacher_ckpt,
    recorders=dict(fpn='neck'),
    distill_losses={
        f'pcka_p{level + 2}': dict(
            recorder='fpn',
            index=level,
            loss=dict(
                type='PatchCKALoss',
                patch_size=16,
                intra_weight=10.0,
                inter_weight=10.0))
        for level in range(4)
    })

# What runs, declared here (pcka_det.engine), not in _base_/distill_runtime.py
# (the student's config sets these keys too, and MMEngine refuses a key that
# two _base_ files set): kill-safe checkpoints, an exact resume, non-finite
# steps skipped and bounded, the student exported as plain mmdet weights.
train_cfg = dict(type='ExactResumeEpochBasedTrainLoop')
optim_wrapper = dict(type='GuardedOptimWrapper')
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook'),
    nonfinite_guard=dict(type='NonFiniteGuardHook'),
    export_student=dict(type='ExportStudentHook'))
