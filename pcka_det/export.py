"""Turn a distiller checkpoint into a student checkpoint plain mmdet loads.

The command (``tools/export_student.py``) refuses to replace an existing
file (e.g. ``CKPT CKPT``, which would turn a resumable distiller checkpoint
into the student alone) unless ``--force``.

Example:
    python -m pcka_det.export work_dirs/x/epoch_24.pth student.pth
    python tools/test.py mmdet::retinanet/retinanet_r50_fpn_2x_coco.py \\
        student.pth
"""
import argparse
import os.path as osp
import sys
from typing import Dict

from .checkpoint import read_checkpoint, student_state
from .fileio import atomic_torch_save
from .options import command_contract, parse_command


def student_checkpoint(checkpoint: Dict) -> Dict:
    """Extract the student from a distiller checkpoint.

    Args:
        checkpoint (dict): A checkpoint saved by the runner while training a
            ``FeatureDistiller`` (``state_dict`` with ``student.`` keys).

    Returns:
        dict: ``{'meta': ..., 'state_dict': ...}`` with the student's keys
        as a plain mmdet detector names them.
    """
    state = checkpoint.get('state_dict')
    if not isinstance(state, dict):
        raise ValueError('The checkpoint has no "state_dict"')
    student = student_state(state)
    if not student:
        raise ValueError(
            'The checkpoint holds no "student." weights: it is not a '
            'FeatureDistiller checkpoint (is it a plain detector already?)')
    meta = dict(checkpoint.get('meta', {}))
    meta['exported_from'] = 'pcka_det.FeatureDistiller'
    return dict(meta=meta, state_dict=student)


def export_student(src: str, dst: str) -> str:
    """Write the student-only checkpoint of ``src`` to ``dst`` atomically.

    Args:
        src (str): Distiller checkpoint path.
        dst (str): Output path.

    Returns:
        str: ``dst``.
    """
    return atomic_torch_save(student_checkpoint(read_checkpoint(src)), dst)


def slim_checkpoint(src: str, dst: str) -> str:
    """Keep only the weights and meta of a plain detector checkpoint.

    The result loads with ``torch.load(weights_only=True)`` (no optimizer,
    message hub or scheduler state), e.g. to serve as ``teacher_ckpt``.

    Args:
        src (str): Runner checkpoint path.
        dst (str): Output path.

    Returns:
        str: ``dst``.
    """
    ckpt = read_checkpoint(src)
    return atomic_torch_save(
        dict(meta=ckpt.get('meta', {}), state_dict=ckpt['state_dict']), dst)


def build_parser() -> argparse.ArgumentParser:
    """The export command's flags."""
    parser = argparse.ArgumentParser(
        description='Write the student of a distiller checkpoint as a plain '
        'mmdet checkpoint.')
    parser.add_argument('checkpoint', help='FeatureDistiller checkpoint')
    parser.add_argument('out', help='student-only checkpoint to write')
    parser.add_argument('--force', action='store_true',
                        help='replace OUT if it exists')
    return parser


CONTRACT = command_contract(
    'pcka_det.export', build_parser(),
    'Write the student of a distiller checkpoint as a plain mmdet '
    'checkpoint (tools/export_student.py).')


def main(argv=None) -> int:
    args = parse_command(build_parser(), 'pcka_det.export', argv)
    if osp.exists(args.out) and not args.force:
        same = osp.abspath(args.out) == osp.abspath(args.checkpoint)
        sys.exit(f'{args.out} exists'
                 + (' and is the checkpoint being exported: it would be '
                    'replaced by the student alone' if same else '')
                 + '; choose another output path, or pass --force to '
                 'replace it.')
    print(f'Student checkpoint written to '
          f'{export_student(args.checkpoint, args.out)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
