import json

import pytest
import torch

import demo

KEYS = ['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl']


def _curve(losses, keys):
    """``(iterations, sum of the keys' values)`` of a stage's logged loss
    curves (``{key: [[iter, value], ...]}``)."""
    its = [i for i, _ in losses[keys[0]]]
    for k in keys:
        assert [i for i, _ in losses[k]] == its, k
    return its, [sum(losses[k][n][1] for k in keys) for n in range(len(its))]


def _check_figure(fig, results, stage_results):
    """The demo's figure shows the numbers its run wrote: the AP bars are
    the metrics of ``results.json``, the detection-loss curves the sums of
    RetinaNet's two terms (``loss_cls + loss_bbox``) logged in each
    stage's ``result.json``, the distillation curves each method's levels
    summed, relative to their first value."""
    ax_ap, ax_det, ax_kd = fig.axes
    order = [(name, desc) for name, _, desc in
             demo.stages(['pcka', 'pkd'], 'retinanet')]
    assert [n for n, _ in order] == list(results['stages'])
    assert [t.get_text() for t in ax_ap.get_xticklabels()] == KEYS
    assert [c.get_label() for c in ax_ap.containers] == [d for _, d in order]
    for (name, _), bars in zip(order, ax_ap.containers):
        metrics = results['stages'][name]['metrics']
        assert [b.get_height() for b in bars] == [
            metrics[k] if metrics[k] is not None else 0.0 for k in KEYS], name
    assert [line.get_label() for line in ax_det.lines] == [
        d for _, d in order]
    for (name, _), line in zip(order, ax_det.lines):
        its, det = _curve(stage_results[name]['losses'],
                          ['loss_cls', 'loss_bbox'])
        assert len(its) >= 2, name  # a curve, not a point
        assert list(line.get_xdata()) == its, name
        assert line.get_ydata() == pytest.approx(det, rel=1e-12), name
    assert [line.get_label() for line in ax_kd.lines] == [
        'Student + PCKA (4 levels)', 'Student + PKD (4 levels)']
    for name, line in zip(('pcka', 'pkd'), ax_kd.lines):
        its, kd = _curve(stage_results[name]['losses'],
                         [f'loss_{name}_p{i}' for i in range(3, 7)])
        assert kd[0] > 0 and len(set(kd)) > 1, name  # it moved
        assert list(line.get_xdata()) == its, name
        assert line.get_ydata() == pytest.approx([v / kd[0] for v in kd],
                                                 rel=1e-12), name
        assert line.get_ydata()[0] == 1.0


@pytest.mark.slow
def test_tiny_demo_pipeline(tmp_path, capsys, saved_figures):
    """The whole demo (data, teacher, student, PCKA student, COCO eval,
    table, figure) on a few images, one short epoch per stage."""
    work, data = tmp_path / 'work', tmp_path / 'data'
    argv = ['--tiny', '--work-dir', str(work), '--data-root', str(data),
            '--methods', 'pcka', 'pkd']
    summary = demo.main(argv)
    results = json.loads((work / 'results.json').read_text())
    assert results['tiny'] is True
    assert set(results['stages']) == {'teacher', 'student', 'pcka', 'pkd'}
    for stage in results['stages'].values():
        assert set(stage['metrics']) == {'AP', 'AP50', 'AP75', 'APs', 'APm',
                                         'APl'}
        assert stage['train_time_s'] > 0
        # CocoMetric returns no metric only when nothing was detected (the
        # barely trained --tiny models); the demo counted the boxes itself
        assert bool(stage['coco_metrics']) == (stage['num_detections'] > 0)
    # the distilled run logged its distillation losses
    stage_results = {
        name: json.loads((work / name / 'result.json').read_text())
        for name in results['stages']}
    pcka, pkd = stage_results['pcka'], stage_results['pkd']
    assert 'loss_pcka_p3' in pcka['losses']
    assert 'loss_pkd_p3' in pkd['losses'] and 'loss_pcka_p3' not in pkd[
        'losses']
    # the figure, written once, shows what the JSON files hold
    [(path, fig)] = saved_figures
    assert path == str(work / 'demo.png') == results['figure']
    assert (work / 'demo.png').is_file()
    _check_figure(fig, results, stage_results)
    # the PCKA student is exported with plain keys, loadable weights-only
    student = torch.load(work / 'pcka' / 'model.pth', weights_only=True)
    assert any(k.startswith('backbone.') for k in student['state_dict'])
    assert (work / 'pcka' / 'student_last.pth').is_file()  # the hook
    # a second run reuses every finished stage (same fingerprints)
    capsys.readouterr()
    again = demo.main(argv)
    assert again['stages'] == summary['stages']
    assert capsys.readouterr().out.count('reusing') == 4
    # the reused stages draw the same figure
    assert [p for p, _ in saved_figures] == [path, path]
    _check_figure(saved_figures[1][1], results, stage_results)
    assert json.loads((work / 'pcka' / 'fingerprint.json').read_text())[
        'teacher_sha256']
