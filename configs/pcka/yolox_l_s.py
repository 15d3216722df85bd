# Written by pcka_det.new_config on 2026-12-02:
#   python -m pcka_det.new_config --teacher
#   mmdet::yolox/yolox_l_8xb8-300e_coco.py --teacher-ckpt
#   https://download.openmmlab.com/mmdetection/v2.0/yolox/yolox_l_8x8_300e_coco/yolox_l_8x8_300e_coco_20211126_140236-d3bd2b23.pth
#   --student mmdet::yolox/yolox_s_8xb8-300e_coco.py -o
#   configs/pcka/yolox_l_s.py --force
# Teacher mmdet::yolox/yolox_l_8xb8-300e_coco.py: neck strides [8, 16, 32],
#   widths [256].
# Student mmdet::yolox/yolox_s_8xb8-300e_coco.py: neck strides [8, 16, 32],
#   widths [128].
# Levels: the outputs both produce at the same stride, at most 4 (the paper
#   distils FPN outputs 0-3): strides 8/16/32.
# Patches: per level the largest of [16, 8, 4, 2, 1] cells (16 is the paper's)
#   leaving >= 2 patches at the student's training scale 480x480
#   (BatchSyncRandomResize of the preprocessor): pcka_p3 60x60 -> 16, pcka_p4
#   30x30 -> 16, pcka_p5 15x15 -> 8.
# Connectors: the student's levels are narrower or wider than the teacher's
#   (128->256): a 1x1 conv + BN maps them (trained with the student, dropped at
#   export).
# Weights: the paper's for a one-stage student, intra 10.
# Check before training: python -m pcka_det.check configs/pcka/yolox_l_s.py
# YOLOX-L (49.4 box AP, mmdet model zoo) -> YOLOX-S (40.5). No published
#   PCKA number. Recipe: YOLOX-S's own (300 epochs, Mosaic/MixUp, SGD
#   nesterov, EMAHook, SyncNormHook, YOLOXModeSwitchHook 15 epochs before the
#   end: it turns the student's L1 box loss on through FeatureDistiller's
#   `detector`, tests/e2e/test_rtmdet_hooks.py). The exported student is the
#   EMA's (EMAHook swaps it into each checkpoint).
teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/yolox/yolox_l_8x8_300e_coco/yolox_l_8x8_300e_coco_20211126_140236-d3bd2b23.pth'  # noqa: E501
_base_ = [
    'mmdet::yolox/yolox_s_8xb8-300e_coco.py',
    'pcka_det::_base_/distill_runtime.py',
]

model = dict(
    _delete_=True,
    type='FeatureDistiller',
    student=dict(cfg_path='mmdet::yolox/yolox_s_8xb8-300e_coco.py'),
    teacher=dict(cfg_path='mmdet::yolox/yolox_l_8xb8-300e_coco.py'),
    teacher_ckpt=teacher_ckpt,
    recorders=dict(neck='neck'),
    distill_losses=dict(
        pcka_p3=dict(
            recorder='neck',
            index=0,
            connector=dict(
                type='ConvConnector', in_channels=128, out_channels=256),
            loss=dict(type='PatchCKALoss', patch_size=16, intra_weight=10.0)),
        pcka_p4=dict(
            recorder='neck',
            index=1,
            connector=dict(
                type='ConvConnector', in_channels=128, out_channels=256),
            loss=dict(type='PatchCKALoss', patch_size=16, intra_weight=10.0)),
        pcka_p5=dict(
            recorder='neck',
            index=2,
            connector=dict(
                type='ConvConnector', in_channels=128, out_channels=256),
            loss=dict(type='PatchCKALoss', patch_size=8, intra_weight=10.0))))

# What runs (pcka_det.engine), declared here: exact resume, non-finite steps
#   skipped and bounded, kill-safe checkpoints, the student exported as plain
#   mmdet weights.
train_cfg = dict(type='ExactResumeEpochBasedTrainLoop')
optim_wrapper = dict(type='GuardedOptimWrapper')
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook'),
    nonfinite_guard=dict(type='NonFiniteGuardHook'),
    export_student=dict(type='ExportStudentHook'))
