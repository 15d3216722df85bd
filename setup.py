import os
import os.path as osp
import shutil

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))


def add_mim_extension():
    """Expose configs/, tools/, model-index.yml under pcka_det/.mim.

    MMEngine resolves ``pcka_det::x.py`` to ``<package>/.mim/configs/x.py``.
    Editable installs get symlinks (edits show up at once); other installs
    get copies that ship as package data.
    """
    mim = osp.join(ROOT, 'pcka_det', '.mim')
    os.makedirs(mim, exist_ok=True)
    editable = 'develop' in os.sys.argv or 'editable_wheel' in os.sys.argv
    for name in ('configs', 'tools', 'model-index.yml'):
        src, dst = osp.join(ROOT, name), osp.join(mim, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if editable:
            os.symlink(osp.relpath(src, mim), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copy(src, dst)


def version():
    scope = {}
    with open(osp.join(ROOT, 'pcka_det', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


if __name__ == '__main__':
    add_mim_extension()
    setup(
        # Not "pcka_det": MMEngine resolves "pcka_det::" through the
        # distribution of that name, whose location is site-packages even for
        # editable installs; under another name it falls back to the import
        # path of the module, which is right for every kind of install.
        name='pcka-detection',
        version=version(),
        description='Patch-based CKA knowledge distillation for MMDetection',
        long_description=open(osp.join(ROOT, 'README.md')).read(),
        long_description_content_type='text/markdown',
        license='Apache-2.0',
        python_requires='>=3.8',
        packages=find_packages(exclude=('tests', 'configs', 'tools')),
        include_package_data=True,
        package_data={
            'pcka_det':
            ['.mim/configs/**/*', '.mim/tools/**/*', '.mim/model-index.yml']
        },
        install_requires=[
            # torchvision: mmdet's `torchvision://` backbone inits (the
            # COCO students) import it
            'torch>=1.13', 'torchvision', 'mmengine>=0.10.0,<1.0', 'mmcv>=2.0.0,<2.2.0',
            'mmdet>=3.0.0,<3.4.0', 'pycocotools', 'matplotlib'
        ],
        extras_require={
            'mmrazor': ['mmrazor==1.0.0', 'ordered-set', 'joblib'],
            'tests': ['pytest'],
        },
        zip_safe=False)
