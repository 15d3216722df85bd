# Toy student: the teacher's recipe with a half-width ResNet-18 backbone
# (base_channels 32) and a longer schedule, both chosen for a 2-core CPU.
_base_ = './retinanet_r50_toy.py'

model = dict(
    backbone=dict(depth=18, base_channels=32),
    neck=dict(in_channels=[32, 64, 128, 256]))

max_epochs = 6
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs,
         eta_min_ratio=0.05)
]
default_hooks = dict(checkpoint=dict(interval=max_epochs))
