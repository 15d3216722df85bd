"""Save student-only checkpoints at the end of training."""
import os.path as osp
from typing import Dict, Optional

from mmengine.hooks import CheckpointHook, Hook
from mmengine.runner import Runner

from mmdet.registry import HOOKS
from ...export import export_student
from ...options import Contract, Option, declare, validate

CONTRACT = declare(Contract(
    'ExportStudentHook', 'default_hooks.export_student',
    'Writes student_last.pth (plain mmdet keys) when training ends.',
    options=(Option('out_dir', 'str', None, 'where to write (default: the '
                    'work dir)', nullable=True), )))


def _checkpoints_to_export(runner: Runner) -> Dict[str, str]:
    """``{student file name: source checkpoint}`` for the last and best
    checkpoints, wherever ``CheckpointHook`` wrote them (its ``out_dir``)."""
    sources = {}
    last_file = osp.join(runner.work_dir, 'last_checkpoint')
    if osp.isfile(last_file):
        with open(last_file) as f:
            sources['student_last.pth'] = f.read().strip()
    for hook in runner.hooks:
        if not isinstance(hook, CheckpointHook):
            continue
        best = [getattr(hook, 'best_ckpt_path', None)]
        best += list(getattr(hook, 'best_ckpt_path_dict', {}).values())
        for path in filter(None, best):
            sources[f'student_{osp.basename(path)}'] = path
    return sources


@HOOKS.register_module()
class ExportStudentHook(Hook):
    """After training, write ``student_last.pth`` and ``student_best_*.pth``.

    The files hold only the student with plain mmdet keys, so
    ``tools/test.py <student config> work_dir/student_last.pth`` works in
    plain MMDetection. ``DistillRunner`` adds this hook to every distillation
    run, so a config needs it only to change ``out_dir``.

    Args:
        out_dir (str, optional): Where to write; defaults to the work dir.
    """

    priority = 'VERY_LOW'  # after CheckpointHook has written its files

    def __init__(self, out_dir: Optional[str] = None) -> None:
        validate('ExportStudentHook', dict(out_dir=out_dir))
        self.out_dir = out_dir

    def after_train(self, runner: Runner) -> None:
        if runner.rank != 0:
            return
        out_dir = self.out_dir or runner.work_dir
        for name, src in _checkpoints_to_export(runner).items():
            if not osp.isfile(src):
                raise FileNotFoundError(
                    f'ExportStudentHook: checkpoint "{src}" is gone; cannot '
                    f'write {name}.')
            dst = export_student(src, osp.join(out_dir, name))
            runner.logger.info(f'Student-only checkpoint saved to {dst}')
