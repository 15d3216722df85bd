# PKD baseline (Pearson correlation) on the toy pair: the PCKA config with
# only the distillation loss replaced (same levels, data, schedule, seed).
_base_ = './pcka_retinanet_r18_thin-r18_toy.py'

model = dict(
    distill_losses=dict(
        _delete_=True,
        **{
            f'pkd_p{level + 3}': dict(
                recorder='fpn', index=level,
                loss=dict(type='PKDLoss', loss_weight=6.0))
            for level in range(4)
        }))
