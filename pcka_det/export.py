"""Turn a distiller checkpoint into a student checkpoint plain mmdet loads."""
from typing import Dict

from .checkpoint import read_checkpoint, student_state
from .fileio import atomic_torch_save


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
