"""Statistics of a seeds x methods study: per method the mean AP over
seeds, its spread, and the paired difference to the student trained alone
on the same seeds, with a 95 % t interval; and the verdict: the best row,
its lead over the second and each stacked row against the best single
method, each a paired interval.

Pure functions on plain dicts (``method -> seed -> metrics``), so that the
numbers a study prints can be checked against values computed by hand.
"""
import math
from typing import Dict, List, Mapping, Sequence

from scipy import stats

# What the table reports, as tools/demo/demo.py's results name them.
AP_KEYS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')


def t_critical(df: int, level: float = 0.95) -> float:
    """Two-sided Student t quantile for ``df`` degrees of freedom."""
    return float(stats.t.ppf(0.5 + level / 2, df))


def describe(values: List[float]) -> dict:
    """``n``, ``mean``, sample ``std`` (ddof 1; 0 for one value), ``min``,
    ``max`` of ``values``."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean)**2 for v in values) / (n - 1)) \
        if n > 1 else 0.0
    return dict(n=n, mean=mean, std=std, min=min(values), max=max(values))


def paired_difference(values: Mapping[int, float],
                      baseline: Mapping[int, float],
                      level: float = 0.95) -> dict:
    """Mean of ``values[s] - baseline[s]`` over the seeds both have, with
    its t interval.

    Args:
        values (Mapping[int, float]): Seed -> metric of a method.
        baseline (Mapping[int, float]): Seed -> metric of the baseline.
        level (float): Confidence level of the interval.

    Returns:
        dict: ``seeds``, ``mean``, ``std`` (of the differences), ``low``,
        ``high`` (the interval; None with fewer than two seeds) and
        ``beyond_spread`` (the interval excludes 0 and has a width: equal
        differences on every seed measure no spread).
    """
    seeds = sorted(set(values) & set(baseline))
    if not seeds:
        raise ValueError('no seed in common with the baseline')
    diffs = [values[s] - baseline[s] for s in seeds]
    d = describe(diffs)
    out = dict(seeds=seeds, mean=d['mean'], std=d['std'], low=None,
               high=None, beyond_spread=False)
    if len(diffs) > 1:
        half = t_critical(len(diffs) - 1, level) * d['std'] / math.sqrt(
            len(diffs))
        out.update(low=d['mean'] - half, high=d['mean'] + half)
        # identical differences (AP comes in 0.1 steps) leave no measured
        # spread: a zero-width interval separates nothing
        out['beyond_spread'] = d['std'] > 1e-9 and (
            out['low'] > 0 or out['high'] < 0)
    return out


def summarise(results: Mapping[str, Mapping[int, Mapping[str, float]]],
              baseline: str = 'student', key: str = 'AP') -> Dict[str, dict]:
    """The study's table: per method, ``key`` over seeds (:func:`describe`),
    the means of :data:`AP_KEYS`, and the paired difference to
    ``baseline`` (None for the baseline itself).

    Args:
        results (Mapping): ``method -> seed -> {metric: value}``.
        baseline (str): The method every other is compared with.
        key (str): The metric of the spread and the differences.

    Returns:
        dict: ``method -> dict(ap=describe(...), means={...},
        vs_baseline=paired_difference(...) or None)``.
    """
    if baseline not in results:
        raise ValueError(f'baseline "{baseline}" has no results')
    base = {s: m[key] for s, m in results[baseline].items()}
    table = {}
    for method, by_seed in results.items():
        values = {s: m[key] for s, m in by_seed.items()}
        table[method] = dict(
            ap=describe([values[s] for s in sorted(values)]),
            # a size without ground truth is None (n/a): no mean
            means={k: sum(m[k] for m in by_seed.values()) / len(by_seed)
                   for k in AP_KEYS
                   if all(m.get(k) is not None for m in by_seed.values())},
            vs_baseline=None if method == baseline else
            paired_difference(values, base))
    return table


def verdict(results: Mapping[str, Mapping[int, Mapping[str, float]]],
            stacked: Sequence[str] = (), baseline: str = 'student',
            key: str = 'AP') -> dict:
    """Which row gives the best student, and whether it is separated.

    Rows are ranked by their mean ``key`` over their own seeds; the lead of
    the best over the second is the paired difference over the seeds both
    ran (:func:`paired_difference`), and so is each stacked row against the
    best single method.

    Args:
        results (Mapping): ``method -> seed -> {metric: value}``, the
            baseline included.
        stacked (Sequence[str]): The rows that stack two methods; every
            other row but the baseline is a single method.
        baseline (str): The student trained alone.
        key (str): The metric ranked.

    Returns:
        dict: ``ranking`` (best first), ``means``, ``best``, ``runner_up``
        (None with a single distilled row), ``lead`` (the paired difference
        best - runner-up, or None), ``separated`` (its interval excludes
        0), ``lead_held_out`` (the lead on the seeds other than 0, the
        tuning seed, or None), ``vs_baseline`` (best - baseline), ``best_single`` (the best
        single method, or None) and ``stacked_vs_single`` (stacked row ->
        its paired difference to ``best_single``).
    """
    def values(method):
        return {s: m[key] for s, m in results[method].items()}

    means = {m: describe(list(values(m).values()))['mean']
             for m in results if m != baseline}
    if not means:
        raise ValueError('no distilled row to rank')
    ranking = sorted(means, key=lambda m: -means[m])  # stable on ties
    best = ranking[0]
    runner_up = ranking[1] if len(ranking) > 1 else None
    lead = None if runner_up is None else paired_difference(
        values(best), values(runner_up))
    # seed 0 of a distilled row is the best run of its grid (an upward bias,
    # larger for a longer grid): the lead without it, for comparison
    held_out = None
    if runner_up is not None and len(lead['seeds']) > 1:
        held_out = paired_difference(
            {s: v for s, v in values(best).items() if s != 0},
            values(runner_up))
    singles = [m for m in ranking if m not in stacked]
    best_single = singles[0] if singles else None
    return dict(
        ranking=ranking, means=means, best=best, runner_up=runner_up,
        lead=lead, separated=bool(lead and lead['beyond_spread']),
        lead_held_out=held_out,
        vs_baseline=paired_difference(values(best), values(baseline)),
        best_single=best_single,
        stacked_vs_single={} if best_single is None else {
            m: paired_difference(values(m), values(best_single))
            for m in ranking if m in stacked})
