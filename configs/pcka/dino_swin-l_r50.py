# Written by pcka_det.new_config on 2026-12-02:
#   python -m pcka_det.new_config --teacher
#   mmdet::dino/dino-5scale_swin-l_8xb2-12e_coco.py --teacher-ckpt
#   https://download.openmmlab.com/mmdetection/v3.0/dino/dino-5scale_swin-l_8xb2-12e_coco/dino-5scale_swin-l_8xb2-12e_coco_20230228_072924-a654145f.pth
#   --student mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py -o
#   configs/pcka/dino_swin-l_r50.py --force
# Teacher mmdet::dino/dino-5scale_swin-l_8xb2-12e_coco.py: neck strides [4, 8,
#   16, 32, 64], widths [256].
# Student mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py: neck strides [8, 16,
#   32, 64], widths [256].
# Levels: the outputs both produce at the same stride, at most 4 (the paper
#   distils FPN outputs 0-3): strides 8/16/32/64.
#   Paired by stride, at other output indices: stride 8 student 0 <-> teacher
#   1, stride 16 student 1 <-> teacher 2, stride 32 student 2 <-> teacher 3,
#   stride 64 student 3 <-> teacher 4.
# Patches: per level the largest of [16, 8, 4, 2, 1] cells (16 is the paper's)
#   leaving >= 2 patches at the student's training scale 480x1333 (RandomChoice
#   of the training pipeline (its smallest branch)): pcka_p3 60x167 -> 16,
#   pcka_p4 30x84 -> 16, pcka_p5 15x42 -> 16, pcka_p6 8x21 -> 16.
# Connectors: none, both necks have the same width.
# Weights: the paper's for a one-stage student, intra 10.
# Check before training: python -m pcka_det.check
#   configs/pcka/dino_swin-l_r50.py
# DETR family: DINO Swin-L 5-scale 12e (57.2 box AP, mmdet's dino metafile)
#   -> DINO R50 4-scale 12e (49.0). No published PCKA number. The teacher's
#   ChannelMapper gives strides 4-64, the student's 8-64: levels paired by
#   stride (the student's output i is the teacher's i + 1). The training
#   scale is read from DINO's RandomChoice pipeline (its smallest branch).
# Recipe: DINO R50's own (AdamW 1e-4, backbone lr x0.1, clip 0.1, 12 epochs).
teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v3.0/dino/dino-5scale_swin-l_8xb2-12e_coco/dino-5scale_swin-l_8xb2-12e_coco_20230228_072924-a654145f.pth'  # noqa: E501
_base_ = [
    'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',
    'pcka_det::_base_/distill_runtime.py',
]

model = dict(
    _delete_=True,
    type='FeatureDistiller',
    student=dict(cfg_path='mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'),
    teacher=dict(cfg_path='mmdet::dino/dino-5scale_swin-l_8xb2-12e_coco.py'),
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
