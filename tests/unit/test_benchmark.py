"""pcka_det.benchmark: the peak memory a measured call reports is its own."""
import sys
import textwrap

import pytest

from pcka_det.benchmark import run_isolated

# Run the way the benchmark tools run it, in a fresh process: memory that
# earlier tests freed but the allocator kept resident would otherwise be
# reused by the measured call without raising the RSS.
WORKER = textwrap.dedent('''
    import json
    import torch
    from pcka_det.benchmark import measure

    mib = 2**20
    # setup that peaks higher and frees everything, like recording features
    big = torch.ones(100 * mib)  # 400 MiB of fp32, touched
    del big

    def step():
        x = torch.ones(20 * mib)  # 80 MiB of fp32
        return float(x[-1])

    r = measure(step, repeats=1, device=torch.device('cpu'))
    print(json.dumps(dict(peak=r['peak'], result=r['result'])))
''')


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='peak reset needs /proc/self/clear_refs')
def test_cpu_peak_not_hidden_by_earlier_setup():
    r = run_isolated([sys.executable, '-c', WORKER])
    mib = 2**20
    assert r['result'] == 1.0
    assert 60 * mib < r['peak'] < 200 * mib
