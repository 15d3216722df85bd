"""Save student-only checkpoints at the end of training."""
import glob
import os.path as osp
from typing import Optional

from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmdet.registry import HOOKS
from ..export import export_student


@HOOKS.register_module()
class ExportStudentHook(Hook):
    """After training, write ``student_last.pth`` and ``student_best_*.pth``.

    The files hold only the student with plain mmdet keys, so
    ``tools/test.py <student config> work_dir/student_last.pth`` works in
    plain MMDetection.

    Args:
        out_dir (str, optional): Where to write; defaults to the work dir.
    """

    priority = 'VERY_LOW'  # after CheckpointHook has written its files

    def __init__(self, out_dir: Optional[str] = None) -> None:
        self.out_dir = out_dir

    def after_train(self, runner: Runner) -> None:
        if runner.rank != 0:
            return
        out_dir = self.out_dir or runner.work_dir
        last_file = osp.join(runner.work_dir, 'last_checkpoint')
        sources = {}
        if osp.isfile(last_file):
            with open(last_file) as f:
                sources['student_last.pth'] = f.read().strip()
        for best in glob.glob(osp.join(runner.work_dir, 'best_*.pth')):
            sources[f'student_{osp.basename(best)}'] = best
        for name, src in sources.items():
            dst = export_student(src, osp.join(out_dir, name))
            runner.logger.info(f'Student-only checkpoint saved to {dst}')
