"""Timing and peak-memory helpers shared by the benchmark tools.

Each measurement is meant to run in its own process (``run_isolated``), so
that allocator state left by one configuration cannot blur another's peak
(on a CPU the peak is the resident set size above the start of the
measured call).
"""
import json
import resource
import subprocess
import time
from typing import Callable, List

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


def run_isolated(cmd: List[str]) -> dict:
    """Run a worker command and parse the JSON object on its last line."""
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f'{" ".join(cmd)} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])
