# PCKA + FitNet on the toy pair: PCKA and feature MSE on the same FPN levels,
# each at its own toy config's weight (./pcka_retinanet_r18_thin-r18_toy.py,
# ./fitnet_retinanet_r18_thin-r18_toy.py). One reading of the PCKA paper's
# "Ours+mimic" rows, which neither the paper nor the official code defines;
# `make study` tunes one factor on both terms together.
_base_ = './pcka_retinanet_r18_thin-r18_toy.py'

model = dict(
    distill_losses={
        f'fitnet_p{level + 3}': dict(
            recorder='fpn', index=level,
            loss=dict(type='FeatureMSELoss', loss_weight=1.0))
        for level in range(4)
    })
