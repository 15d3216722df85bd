"""Timing and peak-memory helpers shared by the benchmark tools.

Each measurement is meant to run in its own process (``run_isolated``): on
a CPU the peak resident set size only grows, so a fresh process is the only
way to give every configuration its own peak.
"""
import json
import resource
import subprocess
import time
from typing import Callable, List

import torch


def _peak_bytes(device: torch.device) -> int:
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device)
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
        base = _peak_bytes(device)
    result = fn()
    sync()
    peak = _peak_bytes(device) - base
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
