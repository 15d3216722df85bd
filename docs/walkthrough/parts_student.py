# The small detector to ship: the teacher's recipe (data, classes, schedule,
# from scratch) with a quarter-width ResNet-18 and a 64-wide FPN and head,
# half the teacher's 128 (so distillation needs a connector per level).
_base_ = './parts_teacher.py'

model = dict(
    backbone=dict(base_channels=16),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=64),
    bbox_head=dict(in_channels=64, feat_channels=64))
