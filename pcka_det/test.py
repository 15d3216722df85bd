"""Test a detector or a distiller; MMDetection's tools/test.py interface.

A distiller predicts with its student, so the metrics are the student's.
Any pairing of a distiller or plain config with a distiller or student-only
checkpoint loads (see ``pcka_det.engine.runner.DistillRunner``). Runs from the
installed package (``tools/test.py`` in the repository wraps this module).

Example:
    python -m pcka_det.test pcka_det::pcka/retina_r101_r50.py epoch_24.pth
    python -m pcka_det.test mmdet_student_cfg.py student_last.pth --show-dir vis
"""
import argparse
import os.path as osp

from mmengine.registry import RUNNERS

from mmdet.engine.hooks.utils import trigger_visualization_hook
from mmdet.evaluation import DumpDetResults
from .datasets import validate_dataloaders
from .cli import (LAUNCHER_RULE, add_runtime_args, parse_runtime_args,
                  prepare_cfg)
from .options import command_contract


def build_parser() -> argparse.ArgumentParser:
    """mmdet's tools/test.py flags."""
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        type=str,
        help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. '
        'If specified, it will be automatically saved '
        'to the work_dir/timestamp/show_dir')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    add_runtime_args(parser)
    return parser


CONTRACT = command_contract(
    'pcka_det.test', build_parser(),
    'Test a detector, or a distiller\'s student, on the test set '
    '(tools/test.py); loads the checkpoint strictly.',
    bounds={'--wait-time': (0, None)}, rules=(LAUNCHER_RULE, ))


def parse_args(argv=None) -> argparse.Namespace:
    return parse_runtime_args(build_parser(), 'pcka_det.test', argv)


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'Checkpoint "{args.checkpoint}" not found')
    cfg = prepare_cfg(args.config, args.cfg_options, args.work_dir,
                      args.launcher)
    cfg.load_from = args.checkpoint
    # before any output; its warnings go to the run's log
    found = validate_dataloaders(cfg, ['test_dataloader'], log=False)
    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)

    runner = RUNNERS.build(cfg)
    # a test never tolerates a re-sized layer (load_from fine-tuning may)
    runner.strict_load = True
    for message in found:
        runner.logger.warning(message)
    if args.out is not None:
        assert args.out.endswith(('.pkl', '.pickle')), \
            'The dump file must be a pkl file.'
        runner.test_evaluator.metrics.append(
            DumpDetResults(out_file_path=args.out))
    runner.test()


if __name__ == '__main__':
    main()
