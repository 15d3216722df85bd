"""``tools/export_student.py`` never replaces an existing file unless told
to: ``CKPT CKPT`` would turn a resumable distiller checkpoint into the
student alone."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

EXPORT = osp.join(ROOT, 'tools', 'export_student.py')


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / 'epoch_1.pth'
    torch.save(dict(meta=dict(epoch=1), optimizer=dict(state=1), state_dict={
        'student.neck.w': torch.ones(2),
        'connectors.p3.conv.weight': torch.ones(1)}), path)
    return path


def export(*args):
    return subprocess.run([sys.executable, EXPORT, *map(str, args)],
                          capture_output=True, text=True)


def test_export_onto_its_own_checkpoint_is_refused(ckpt):
    before = ckpt.read_bytes()
    out = export(ckpt, ckpt)
    assert out.returncode != 0
    assert 'is the checkpoint being exported' in out.stderr
    assert '--force' in out.stderr
    assert ckpt.read_bytes() == before  # nothing lost


def test_export_onto_another_file_needs_force(ckpt, tmp_path):
    other = tmp_path / 'student.pth'
    other.write_bytes(b'keep me')
    out = export(ckpt, other)
    assert out.returncode != 0 and 'student.pth exists' in out.stderr
    assert other.read_bytes() == b'keep me'
    out = export(ckpt, other, '--force')
    assert out.returncode == 0, out.stderr
    saved = torch.load(other, weights_only=True)
    assert list(saved['state_dict']) == ['neck.w']
