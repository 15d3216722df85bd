# The small detector to ship: the teacher's recipe (data, classes, from
# scratch) with a quarter-width ResNet-18 and a 64-wide FPN and head, half
# the teacher's 128 (so distillation needs a connector per level), on the
# shorter schedule of the toy student.
_base_ = './parts_teacher.py'

model = dict(
    backbone=dict(base_channels=16),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=64),
    bbox_head=dict(in_channels=64, feat_channels=64))

max_epochs = 8
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs,
         eta_min_ratio=0.05)
]
default_hooks = dict(checkpoint=dict(interval=max_epochs))
