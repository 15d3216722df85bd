teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/retinanet/retinanet_r101_fpn_2x_coco/retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth'  # noqa: E501
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
    '../_base_/distill_runtime.py',
]

# RetinaNet R101 2x -> RetinaNet R50, PCKA on FPN P3-P6 (intra 10), lr 0.01.
model = dict(
    _delete_=True,
    type='FeatureDistiller',
    student=dict(cfg_path='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py'),
    teacher=dict(cfg_path='mmdet::retinanet/retinanet_r101_fpn_2x_coco.py'),
    teacher_ckpt=teacher_ckpt,
    recorders=dict(fpn='neck'),
    distill_losses={
        f'pcka_p{level + 3}': dict(
            recorder='fpn',
            index=level,
            loss=dict(type='PatchCKALoss', patch_size=16, intra_weight=10.0))
        for level in range(4)
    })

# What runs, declared here (pcka_det.engine), not in _base_/distill_runtime.py
# (the student's config sets these keys too, and MMEngine refuses a key that
# two _base_ files set): kill-safe checkpoints, an exact resume, non-finite
# steps skipped and bounded, the student exported as plain mmdet weights.
train_cfg = dict(type='ExactResumeEpochBasedTrainLoop')
optim_wrapper = dict(type='GuardedOptimWrapper', optimizer=dict(lr=0.01))
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook'),
    nonfinite_guard=dict(type='NonFiniteGuardHook'),
    export_student=dict(type='ExportStudentHook'))
