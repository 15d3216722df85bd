"""The process's global random states: saved into checkpoints, restored on
resume, kept around side computations (``pcka_det.check``, validation)."""
import random
from typing import Dict

import numpy as np
import torch


def rng_state() -> Dict:
    """The global random states the data pipeline and the model draw from:
    Python's, NumPy's, torch's (CPU and every CUDA device)."""
    state = dict(python=random.getstate(), numpy=np.random.get_state(),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        # as many devices as both the saving and this process see
        for i, cuda in enumerate(state['cuda'][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda, i)
