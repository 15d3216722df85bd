"""A run formats its config once: MMEngine formats the whole config with
yapf (``Config.pretty_text``) for the log, the dumped file, the visualizer,
the message hub and every checkpoint's meta; the runner's
``FormattedOnceConfig`` keeps the text of each content."""
import mmengine.config.config as mmengine_config
import pytest
import torch
from conftest import TOY_DISTILL, toy_options
from mmengine.config import Config

from pcka_det.engine.runner import FormattedOnceConfig
from pcka_det.train import main as train_main


@pytest.fixture
def format_calls(monkeypatch):
    """The number of yapf calls MMEngine's ``pretty_text`` makes."""
    calls = []
    format_code = mmengine_config.FormatCode

    def counting(*args, **kwargs):
        calls.append(1)
        return format_code(*args, **kwargs)

    monkeypatch.setattr(mmengine_config, 'FormatCode', counting)
    monkeypatch.setattr(FormattedOnceConfig, '_texts', {})  # none formatted
    return calls


def test_same_text_once_per_content(format_calls):
    cfg = FormattedOnceConfig.of(Config(dict(a=1, b=dict(c=[1, 2]))))
    plain = Config(dict(a=1, b=dict(c=[1, 2])))
    assert cfg.pretty_text == plain.pretty_text  # MMEngine's own text
    assert len(format_calls) == 2  # one each: the plain config has no memo
    assert cfg.pretty_text == plain.pretty_text
    assert len(format_calls) == 3
    cfg.b.c.append(3)  # another content: formatted anew
    assert cfg.pretty_text == Config(dict(a=1, b=dict(c=[1, 2, 3]))
                                     ).pretty_text
    assert len(format_calls) == 5


def test_a_dict_or_config_dict_as_runner_from_cfg_takes(format_calls):
    from mmengine.config import ConfigDict
    want = Config(dict(a=1, b=[2])).pretty_text
    for cfg in (dict(a=1, b=[2]), ConfigDict(a=1, b=[2])):
        assert FormattedOnceConfig.of(cfg).pretty_text == want


@pytest.mark.slow
def test_a_run_with_two_checkpoints_formats_its_config_once(
        tmp_path, tiny_coco, toy_teacher_ckpt, format_calls):
    """``tools/train.py``'s main, 2 epochs, a checkpoint each: the log, the
    dump, the message hub and the checkpoints hold the one text."""
    work = tmp_path / 'work'
    opts = toy_options(tiny_coco, toy_teacher_ckpt, **{
        'train_dataloader.batch_size': 8, 'train_cfg.max_epochs': 2})
    train_main([TOY_DISTILL, '--work-dir', str(work), '--cfg-options']
               + [f'{k}={v}' for k, v in opts.items()])
    saved = torch.load(work / 'epoch_2.pth', map_location='cpu',
                       weights_only=False)['meta']['cfg']
    dumped = (work / 'pcka_retinanet_r18_thin-r18_toy.py').read_text()
    assert saved == dumped and 'FeatureDistiller' in dumped
    assert len(format_calls) == 1
