"""Every rule of the option contracts refuses through the user's command
(``tools/train.py``'s own ``main``, in-process), before compute is spent:
nothing is trained, no checkpoint written, and the message names the key,
the value and the fix."""
import glob

import pytest
from conftest import TOY_DISTILL, toy_options

from pcka_det.options import OptionError
from pcka_det.train import main as train_main


def run(tmp_path, data_root, teacher, body='', config=None, **extra):
    """``tools/train.py CONFIG --work-dir W --cfg-options ...`` on a user
    config that bases on the toy PCKA config and adds ``body``."""
    if config is None:
        config = tmp_path / 'user_distill.py'
        config.write_text(f'_base_ = {TOY_DISTILL!r}\n{body}\n')
    opts = toy_options(data_root, teacher, **extra)
    argv = [str(config), '--work-dir', str(tmp_path / 'work'),
            '--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]
    return train_main(argv)


def refused(tmp_path, tiny_coco, teacher, match, body='', **extra):
    with pytest.raises(OptionError, match=match) as e:
        run(tmp_path, tiny_coco, teacher, body, **extra)
    assert not glob.glob(str(tmp_path / 'work' / '*.pth'))
    return str(e.value)


SCHEDULE = "custom_hooks = [dict(type='DistillLossScheduleHook', {})]"


@pytest.mark.parametrize('args, match', [
    ('min_factor=-1.0, decay="linear"',
     r'min_factor = -1.0: must be >= 0'),
    ('min_factor=1.5, decay="cosine"', r'min_factor = 1.5: must be <= 1'),
    ('min_factor=0.2', 'rule "min-factor-with-decay"'),
    ('stop_iter=0', r'stop_iter = 0: must be >= 1'),
    ('warmup_iters=1000', r'warmup_iters = 1000 but the run has 4 steps'),
    ('stop_iter=50', r'stop_iter = 50 but the run has 4 steps'),
    ('stop_epoch=3', r'stop_epoch = 3 but the run has 1 epochs'),
])
def test_schedule_rules(tmp_path, tiny_coco, toy_teacher_ckpt, args, match):
    refused(tmp_path, tiny_coco, toy_teacher_ckpt, match,
            SCHEDULE.format(args))


def test_same_level_twice(tmp_path, tiny_coco, toy_teacher_ckpt):
    # a copy-paste index: P4 twice, P3 never
    with pytest.raises(ValueError, match='distill_losses.pcka_p4 distils '
                       'the same level as distill_losses.pcka_p3'):
        run(tmp_path, tiny_coco, toy_teacher_ckpt,
            'model = dict(distill_losses=dict(pcka_p3=dict(index=1)))')
    assert not glob.glob(str(tmp_path / 'work' / '*.pth'))


@pytest.mark.parametrize('body, match', [
    ("model = dict(distill_losses=dict(pcka_p5=dict(loss=dict("
     "intra_weight=0.0))))", 'rule "trains-something"'),
    ("model = dict(log_alignment_interval=-1)",
     r'log_alignment_interval = -1: must be >= 0'),
    ("model = dict(nonfinite='ignore')", r"must be one of \['skip', 'raise'\]"),
    ("model = dict(teacher_dtype='fp8')", 'teacher_dtype'),
    ("model = dict(predict_with='teacher')", 'rule "not-teacher-in-training"'),
    ("default_hooks = dict(nonfinite_guard=dict(max_level_streak=0))",
     r'max_level_streak = 0: must be >= 1'),
    ("resume_fallback = 'yes'", r"resume_fallback = 'yes': must be a bool"),
])
def test_option_rules(tmp_path, tiny_coco, toy_teacher_ckpt, body, match):
    refused(tmp_path, tiny_coco, toy_teacher_ckpt, match, body)


def test_teacher_ckpt_variable_changed_on_the_command_line(
        tmp_path, tiny_coco, toy_teacher_ckpt):
    opts = toy_options(tiny_coco, toy_teacher_ckpt)
    del opts['model.teacher_ckpt']
    config = tmp_path / 'user_distill.py'
    config.write_text(f'_base_ = {TOY_DISTILL!r}\n')
    argv = [str(config), '--work-dir', str(tmp_path / 'work'),
            '--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]
    with pytest.raises(OptionError) as e:
        train_main(argv + [f'teacher_ckpt={toy_teacher_ckpt}'])
    msg = str(e.value)
    # both values, which side changed, and the fix
    assert f'--cfg-options teacher_ckpt={toy_teacher_ckpt}' in msg
    assert "model.teacher_ckpt is still 'work_dirs/demo/teacher/model.pth'" \
        in msg
    assert 'Set model.teacher_ckpt instead' in msg


def test_teacher_ckpt_variable_changed_in_a_child_config(
        tmp_path, tiny_coco, toy_teacher_ckpt):
    config = tmp_path / 'child.py'
    config.write_text(f'_base_ = {TOY_DISTILL!r}\n'
                      f'teacher_ckpt = {str(toy_teacher_ckpt)!r}\n')
    opts = toy_options(tiny_coco, toy_teacher_ckpt)
    del opts['model.teacher_ckpt']
    argv = [str(config), '--work-dir', str(tmp_path / 'work'),
            '--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]
    with pytest.raises(OptionError, match='child.py sets teacher_ckpt = '):
        train_main(argv)


def test_teacher_ckpt_set_in_model_stays_valid(tmp_path, tiny_coco,
                                               toy_teacher_ckpt):
    # README's way, in a child config: model.teacher_ckpt, the variable
    # left as the base's
    config = tmp_path / 'child.py'
    config.write_text(f'_base_ = {TOY_DISTILL!r}\n'
                      f'model = dict(teacher_ckpt={str(toy_teacher_ckpt)!r})'
                      '\n')
    opts = toy_options(tiny_coco, toy_teacher_ckpt)
    del opts['model.teacher_ckpt']
    argv = [str(config), '--work-dir', str(tmp_path / 'work'),
            '--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]
    train_main(argv)
    assert (tmp_path / 'work' / 'student_last.pth').is_file()


def test_frozen_student_stage_recorded(tmp_path, tiny_coco,
                                       toy_teacher_ckpt):
    # mmdet's ResNet frozen_stages=1 freezes the stem and layer1
    msg = str(pytest.raises(ValueError, run, tmp_path, tiny_coco,
                            toy_teacher_ckpt, """model = dict(
    student=dict(backbone=dict(frozen_stages=1)),
    recorders=dict(c2='backbone.layer1'),
    distill_losses=dict(pcka_c2=dict(
        recorder='c2', index=None,
        connector=dict(type='ConvConnector', in_channels=16,
                       out_channels=64),
        loss=dict(type='PatchCKALoss', patch_size=4))))""").value)
    assert 'recorders.c2: the student\'s "backbone.layer1" is frozen' in msg
    assert not glob.glob(str(tmp_path / 'work' / '*.pth'))
    # layer2 is trainable with frozen_stages=1: accepted at build
    from mmdet.registry import MODELS
    from pcka_det.testing import offline_distiller_cfg
    cfg = offline_distiller_cfg(TOY_DISTILL)
    cfg.model.student.backbone = dict(cfg.model.student.get('backbone', {}),
                                      frozen_stages=1)
    cfg.model.recorders = dict(fpn='neck', c3='backbone.layer2')
    MODELS.build(cfg.model)


def test_evaluator_reads_another_file(tmp_path, tiny_coco, toy_teacher_ckpt):
    other = tiny_coco / 'annotations' / 'instances_train.json'
    with pytest.raises(ValueError) as e:
        run(tmp_path, tiny_coco, toy_teacher_ckpt,
            **{'val_evaluator.ann_file': str(other)})
    msg = str(e.value)
    assert f'val_evaluator.ann_file is "{other}"' in msg
    assert 'annotations/instances_val.json' in msg  # the dataset's
    assert not glob.glob(str(tmp_path / 'work' / '*.pth'))
