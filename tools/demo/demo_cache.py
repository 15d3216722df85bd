"""The demo's stage cache: a finished stage is reused only while its
fingerprint (``fingerprint.json`` in its work dir) is unchanged.

The fingerprint holds what determines a stage's result: the resolved config
with its ``_base_`` chain and the model configs it loads, the demo's
``--cfg-options`` (paths as placeholders), the annotation files and, for a
distilled stage, the teacher checkpoint.
"""
import functools
import hashlib
import json
import os
import os.path as osp
import shutil
from typing import Tuple

from demo_stages import ROOT, STAGE_LOG, is_distilled, stage_overrides

FINGERPRINT = 'fingerprint.json'  # in each stage's work dir


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _cfg_paths(obj) -> list:
    """Every ``cfg_path`` value in a (nested) config dict."""
    if isinstance(obj, dict):
        found = [obj['cfg_path']] if isinstance(obj.get('cfg_path'),
                                                str) else []
        return found + [p for v in obj.values() for p in _cfg_paths(v)]
    if isinstance(obj, (list, tuple)):
        return [p for v in obj for p in _cfg_paths(v)]
    return []


def load_config(path: str):
    """``Config.fromfile`` of a config path or ``pkg::`` name, once per file
    and process (2 s each with ``mmdet::`` bases; the demo's configs do not
    change while it runs)."""
    import pcka_det  # noqa: F401  (the pcka_det:: scope)
    from pcka_det.config_paths import resolve_config_path
    return _load_config_file(osp.realpath(resolve_config_path(path)))


@functools.lru_cache(maxsize=None)
def _load_config_file(path: str):
    from mmengine.config import Config
    return Config.fromfile(path)


def clear_config_cache() -> None:
    """Forget the configs :func:`load_config` loaded (for files that
    changed since)."""
    _load_config_file.cache_clear()


def config_digest(config: str) -> str:
    """sha256 of a config as loaded (its ``_base_`` chain resolved), plus
    the configs its ``cfg_path`` entries load at build time (a distiller's
    student and teacher), recursively."""
    parts, todo, seen = [], [config], set()
    while todo:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.add(path)
        cfg = load_config(path).to_dict()
        parts.append(_canonical(cfg))  # contents only: paths may move
        todo += _cfg_paths(cfg)
    return hashlib.sha256('\n'.join(parts).encode()).hexdigest()


def data_digest(data_root: str) -> str:
    """sha256 of the train and val annotation files."""
    digest = hashlib.sha256()
    for split in ('train', 'val'):
        digest.update(sha256_file(osp.join(
            data_root, 'annotations', f'instances_{split}.json')).encode())
    return digest.hexdigest()


def stage_fingerprint(args, name: str, config: str) -> dict:
    """What determines a stage's result: the config (``_base_`` chain and
    loaded model configs), the demo's overrides (seed, --tiny settings; paths
    as placeholders), the annotations and, for a distilled stage, the
    teacher checkpoint."""
    fingerprint = dict(
        config=config,
        config_sha256=config_digest(osp.join(ROOT, config)),
        cfg_options=stage_overrides(args, name, data_root='<data_root>',
                                    work_dir='<work_dir>'),
        data_sha256=data_digest(args.data_root))
    if is_distilled(args, name):
        teacher = osp.join(args.work_dir, 'teacher', 'model.pth')
        fingerprint['teacher_sha256'] = sha256_file(teacher)
    return fingerprint


def describe_change(old: dict, new: dict) -> str:
    """What differs between two fingerprints, in words."""
    what = []
    if old.get('config') != new['config'] or \
            old.get('config_sha256') != new['config_sha256']:
        what.append(f'the config {new["config"]} (or a config it uses) '
                    'changed')
    old_opts, new_opts = old.get('cfg_options', {}), new['cfg_options']
    changed = [f'{k}: {old_opts.get(k, "unset")} -> {new_opts.get(k, "unset")}'
               for k in sorted(set(old_opts) | set(new_opts))
               if old_opts.get(k) != new_opts.get(k)]
    if changed:
        what.append('the settings changed (' + ', '.join(changed) + ')')
    if old.get('data_sha256') != new['data_sha256']:
        what.append('the dataset changed')
    if old.get('teacher_sha256') != new.get('teacher_sha256'):
        what.append('the teacher checkpoint changed')
    return '; '.join(what) or 'its fingerprint changed'


def reuse_check(out_dir: str, fingerprint: dict) -> Tuple[bool, str]:
    """``(reuse, why not)`` for the stage in ``out_dir``."""
    if not osp.isfile(osp.join(out_dir, 'result.json')):
        return False, ''
    path = osp.join(out_dir, FINGERPRINT)
    if not osp.isfile(path):
        return False, (f'{out_dir} has a result but no {FINGERPRINT} (made '
                       'by an older demo, or interrupted)')
    with open(path) as f:
        old = json.load(f)
    if old == fingerprint:
        return True, ''
    return False, describe_change(old, fingerprint)


def clear_stage_dir(out_dir: str) -> bool:
    """Delete a stage's work dir if the demo made it (it has a stage.log)."""
    if osp.isfile(osp.join(out_dir, STAGE_LOG)):
        shutil.rmtree(out_dir)
        return True
    return False


def prepare_stage_dir(out_dir: str) -> None:
    """Make ``out_dir`` ready for its stage to (re)run: the demo's earlier
    run there deleted, no result or fingerprint left."""
    clear_stage_dir(out_dir)
    for stale in ('result.json', FINGERPRINT):
        if osp.isfile(osp.join(out_dir, stale)):
            os.remove(osp.join(out_dir, stale))
    os.makedirs(out_dir, exist_ok=True)


def save_fingerprint(out_dir: str, fingerprint: dict) -> None:
    """Record the fingerprint of the stage that finished in ``out_dir``."""
    from pcka_det.fileio import atomic_write_text
    atomic_write_text(osp.join(out_dir, FINGERPRINT),
                      json.dumps(fingerprint, indent=1))
