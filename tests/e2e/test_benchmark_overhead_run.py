"""``tools/benchmark/benchmark_overhead.py`` run end to end: it prints and
saves its side-by-side numbers, and its ratios are computed from its own
rows (the config checks are in tests/unit/tools/test_benchmark_overhead.py).
"""
import json
import os.path as osp

import pytest
from conftest import TOY_DISTILL

import benchmark_overhead


@pytest.mark.slow
def test_overhead_rows(tmp_path, capsys):
    out = tmp_path / 'o.json'
    summary = benchmark_overhead.main([
        TOY_DISTILL, '--batch-size', '1', '--image-size', '64', '64',
        '--repeats', '1', '--teacher-dtype', 'bf16', '--json', str(out)])
    name = osp.splitext(osp.basename(TOY_DISTILL))[0]
    assert set(summary['results']) == {
        'student alone', 'teacher forward', 'teacher forward (bf16)',
        f'{name}: losses only', f'{name}: distiller',
        f'{name}: alignment log step'}
    for r in summary['results'].values():
        # timed in interleaved rounds (one here: no spread), peak per row
        assert r['time'] > 0 and r['peak'] >= 0 and r['spread'] == 0
    assert summary['unreliable'] == []
    # what it saved is what it returned, and its ratios are computed from
    # its own saved rows
    saved = json.loads(out.read_text())
    assert saved == summary
    rows = {k: r['time'] for k, r in saved['results'].items()}
    student, step = rows['student alone'], rows[f'{name}: distiller']
    assert saved['breakdown'] == {name: pytest.approx(dict(
        overhead_ratio=step / student,
        extra_ms=(step - student) * 1e3,
        teacher_share=rows['teacher forward'] / step,
        loss_share=rows[f'{name}: losses only'] / step), rel=1e-12)}
    b = saved['breakdown'][name]
    assert 0 < b['loss_share'] < 1
    # the printed table: each row's time, peak and ratio to the student
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    for key, r in saved['results'].items():
        head = f'{key:<44}'  # a longer name pushes the columns right
        [line] = [x for x in lines if x.startswith(head)]
        assert line[len(head):].split() == [
            f'{r["time"] * 1e3:.1f}', f'{r["peak"] / 2**20:.1f}',
            f'{r["time"] / student:.2f}x'], key
    assert (f'{name}: distiller step {step * 1e3:.0f} ms = '
            f'{step / student:.2f}x the student step (+'
            f'{(step - student) * 1e3:.0f} ms); teacher forward alone '
            f'{rows["teacher forward"] * 1e3:.0f} ms') in printed
