"""Atomic file writes: a reader (or a resumed job) sees the old file or the
complete new one, never a part, whatever kills the writer."""
import os
import os.path as osp
from typing import Any

import torch


def fsync_replace(tmp: str, dst: str) -> str:
    """Flush ``tmp`` to disk, rename it to ``dst`` and flush the directory.

    Args:
        tmp (str): A complete file, in the same directory as ``dst``.
        dst (str): Final path.

    Returns:
        str: ``dst``.
    """
    with open(tmp, 'rb+') as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)
    try:  # the rename itself is durable once the directory is flushed
        fd = os.open(osp.dirname(osp.abspath(dst)), os.O_RDONLY)
    except OSError:
        return dst
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)
    return dst


def atomic_write_text(path: str, text: str) -> str:
    """Write ``text`` to ``path`` through ``<path>.tmp`` and a rename.

    Args:
        path (str): Destination.
        text (str): Content.

    Returns:
        str: ``path``.
    """
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    return fsync_replace(tmp, path)


def atomic_torch_save(obj: Any, path: str) -> str:
    """``torch.save`` to ``<path>.tmp``, then :func:`fsync_replace`.

    Args:
        obj: What to save.
        path (str): Destination.

    Returns:
        str: ``path``.
    """
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp'
    torch.save(obj, tmp)
    return fsync_replace(tmp, path)
