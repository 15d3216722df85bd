"""Checkpoints load into the model they are meant for, or fail loudly.

A distiller config takes a student-only checkpoint, a plain detector config
takes a distiller checkpoint, a checkpoint of another model is an error
(MMEngine alone would warn and go on with random weights), checkpoints from
URLs are read with ``weights_only=True``, and the student export survives a
user's own ``custom_hooks`` and a ``CheckpointHook(out_dir=...)``.
"""
import functools
import http.server
import os
import os.path as osp
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from conftest import ROOT, TOY_DISTILL, toy_options
from mmengine.registry import RUNNERS

from mmdet.registry import MODELS
from pcka_det.models import build_detector
from pcka_det.cli import prepare_cfg

STUDENT_CFG = osp.join(ROOT, 'configs', 'toy', 'retinanet_thin-r18_toy.py')
TEACHER_CFG = osp.join(ROOT, 'configs', 'toy', 'retinanet_r18_toy.py')


def _random_student(seed):
    torch.manual_seed(seed)
    model = build_detector(dict(cfg_path=STUDENT_CFG))
    model.init_weights()
    return model.state_dict()


def _options(config, tiny_coco, teacher, **extra):
    opts = toy_options(tiny_coco, teacher, **extra)
    if config != TOY_DISTILL:  # a plain detector has no teacher
        del opts['model.teacher_ckpt']
    return opts


def _runner(config, tiny_coco, teacher, tmp_path, **extra):
    cfg = prepare_cfg(config, _options(config, tiny_coco, teacher, **extra),
                      str(tmp_path / 'work'))
    return RUNNERS.build(cfg)


def _assert_same(actual, expected):
    assert actual.keys() == expected.keys()
    for k in expected:
        assert torch.equal(actual[k], expected[k]), k


def test_distiller_config_takes_student_only_checkpoint(
        tmp_path, tiny_coco, toy_teacher_ckpt):
    expected = _random_student(seed=11)
    path = tmp_path / 'student_last.pth'
    torch.save(dict(meta={}, state_dict=expected), path)
    runner = _runner(TOY_DISTILL, tiny_coco, toy_teacher_ckpt, tmp_path)
    runner.load_checkpoint(str(path))
    _assert_same(runner.model.student.state_dict(), expected)


def test_plain_config_takes_distiller_checkpoint(tmp_path, tiny_coco,
                                                 toy_teacher_ckpt):
    expected = _random_student(seed=12)
    state = {f'student.{k}': v for k, v in expected.items()}
    state['connectors.p3.conv.weight'] = torch.ones(4, 4, 1, 1)
    path = tmp_path / 'epoch_1.pth'
    torch.save(dict(meta={}, state_dict=state), path)
    runner = _runner(STUDENT_CFG, tiny_coco, toy_teacher_ckpt, tmp_path)
    runner.load_checkpoint(str(path))
    _assert_same(runner.model.state_dict(), expected)


@pytest.mark.parametrize('config,layout', [(TOY_DISTILL, 'student-only'),
                                            (STUDENT_CFG, 'distiller')])
def test_ema_copy_gets_the_mapped_checkpoint(tmp_path, tiny_coco,
                                             toy_teacher_ckpt, config,
                                             layout):
    """With EMAHook in the config (RTMDet's recipe), validation and
    tools/test.py run the EMA copy, which EMAHook fills from the checkpoint
    in after_load_checkpoint: it must get the checkpoint's weights whatever
    their key layout, not keep the model's initial ones."""
    expected = _random_student(seed=15)
    state = expected if layout == 'student-only' else {
        f'student.{k}': v for k, v in expected.items()}
    path = tmp_path / 'ckpt.pth'
    torch.save(dict(meta={}, state_dict=state), path)
    runner = _runner(config, tiny_coco, toy_teacher_ckpt, tmp_path,
                     custom_hooks=[dict(type='EMAHook')])
    [ema_hook] = [h for h in runner.hooks if type(h).__name__ == 'EMAHook']
    ema_hook.before_run(runner)  # builds the averaged copy
    runner.load_checkpoint(str(path))
    ema = ema_hook.ema_model.module
    _assert_same((ema.student if config == TOY_DISTILL else ema).state_dict(),
                 expected)


@pytest.mark.parametrize('config', [STUDENT_CFG, TOY_DISTILL])
def test_checkpoint_of_another_model_is_an_error(tmp_path, tiny_coco,
                                                 toy_teacher_ckpt, config):
    # the R18 teacher is not the quarter-width student: every backbone and
    # neck tensor has another shape
    runner = _runner(config, tiny_coco, toy_teacher_ckpt, tmp_path)
    with pytest.raises(RuntimeError) as e:
        runner.load_checkpoint(str(toy_teacher_ckpt))
    msg = str(e.value)
    assert 'does not fit' in msg and str(toy_teacher_ckpt) in msg
    assert 'shape mismatches' in msg and 'backbone.' in msg


def test_resized_head_is_tolerated(tmp_path, tiny_coco, toy_teacher_ckpt):
    # fine-tuning for other classes: 2 head tensors differ, the rest loads
    state = _random_student(seed=13)
    state['bbox_head.retina_cls.weight'] = torch.zeros(9 * 80, 128, 3, 3)
    state['bbox_head.retina_cls.bias'] = torch.zeros(9 * 80)
    path = tmp_path / 'coco80.pth'
    torch.save(dict(meta={}, state_dict=state), path)
    runner = _runner(STUDENT_CFG, tiny_coco, toy_teacher_ckpt, tmp_path)
    runner.load_checkpoint(str(path))
    loaded = runner.model.state_dict()
    assert torch.equal(loaded['neck.fpn_convs.0.conv.weight'],
                       state['neck.fpn_convs.0.conv.weight'])


def _cli(script, *args):
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools', script),
                          *map(str, args)], capture_output=True, text=True,
                         timeout=600)
    return out


@pytest.mark.slow
def test_tools_test_maps_checkpoints_both_ways(tmp_path, tiny_coco,
                                               toy_teacher_ckpt):
    """tools/test.py: the distiller config with a student-only checkpoint,
    and the plain config with a distiller checkpoint, predict exactly what
    MMEngine's own plain load (student config + student checkpoint) does."""
    student = _random_student(seed=14)
    # scores around 0.5 instead of the prior 0.01: boxes pass score_thr
    student['bbox_head.retina_cls.bias'].zero_()
    plain_ckpt = tmp_path / 'student_last.pth'
    torch.save(dict(meta={}, state_dict=student), plain_ckpt)
    distill_ckpt = tmp_path / 'epoch_1.pth'
    torch.save(dict(meta={}, state_dict={f'student.{k}': v
                                         for k, v in student.items()}),
               distill_ckpt)
    preds = {}
    for name, config, ckpt in [('reference', STUDENT_CFG, plain_ckpt),
                               ('distiller_cfg', TOY_DISTILL, plain_ckpt),
                               ('plain_cfg', STUDENT_CFG, distill_ckpt)]:
        opts = _options(config, tiny_coco, toy_teacher_ckpt)
        out_file = tmp_path / f'{name}.pkl'
        out = _cli('test.py', config, ckpt, '--work-dir', tmp_path / name,
                   '--out', out_file, '--cfg-options',
                   *[f'{k}={v}' for k, v in opts.items()])
        assert out.returncode == 0, out.stderr[-3000:]
        with open(out_file, 'rb') as f:
            preds[name] = pickle.load(f)
    ref = preds.pop('reference')
    assert sum(len(p['pred_instances']['scores']) for p in ref) > 0
    for name, got in preds.items():
        for a, b in zip(ref, got):
            np.testing.assert_array_equal(a['pred_instances']['scores'],
                                          b['pred_instances']['scores'],
                                          err_msg=name)
            np.testing.assert_array_equal(a['pred_instances']['bboxes'],
                                          b['pred_instances']['bboxes'],
                                          err_msg=name)


@pytest.mark.slow
def test_tools_train_refuses_load_from_of_another_model(
        tmp_path, tiny_coco, toy_teacher_ckpt):
    opts = _options(STUDENT_CFG, tiny_coco, toy_teacher_ckpt,
                    load_from=str(toy_teacher_ckpt))
    out = _cli('train.py', STUDENT_CFG, '--work-dir', tmp_path / 'w',
               '--cfg-options', *[f'{k}={v}' for k, v in opts.items()])
    assert out.returncode != 0
    assert 'does not fit' in out.stderr and 'shape mismatches' in out.stderr
    assert not list((tmp_path / 'w').glob('epoch_*.pth'))


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A local HTTP server over ``tmp_path/www``; torch's hub cache in
    ``tmp_path/hub`` so nothing is shared with the user's cache."""
    www = tmp_path / 'www'
    www.mkdir()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'hub'))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(www))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()


def _distiller(teacher_ckpt):
    return MODELS.build(dict(
        type='FeatureDistiller',
        student=dict(cfg_path=STUDENT_CFG),
        teacher=dict(cfg_path=TEACHER_CFG),
        teacher_ckpt=teacher_ckpt,
        distill_losses=dict(p3=dict(index=0, loss=dict(
            type='PatchCKALoss', patch_size=4)))))


def test_url_checkpoint_with_pickled_callable_is_refused(served):
    www, url = served
    state = build_detector(dict(cfg_path=TEACHER_CFG)).state_dict()
    torch.save(dict(meta=dict(hook=os.system), state_dict=state),
               www / 'evil.pth')
    with pytest.raises(RuntimeError) as e:
        _distiller(f'{url}/evil.pth')
    msg = str(e.value)
    assert msg.startswith('Refused') and 'weights_only=True' in msg
    assert 'system' in msg  # names the offending global


def test_url_model_zoo_checkpoint_loads(served):
    """A model-zoo style checkpoint (numpy values in meta) passes the
    allow-list, and its weights arrive."""
    www, url = served
    torch.manual_seed(5)
    state = build_detector(dict(cfg_path=TEACHER_CFG)).state_dict()
    meta = dict(epoch=12, CLASSES=('a', 'b'), mean=np.array([1.0, 2.0]),
                best=np.float64(0.5), config='model = dict()')
    torch.save(dict(meta=meta, state_dict=state), www / 'zoo.pth')
    model = _distiller(f'{url}/zoo.pth')
    _assert_same(model.teacher.state_dict(), state)
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ


@pytest.mark.slow
def test_student_export_survives_custom_hooks_and_out_dir(
        tmp_path, tiny_coco, toy_teacher_ckpt):
    """A config with its own custom_hooks and CheckpointHook(out_dir=...)
    still gets student_last.pth and student_best_*.pth, taken from where the
    checkpoints really are."""
    from pcka_det.checkpoint import student_state
    opts = toy_options(
        tiny_coco, toy_teacher_ckpt, **{
            'train_cfg.val_interval': 1,
            'default_hooks.checkpoint.out_dir': str(tmp_path / 'ckpts'),
            'default_hooks.checkpoint.save_best': 'coco/bbox_mAP',
            # an untrained head scores about 0.01: keep its boxes, so that
            # CocoMetric reports an AP and a best checkpoint is kept
            'model.student.test_cfg.score_thr': 0.0,
        })
    cfg = prepare_cfg(TOY_DISTILL, opts, str(tmp_path / 'work'))
    cfg.custom_hooks = [dict(type='EmptyCacheHook')]
    runner = RUNNERS.build(cfg)
    runner.train()
    ckpt_dir = tmp_path / 'ckpts' / 'work'
    assert (ckpt_dir / 'epoch_1.pth').is_file()
    assert not (tmp_path / 'work' / 'epoch_1.pth').exists()
    last = torch.load(tmp_path / 'work' / 'student_last.pth',
                      weights_only=True)['state_dict']
    trained = student_state(torch.load(ckpt_dir / 'epoch_1.pth',
                                       weights_only=False)['state_dict'])
    _assert_same(last, trained)
    best = list((tmp_path / 'work').glob('student_best_coco_bbox_mAP*.pth'))
    assert len(best) == 1, list((tmp_path / 'work').iterdir())
