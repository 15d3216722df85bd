"""Check a training config before training: ``python -m pcka_det.check``
(recipe, teacher quality, one training step, cost; exit 1 on a failure).

Example:
    python tools/check.py configs/pcka/retina_r101_r50.py --num-images 50
"""
import sys

from pcka_det.check import main

if __name__ == '__main__':
    sys.exit(main())
