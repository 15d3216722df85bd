"""Every option of our components, declared once: its type, allowed values
or range, default and meaning, and the rules between options.

A :class:`Contract` per component (registered type name) holds its
:class:`Option` rows and its cross-field :class:`Rule` s. The component
validates its arguments against its contract when it is built
(:func:`validate`), so a bad value fails before any compute with a message
that names the key, the value, the rule and the fix; ``docs/options.md`` is
generated from the same table (``python -m pcka_det.options_doc --write``) and
a test fails when the two drift, or when a component takes an argument its
contract does not declare.

Why a table of our own and not a validation library: MMEngine configs are
nested ``ConfigDict`` s whose ``type`` may be a class or a string, whose
values are checked by the components MMEngine builds (in its registries,
with its own defaults), and some rules need the run (its length, the
checkpoint it resumes); a library such as pydantic would need a model per
component beside the component's own signature and would not reach the
run-time rules. One small table, read by the components, the docs and the
tests, does.

Example:
    >>> validate('DistillLossScheduleHook', dict(min_factor=1.5))
    Traceback (most recent call last):
    ...
    pcka_det.options.OptionError: DistillLossScheduleHook.min_factor = 1.5: ...
"""
import argparse
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple


class OptionError(ValueError):
    """A value an option's contract refuses."""


@dataclass(frozen=True)
class Option:
    """One option of a component.

    Attributes:
        name (str): The argument's name.
        kind (str): ``'int'``, ``'float'``, ``'bool'``, ``'str'``,
            ``'dict'``, ``'list'`` or ``'any'``.
        default: The default (``REQUIRED`` for a required option).
        doc (str): One line of meaning.
        choices (tuple, optional): The allowed values.
        low (float, optional): Smallest allowed value (inclusive).
        high (float, optional): Largest allowed value (inclusive).
        nullable (bool): None is allowed.
        examples (tuple): Other values a user sets, run by the generated
            options test through ``tools/train.py`` (besides the default).
    """

    name: str
    kind: str
    default: Any
    doc: str
    choices: Optional[Tuple] = None
    low: Optional[float] = None
    high: Optional[float] = None
    nullable: bool = False
    examples: Tuple = ()

    def allowed(self) -> str:
        """The allowed values, as the reference shows them."""
        if self.choices is not None:
            text = ', '.join(repr(c) for c in self.choices)
        elif self.low is not None or self.high is not None:
            low = '-inf' if self.low is None else f'{self.low:g}'
            high = 'inf' if self.high is None else f'{self.high:g}'
            text = f'{self.kind} in [{low}, {high}]'
        else:
            text = self.kind
        return text + (' or None' if self.nullable else '')

    def refused_example(self):
        """A value the option refuses (the generated refusal rows), or
        None when none follows from its declaration."""
        if self.choices is not None:
            return 'not-a-choice'
        if self.kind in ('int', 'float') and self.low is not None:
            return type(self.low)(self.low) - 1
        if self.kind in ('int', 'float') and self.high is not None:
            return self.high + 1
        if self.kind == 'bool':
            return 'yes'
        return None

    def check(self, value) -> Optional[str]:
        """Why ``value`` is refused, or None."""
        if value is None:
            return None if self.nullable else 'None is not allowed'
        if self.choices is not None:
            return None if value in self.choices else \
                f'must be one of {list(self.choices)}'
        if self.kind in ('int', 'float'):
            whole = self.kind == 'int'
            if isinstance(value, bool) or not isinstance(
                    value, numbers.Integral if whole else numbers.Real):
                return (f'must be {"an integer" if whole else "a number"}, '
                        f'not {type(value).__name__}')
            if not math.isfinite(value):
                return 'must be finite'
            if self.low is not None and value < self.low:
                return f'must be >= {self.low:g}'
            if self.high is not None and value > self.high:
                return f'must be <= {self.high:g}'
            return None
        kinds = dict(bool=bool, str=str, dict=dict, list=(list, tuple))
        if self.kind in kinds and not isinstance(value, kinds[self.kind]):
            return f'must be a {self.kind}, not {type(value).__name__}'
        return None


@dataclass(frozen=True)
class Rule:
    """A rule between a component's options.

    Attributes:
        name (str): Short name, shown in messages and the reference.
        doc (str): One line: what it refuses and why.
        check (callable): ``values -> message or None``; ``values`` holds
            every option (defaults filled in).
    """

    name: str
    doc: str
    check: Callable[[Dict[str, Any]], Optional[str]] = field(compare=False)


@dataclass(frozen=True)
class Contract:
    """What a component accepts.

    Attributes:
        component (str): Its registered type name.
        where (str): Where a user sets it in a config.
        doc (str): One line.
        options (tuple[Option]): Its options, in signature order.
        rules (tuple[Rule]): Rules between them.
        run_rules (tuple[str]): Rules checked when the run exists (named,
            documented; the component checks them there).
    """

    component: str
    where: str
    doc: str
    options: Tuple[Option, ...]
    rules: Tuple[Rule, ...] = ()
    run_rules: Tuple[Tuple[str, str], ...] = ()

    def option(self, name: str) -> Option:
        """The option called ``name``."""
        return {o.name: o for o in self.options}[name]


REQUIRED = object()
CONTRACTS: Dict[str, Contract] = {}


def declare(contract: Contract) -> Contract:
    """Register ``contract`` under its component's name."""
    CONTRACTS[contract.component] = contract
    return contract


def validate(component: str, values: Dict[str, Any],
             where: Optional[str] = None) -> Dict[str, Any]:
    """Check ``values`` (a component's arguments) against its contract.

    Args:
        component (str): The registered type name.
        values (dict): The arguments given (unset ones take defaults).
        where (str, optional): The config key the component sits at, for
            the messages (default: the contract's ``where``).

    Returns:
        dict: Every option with its value (defaults filled in).

    Raises:
        OptionError: Naming the key, the value, the rule and the fix.
    """
    contract = CONTRACTS[component]
    where = where or contract.where
    known = {o.name: o for o in contract.options}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise OptionError(
            f'{where}: {component} has no option {unknown}; its options '
            f'are {sorted(known)} (docs/options.md).')
    full = {}
    for name, option in known.items():
        value = values.get(name, option.default)
        key = f'{where} {name}' if name.startswith('-') else f'{where}.{name}'
        if value is REQUIRED:
            raise OptionError(f'{key} is required: {option.doc}')
        problem = option.check(value)
        if problem:
            raise OptionError(
                f'{key} = {value!r}: {problem} '
                f'(allowed: {option.allowed()}; {component}: {option.doc}).')
        full[name] = value
    for rule in contract.rules:
        problem = rule.check(full)
        if problem:
            raise OptionError(f'{where}: {problem} (rule "{rule.name}": '
                              f'{rule.doc})')
    return full


# keys MMEngine reads itself from a component's config dict
_FRAMEWORK_KEYS = ('type', '_scope_', 'priority', '_delete_')


def validate_config(cfg: dict) -> int:
    """Validate every component of a config that has a contract, where it
    sits, before anything is built: each dict whose ``type`` names a
    declared component (a string, possibly scoped, or a class), with the
    config path in the messages (``model.distill_losses.pcka_p3.loss``).

    Args:
        cfg (dict): The whole config, CLI overrides applied.

    Returns:
        int: How many components were checked.

    Raises:
        OptionError: The first refused value or rule.
    """
    checked = 0

    def walk(node, path):
        nonlocal checked
        if isinstance(node, dict):
            kind = node.get('type')
            name = kind.__name__ if isinstance(kind, type) else (
                str(kind).rsplit('.', 1)[-1] if kind is not None else None)
            if name in CONTRACTS:
                validate(name, {k: v for k, v in node.items()
                                if k not in _FRAMEWORK_KEYS}, path)
                checked += 1
            for key, value in node.items():
                walk(value, f'{path}.{key}' if path else str(key))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f'{path}[{i}]')

    walk(dict(cfg), '')
    # the runner's own top-level keys
    runner = CONTRACTS.get('DistillRunner')
    own = {o.name: cfg[o.name] for o in runner.options if o.name in cfg} \
        if runner else {}
    if own:
        validate('DistillRunner', own, 'config')
        checked += 1
    return checked


# The commands users type: each declares its flags with
# :func:`command_contract` when imported (the reference imports them all).
COMMANDS = ('pcka_det.train', 'pcka_det.test', 'pcka_det.check',
            'pcka_det.new_config', 'pcka_det.export')


def _flag_actions(parser: argparse.ArgumentParser):
    return [a for a in parser._actions
            if not isinstance(a, argparse._HelpAction)]


def _flag(action: argparse.Action) -> str:
    longs = [s for s in action.option_strings if s.startswith('--')]
    return (longs or action.option_strings or [action.dest])[0]


def _flag_kind(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction,
                           argparse._StoreFalseAction)):
        return 'bool'
    if type(action).__name__ == 'DictAction':  # MMEngine's --cfg-options
        return 'dict'
    if action.nargs in ('+', '*') or isinstance(action.nargs, int):
        return 'list'
    return {int: 'int', float: 'float'}.get(action.type, 'str')


def command_contract(command: str, parser: argparse.ArgumentParser,
                     doc: str, bounds: Optional[Dict[str, Tuple]] = None,
                     rules: Tuple[Rule, ...] = ()) -> Contract:
    """Declare the flags of a command from its argparse parser: argparse
    already holds each flag's type, choices, default and help; ``bounds``
    adds the ranges argparse cannot state, ``rules`` the rules between
    flags. :func:`parse_command` then checks them after parsing.

    Args:
        command (str): The command's module (``pcka_det.train``).
        parser (ArgumentParser): Its parser.
        doc (str): One line: what the command does.
        bounds (dict, optional): ``{flag: (low, high)}``, inclusive, either
            None for unbounded.
        rules (tuple[Rule]): Rules between flags (``values`` keyed by flag).

    Returns:
        Contract: Registered under ``command``.

    Raises:
        ValueError: A flag without a help line (its documentation) or a
            bound on a flag the parser does not have.
    """
    bounds = dict(bounds or {})
    options = []
    for action in _flag_actions(parser):
        name = _flag(action)
        if not action.help or action.help == argparse.SUPPRESS:
            raise ValueError(f'{command}: {name} has no help line; every '
                             'flag is documented in docs/options.md')
        low, high = bounds.pop(name, (None, None))
        required = action.required or (not action.option_strings
                                        and action.nargs is None)
        options.append(Option(
            name, _flag_kind(action),
            REQUIRED if required else action.default,
            ' '.join(action.help.split()),
            choices=tuple(action.choices) if action.choices else None,
            low=low, high=high,
            nullable=not required and action.default is None))
    if bounds:
        raise ValueError(f'{command}: no flag {sorted(bounds)}')
    return declare(Contract(
        command, f'python -m {command}', doc, tuple(options), rules))


def parse_command(parser: argparse.ArgumentParser, command: str,
                  argv=None) -> argparse.Namespace:
    """Parse ``argv`` and check the flags against ``command``'s contract;
    a refused value ends the command as argparse does (usage, the message,
    exit status 2), before anything is loaded.

    Args:
        parser (ArgumentParser): The command's parser.
        command (str): The name its contract is declared under.
        argv (list, optional): Arguments (default ``sys.argv[1:]``).

    Returns:
        Namespace: The parsed flags.
    """
    args = parser.parse_args(argv)
    values = {_flag(a): getattr(args, a.dest) for a in _flag_actions(parser)}
    try:
        validate(command, values, where=command)
    except OptionError as e:
        parser.error(str(e))
    return args
