"""pcka_det.benchmark: the peak memory a measured call reports is its own."""
import sys

import pytest
import torch

from pcka_det.benchmark import measure


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='peak reset needs /proc/self/clear_refs')
def test_cpu_peak_not_hidden_by_earlier_setup():
    # setup that peaks higher and frees everything, like recording features
    big = torch.ones(100 * 2**20)  # 400 MiB of fp32, touched
    del big
    mib = 2**20

    def step():
        x = torch.ones(20 * mib)  # 80 MiB of fp32
        return float(x[-1])

    r = measure(step, repeats=1, device=torch.device('cpu'))
    assert r['result'] == 1.0
    assert 60 * mib < r['peak'] < 200 * mib
