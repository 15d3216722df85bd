# FitNet-style baseline (Romero et al. 2015): MSE on FPN features of the
# PCKA RetinaNet R101 -> R50 pair; same teacher, data, schedule and seed.
_base_ = '../pcka/retina_r101_r50.py'

model = dict(
    distill_losses=dict(
        _delete_=True,
        **{
            f'fitnet_p{level + 3}': dict(
                recorder='fpn',
                index=level,
                loss=dict(type='FeatureMSELoss', loss_weight=1.0))
            for level in range(5)
        }))
