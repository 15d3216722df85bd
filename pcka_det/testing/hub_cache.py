"""torch's hub cache filled with random weights under the real URLs' names.

The COCO configs start their student backbones from ``torchvision://``,
``open-mmlab://`` or ``https://`` checkpoints (mmdet's backbone
``init_cfg=dict(type='Pretrained', ...)``) and their teachers from a
``download.openmmlab.com`` URL (``model.teacher_ckpt``). Both are fetched
into ``torch.hub.get_dir()/checkpoints/<basename of the URL>``: MMEngine's
``load_from_http`` through ``torch.hub.load_state_dict_from_url``, the
teacher through :func:`pcka_det.checkpoint.read_checkpoint`. A file already
there is used and nothing is downloaded.

:class:`HubCache` writes, under a private ``TORCH_HOME``, one file per URL
with randomly initialised weights of the right architecture and key layout,
so that the real URL code paths run offline:

* ``torchvision://NAME``: resolved with MMEngine's
  ``get_torchvision_models()`` (as ``load_from_torchvision`` does); the
  state dict of ``torchvision.models.<arch>()``.
* ``open-mmlab://NAME`` / ``openmmlab://NAME``: resolved with MMEngine's
  ``get_external_models()`` and ``get_deprecated_model_names()`` (as
  ``load_from_openmmlab`` does); ``https://`` pretrained backbones (RTMDet's
  CSPNeXt): the mmdet backbone of the config, built at a fixed seed, saved
  as ``dict(state_dict=..., meta=...)`` with the ``init_cfg``'s ``prefix``
  put in front of every key (``PretrainedInit`` strips it again).
* ``model.teacher_ckpt``: the teacher detector
  (``pcka_det.models.build_detector(cfg.model.teacher)``) at a fixed seed,
  saved as an mmdet model-zoo checkpoint, ``dict(state_dict=..., meta=...)``.

Only the URLs that the user's path loads are written: the student's
backbone ``init_cfg`` (the runner's ``init_weights``) and ``teacher_ckpt``
(the distiller's constructor). The teacher's own backbone ``init_cfg`` is
never loaded (the teacher is outside the distiller's module tree, so
``init_weights`` does not reach it; its weights come from
``teacher_ckpt``): ``fill(..., teacher_backbone=True)`` writes it too.

Nothing is mocked: without torchvision, or with an empty cache, the code
under test fails on the download attempt (no network), and so do the tests.
Files are memoised by name for the session (several configs share a
teacher, all share ``torchvision://resnet50``).

The tests use it through a session fixture (``tests/hub_cache.py``)::

    def test_x(hub_cache):
        hub_cache.fill(['configs/pcka/retina_r101_r50.py'])
        # os.environ['TORCH_HOME'] is hub_cache.home for the session;
        # pass hub_cache.env() to subprocesses
"""
import copy
import os
import os.path as osp
import shutil
from typing import Dict, Iterable, List, Optional
from urllib.parse import urlparse

import torch

# Fixed seeds: the same URL always gets the same weights in a session.
BACKBONE_SEED = 1234
TEACHER_SEED = 4321

TORCHVISION_PREFIXES = ('torchvision://', 'modelzoo://')
OPENMMLAB_PREFIXES = ('open-mmlab://', 'openmmlab://')
HTTP_PREFIXES = ('http://', 'https://')


def resolve_url(checkpoint: str) -> str:
    """The http(s) URL MMEngine downloads for ``checkpoint``.

    Mirrors ``mmengine.runner.checkpoint.load_from_torchvision`` and
    ``load_from_openmmlab``.
    """
    from mmengine.runner.checkpoint import (get_deprecated_model_names,
                                            get_external_models,
                                            get_torchvision_models)
    if checkpoint.startswith(HTTP_PREFIXES):
        return checkpoint
    if checkpoint.startswith(TORCHVISION_PREFIXES):
        # the name as is (MMEngine 0.10.7 looks it up unchanged): 'resnet50',
        # 'resnet50.imagenet1k_v1', ...
        return get_torchvision_models()[checkpoint.split('://', 1)[1]]
    if checkpoint.startswith(OPENMMLAB_PREFIXES):
        name = checkpoint.split('://', 1)[1]
        deprecated = get_deprecated_model_names()
        name = deprecated.get(name, name)
        url = get_external_models()[name]
        if not url.startswith(HTTP_PREFIXES):
            raise NotImplementedError(
                f'{checkpoint} is a file in MMEngine\'s home ({url}), not a '
                'URL; hub_cache only serves URLs')
        return url
    raise ValueError(f'Not a URL or model-zoo name: {checkpoint}')


def cache_name(url: str) -> str:
    """The file name torch's hub cache (and pcka_det) stores ``url`` under."""
    return osp.basename(urlparse(url).path)


def _pretrained(init_cfg) -> Optional[dict]:
    """The ``Pretrained`` entry of an ``init_cfg`` (dict or list), if any."""
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    for cfg in cfgs:
        if cfg and cfg.get('type') == 'Pretrained' and cfg.get('checkpoint'):
            return dict(cfg)
    return None


def _torchvision_state(name: str) -> dict:
    import torchvision  # a missing torchvision fails here, never skips
    # a get_torchvision_models() key: 'resnet50', 'resnet50.imagenet1k_v1'
    arch = name.split('.')[0]
    torch.manual_seed(BACKBONE_SEED)
    model = torchvision.models.get_model(arch, weights=None)
    return model.state_dict()


def _backbone_state(backbone_cfg: dict, prefix: Optional[str]) -> dict:
    from mmdet.registry import MODELS
    cfg = copy.deepcopy(dict(backbone_cfg))
    cfg['init_cfg'] = None
    torch.manual_seed(BACKBONE_SEED)
    backbone = MODELS.build(cfg)
    state = backbone.state_dict()
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        state = {prefix + k: v for k, v in state.items()}
    return dict(state_dict=state,
                meta=dict(note='random weights written by pcka_det.testing.hub_cache'))


def _teacher_state(teacher_spec: dict) -> dict:
    from mmdet.datasets import CocoDataset
    from pcka_det.models import build_detector
    torch.manual_seed(TEACHER_SEED)
    teacher = build_detector(teacher_spec)
    return dict(
        state_dict=teacher.state_dict(),
        meta=dict(mmdet_version='3.3.0',
                  CLASSES=tuple(CocoDataset.METAINFO['classes']),
                  epoch=12, iter=0,
                  note='random weights written by pcka_det.testing.hub_cache'))


class HubCache:
    """A ``TORCH_HOME`` whose ``hub/checkpoints`` serves the configs' URLs.

    Args:
        home (str): The directory used as ``TORCH_HOME``.
        root (str, optional): What relative config paths are relative to
            (default: the current directory).
    """

    def __init__(self, home: str, root: Optional[str] = None) -> None:
        self.home = str(home)
        self.root = root
        self.dir = osp.join(self.home, 'hub', 'checkpoints')
        os.makedirs(self.dir, exist_ok=True)
        # file name -> the URL it was written for
        self.files: Dict[str, str] = {}

    def env(self, **extra) -> dict:
        """``os.environ`` for a subprocess that reads this cache."""
        return dict(os.environ, TORCH_HOME=self.home, **extra)

    def path(self, url_or_name: str) -> str:
        """The cached file of a URL or ``torchvision://``/``open-mmlab://``
        name."""
        return osp.join(self.dir, cache_name(resolve_url(url_or_name)))

    def load(self, url_or_name: str) -> dict:
        """What the cache holds for a URL (a state dict or a checkpoint)."""
        return torch.load(self.path(url_or_name), map_location='cpu',
                          weights_only=True)

    def _write(self, url: str, make) -> str:
        name = cache_name(url)
        path = osp.join(self.dir, name)
        if name in self.files:
            if self.files[name] != url:
                raise ValueError(f'{url} and {self.files[name]} share the '
                                 f'hub cache name {name}')
            return path
        tmp = path + '.partial'
        torch.save(make(), tmp)
        os.replace(tmp, path)
        self.files[name] = url
        return path

    def fill_config(self, config: str,
                    teacher_backbone: bool = False,
                    teacher: bool = True) -> List[str]:
        """Write the files the config's user path downloads.

        Builds in mmdet's scope whatever the caller's default scope is.

        Args:
            config (str): Config path (relative to the repository root,
                absolute, or ``pcka_det::``/``mmdet::``).
            teacher_backbone (bool): Also the teacher's backbone
                ``init_cfg`` URL, which no user path loads today.
            teacher (bool): Write the teacher checkpoint; False for a test
                that builds its teacher random instead (DINO Swin-L's would
                be about 0.9 GB).

        Returns:
            list[str]: The cached files (written now or before).
        """
        from mmengine.registry import DefaultScope
        from mmdet.utils import register_all_modules
        import pcka_det  # noqa: F401  (the pcka_det:: scope)
        register_all_modules(init_default_scope=False)
        # the fixed seeds below leave the caller's RNG as it was
        with DefaultScope.overwrite_default_scope('mmdet'), \
                torch.random.fork_rng():
            return self._fill_config(config, teacher_backbone, teacher)

    def _fill_config(self, config: str, teacher_backbone: bool,
                     teacher: bool) -> List[str]:
        from mmengine.config import Config
        from pcka_det.config_paths import resolve_config_path
        from pcka_det.models.builder import load_model_cfg
        path = config
        if '::' not in path and not osp.isabs(path):
            path = osp.join(self.root or os.getcwd(), path)
        cfg = Config.fromfile(resolve_config_path(path))
        model = cfg.model
        written = []
        if 'student' in model and 'teacher' in model:
            teacher_ckpt = model.get('teacher_ckpt')
            sides = [('student', load_model_cfg(model.student))]
            if teacher_backbone:
                sides.append(('teacher', load_model_cfg(model.teacher)))
            if teacher and teacher_ckpt and \
                    teacher_ckpt.startswith(HTTP_PREFIXES):
                spec = model.teacher
                written.append(self._write(
                    teacher_ckpt, lambda: _teacher_state(spec)))
        else:  # a plain detector config
            sides = [('model', model)]
        for _, det in sides:
            backbone = det.get('backbone', {})
            pre = _pretrained(backbone.get('init_cfg'))
            if pre is None:
                continue
            ckpt = pre['checkpoint']
            url = resolve_url(ckpt)
            if ckpt.startswith(TORCHVISION_PREFIXES):
                name = ckpt.split('://', 1)[1]
                written.append(self._write(
                    url, lambda: _torchvision_state(name)))
            else:
                written.append(self._write(
                    url, lambda: _backbone_state(backbone, pre.get('prefix'))))
        return written

    def fill(self, configs: Iterable[str], **kwargs) -> List[str]:
        """:meth:`fill_config` for each config; returns all cached files."""
        out = []
        for config in configs:
            out += self.fill_config(config, **kwargs)
        return out
