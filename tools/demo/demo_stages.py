"""The demo's stages: which configs, with which ``--cfg-options``, and the
worker that trains and tests one of them (``tools/demo/demo.py --stage NAME``,
run in a subprocess by the demo).

Standard library imports only at the top: the demo's main process loads
torch when it needs it.
"""
import glob
import json
import os.path as osp
import time
from typing import Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_WORK_DIR = osp.join('work_dirs', 'demo')  # of the default detector
DEFAULT_DATA_ROOT = osp.join('data', 'synthetic')
STAGE_LOG = 'stage.log'  # in each stage's work dir: the demo made it
# Distillation methods: same student, teacher, data, schedule and seed.
METHODS = {
    'pcka': 'PCKA',
    'pkd': 'PKD',
    'cwd': 'CWD',
    'fitnet': 'FitNet',
    'crosskd': 'CrossKD',
    # stacked: PCKA on the FPN plus CrossKD on the head, or plus feature
    # MSE on the same levels (one reading of the paper's "Ours+mimic")
    'pcka_crosskd': 'PCKA + CrossKD',
    'pcka_fitnet': 'PCKA + FitNet',
}
# Toy pairs: configs/toy/<detector>_r18_toy.py (teacher),
# <detector>_thin-r18_toy.py (student) and, per method with a toy config,
# <method>_<detector>_r18_thin-r18_toy.py. Each has its own work dir, so
# one detector's stages never replace the other's.
DETECTORS = {
    'retinanet': dict(name='RetinaNet', work_dir=DEFAULT_WORK_DIR,
                      methods=tuple(METHODS)),
    'fcos': dict(name='FCOS', work_dir=osp.join('work_dirs', 'demo_fcos'),
                 methods=('pcka', )),
    # cross family: a two-stage teacher (P2-P6) for the one-stage student
    # (P3-P7), levels paired by stride at per-side output indices
    'faster_retina': dict(
        name='Faster R-CNN -> RetinaNet',
        work_dir=osp.join('work_dirs', 'demo_faster_retina'),
        methods=('pcka', ), teacher='faster_rcnn_r18_toy.py',
        student='retinanet_thin-r18_toy.py'),
}
TINY = dict(num_train=8, num_val=4, batch_size=4, max_epochs=1)


def stages(methods, detector: str = 'retinanet') -> list:
    """Every stage of a demo, in run order.

    Args:
        methods (Sequence[str]): Distillation methods (keys of ``METHODS``).
        detector (str): Toy pair (key of ``DETECTORS``).

    Returns:
        list[tuple[str, str, str]]: ``(name, config, description)``.
    """
    spec = DETECTORS[detector]
    teacher = spec.get('teacher', f'{detector}_r18_toy.py')
    student = spec.get('student', f'{detector}_thin-r18_toy.py')
    return [
        ('teacher', f'configs/toy/{teacher}', 'Teacher R18'),
        ('student', f'configs/toy/{student}', 'Student R18/4'),
    ] + [(m, f'configs/toy/{m}_{detector}_r18_thin-r18_toy.py',
          f'Student + {METHODS[m]}') for m in methods]


def is_distilled(args, name: str) -> bool:
    """Whether stage ``name`` distils from the demo's teacher: a method of
    the demo, or a stage ``args.distilled`` says is one (tools/study/study.py's
    ``pcka_x2_s1``)."""
    return name in METHODS or bool(getattr(args, 'distilled', False))


def stage_overrides(args, name: str, data_root: Optional[str] = None,
                    work_dir: Optional[str] = None) -> dict:
    """``--cfg-options`` of one stage: data location, seed, tiny mode, and
    ``args.stage_options`` if set (tools/study/study.py's loss weights).

    ``data_root`` and ``work_dir`` replace ``args``' (the fingerprint puts
    placeholders there: it hashes the data and the teacher instead).
    """
    from pcka_det.cli import data_root_options
    opts = data_root_options(data_root or osp.abspath(args.data_root))
    work_dir = work_dir or args.work_dir
    opts.update({
        'randomness.seed': args.seed,
        'work_dir': osp.join(work_dir, name),
    })
    if is_distilled(args, name):
        opts['model.teacher_ckpt'] = osp.join(work_dir, 'teacher',
                                              'model.pth')
    if args.tiny:
        opts.update({
            'train_cfg.max_epochs': TINY['max_epochs'],
            'train_cfg.val_interval': TINY['max_epochs'],
            'train_dataloader.batch_size': TINY['batch_size'],
            'default_hooks.logger.interval': 1,
        })
    opts.update(getattr(args, 'stage_options', None) or {})
    return opts


def run_stage_worker(args) -> None:
    """Train and test one stage in this process; write its result.json.

    Trains as ``tools/train.py`` does (:func:`pcka_det.train.build_runner`:
    the config with the stage's overrides, the dataset checks, the runner).
    """
    from mmengine.hooks import Hook

    from pcka_det.export import export_student, slim_checkpoint
    from pcka_det.fileio import atomic_write_text
    from pcka_det.train import build_runner

    name = args.stage
    config = getattr(args, 'stage_config', None) or {
        n: c for n, c, _ in stages(DETECTORS[args.detector]['methods'],
                                   args.detector)}[name]
    opts = stage_overrides(args, name)
    work_dir = opts['work_dir']
    start = time.time()
    runner = build_runner(osp.join(ROOT, config), opts)
    runner.train()
    train_time = time.time() - start

    class CountDetections(Hook):
        """Boxes predicted on the test set (CocoMetric returns no metric at
        all when there is none)."""
        count = 0

        def after_test_iter(self, runner, batch_idx, data_batch=None,
                            outputs=None):
            self.count += sum(len(o.pred_instances) for o in outputs or [])

    counter = CountDetections()
    runner.register_hook(counter, priority='LOWEST')
    metrics = runner.test()
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        last = f.read().strip()
    model_file = osp.join(work_dir, 'model.pth')
    if is_distilled(args, name):
        export_student(last, model_file)
    else:
        slim_checkpoint(last, model_file)
    result = dict(
        config=config,
        checkpoint=model_file,
        train_time_s=round(train_time, 1),
        # as runner.test() returned them; read_result checks and converts
        coco_metrics={k: float(v) for k, v in metrics.items()},
        num_detections=counter.count,
        losses=read_loss_curves(work_dir))
    atomic_write_text(osp.join(work_dir, 'result.json'),
                      json.dumps(result, indent=1))


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
