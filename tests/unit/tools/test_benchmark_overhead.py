"""tools/benchmark/benchmark_overhead.py refuses configs whose models differ
(its run end to end: tests/e2e/test_benchmark_overhead_run.py)."""
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
