# PKD (Cao et al., NeurIPS 2022) with mmrazor 1.0.0's published recipe:
#   mmrazor/configs/distill/mmdet/pkd/
#   pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py
#   COCO val2017 box AP 40.4 in the metafile.yml mmrazor 1.0.0 ships (the
#   PKD README on GitHub lists 40.3); teacher 39.8, student alone 38.4.
# Faster R-CNN R101 2x -> Faster R-CNN R50, 2x schedule, SGD lr 0.02, 2
# images per GPU: pair, teacher checkpoint and schedule of
# ../pcka/faster_rcnn_r101_r50.py, which distils the same four levels, so
# against that PCKA config only the loss differs. PKDLoss weight 6 on FPN
# outputs 0-3 (P2-P5); the max-pooled P6 is not distilled. Our PKDLoss
# equals mmrazor's up to a factor (n - 1) / n (population vs sample std,
# n = batch x H x W, above 0.999 here).
_base_ = '../pcka/faster_rcnn_r101_r50.py'

model = dict(
    distill_losses=dict(
        _delete_=True,
        **{
            f'pkd_p{level + 2}': dict(
                recorder='fpn',
                index=level,
                loss=dict(type='PKDLoss', loss_weight=6.0))
            for level in range(4)
        }))
