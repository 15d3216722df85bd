"""The whole PCKA pipeline on the embedded synthetic dataset, on a CPU.

Generates the data if missing, trains the teacher, the student alone and the
student with PCKA (same initialisation and schedule), evaluates all three
with COCO metrics, prints one table and writes ``results.json`` and a figure.
Finished stages are reused; ``--fresh`` starts over.

Example:
    python tools/demo.py                 # what `make demo` runs
    python tools/demo.py --fresh
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BASE_STAGES = [
    # name, config, description
    ('teacher', 'configs/toy/retinanet_r18_toy.py', 'Teacher R18'),
    ('student', 'configs/toy/retinanet_thin-r18_toy.py', 'Student R18/4'),
]
# Distillation methods: same student, teacher, data, schedule and seed.
METHODS = {
    'pcka': 'PCKA',
    'pkd': 'PKD',
    'cwd': 'CWD',
    'fitnet': 'FitNet',
}
METRICS = [('AP', 'bbox_mAP'), ('AP50', 'bbox_mAP_50'),
           ('AP75', 'bbox_mAP_75'), ('APs', 'bbox_mAP_s'),
           ('APm', 'bbox_mAP_m'), ('APl', 'bbox_mAP_l')]
TINY = dict(num_train=8, num_val=4, batch_size=4, max_epochs=1)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'demo'))
    parser.add_argument('--data-root', default=osp.join('data', 'synthetic'))
    parser.add_argument('--fresh', action='store_true',
                        help='delete finished stages and data, start over')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--methods', nargs='+', default=['pcka'],
                        choices=sorted(METHODS),
                        help='distillation methods to compare')
    parser.add_argument('--tiny', action='store_true',
                        help='a few images and one short epoch per stage '
                        '(a smoke test of the pipeline, not a result)')
    parser.add_argument('--stage', help=argparse.SUPPRESS)  # worker mode
    return parser.parse_args(argv)


def stages(methods) -> list:
    """``(name, config, description)`` of every stage, in run order."""
    return BASE_STAGES + [
        (m, f'configs/toy/{m}_retinanet_r18_thin-r18_toy.py',
         f'Student + {METHODS[m]}') for m in methods]


def stage_overrides(args, name: str) -> dict:
    """``--cfg-options`` of one stage: data location, seed, tiny mode."""
    data_root = osp.abspath(args.data_root) + '/'
    opts = {
        'train_dataloader.dataset.data_root': data_root,
        'val_dataloader.dataset.data_root': data_root,
        'test_dataloader.dataset.data_root': data_root,
        'val_evaluator.ann_file':
        data_root + 'annotations/instances_val.json',
        'test_evaluator.ann_file':
        data_root + 'annotations/instances_val.json',
        'randomness.seed': args.seed,
        'work_dir': osp.join(args.work_dir, name),
    }
    if name in METHODS:
        opts['model.teacher_ckpt'] = osp.join(args.work_dir, 'teacher',
                                              'model.pth')
    if args.tiny:
        opts.update({
            'train_cfg.max_epochs': TINY['max_epochs'],
            'train_cfg.val_interval': TINY['max_epochs'],
            'train_dataloader.batch_size': TINY['batch_size'],
            'default_hooks.logger.interval': 1,
        })
    return opts


def run_stage_worker(args) -> None:
    """Train and test one stage in this process; write its result.json."""
    from mmengine.runner import Runner

    import pcka_det  # noqa: F401
    from pcka_det.compat import allow_mmengine_checkpoints
    from pcka_det.export import export_student, slim_checkpoint
    from pcka_det.runtime import prepare_cfg
    allow_mmengine_checkpoints()

    name = args.stage
    config = {n: c for n, c, _ in stages(METHODS)}[name]
    opts = stage_overrides(args, name)
    cfg = prepare_cfg(osp.join(ROOT, config), opts)
    start = time.time()
    runner = Runner.from_cfg(cfg)
    runner.train()
    train_time = time.time() - start
    metrics = runner.test()
    with open(osp.join(cfg.work_dir, 'last_checkpoint')) as f:
        last = f.read().strip()
    model_file = osp.join(cfg.work_dir, 'model.pth')
    if name in METHODS:
        export_student(last, model_file)
    else:
        slim_checkpoint(last, model_file)
    result = dict(
        config=config,
        checkpoint=model_file,
        train_time_s=round(train_time, 1),
        # CocoMetric returns nothing when there is no detection at all,
        # which is an AP of 0 (seen only for barely trained --tiny models)
        metrics={k: round(float(metrics.get(f'coco/{m}', 0.0)) * 100, 2)
                 for k, m in METRICS},
        num_detections_empty=not metrics,
        losses=read_loss_curves(cfg.work_dir))
    tmp = osp.join(cfg.work_dir, 'result.json.tmp')
    with open(tmp, 'w') as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, osp.join(cfg.work_dir, 'result.json'))


def read_loss_curves(work_dir: str) -> dict:
    """Loss values per logged iteration from MMEngine's scalars.json."""
    curves = {}
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')))
    for path in files[-1:]:
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if 'loss' not in rec:
                    continue
                for key, value in rec.items():
                    if key.startswith('loss'):
                        curves.setdefault(key, []).append(
                            (rec['iter'], value))
    return curves


def run_stage(args, name: str, total_iters: int) -> dict:
    """Run one stage in a subprocess with a progress bar; reuse if done."""
    from tqdm import tqdm
    out_dir = osp.join(args.work_dir, name)
    result_file = osp.join(out_dir, 'result.json')
    if osp.isfile(result_file):
        print(f'[{name}] done earlier, reusing {result_file}')
        with open(result_file) as f:
            return json.load(f)
    os.makedirs(out_dir, exist_ok=True)
    cmd = [sys.executable, osp.abspath(__file__), '--stage', name,
           '--work-dir', args.work_dir, '--data-root', args.data_root,
           '--seed', str(args.seed)] + (['--tiny'] if args.tiny else [])
    log_path = osp.join(out_dir, 'stage.log')
    pattern = re.compile(r'Epoch\(train\)\s+\[(\d+)\]\[\s*(\d+)/(\d+)\]')
    with open(log_path, 'w') as log, tqdm(
            total=total_iters, desc=f'{name:>8}', unit='it') as bar:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                cwd=os.getcwd())
        done = 0
        while proc.poll() is None:
            time.sleep(2)
            done = max([done] + [
                (int(e) - 1) * int(n) + int(i)
                for e, i, n in pattern.findall(open(log_path).read())])
            bar.update(done - bar.n)
        bar.update(max(0, total_iters - bar.n) if proc.returncode == 0
                   else 0)
    if proc.returncode != 0:
        tail = open(log_path).read().splitlines()[-25:]
        raise RuntimeError(f'Stage "{name}" failed (exit {proc.returncode}); '
                           f'last lines of {log_path}:\n' + '\n'.join(tail))
    with open(result_file) as f:
        return json.load(f)


def ensure_data(args) -> None:
    from pcka_det.datasets import SyntheticConfig, generate_dataset
    ann = osp.join(args.data_root, 'annotations', 'instances_val.json')
    if osp.isfile(ann) and osp.isfile(ann.replace('_val', '_train')):
        return
    cfg = SyntheticConfig(seed=args.seed)
    if args.tiny:
        cfg.num_train, cfg.num_val = TINY['num_train'], TINY['num_val']
    print(f'Generating the synthetic dataset in {args.data_root} ...')
    generate_dataset(args.data_root, cfg)


def iters_per_stage(args, config: str) -> int:
    """Total training iterations of a stage, for its progress bar."""
    import math

    from mmengine.config import Config

    import pcka_det  # noqa: F401
    cfg = Config.fromfile(osp.join(ROOT, config))
    with open(osp.join(args.data_root, 'annotations',
                       'instances_train.json')) as f:
        num_images = len({a['image_id'] for a in json.load(f)['annotations']})
    batch = TINY['batch_size'] if args.tiny else \
        cfg.train_dataloader.batch_size
    epochs = TINY['max_epochs'] if args.tiny else cfg.train_cfg.max_epochs
    return math.ceil(num_images / batch) * epochs


def print_table(results: dict, order: list) -> str:
    header = (f'{"model":<16}' + ''.join(f'{k:>7}' for k, _ in METRICS) +
              f'{"train time":>12}')
    lines = [header, '-' * len(header)]
    for name, _, desc in order:
        r = results[name]
        lines.append(f'{desc:<16}' + ''.join(
            f'{r["metrics"][k]:>7.1f}' for k, _ in METRICS) +
            f'{r["train_time_s"] / 60:>10.1f} m')
    table = '\n'.join(lines)
    print(table)
    return table


def plot(results: dict, order: list, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax_ap, ax_det, ax_kd) = plt.subplots(1, 3, figsize=(16, 4.2))
    keys = [k for k, _ in METRICS]
    width = 0.8 / len(order)
    for j, (name, _, desc) in enumerate(order):
        vals = [results[name]['metrics'][k] for k in keys]
        ax_ap.bar([i + j * width for i in range(len(keys))], vals, width,
                  label=desc)
    ax_ap.set_xticks([i + width * (len(order) - 1) / 2
                      for i in range(len(keys))], keys)
    ax_ap.set_ylabel('COCO box AP (%)')
    ax_ap.set_title('Validation AP')
    ax_ap.legend(fontsize=8)
    for name, _, desc in order:
        curve = results[name]['losses']
        det = [(i, c + b) for (i, c), (_, b) in zip(
            curve.get('loss_cls', []), curve.get('loss_bbox', []))]
        if det:
            ax_det.plot(*zip(*det), label=desc)
    ax_det.set_title('Detection loss (cls + bbox)')
    ax_det.set_xlabel('iteration')
    ax_det.legend(fontsize=8)
    # distillation losses, each relative to its first logged value, since
    # the methods' scales differ
    for name, _, desc in order:
        if name not in METHODS:
            continue
        curve = results[name]['losses']
        levels = [k for k in curve if k.startswith(f'loss_{name}')]
        if not levels:
            continue
        total = [(i, sum(curve[k][n][1] for k in levels))
                 for n, (i, _) in enumerate(curve[levels[0]])]
        ax_kd.plot([i for i, _ in total],
                   [v / max(total[0][1], 1e-12) for _, v in total],
                   label=f'{desc} ({len(levels)} levels)')
    ax_kd.set_title('Distillation loss / its initial value')
    ax_kd.set_xlabel('iteration')
    ax_kd.legend(fontsize=8)
    fig.suptitle(' / '.join(desc for _, _, desc in order))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.stage:
        return run_stage_worker(args)
    if args.fresh:
        shutil.rmtree(args.work_dir, ignore_errors=True)
        shutil.rmtree(args.data_root, ignore_errors=True)
    ensure_data(args)
    order = stages(args.methods)
    results = {}
    for name, config, _ in order:
        results[name] = run_stage(args, name, iters_per_stage(args, config))
    table = print_table(results, order)
    fig_path = osp.join(args.work_dir, 'demo.png')
    plot(results, order, fig_path)
    summary = dict(
        tiny=args.tiny, seed=args.seed, methods=args.methods, table=table,
        figure=fig_path,
        stages={n: {k: v for k, v in r.items() if k != 'losses'}
                for n, r in results.items()})
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    print(f'Results: {osp.join(args.work_dir, "results.json")}, '
          f'figure: {fig_path}')
    return summary


if __name__ == '__main__':
    main()
