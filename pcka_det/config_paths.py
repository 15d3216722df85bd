"""Config paths as users write them: ``pkg::rel/path.py`` (``mmdet::``,
``pcka_det::``) or a file path."""
import os.path as osp
import warnings
from typing import Dict

from mmengine.config import utils as _mmengine_config_utils
from mmengine.fileio import load as mmengine_load
from mmengine.utils import get_installed_path


def resolve_config_path(path: str) -> str:
    """Turn ``'pkg::rel/path.py'`` into a file path; plain paths pass.

    Args:
        path (str): ``mmdet::...``, ``pcka_det::...`` or a file path.

    Returns:
        str: Absolute path to an existing file.
    """
    if '::' in path:
        package, rel = path.split('::', 1)
        try:
            root = get_installed_path(package)
        except Exception as e:  # the package is not installed
            raise FileNotFoundError(
                f'Cannot resolve "{path}": package "{package}" is not '
                f'installed ({e}).') from e
        full = osp.join(root, '.mim', 'configs', rel)
    else:
        full = osp.abspath(osp.expanduser(path))
    if not osp.isfile(full):
        raise FileNotFoundError(f'Config "{path}" not found (looked at {full})')
    return full


# MMEngine resolves every ``pkg::`` reference in a config (``_base_ =
# 'mmdet::_base_/models/retinanet_r50_fpn.py'``) by first reading the
# package's model index and every metafile it lists (mmdet: 1 + 95 YAML
# files, about 0.25 s on a 2-core machine), then falling back to the plain
# path when the name is not a model-zoo config (with MMEngine 0.10.7, every
# time: it strips ``.py`` from the name, the metafiles keep it). Nothing is
# cached, so a toy
# run that loads its distillation, student and teacher configs (12 such
# references) spent about 3 s re-reading the same files. The index below is
# read once per package and process and answers exactly as MMEngine's
# ``_get_cfg_metainfo`` does (the same entries, the same ValueError).
_METAINFO: Dict[str, Dict[str, dict]] = {}


def _read_metainfo(package_path: str) -> Dict[str, dict]:
    """Model-zoo configs of the package at ``package_path``, by name
    (``retinanet/retinanet_r50_fpn_1x_coco``), the first entry of each."""
    index = mmengine_load(osp.join(package_path, '.mim', 'model-index.yml'))
    models: Dict[str, dict] = {}
    for meta_path in index['Import']:
        meta = mmengine_load(osp.join(package_path, '.mim', meta_path))
        for model_cfg in meta['Models']:
            if 'Config' not in model_cfg:
                warnings.warn(f'There is not `Config` define in {model_cfg}')
                continue
            models.setdefault(model_cfg['Config'].partition('/')[-1],
                              model_cfg)
    return models


def cached_cfg_metainfo(package_path: str, cfg_path: str) -> dict:
    """MMEngine's ``_get_cfg_metainfo`` with the package's metafiles read
    once per process.

    Args:
        package_path (str): The installed package's folder.
        cfg_path (str): A config name without ``.py``
            (``retinanet/retinanet_r50_fpn_1x_coco``).

    Returns:
        dict: The config's metafile entry.

    Raises:
        ValueError: ``cfg_path`` is not a model-zoo config of the package
            (MMEngine then resolves it as a plain path under ``.mim/``).
    """
    models = _METAINFO.get(package_path)
    if models is None:
        models = _METAINFO[package_path] = _read_metainfo(package_path)
    if cfg_path not in models:
        raise ValueError(f'Expected configs: {models.keys()}, but got '
                         f'{cfg_path}')
    return models[cfg_path]


def cache_metafile_reads() -> None:
    """Make MMEngine's ``pkg::`` lookups use :func:`cached_cfg_metainfo`
    (one of the process-wide changes listed in ``pcka_det/__init__.py``)."""
    if hasattr(_mmengine_config_utils, '_get_cfg_metainfo'):
        _mmengine_config_utils._get_cfg_metainfo = cached_cfg_metainfo
