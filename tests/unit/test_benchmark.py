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


def _rounds(durations):
    """measure_rounds over runs whose n-th timed call takes
    ``durations[name][n]`` seconds of a stand-in clock; the calls made."""
    import torch

    from pcka_det.benchmark import measure_rounds
    now, calls, count = [0.0], [], {name: -1 for name in durations}

    def run(name):
        def fn():
            calls.append(name)
            if count[name] >= 0:  # the warm-up takes no clock time
                now[0] += durations[name][count[name]]
            count[name] += 1
        return fn
    found = measure_rounds({n: run(n) for n in durations},
                           len(next(iter(durations.values()))),
                           torch.device('cpu'), clock=lambda: now[0])
    return found, calls


def test_rounds_interleave_runs_and_take_medians():
    found, calls = _rounds({'student': [1.0, 1.2, 0.9],
                            'distiller': [2.0, 2.2, 2.1],
                            'teacher': [0.5, 0.4, 0.6]})
    # one warm-up each, then student, distiller, teacher, three times
    assert calls == ['student', 'distiller', 'teacher'] * 4
    runs = found['runs']
    assert [runs[n]['time'] for n in ('student', 'distiller', 'teacher')] \
        == pytest.approx([1.0, 2.1, 0.5])
    assert runs['student']['times'] == pytest.approx([1.0, 1.2, 0.9])
    assert runs['student']['spread'] == pytest.approx(0.3 / 1.0)
    assert runs['distiller']['spread'] == pytest.approx(0.2 / 2.1)
    assert runs['teacher']['spread'] == pytest.approx(0.2 / 0.5)
    assert runs['student']['peak'] is None  # CPU: measured per process
    # spreads above 25 % of the median: student (30 %) and teacher (40 %)
    assert found['unreliable'] == ['student', 'teacher']


def test_cost_notes_explain_a_part_larger_than_its_whole():
    from pcka_det.check import cost_notes
    cost = dict(overhead=1.2, teacher_share=2.67, projected='10 x 1 s',
                unreliable=['teacher forward'],
                rows={'teacher forward': dict(spread=1.5)})
    notes = cost_notes(cost)
    assert notes[0] == ('distiller / student 1.20x; teacher forward 267% of '
                        'a distiller iteration')
    assert notes[1].startswith('the teacher\'s forward timed longer than the '
                               'distiller iteration that contains it')
    assert notes[3].startswith('unreliable: slowest and fastest round differ '
                               'by more than 25% of the median (teacher '
                               'forward 150%)')
    calm = dict(cost, teacher_share=0.4, unreliable=[])
    assert cost_notes(calm) == [
        'distiller / student 1.20x; teacher forward 40% of a distiller '
        'iteration', 'projected: 10 x 1 s']
