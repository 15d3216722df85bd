"""tools/analysis/cka_report.py on the toy pair and a tiny dataset."""
import json
import os.path as osp
import sys

import pytest
import torch
from conftest import ROOT, TOY_DISTILL, toy_options
from mmengine.config import Config

sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import cka_report  # noqa: E402


def test_level_metrics_are_one_for_identical_maps():
    t = torch.randn(2, 8, 12, 16)
    m = cka_report.level_metrics(t, t, patch=4)
    for key in cka_report.METRICS:
        assert m[key] == pytest.approx(1.0, abs=1e-5)
    other = cka_report.level_metrics(torch.randn(2, 8, 12, 16), t, patch=4)
    assert all(0 <= other[k] < 0.9 for k in cka_report.METRICS)


@pytest.mark.slow
def test_report_two_students(tmp_path, tiny_coco, toy_teacher_ckpt):
    from pcka_det.models import build_detector
    cfg = Config.fromfile(TOY_DISTILL)
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        student = build_detector(cfg.model.student)
        paths.append(str(tmp_path / f's{seed}.pth'))
        torch.save(dict(state_dict=student.state_dict()), paths[-1])
    # a copy of the first student wrapped as a distiller checkpoint
    state = torch.load(paths[0], weights_only=True)['state_dict']
    torch.save(dict(state_dict={f'student.{k}': v for k, v in state.items()}),
               tmp_path / 'distiller.pth')
    root = str(tiny_coco) + '/'
    user_cfg = tmp_path / 'cfg.py'
    opts = toy_options(tiny_coco, toy_teacher_ckpt)
    user_cfg.write_text(
        f"_base_ = '{TOY_DISTILL}'\n"
        f"val_dataloader = dict(dataset=dict(data_root='{root}'))\n")
    out = tmp_path / 'report'
    report = cka_report.main([
        str(user_cfg), '--teacher-ckpt', opts['model.teacher_ckpt'],
        '--student-ckpt', paths[0], str(tmp_path / 'distiller.pth'),
        '--labels', 'a', 'a_distiller', '--num-images', '4',
        '--batch-size', '2', '--out-dir', str(out)])
    saved = json.loads((out / 'report.json').read_text())
    assert saved['levels'] == ['pcka_p3', 'pcka_p4', 'pcka_p5', 'pcka_p6']
    assert saved['num_images'] == 4
    assert (out / 'cka_report.png').stat().st_size > 10_000
    a, b = report['students']['a'], report['students']['a_distiller']
    assert a['levels'] == b['levels']  # same weights, two checkpoint forms
    for level in a['levels'].values():
        for key in cka_report.METRICS:
            assert 0 <= level[key]['mean'] <= 1
    assert len(a['cross_level_cka']) == 4
    assert all(len(row) == 4 for row in a['cross_level_cka'])
    with pytest.raises(RuntimeError, match='does not match'):
        cka_report.main([str(user_cfg), '--teacher-ckpt',
                         opts['model.teacher_ckpt'], '--student-ckpt',
                         opts['model.teacher_ckpt'], '--out-dir', str(out)])
