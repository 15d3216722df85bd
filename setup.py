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


def ext_modules():
    """The optional C++ operators (pcka_det/ops/csrc), built against torch.

    ``optional=True``: without a compiler (or with PCKA_DET_WITH_OPS=0) the
    install still succeeds and PCKA runs its PyTorch path.
    """
    if os.environ.get('PCKA_DET_WITH_OPS', '1') == '0':
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:  # isolated build without torch
        return [], {}
    ext = CppExtension(
        'pcka_det._ext', ['pcka_det/ops/csrc/resize_patches.cpp'],
        extra_compile_args=['-O3', '-fopenmp'],
        extra_link_args=['-fopenmp'],
        optional=True)
    return [ext], {'build_ext': BuildExtension}


def version():
    scope = {}
    with open(osp.join(ROOT, 'pcka_det', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


if __name__ == '__main__':
    add_mim_extension()
    extensions, cmdclass = ext_modules()
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
            ['.mim/configs/**/*', '.mim/tools/**/*', '.mim/model-index.yml',
             'ops/csrc/*.cpp']
        },
        install_requires=[
            'torch>=1.13', 'mmengine>=0.10.0,<1.0', 'mmcv>=2.0.0,<2.2.0',
            'mmdet>=3.0.0,<3.4.0', 'pycocotools', 'matplotlib'
        ],
        extras_require={
            'mmrazor': ['mmrazor==1.0.0', 'ordered-set', 'joblib'],
            'tests': ['pytest'],
        },
        ext_modules=extensions,
        cmdclass=cmdclass,
        zip_safe=False)
