"""tools/analysis/cka_report.py on the toy pair and a tiny dataset."""
import json
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, TOY_DISTILL, toy_options
from mmengine.config import Config

import cka_report  # noqa: E402


def test_level_metrics_are_one_for_identical_maps():
    t = torch.randn(2, 8, 12, 16)
    m = cka_report.level_metrics(t, t, patch=4)
    for key in cka_report.METRICS:
        assert m[key] == pytest.approx(1.0, abs=1e-5)
    other = cka_report.level_metrics(torch.randn(2, 8, 12, 16), t, patch=4)
    assert all(0 <= other[k] < 0.9 for k in cka_report.METRICS)


def test_patch_size_used_per_level_is_reported(capsys):
    """The report caps the patch at half a level's shorter side; the size it
    used is in the result, the table, the JSON and a printed note."""
    def used(size, patch, channels=(8, 8)):
        s = torch.randn(2, channels[0], *size)
        t = torch.randn(2, channels[1], *size)
        return cka_report.level_metrics(s, t, patch)['patch_size']

    assert used((24, 24), 4) == 4  # toy P3
    assert used((6, 6), 4) == 3  # toy P5: 4 would leave 2x2 patches
    assert used((3, 3), 2) == 1  # toy P6
    assert used((6, 6), 4, channels=(4, 8)) is None  # no PCKA there

    info = {
        'p3': cka_report.patch_size_summary(4, {(24, 24)}, [4, 4]),
        'p5': cka_report.patch_size_summary(4, {(6, 6)}, [3, 3]),
        'p4': cka_report.patch_size_summary(4, {(12, 16), (6, 8)}, [4, 3]),
        'p6': cka_report.patch_size_summary(2, {(3, 3)}, [None]),
    }
    assert info['p4'] == dict(configured=4, used=[3, 4],
                              map_sizes=[[6, 8], [12, 16]])
    assert [cka_report.patch_label(info[n]) for n in info] == [
        '4', '3 (loss 4)', '3-4 (loss 4)', '-']
    stats = dict(mean=0.5, std=0.1)
    report = dict(levels=list(info), patch_sizes=info, students=dict(
        a=dict(levels={n: {m: stats for m in cka_report.METRICS}
                       for n in info})))
    rows = cka_report.format_table(report).splitlines()
    assert rows[0].split()[:2] == ['level', 'patch']
    assert rows[2].split()[:2] == ['p3', '4']
    assert rows[3].split()[:4] == ['p5', '3', '(loss', '4)']
    note = cka_report.patch_note(report).splitlines()
    assert len(note) == 2  # p5 and p4; p3 is as configured, p6 has no PCKA
    assert note[0].startswith('p5: PCKA measured with patch 3 (loss 4) on '
                              'its 6x6 map')
    assert note[1].startswith('p4: PCKA measured with patch 3-4 (loss 4) '
                              'on its 6x8, 12x16 maps')


def _check_figure(fig, saved):
    """The report's figure shows the numbers of its ``report.json``: per
    student, the levels x metrics means and the teacher x student
    cross-level CKA, as images and as the printed cell values."""
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert len(panels) == 2 * len(saved['students'])
    ticks = ['pcka_p3 (patch 4)', 'pcka_p4 (patch 4)',
             'pcka_p5 (patch 3 (loss 4))', 'pcka_p6 (patch 1 (loss 2))']
    for label, data in saved['students'].items():
        grid = [[data['levels'][n][m]['mean'] for m in cka_report.METRICS]
                for n in saved['levels']]
        cross = data['cross_level_cka']
        for title, values, xticks, yticks in (
                (f'{label}: similarity to the teacher', grid,
                 list(cka_report.METRICS), ticks),
                (f'{label}: CKA, teacher level (rows) x student level', cross,
                 saved['levels'], saved['levels'])):
            ax = panels[title]
            [image] = ax.images
            np.testing.assert_allclose(np.asarray(image.get_array()), values,
                                       rtol=1e-12, atol=0, err_msg=title)
            assert [t.get_text() for t in ax.texts] == [
                f'{v:.2f}' for row in values for v in row], title
            assert [t.get_text() for t in ax.get_xticklabels()] == xticks
            assert [t.get_text() for t in ax.get_yticklabels()] == yticks


@pytest.mark.slow
def test_report_two_students(tmp_path, tiny_coco, toy_teacher_ckpt, capsys,
                             saved_figures):
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
    # 192 px images: P3-P6 are 24, 12, 6 and 3 cells; the loss's patches
    # are 4, 4, 4 and 2; the report shrinks the last two
    assert {n: (p['configured'], p['used'], p['map_sizes'])
            for n, p in saved['patch_sizes'].items()} == {
        'pcka_p3': (4, [4], [[24, 24]]), 'pcka_p4': (4, [4], [[12, 12]]),
        'pcka_p5': (4, [3], [[6, 6]]), 'pcka_p6': (2, [1], [[3, 3]])}
    printed = capsys.readouterr().out
    assert 'pcka_p5: PCKA measured with patch 3 (loss 4)' in printed
    assert 'pcka_p6: PCKA measured with patch 1 (loss 2)' in printed
    assert saved['num_images'] == 4
    # the figure, written once, shows what report.json holds
    [(path, fig)] = saved_figures
    assert path == str(out / 'cka_report.png')
    assert (out / 'cka_report.png').is_file()
    _check_figure(fig, saved)
    a, b = report['students']['a'], report['students']['a_distiller']
    assert a['levels'] == b['levels']  # same weights, two checkpoint forms
    for level in a['levels'].values():
        for key in cka_report.METRICS:
            assert 0 <= level[key]['mean'] <= 1
    assert len(a['cross_level_cka']) == 4
    assert all(len(row) == 4 for row in a['cross_level_cka'])
    with pytest.raises(RuntimeError, match="does not fit the config's student"):
        cka_report.main([str(user_cfg), '--teacher-ckpt',
                         opts['model.teacher_ckpt'], '--student-ckpt',
                         opts['model.teacher_ckpt'], '--out-dir', str(out)])
