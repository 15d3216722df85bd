"""Config paths as users write them: ``pkg::rel/path.py`` (``mmdet::``,
``pcka_det::``) or a file path."""
import os.path as osp

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
