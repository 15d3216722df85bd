"""Read checkpoints safely and fit their keys to the model they load into.

Two rules every load in pcka_det follows:

* A checkpoint fetched from a URL (a model-zoo teacher) is read with
  ``torch.load(weights_only=True)``: tensors, plain containers and an
  allow-list of numpy/MMEngine types, never arbitrary pickled objects. A
  local file the user points at (their own MMEngine training checkpoint,
  which holds a message hub and numpy meta) is read in full.
* Keys are mapped between a ``FeatureDistiller`` (student weights under
  ``student.``) and a plain detector, both ways, and a load that leaves more
  than :data:`MAX_UNMATCHED` keys unmatched is an error, not a warning.
"""
import glob
import os
import os.path as osp
import pickle
import re
from typing import Dict, Optional, Tuple
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

STUDENT_PREFIX = 'student.'

# A head re-sized for another number of classes leaves 2 (RetinaNet) to 4
# (Faster R-CNN) keys unmatched; a wrong or unmapped checkpoint leaves
# hundreds.
MAX_UNMATCHED = 8


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint from a URL holds more than weights."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file that is truncated or not a checkpoint at all."""


class CheckpointDownloadError(RuntimeError):
    """A checkpoint URL could not be fetched (no network, wrong address)."""


def is_url(path: str) -> bool:
    """Whether ``path`` names a remote or model-zoo checkpoint."""
    return '://' in path


def _safe_globals() -> list:
    """Types allowed in a checkpoint read with ``weights_only=True``.

    numpy arrays and scalars appear in the meta of MMDetection model-zoo
    checkpoints, ``HistoryBuffer`` in MMEngine's message hub. numpy 1.x
    pickles name ``numpy.core``, numpy 2 moved it to ``numpy._core``: both
    names are listed.
    """
    import numpy as np
    from mmengine.logging import HistoryBuffer
    core = np._core if hasattr(np, '_core') else np.core
    allowed = [np.ndarray, np.dtype, HistoryBuffer]
    for name in ('_reconstruct', 'scalar'):
        fn = getattr(core.multiarray, name)
        allowed += [fn, (fn, f'numpy.core.multiarray.{name}'),
                    (fn, f'numpy._core.multiarray.{name}')]
    allowed += [type(np.dtype(t)) for t in
                ('f2', 'f4', 'f8', 'i1', 'i2', 'i4', 'i8', 'u1', 'u4', 'u8',
                 'b1')]
    return allowed


def _download(url: str) -> str:
    """Fetch ``url`` into torch's hub cache, where MMEngine caches it too."""
    folder = osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(folder, exist_ok=True)
    path = osp.join(folder, osp.basename(urlparse(url).path))
    if not osp.isfile(path):
        try:
            torch.hub.download_url_to_file(url, path, progress=True)
        except Exception as e:  # URLError, HTTPError, timeouts, ...
            raise CheckpointDownloadError(
                f'download of "{url}" failed (no network?): '
                f'{type(e).__name__}: {e}. Download it elsewhere and put it '
                f'at {path}.') from e
    return path


def read_checkpoint(path: str, map_location='cpu') -> Dict:
    """Read a checkpoint file or URL (see the module docstring for the rules).

    Args:
        path (str): Local path, ``http(s)://`` URL, or another scheme
            MMEngine knows (``open-mmlab://``, ``torchvision://``, ...).
        map_location: As for ``torch.load``.

    Returns:
        dict: The checkpoint.

    Raises:
        FileNotFoundError: A local path that does not exist.
        IsADirectoryError: A local path that is a directory.
        CorruptCheckpointError: A local file torch cannot read.
        CheckpointDownloadError: A URL that cannot be fetched.
        UnsafeCheckpointError: A remote checkpoint that holds more than
            weights.
    """
    if path.startswith(('http://', 'https://')):
        local = _download(path)
        try:
            with torch.serialization.safe_globals(_safe_globals()):
                return torch.load(local, map_location=map_location,
                                  weights_only=True)
        except pickle.UnpicklingError as e:
            lines = [line for line in str(e).split('\n') if line.strip()]
            reason = next((line for line in lines if 'GLOBAL' in line),
                          lines[-1] if lines else '')[:300]
            raise UnsafeCheckpointError(
                f'Refused to load "{path}": checkpoints fetched from a URL are '
                'read with torch.load(weights_only=True), and this one holds '
                f'other pickled objects ({reason}). If you trust its source, '
                f'download it and pass the local file ({local}) instead.'
            ) from e
    if is_url(path):
        from mmengine.runner.checkpoint import CheckpointLoader

        # torch >= 2.6 reads these with weights_only=True by default
        try:
            return CheckpointLoader.load_checkpoint(path, map_location)
        except OSError as e:  # URLError is an OSError
            raise CheckpointDownloadError(
                f'download of "{path}" failed (no network?): '
                f'{type(e).__name__}: {e}.') from e
    if osp.isdir(path):
        raise IsADirectoryError(
            f'Checkpoint "{path}" is a directory, not a checkpoint file')
    if not osp.isfile(path):
        raise FileNotFoundError(f'Checkpoint "{path}" does not exist')
    # The user's own file, e.g. an MMEngine training checkpoint.
    return load_local(path, map_location)


def load_local(path: str, map_location='cpu') -> Dict:
    """``torch.load`` a local file; a truncated or foreign file is an error
    that names it.

    Args:
        path (str): An existing local file.
        map_location: As for ``torch.load``.

    Returns:
        dict: The checkpoint.

    Raises:
        CorruptCheckpointError: torch could not read it (a truncated zip
            archive, an empty file, not a PyTorch file).
    """
    try:
        return torch.load(path, map_location=map_location,
                          weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as e:
        size = osp.getsize(path)
        raise CorruptCheckpointError(
            f'Checkpoint "{path}" ({size} bytes) is truncated or corrupt: '
            f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
            '. A job killed while writing it leaves such a file; use the '
            'previous checkpoint.') from e


def newest_readable(folder: str, exclude: Optional[str] = None
                    ) -> Tuple[Optional[str], Optional[Dict]]:
    """The newest runner checkpoint in ``folder`` that torch can read.

    Candidates are ``epoch_*.pth`` and ``iter_*.pth``, newest (by
    modification time) first.

    Args:
        folder (str): A work dir.
        exclude (str, optional): A path not to consider (the broken one).

    Returns:
        tuple: ``(path, checkpoint)``, or ``(None, None)`` if none is
        readable.
    """
    paths = glob.glob(osp.join(folder, 'epoch_*.pth')) + glob.glob(
        osp.join(folder, 'iter_*.pth'))
    paths = [p for p in paths if exclude is None or
             osp.abspath(p) != osp.abspath(exclude)]
    for path in sorted(paths, key=osp.getmtime, reverse=True):
        try:
            return path, load_local(path)
        except CorruptCheckpointError:
            continue
    return None, None


def state_dict_of(checkpoint, source: str) -> Dict[str, Tensor]:
    """The weights of a checkpoint, ``module.`` prefixes (DDP) removed.

    Args:
        checkpoint: What :func:`read_checkpoint` returned.
        source (str): The file, for error messages.

    Returns:
        dict: Key -> tensor.
    """
    state = (checkpoint.get('state_dict', checkpoint)
             if isinstance(checkpoint, dict) else None)
    if not isinstance(state, dict):
        raise RuntimeError(f'Checkpoint "{source}" holds no state_dict')
    return {k[7:] if k.startswith('module.') else k: v
            for k, v in state.items()}


def student_state(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The ``student.`` weights of a distiller state dict, unprefixed."""
    return {k[len(STUDENT_PREFIX):]: v for k, v in state.items()
            if k.startswith(STUDENT_PREFIX)}


def has_student(state: Dict[str, Tensor]) -> bool:
    """Whether a state dict is a distiller's (it holds ``student.`` keys)."""
    return any(k.startswith(STUDENT_PREFIX) for k in state)


def fit_keys(model: nn.Module,
             state: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], str]:
    """Rename ``state``'s keys for ``model``.

    A student-only (plain detector) checkpoint loaded into a distiller goes
    under ``student.``; a distiller checkpoint loaded into a plain detector
    gives its ``student.`` weights (connectors are dropped).

    Args:
        model (nn.Module): Model to load into.
        state (dict): Its weights to be.

    Returns:
        tuple[dict, str]: The renamed state dict and a note on what was
        mapped ('' when nothing was).
    """
    model_is_distiller = has_student(model.state_dict())
    if model_is_distiller and not has_student(state):
        return ({STUDENT_PREFIX + k: v for k, v in state.items()},
                'a detector checkpoint, loaded into the distiller\'s student')
    if not model_is_distiller and has_student(state):
        return (student_state(state),
                'a distiller checkpoint: its student\'s weights are loaded')
    return state, ''


def mismatch(model: nn.Module, state: Dict[str, Tensor],
             only: Optional[str] = None) -> Tuple[int, str]:
    """Count and describe how ``state`` fails to fit ``model``.

    Args:
        model (nn.Module): The model to load into.
        state (dict): A state dict with the model's own key names.
        only (str, optional): Count only the model keys with this prefix as
            missing (e.g. ``'student.'``: a distiller's connectors may start
            fresh when the checkpoint holds a student alone).

    Returns:
        tuple[int, str]: The number of unmatched keys (missing, unexpected
        and shape-mismatched) and their counts and first names ('' if 0).
    """
    own = model.state_dict()
    missing = sorted(k for k in set(own) - set(state)
                     if only is None or k.startswith(only))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state)
                        if tuple(own[k].shape) != tuple(state[k].shape))
    total = len(missing) + len(unexpected) + len(mismatched)
    if not total:
        return 0, ''

    def head(keys):
        return f'{keys[:8]}{" ..." if len(keys) > 8 else ""}'

    return total, (f'{len(missing)} missing keys {head(missing)}, '
                   f'{len(unexpected)} unexpected keys {head(unexpected)}, '
                   f'{len(mismatched)} shape mismatches {head(mismatched)}')


def fit_state_dict(model: nn.Module, state: Dict[str, Tensor], source: str,
                   max_unmatched: int = MAX_UNMATCHED, map_keys: bool = True,
                   what: Optional[str] = None
                   ) -> Tuple[Dict[str, Tensor], str]:
    """Map ``state``'s keys to ``model`` and refuse a load that would not fit.

    Args:
        model (nn.Module): Model to load into (unwrapped from DDP).
        state (dict): Checkpoint weights.
        source (str): The checkpoint, for messages.
        max_unmatched (int): Most unmatched keys tolerated.
        map_keys (bool): Map between distiller and plain-detector keys
            (:func:`fit_keys`).
        what (str, optional): How to name the model in the error (default:
            "the <class> of this config").

    Returns:
        tuple[dict, str]: The state dict to load and the mapping note.

    Raises:
        RuntimeError: More than ``max_unmatched`` keys unmatched.
    """
    state, note = fit_keys(model, state) if map_keys else (state, '')
    only = STUDENT_PREFIX if note.startswith('a detector') else None
    count, problem = mismatch(model, state, only)
    if count > max_unmatched:
        what = what or f'the {type(model).__name__} of this config'
        raise RuntimeError(
            f'Checkpoint "{source}" does not fit {what}: {problem}. Is the '
            'config the one the checkpoint was trained with?' +
            (f' (It was read as {note}.)' if note else ''))
    return state, note


def fit_checkpoint(model: nn.Module, checkpoint: Dict, source: str,
                   max_unmatched: int = MAX_UNMATCHED, map_keys: bool = True,
                   revise_keys=((r'^module\.', ''), ),
                   what: Optional[str] = None
                   ) -> Tuple[Dict[str, Tensor], str]:
    """The weights of ``checkpoint`` as ``model`` names them, checked.

    :func:`state_dict_of`, then ``revise_keys`` (``(pattern, replacement)``
    pairs, as in MMEngine), then :func:`fit_state_dict`.

    Args:
        model (nn.Module): Model to load into (unwrapped from DDP).
        checkpoint (dict): What :func:`read_checkpoint` returned.
        source (str): The checkpoint, for messages.
        max_unmatched (int): Most unmatched keys tolerated.
        map_keys (bool): Map between distiller and plain-detector keys.
        revise_keys (Sequence[tuple]): Key rewrites applied first.
        what (str, optional): How to name the model in errors.

    Returns:
        tuple[dict, str]: The state dict to load and the mapping note.
    """
    state = state_dict_of(checkpoint, source)
    for pattern, replacement in revise_keys:
        state = {re.sub(pattern, replacement, k): v for k, v in state.items()}
    return fit_state_dict(model, state, source, max_unmatched, map_keys, what)


def load_weights(model: nn.Module, path: str,
                 max_unmatched: int = MAX_UNMATCHED, map_keys: bool = True,
                 what: Optional[str] = None) -> str:
    """Read ``path``, map and check its keys, and load it into ``model``:
    the one way pcka_det loads weights outside the runner.

    Args:
        model (nn.Module): Model to load into.
        path (str): Local path or URL (see :func:`read_checkpoint`).
        max_unmatched (int): Most unmatched keys tolerated (0: strict).
        map_keys (bool): Map between distiller and plain-detector keys.
        what (str, optional): How to name the model in errors.

    Returns:
        str: The mapping note ('' when nothing was mapped).
    """
    state, note = fit_checkpoint(model, read_checkpoint(path), path,
                                 max_unmatched, map_keys, what=what)
    model.load_state_dict(state, strict=max_unmatched == 0)
    return note
