"""tools/benchmark/benchmark_overhead.py prints and saves its side-by-side numbers."""
import json
import os.path as osp

import pytest
from conftest import ROOT, TOY_DISTILL

import benchmark_overhead


def test_configs_must_share_models():
    with pytest.raises(ValueError, match='another student'):
        benchmark_overhead.check_same_models(
            [TOY_DISTILL, osp.join(ROOT, 'configs/pcka/retina_r101_r50.py')])
    # a 1x student config builds the same model as the 2x one
    benchmark_overhead.check_same_models([
        osp.join(ROOT, 'configs/pcka/retina_r101_r50.py'),
        osp.join(ROOT, 'configs/baselines/cwd_retina_r101_r50_1x.py')])


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
        assert r['time'] > 0 and r['peak'] >= 0
    b = summary['breakdown'][name]
    assert b['overhead_ratio'] > 0 and 0 < b['loss_share'] < 1
    assert json.loads(out.read_text())['breakdown'][name] == b
    assert 'x the student step' in capsys.readouterr().out
