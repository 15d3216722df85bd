"""``tools/gpu_report.py --quick`` on the CPU: the GPU report's code runs
in every suite, so it is ready when a GPU is lent. Its JSON has every
section, each ratio is computed from its own rows, the sections a CPU
cannot run say why, and the README table shows the saved rows."""
import json
import os.path as osp
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, osp.join(ROOT, 'tools'))
import gpu_report  # noqa: E402

ROWS = {'student step', 'distiller step', 'teacher fp32', 'teacher bf16',
        'teacher channels_last', 'losses alone'}


@pytest.mark.slow
def test_quick_report_on_the_cpu(tmp_path, capsys):
    gpu_report.main(['--quick', '--device', 'cpu', '--out-dir',
                     str(tmp_path)])
    report = json.loads((tmp_path / 'gpu_report.json').read_text())
    assert report['device'] == 'cpu' and report['quick'] is True
    sections = report['sections']
    assert {k: v['status'] for k, v in sections.items()} == dict(
        steps='ok', amp='skipped', syncs='skipped', launcher='ok')
    assert 'needs CUDA' in sections['amp']['reason']
    steps = sections['steps']
    assert steps['skipped'] == {
        'teacher fp16': 'fp16 convolutions are a GPU figure'}
    assert set(steps['pairs']) == {'retinanet', 'faster_rcnn'}
    for pair in steps['pairs'].values():
        rows = pair['rows']
        assert set(rows) == ROWS
        for row in rows.values():
            assert len(row['times']) == report['rounds'] == 2
            assert row['time'] > 0
        t = {name: row['time'] for name, row in rows.items()}
        assert pair['ratios'] == pytest.approx({
            'distiller_vs_student': t['distiller step'] / t['student step'],
            'loss_share_of_step': t['losses alone'] / t['distiller step'],
            'teacher_share_of_step': t['teacher fp32'] / t['distiller step'],
            'teacher bf16 speed-up': t['teacher fp32'] / t['teacher bf16'],
            'teacher channels_last speed-up':
                t['teacher fp32'] / t['teacher channels_last'],
        }, rel=1e-12)
    launcher = sections['launcher']
    assert launcher['exported'] and launcher['backend'] == 'gloo'
    assert launcher['amp'] is False  # --amp is refused on a CPU
    # the README table: the saved rows, then why a section did not run
    table = (tmp_path / 'gpu_report.md').read_text()
    retina = steps['pairs']['retinanet']['rows']['distiller step']
    faster = steps['pairs']['faster_rcnn']['rows']['distiller step']
    assert (f'| distiller step (ms, peak MiB) | {retina["time"] * 1e3:.1f}'
            in table)
    assert f'| {faster["time"] * 1e3:.1f}' in table
    assert 'amp: skipped: AmpOptimWrapper needs CUDA' in table
    assert table in capsys.readouterr().out


def test_a_failing_section_is_reported_and_the_others_run(
        tmp_path, monkeypatch):
    def broken(args, device, pairs):
        raise RuntimeError('out of memory at 1333x800')

    monkeypatch.setitem(gpu_report.SECTIONS, 'steps', broken)
    report = gpu_report.main(['--quick', '--device', 'cpu', '--sections',
                              'steps', 'amp', '--out-dir', str(tmp_path)])
    steps = report['sections']['steps']
    assert steps['status'] == 'error'
    assert steps['message'] == 'RuntimeError: out of memory at 1333x800'
    assert report['sections']['amp']['status'] == 'skipped'
    assert 'steps: error: RuntimeError: out of memory' in \
        (tmp_path / 'gpu_report.md').read_text()
