"""Four early errors that used to surface as obscure tracebacks now name
their cause, through the user's commands, before any step."""
import glob
import json
import shutil

import pytest
from conftest import TOY_DISTILL, toy_options

from pcka_det.check import main as check_main
from pcka_det.train import main as train_main


def _train(tmp_path, config, data_root, teacher, **extra):
    opts = toy_options(data_root, teacher, **extra)
    argv = [str(config), '--work-dir', str(tmp_path / 'work'),
            '--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]
    return train_main(argv)


def _user_config(tmp_path, body):
    config = tmp_path / 'user_distill.py'
    config.write_text(f'_base_ = {TOY_DISTILL!r}\n{body}\n')
    return config


def test_empty_validation_set(tmp_path, tiny_coco, toy_teacher_ckpt):
    # was: "need at least one array to concatenate" after the first epoch
    root = tmp_path / 'data'
    shutil.copytree(tiny_coco, root)
    ann = root / 'annotations' / 'instances_val.json'
    data = json.loads(ann.read_text())
    data['images'], data['annotations'] = [], []
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match='val_dataloader.dataset.ann_file: '
                       '.*holds no images'):
        _train(tmp_path, TOY_DISTILL, root, toy_teacher_ckpt)
    assert not glob.glob(str(tmp_path / 'work' / '*.pth'))


def test_check_with_zero_gpus(capsys):
    # was: ZeroDivisionError in the projected time
    with pytest.raises(SystemExit) as e:
        check_main([TOY_DISTILL, '--gpus', '0'])
    assert e.value.code == 2
    assert "pcka_det.check --gpus = 0: must be >= 1" in \
        capsys.readouterr().err


def test_distiller_config_given_as_the_student(tmp_path, tiny_coco,
                                               toy_teacher_ckpt):
    # was: "Did you mean one of []"
    config = _user_config(
        tmp_path, f'model = dict(student=dict(cfg_path={TOY_DISTILL!r}))')
    with pytest.raises(ValueError, match='is a distillation config') as e:
        _train(tmp_path, config, tiny_coco, toy_teacher_ckpt)
    assert "'pcka_det::toy/retinanet_thin-r18_toy.py'" in str(e.value)


def test_inherit_typo(tmp_path, tiny_coco, toy_teacher_ckpt):
    # was: reported as a recorder source
    config = _user_config(tmp_path, "model = dict(inherit=['bbox_haed'])")
    with pytest.raises(ValueError, match='inherit "bbox_haed" is not a '
                       'module of the student') as e:
        _train(tmp_path, config, tiny_coco, toy_teacher_ckpt)
    assert 'Recorder' not in str(e.value)
    assert not glob.glob(str(tmp_path / 'work' / '*.pth'))


def test_new_config_weight_zero(tmp_path, capsys):
    from pcka_det.new_config import main as new_config_main
    with pytest.raises(SystemExit) as e:
        new_config_main(['--teacher', 'pcka_det::toy/retinanet_r18_toy.py',
                         '--teacher-ckpt', 't.pth', '--student',
                         'pcka_det::toy/retinanet_thin-r18_toy.py', '-o',
                         str(tmp_path / 'x.py'), '--weight', '0'])
    assert e.value.code == 2
    assert ('--weight = 0.0: a weight of 0 or less writes a config that '
            'distils nothing') in capsys.readouterr().err
    assert not (tmp_path / 'x.py').exists()


def test_cka_report_zero_images(capsys):
    import cka_report  # tools/analysis, on the path from conftest
    with pytest.raises(SystemExit) as e:
        cka_report.parse_args([TOY_DISTILL, '--teacher-ckpt', 't.pth',
                               '--student-ckpt', 's.pth', '--num-images',
                               '0'])
    assert e.value.code == 2
    assert '--num-images: must be an integer >= 1' in \
        capsys.readouterr().err


def test_load_from_and_student_ckpt_together(tmp_path, tiny_coco,
                                             toy_teacher_ckpt):
    from pcka_det.options import OptionError
    with pytest.raises(OptionError, match='rule "one-student-init"'):
        _train(tmp_path, TOY_DISTILL, tiny_coco, toy_teacher_ckpt,
               **{'load_from': str(toy_teacher_ckpt),
                  'model.student_ckpt': str(toy_teacher_ckpt)})
    assert not glob.glob(str(tmp_path / 'work' / '*.pth'))
