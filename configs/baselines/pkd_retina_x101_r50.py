# PKD (Cao et al., NeurIPS 2022) with mmrazor 1.0.0's published recipe:
#   mmrazor/configs/distill/mmdet/pkd/pkd_fpn_retina_x101_retina_r50_2x_coco.py
#   (base: pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py)
#   COCO val2017 box AP 40.8 in the metafile.yml mmrazor 1.0.0 ships;
#   teacher 41.0, student alone 37.4.
# RetinaNet X101-64x4d 1x -> RetinaNet R50, 2x schedule, SGD lr 0.01, 2
# images per GPU: pair, teacher checkpoint and schedule of
# ../pcka/retina_x101_r50.py, which distils the same four levels, so
# against that PCKA config only the loss differs. PKDLoss weight 10 on FPN
# outputs 0-3 (P3-P6); P7 is not distilled. Scaling: our PKDLoss
# standardises with the population std, mmrazor's with the sample std, so
# mmrazor's value is (n - 1) / n of ours, n = batch x H x W of the level
# (0.998 for P6 of two 1333x800 images): weight 10 means the same here.
_base_ = '../pcka/retina_x101_r50.py'

model = dict(
    distill_losses=dict(
        _delete_=True,
        **{
            f'pkd_p{level + 3}': dict(
                recorder='fpn',
                index=level,
                loss=dict(type='PKDLoss', loss_weight=10.0))
            for level in range(4)
        }))
