"""Write the student of a distiller checkpoint as a plain mmdet checkpoint.

Example:
    python tools/export_student.py work_dirs/x/epoch_24.pth student.pth
    python tools/test.py mmdet::retinanet/retinanet_r50_fpn_2x_coco.py \
        student.pth
"""
import argparse

from pcka_det.export import export_student


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint', help='FeatureDistiller checkpoint')
    parser.add_argument('out', help='student-only checkpoint to write')
    args = parser.parse_args()
    print(f'Student checkpoint written to '
          f'{export_student(args.checkpoint, args.out)}')


if __name__ == '__main__':
    main()
