# CWD baseline (Shu et al. 2021) on the PCKA RetinaNet R101 -> R50 pair:
# same teacher, data, schedule and seed; only the distillation loss differs.
# tau 1 and loss weight 5 on every FPN level, CWD's RetinaNet setting.
_base_ = '../pcka/retina_r101_r50.py'

model = dict(
    distill_losses=dict(
        _delete_=True,
        **{
            f'cwd_p{level + 3}': dict(
                recorder='fpn',
                index=level,
                loss=dict(type='ChannelWiseDivergence', tau=1.0,
                          loss_weight=5.0))
            for level in range(5)
        }))
