# PKD baseline (Cao et al. 2022) on the PCKA RetinaNet R101 -> R50 pair:
# same teacher, data, schedule and seed; only the distillation loss differs.
# Loss weight 6 on every FPN level, as in the PKD paper's RetinaNet setting.
_base_ = '../pcka/retina_r101_r50.py'

model = dict(
    distill_losses=dict(
        _delete_=True,
        **{
            f'pkd_p{level + 3}': dict(
                recorder='fpn',
                index=level,
                loss=dict(type='PKDLoss', loss_weight=6.0))
            for level in range(5)
        }))
