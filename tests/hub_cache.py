"""The session's :class:`pcka_det.testing.hub_cache.HubCache` as a pytest
fixture: ``from hub_cache import hub_cache``."""
import os
import shutil

import pytest
from conftest import ROOT

from pcka_det.testing.hub_cache import HubCache

# One cache for the whole session: every test module that imports the
# fixture gets its own fixture definition (pytest keys session fixtures by
# definition), and all of them must share one TORCH_HOME and its files.
_SESSION: dict = {}


@pytest.fixture(scope='session')
def hub_cache(tmp_path_factory):
    """The session's :class:`HubCache`; ``TORCH_HOME`` points at it until
    the session ends, when its files are deleted."""
    created = 'cache' not in _SESSION
    if created:
        home = tmp_path_factory.mktemp('torch_home')
        _SESSION['cache'] = HubCache(str(home), root=ROOT)
        _SESSION['old'] = os.environ.get('TORCH_HOME')
    cache = _SESSION['cache']
    os.environ['TORCH_HOME'] = cache.home
    yield cache
    old = _SESSION.get('old')
    if old is None:
        os.environ.pop('TORCH_HOME', None)
    else:
        os.environ['TORCH_HOME'] = old
    if created:  # about 2 GB with every COCO config's teacher
        shutil.rmtree(cache.home, ignore_errors=True)
