"""tools/study/study.py: its statistics against values computed by hand, its
weight grid, and its resume by fingerprint."""
import json
import math
import os.path as osp
import sys

import pytest
from conftest import ROOT

from study_stats import (AP_KEYS, describe, paired_difference,  # noqa: E402
                         summarise, t_critical, verdict)

# AP of three seeds: the student alone, and a method that gains on each
RESULTS = {
    'student': {0: dict(AP=8.0, AP50=18.0), 1: dict(AP=8.6, AP50=19.0),
                2: dict(AP=8.3, AP50=18.5)},
    'pcka': {0: dict(AP=9.0, AP50=20.0), 1: dict(AP=9.2, AP50=20.4),
             2: dict(AP=9.4, AP50=20.2)},
    # one seed lower than the student: the interval straddles 0
    'pkd': {0: dict(AP=8.5, AP50=18.0), 1: dict(AP=8.2, AP50=19.0),
            2: dict(AP=8.9, AP50=18.5)},
}


def test_t_critical_from_the_table():
    # Student t, two-sided 95 %: 12.706 (1 df), 4.303 (2), 2.776 (4)
    assert t_critical(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_critical(2) == pytest.approx(4.3027, abs=1e-4)
    assert t_critical(4) == pytest.approx(2.7764, abs=1e-4)


def test_describe_by_hand():
    d = describe([8.0, 8.6, 8.3])
    # mean 8.3; deviations -0.3, 0.3, 0 -> sample variance 0.18 / 2
    assert d['mean'] == pytest.approx(8.3)
    assert d['std'] == pytest.approx(0.3)
    assert (d['min'], d['max'], d['n']) == (8.0, 8.6, 3)
    assert describe([5.0])['std'] == 0.0


def test_paired_difference_by_hand():
    pcka = {s: m['AP'] for s, m in RESULTS['pcka'].items()}
    student = {s: m['AP'] for s, m in RESULTS['student'].items()}
    d = paired_difference(pcka, student)
    # differences 1.0, 0.6, 1.1: mean 0.9, deviations 0.1, -0.3, 0.2,
    # sample std sqrt(0.14 / 2); half-width 4.3027 * std / sqrt(3)
    std = math.sqrt(0.07)
    half = 4.302653 * std / math.sqrt(3)
    assert d['mean'] == pytest.approx(0.9)
    assert d['std'] == pytest.approx(std)
    assert d['low'] == pytest.approx(0.9 - half, abs=1e-5)
    assert d['high'] == pytest.approx(0.9 + half, abs=1e-5)
    assert d['beyond_spread'] and d['seeds'] == [0, 1, 2]
    # only the seeds both have are paired
    assert paired_difference({0: 9.0, 5: 1.0}, student)['seeds'] == [0]
    with pytest.raises(ValueError, match='no seed in common'):
        paired_difference({7: 1.0}, student)


def test_equal_differences_on_every_seed_separate_nothing():
    # AP comes in 0.1 steps: +0.3 on each seed is a zero-width interval
    d = paired_difference({0: 9.3, 1: 9.1, 2: 9.6}, {0: 9.0, 1: 8.8, 2: 9.3})
    assert d['mean'] == pytest.approx(0.3) and d['std'] == pytest.approx(
        0, abs=1e-12)
    assert not d['beyond_spread']


def test_summarise_table():
    table = summarise(RESULTS)
    assert table['student']['vs_baseline'] is None
    assert table['pcka']['ap']['mean'] == pytest.approx(9.2)
    assert table['pcka']['means'] == pytest.approx(dict(AP=9.2, AP50=20.2))
    # pkd - student: 0.5, -0.4, 0.6: mean 0.2333, the interval holds 0
    pkd = table['pkd']['vs_baseline']
    assert pkd['mean'] == pytest.approx(0.7 / 3)
    assert pkd['low'] < 0 < pkd['high'] and not pkd['beyond_spread']
    with pytest.raises(ValueError, match='baseline "teacher"'):
        summarise(RESULTS, baseline='teacher')


def test_verdict_by_hand():
    """The best row by mean, its lead over the second and each stacked row
    against the best single method, paired over common seeds."""
    results = dict(RESULTS, pcka_fitnet={
        0: dict(AP=9.6), 1: dict(AP=9.3), 2: dict(AP=9.3)})
    v = verdict(results, stacked=['pcka_fitnet'])
    # means: PCKA + FitNet 9.4, PCKA 9.2, PKD 8.533
    assert v['ranking'] == ['pcka_fitnet', 'pcka', 'pkd']
    assert (v['best'], v['runner_up'], v['best_single']) == (
        'pcka_fitnet', 'pcka', 'pcka')
    # lead: 0.6, 0.1, -0.1: mean 0.2, the interval holds 0
    assert v['lead']['mean'] == pytest.approx(0.2)
    assert v['lead']['low'] < 0 and not v['separated']
    assert v['stacked_vs_single']['pcka_fitnet'] == v['lead']
    # the best against the student alone: 1.6, 0.7, 1.0
    assert v['vs_baseline']['mean'] == pytest.approx(1.1)
    # a clear lead: PCKA over PKD, 0.4, 0.5, 0.5: mean 1.4 / 3, sample
    # variance (0.01 / 9 * 6) / 2
    clear = dict(RESULTS, pkd={0: dict(AP=8.6), 1: dict(AP=8.7),
                               2: dict(AP=8.9)})
    v = verdict(clear)
    assert (v['best'], v['runner_up']) == ('pcka', 'pkd')
    half = 4.302653 * math.sqrt(0.01 / 3) / math.sqrt(3)
    assert v['lead']['low'] == pytest.approx(1.4 / 3 - half, abs=1e-5)
    assert v['separated'] and v['stacked_vs_single'] == {}


# ----------------------------------------------------------------- the study

import demo  # noqa: E402  (tools/, on the path above)
import study  # noqa: E402


def test_factors_place_the_grid_by_hand():
    # terms at 1.5x the detection loss: 0.3 / 1.5, 1 / 1.5, 3 / 1.5
    assert study.factors(1.5) == [0.2, 0.67, 2.0]
    assert study.factors(0.04) == [7.5, 25.0, 75.0]
    with pytest.raises(ValueError, match='not positive'):
        study.factors(0.0)


def test_grid_extends_past_the_edge_of_its_pick_up_to_the_cap():
    # ratio 1: factors are first-step ratios; cap 0.03x-30x
    assert study.extension({0.3: 8.0, 1.0: 8.5, 3.0: 9.0}, 1.0) == 9.0
    assert study.extension({0.3: 9.0, 1.0: 8.5, 3.0: 8.0}, 1.0) == 0.1
    assert study.extension({0.3: 8.0, 1.0: 9.0, 3.0: 8.5}, 1.0) is None
    # 9 -> 27 (27x the detection loss, under 30x); 81x is past the cap
    assert study.extension({3.0: 8.0, 9.0: 9.0}, 1.0) == 27.0
    assert study.extension({9.0: 8.0, 27.0: 9.0}, 1.0) is None
    # 0.1 -> 0.033 (0.033x), then 0.011x is below the 0.03x cap
    assert study.extension({0.1: 9.0, 0.3: 8.0}, 1.0) == 0.033
    assert study.extension({0.033: 9.0, 0.1: 8.0}, 1.0) is None
    # the cap is on the ratio, not the factor: at ratio 10, 3 -> 9 would
    # be 90x the detection loss
    assert study.extension({1.0: 8.0, 3.0: 9.0}, 10.0) is None
    # a tie between edges goes to the factor closest to 1 (not an edge)
    assert study.pick({0.3: 9.0, 1.0: 9.0, 3.0: 9.0}) == 1.0


def test_weight_options_scale_every_loss():
    pkd = study.weight_options(study.method_config('retinanet', 'pkd'), 0.5)
    assert pkd == {f'model.distill_losses.pkd_p{i}.loss.loss_weight': 3.0
                   for i in range(3, 7)}  # the config's 6.0 x 0.5
    pcka = study.weight_options(study.method_config('retinanet', 'pcka'), 2)
    assert set(pcka.values()) == {2.0}  # loss_weight defaults to 1


def test_stacked_methods_scale_every_term_by_one_factor(tmp_path):
    """PCKA + CrossKD / PCKA + FitNet: every term of both methods times the
    same factor (their balance stays the config's); CrossKD's terms through
    their own weights (it has no loss_weight), GFL's at their defaults."""
    crosskd = study.weight_options(
        study.method_config('retinanet', 'pcka_crosskd'), 3)
    assert crosskd == {
        **{f'model.distill_losses.pcka_p{i}.loss.loss_weight': 3.0
           for i in range(3, 7)},
        'model.distill_losses.crosskd.loss.cls_weight': 3.0,
        'model.distill_losses.crosskd.loss.giou_weight': 3.0}
    fitnet = study.weight_options(
        study.method_config('retinanet', 'pcka_fitnet'), 0.5)
    assert fitnet == {
        f'model.distill_losses.{m}_p{i}.loss.loss_weight': 0.5
        for m in ('pcka', 'fitnet') for i in range(3, 7)}
    gfl = tmp_path / 'gfl.py'  # a GFL head level at the recipe's defaults
    gfl.write_text(
        "model = dict(distill_losses=dict(crosskd=dict(head_conv=3, "
        "loss=dict(type='CrossKDGFLLoss', ld_weight=6.0))))\n")
    assert study.weight_options(str(gfl), 0.5) == {
        'model.distill_losses.crosskd.loss.cls_weight': 0.5,
        'model.distill_losses.crosskd.loss.ld_weight': 3.0,
        'model.distill_losses.crosskd.loss.giou_weight': 1.0}


def test_a_repeated_method_or_seed_is_one_row_or_run():
    args, _, methods = study.parse_args(
        ['--methods', 'pcka', 'pkd', 'pcka', '--seeds', '0', '2', '2'])
    assert methods == ['pcka', 'pkd'] and args.seeds == [0, 2]


def test_the_study_runs_the_stacked_rows():
    """``make study`` on the RetinaNet pair: the four single methods,
    CrossKD, and the two stacked ones, each with a toy config."""
    args, _, methods = study.parse_args([])
    assert methods == ['pcka', 'pkd', 'cwd', 'fitnet', 'crosskd',
                       'pcka_crosskd', 'pcka_fitnet']
    for method in methods:
        assert osp.isfile(osp.join(ROOT, study.method_config(
            'retinanet', method))), method


def fake_result(out_dir, ap: float, train_time_s: float = 60.0) -> None:
    metrics = {f'coco/{m}': ap for _, m in (
        ('AP', 'bbox_mAP'), ('AP50', 'bbox_mAP_50'), ('AP75', 'bbox_mAP_75'),
        ('APs', 'bbox_mAP_s'), ('APm', 'bbox_mAP_m'),
        ('APl', 'bbox_mAP_l'))}
    with open(osp.join(out_dir, 'result.json'), 'w') as f:
        json.dump(dict(coco_metrics=metrics, num_detections=5,
                       train_time_s=train_time_s), f)


def test_study_stages_resume_by_fingerprint(tmp_path, monkeypatch):
    """A finished stage is reused while its seed and weights are the same;
    another weight or seed runs again (here a fake launch writes the
    result instead of training)."""
    work, data = tmp_path / 'work', tmp_path / 'data'
    _, base, _ = study.parse_args(['--tiny', '--work-dir', str(work),
                                   '--data-root', str(data)])
    demo.ensure_data(base)
    (work / 'teacher').mkdir(parents=True)
    (work / 'teacher' / 'model.pth').write_bytes(b'teacher weights')
    launched = []

    def launch(args, name, out_dir, total_iters):
        launched.append((name, args.seed, args.stage_options))
        fake_result(out_dir, 0.1 * len(launched))

    monkeypatch.setattr(demo, 'launch_stage', launch)
    config = study.method_config('retinanet', 'pkd')
    half = study.weight_options(config, 0.5)
    first = study.stage(base, 'pkd_x0.5_s1', config, 1, half)
    again = study.stage(base, 'pkd_x0.5_s1', config, 1, half)
    assert launched == [('pkd_x0.5_s1', 1, half)]
    assert first['metrics'] == again['metrics']
    fingerprint = json.loads(
        (work / 'pkd_x0.5_s1' / 'fingerprint.json').read_text())
    assert fingerprint['cfg_options']['randomness.seed'] == 1
    assert fingerprint['cfg_options'][
        'model.distill_losses.pkd_p3.loss.loss_weight'] == 3.0
    assert fingerprint['teacher_sha256']
    # another weight under the same name, another seed: run again
    study.stage(base, 'pkd_x0.5_s1', config, 1,
                study.weight_options(config, 2.0))
    study.stage(base, 'pkd_x0.5_s1', config, 2,
                study.weight_options(config, 2.0))
    assert [s for _, s, _ in launched] == [1, 1, 2]
    # a new teacher reruns a distilled stage, not the student's
    study.stage(base, 'student_s1', 'configs/toy/retinanet_thin-r18_toy.py',
                1, distilled=False)
    (work / 'teacher' / 'model.pth').write_bytes(b'retrained teacher')
    study.stage(base, 'student_s1', 'configs/toy/retinanet_thin-r18_toy.py',
                1, distilled=False)
    study.stage(base, 'pkd_x0.5_s1', config, 2,
                study.weight_options(config, 2.0))
    assert [n for n, _, _ in launched][-2:] == ['student_s1', 'pkd_x0.5_s1']
    assert len(launched) == 5


# COCO AP (fraction) of each fake stage of the whole-study test below
FAKE_AP = {
    'teacher': 0.13,
    'student': 0.080, 'student_s1': 0.090, 'student_s2': 0.085,
    # PCKA's grid at ratio 1.0: factors 0.3, 1, 3; the best is 3
    'pcka_x0.3_s0': 0.081, 'pcka_x1_s0': 0.070, 'pcka_x3_s0': 0.095,
    # 3 is the grid's top edge: the grid extends to 9, which is worse, so
    # 3 is bracketed and kept
    'pcka_x9_s0': 0.085,
    'pcka_x3_s1': 0.100, 'pcka_x3_s2': 0.092,
    # PKD's grid at ratio 2.0: factors 0.15, 0.5, 1.5; 0.15 and 0.5 tie,
    # 0.5 is kept (closer to the config's weight)
    'pkd_x0.15_s0': 0.090, 'pkd_x0.5_s0': 0.090, 'pkd_x1.5_s0': 0.060,
    'pkd_x0.5_s1': 0.085, 'pkd_x0.5_s2': 0.089,
}


def test_whole_study_tunes_on_seed_0_then_runs_every_seed(tmp_path,
                                                          monkeypatch):
    """run_study with fake stages: the grid from the first-step ratio, the
    pick by seed-0 AP, every seed at the picked weight, the table against
    hand-computed values, the training time summed; a rerun reuses all."""
    work, data = tmp_path / 'work', tmp_path / 'data'
    # --max-seeds 3: no seed added (that rule: the test after this one)
    args, base, methods = study.parse_args(
        ['--tiny', '--methods', 'pcka', 'pkd', '--work-dir', str(work),
         '--data-root', str(data), '--max-seeds', '3'])
    (work / 'teacher').mkdir(parents=True)
    (work / 'teacher' / 'model.pth').write_bytes(b'teacher weights')
    launched = []

    def launch(args, name, out_dir, total_iters):
        launched.append((name, args.seed, args.stage_options))
        fake_result(out_dir, FAKE_AP[name],
                    train_time_s=100.0 if name == 'teacher' else 60.0)

    monkeypatch.setattr(demo, 'launch_stage', launch)
    ratios = {'pcka': 1.0, 'pkd': 2.0}
    monkeypatch.setattr(study, 'first_step_ratio',
                        lambda base, config: ratios[config.split('/')[-1]
                                                    .split('_')[0]])
    out = study.run_study(args, base, methods)
    assert [n for n, _, _ in launched] == list(FAKE_AP)
    assert out['plan']['pcka']['factors'] == [0.3, 1.0, 3.0, 9.0]
    assert out['plan']['pcka']['picked'] == 3.0
    assert out['plan']['pcka']['at_cap'] is False
    assert out['plan']['pkd']['factors'] == [0.15, 0.5, 1.5]
    assert out['plan']['pkd']['picked'] == 0.5
    # the seeds run at the picked weight: PCKA's default 1 x 3 and PKD's
    # config weight 6 x 0.5 both make 3
    for name, seed, options in launched:
        if name.startswith(('pcka', 'pkd')) and seed > 0:
            method = name.split('_')[0]
            assert options[f'model.distill_losses.{method}_p3.loss.'
                           'loss_weight'] == 3.0, name
    table = out['table']
    # PCKA 9.5, 10.0, 9.2 against the student's 8.0, 9.0, 8.5
    assert table['pcka']['ap']['mean'] == pytest.approx(28.7 / 3)
    assert table['pcka']['vs_baseline']['mean'] == pytest.approx(3.2 / 3)
    # PKD 9.0, 8.5, 8.9: differences 1.0, -0.5, 0.4, the interval holds 0
    pkd = table['pkd']['vs_baseline']
    assert pkd['mean'] == pytest.approx(0.3)
    assert pkd['low'] < 0 < pkd['high']
    # without the tuning seed: PCKA 10.0 - 9.0, 9.2 - 8.5
    assert table['pcka']['vs_baseline_held_out']['mean'] == \
        pytest.approx(0.85)
    assert table['pcka']['vs_baseline_held_out']['seeds'] == [1, 2]
    printed = study.format_table(out).splitlines()
    assert printed[3].split()[:3] == ['PCKA', '3', '9.57']
    assert '+1.07 [' in printed[3] and '+0.85' in printed[3]
    # 1 teacher and 14 stages of 60 s
    assert out['train_time_s']['total'] == pytest.approx(100 + 14 * 60)
    assert len(out['train_time_s']['stages']) == 15
    assert '^' not in printed[3]
    capped = dict(out, plan=dict(out['plan'], pcka=dict(
        out['plan']['pcka'], at_cap=True)))
    assert study.format_table(capped).splitlines()[3].split()[:2] == [
        'PCKA', '3^']
    # a rerun trains nothing and gives the same table
    again = study.run_study(args, base, methods)
    assert len(launched) == len(FAKE_AP)
    assert again['table'] == table


def test_table_columns_fit_the_stacked_names():
    """"PCKA + CrossKD" is longer than the single names: every row's
    columns still sit under their headers."""
    ap = dict(n=3, mean=9.5, std=0.5, min=9.0, max=10.0)
    means = {k: 1.0 for k in AP_KEYS[1:]}
    diff = dict(mean=1.0, low=0.5, high=1.5, beyond_spread=True)
    study_out = dict(
        table={'student': dict(ap=ap, vs_baseline=None, means=means),
               'pcka': dict(ap=ap, vs_baseline=diff, means=means),
               'pcka_crosskd': dict(ap=ap, vs_baseline=diff, means=means)},
        plan={'pcka': dict(picked=3.0, at_cap=False),
              'pcka_crosskd': dict(picked=1.3, at_cap=False)})
    head, _, *rows = study.format_table(study_out).splitlines()[:5]
    end = head.index('AP mean') + len('AP mean')
    for row in rows:
        assert row[end - 4:end] == '9.50', row
    assert rows[2].startswith('PCKA + CrossKD ')


# Seeds 0-2 of three methods whose picks are bracketed (PCKA x1 and FitNet
# x1 at ratio 1.0, PKD x0.5 at ratio 2.0); PCKA and PKD lead, 9.37 and
# 9.30 AP, FitNet 8.50.
SEEDS_0_2 = {
    'teacher': 0.13,
    'student': 0.080, 'student_s1': 0.082, 'student_s2': 0.081,
    'pcka_x0.3_s0': 0.080, 'pcka_x1_s0': 0.095, 'pcka_x3_s0': 0.085,
    'pcka_x1_s1': 0.096, 'pcka_x1_s2': 0.090,
    'pkd_x0.15_s0': 0.080, 'pkd_x0.5_s0': 0.094, 'pkd_x1.5_s0': 0.070,
    'pkd_x0.5_s1': 0.092, 'pkd_x0.5_s2': 0.093,
    'fitnet_x0.3_s0': 0.070, 'fitnet_x1_s0': 0.085, 'fitnet_x3_s0': 0.075,
    'fitnet_x1_s1': 0.086, 'fitnet_x1_s2': 0.084,
}


def _run_fake_study(tmp_path, monkeypatch, fake_ap):
    work, data = tmp_path / 'work', tmp_path / 'data'
    args, base, methods = study.parse_args(
        ['--tiny', '--methods', 'pcka', 'pkd', 'fitnet', '--work-dir',
         str(work), '--data-root', str(data)])
    (work / 'teacher').mkdir(parents=True)
    (work / 'teacher' / 'model.pth').write_bytes(b'teacher weights')
    launched = []

    def launch(args, name, out_dir, total_iters):
        launched.append(name)
        fake_result(out_dir, fake_ap[name])

    monkeypatch.setattr(demo, 'launch_stage', launch)
    ratios = {'pcka': 1.0, 'pkd': 2.0, 'fitnet': 1.0}
    monkeypatch.setattr(study, 'first_step_ratio',
                        lambda base, config: ratios[config.split('/')[-1]
                                                    .split('_')[0]])
    return study.run_study(args, base, methods), launched


def test_seeds_added_to_the_top_two_up_to_the_cap(tmp_path, monkeypatch):
    """PCKA - PKD per seed: 0.1, 0.4, -0.3, then 0.6 (seed 3) and 0.8
    (seed 4): the interval holds 0 at every count, so seeds 3 and 4 run
    for PCKA, PKD and the student alone (not FitNet), and the study stops
    at 5 seeds."""
    fake = {**SEEDS_0_2, 'student_s3': 0.079, 'pcka_x1_s3': 0.097,
            'pkd_x0.5_s3': 0.091, 'student_s4': 0.083, 'pcka_x1_s4': 0.098,
            'pkd_x0.5_s4': 0.090}
    out, launched = _run_fake_study(tmp_path, monkeypatch, fake)
    assert launched == list(fake)
    assert out['seeds'] == [0, 1, 2, 3, 4] and out['seeds_added'] == [3, 4]
    v = out['verdict']
    assert (v['best'], v['runner_up']) == ('pcka', 'pkd')
    # differences 0.1, 0.4, -0.3, 0.6, 0.8: mean 0.32, sample variance
    # 0.748 / 4; t(4) = 2.7764
    half = 2.776445 * math.sqrt(0.748 / 4) / math.sqrt(5)
    assert v['lead']['mean'] == pytest.approx(0.32)
    assert v['lead']['low'] == pytest.approx(0.32 - half, abs=1e-5)
    assert not v['separated'] and v['lead']['seeds'] == [0, 1, 2, 3, 4]
    assert out['table']['fitnet']['ap']['n'] == 3
    assert out['table']['pcka']['ap']['n'] == 5
    text = study.verdict_text(out)
    assert text.splitlines()[1] == (
        'Its lead over PKD (9.20 AP): +0.32 [%+.2f, %+.2f] over seeds 0, 1, '
        '2, 3, 4, within the seed spread: the two are not separated (5 '
        'seeds, the cap: more seeds need `--max-seeds`, `make study '
        'MAX_SEEDS=N`).'
        % (0.32 - half, 0.32 + half))
    # below the cap the line says the rule goes on
    assert study.verdict_text({**out, 'max_seeds': 7}).splitlines()[1] \
        .endswith('(5 seeds; the study adds seeds to the top two up to 7).')


def test_seeds_added_until_the_top_two_separate(tmp_path, monkeypatch):
    """PCKA - PKD per seed: 0.5, 0.7, 0.2 (the interval holds 0), then 0.5
    on seed 3: separated at 4 seeds, no fifth seed runs."""
    fake = {**SEEDS_0_2, 'pkd_x0.5_s0': 0.090, 'pkd_x0.5_s1': 0.089,
            'pkd_x0.5_s2': 0.088, 'student_s3': 0.079, 'pcka_x1_s3': 0.097,
            'pkd_x0.5_s3': 0.092}
    out, launched = _run_fake_study(tmp_path, monkeypatch, fake)
    assert launched == list(fake)  # no student_s4
    assert out['seeds_added'] == [3]
    v = out['verdict']
    # differences 0.5, 0.7, 0.2, 0.5: mean 0.475, sample variance 0.1275/3
    half = 3.182446 * math.sqrt(0.1275 / 3) / 2
    assert v['lead']['low'] == pytest.approx(0.475 - half, abs=1e-5)
    assert v['separated']
    assert 'beyond the seed spread.' in study.verdict_text(out)


def test_a_row_that_enters_the_top_two_catches_up(tmp_path, monkeypatch):
    """FitNet (9.27 AP on seeds 0-2) is third behind PCKA and PKD; PKD's
    seed 3 (8.5) drops its mean to 9.10, so FitNet becomes second and runs
    seed 3 before the comparison, then seed 4 with PCKA and the student
    (PCKA - FitNet: 0.2, 0.4, -0.3, 0.3, 0.5, still not separated)."""
    fake = {**SEEDS_0_2, 'fitnet_x1_s0': 0.093, 'fitnet_x1_s1': 0.092,
            'fitnet_x1_s2': 0.093, 'student_s3': 0.079, 'pcka_x1_s3': 0.097,
            'pkd_x0.5_s3': 0.085, 'fitnet_x1_s3': 0.094,
            'student_s4': 0.083, 'pcka_x1_s4': 0.098,
            'fitnet_x1_s4': 0.093}
    out, launched = _run_fake_study(tmp_path, monkeypatch, fake)
    assert launched == list(fake)
    v = out['verdict']
    assert (v['best'], v['runner_up']) == ('pcka', 'fitnet')
    assert v['lead']['seeds'] == [0, 1, 2, 3, 4]
    assert v['lead']['mean'] == pytest.approx(0.22)
    assert [out['table'][m]['ap']['n'] for m in ('pcka', 'pkd', 'fitnet')] \
        == [5, 4, 5]


def test_verdict_text_says_whether_a_stacked_row_beats_the_best_single():
    # PCKA + FitNet - PCKA (the best single method): 0.6, 0.6, 0.5
    wins = dict(RESULTS, pcka_fitnet={0: dict(AP=9.6), 1: dict(AP=9.8),
                                      2: dict(AP=9.9)})
    lines = study.verdict_text(dict(verdict=verdict(
        wins, stacked=['pcka_fitnet']), max_seeds=5)).splitlines()
    assert lines[0].startswith('Best student: PCKA + FitNet, 9.77 AP; ')
    # without seed 0: 0.6 - 0.6 and 0.5 - 0.4 (the best row's grid pick
    # on seed 0 left out)
    assert lines[2].startswith('Without seed 0 (each distilled row\'s best '
                               'grid run): +0.55 [')
    assert lines[2].endswith('] over seeds 1, 2.')
    assert lines[3] == ('PCKA + FitNet vs PCKA alone (the best single '
                        'method): +0.57 [+0.42, +0.71] over seeds 0, 1, 2.')
    assert lines[4] == ('PCKA + FitNet beats PCKA alone beyond the seed '
                        'spread.')
    # 0.6, 0.1, -0.1: within the spread
    ties = dict(RESULTS, pcka_fitnet={0: dict(AP=9.6), 1: dict(AP=9.3),
                                      2: dict(AP=9.3)})
    text = study.verdict_text(dict(verdict=verdict(
        ties, stacked=['pcka_fitnet']), max_seeds=5))
    assert text.splitlines()[-1] == ('No stacked row beats the best single '
                                     'method beyond the seed spread.')
