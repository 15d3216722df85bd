"""Distillation stopped by ``DistillLossScheduleHook`` stays stopped after
``--resume`` past the stop epoch and past the stop iteration (mmrazor's
stop hook, written with ``epoch == stop_epoch`` in one version, turned
distillation back on after such a resume)."""
import glob
import re

import pytest
from conftest import TOY_DISTILL, toy_options

from pcka_det.train import main as train_main


def _train(work, tiny_coco, teacher, hook, epochs, *extra):
    config = work.parent / f'{work.name}.py'
    config.write_text(f'_base_ = {TOY_DISTILL!r}\n'
                      f'custom_hooks = [{hook!r}]\n')
    opts = toy_options(tiny_coco, teacher, **{'train_cfg.max_epochs': epochs})
    train_main([str(config), '--work-dir', str(work), *extra,
                '--cfg-options'] + [f'{k}={v}' for k, v in opts.items()])
    return open(sorted(glob.glob(str(work / '*' / '*.log')))[-1]).read()


def _steps(log):
    """``(epoch, distill_scale, PCKA P3 loss or None)`` of each logged
    step."""
    out = []
    for line in log.splitlines():
        epoch = re.search(r'Epoch\(train\)\s+\[(\d+)\]', line)
        if not epoch:
            continue
        scale = re.search(r'distill_scale: (\S+)', line)
        loss = re.search(r'loss_pcka_p3: (\S+)', line)
        out.append((int(epoch.group(1)), float(scale.group(1)),
                    float(loss.group(1)) if loss else None))
    return out


@pytest.mark.parametrize('stop', [dict(stop_epoch=1), dict(stop_iter=2)],
                         ids=['stop_epoch', 'stop_iter'])
def test_stopped_distillation_stays_stopped_after_resume(
        tmp_path, tiny_coco, toy_teacher_ckpt, stop):
    hook = dict(type='DistillLossScheduleHook', **stop)
    work = tmp_path / 'work'
    # 8 images, batch 2: 4 steps an epoch. Epoch 1 ends past both stops.
    first = _steps(_train(work, tiny_coco, toy_teacher_ckpt, hook, 2))
    assert len(first) == 8
    # the same run, two epochs longer, resumed after epoch 2
    resumed = _steps(_train(work, tiny_coco, toy_teacher_ckpt, hook, 4,
                            '--resume'))
    assert [e for e, _, _ in resumed] == [3] * 4 + [4] * 4
    # (a stopped step logs no loss_pcka_*: the log's value of it is the
    # smoothed history of the steps before the stop, so the scale decides)
    assert all(scale == 0 for _, scale, _ in resumed), resumed
    # before the stop it distilled
    assert first[0][1] == 1 and first[0][2] > 0
