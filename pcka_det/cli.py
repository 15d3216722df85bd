"""What tools/train.py, tools/test.py and the demo share."""
import argparse
import ast
import os
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config, DictAction

from mmdet.utils import setup_cache_size_limit_of_dynamo
from .cpu_distributed import allow_cpu_distributed
from .config_paths import resolve_config_path
from .options import OptionError, Rule, parse_command, validate_config

# Top-level variables our configs copy into ``model`` (``teacher_ckpt =
# URL`` then ``model = dict(teacher_ckpt=teacher_ckpt)``): changing the
# variable after the copy changes nothing that runs.
COPIED_INTO_MODEL = ('teacher_ckpt', )


def _sets_in_file(path: str, name: str) -> tuple:
    """Whether the config file ``path`` itself assigns the top-level
    variable ``name``, and whether it passes ``name=`` inside ``model``."""
    try:
        tree = ast.parse(open(path).read())
    except (OSError, SyntaxError):
        return False, False
    top = in_model = False
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if name in targets:
            top = True
        if 'model' in targets:
            in_model |= any(isinstance(n, ast.keyword) and n.arg == name
                            for n in ast.walk(node.value))
    return top, in_model


def check_copied_variables(cfg: Config, path: str,
                           cfg_options: Optional[dict] = None) -> None:
    """Refuse a top-level variable changed after the config copied it into
    ``model`` (rule "teacher-ckpt-override").

    ``--cfg-options teacher_ckpt=X``, or a child config that sets
    ``teacher_ckpt = 'X'`` without ``model.teacher_ckpt``, changes the
    variable and not the model: the run would distil from the base's
    teacher. Setting ``model.teacher_ckpt`` (README's way) stays valid.

    Args:
        cfg (Config): The loaded config, CLI overrides applied.
        path (str): The config file.
        cfg_options (dict, optional): The ``--cfg-options``.

    Raises:
        OptionError: Naming both values and the fix.
    """
    opts = cfg_options or {}
    model = cfg.get('model')
    for name in COPIED_INTO_MODEL:
        if name not in cfg or not isinstance(model, dict) or \
                name not in model or model[name] == cfg[name] or \
                f'model.{name}' in opts:
            continue
        if name in opts:
            by = f'--cfg-options {name}={opts[name]}'
        else:
            top, in_model = _sets_in_file(path, name)
            if not top or in_model:
                continue  # the file set model.<name> itself, on purpose
            by = f'{path} sets {name} = {cfg[name]!r}'
        raise OptionError(
            f'{by}, but model.{name} is still {model[name]!r}: the config '
            f'copied {name} into model before the change, so the run would '
            f'use the old one (rule "{name.replace("_", "-")}-override"). '
            f'Set model.{name} instead (--cfg-options model.{name}=... or '
            f'model = dict({name}=...) in the config).')


def prepare_cfg(config: str,
                cfg_options: Optional[dict] = None,
                work_dir: Optional[str] = None,
                launcher: str = 'none') -> Config:
    """Load ``config`` and apply the CLI overrides as mmdet's tools do.

    Args:
        config (str): Config path (``pcka_det::``/``mmdet::`` scopes work).
        cfg_options (dict, optional): ``--cfg-options`` overrides.
        work_dir (str, optional): ``--work-dir``; defaults to
            ``./work_dirs/<config name>``.
        launcher (str): ``none``, ``pytorch``, ``slurm`` or ``mpi``.

    Returns:
        Config: The config ready for ``Runner.from_cfg``.
    """
    setup_cache_size_limit_of_dynamo()
    cfg = Config.fromfile(resolve_config_path(config))
    cfg.launcher = launcher
    # Checked checkpoint loading for any config, the student export for
    # distillers (see pcka_det.engine.runner); a config may name its own runner.
    cfg.setdefault('runner_type', 'DistillRunner')
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    check_copied_variables(cfg, resolve_config_path(config), cfg_options)
    # every declared component where it sits, before anything is built
    validate_config(cfg)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config.split('::')[-1]))[0])
    if launcher != 'none' and not torch.cuda.is_available():
        # NCCL needs GPUs; gloo runs the same code on CPUs, where DDP must
        # not be given device ids.
        allow_cpu_distributed()
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
        cfg.env_cfg.dist_cfg.backend = 'gloo'
        if cfg.get('model_wrapper_cfg') is None:
            cfg.model_wrapper_cfg = dict(
                type='MMDistributedDataParallel',
                device_ids=None,
                broadcast_buffers=False,
                find_unused_parameters=cfg.get('find_unused_parameters',
                                               False))
    return cfg


# What each launcher reads from the environment (MMEngine's init_dist), and
# what sets it
LAUNCHER_ENV = {
    'pytorch': (('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
                'torchrun (tools/dist_train.sh)'),
    'slurm': (('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
              'srun (tools/slurm_train.sh)'),
    'mpi': (('OMPI_COMM_WORLD_LOCAL_RANK', 'OMPI_COMM_WORLD_RANK',
             'OMPI_COMM_WORLD_SIZE'), 'Open MPI\'s mpirun'),
}


def _launcher_environment(values: dict) -> Optional[str]:
    launcher = values['--launcher']
    names, starter = LAUNCHER_ENV.get(launcher, ((), ''))
    missing = [n for n in names if n not in os.environ]
    if missing:
        return (f'--launcher {launcher} needs {", ".join(missing)} in the '
                f'environment, which {starter} sets: start the command '
                'through it, or drop --launcher for one process')
    return None


LAUNCHER_RULE = Rule(
    'launcher-environment', 'a launcher other than none needs the '
    'variables its starter sets (torchrun, srun, mpirun); refused before '
    'the config is read, not a KeyError in MMEngine', _launcher_environment)


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    """The flags train.py and test.py share with mmdet's tools."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument(
        '--local_rank', '--local-rank', type=int, default=0,
        help='set by torch.distributed.launch (torchrun sets LOCAL_RANK '
        'instead)')


def parse_runtime_args(parser: argparse.ArgumentParser, command: str,
                       argv: Optional[list] = None) -> argparse.Namespace:
    """Parse and check the flags against ``command``'s contract, and
    export ``LOCAL_RANK`` as torch.distributed.launch does."""
    args = parse_command(parser, command, argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def data_root_options(data_root: str,
                      val_ann: str = 'annotations/instances_val.json'
                      ) -> dict:
    """``--cfg-options`` that point a config's train/val/test datasets and
    evaluators at another COCO-style ``data_root``.

    Args:
        data_root (str): Dataset root.
        val_ann (str): Validation annotation file, relative to the root.

    Returns:
        dict: The five overrides.
    """
    root = str(data_root).rstrip('/') + '/'
    return {
        'train_dataloader.dataset.data_root': root,
        'val_dataloader.dataset.data_root': root,
        'test_dataloader.dataset.data_root': root,
        'val_evaluator.ann_file': root + val_ann,
        'test_evaluator.ann_file': root + val_ann,
    }
