# PCKA on the FPN + CrossKD on the head: RetinaNet R101 2x -> RetinaNet R50.
# The two recipes share data and schedule (2x, SGD 0.01): PCKA's levels from
# configs/pcka/retina_r101_r50.py (P3-P6, patch 16, intra 10; the PCKA paper
# reports 40.3 AP for this recipe with an X101 teacher), CrossKD's head level
# from ./crosskd_retina_r101_r50.py (k = 3, KDQFL 1 + GIoU 1; the CrossKD
# paper: 37.4 -> 39.7 AP, 39.8 with PKD on the FPN instead of PCKA).
# No published number for this combination; not trained here.
_base_ = '../pcka/retina_r101_r50.py'

model = dict(
    distill_losses=dict(
        crosskd=dict(
            head_conv=3,
            loss=dict(type='CrossKDLoss', cls_weight=1.0,
                      giou_weight=1.0))))
