# PCKA on the instance-segmentation toy pair: Mask R-CNN R18 teacher ->
# quarter-width R18 student. The distillation is the toy Faster R-CNN's
# (intra + inter, weights 2 + 2, on P2-P5 with 4-cell patches and 2-cell ones
# on the 6x6 P5); only the detectors, and so the data (masks), differ.
_base_ = [
    './mask_rcnn_thin-r18_toy.py',
    '../_base_/distill_runtime.py',
]

# The teacher: python tools/train.py configs/toy/mask_rcnn_r18_toy.py
# writes this file.
teacher_ckpt = 'work_dirs/mask_rcnn_r18_toy/epoch_10.pth'
model = dict(
    _delete_=True,
    type='FeatureDistiller',
    student=dict(cfg_path='pcka_det::toy/mask_rcnn_thin-r18_toy.py'),
    teacher=dict(cfg_path='pcka_det::toy/mask_rcnn_r18_toy.py'),
    teacher_ckpt=teacher_ckpt,
    recorders=dict(fpn='neck'),
    distill_losses={
        f'pcka_p{level + 2}': dict(
            recorder='fpn',
            index=level,
            loss=dict(
                type='PatchCKALoss',
                patch_size=4 if level < 3 else 2,
                intra_weight=2.0,
                inter_weight=2.0))
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
