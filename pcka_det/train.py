"""Train a detector or a distiller; MMDetection's tools/train.py interface.

Runs from the installed package, no checkout needed (``tools/train.py`` in
the repository is a wrapper of this module).

Example:
    python -m pcka_det.train pcka_det::pcka/retina_r101_r50.py
    python -m pcka_det.train my_distill.py --work-dir w --resume
"""
import argparse
import sys
from typing import Optional

from .datasets import validate_dataloaders
from .cli import (LAUNCHER_RULE, add_runtime_args, parse_runtime_args,
                  prepare_cfg)
from .engine.stop_relay import RelayedStops
from .options import command_contract


def build_parser() -> argparse.ArgumentParser:
    """mmdet's tools/train.py flags."""
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training (GPU only)')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    add_runtime_args(parser)
    return parser


CONTRACT = command_contract(
    'pcka_det.train', build_parser(),
    'Train a detector or a distiller (tools/train.py).',
    rules=(LAUNCHER_RULE, ))


def parse_args(argv=None) -> argparse.Namespace:
    return parse_runtime_args(build_parser(), 'pcka_det.train', argv)


def build_runner(config: str,
                 cfg_options: Optional[dict] = None,
                 work_dir: Optional[str] = None,
                 launcher: str = 'none',
                 amp: bool = False,
                 auto_scale_lr: bool = False,
                 resume: Optional[str] = None,
                 stops: Optional[RelayedStops] = None):
    """The runner ``tools/train.py`` trains with: the one training path of
    the CLI, the demo's stages and the tests.

    Loads ``config`` with the CLI overrides (:func:`prepare_cfg`), checks the
    datasets before any output is written (their warnings then go to the
    run's log) and builds the runner (``DistillRunner`` unless the config
    names another). A distributed run initialises its process group first
    and starts ``stops``, so an error of one rank in these checks or later
    stops every rank with its message.

    Args:
        config (str): Config path (``pcka_det::``/``mmdet::`` scopes work).
        cfg_options (dict, optional): ``--cfg-options`` overrides.
        work_dir (str, optional): ``--work-dir``.
        launcher (str): ``none``, ``pytorch``, ``slurm`` or ``mpi``.
        amp (bool): ``--amp`` (needs a CUDA GPU).
        auto_scale_lr (bool): ``--auto-scale-lr``.
        resume (str, optional): ``--resume``: ``'auto'`` (the newest
            checkpoint of the work dir) or a checkpoint path.
        stops (RelayedStops, optional): Started once the process group is
            up (``tools/train.py`` trains inside it).

    Returns:
        Runner: Ready for ``train()``.
    """
    from mmengine.registry import RUNNERS

    cfg = prepare_cfg(config, cfg_options, work_dir, launcher)
    if amp:
        import torch
        if not torch.cuda.is_available():
            sys.exit('--amp needs a CUDA GPU: MMEngine\'s AmpOptimWrapper '
                     'refuses to run on a CPU. Drop --amp to train in fp32.')
        # MMEngine's AMP wrapper; DistillRunner guards it like the fp32 one
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if auto_scale_lr:
        if 'auto_scale_lr' in cfg and 'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise RuntimeError('Can not find "auto_scale_lr" or '
                               '"auto_scale_lr.base_batch_size" in your'
                               ' configuration file.')
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume is not None:
        cfg.resume = True
        cfg.load_from = resume

    if launcher != 'none':
        from mmengine.dist import init_dist, is_distributed
        if not is_distributed():  # MMEngine's Runner then skips it
            init_dist(launcher, **cfg.get('env_cfg', {}).get('dist_cfg', {}))
        if stops is not None:
            stops.start()

    names = ['train_dataloader']
    if cfg.get('val_cfg'):
        names.append('val_dataloader')
    # before any output is written; its warnings go to the run's log
    found = validate_dataloaders(cfg, names, log=False)

    runner = RUNNERS.build(cfg)
    for message in found:
        runner.logger.warning(message)
    return runner


def main(argv=None):
    args = parse_args(argv)
    with RelayedStops() as stops:
        build_runner(args.config, args.cfg_options, args.work_dir,
                     args.launcher, amp=args.amp,
                     auto_scale_lr=args.auto_scale_lr, resume=args.resume,
                     stops=stops).train()


if __name__ == '__main__':
    main()
