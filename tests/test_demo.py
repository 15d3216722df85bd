import json

import pytest
import torch

import demo


@pytest.mark.slow
def test_tiny_demo_pipeline(tmp_path, capsys):
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
    assert (work / 'demo.png').stat().st_size > 10_000
    # the distilled run logged its distillation losses
    pcka = json.loads((work / 'pcka' / 'result.json').read_text())
    assert 'loss_pcka_p3' in pcka['losses']
    pkd = json.loads((work / 'pkd' / 'result.json').read_text())
    assert 'loss_pkd_p3' in pkd['losses'] and 'loss_pcka_p3' not in pkd[
        'losses']
    # the PCKA student is exported with plain keys, loadable weights-only
    student = torch.load(work / 'pcka' / 'model.pth', weights_only=True)
    assert any(k.startswith('backbone.') for k in student['state_dict'])
    assert (work / 'pcka' / 'student_last.pth').is_file()  # the hook
    # a second run reuses every finished stage (same fingerprints)
    capsys.readouterr()
    again = demo.main(argv)
    assert again['stages'] == summary['stages']
    assert capsys.readouterr().out.count('reusing') == 4
    assert json.loads((work / 'pcka' / 'fingerprint.json').read_text())[
        'teacher_sha256']
