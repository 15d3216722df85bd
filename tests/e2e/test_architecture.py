"""docs/architecture.md describes the package as it is: its module tables
name every module of ``pcka_det``, and only modules that exist."""
import glob
import os.path as osp
import re

from conftest import ROOT

PACKAGE = osp.join(ROOT, 'pcka_det')


def _modules_on_disk():
    found = set()
    for path in glob.glob(osp.join(PACKAGE, '**', '*.py'), recursive=True):
        if osp.basename(path) != '__init__.py':
            found.add(osp.relpath(path, PACKAGE))
    return found


def _modules_in_doc():
    text = open(osp.join(ROOT, 'docs', 'architecture.md')).read()
    package = text.split('## The package, module by module', 1)[1]
    package = package.split('## Outside the package', 1)[0]
    named = set()
    for row in package.splitlines():
        if not row.startswith('| `'):
            continue
        cell = row.split('|')[1]
        named |= set(re.findall(r'`([\w/]+\.py)`', cell))
    return named


def test_architecture_lists_every_module():
    on_disk, in_doc = _modules_on_disk(), _modules_in_doc()
    assert len(on_disk) > 30
    assert sorted(on_disk - in_doc) == [], 'modules missing from the doc'
    assert sorted(in_doc - on_disk) == [], 'the doc names modules that ' \
        'do not exist'


def test_readme_layout_points_to_the_architecture():
    readme = open(osp.join(ROOT, 'README.md')).read()
    layout = readme.split('## Layout', 1)[1].split('\n## ', 1)[0]
    assert 'docs/architecture.md' in layout
    assert '```' not in layout  # no second, drifting copy of the tree
