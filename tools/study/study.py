"""Seeds x methods x loss weights on the toy pair: a comparison to trust.

Every distillation method (PCKA, PKD, CWD, FitNet, CrossKD) and the
stacked ones (PCKA + CrossKD, PCKA + FitNet) get the same tuning:
three loss-weight factors chosen so that its distillation terms start at
about 0.3x, 1x and 3x the detection loss (measured with
``pcka_det.check``'s training step on the trained teacher, at the
config's weights), each trained on seed 0 and the best by validation AP
kept. While the best sits at an edge of the grid, the grid extends past
that edge by a factor of 3 (bracketing the optimum), up to terms of
``CAP_RATIOS`` (0.03x to 30x the detection loss at the first step); a pick
still at an edge there is marked in the table. Then the picked weight
runs on every seed, as does the student alone. While the paired interval
of the two best rows holds 0, both (and the student alone) run one more
seed, up to ``--max-seeds`` (5). The table: per method the AP over seeds
(mean, std, seeds, min-max), the paired difference to the student alone
(same seed) with its 95 % t interval, and the AP50/75/s/m/l means; then
the verdict: the best row, its lead over the second, each stacked row
against the best single method (paired intervals). Written to
``study.json`` with a figure of one point per seed.

Built on ``make demo``'s stages and cache (``tools/demo/demo.py``): each run is
a demo stage in the same work dir, reused while its fingerprint (config,
seed, weights, data, teacher) is unchanged, so an interrupted study resumes
where it stopped and shares the demo's teacher and seed-0 student.

Example:
    python tools/study/study.py                        # RetinaNet, 4 methods, seeds 0 1 2
    python tools/study/study.py --detector fcos --seeds 0 1 2 3
    python tools/study/study.py --methods pcka pkd --tiny   # a smoke test
"""
import argparse
import copy
import json
import math
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence

# the demo's stages and cache, which every study run is
sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                            'demo'))
import demo  # noqa: E402
from demo_report import read_result  # noqa: E402
from demo_stages import DETECTORS, METHODS, ROOT, stage_overrides  # noqa: E402,E501
from study_stats import AP_KEYS, summarise, verdict  # noqa: E402

# Distillation / detection loss ratios at the first step the grid aims at.
TARGET_RATIOS = (0.3, 1.0, 3.0)
# How far the grid may extend while its pick sits at an edge: terms of
# 0.03x to 30x the detection loss at the first step (a factor 100 either
# side of an equal pull), 3x per step.
CAP_RATIOS = (0.03, 30.0)
STEP = 3.0
# The rows that stack two methods (the verdict compares each with the best
# single method).
STACKED = ('pcka_crosskd', 'pcka_fitnet')
# Seeds added, one at a time, to the two best rows (and the student alone)
# while their paired interval holds 0, up to this many in all.
MAX_SEEDS = 5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--detector', default='retinanet',
                        choices=sorted(DETECTORS))
    parser.add_argument('--methods', nargs='+', default=None,
                        help='default: every method of the detector')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--max-seeds', type=int, default=MAX_SEEDS,
                        help='seeds the two best rows may reach while their '
                        'paired interval holds 0 (default %(default)s; the '
                        'number of --seeds: no seed added)')
    parser.add_argument('--work-dir', help='default: the demo\'s, so its '
                        'teacher and seed-0 student are reused')
    parser.add_argument('--data-root')
    parser.add_argument('--tiny', action='store_true',
                        help='a few images, one epoch per stage')
    args = parser.parse_args(argv)
    demo_argv = ['--detector', args.detector]
    for flag, value in (('--work-dir', args.work_dir),
                        ('--data-root', args.data_root)):
        if value:
            demo_argv += [flag, value]
    base = demo.parse_args(demo_argv + (['--tiny'] if args.tiny else []))
    base.seed = 0
    # a repeated method or seed is one row or run
    methods = list(dict.fromkeys(
        args.methods or DETECTORS[args.detector]['methods']))
    args.seeds = sorted(set(args.seeds))
    unknown = sorted(set(methods) -
                     set(DETECTORS[args.detector]['methods']))
    if unknown:
        parser.error(f'--detector {args.detector} has no toy config for '
                     f'{unknown}')
    if 0 not in args.seeds:
        parser.error('--seeds must include 0 (the tuning seed)')
    if args.max_seeds < len(args.seeds):
        parser.error(f'--max-seeds {args.max_seeds} is fewer than the '
                     f'{len(args.seeds)} --seeds given')
    return args, base, methods


def factors(ratio: float, targets: Sequence[float] = TARGET_RATIOS
            ) -> List[float]:
    """Weight factors that bring a distillation/detection loss ``ratio``
    (measured at the config's weights) to each of ``targets``, rounded to
    two significant digits."""
    if not ratio > 0:
        raise ValueError(f'distillation/detection ratio {ratio} is not '
                         'positive: the grid cannot be placed')
    out = []
    for target in targets:
        f = target / ratio
        digits = 1 - int(math.floor(math.log10(f)))
        out.append(round(f, digits))
    return out


def _two_digits(f: float) -> float:
    """``f`` rounded to two significant digits."""
    return round(f, 1 - int(math.floor(math.log10(f))))


def pick(tuning_ap: Dict[float, float]) -> float:
    """The factor with the best seed-0 AP; a tie goes to the factor closest
    to the config's weight (1)."""
    return max(tuning_ap, key=lambda f: (tuning_ap[f], -abs(math.log(f))))


def extension(tuning_ap: Dict[float, float], ratio: float,
              cap: Sequence[float] = CAP_RATIOS) -> Optional[float]:
    """The factor to train next, or None when the pick is bracketed.

    Args:
        tuning_ap (dict[float, float]): Seed-0 AP by factor, so far.
        ratio (float): Distillation / detection loss at the first step, at
            the config's weights (factor 1).
        cap (tuple[float, float]): The lowest and highest first-step ratio
            the grid may reach.

    Returns:
        float or None: ``STEP`` times the largest factor when the pick is
        the largest, the smallest divided by ``STEP`` when it is the
        smallest, unless that passes the cap; None otherwise.
    """
    best = pick(tuning_ap)
    if best == max(tuning_ap):
        f = _two_digits(best * STEP)
        if f * ratio <= cap[1] * (1 + 1e-6):
            return f
    if best == min(tuning_ap):
        f = _two_digits(best / STEP)
        if f * ratio >= cap[0] * (1 - 1e-6):
            return f
    return None


# The weights a factor scales in a loss: ``loss_weight`` (default 1) for
# the feature losses; a head level's CrossKD losses have one weight per term
# (and no loss_weight), each scaled.
TERM_WEIGHTS = {
    'CrossKDLoss': dict(cls_weight=1.0, giou_weight=1.0),
    'CrossKDGFLLoss': dict(cls_weight=1.0, ld_weight=3.0, giou_weight=2.0),
}


def weight_options(config: str, factor: float) -> Dict[str, float]:
    """``--cfg-options`` scaling every distillation loss of ``config`` by
    ``factor``: each loss's ``loss_weight`` (default 1), or each term's
    weight of a CrossKD loss (``TERM_WEIGHTS``). A stacked method (PCKA +
    CrossKD, PCKA + FitNet) has all its terms scaled by the same factor:
    their balance stays the config's, and one factor is tuned, as for a
    single method."""
    cfg = demo.load_config(osp.join(ROOT, config))
    options = {}
    for name, spec in cfg.model.distill_losses.items():
        loss = spec['loss']
        defaults = TERM_WEIGHTS.get(loss['type'], dict(loss_weight=1.0))
        for key, default in defaults.items():
            options[f'model.distill_losses.{name}.loss.{key}'] = round(
                float(loss.get(key, default)) * factor, 6)
    return options


def method_config(detector: str, method: str) -> str:
    return f'configs/toy/{method}_{detector}_r18_thin-r18_toy.py'


def first_step_ratio(base, config: str) -> float:
    """Sum over levels of distillation / detection loss at the first step,
    at the config's weights, with the demo's trained teacher (seed 0)."""
    from pcka_det.check import run_check
    args = copy.copy(base)
    args.distilled = True
    report = run_check(osp.join(ROOT, config),
                       stage_overrides(args, 'ratio'), num_images=0,
                       iters=0)
    if 'step' not in report:  # the step could not run: say why
        raise RuntimeError(f'pcka_det.check on {config}: '
                           f'{report["verdicts"]}')
    return next(row['ratio'] for row in report['step']
                if row['name'] == 'all distillation')


def stage(base, name: str, config: str, seed: int, options=None,
          distilled: bool = True) -> dict:
    """Run (or reuse) one stage; its result with the table metrics."""
    args = copy.copy(base)
    args.seed = seed
    args.stage_config = config
    args.stage_options = options or None
    args.distilled = distilled
    result = demo.run_stage(args, name, config,
                            demo.iters_per_stage(args, config))
    return result


def run_study(args, base, methods) -> dict:
    """Tune on seed 0, run every seed, summarise; see the module doc."""
    demo.ensure_data(base)
    detector = args.detector
    teacher_cfg = f'configs/toy/{detector}_r18_toy.py'
    student_cfg = f'configs/toy/{detector}_thin-r18_toy.py'
    train_time = {'teacher': demo.run_stage(
        base, 'teacher', teacher_cfg,
        demo.iters_per_stage(base, teacher_cfg))['train_time_s']}

    def metrics(name, *stage_args, **stage_kwargs):
        result = stage(base, name, *stage_args, **stage_kwargs)
        train_time[name] = result['train_time_s']
        return result['metrics']

    plan, results = {}, {'student': {}}

    def run_seed(method, seed):
        """One seed of the student alone or of a method at its pick."""
        if method == 'student':
            name = 'student' if seed == 0 else f'student_s{seed}'
            results['student'][seed] = metrics(name, student_cfg, seed,
                                               distilled=False)
        else:
            p = plan[method]
            results[method][seed] = metrics(
                f'{method}_x{p["picked"]:g}_s{seed}', p['config'], seed,
                p['options'])

    for seed in args.seeds:
        run_seed('student', seed)
    for method in methods:
        config = method_config(detector, method)
        ratio = first_step_ratio(base, config)
        tuning = {}
        for f in factors(ratio):
            tuning[f] = metrics(f'{method}_x{f:g}_s0', config, 0,
                                weight_options(config, f))
        # extend past the edge the pick sits at, until bracketed or capped
        aps = {f: r['AP'] for f, r in tuning.items()}
        f = extension(aps, ratio)
        while f is not None:
            tuning[f] = metrics(f'{method}_x{f:g}_s0', config, 0,
                                weight_options(config, f))
            aps[f] = tuning[f]['AP']
            f = extension(aps, ratio)
        grid = sorted(tuning)
        best = pick(aps)
        plan[method] = dict(config=config, first_step_ratio=ratio,
                            factors=grid,
                            tuning_ap={f'{f:g}': tuning[f]['AP']
                                       for f in grid},
                            picked=best,
                            at_cap=best in (grid[0], grid[-1]),
                            options=weight_options(config, best))
        results[method] = {0: tuning[best]}
        for seed in args.seeds:
            if seed != 0:
                run_seed(method, seed)
    # seeds for the two best rows (and the student alone) while their
    # paired interval holds 0, up to --max-seeds in all
    seeds, added = list(args.seeds), []
    while len(methods) > 1:
        v = verdict(results, STACKED)
        top = ('student', v['best'], v['runner_up'])
        missing = [(m, s) for m in top for s in seeds if s not in results[m]]
        if missing:  # a row that moved into the top two catches up
            for m, s in missing:
                run_seed(m, s)
            continue
        if v['separated'] or len(seeds) >= args.max_seeds:
            break
        seeds.append(max(seeds) + 1)
        added.append(seeds[-1])
    table = summarise(results)
    # the seed-0 run of a distilled method is the best of its grid (picked
    # on that seed's validation AP, an upward bias the student alone does
    # not get): the differences on the other seeds only, for comparison
    held_out = {m: {s: r for s, r in by_seed.items() if s != 0}
                for m, by_seed in results.items()}
    if held_out['student']:  # seeds besides 0 were run
        for method, row in summarise(held_out).items():
            table[method]['vs_baseline_held_out'] = row['vs_baseline']
    return dict(detector=detector, seeds=seeds, seeds_added=added,
                max_seeds=args.max_seeds, tiny=args.tiny,
                target_ratios=TARGET_RATIOS, plan=plan,
                verdict=verdict(results, STACKED) if len(methods) > 1
                else None,
                results={m: {str(s): r for s, r in by_seed.items()}
                         for m, by_seed in results.items()},
                table=table,
                train_time_s=dict(total=round(sum(train_time.values()), 1),
                                  stages=train_time))


def format_table(study: dict) -> str:
    """The printed table."""
    table = study['table']
    # the name column fits the longest label ("PCKA + CrossKD")
    width = max(10, *(len(METHODS.get(m, m)) + 1 for m in table))
    head = (f'{"method":<{width}}{"weight x":>9}{"AP mean":>9}{"std":>6}'
            f'{"seeds":>6}{"min-max":>13}{"vs student (95% CI)":>26}'
            f'{"seeds>0":>9}'
            + ''.join(f'{k:>7}' for k in AP_KEYS[1:]))
    lines = [head, '-' * len(head)]
    for method, row in table.items():
        ap = row['ap']
        picked = study['plan'].get(method, {}).get('picked')
        diff = row['vs_baseline']
        if diff is None:
            versus = '-'
        elif diff['low'] is None:
            versus = f'{diff["mean"]:+.2f}'
        else:
            versus = (f'{diff["mean"]:+.2f} [{diff["low"]:+.2f}, '
                      f'{diff["high"]:+.2f}]'
                      + (' *' if diff['beyond_spread'] else ''))
        held_out = row.get('vs_baseline_held_out')
        held_out = '-' if held_out is None else f'{held_out["mean"]:+.2f}'
        at_cap = study['plan'].get(method, {}).get('at_cap')
        weight = '-' if picked is None else f'{picked:g}' + (
            '^' if at_cap else '')
        lines.append(
            f'{METHODS.get(method, method):<{width}}'
            f'{weight:>9}'
            f'{ap["mean"]:>9.2f}{ap["std"]:>6.2f}{ap["n"]:>6d}'
            f'{ap["min"]:>6.1f}-{ap["max"]:<6.1f}{versus:>26}'
            f'{held_out:>9}'
            + ''.join(f'{row["means"].get(k, float("nan")):>7.1f}'
                      for k in AP_KEYS[1:]))
    lines.append('* the interval excludes 0: larger than the seed spread')
    lines.append(f'^ the pick is at an edge of its grid, extended to the cap '
                 f'({CAP_RATIOS[0]:g}x-{CAP_RATIOS[1]:g}x the detection '
                 'loss at the first step): not bracketed')
    lines.append('seeds>0: mean difference without the tuning seed (whose '
                 'distilled run is the best of the grid)')
    return '\n'.join(lines)


def _interval(diff: dict) -> str:
    """``+1.23 [+0.10, +2.36] over seeds 0, 1, 2``."""
    seeds = ', '.join(str(s) for s in diff['seeds'])
    if diff['low'] is None:
        return f'{diff["mean"]:+.2f} on seed {seeds} (no interval)'
    return (f'{diff["mean"]:+.2f} [{diff["low"]:+.2f}, {diff["high"]:+.2f}]'
            f' over seeds {seeds}')


def _seed_rule(n: int, cap: int) -> str:
    """What the seed rule did for two rows not separated after ``n`` seeds."""
    if n >= cap:
        return (f' ({n} seeds, the cap: more seeds need '
                '`--max-seeds`, `make study MAX_SEEDS=N`)')
    return f' ({n} seeds; the study adds seeds to the top two up to {cap})'


def verdict_text(study: dict) -> str:
    """The verdict in words: the best row, whether its lead over the second
    is beyond the seed spread, and whether a stacked row beats the best
    single method (each with its paired 95 % interval)."""
    v = study.get('verdict')
    if v is None:
        return 'Verdict: one distilled row, nothing to rank.'
    def name(method):
        return METHODS.get(method, method)

    lead = v['lead']
    separated = ('beyond the seed spread' if v['separated'] else
                 'within the seed spread: the two are not separated')
    lines = [
        f'Best student: {name(v["best"])}, {v["means"][v["best"]]:.2f} AP; '
        f'vs the student alone {_interval(v["vs_baseline"])}.',
        f'Its lead over {name(v["runner_up"])} '
        f'({v["means"][v["runner_up"]]:.2f} AP): {_interval(lead)}, '
        f'{separated}'
        + ('' if v['separated'] else _seed_rule(len(lead['seeds']),
                                                study.get('max_seeds',
                                                          MAX_SEEDS)))
        + '.']
    if v.get('lead_held_out'):
        lines.append('Without seed 0 (each distilled row\'s best grid run): '
                     f'{_interval(v["lead_held_out"])}.')
    stacked = v['stacked_vs_single']
    single = name(v['best_single']) if v['best_single'] else None
    for m, diff in stacked.items():
        lines.append(f'{name(m)} vs {single} alone (the best single '
                     f'method): {_interval(diff)}.')
    if stacked:
        winners = [m for m, d in stacked.items()
                   if d['beyond_spread'] and d['mean'] > 0]
        lines.append(
            'No stacked row beats the best single method beyond the seed '
            'spread.' if not winners else
            f'{" and ".join(name(m) for m in winners)} beat'
            f'{"s" if len(winners) == 1 else ""} {single} alone beyond the '
            'seed spread.')
    return '\n'.join(lines)


def plot(study: dict, path: str) -> None:
    """One point per seed and method, the mean as a bar."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    methods = list(study['results'])
    fig, ax = plt.subplots(figsize=(1.6 * len(methods) + 2, 3.5))
    for i, method in enumerate(methods):
        values = [r['AP'] for r in study['results'][method].values()]
        ax.bar(i, sum(values) / len(values), color='0.85')
        ax.scatter([i] * len(values), values, color='C0', zorder=3)
    ax.set_xticks(range(len(methods)))
    counts = [len(study['results'][m]) for m in methods]
    ax.set_xticklabels([f'{METHODS.get(m, m)}\n{n} seed{"s" * (n > 1)}'
                        for m, n in zip(methods, counts)])
    ax.set_ylabel('AP (one point per seed)')
    ax.set_title(f'{DETECTORS[study["detector"]]["name"]} toy pair: '
                 'mean AP (bar) and each seed (dot)')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    args, base, methods = parse_args(argv)
    start = time.monotonic()
    study = run_study(args, base, methods)
    study['wall_s'] = round(time.monotonic() - start, 1)
    text = format_table(study) + '\n\n' + verdict_text(study)
    print(text)
    times = study['train_time_s']
    print(f'{len(times["stages"])} stages, {times["total"] / 3600:.2f} h '
          f'of training in all (this machine); this run: '
          f'{study["wall_s"] / 60:.1f} min wall, finished stages reused')
    study['printed'] = text
    out = osp.join(base.work_dir, 'study.json')
    with open(out, 'w') as f:
        json.dump(study, f, indent=1)
    plot(study, osp.join(base.work_dir, 'study.png'))
    print(f'Results: {out}, figure: {osp.join(base.work_dir, "study.png")}')
    return study


if __name__ == '__main__':
    main()
