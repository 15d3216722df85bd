# CrossKD: RetinaNet R101 2x (COCO box AP 38.9) -> RetinaNet R50, 2x.
# Source: Wang et al., "CrossKD: Cross-Head Knowledge Distillation for Object
# Detection" (arXiv 2306.11369, CVPR 2024), official RetinaNet recipe:
# student R50 2x 37.4 -> CrossKD 39.7 AP (+PKD on the FPN 39.8), COCO val.
# Recipe: the student's own mmdet config (single-scale 1333x800, 2x, SGD
# 0.01, 8 GPUs x 2 images), teacher from mmdet's model zoo, head level at
# k = 3 (the student's first 3 tower convs, then the teacher's 4th conv and
# predictors), KD quality focal loss (beta 1, weight 1) + GIoU (weight 1).
# Not trained here (no COCO run); built offline and stepped once in the
# suite (tests/e2e/test_coco_configs.py).
teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/retinanet/retinanet_r101_fpn_2x_coco/retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth'  # noqa: E501
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
    '../_base_/distill_runtime.py',
]

model = dict(
    _delete_=True,
    type='FeatureDistiller',
    student=dict(cfg_path='mmdet::retinanet/retinanet_r50_fpn_2x_coco.py'),
    teacher=dict(cfg_path='mmdet::retinanet/retinanet_r101_fpn_2x_coco.py'),
    teacher_ckpt=teacher_ckpt,
    distill_losses=dict(
        crosskd=dict(
            head_conv=3,
            loss=dict(type='CrossKDLoss', cls_weight=1.0,
                      giou_weight=1.0))))

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
