# PCKA on the two-stage toy pair: Faster R-CNN R18 teacher -> quarter-width
# R18 student, with the student's data, schedule and initialisation. As in
# the COCO two-stage recipe (configs/pcka/faster_rcnn_r101_r50.py) PCKA
# uses its intra and inter terms on FPN P2-P5 (indices 0-3); at 192 px those
# are 48, 24, 12 and 6 cells wide: 4-cell patches on P2-P4 and 2-cell ones
# on P5 leave 144, 36, 9 and 9 patches (16-cell ones: 9, 4, 1, 1). Weights
# 2 + 2, the COCO 10 + 10 scaled down as the toy RetinaNet's intra weight
# (10 swamped its detection loss from scratch); not tuned for this pair,
# which no full run has trained yet.
_base_ = [
    './faster_rcnn_thin-r18_toy.py',
    '../_base_/distill_runtime.py',
]

# The teacher: python tools/train.py configs/toy/faster_rcnn_r18_toy.py
# writes this file.
teacher_ckpt = 'work_dirs/faster_rcnn_r18_toy/epoch_10.pth'
model = dict(
    _delete_=True,
    type='FeatureDistiller',
    student=dict(cfg_path='pcka_det::toy/faster_rcnn_thin-r18_toy.py'),
    teacher=dict(cfg_path='pcka_det::toy/faster_rcnn_r18_toy.py'),
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
