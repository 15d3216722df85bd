"""Timing and peak-memory helpers shared by ``pcka_det.check`` and the
benchmark tools.

:func:`measure_rounds` times several runs interleaved in rounds (student,
distiller, teacher, student, ...), so that a load that comes and goes on a
busy machine slows every run alike instead of one of them; it reports the
median of each and its spread. On a GPU the peak memory of each run comes
from the allocator's counters, reset before its warm-up. On a CPU the peak
of one run is hidden by memory the allocator kept from another in the same
process: :func:`measure` in a process of its own (``run_isolated``)
measures it (the resident set size above the start of the measured call).
"""
import json
import resource
import subprocess
import time
from typing import Callable, Dict, List, Optional

import torch


def _proc_status_bytes(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise OSError(f'{field} not in /proc/self/status')


def _reset_cpu_peak() -> int:
    """Start a new peak-RSS window; return the baseline for ``_cpu_peak``.

    Linux resets the high-water mark (VmHWM) to the current RSS on writing
    5 to clear_refs, so memory freed by the setup (e.g. the forward passes
    that recorded the features) no longer hides a later, smaller peak.
    Elsewhere the process-wide peak is the best there is.
    """
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return _proc_status_bytes('VmRSS')
    except OSError:
        return _cpu_peak()


def _cpu_peak() -> int:
    try:
        return _proc_status_bytes('VmHWM')
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(fn: Callable[[], object], repeats: int,
            device: torch.device) -> dict:
    """Peak memory of the first call and median time of ``repeats`` calls.

    Args:
        fn (callable): One step (e.g. forward + backward).
        repeats (int): Timed calls after the first (warm-up) call.
        device (torch.device): Where ``fn`` runs.

    Returns:
        dict: ``time`` (s, median), ``peak`` (bytes above what was
        allocated before the first call), ``result`` (last return value).
    """
    sync = torch.cuda.synchronize if device.type == 'cuda' else \
        (lambda: None)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _reset_cpu_peak()
    result = fn()
    sync()
    peak = (torch.cuda.max_memory_allocated(device)
            if device.type == 'cuda' else _cpu_peak()) - base
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - start)
    times.sort()
    return dict(time=times[len(times) // 2] if times else float('nan'),
                peak=peak, result=result)


# a run whose slowest round is this much above its fastest (relative to
# its median) is reported as unreliable
RELIABLE_SPREAD = 0.25


def measure_rounds(runs: Dict[str, Callable[[], object]], rounds: int,
                   device: torch.device,
                   clock: Callable[[], float] = time.perf_counter) -> dict:
    """Time ``runs`` interleaved: one warm-up call each, then ``rounds``
    rounds calling every run once, in order.

    Args:
        runs (dict[str, callable]): Name -> one step (e.g. forward +
            backward), timed in this order within each round.
        rounds (int): Timed rounds after the warm-up.
        device (torch.device): Where the runs execute (CUDA: synchronised
            around each call, peak memory per run from the allocator).
        clock (callable): Seconds (``time.perf_counter``; tests pass a
            stand-in).

    Returns:
        dict: per name: ``time`` (s, median of the rounds), ``times`` (each
        round's), ``spread`` ((slowest - fastest) / median), ``peak`` (bytes
        allocated above the start of its warm-up, CUDA only, else None);
        and ``unreliable``: the names whose spread exceeds
        ``RELIABLE_SPREAD``.
    """
    cuda = device.type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    found = {name: dict(times=[], peak=None) for name in runs}
    for name, fn in runs.items():  # warm-up, and the peak on a GPU
        if cuda:
            sync()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        fn()
        sync()
        if cuda:
            found[name]['peak'] = torch.cuda.max_memory_allocated(device) - \
                base
    for _ in range(rounds):
        for name, fn in runs.items():
            sync()
            start = clock()
            fn()
            sync()
            found[name]['times'].append(clock() - start)
    unreliable = []
    for name, row in found.items():
        times = sorted(row['times'])
        row['time'] = times[len(times) // 2] if times else float('nan')
        row['spread'] = ((times[-1] - times[0]) / row['time']
                         if times and row['time'] > 0 else float('nan'))
        if times and row['spread'] > RELIABLE_SPREAD:
            unreliable.append(name)
    return dict(runs=found, unreliable=unreliable)


def run_isolated(cmd: List[str]) -> dict:
    """Run a worker command and parse the JSON object on its last line."""
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f'{" ".join(cmd)} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])
