# CWD (Shu et al., ICCV 2021) with mmrazor 1.0.0's recipe:
#   mmrazor/configs/distill/mmdet/cwd/cwd_fpn_retina_r101_retina_r50_1x_coco.py
#   (base: cwd_fpn_frcnn_r101_frcnn_r50_1x_coco.py). mmrazor 1.0.0 publishes
#   no AP for it: its CWD metafile lists only a GFL cls-head model.
# RetinaNet R101 2x -> RetinaNet R50 on the 1x schedule (12 epochs, steps at
# 8 and 11, SGD lr 0.01, 2 images per GPU). Same teacher and checkpoint as
# ../pcka/retina_r101_r50.py but half its 24-epoch schedule and one more
# level: not a same-schedule, same-level comparison with that config.
# ChannelWiseDivergence, tau 1, weight 10, on all five FPN outputs (P3-P7).
# Our loss has mmrazor's scaling (KL summed over positions, averaged over
# batch x channels, x tau^2), so weight 10 means the same here.
# Teacher weights: mmrazor builds the teacher with pretrained=True, i.e.
# mmdet's model-zoo checkpoint of retinanet_r101_fpn_2x_coco, the URL this
# config inherits. The teacher_ckpt its file inherits from the Faster R-CNN
# base names a local Faster R-CNN R101 checkpoint; not copied.
_base_ = '../pcka/retina_r101_r50.py'

max_epochs = 12
model = dict(
    student=dict(cfg_path='mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'),
    distill_losses=dict(
        _delete_=True,
        **{
            f'cwd_p{level + 3}': dict(
                recorder='fpn',
                index=level,
                loss=dict(type='ChannelWiseDivergence', tau=1.0,
                          loss_weight=10.0))
            for level in range(5)
        }))
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[8, 11], gamma=0.1)
]
