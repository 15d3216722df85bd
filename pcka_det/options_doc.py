"""``docs/options.md``, generated from the option contracts of
:mod:`pcka_det.options`.

Example:
    python -m pcka_det.options_doc            # print the reference
    python -m pcka_det.options_doc --write    # write docs/options.md
"""
import argparse
import importlib
import os.path as osp
import sys
from typing import List, Optional, Sequence

from .options import COMMANDS, CONTRACTS, REQUIRED, Contract


def _section(c: Contract, title: str, where: str = 'Set in') -> List[str]:
    lines = ['', title, '', f'{c.doc} {where}: `{c.where}`.', '',
             '| option | allowed | default | meaning |', '|---|---|---|---|']
    for o in c.options:
        default = 'required' if o.default is REQUIRED else \
            f'`{o.default!r}`'
        lines.append(f'| `{o.name}` | {o.allowed()} | {default} | '
                     f'{o.doc} |')
    if c.rules or c.run_rules:
        lines += ['', 'Rules:', '']
        lines += [f'- `{r.name}`: {r.doc}' for r in c.rules]
        lines += [f'- `{n}` (at run): {d}' for n, d in c.run_rules]
    return lines


def markdown() -> str:
    """The options reference, generated from the contracts (the
    commands' modules are imported: they declare their flags)."""
    for module in COMMANDS:
        importlib.import_module(module)
    lines = [
        '# Options reference',
        '',
        'Generated from the contracts in `pcka_det/options.py` by',
        '`python -m pcka_det.options_doc --write`; a test fails when this file '
        'and the',
        'contracts differ. Each component checks its options when it is '
        'built, before',
        'any compute; the rules "at run" are checked when the run exists '
        '(before the',
        'first step).',
    ]
    for name in sorted(set(CONTRACTS) - set(COMMANDS)):
        lines += _section(CONTRACTS[name], f'## `{name}`')
    lines += ['', '# Command-line flags', '',
              'Each command checks its flags after parsing, before loading '
              'anything;', 'a refused value ends it as argparse does '
              '(usage, the reason, exit status 2).']
    for name in COMMANDS:
        lines += _section(CONTRACTS[name], f'## `python -m {name}`',
                          'Run as')
    return '\n'.join(lines) + '\n'


DOC = osp.join('docs', 'options.md')


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the reference, or ``--write`` it to ``docs/options.md`` under
    ``--root`` (default: the current directory)."""
    import pcka_det  # noqa: F401  (the components declare their contracts)
    parser = argparse.ArgumentParser(
        description='Print or write the options reference.')
    parser.add_argument('--write', action='store_true')
    parser.add_argument('--root', default='.')
    args = parser.parse_args(argv)
    text = markdown()
    if args.write:
        from .fileio import atomic_write_text
        atomic_write_text(osp.join(args.root, DOC), text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
