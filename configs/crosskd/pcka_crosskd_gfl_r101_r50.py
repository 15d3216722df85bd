# PCKA on the FPN + CrossKD on the head: GFL R101 ms-2x -> GFL R50.
# Data, schedule and head level from CrossKD's GFL recipe
# (./crosskd_gfl_r101_r50.py: 1x, SGD 0.01, k = 3; CrossKD paper: 40.2 ->
# 43.7 AP, 43.9 with PKD on the FPN instead of PCKA); the PCKA levels as in
# configs/pcka/gfl_r101_r50.py (P3-P6, patch 16, intra 10 + inter 10), whose
# own schedule (2x, lr 0.02) is not used here. No published number for this
# combination; not trained here.
_base_ = './crosskd_gfl_r101_r50.py'

model = dict(
    recorders=dict(fpn='neck'),
    distill_losses={
        f'pcka_p{level + 3}': dict(
            recorder='fpn',
            index=level,
            loss=dict(type='PatchCKALoss', patch_size=16, intra_weight=10.0,
                      inter_weight=10.0))
        for level in range(4)
    })
