"""Forward hooks that record the output of a named sub-module."""
import contextlib
import difflib
from typing import Any, Iterable, Optional, Sequence, Union

from torch import Tensor, nn

from ..options import (REQUIRED, Contract, Option, OptionError, declare,
                       validate)

CONTRACT = declare(Contract(
    'Recorder', 'model.recorders.<name>',
    'What a recorder records on each model (no type key: each entry of '
    'recorders is one; a string is the same path on both sides).',
    options=(
        Option('student', 'str', REQUIRED, 'dotted module path on the '
               'student (neck, backbone.layer3, bbox_head.cls_convs.1)'),
        Option('teacher', 'str', REQUIRED, 'dotted module path on the '
               'teacher'),
        Option('per_call', 'bool', False, 'keep every call\'s output (a '
               'head module shared across FPN levels; index = the call)'),
    )))


def recorder_sources(name: str, entry: Union[str, dict]) -> dict:
    """A ``recorders`` entry, checked against its contract.

    Args:
        name (str): Its key in ``model.recorders``.
        entry (str | dict): A module path for both sides, or
            ``dict(student=, teacher=[, per_call=])``.

    Returns:
        dict: ``student``, ``teacher`` and ``per_call``.

    Raises:
        OptionError: Naming ``model.recorders.<name>``.
    """
    if isinstance(entry, str):
        entry = dict(student=entry, teacher=entry)
    where = f'model.recorders.{name}'
    if not isinstance(entry, dict):
        raise OptionError(
            f'{where} = {entry!r}: must be a module path or dict('
            'student=<path>, teacher=<path>[, per_call=True]) '
            '(docs/options.md)')
    return validate('Recorder', dict(entry), where)


def get_module(model: nn.Module, path: str, owner: str = 'model',
               what: str = 'Recorder source') -> nn.Module:
    """Find ``model.<path>`` or raise a ``ValueError`` listing valid names.

    Args:
        model (nn.Module): Model to search.
        path (str): Dotted module path, e.g. ``'neck'`` or
            ``'backbone.layer3'``.
        owner (str): How to call ``model`` in the error message.
        what (str): What ``path`` is, for the message (``'Recorder
            source'``, ``'inherit'``...).

    Returns:
        nn.Module: The sub-module.
    """
    modules = dict(model.named_modules())
    if path not in modules:
        names = [n for n in modules if n]
        top = sorted({n.split('.')[0] for n in names})
        close = difflib.get_close_matches(path, names, n=5)
        raise ValueError(
            f'{what} "{path}" is not a module of the {owner}. '
            f'Did you mean one of {close}? Top-level modules: {top}.')
    return modules[path]


class ModuleOutputRecorder:
    """Record what a module returns, while armed by :func:`recording`.

    The output of FPN necks is a tuple with one tensor per level;
    ``get(index)`` picks one. Outside a ``recording`` block nothing is kept
    (validation forwards record nothing). A module that runs more than once
    in one block (a head conv shared across FPN levels) is an error, not a
    silent "last call wins", unless ``per_call``: then every call's output
    is kept, in call order, and ``get(index)`` picks the call (for a
    detection head, the FPN level).

    Args:
        source (str): Dotted path of the module to hook.
        per_call (bool): Keep the output of every call as a list.
    """

    def __init__(self, source: str, per_call: bool = False) -> None:
        self.source = source
        self.per_call = per_call
        self.data: Optional[Union[Tensor, Sequence[Tensor]]] = None
        self.armed = 0  # depth of nested ``recording`` blocks
        self._handle = None

    def attach(self, model: nn.Module, owner: str = 'model') -> None:
        """Register the forward hook on ``model.<source>``."""
        self.detach()
        module = get_module(model, self.source, owner)
        self._handle = module.register_forward_hook(self._hook)

    def detach(self) -> None:
        """Remove the hook."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if not self.armed:
            return
        if self.per_call:
            self.data = [*(self.data or []), output]
            return
        if self.data is not None:
            raise RuntimeError(
                f'Recorder source "{self.source}" ran more than once in one '
                'forward pass (e.g. a head conv shared across FPN levels), '
                'so one recording cannot say which call to distil. Record a '
                'module that runs once per forward, such as "neck" or a '
                'backbone stage, or record every call with '
                'recorders=dict(<name>=dict(student=..., teacher=..., '
                'per_call=True)) and pick the call with the level\'s index.')
        self.data = output

    def reset(self) -> None:
        """Forget the last recorded output."""
        self.data = None

    def get(self, index: Optional[int] = None) -> Tensor:
        """Return the recorded output, or its ``index``-th element.

        Args:
            index (int, optional): Level index into a tuple/list output;
                required for one.

        Returns:
            Tensor: The recorded tensor.
        """
        if self.data is None:
            raise RuntimeError(
                f'Nothing recorded from "{self.source}": the module did not '
                'run in this forward pass, or it ran outside a recording '
                'block.')
        if index is None:
            if isinstance(self.data, (tuple, list)):
                shapes = [tuple(getattr(d, 'shape', ())) for d in self.data]
                raise IndexError(
                    f'"{self.source}" returns {len(self.data)} outputs '
                    f'(shapes {shapes}), so index=None is ambiguous; set '
                    f'index to one of 0..{len(self.data) - 1}.')
            return self.data
        if not isinstance(self.data, (tuple, list)):
            raise IndexError(
                f'"{self.source}" returns a single {type(self.data).__name__}'
                f', so level index {index} is invalid; leave index unset.')
        if not -len(self.data) <= index < len(self.data):
            raise IndexError(
                f'Level index {index} is out of range: "{self.source}" '
                f'produces {len(self.data)} levels (0..{len(self.data) - 1}).')
        return self.data[index]


@contextlib.contextmanager
def recording(recorders: Iterable[ModuleOutputRecorder]):
    """Arm ``recorders`` for one forward pass; empty them on exit.

    Blocks may nest: the outermost one empties the recorders, so a caller
    can read what an inner block (e.g. ``FeatureDistiller.loss``) recorded.

    Args:
        recorders (Iterable[ModuleOutputRecorder]): Recorders to arm.
    """
    recorders = list(recorders)
    for r in recorders:
        if not r.armed:
            r.reset()
        r.armed += 1
    try:
        yield recorders
    finally:
        for r in recorders:
            r.armed -= 1
            if not r.armed:
                r.reset()
