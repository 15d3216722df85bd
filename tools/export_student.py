"""Write the student of a distiller checkpoint as a plain mmdet checkpoint:
``python -m pcka_det.export``; refuses to replace an existing file (e.g.
``CKPT CKPT``) unless ``--force``.

Example:
    python tools/export_student.py work_dirs/x/epoch_24.pth student.pth
    python tools/test.py mmdet::retinanet/retinanet_r50_fpn_2x_coco.py \\
        student.pth
"""
import sys

from pcka_det.export import main

if __name__ == '__main__':
    sys.exit(main())
