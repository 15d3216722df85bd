"""mmrazor interop: an mmrazor ConfigurableDistiller config uses our loss."""
import copy

import pytest
import torch

from conftest import demo_batch

pytest.importorskip('mmrazor')


def _toy_detector(depth):
    from mmengine.config import Config

    from pcka_det.models.builder import load_model_cfg
    cfg = load_model_cfg(dict(cfg_path='pcka_det::toy/retinanet_r18_toy.py'))
    cfg.backbone.depth = depth
    cfg.neck.in_channels = [64, 128, 256, 512] if depth < 50 else \
        [256, 512, 1024, 2048]
    return Config(copy.deepcopy(cfg.to_dict())).to_dict()


def _razor_model_cfg():
    levels = range(3)
    return dict(
        _scope_='mmrazor',
        type='SingleTeacherDistill',
        architecture=_toy_detector(18),
        teacher=_toy_detector(18),
        distiller=dict(
            type='ConfigurableDistiller',
            student_recorders=dict(
                fpn=dict(type='ModuleOutputs', source='neck')),
            teacher_recorders=dict(
                fpn=dict(type='ModuleOutputs', source='neck')),
            distill_losses={
                f'loss_pcka_p{i + 3}': dict(
                    type='PatchCKALoss', patch_size=2, intra_weight=10.0)
                for i in levels
            },
            loss_forward_mappings={
                f'loss_pcka_p{i + 3}': dict(
                    student_feat=dict(
                        from_student=True, recorder='fpn', data_idx=i),
                    teacher_feat=dict(
                        from_student=False, recorder='fpn', data_idx=i))
                for i in levels
            }))


def test_patch_cka_in_mmrazor_registry():
    from mmrazor.registry import MODELS as RAZOR_MODELS

    from pcka_det.losses import PatchCKALoss
    assert RAZOR_MODELS.get('PatchCKALoss') is PatchCKALoss
    # mmrazor's own PKD implementation is left in place
    assert RAZOR_MODELS.get('PKDLoss').__module__.startswith('mmrazor')


def test_mmrazor_configurable_distiller_trains_one_step():
    from mmengine.optim import OptimWrapper
    from mmrazor.registry import MODELS as RAZOR_MODELS
    from mmrazor.utils import register_all_modules
    register_all_modules(init_default_scope=False)

    torch.manual_seed(0)
    model = RAZOR_MODELS.build(_razor_model_cfg())
    model.train()  # what the runner does; puts mmrazor's teacher in eval
    teacher_before = {k: v.clone() for k, v in
                      model.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in
                      model.architecture.state_dict().items()}
    optim = OptimWrapper(torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.01))
    data = demo_batch(batch_size=2, size=(128, 128), num_classes=6)
    losses = model.train_step(data, optim)
    names = [k for k in losses if 'pcka' in k]
    assert len(names) == 3, losses.keys()
    for k in names:
        assert torch.isfinite(losses[k]) and losses[k] > 0
    assert torch.isfinite(losses['loss'])
    changed = [k for k, v in model.architecture.state_dict().items()
               if v.dtype.is_floating_point
               and not torch.equal(v, student_before[k])]
    assert changed, 'the student did not train'
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
