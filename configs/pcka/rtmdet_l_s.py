teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v3.0/rtmdet/rtmdet_l_8xb32-300e_coco/rtmdet_l_8xb32-300e_coco_20220719_112030-5a0be7c4.pth'  # noqa: E501
_base_ = [
    'mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py',
    '../_base_/distill_runtime.py',
]

# RTMDet-L -> RTMDet-S with RTMDet-S's own 300-epoch recipe (no official PCKA
# recipe exists): its data pipelines, AdamW, batch 32 x 8 GPUs, EMAHook and
# the switch to the stage-2 pipeline at epoch 280 all come from the base.
# PCKA on the three neck outputs (strides 8, 16, 32), intra 10 as in the
# official one-stage configs. RTMDet-S's neck is 128 wide, RTMDet-L's 256:
# a 1x1 conv + BN connector maps each student level to the teacher's width
# (trained with the student, dropped at export).
model = dict(
    _delete_=True,
    type='FeatureDistiller',
    student=dict(cfg_path='mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py'),
    teacher=dict(cfg_path='mmdet::rtmdet/rtmdet_l_8xb32-300e_coco.py'),
    teacher_ckpt=teacher_ckpt,
    recorders=dict(neck='neck'),
    distill_losses={
        f'pcka_p{level + 3}': dict(
            recorder='neck',
            index=level,
            connector=dict(
                type='ConvConnector', in_channels=128, out_channels=256),
            loss=dict(type='PatchCKALoss', patch_size=16, intra_weight=10.0))
        for level in range(3)
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
