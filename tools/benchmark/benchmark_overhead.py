"""Training overhead of distillation, measured side by side on one batch.

For one or more distillation configs sharing a student, measures a training
step (forward, backward, SGD update) of the student alone, the teacher's
forward alone (backbone + neck under no_grad, as the distiller runs it), the
distillation losses alone (forward + backward on recorded features), and a
distiller training step per config; also the teacher's forward in
``--teacher-dtype`` / ``--teacher-channels-last`` when given, and the cost
of one ``log_alignment_interval`` logging step (PCKA intra/inter of every
distilled level, no gradient). All rows run on the same random batch,
timed in one process in interleaved rounds (``measure_rounds``: medians,
with the rows whose rounds spread over 25 % named unreliable), so a load
that comes and goes slows every row alike. Peak memory is each row's own:
the allocator's maximum on a GPU, and on a CPU the peak RSS of the row's
step in a fresh process. Teachers are random (no download); timing does
not depend on weights.

Example:
    python tools/benchmark/benchmark_overhead.py configs/toy/pcka_retinanet_r18_thin-r18_toy.py
    python tools/benchmark/benchmark_overhead.py configs/pcka/retina_x101_r50.py \\
        configs/baselines/pkd_retina_x101_r50.py --device cuda \\
        --image-size 1333 800 --batch-size 2
"""
import argparse
import json
import os.path as osp
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='+', help='distillation configs')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--image-size', type=int, nargs=2, default=[192, 192],
                        metavar=('W', 'H'))
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed rounds (every row once per round)')
    parser.add_argument('--teacher-dtype', choices=['fp16', 'bf16'],
                        help='also time the teacher forward in this dtype')
    parser.add_argument('--teacher-channels-last', action='store_true',
                        help='also time the teacher forward channels_last')
    parser.add_argument('--json', help='also write the results here')
    parser.add_argument('--item', help=argparse.SUPPRESS)  # worker mode
    return parser.parse_args(argv)


def build(config: str, device: torch.device, **overrides):
    """The distiller of ``config`` with a random teacher, no downloads;
    ``overrides`` go into its model config."""
    import warnings

    import pcka_det  # noqa: F401
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from pcka_det.testing import offline_distiller_cfg
    register_all_modules()
    cfg = offline_distiller_cfg(config)
    cfg.model.update(overrides)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return MODELS.build(cfg.model).to(device).train()


def check_same_models(configs) -> None:
    """The student/teacher rows are shared, so the configs must agree (on the
    resolved models: a 1x and a 2x student config build the same model)."""
    from mmengine.config import Config

    import pcka_det  # noqa: F401
    from pcka_det.config_paths import resolve_config_path
    from pcka_det.models.builder import load_model_cfg
    models = [Config.fromfile(resolve_config_path(c)).model for c in configs]

    def resolved(model, side):
        return load_model_cfg(model[side]).to_dict()

    for config, model in zip(configs[1:], models[1:]):
        for side in ('student', 'teacher'):
            if resolved(model, side) != resolved(models[0], side):
                raise ValueError(
                    f'{config} has another {side} than {configs[0]}; compare '
                    'configs that share the student and the teacher.')


def batch(args):
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(0)
    w, h = args.image_size
    return demo_mm_inputs(batch_size=args.batch_size,
                          image_shapes=[(3, h, w)] * args.batch_size,
                          num_items=[4] * args.batch_size, num_classes=6)


def step_fn(args, item: str, dev: torch.device):
    """The step timed for row ``item`` (``student``, ``teacher``,
    ``teacher_variant``, ``loss:i``, ``distill:i``, ``alignment:i``), built
    with its own distiller on the shared random batch."""
    from mmengine.optim import OptimWrapper
    kind, _, index = item.partition(':')
    config = args.configs[int(index or 0)]
    overrides = {}
    if kind == 'teacher_variant':
        overrides = dict(teacher_dtype=args.teacher_dtype,
                         teacher_channels_last=args.teacher_channels_last)
    distiller = build(config, dev, **overrides)
    data = batch(args)

    def sgd(params):
        return OptimWrapper(torch.optim.SGD(params, lr=1e-5, momentum=0.9))

    if kind == 'student':
        model = distiller.student
        optim = sgd(model.parameters())
        return lambda: model.train_step(data, optim)
    if kind in ('teacher', 'teacher_variant'):
        inputs = distiller.data_preprocessor(data, True)['inputs']

        def fn():
            feats = distiller.teacher_features(inputs)
            if distiller.cross_head is not None:  # a head level's too
                distiller.teacher_head(feats)
        return fn
    if kind in ('loss', 'alignment'):
        processed = distiller.data_preprocessor(data, True)
        # the features recorded once, as a training step records them; a
        # head level's terms (CrossKD) are timed in the distiller row only
        _, recorded = distiller.record(
            processed['inputs'], processed['data_samples'],
            detection_loss=True)
        pairs = [(name, s.detach().requires_grad_(), t)
                 for name, (s, t) in recorded.items()
                 if not distiller.levels[name].is_head]

        def fn():
            if kind == 'alignment':
                for name, s, t in pairs:
                    distiller.alignment(name, s, t)
                return
            total = 0
            for name, s, t in pairs:
                s.grad = None
                total = total + distiller.distill_loss(name, s, t)[0]
            if pairs:  # none for a head level alone
                total.backward()
        return fn
    # the whole distiller
    optim = sgd(distiller.parameters())
    return lambda: distiller.train_step(data, optim)


def worker(args) -> None:
    """The peak memory of one row's step in a process of its own (on a CPU
    the allocator keeps memory across rows); print a JSON line."""
    from pcka_det.benchmark import measure
    dev = torch.device(args.device)
    r = measure(step_fn(args, args.item, dev), 0, dev)
    print(json.dumps(dict(peak=r['peak'])))


def rows(args) -> dict:
    """Row name -> item, in the order the rounds time them."""
    items = {'student alone': 'student', 'teacher forward': 'teacher'}
    variant = [f for f, on in ((args.teacher_dtype, args.teacher_dtype),
                               ('channels_last', args.teacher_channels_last))
               if on]
    if variant:
        items[f'teacher forward ({", ".join(variant)})'] = 'teacher_variant'
    for i, config in enumerate(args.configs):
        name = osp.splitext(osp.basename(config))[0]
        items[f'{name}: losses only'] = f'loss:{i}'
        items[f'{name}: distiller'] = f'distill:{i}'
        items[f'{name}: alignment log step'] = f'alignment:{i}'
    return items


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.item:
        return worker(args)
    from pcka_det.benchmark import (RELIABLE_SPREAD, measure_rounds,
                                    run_isolated)
    check_same_models(args.configs)
    base = [sys.executable, osp.abspath(__file__), *args.configs,
            '--device', args.device, '--batch-size', str(args.batch_size),
            '--image-size', *map(str, args.image_size)]
    if args.teacher_dtype:
        base += ['--teacher-dtype', args.teacher_dtype]
    if args.teacher_channels_last:
        base += ['--teacher-channels-last']
    items = rows(args)
    dev = torch.device(args.device)
    # time: every row in this process, interleaved in rounds, so a load
    # that comes and goes slows all rows alike; peak memory: on a GPU from
    # the allocator per row, on a CPU one process per row
    timed = measure_rounds(
        {name: step_fn(args, item, dev) for name, item in items.items()},
        args.repeats, dev)
    results = {}
    for name, item in items.items():
        row = timed['runs'][name]
        peak = row['peak'] if dev.type == 'cuda' else run_isolated(
            base + ['--item', item])['peak']
        results[name] = dict(time=row['time'], spread=row['spread'],
                             peak=peak)

    w, h = args.image_size
    print(f'Training step, batch {args.batch_size} x {w}x{h}, device '
          f'{args.device}, median of {args.repeats} interleaved rounds')
    header = f'{"":<44}{"time (ms)":>11}{"peak MiB":>10}{"x student":>11}'
    print(header + '\n' + '-' * len(header))
    student = results['student alone']
    for name, r in results.items():
        print(f'{name:<44}{r["time"] * 1e3:>11.1f}{r["peak"] / 2**20:>10.1f}'
              f'{r["time"] / student["time"]:>10.2f}x')
    unreliable = timed['unreliable']
    if unreliable:
        print(f'unreliable (rounds spread over {RELIABLE_SPREAD:.0%} of '
              f'the median): {", ".join(unreliable)}')
    summary = dict(results=results, breakdown={}, unreliable=unreliable)
    teacher = results['teacher forward']['time']
    for config in args.configs:
        name = osp.splitext(osp.basename(config))[0]
        step = results[f'{name}: distiller']['time']
        loss = results[f'{name}: losses only']['time']
        # shares of the distiller step; parts timed apart need not add up
        summary['breakdown'][name] = dict(
            overhead_ratio=step / student['time'],
            extra_ms=(step - student['time']) * 1e3,
            teacher_share=teacher / step,
            loss_share=loss / step)
        b = summary['breakdown'][name]
        print(f'{name}: distiller step {step * 1e3:.0f} ms = '
              f'{b["overhead_ratio"]:.2f}x the student step (+'
              f'{b["extra_ms"]:.0f} ms); teacher forward alone '
              f'{teacher * 1e3:.0f} ms ({b["teacher_share"]:.0%} of the '
              f'step), losses alone {loss * 1e3:.1f} ms '
              f'({b["loss_share"]:.1%})')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == '__main__':
    main()
