"""A two-stage teacher for a one-stage student (toy Faster R-CNN, P2-P6,
for the toy RetinaNet, P3-P7): ``new_config`` pairs the levels by stride,
each side at its own output index, and ``tools/train.py`` trains the
written config with every level distilling."""
import glob
import math
import re

from conftest import toy_options

from pcka_det.new_config import main as new_config_main
from pcka_det.train import main as train_main


def test_two_stage_teacher_one_stage_student_trains(tmp_path, tiny_coco,
                                                    capsys):
    config = tmp_path / 'faster_to_retina.py'
    assert new_config_main([
        '--teacher', 'pcka_det::toy/faster_rcnn_r18_toy.py',
        '--teacher-ckpt', 'unused.pth',
        '--student', 'pcka_det::toy/retinanet_thin-r18_toy.py',
        '-o', str(config)]) == 0
    assert 'strides 8, 16, 32, 64' in capsys.readouterr().out
    # a random teacher (this suite has no trained one): 2 steps
    opts = toy_options(tiny_coco, None, **{'train_cfg.max_epochs': 1,
                                           'train_dataloader.batch_size': 4})
    work = tmp_path / 'work'
    train_main([str(config), '--work-dir', str(work), '--cfg-options']
               + [f'{k}={v}' for k, v in opts.items()])
    log = open(glob.glob(str(work / '*' / '*.log'))[0]).read()
    for level in ('pcka_p3', 'pcka_p4', 'pcka_p5', 'pcka_p6'):
        values = [float(v) for v in re.findall(rf'loss_{level}: (\S+)', log)]
        assert len(values) == 2, level
        assert all(math.isfinite(v) and v > 0 for v in values), (level,
                                                                 values)
    assert (work / 'student_last.pth').is_file()
