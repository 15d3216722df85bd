"""tools/device_bundle.sh's refusals, which need no build: on the GPU
machine, ``report`` without the bundle names the command that makes it
(the build itself, mmcv's CUDA ops, takes most of an hour: `make
device-bundle` runs it and installs the result into a clean venv)."""
import os
import os.path as osp
import subprocess

from conftest import ROOT

SCRIPT = osp.join(ROOT, 'tools', 'device_bundle.sh')


def _run(*args, **env):
    return subprocess.run(['bash', SCRIPT, *args], capture_output=True,
                          text=True, env=dict(os.environ, **env))


def test_report_without_the_bundle_names_the_build(tmp_path):
    empty = tmp_path / 'whl'
    empty.mkdir()
    out = _run('report', '--quick', WHL=str(empty))
    assert out.returncode == 2
    assert f'no mmcv wheel in {empty}' in out.stderr
    assert "bash tools/device_bundle.sh build" in out.stderr


def test_unknown_command_prints_the_usage():
    out = _run('bulid')
    assert out.returncode == 2
    assert 'usage: bash tools/device_bundle.sh build|verify|report' in \
        out.stderr
