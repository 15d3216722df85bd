"""Generated from the option contracts (pcka_det/options.py): every value a
user can set runs through ``tools/train.py``'s own ``main`` (two steps on the
toy data, several options per run), ends with finite losses and
``student_last.pth``; every value an option's declaration refuses is refused
at build, with a message naming the key and the value."""
import glob
import math
import re

import pytest
from conftest import TOY_DISTILL, toy_options

import pcka_det  # noqa: F401  (the components declare their contracts)
from pcka_det.options import COMMANDS, CONTRACTS
from pcka_det.train import main as train_main

COVERED = ('FeatureDistiller', 'PatchCKALoss', 'DistillLossScheduleHook',
           'NonFiniteGuardHook', 'DistillRunner', 'PKDLoss',
           'ChannelWiseDivergence', 'FeatureMSELoss', 'CKALoss',
           'ConvConnector', 'ExportStudentHook', 'DistillLevel', 'Recorder',
           'CrossKDLoss', 'CrossKDGFLLoss')
# the toy pair's levels each loss type is put on (both necks are 128 wide)
OTHER_LOSSES = dict(PKDLoss='pcka_p4', ChannelWiseDivergence='pcka_p5',
                    FeatureMSELoss='pcka_p6', CKALoss='cka_p3')


def config_body(values):
    """Config lines that set ``{component: {option: value}}`` on the toy
    PCKA config."""
    model = dict(values.get('FeatureDistiller', {}))
    losses = {}
    if values.get('PatchCKALoss') or values.get('ConvConnector') or \
            values.get('DistillLevel'):
        losses['pcka_p3'] = dict(loss=dict(values.get('PatchCKALoss', {})),
                                 **values.get('DistillLevel', {}))
        if 'ConvConnector' in values:
            losses['pcka_p3']['connector'] = {
                'type': 'ConvConnector', 'in_channels': 128,
                'out_channels': 128, **values['ConvConnector']}
    for loss, level in OTHER_LOSSES.items():
        if loss in values:
            if level == 'cka_p3':  # a level of its own, beside PCKA's
                losses[level] = dict(recorder='fpn', index=0,
                                     loss=dict(type=loss, **values[loss]))
            else:  # another loss type on an inherited level
                losses[level] = dict(loss=dict(_delete_=True, type=loss,
                                               **values[loss]))
    for loss in ('CrossKDLoss', 'CrossKDGFLLoss'):
        # the toy RetinaNet's head level (its towers have 2 convs); a GFL
        # loss on it is refused before the build, as its refusals need
        if loss in values:
            losses['crosskd'] = dict(head_conv=2,
                                     loss=dict(type=loss, **values[loss]))
    if losses:
        model['distill_losses'] = losses
    if 'Recorder' in values:  # the toy config's one recorder
        model['recorders'] = dict(fpn=dict(
            _delete_=True, student='neck', teacher='neck',
            **values['Recorder']))
    if 'ExportStudentHook' in values:
        lines_export = dict(export_student=values['ExportStudentHook'])
    else:
        lines_export = {}
    lines = [f'model = {model!r}'] if model else []
    if 'DistillLossScheduleHook' in values:
        hook = dict(type='DistillLossScheduleHook',
                    **values['DistillLossScheduleHook'])
        lines.append(f'custom_hooks = [{hook!r}]')
    hooks = dict(lines_export)
    if 'NonFiniteGuardHook' in values:
        hooks['nonfinite_guard'] = values['NonFiniteGuardHook']
    if hooks:
        lines.append(f'default_hooks = {hooks!r}')
    for option, value in values.get('DistillRunner', {}).items():
        lines.append(f'{option} = {value!r}')
    return '\n'.join(lines)


def runs():
    """Run k sets the k-th example of every option that has one."""
    depth = max(len(o.examples) for c in COVERED
                for o in CONTRACTS[c].options)
    out = []
    for k in range(depth):
        values = {}
        for name in COVERED:
            for option in CONTRACTS[name].options:
                if len(option.examples) > k:
                    values.setdefault(name, {})[option.name] = \
                        option.examples[k]
        out.append(values)
    return out


def refusals():
    rows = []
    for name in COVERED:
        for option in CONTRACTS[name].options:
            bad = option.refused_example()
            if bad is not None:
                rows.append((name, option.name, bad))
    return rows


def train(tmp_path, tiny_coco, teacher, body):
    config = tmp_path / 'options.py'
    config.write_text(f'_base_ = {TOY_DISTILL!r}\n{body}\n')
    # 8 images a step, 2 epochs: 2 steps, a schedule can stop after one
    opts = toy_options(tiny_coco, teacher, **{
        'train_dataloader.batch_size': 8, 'train_cfg.max_epochs': 2})
    work = tmp_path / 'work'
    train_main([str(config), '--work-dir', str(work), '--cfg-options']
               + [f'{k}={v}' for k, v in opts.items()])
    return work


def test_every_declared_option_is_covered():
    assert set(COVERED) <= set(CONTRACTS)
    # (the commands' flags: tests/unit/test_options.py)
    assert set(CONTRACTS) - set(COMMANDS) <= set(COVERED), \
        'a new contract: add it here'
    # every option with a value besides its default is run
    assert sum(len(o.examples) for c in COVERED
               for o in CONTRACTS[c].options) >= 20


@pytest.mark.parametrize('index', range(len(runs())))
def test_option_values_train(tmp_path, tiny_coco, toy_teacher_ckpt, index):
    values = runs()[index]
    work = train(tmp_path, tiny_coco, toy_teacher_ckpt, config_body(values))
    assert (work / 'student_last.pth').is_file(), values
    log = open(glob.glob(str(work / '*' / '*.log'))[0]).read()
    losses = [float(v) for v in re.findall(r' loss: (\S+)', log)]
    assert len(losses) == 2, values  # both steps logged
    assert all(math.isfinite(v) for v in losses), values


@pytest.mark.parametrize('component, option, bad', refusals(),
                         ids=lambda v: str(v))
def test_declared_refusals(tmp_path, tiny_coco, toy_teacher_ckpt, component,
                           option, bad):
    with pytest.raises(ValueError) as e:
        train(tmp_path, tiny_coco, toy_teacher_ckpt,
              config_body({component: {option: bad}}))
    assert f'{option} = {bad!r}' in str(e.value)
    assert not glob.glob(str(tmp_path / 'work' / '*.pth'))
