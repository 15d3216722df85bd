"""Write the student of a distiller checkpoint as a plain mmdet checkpoint.

Refuses to replace an existing file (e.g. ``CKPT CKPT``, which would turn a
resumable distiller checkpoint into the student alone) unless ``--force``.

Example:
    python tools/export_student.py work_dirs/x/epoch_24.pth student.pth
    python tools/test.py mmdet::retinanet/retinanet_r50_fpn_2x_coco.py \
        student.pth
"""
import argparse
import os.path as osp
import sys

from pcka_det.export import export_student


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint', help='FeatureDistiller checkpoint')
    parser.add_argument('out', help='student-only checkpoint to write')
    parser.add_argument('--force', action='store_true',
                        help='replace OUT if it exists')
    args = parser.parse_args(argv)
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
