# FitNet-style baseline (Romero et al., ICLR 2015): MSE between FPN features.
# No published recipe: mmrazor 1.0.0 has FitNets configs for classification
# (configs/distill/mmcls/fitnets/) but none for detection, so the levels
# (all five FPN outputs, P3-P7) and the weight 1 are this project's choice,
# untuned. Pair, teacher checkpoint, data, 2x schedule (lr 0.01) and seed
# are those of ../pcka/retina_r101_r50.py.
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
