# Toy anchor-free student: the FCOS teacher's recipe with a quarter-width
# ResNet-18 (base_channels 16, 1/16 of the backbone FLOPs) and a shorter
# schedule, as the toy RetinaNet student.
_base_ = './fcos_r18_toy.py'

model = dict(
    backbone=dict(base_channels=16),
    neck=dict(in_channels=[16, 32, 64, 128]))

max_epochs = 8
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs,
         eta_min_ratio=0.05)
]
default_hooks = dict(checkpoint=dict(interval=max_epochs))
