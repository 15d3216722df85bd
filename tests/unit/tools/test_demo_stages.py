"""tools/demo/demo.py and its parts (demo_stages, demo_cache, demo_report) without
training: stage fingerprints and reuse, --fresh, the generated dataset,
reading COCO metrics; and the Makefile's targets.

A fake ``launch_stage`` stands in for the training subprocess, so each test
takes about a second.
"""
import itertools
import json
import os
import pathlib
import re
import subprocess

import pytest
from conftest import ROOT

import demo
from demo_cache import (FINGERPRINT, clear_config_cache, config_digest,
                        describe_change, reuse_check, stage_fingerprint)
from demo_report import METRICS, MetricsError, table_metrics
from demo_stages import (DEFAULT_DATA_ROOT, DEFAULT_WORK_DIR, DETECTORS,
                         STAGE_LOG, stages)

STUDENT_CFG = 'configs/toy/retinanet_thin-r18_toy.py'
FULL_METRICS = {f'coco/{m}': 0.25 for _, m in METRICS}


def write_annotations(root, num_images=3, tag=''):
    """Minimal COCO annotation files (all the demo reads without training)."""
    os.makedirs(root / 'annotations', exist_ok=True)
    for split in ('train', 'val'):
        ann = dict(images=[dict(id=i, file_name=f'{i}.png', width=8,
                                height=8) for i in range(num_images)],
                   annotations=[dict(id=i, image_id=i, bbox=[0, 0, 4, 4],
                                     category_id=1, area=16, iscrowd=0)
                                for i in range(num_images)],
                   categories=[dict(id=1, name='box' + tag)])
        (root / 'annotations' / f'instances_{split}.json').write_text(
            json.dumps(ann))


@pytest.fixture
def fake_generator(monkeypatch):
    """``generate_dataset`` writing annotations only; records its calls."""
    import pcka_det.datasets
    calls = []

    def generate(out_dir, cfg):
        calls.append((str(out_dir), cfg.seed, cfg.num_train))
        write_annotations(pathlib.Path(out_dir),
                          num_images=min(cfg.num_train, 4),
                          tag=str(cfg.seed))

    monkeypatch.setattr(pcka_det.datasets, 'generate_dataset', generate)
    return calls


@pytest.fixture
def fake_launch(monkeypatch):
    """``launch_stage`` writing a result and a checkpoint instantly; the
    checkpoint differs on every launch (as a retrained model would).
    ``launched`` lists the stages run; ``metrics`` is what they report."""
    state = dict(launched=[], metrics=dict(FULL_METRICS), detections=5)
    launches = itertools.count()

    def launch(args, name, out_dir, total_iters):
        state['launched'].append(name)
        open(os.path.join(out_dir, STAGE_LOG), 'w').close()
        model = os.path.join(out_dir, 'model.pth')
        with open(model, 'w') as f:
            f.write(f'{name} launch {next(launches)}')
        with open(os.path.join(out_dir, 'result.json'), 'w') as f:
            json.dump(dict(config=name, checkpoint=model, train_time_s=1.0,
                           coco_metrics=state['metrics'],
                           num_detections=state['detections'], losses={}),
                      f)

    monkeypatch.setattr(demo, 'launch_stage', launch)
    return state


def run_demo(tmp_path, *extra):
    return demo.main(['--tiny', '--work-dir', str(tmp_path / 'work'),
                      '--data-root', str(tmp_path / 'data'),
                      '--methods', 'pcka', *extra])


# -- fingerprints and reuse --------------------------------------------------

def test_config_digest_follows_base_chain_and_cfg_path(tmp_path):
    base, child = tmp_path / 'base.py', tmp_path / 'child.py'
    sub = tmp_path / 'sub.py'
    base.write_text('lr = 0.1\n')
    sub.write_text("model = dict(type='RetinaNet', depth=18)\n")
    child.write_text(f"_base_ = './base.py'\n"
                     f"model = dict(student=dict(cfg_path='{sub}'))\n")

    def digest():
        clear_config_cache()  # cached for a demo run
        return config_digest(str(child))

    first = digest()
    assert digest() == first  # stable
    base.write_text('lr = 0.2\n')  # a _base_ file
    second = digest()
    assert second != first
    sub.write_text("model = dict(type='RetinaNet', depth=34)\n")  # cfg_path
    assert digest() != second


def test_reuse_only_with_the_same_fingerprint(tmp_path):
    write_annotations(tmp_path / 'data')
    work = tmp_path / 'work'

    def fingerprint(name, *argv):
        args = demo.parse_args(['--work-dir', str(work), '--data-root',
                                str(tmp_path / 'data'), *argv])
        return stage_fingerprint(args, name, STUDENT_CFG)

    out = str(work / 'student')
    os.makedirs(out)
    assert reuse_check(out, fingerprint('student')) == (False, '')
    (work / 'student' / 'result.json').write_text('{}')
    reuse, why = reuse_check(out, fingerprint('student'))
    assert not reuse and 'no fingerprint.json' in why
    (work / 'student' / FINGERPRINT).write_text(
        json.dumps(fingerprint('student')))
    assert reuse_check(out, fingerprint('student')) == (True, '')

    reuse, why = reuse_check(out, fingerprint('student', '--seed', '1'))
    assert not reuse and 'randomness.seed: 0 -> 1' in why
    reuse, why = reuse_check(out, fingerprint('student', '--tiny'))
    assert not reuse and 'train_cfg.max_epochs: unset -> 1' in why
    # another dataset at the same place
    write_annotations(tmp_path / 'data', num_images=4)
    reuse, why = reuse_check(out, fingerprint('student'))
    assert not reuse and why == 'the dataset changed'
    write_annotations(tmp_path / 'data')
    assert reuse_check(out, fingerprint('student'))[0]
    # the same data somewhere else is the same stage
    write_annotations(tmp_path / 'moved')
    args = demo.parse_args(['--work-dir', str(work), '--data-root',
                            str(tmp_path / 'moved')])
    assert reuse_check(
        out, stage_fingerprint(args, 'student', STUDENT_CFG))[0]


def test_distilled_stage_fingerprint_has_the_teacher(tmp_path):
    write_annotations(tmp_path / 'data')
    args = demo.parse_args(['--work-dir', str(tmp_path / 'work'),
                            '--data-root', str(tmp_path / 'data')])
    os.makedirs(tmp_path / 'work' / 'teacher')
    teacher = tmp_path / 'work' / 'teacher' / 'model.pth'
    teacher.write_bytes(b'teacher 1')
    config = dict((n, c) for n, c, _ in stages(['pcka']))['pcka']
    old = stage_fingerprint(args, 'pcka', config)
    teacher.write_bytes(b'teacher 2')
    new = stage_fingerprint(args, 'pcka', config)
    assert describe_change(old, new) == 'the teacher checkpoint changed'
    assert 'teacher_sha256' not in stage_fingerprint(
        args, 'student', STUDENT_CFG)


def test_demo_reruns_exactly_the_stages_whose_inputs_changed(
        tmp_path, fake_launch, fake_generator, capsys):
    run_demo(tmp_path)
    assert fake_launch['launched'] == ['teacher', 'student', 'pcka']
    fake_launch['launched'].clear()
    run_demo(tmp_path)  # nothing changed
    assert fake_launch['launched'] == []
    assert capsys.readouterr().out.count('reusing') == 3
    run_demo(tmp_path, '--seed', '1')  # every stage depends on the seed
    assert fake_launch['launched'] == ['teacher', 'student', 'pcka']
    assert '[teacher] rerunning: the settings changed (randomness.seed: ' \
        '0 -> 1)' in capsys.readouterr().out
    fake_launch['launched'].clear()
    # a retrained teacher: the distilled stage reruns, the student does not
    (tmp_path / 'work' / 'teacher' / 'result.json').unlink()
    run_demo(tmp_path, '--seed', '1')
    assert fake_launch['launched'] == ['teacher', 'pcka']
    assert '[pcka] rerunning: the teacher checkpoint changed' in \
        capsys.readouterr().out


# -- --detector --------------------------------------------------------------

def test_detector_picks_its_configs_and_work_dir():
    args = demo.parse_args([])
    assert (args.detector, args.work_dir) == ('retinanet', DEFAULT_WORK_DIR)
    assert stages(['pcka'])[0][1] == 'configs/toy/retinanet_r18_toy.py'
    args = demo.parse_args(['--detector', 'fcos'])
    assert args.work_dir == os.path.join('work_dirs', 'demo_fcos')
    assert [c for _, c, _ in stages(args.methods, 'fcos')] == [
        'configs/toy/fcos_r18_toy.py', 'configs/toy/fcos_thin-r18_toy.py',
        'configs/toy/pcka_fcos_r18_thin-r18_toy.py']
    for detector, spec in DETECTORS.items():
        for _, config, _ in stages(spec['methods'], detector):
            assert os.path.isfile(os.path.join(ROOT, config)), config


def test_a_method_without_toy_config_is_refused(capsys):
    with pytest.raises(SystemExit):
        demo.parse_args(['--detector', 'fcos', '--methods', 'pcka', 'pkd'])
    assert '--detector fcos has no toy config for pkd' in \
        capsys.readouterr().err


def test_each_detector_keeps_its_own_stages(tmp_path, monkeypatch,
                                            fake_launch, fake_generator,
                                            capsys):
    monkeypatch.chdir(tmp_path)
    demo.main(['--tiny'])
    demo.main(['--tiny', '--detector', 'fcos'])
    assert fake_launch['launched'] == ['teacher', 'student', 'pcka'] * 2
    fcos = json.loads((tmp_path / 'work_dirs' / 'demo_fcos' / 'pcka' /
                       FINGERPRINT).read_text())
    assert fcos['config'] == 'configs/toy/pcka_fcos_r18_thin-r18_toy.py'
    capsys.readouterr()
    demo.main(['--tiny'])  # the RetinaNet stages are still there
    demo.main(['--tiny', '--detector', 'fcos'])
    assert len(fake_launch['launched']) == 6
    assert capsys.readouterr().out.count('reusing') == 6
    # FCOS in RetinaNet's work dir: every stage reruns, and says why
    demo.main(['--tiny', '--detector', 'fcos', '--work-dir', DEFAULT_WORK_DIR])
    assert len(fake_launch['launched']) == 9
    assert '[teacher] rerunning: the config configs/toy/fcos_r18_toy.py' \
        in capsys.readouterr().out


# -- --fresh and the dataset -------------------------------------------------

def make_stage(work, name):
    os.makedirs(work / name)
    (work / name / STAGE_LOG).write_text('log')
    (work / name / 'result.json').write_text('{}')


def test_fresh_never_deletes_a_given_data_root(tmp_path, monkeypatch,
                                               capsys):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / DEFAULT_WORK_DIR
    default_data = tmp_path / DEFAULT_DATA_ROOT
    mine = tmp_path / 'my_data'
    for root in (default_data, mine):
        write_annotations(root)
    make_stage(work, 'teacher')
    make_stage(work, 'pcka')
    (work / 'results.json').write_text('{}')
    (work / 'notes.txt').write_text('not the demo\'s')

    demo.fresh_start(demo.parse_args(['--fresh', '--data-root', str(mine)]))
    assert 'keeping ' + str(mine) in capsys.readouterr().out
    assert (mine / 'annotations' / 'instances_train.json').is_file()
    assert default_data.is_dir()  # not this run's data
    assert not (work / 'teacher').exists() and not (work / 'pcka').exists()
    assert not (work / 'results.json').exists()
    assert (work / 'notes.txt').is_file()

    demo.fresh_start(demo.parse_args(['--fresh']))  # the default dataset
    assert not default_data.exists()
    assert mine.is_dir()


def test_default_dataset_is_regenerated_for_other_settings(
        tmp_path, monkeypatch, fake_generator, capsys):
    monkeypatch.chdir(tmp_path)
    demo.ensure_data(demo.parse_args(['--tiny']))
    demo.ensure_data(demo.parse_args(['--tiny']))  # same settings: kept
    assert len(fake_generator) == 1
    demo.ensure_data(demo.parse_args([]))  # full size after --tiny
    assert fake_generator[-1] == (DEFAULT_DATA_ROOT, 0, 600)
    assert 'Regenerating' in capsys.readouterr().out
    os.remove(os.path.join(DEFAULT_DATA_ROOT, demo.DATA_MARKER))
    demo.ensure_data(demo.parse_args([]))  # unknown settings (older demo)
    assert len(fake_generator) == 3
    # a given data root is used as it is
    mine = tmp_path / 'mine'
    demo.ensure_data(demo.parse_args(['--tiny', '--data-root', str(mine)]))
    demo.ensure_data(demo.parse_args(['--data-root', str(mine)]))
    assert len(fake_generator) == 4
    assert 'as it is' in capsys.readouterr().out


# -- COCO metrics ------------------------------------------------------------

def test_a_missing_metric_is_an_error():
    path = 'work/pcka/result.json'
    full = dict(coco_metrics=dict(FULL_METRICS), num_detections=7)
    assert table_metrics('pcka', full, path) == {
        k: 25.0 for k, _ in METRICS}
    partial = dict(full, coco_metrics={
        k: v for k, v in FULL_METRICS.items() if k != 'coco/bbox_mAP_l'})
    with pytest.raises(MetricsError,
                       match=r'Stage "pcka": metric "coco/bbox_mAP_l" is '
                       r'missing from work/pcka/result.json'):
        table_metrics('pcka', partial, path)
    # no metric at all although boxes were predicted
    with pytest.raises(MetricsError, match='coco/bbox_mAP"'):
        table_metrics('pcka', dict(coco_metrics={}, num_detections=3), path)
    with pytest.raises(MetricsError, match='no "coco_metrics"'):
        table_metrics('pcka', dict(metrics={}), path)
    # CocoMetric's empty result when no box was predicted at all: AP 0
    assert table_metrics('pcka', dict(
        coco_metrics={}, num_detections=0), path) == {
            k: 0.0 for k, _ in METRICS}
    # COCOeval's -1 (no ground truth of that size) is not a number to print
    small = dict(full, coco_metrics=dict(FULL_METRICS,
                                         **{'coco/bbox_mAP_l': -1.0}))
    assert table_metrics('pcka', small, path)['APl'] is None


def test_demo_stops_on_a_missing_metric_and_reruns_that_stage(
        tmp_path, fake_launch, fake_generator):
    fake_launch['metrics'] = {k: v for k, v in FULL_METRICS.items()
                              if k != 'coco/bbox_mAP'}
    result = tmp_path / 'work' / 'teacher' / 'result.json'
    with pytest.raises(MetricsError,
                       match=f'Stage "teacher": metric "coco/bbox_mAP" is '
                       f'missing from {re.escape(str(result))}'):
        run_demo(tmp_path)
    assert not (tmp_path / 'work' / 'teacher' / FINGERPRINT).exists()
    fake_launch['metrics'] = dict(FULL_METRICS)
    summary = run_demo(tmp_path)
    assert fake_launch['launched'] == ['teacher', 'teacher', 'student',
                                       'pcka']
    assert summary['stages']['pcka']['metrics']['AP'] == 25.0


# -- Makefile ----------------------------------------------------------------

def test_every_phony_make_target_has_a_rule():
    text = open(os.path.join(ROOT, 'Makefile')).read()
    phony = re.search(r'^\.PHONY:(.*)$', text, re.M).group(1).split()
    assert {'install', 'test', 'demo', 'clean-demo'} <= set(phony)
    for target in phony:
        assert re.search(rf'^{re.escape(target)}\s*:', text, re.M), target


def test_make_demo_passes_the_detector():
    def command(*variables):  # -n: print the commands, run nothing
        return subprocess.run(
            ['make', '-n', '-f', os.path.join(ROOT, 'Makefile'), 'demo',
             *variables], cwd=ROOT, check=True, capture_output=True,
            text=True).stdout

    assert '--detector' not in command()
    assert 'tools/demo/demo.py --detector fcos' in command('DETECTOR=fcos')


def test_make_clean_demo_removes_the_demo_outputs_only(tmp_path):
    fcos_work_dir = DETECTORS['fcos']['work_dir']
    for path in (DEFAULT_WORK_DIR, fcos_work_dir,
                 DEFAULT_DATA_ROOT, 'work_dirs/other', 'data/coco'):
        os.makedirs(tmp_path / path)
        (tmp_path / path / 'file').write_text('x')
    subprocess.run(['make', '-s', '-f', os.path.join(ROOT, 'Makefile'),
                    'clean-demo'], cwd=tmp_path, check=True)
    assert not (tmp_path / DEFAULT_WORK_DIR).exists()
    assert not (tmp_path / fcos_work_dir).exists()
    assert not (tmp_path / DEFAULT_DATA_ROOT).exists()
    assert (tmp_path / 'work_dirs/other/file').is_file()
    assert (tmp_path / 'data/coco/file').is_file()
