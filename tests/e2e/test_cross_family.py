"""Cross-family toy pairs: a two-stage teacher for a one-stage student (toy
Faster R-CNN, P2-P6, for the toy RetinaNet, P3-P7) and a DETR-family student
for the demo's CNN teacher (toy RetinaNet R18 for a small DINO, whose
ChannelMapper is 256 wide against the teacher's 128-wide FPN).
``new_config`` pairs the levels by stride, each side at its own output index,
with connectors where the widths differ, and ``tools/train.py`` trains the
written config with every level distilling."""
import glob
import math
import re

import pytest
from conftest import toy_options
from mmengine.config import Config

from pcka_det.new_config import main as new_config_main
from pcka_det.train import main as train_main


PAIRS = {
    # teacher, student, (student, teacher) output index of each level
    'faster_to_retina': ('faster_rcnn_r18_toy.py', 'retinanet_thin-r18_toy.py',
                         [(0, 1), (1, 2), (2, 3), (3, 4)]),
    'retina_to_dino': ('retinanet_r18_toy.py', 'dino_thin-r18_toy.py',
                       [(0, 0), (1, 1), (2, 2), (3, 3)]),
}


@pytest.mark.slow
@pytest.mark.parametrize('pair', sorted(PAIRS))
def test_cross_family_pair_trains(tmp_path, tiny_coco, capsys, pair):
    teacher, student, indices = PAIRS[pair]
    config = tmp_path / f'{pair}.py'
    assert new_config_main([
        '--teacher', f'pcka_det::toy/{teacher}',
        '--teacher-ckpt', 'unused.pth',
        '--student', f'pcka_det::toy/{student}',
        '-o', str(config)]) == 0
    assert 'strides 8, 16, 32, 64' in capsys.readouterr().out
    cfg = Config.fromfile(str(config))
    assert [(spec['index']['student'], spec['index']['teacher'])
            if isinstance(spec['index'], dict) else (spec['index'],) * 2
            for spec in cfg.model.distill_losses.values()] == indices
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
