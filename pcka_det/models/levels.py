"""What a distilled level is: the one parsed, validated form of a
``distill_losses`` entry.

A *level* pairs one student feature with one teacher feature and compares
them with one loss: each side's recorder (a module whose output is
recorded) and the output index on that side, an optional connector that
maps the student's feature to the teacher's width, an optional resize, and
the loss. A *head level* (``head_conv`` set) pairs the two dense heads
instead, CrossKD-style: the student's head features after tower conv k go
through the teacher's head (:mod:`pcka_det.models.cross_head`), and its
terms are logged per FPN level. :func:`parse_levels` turns the
``distill_losses`` dict of a :class:`~pcka_det.models.FeatureDistiller`
config into
:class:`DistillLevel` objects, refusing what would fail later or train
nothing; every consumer (the distiller, ``pcka_det.check``, the
benchmarks, the CKA report) reads the levels from
:attr:`FeatureDistiller.levels` and the paired features from
:meth:`FeatureDistiller.record`.

Example:
    >>> levels = parse_levels(
    ...     dict(pcka_p3=dict(recorder='fpn', index=0,
    ...                       loss=dict(type='PatchCKALoss'))),
    ...     recorders=['fpn'])
    >>> levels[0].student_index, levels[0].log_keys
    (0, ('loss_pcka_p3',))
"""
import copy
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from ..options import REQUIRED, Contract, Option, Rule, declare, validate

SPEC_KEYS = ('loss', 'recorder', 'index', 'connector', 'resize', 'head_conv')
# what a head level does not take: it reads the dense heads, not a recorder
FEATURE_KEYS = ('recorder', 'index', 'connector', 'resize')
RESIZE_MODES = ('bilinear', 'nearest')
SIDES = ('student', 'teacher')

CONTRACT = declare(Contract(
    'DistillLevel', 'model.distill_losses.<level>',
    'One distilled level: which features are paired, and the loss between '
    'them (no type key: each entry of distill_losses is one).',
    options=(
        Option('loss', 'dict', REQUIRED, 'the loss config, dict(type=...)'),
        Option('recorder', 'str', 'neck', 'a key of model.recorders'),
        Option('index', 'any', None, 'output index on both sides (an FPN '
               'level; the call of a per_call recorder), or dict(student=i, '
               'teacher=j); None for a single tensor', nullable=True),
        Option('connector', 'dict', None, 'maps the student feature to the '
               'teacher\'s width (ConvConnector)', nullable=True),
        Option('resize', 'str', None, 'resize the student feature to the '
               'teacher\'s size; None: sizes must match',
               choices=RESIZE_MODES, nullable=True,
               examples=('bilinear', )),
        Option('head_conv', 'int', None, 'a head level (CrossKD, loss '
               'CrossKDLoss/CrossKDGFLLoss): the student\'s dense-head '
               'features after tower conv k (1-based; 0: the neck output) '
               'go through the teacher\'s head from conv k on; None: a '
               'feature level', low=0, nullable=True),
    ),
    rules=(Rule('one-loss-type-per-level', 'two entries with the same '
                'recorder, indices and loss type are refused: a copy-paste '
                'index distils one level twice and another not at all',
                lambda v: None),
           Rule('one-head-level', 'at most one entry sets head_conv, and '
                'it takes no recorder, index, connector or resize',
                lambda v: None))))


def loss_key(name: str) -> str:
    """The log key of a distillation loss named ``name``: ``loss_<name>``,
    or ``name`` itself when it already starts with ``loss`` (MMEngine sums
    every logged value whose key contains ``loss``)."""
    return name if name.startswith('loss') else f'loss_{name}'


@dataclass(frozen=True)
class DistillLevel:
    """One distilled level, as parsed from its ``distill_losses`` entry.

    Attributes:
        name (str): Key of ``distill_losses``.
        recorder (str, optional): Recorder name (a key of the distiller's
            ``recorders``), the same on both sides; None for a head level.
        student_index (int, optional): Output index on the student's
            recorded module (a level of an FPN tuple, or the call of a
            module recorded per call); None for a single tensor.
        teacher_index (int, optional): The same on the teacher's side.
        loss (dict): The loss config.
        connector (dict, optional): The connector config (student width ->
            teacher width), or None.
        resize (str, optional): ``'bilinear'`` or ``'nearest'`` to resize
            the student's feature to the teacher's spatial size, or None
            (sizes must match).
        log_keys (tuple[str]): Keys the level's terms are logged under,
            each a loss summed into the total: one for a feature level;
            for a head level ``loss_<name>_cls_p3``, ``loss_<name>_box_p3``,
            ... per FPN level (empty until the distiller knows the heads'
            levels).
        head_conv (int, optional): For a head level (CrossKD), k: the
            dense heads' tower conv whose output (before its activation) is
            paired, 0 for the neck output; None for a feature level. A head
            level's ``recorder`` and indices are None.
    """

    name: str
    recorder: Optional[str]
    student_index: Optional[int]
    teacher_index: Optional[int]
    loss: dict = field(compare=False)
    connector: Optional[dict] = field(default=None, compare=False)
    resize: Optional[str] = None
    log_keys: Tuple[str, ...] = ()
    head_conv: Optional[int] = None

    @property
    def is_head(self) -> bool:
        """Whether the level pairs the dense heads (CrossKD), not two
        recorded features."""
        return self.head_conv is not None

    def index(self, side: str) -> Optional[int]:
        """The output index on ``side`` (``'student'`` or ``'teacher'``)."""
        return self.student_index if side == 'student' else self.teacher_index


def _parse_index(key: str, index) -> Tuple[Optional[int], Optional[int]]:
    """``index`` (an int, None, or ``dict(student=i, teacher=j)``) as the
    (student, teacher) pair."""
    if isinstance(index, dict):
        unknown = sorted(set(index) - set(SIDES))
        if unknown or set(index) != set(SIDES):
            raise ValueError(
                f'{key}: a per-side index must be dict(student=..., '
                f'teacher=...), got keys {sorted(index)}.')
        pair = (index['student'], index['teacher'])
    else:
        pair = (index, index)
    for side, value in zip(SIDES, pair):
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, int)):
            raise ValueError(
                f'{key}: index must be an integer level or None (or '
                f'dict(student=..., teacher=...)), got {value!r} on the '
                f'{side} side.')
    return pair


def parse_level(name: str, spec: dict, recorders: Iterable[str],
                all_names: Iterable[str] = ()) -> DistillLevel:
    """Parse and validate one ``distill_losses`` entry.

    Args:
        name (str): Its key in ``distill_losses``.
        spec (dict): ``dict(loss=<loss cfg>, recorder=<name>, index=<int,
            None or dict(student=, teacher=)>, connector=<cfg or None>,
            resize=None)``.
        recorders (Iterable[str]): The recorder names that exist.
        all_names (Iterable[str]): Every key of ``distill_losses``, for
            the messages.

    Returns:
        DistillLevel: The level.

    Raises:
        ValueError: Naming the key, the value and the fix.
    """
    key = f'distill_losses.{name}'
    names = sorted(all_names)
    if not isinstance(spec, dict):
        raise ValueError(f'{key} must be a dict(loss=..., recorder='
                         f'..., index=...), got {spec!r}')
    spec = copy.deepcopy(dict(spec))
    if 'type' in spec and 'loss' not in spec:
        raise ValueError(
            f'{key} is a loss config; a loss spec must be dict('
            f'loss=dict(type={spec["type"]!r}, ...), recorder=..., '
            'index=...).')
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f'{key}: unknown key(s) {unknown}; a loss spec '
                         f'takes {list(SPEC_KEYS)}.')
    if not isinstance(spec.get('loss'), dict) or 'type' not in spec['loss']:
        raise ValueError(
            f'{key} needs loss=dict(type=..., ...); got '
            f'{spec.get("loss")!r}. (An override of an inherited '
            f'loss must use its exact name: {names}.)')
    if spec.get('head_conv') is not None:
        return _parse_head_level(name, key, spec)
    recorder = spec.get('recorder', 'neck')
    recorders = sorted(recorders)
    if recorder not in recorders:
        raise ValueError(f'{key} uses recorder "{recorder}", but the '
                         f'recorders are {recorders}')
    validate('DistillLevel', spec, key)
    student_index, teacher_index = _parse_index(key, spec.get('index'))
    resize = spec.get('resize')
    if resize is not None and resize not in RESIZE_MODES:
        raise ValueError(f'{key}: resize must be None or one of '
                         f'{RESIZE_MODES}, got {resize!r}')
    return DistillLevel(
        name=name, recorder=recorder, student_index=student_index,
        teacher_index=teacher_index, loss=spec['loss'],
        connector=spec.get('connector'), resize=resize,
        log_keys=(loss_key(name), ))


def _parse_head_level(name: str, key: str, spec: dict) -> DistillLevel:
    """A ``distill_losses`` entry with ``head_conv``: a head level."""
    validate('DistillLevel', spec, key)
    extra = sorted(k for k in FEATURE_KEYS if k in spec)
    if extra:
        raise ValueError(
            f'{key} sets head_conv, so it pairs the dense heads (CrossKD) '
            f'and takes no {extra} (rule "one-head-level"): drop them, or '
            'drop head_conv for a feature level.')
    return DistillLevel(
        name=name, recorder=None, student_index=None, teacher_index=None,
        loss=spec['loss'], head_conv=spec['head_conv'])


def parse_levels(distill_losses: Dict[str, dict],
                 recorders: Iterable[str]) -> List[DistillLevel]:
    """Parse every ``distill_losses`` entry (see :func:`parse_level`).

    Also refuses two keys that differ only in case (a child config's
    override under another case adds a level instead of changing one) and
    an empty dict (the teacher would run every step and teach nothing).

    Args:
        distill_losses (dict): ``name -> spec``.
        recorders (Iterable[str]): The recorder names that exist.

    Returns:
        list[DistillLevel]: In the dict's order.
    """
    distill_losses = dict(distill_losses or {})
    if not distill_losses:
        raise ValueError(
            'FeatureDistiller: distill_losses is empty, so the teacher '
            'would run every step and teach nothing. Configure at least '
            'one loss, or train the plain student config instead.')
    recorders = list(recorders)
    folded: Dict[str, List[str]] = {}
    for name in distill_losses:
        folded.setdefault(name.lower(), []).append(name)
    levels = []
    for name, spec in distill_losses.items():
        twins = [n for n in folded[name.lower()] if n != name]
        if twins:
            raise ValueError(
                f'distill_losses.{name} and distill_losses.{twins[0]} differ '
                'only in case. Keys are case-sensitive: an override of an '
                'inherited loss under another case adds a new entry instead '
                'of changing it. Use the inherited name (one of '
                f'{sorted(distill_losses)}).')
        levels.append(parse_level(name, spec, recorders, distill_losses))
    heads = [level.name for level in levels if level.is_head]
    if len(heads) > 1:
        raise ValueError(
            f'distill_losses: {heads} all set head_conv; one head level '
            'distils the dense heads at one conv (rule "one-head-level"). '
            'Keep one.')
    seen: Dict[tuple, str] = {}
    for level in levels:
        if level.is_head:
            continue
        # the same features compared by the same loss: a copy-paste index
        key = (level.recorder, level.student_index, level.teacher_index,
               _loss_type(level.loss))
        if key in seen:
            raise ValueError(
                f'distill_losses.{level.name} distils the same level as '
                f'distill_losses.{seen[key]} (recorder "{level.recorder}", '
                f'index {level.student_index}, loss {key[3]}): one level '
                'would count twice and another, probably, not at all. Fix '
                'its index (one loss type at most once per level).')
        seen[key] = level.name
    return levels


def _loss_type(loss: dict) -> str:
    """A loss config's type as a name (it may be a class)."""
    kind = loss.get('type')
    return kind.__name__ if isinstance(kind, type) else str(kind)


FeaturePairs = Dict[str, Tuple[object, object]]
"""``level name -> (student feature, teacher feature)`` as recorded."""
