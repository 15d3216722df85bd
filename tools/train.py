"""Train a detector or a distiller: ``python -m pcka_det.train``, which
takes MMDetection's tools/train.py flags.

Example:
    python tools/train.py configs/pcka/retina_r101_r50.py
"""
from pcka_det.train import main

if __name__ == '__main__':
    main()
