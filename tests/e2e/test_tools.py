"""The package, its configs and its tools from a user's point of view."""
import os.path as osp
import subprocess
import sys
import textwrap

from conftest import ROOT


def run(cmd, cwd, timeout=300):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_pcka_det_scope_inheritance_outside_repo(tmp_path):
    user_cfg = tmp_path / 'my_distill.py'
    user_cfg.write_text(textwrap.dedent("""
        _base_ = 'pcka_det::pcka/retina_r101_r50.py'
        model = dict(distill_losses=dict(pcka_p3=dict(loss=dict(
            intra_weight=5.0))))
        """))
    script = textwrap.dedent("""
        import pcka_det
        from mmengine.config import Config
        cfg = Config.fromfile('my_distill.py')
        m = cfg.model
        print(m.type, m.teacher.cfg_path, m.teacher_ckpt.split('/')[-1])
        print(m.distill_losses.pcka_p3.loss.intra_weight,
              m.distill_losses.pcka_p4.loss.intra_weight)
        print(cfg.custom_imports.imports, cfg.optim_wrapper.optimizer.lr,
              cfg.train_cfg.max_epochs)
        """)
    out = run([sys.executable, '-c', script], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split('\n')
    assert lines[0] == ('FeatureDistiller '
                        'mmdet::retinanet/retinanet_r101_fpn_2x_coco.py '
                        'retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth')
    assert lines[1] == '5.0 10.0'
    assert lines[2] == "['pcka_det'] 0.01 24"


def test_configs_ship_inside_the_package():
    import pcka_det
    pkg = osp.dirname(pcka_det.__file__)
    assert osp.isfile(osp.join(pkg, '.mim', 'configs', 'pcka',
                               'retina_r101_r50.py'))
    assert osp.isfile(osp.join(pkg, '.mim', 'model-index.yml'))


def test_train_amp_on_cpu_stops_with_message(tmp_path):
    out = run([sys.executable, osp.join(ROOT, 'tools', 'train.py'),
               osp.join(ROOT, 'configs', 'toy', 'retinanet_thin-r18_toy.py'),
               '--amp', '--work-dir', str(tmp_path / 'w')], cwd=tmp_path)
    assert out.returncode != 0
    assert '--amp needs a CUDA GPU' in out.stderr
    assert not (tmp_path / 'w').exists()


def test_train_missing_config(tmp_path):
    out = run([sys.executable, osp.join(ROOT, 'tools', 'train.py'),
               'configs/none.py'], cwd=tmp_path)
    assert out.returncode != 0
    assert 'configs/none.py' in out.stderr and 'not found' in out.stderr


def test_export_student_cli(tmp_path):
    import torch
    src = tmp_path / 'epoch_1.pth'
    torch.save(dict(meta=dict(epoch=1), state_dict={
        'student.neck.w': torch.ones(2),
        'connectors.p3.conv.weight': torch.ones(1)
    }), src)
    out = run([sys.executable, osp.join(ROOT, 'tools', 'export_student.py'),
               str(src), str(tmp_path / 's.pth')], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    saved = torch.load(tmp_path / 's.pth', weights_only=True)
    assert list(saved['state_dict']) == ['neck.w']
