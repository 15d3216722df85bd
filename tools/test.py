"""Test (and evaluate) a detector or a distiller: ``python -m pcka_det.test``, which
takes MMDetection's tools/test.py flags.

Example:
    python tools/test.py configs/pcka/retina_r101_r50.py epoch_24.pth
"""
from pcka_det.test import main

if __name__ == '__main__':
    main()
