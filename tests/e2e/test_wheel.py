"""The installed wheel works without a checkout: from a directory outside
the repository, against a ``py3-none-any`` wheel built from this tree.

Routes to a user config that inherits ours:
* ``python -m pcka_det.train`` / ``pcka_det.test`` with
  ``_base_ = 'pcka_det::...'`` (the package registers the scope on import);
* MMDetection's own ``tools/train.py`` with ``_base_`` given as the file
  path of the installed config;
* MMDetection's own ``tools/train.py`` with ``_base_ = 'pcka_det::...'``
  fails: MMEngine resolves a scope before any import runs.
"""
import os
import os.path as osp
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, toy_options

TOY = 'toy/pcka_retinanet_r18_thin-r18_toy.py'


def _run(cmd, cwd, env, timeout=600):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """``(site dir, env)``: the wheel of this tree installed into a fresh
    directory that ``PYTHONPATH`` puts before the editable checkout."""
    tmp = tmp_path_factory.mktemp('wheel')
    # a copy of the tree (tracked and new files): building in place would
    # replace the checkout's .mim symlinks with copies
    src = tmp / 'src'
    files = subprocess.run(
        ['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT,
        capture_output=True, text=True, check=True).stdout.split('\n')
    for rel in filter(None, files):
        if osp.isfile(osp.join(ROOT, rel)):
            os.makedirs(src / osp.dirname(rel), exist_ok=True)
            shutil.copy(osp.join(ROOT, rel), src / rel)
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q']
    out = _run(pip + ['wheel', '--no-deps', '--no-build-isolation', '-w',
                      str(tmp / 'dist'), str(src)], tmp, None)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel, ) = os.listdir(tmp / 'dist')
    assert wheel.endswith('-py3-none-any.whl'), wheel
    site = tmp / 'site'
    out = _run(pip + ['install', '--no-deps', '--target', str(site),
                      str(tmp / 'dist' / wheel)], tmp, None)
    assert out.returncode == 0, out.stderr[-2000:]
    env = dict(os.environ, PYTHONPATH=str(site))
    return site, env


def _options(tiny_coco, teacher):
    opts = toy_options(tiny_coco, teacher,
                       **{'train_dataloader.batch_size': 4})
    return ['--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]


def test_package_and_configs_come_from_the_wheel(installed, tmp_path):
    site, env = installed
    out = _run([sys.executable, '-c', textwrap.dedent("""
        import pcka_det
        from mmengine.config import Config
        from pcka_det.config_paths import resolve_config_path
        print(pcka_det.__file__)
        print(resolve_config_path('pcka_det::pcka/retina_r101_r50.py'))
        """)], tmp_path, env)
    assert out.returncode == 0, out.stderr[-2000:]
    module, config = out.stdout.split()
    assert module.startswith(str(site)) and config.startswith(str(site))
    assert not osp.exists(osp.join(site, 'pcka_det', '_ext.so'))


@pytest.mark.slow
def test_python_m_train_and_test_with_scope_base(installed, tmp_path,
                                                 tiny_coco,
                                                 toy_teacher_ckpt):
    _, env = installed
    (tmp_path / 'my_distill.py').write_text(
        f"_base_ = 'pcka_det::{TOY}'\n")
    out = _run([sys.executable, '-m', 'pcka_det.train', 'my_distill.py',
                '--work-dir', 'w', *_options(tiny_coco, toy_teacher_ckpt)],
               tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / 'w' / 'student_last.pth').is_file()
    # an untrained head scores about 0.01: keep its boxes for CocoMetric
    out = _run([sys.executable, '-m', 'pcka_det.test', 'my_distill.py',
                'w/student_last.pth', '--work-dir', 'wt',
                *_options(tiny_coco, toy_teacher_ckpt),
                'model.student.test_cfg.score_thr=0.0'], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'coco/bbox_mAP' in out.stdout + out.stderr


@pytest.mark.slow
def test_mmdet_own_train_with_base_by_file_path(installed, tmp_path,
                                                tiny_coco, toy_teacher_ckpt):
    import mmdet
    site, env = installed
    mmdet_train = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools',
                           'train.py')
    base = osp.join(site, 'pcka_det', '.mim', 'configs', TOY)
    (tmp_path / 'by_path.py').write_text(f'_base_ = {base!r}\n')
    out = _run([sys.executable, mmdet_train, 'by_path.py', '--work-dir', 'w',
                *_options(tiny_coco, toy_teacher_ckpt)], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / 'w' / 'student_last.pth').is_file()

    # the pcka_det:: scope is unknown to MMEngine before pcka_det is imported
    (tmp_path / 'by_scope.py').write_text(f"_base_ = 'pcka_det::{TOY}'\n")
    out = _run([sys.executable, mmdet_train, 'by_scope.py', '--work-dir',
                'w2'], tmp_path, env)
    assert out.returncode != 0
    assert 'pcka_det' in out.stderr
