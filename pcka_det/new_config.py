"""Write a PCKA distillation config for any pair of MMDetection detectors.

``python -m pcka_det.new_config --teacher T.py --teacher-ckpt T.pth
--student S.py -o my_distill.py`` builds both detectors (random weights,
nothing downloaded), runs their backbone and neck on one dummy image at the
student's training scale, and writes a config like ``configs/pcka/*.py``,
``_base_`` on the student's config (its data, schedule and runtime are
kept):

* **levels**: the neck outputs both produce at the same stride, the first
  :data:`MAX_LEVELS` of them (the paper's configs distil FPN outputs 0-3);
* **connectors**: a 1x1 conv + BN (``ConvConnector``) where the student's
  width differs from the teacher's;
* **patches**: per level, the largest of 16, 8, 4, 2, 1 cells (16 is the
  paper's) that leaves at least 2 patches at the training scale;
* **weights**: the paper's, intra 10, plus inter 10 for a two-stage
  student, unless ``--weight`` is given.

A header comment says how each choice was made. Pairs it cannot pair (no
common stride, different class counts) are refused with the reason. Check
the result with ``python -m pcka_det.check`` before training.

Example:
    python -m pcka_det.new_config --teacher mmdet::retinanet/retinanet_r101_fpn_2x_coco.py \\
        --teacher-ckpt https://download.openmmlab.com/...pth \\
        --student mmdet::retinanet/retinanet_r50_fpn_2x_coco.py -o my_distill.py
"""
import argparse
import copy
import datetime
import math
import os
import os.path as osp
import shlex
import sys
import textwrap
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import nn

from .datasets import padded_training_scale
from .fileio import atomic_write_text
from .losses.patch_cka import patch_count
from .config_paths import resolve_config_path
from .models import build_detector, head_num_classes, smaller_teacher_warning
from .options import Rule, command_contract, parse_command

# The paper's configs distil FPN outputs 0-3.
MAX_LEVELS = 4
PATCH_SIZES = (16, 8, 4, 2, 1)  # 16 is the paper's
PAPER_WEIGHT = 10.0


class PairingError(ValueError):
    """The two detectors cannot be paired level by level."""


def level_shapes(detector: nn.Module,
                 size: Tuple[int, int]) -> List[Tuple[int, ...]]:
    """Shapes of a detector's ``extract_feat`` outputs on one dummy image.

    Args:
        detector (nn.Module): An mmdet detector (eval mode is set).
        size (tuple[int, int]): ``(H, W)`` of the image.

    Returns:
        list[tuple]: ``(1, C, h, w)`` per output level.
    """
    detector.eval()
    image = torch.randn(1, 3, *size,
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = detector.extract_feat(image)
    if isinstance(feats, torch.Tensor):
        feats = (feats, )
    return [tuple(f.shape) for f in feats]


def stride_of(shape: Sequence[int], size: Tuple[int, int]) -> int:
    """The power-of-two stride of a ``(1, C, h, w)`` level of a ``size``
    image."""
    return 2**round(math.log2(size[0] / shape[2]))


def patch_size_for(shape: Sequence[int], sizes=PATCH_SIZES) -> Optional[int]:
    """The largest of ``sizes`` leaving at least two patches on a level
    (a map resized up to a multiple of the patch, as PCKA does); None if
    none does (a 1x1 level)."""
    level = torch.empty(shape, device='meta')
    for p in sizes:
        if patch_count(level, p) >= 2:
            return p
    return None


def plan(teacher: nn.Module, student: nn.Module, size: Tuple[int, int],
         weight: Optional[float] = None,
         max_levels: int = MAX_LEVELS) -> Dict:
    """The distillation of ``student`` from ``teacher`` at ``size``.

    Args:
        teacher (nn.Module): Teacher detector.
        student (nn.Module): Student detector.
        size (tuple[int, int]): ``(H, W)`` of the student's (padded)
            training images.
        weight (float, optional): intra (and, two-stage, inter) weight;
            default the paper's 10.
        max_levels (int): Most levels distilled.

    Returns:
        dict: ``levels`` (per level: ``index`` (the student's output),
        ``teacher_index``, ``stride``, ``student`` and
        ``teacher`` shapes, ``patch_size``, ``connector`` (student, teacher
        widths) or None), ``intra_weight``, ``inter_weight``, ``dropped``
        (``(stride, reason)``), ``recorder`` (per side, ``'neck'`` or
        ``'backbone'``: where its ``extract_feat`` output comes from),
        ``two_stage``, the strides of both necks and ``weight_given``.

    Raises:
        PairingError: No stride in common, different class counts.
    """
    t_classes, s_classes = head_num_classes(teacher), head_num_classes(
        student)
    if t_classes != s_classes:
        raise PairingError(
            f'the teacher predicts {t_classes} classes and the student '
            f'{s_classes}: they are not trained on the same dataset. Set '
            'num_classes (and the dataset\'s metainfo.classes) of both '
            'configs to your dataset\'s.')
    t_shapes = level_shapes(teacher, size)
    s_shapes = level_shapes(student, size)
    t_strides = [stride_of(s, size) for s in t_shapes]
    s_strides = [stride_of(s, size) for s in s_shapes]
    common = [s for s in s_strides if s in t_strides]
    if not common:
        raise PairingError(
            f'no neck output of the student (strides {s_strides}) has the '
            f'stride of one of the teacher\'s ({t_strides}): there is no '
            'level to distil without resizing.')
    levels, dropped = [], []
    for stride in common:
        # paired by stride: the same output index of both necks, or not (a
        # P2-P6 teacher for a P3-P7 student, a 5-scale teacher for a
        # 4-scale student): then each side names its own
        i, j = s_strides.index(stride), t_strides.index(stride)
        if len(levels) == max_levels:
            dropped.append((stride, f'beyond the first {max_levels}'))
            continue
        patch = patch_size_for(t_shapes[j])
        if patch is None:
            dropped.append((stride, 'a single cell'))
            continue
        widths = (s_shapes[i][1], t_shapes[j][1])
        levels.append(dict(index=i, teacher_index=j, stride=stride,
                           student=s_shapes[i],
                           teacher=t_shapes[j], patch_size=patch,
                           connector=widths if widths[0] != widths[1]
                           else None))
    if not levels:
        raise PairingError(
            f'no level left to distil (common strides {common}: '
            + ', '.join(f'{s} {why}' for s, why in dropped) + ').')
    two_stage = hasattr(student, 'rpn_head') or hasattr(student, 'roi_head')
    intra = PAPER_WEIGHT if weight is None else float(weight)
    return dict(levels=levels, dropped=dropped, intra_weight=intra,
                inter_weight=intra if two_stage else None,
                two_stage=two_stage,
                # where extract_feat's output comes from, on each side
                recorder={side: 'neck' if getattr(model, 'with_neck', False)
                          else 'backbone' for side, model in (
                              ('student', student), ('teacher', teacher))},
                t_strides=t_strides, s_strides=s_strides,
                weight_given=weight is not None)


def _config_ref(path: str, out_dir: str, predefined: bool) -> str:
    """A config path as the written config refers to it: scoped paths as
    they are; files relative to the written config's folder (``_base_``
    resolves them so; ``cfg_path`` through ``{{ fileDirname }}``)."""
    if '::' in path:
        return path
    rel = osp.relpath(osp.abspath(path), osp.abspath(out_dir))
    return f'{{{{ fileDirname }}}}/{rel}' if predefined else rel


def _recorders(sources: Dict[str, str]) -> str:
    if sources['student'] == sources['teacher']:
        return f"    recorders=dict(neck={sources['student']!r}),"
    return ("    recorders=dict(neck=dict(student="
            f"{sources['student']!r}, teacher={sources['teacher']!r})),")


def _model_ref(side: str, ref: str) -> str:
    line = f'    {side}=dict(cfg_path={ref!r}),'
    return line if len(line) <= 79 else \
        f'    {side}=dict(\n        cfg_path={ref!r}),'


def _loss_text(level: Dict, p: Dict, indent: str) -> str:
    args = [f"type='PatchCKALoss'", f'patch_size={level["patch_size"]}',
            f'intra_weight={p["intra_weight"]!r}']
    if p['inter_weight'] is not None:
        args.append(f'inter_weight={p["inter_weight"]!r}')
    one_line = f'loss=dict({", ".join(args)})'
    if len(indent) + len(one_line) <= 79:
        return indent + one_line
    inner = indent + ' ' * 4
    return (indent + 'loss=dict(\n' + ',\n'.join(inner + a for a in args)
            + ')')


def render(p: Dict, teacher: str, teacher_ckpt: str, student: str,
           out: str, size: Tuple[int, int], size_source: str,
           command: str, imports: Sequence[str] = (),
           runtime: Sequence[str] = ()) -> str:
    """The config text for :func:`plan`'s result ``p``.

    Args:
        p (dict): :func:`plan`'s result.
        teacher (str): Teacher config, as given.
        teacher_ckpt (str): Teacher checkpoint, written as is.
        student (str): Student config, as given.
        out (str): Where the config goes (relative paths are made from
            its folder).
        size (tuple[int, int]): The training scale the plan used.
        size_source (str): Where that scale came from.
        command (str): The command line, for the header.
        imports (Sequence[str]): The student config's ``custom_imports``.
        runtime (Sequence[str]): Lines declaring the run components
            (:func:`runtime_lines`), written last.

    Returns:
        str: The config file's text.
    """
    out_dir = osp.dirname(osp.abspath(out))
    levels = p['levels']
    names = [f'pcka_p{int(math.log2(lv["stride"]))}' for lv in levels]
    strides = '/'.join(str(lv['stride']) for lv in levels)
    lines = [
        f'# Written by pcka_det.new_config on '
        f'{datetime.date.today().isoformat()}:',
        f'#   {command}',
        f'# Teacher {teacher}: neck strides {p["t_strides"]}, widths '
        f'{sorted({lv["teacher"][1] for lv in levels})}.',
        f'# Student {student}: neck strides {p["s_strides"]}, widths '
        f'{sorted({lv["student"][1] for lv in levels})}.',
        f'# Levels: the outputs both produce at the same stride, at most '
        f'{MAX_LEVELS} (the paper distils FPN outputs 0-3): strides '
        f'{strides}.',
    ]
    if any(lv['index'] != lv['teacher_index'] for lv in levels):
        pairs = ', '.join(f'stride {lv["stride"]} student {lv["index"]} '
                          f'<-> teacher {lv["teacher_index"]}'
                          for lv in levels)
        lines.append(f'#   Paired by stride, at other output indices: '
                     f'{pairs}.')
    for stride, reason in p['dropped']:
        lines.append(f'#   Not distilled: stride {stride} ({reason}).')
    for warning in p.get('warnings', ()):
        lines.append(f'# WARN: {warning}')
    lines.append(
        f'# Patches: per level the largest of {list(PATCH_SIZES)} cells (16 '
        'is the paper\'s) leaving >= 2 patches at the student\'s training '
        f'scale {size[0]}x{size[1]} ({size_source}): ' + ', '.join(
            f'{n} {lv["teacher"][2]}x{lv["teacher"][3]} -> '
            f'{lv["patch_size"]}' for n, lv in zip(names, levels)) + '.')
    connected = [lv for lv in levels if lv['connector']]
    if connected:
        lines.append(
            '# Connectors: the student\'s levels are narrower or wider than '
            'the teacher\'s (' + ', '.join(dict.fromkeys(
                f'{lv["connector"][0]}->{lv["connector"][1]}'
                for lv in connected)) + '): a 1x1 conv + BN maps them '
            '(trained with the student, dropped at export).')
    else:
        lines.append('# Connectors: none, both necks have the same width.')
    if p['weight_given']:
        lines.append(f'# Weights: intra {p["intra_weight"]:g}'
                     + (f', inter {p["inter_weight"]:g}'
                        if p['inter_weight'] is not None else '')
                     + ' (--weight).')
    elif p['two_stage']:
        lines.append('# Weights: the paper\'s for a two-stage student, '
                     'intra 10 + inter 10.')
    else:
        lines.append('# Weights: the paper\'s for a one-stage student, '
                     'intra 10.')
    lines.append('# Check before training: '
                 + shlex.join(['python', '-m', 'pcka_det.check', out]))
    lines.append(f'teacher_ckpt = {teacher_ckpt!r}'
                 + ('  # noqa: E501' if len(repr(teacher_ckpt)) > 64 else ''))
    student_base = repr(_config_ref(student, out_dir, False))
    if imports:
        # MMEngine refuses a key that two _base_ files both set: the
        # runtime's two lines here, with the student's imports kept
        lines += [
            f'_base_ = {student_base}',
            '',
            '# pcka_det registers the distiller; DistillRunner checks the '
            'run and exports the',
            '# student (as configs/_base_/distill_runtime.py sets them).',
            f'custom_imports = dict(imports={[*imports, "pcka_det"]!r}, '
            'allow_failed_imports=False)',
            "runner_type = 'DistillRunner'",
        ]
    else:
        lines += ['_base_ = [', f'    {student_base},',
                  "    'pcka_det::_base_/distill_runtime.py',", ']']
    lines += [
        '',
        'model = dict(',
        '    _delete_=True,',
        "    type='FeatureDistiller',",
        _model_ref('student', _config_ref(student, out_dir, True)),
        _model_ref('teacher', _config_ref(teacher, out_dir, True)),
        '    teacher_ckpt=teacher_ckpt,',
        _recorders(p['recorder']),
    ]
    first = levels[0]
    offset = int(math.log2(first['stride'])) - first['index']
    shift = first['teacher_index'] - first['index']
    uniform = all(
        lv['index'] == first['index'] + k and
        lv['teacher_index'] == lv['index'] + shift and
        int(math.log2(lv['stride'])) == lv['index'] + offset and
        lv['patch_size'] == first['patch_size'] and
        lv['connector'] == first['connector']
        for k, lv in enumerate(levels))
    if uniform:
        start, stop = first['index'], first['index'] + len(levels)
        span = f'range({stop})' if start == 0 else f'range({start}, {stop})'
        lines += ['    distill_losses={',
                  f"        f'pcka_p{{level + {offset}}}': dict(",
                  "            recorder='neck',",
                  '            index=level,' if not shift else
                  '            index=dict(student=level, teacher=level + '
                  f'{shift}),']
        if first['connector']:
            lines += ['            connector=dict(',
                      "                type='ConvConnector', in_channels="
                      f'{first["connector"][0]}, out_channels='
                      f'{first["connector"][1]}),']
        lines += [_loss_text(first, p, ' ' * 12) + ')',
                  f'        for level in {span}',
                  '    })']
    else:
        lines.append('    distill_losses=dict(')
        for k, (name, lv) in enumerate(zip(names, levels)):
            index = lv['index'] if lv['index'] == lv['teacher_index'] \
                else f'dict(student={lv["index"]}, ' \
                f'teacher={lv["teacher_index"]})'
            lines += [f'        {name}=dict(',
                      "            recorder='neck',",
                      f'            index={index},']
            if lv['connector']:
                lines += ['            connector=dict(',
                          "                type='ConvConnector', "
                          f'in_channels={lv["connector"][0]}, '
                          f'out_channels={lv["connector"][1]}),']
            lines.append(_loss_text(lv, p, ' ' * 12) + ')'
                         + (',' if k < len(levels) - 1 else '))'))
    lines += list(runtime)
    return '\n'.join(_wrap(line) for line in lines) + '\n'


def runtime_lines(student_cfg: Config) -> List[str]:
    """The config lines that declare what a distillation run on top of
    ``student_cfg`` runs (loop, optimizer wrapper, checkpoint hook, our
    hooks): what :func:`~pcka_det.engine.runner.declare_run_components`
    would otherwise write in at run time.

    Args:
        student_cfg (Config): The student's training config.

    Returns:
        list[str]: Python lines (empty when nothing needs declaring).
    """
    from .engine.runner import declare_run_components
    probe = copy.deepcopy(student_cfg)
    probe.model = dict(type='FeatureDistiller')
    declare_run_components(probe)
    lines = []
    loop = (probe.get('train_cfg') or {}).get('type')
    if loop != (student_cfg.get('train_cfg') or {}).get('type'):
        lines.append(f'train_cfg = dict(type={loop!r})')
    wrapper = (probe.get('optim_wrapper') or {}).get('type')
    if wrapper != (student_cfg.get('optim_wrapper') or {}).get('type'):
        lines.append(f'optim_wrapper = dict(type={wrapper!r})')
    own = student_cfg.get('default_hooks') or {}
    hooks = [f'    {key}=dict(type={hook["type"]!r}),'
             for key, hook in probe.default_hooks.items()
             if isinstance(hook, dict) and hook.get('type') !=
             (own.get(key) or {}).get('type')]
    if hooks:
        hooks[-1] = hooks[-1][:-1] + ')'
        lines += ['default_hooks = dict('] + hooks
    if not lines:
        return []
    return ['', '# What runs (pcka_det.engine), declared here: exact resume, '
            'non-finite steps skipped and bounded, kill-safe checkpoints, '
            'the student exported as plain mmdet weights.'] + lines


def _wrap(line: str) -> str:
    """A long header comment line folded at 79 columns."""
    if not line.startswith('#') or len(line) <= 79:
        return line
    return textwrap.fill(line[2:], 79, initial_indent='# ',
                         subsequent_indent='#   ', break_on_hyphens=False,
                         break_long_words=False)


def new_config(teacher: str, teacher_ckpt: str, student: str, out: str,
               weight: Optional[float] = None,
               max_levels: int = MAX_LEVELS,
               command: Optional[str] = None) -> Dict:
    """Plan and write the distillation config; see the module docstring.

    Args:
        teacher (str): Teacher config (path or ``mmdet::``/``pcka_det::``).
        teacher_ckpt (str): Its checkpoint (path or URL), written as is.
        student (str): Student config.
        out (str): Where to write the config.
        weight (float, optional): intra (and inter) weight.
        max_levels (int): Most levels distilled.
        command (str, optional): The command line, for the header.

    Returns:
        dict: The plan (see :func:`plan`).
    """
    init_default_scope('mmdet')
    student_cfg = Config.fromfile(resolve_config_path(student))
    with torch.random.fork_rng():
        t_model = build_detector(dict(cfg_path=teacher))
        s_model = build_detector(dict(cfg_path=student))
    size, source = padded_training_scale(student_cfg,
                                         s_model.data_preprocessor)
    p = plan(t_model, s_model, size, weight, max_levels)
    swapped = smaller_teacher_warning(t_model, s_model)
    p['warnings'] = [f'{swapped} (--teacher / --student)'] if swapped else []
    imports = list((student_cfg.get('custom_imports') or {}).get(
        'imports', []))
    imports = [i for i in imports if i != 'pcka_det']
    text = render(p, teacher, teacher_ckpt, student, out, size, source,
                  command or 'python -m pcka_det.new_config ...', imports,
                  runtime_lines(student_cfg))
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    atomic_write_text(out, text)
    try:  # what training will do first
        Config.fromfile(out)
    except Exception as e:
        os.remove(out)
        raise RuntimeError(f'the config written for these detectors does '
                           f'not load ({type(e).__name__}: {e}); nothing '
                           'was written. Please report it.') from e
    return p


def build_parser() -> argparse.ArgumentParser:
    """new_config's flags."""
    parser = argparse.ArgumentParser(
        description='Write a PCKA distillation config for a teacher and a '
        'student mmdet config.')
    parser.add_argument('--teacher', required=True, help='teacher config')
    parser.add_argument('--teacher-ckpt', required=True,
                        help='teacher checkpoint (path or URL)')
    parser.add_argument('--student', required=True, help='student config')
    parser.add_argument('-o', '--out', required=True,
                        help='the config to write')
    parser.add_argument('--weight', type=float, default=None,
                        help='intra (and, two-stage, inter) weight; '
                        'default the paper\'s 10')
    parser.add_argument('--max-levels', type=int, default=MAX_LEVELS,
                        help='pair at most this many levels, the finest '
                        'first')
    parser.add_argument('--force', action='store_true',
                        help='overwrite --out if it exists')
    return parser


def _weight_above_zero(values: Dict) -> Optional[str]:
    weight = values['--weight']
    if weight is not None and not weight > 0:
        return (f'--weight = {weight!r}: a weight of 0 or less writes a '
                'config that distils nothing (or pushes the student away)')
    return None


CONTRACT = command_contract(
    'pcka_det.new_config', build_parser(),
    'Write a PCKA distillation config for a teacher and a student config.',
    bounds={'--max-levels': (1, None)},
    rules=(Rule('weight-above-zero', 'the weight must be > 0',
                _weight_above_zero),))


def main(argv=None) -> int:
    parser = build_parser()
    args = parse_command(parser, 'pcka_det.new_config', argv)
    if osp.exists(args.out) and not args.force:
        sys.exit(f'{args.out} exists; pass --force to overwrite it.')
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(['python', '-m', 'pcka_det.new_config', *argv])
    try:
        p = new_config(args.teacher, args.teacher_ckpt, args.student,
                       args.out, args.weight, args.max_levels, command)
    except PairingError as e:
        sys.exit(f'Cannot pair these detectors: {e}')
    for warning in p['warnings']:
        print(f'WARN: {warning}', file=sys.stderr)
    print(f'Wrote {args.out}: {len(p["levels"])} levels (strides '
          + ', '.join(str(lv['stride']) for lv in p['levels'])
          + '). Check it: '
          + shlex.join(['python', '-m', 'pcka_det.check', args.out]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
