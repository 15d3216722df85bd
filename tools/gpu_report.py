"""Every GPU figure README quotes, measured in one command.

For RetinaNet R101 -> R50 and Faster R-CNN R101 -> R50 (our COCO configs,
random weights and a random batch: nothing is downloaded) it measures, in
interleaved rounds (``pcka_det.benchmark.measure_rounds``, medians with
their spread): the student's training step, the distiller's, the teacher's
forward in fp32 / fp16 / bf16 / channels_last (the distiller's
``teacher_dtype`` and ``teacher_channels_last`` options), and the
distillation losses alone (forward + backward on recorded features), with
the peak memory of each (the allocator's maximum, reset per run). Then the
same two steps under ``AmpOptimWrapper`` (``--amp``), with their losses
compared to fp32 on the same batch; the host-device synchronisations our
losses make per step (``torch.cuda.set_sync_debug_mode``); and a
2-iteration ``tools/train.py`` run of the RetinaNet config through the real
launcher (torchrun, world size 1, NCCL, ``--amp``) on a few synthetic COCO
images, which must exit 0 and export the student.

A section that cannot run here says why (``skipped``) and one that fails
keeps its message (``error``); the others still run. Writes
``gpu_report.json`` and ``gpu_report.md`` (the README table) to
``--out-dir``.

``--quick`` runs the same code on the toy configs at 192 px (seconds, on a
CPU: the test suite runs it so that it cannot rot).

Example:
    python tools/gpu_report.py --out-dir work_dirs/gpu_report
    python tools/gpu_report.py --quick --device cpu --out-dir /tmp/report
"""
import argparse
import json
import math
import os
import os.path as osp
import subprocess
import sys
import time
import traceback
import warnings

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools', 'benchmark'))

PAIRS = {
    'retinanet': 'configs/pcka/retina_r101_r50.py',
    'faster_rcnn': 'configs/pcka/faster_rcnn_r101_r50.py',
}
QUICK_PAIRS = {
    'retinanet': 'configs/toy/pcka_retinanet_r18_thin-r18_toy.py',
    'faster_rcnn': 'configs/toy/pcka_faster_rcnn_r18_thin-r18_toy.py',
}
TEACHER_VARIANTS = {
    'teacher fp32': {},
    'teacher fp16': dict(teacher_dtype='fp16'),
    'teacher bf16': dict(teacher_dtype='bf16'),
    'teacher channels_last': dict(teacher_channels_last=True),
}
# --amp losses against fp32 on the same weights and batch: the relative
# difference of each loss term above which the section fails (fp16
# features carry about 3 significant digits; summed over a 1333x800
# pyramid the losses agree to about 1e-3 on random weights)
AMP_TOLERANCE = 2e-2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='toy configs at 192 px (seconds, any device)')
    parser.add_argument('--device', default=None,
                        help='cuda if available, else cpu')
    parser.add_argument('--image-size', type=int, nargs=2, metavar=('W', 'H'),
                        help='default 1333 800 (--quick: 192 192)')
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=None,
                        help='timed rounds (default 10, --quick 2)')
    parser.add_argument('--sections', nargs='+',
                        default=['steps', 'amp', 'syncs', 'launcher'],
                        choices=['steps', 'amp', 'syncs', 'launcher'])
    parser.add_argument('--out-dir', default='work_dirs/gpu_report')
    return parser.parse_args(argv)


def _build(config, device, **overrides):
    from benchmark_overhead import build
    return build(osp.join(ROOT, config), device, **overrides)


def _batch(args):
    from benchmark_overhead import batch
    return batch(args)


def _rows_args(args, config, **variant) -> argparse.Namespace:
    """What ``benchmark_overhead.step_fn`` reads, for one pair and teacher
    variant."""
    return argparse.Namespace(
        configs=[osp.join(ROOT, config)], image_size=args.image_size,
        batch_size=args.batch_size,
        teacher_dtype=variant.get('teacher_dtype'),
        teacher_channels_last=variant.get('teacher_channels_last', False))


def section_steps(args, device, pairs):
    """Rows per pair, timed in rounds; ratios from those rows."""
    from pcka_det.benchmark import measure_rounds
    from benchmark_overhead import step_fn
    out = {}
    skipped = {}
    for pair, config in pairs.items():
        rows_args = _rows_args(args, config)
        runs = {  # each row's step from the benchmark's one builder
            'student step': step_fn(rows_args, 'student', device),
            'distiller step': step_fn(rows_args, 'distill:0', device),
        }
        for name, overrides in TEACHER_VARIANTS.items():
            if overrides.get('teacher_dtype') == 'fp16' and \
                    device.type != 'cuda':
                skipped[name] = 'fp16 convolutions are a GPU figure'
                continue
            if overrides.get('teacher_dtype') == 'bf16' and \
                    device.type == 'cuda' and \
                    not torch.cuda.is_bf16_supported():
                skipped[name] = 'this GPU has no bf16'
                continue
            runs[name] = step_fn(_rows_args(args, config, **overrides),
                                 'teacher_variant' if overrides else
                                 'teacher', device)
        runs['losses alone'] = step_fn(rows_args, 'loss:0', device)
        found = measure_rounds(runs, args.rounds, device)
        rows = found['runs']
        student = rows['student step']['time']
        step = rows['distiller step']['time']
        teacher = rows['teacher fp32']['time']
        ratios = dict(
            distiller_vs_student=step / student,
            loss_share_of_step=rows['losses alone']['time'] / step,
            teacher_share_of_step=teacher / step)
        for name in TEACHER_VARIANTS:
            if name != 'teacher fp32' and name in rows:
                ratios[f'{name} speed-up'] = teacher / rows[name]['time']
        out[pair] = dict(config=config, rows=rows, ratios=ratios,
                         unreliable=found['unreliable'])
        del runs
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    return dict(pairs=out, skipped=skipped)


def section_amp(args, device, pairs):
    """Student and distiller steps under AmpOptimWrapper (fp16), their
    losses against fp32 on the same weights and batch."""
    if device.type != 'cuda':
        return dict(status='skipped', reason='AmpOptimWrapper needs CUDA '
                    '(MMEngine asserts when it is built elsewhere)')
    from mmengine.optim import AmpOptimWrapper

    from pcka_det.benchmark import measure_rounds
    out = {}
    for pair, config in pairs.items():
        data = _batch(args)
        distiller = _build(config, device)
        processed = distiller.data_preprocessor(data, True)
        with torch.no_grad():  # the same seed: the same sampled anchors
            torch.manual_seed(0)  # and proposals (RPN and RoI samplers)
            fp32 = distiller(**processed, mode='loss')
            torch.manual_seed(0)
            with torch.autocast('cuda', dtype=torch.float16):
                fp16 = distiller(**processed, mode='loss')
        compared = {}
        for key, value in fp32.items():
            if 'loss' not in key:  # a tensor, or a list (per level)
                continue
            a = float(sum(value) if isinstance(value, list) else value)
            b = fp16[key]
            b = float(sum(b) if isinstance(b, list) else b)
            compared[key] = dict(fp32=a, amp=b,
                                 rel=abs(a - b) / max(abs(a), 1e-12))
        bad = {k: v for k, v in compared.items()
               if not math.isfinite(v['amp']) or v['rel'] > AMP_TOLERANCE}

        def amp(params):
            return AmpOptimWrapper(
                optimizer=torch.optim.SGD(params, lr=1e-5, momentum=0.9))

        student_optim = amp(distiller.student.parameters())
        distiller_optim = amp(distiller.parameters())
        found = measure_rounds({
            'student step (amp)': lambda: distiller.student.train_step(
                data, student_optim),
            'distiller step (amp)': lambda: distiller.train_step(
                data, distiller_optim),
        }, args.rounds, device)
        rows = found['runs']
        out[pair] = dict(
            rows=rows, losses=compared, tolerance=AMP_TOLERANCE,
            unreliable=found['unreliable'],
            ratios=dict(distiller_vs_student=(
                rows['distiller step (amp)']['time'] /
                rows['student step (amp)']['time'])))
        if bad:
            raise AssertionError(
                f'{pair}: --amp losses not finite or beyond {AMP_TOLERANCE} '
                f'of fp32: {bad}')
        del distiller
        torch.cuda.empty_cache()
    return dict(pairs=out, scaler_skip=_scaler_skip_restores_norm_stats(
        args, device))


def _scaler_skip_restores_norm_stats(args, device) -> dict:
    """A step the real ``GradScaler`` skips (its scale set to 2**64, so
    the fp16 gradients overflow) leaves the weights and the BN running
    statistics as they were, and counts as a scaler skip, not a bad batch.
    On the toy student: the COCO students keep their BN frozen
    (``norm_eval``), where there is nothing to put back."""
    from mmengine.optim import AmpOptimWrapper  # noqa: F401 (CUDA only)
    from torch.nn.modules.batchnorm import _BatchNorm

    from pcka_det.engine import GuardedAmpOptimWrapper
    student = _build(QUICK_PAIRS['retinanet'], device).student
    small = argparse.Namespace(**dict(vars(args), image_size=[192, 192]))
    data = _batch(small)
    wrapper = GuardedAmpOptimWrapper(
        optimizer=torch.optim.SGD(student.parameters(), lr=1e-3))
    student.train_step(data, wrapper)  # a normal step first
    norms = {name: (m.running_mean.clone(), m.running_var.clone())
             for name, m in student.named_modules()
             if isinstance(m, _BatchNorm) and m.training and
             m.track_running_stats}
    if not norms:
        raise RuntimeError('the toy student has no BN layer that updates its '
                           'statistics: nothing to check')
    weights = {n: p.detach().clone() for n, p in student.named_parameters()}
    wrapper.loss_scaler.update(new_scale=2.0 ** 64)
    student.train_step(data, wrapper)
    moved = [n for n, (mean, var) in norms.items()
             if not (torch.equal(mean, dict(student.named_modules())[n]
                                 .running_mean) and
                     torch.equal(var, dict(student.named_modules())[n]
                                 .running_var))]
    stepped = [n for n, p in student.named_parameters()
               if not torch.equal(p.detach(), weights[n])]
    found = dict(scaler_skipped=wrapper.scaler_skipped,
                 bad_batch=wrapper.last_skipped,
                 scaler_skips=wrapper.scaler_skips, norm_layers=len(norms),
                 norm_stats_moved=moved[:5], weights_moved=stepped[:5])
    if not wrapper.scaler_skipped or wrapper.last_skipped or moved or \
            stepped:
        raise AssertionError(f'a skipped --amp step was not undone: {found}')
    return found


def section_syncs(args, device, pairs):
    """Host-device synchronisations made by our losses in one step (their
    forward and backward on recorded features), counted by torch's sync
    debug mode."""
    if device.type != 'cuda':
        return dict(status='skipped',
                    reason='a CPU has no host-device synchronisation')
    out = {}
    for pair, config in pairs.items():
        from benchmark_overhead import step_fn
        fn = step_fn(_rows_args(args, config), 'loss:0', device)
        fn()  # warm-up: lazy initialisations are not per step
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            torch.cuda.set_sync_debug_mode('warn')
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode('default')
        syncs = [str(w.message).splitlines()[0] for w in caught
                 if 'synchroniz' in str(w.message)]
        out[pair] = dict(syncs_per_step=len(syncs), messages=syncs[:5])
        del fn
        torch.cuda.empty_cache()
    return dict(pairs=out)


def section_launcher(args, device, pairs):
    """``tools/dist_train.sh <config> 1 --amp`` (torchrun, NCCL) for 2
    iterations on synthetic COCO-layout images, the URLs' files in a
    private hub cache of random weights; exit 0 and a student export."""
    import tempfile
    config = pairs['retinanet']
    # the run's files (data, hub cache, checkpoints) go with the section;
    # a failure's log tail is in the error
    with tempfile.TemporaryDirectory(prefix='gpu_report_') as work:
        return _launch(args, device, config, work)


def _launch(args, device, config: str, work: str) -> dict:
    """Train ``config`` through ``tools/dist_train.sh`` in ``work``."""
    from pcka_det.cli import data_root_options
    from pcka_det.datasets import SyntheticConfig, generate_dataset
    from pcka_det.testing.hub_cache import HubCache
    data = osp.join(work, 'data')
    names = {}
    if not args.quick:  # the shapes named as COCO's first six classes
        from mmdet.datasets import CocoDataset
        names = dict(class_names=CocoDataset.METAINFO['classes'][:6])
    generate_dataset(data, SyntheticConfig(num_train=4, num_val=2, **names))
    if names:  # all 80 categories listed (ids 1-80; the shapes are 1-6), so
        # CocoMetric can name every class the student predicts
        for split in ('train', 'val'):
            path = osp.join(data, 'annotations', f'instances_{split}.json')
            with open(path) as f:
                coco = json.load(f)
            coco['categories'] = [
                dict(id=i + 1, name=n) for i, n in
                enumerate(CocoDataset.METAINFO['classes'])]
            with open(path, 'w') as f:
                json.dump(coco, f)
    import socket
    with socket.socket() as s:  # a free port for torchrun's rendezvous
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(port))
    opts = dict(data_root_options(data), **{
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'test_dataloader.num_workers': 0,
        'test_dataloader.persistent_workers': False,
        'train_cfg.max_epochs': 1, 'train_cfg.val_interval': 100,
        'model.allow_random_teacher': True,
    })
    for loader, split in (('train', 'train'), ('val', 'val'),
                          ('test', 'val')):  # the synthetic files' names
        opts[f'{loader}_dataloader.dataset.ann_file'] = \
            f'annotations/instances_{split}.json'
        opts[f'{loader}_dataloader.dataset.data_prefix.img'] = f'{split}/'
    if args.quick:  # the toy teacher: a random checkpoint file
        cache = None
        opts['model.teacher_ckpt'] = 'None'
    else:
        cache = HubCache(osp.join(work, 'torch_home'), root=ROOT)
        cache.fill([config])
        env.update(cache.env())
        opts['model.student.test_cfg.score_thr'] = 0.0
    extra = ['--amp'] if device.type == 'cuda' else []
    cmd = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), config, '1',
           '--work-dir', osp.join(work, 'run'), *extra, '--cfg-options',
           *[f'{k}={v}' for k, v in opts.items()]]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    seconds = time.perf_counter() - start
    log = out.stdout + out.stderr
    exported = osp.isfile(osp.join(work, 'run', 'student_last.pth'))
    if out.returncode != 0 or not exported:
        raise RuntimeError(f'exit {out.returncode}, student exported: '
                           f'{exported}\n{log[-3000:]}')
    return dict(command=' '.join(cmd[:4] + extra), seconds=seconds,
                amp=bool(extra), exported=exported,
                backend='nccl' if device.type == 'cuda' else 'gloo')


SECTIONS = dict(steps=section_steps, amp=section_amp, syncs=section_syncs,
                launcher=section_launcher)


def markdown(report) -> str:
    """The README table: one row per figure and pair."""
    lines = ['| figure | ' + ' | '.join(report['pairs']) + ' |',
             '|---|' + '---|' * len(report['pairs'])]

    def row(label, values):
        lines.append(f'| {label} | ' + ' | '.join(values) + ' |')

    steps = report['sections'].get('steps', {})
    if steps.get('status') == 'ok':
        pairs = steps['pairs']
        first = next(iter(pairs.values()))
        for name in first['rows']:
            row(f'{name} (ms, peak MiB)', [
                _cell(pairs[p]['rows'].get(name)) for p in report['pairs']])
        for name in first['ratios']:
            row(name, [f'{pairs[p]["ratios"][name]:.2f}'
                       for p in report['pairs']])
    amp = report['sections'].get('amp', {})
    if amp.get('status') == 'ok':
        for name in ('student step (amp)', 'distiller step (amp)'):
            row(f'{name} (ms, peak MiB)', [
                _cell(amp['pairs'][p]['rows'][name])
                for p in report['pairs']])
    syncs = report['sections'].get('syncs', {})
    if syncs.get('status') == 'ok':
        row('host-device syncs per step in our losses', [
            str(syncs['pairs'][p]['syncs_per_step'])
            for p in report['pairs']])
    for name, section in report['sections'].items():
        if section.get('status') != 'ok':
            lines.append(f'\n{name}: {section["status"]}: '
                         f'{section.get("reason") or section.get("message")}')
    return '\n'.join(lines) + '\n'


def _cell(row) -> str:
    if row is None:
        return 'skipped'
    peak = '' if row.get('peak') is None else f', {row["peak"] / 2**20:.0f}'
    spread = ' (unreliable)' if row['spread'] > 0.25 else ''
    return f'{row["time"] * 1e3:.1f}{peak}{spread}'


def main(argv=None) -> dict:
    args = parse_args(argv)
    import pcka_det  # noqa: F401
    device = torch.device(args.device or (
        'cuda' if torch.cuda.is_available() else 'cpu'))
    if args.image_size is None:
        args.image_size = [192, 192] if args.quick else [1333, 800]
    if args.rounds is None:
        args.rounds = 2 if args.quick else 10
    pairs = QUICK_PAIRS if args.quick else PAIRS
    report = dict(
        device=(torch.cuda.get_device_name(device) if device.type == 'cuda'
                else 'cpu'),
        torch=torch.__version__, quick=args.quick,
        batch=f'{args.batch_size} x {args.image_size[0]}x'
              f'{args.image_size[1]}',
        rounds=args.rounds, pairs=list(pairs), sections={})
    for name in args.sections:
        start = time.perf_counter()
        try:
            found = SECTIONS[name](args, device, pairs)
            found.setdefault('status', 'ok')
        except Exception as e:  # reported; the other sections still run
            found = dict(status='error', message=f'{type(e).__name__}: {e}',
                         traceback=traceback.format_exc()[-3000:])
        found['seconds'] = time.perf_counter() - start
        report['sections'][name] = found
        print(f'[{name}] {found["status"]} in {found["seconds"]:.0f} s'
              + (f': {found.get("reason") or found.get("message")}'
                 if found['status'] != 'ok' else ''), flush=True)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(osp.join(args.out_dir, 'gpu_report.json'), 'w') as f:
        json.dump(report, f, indent=2)
    table = markdown(report)
    with open(osp.join(args.out_dir, 'gpu_report.md'), 'w') as f:
        f.write(table)
    print(table)
    return report


if __name__ == '__main__':
    main()
