#!/usr/bin/env bash
# The wheels a bare GPU machine needs to run pcka_det, built here.
#
# The lent GPU machine (device tool) has Python 3.12, torch 2.11.0+cu130,
# numpy, scipy, matplotlib, opencv-python-headless, pillow, pyyaml, rich,
# tqdm and six, but no mmcv, mmengine or mmdet and no network. This script
# puts in .whl/ (ignored; what the device tool carries) the cp312 wheels
# it lacks: mmengine, mmdet, pycocotools and their missing pure-Python
# needs from the registry, and mmcv 2.1.0 compiled here with its CUDA ops
# for sm_90 (H100/H200) only, against torch 2.11.0 in a Python 3.12 venv.
#
#   bash tools/device_bundle.sh build    # here: .whl/ (mmcv's CUDA build: long)
#   bash tools/device_bundle.sh verify   # here: install into a clean cp312 venv
#   bash tools/device_bundle.sh report [gpu_report.py args]
#                                        # there: install, then the GPU report
#
# Environment: PY312 (a python3.12, default: pyenv's or PATH's), CUDA_HOME
# (default /usr/local/cuda), MAX_JOBS (parallel nvcc jobs, default 2),
# BUILD (build venvs, default .device/), WHL (default .whl/).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD:-$ROOT/.device}"
WHL="${WHL:-$ROOT/.whl}"
TORCH=2.11.0          # what the GPU machine has; mmcv's ABI must match it
ARCH=9.0              # sm_90: H100 and H200
# The device's image lacks exactly these (its own numpy, scipy, opencv,
# matplotlib, pillow, pyyaml, rich, tqdm and six serve): mmengine needs
# addict, yapf (-> platformdirs), termcolor; mmdet needs pycocotools,
# shapely, terminaltables.
# setuptools<81 keeps pkg_resources, which MMEngine imports to resolve
# `pkg::` config paths (the device's setuptools may be newer).
PURE=(mmengine==0.10.7 mmdet==3.3.0 pycocotools addict yapf platformdirs
      termcolor terminaltables shapely 'setuptools<81')
# What the device's image holds that these wheels import, for `verify`'s
# clean venv to stand in for it.
DEVICE_IMAGE=(torchvision==0.26.0 numpy scipy matplotlib
              opencv-python-headless pillow pyyaml rich tqdm six packaging)

py312() {
  if [ -n "${PY312:-}" ]; then echo "$PY312"; return; fi
  local p
  for p in "$(command -v python3.12 || true)" \
           "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    if [ -x "$p" ] && "$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      echo "$p"; return
    fi
  done
  echo "device_bundle: no Python 3.12 found; set PY312=/path/to/python3.12" >&2
  exit 2
}

# venv DIR: a Python 3.12 venv with torch $TORCH (the registry's cp312
# wheel is the CUDA 13 build) and the given extra packages.
venv() {
  local dir="$1"; shift
  if [ ! -x "$dir/bin/python" ]; then "$(py312)" -m venv "$dir"; fi
  "$dir/bin/python" -m pip install -q --disable-pip-version-check \
    "torch==$TORCH" "$@"
}

# the mmcv wheel of .whl/ (none: empty output, status 1)
mmcv_wheel() { ls "$WHL"/mmcv-2.1.0-cp312-*.whl 2>/dev/null; }

build() {
  local start=$SECONDS
  mkdir -p "$WHL"
  echo "== pure wheels (cp312, manylinux x86-64) -> $WHL"
  python3 -m pip download -q --disable-pip-version-check --no-deps \
    --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHL" "${PURE[@]}"
  if mmcv_wheel >/dev/null; then
    echo "== mmcv: $(mmcv_wheel) already built"
  else
    echo "== build venv: Python 3.12, torch $TORCH -> $BUILD/build-venv"
    venv "$BUILD/build-venv" numpy ninja 'setuptools<81' wheel
    echo "== mmcv 2.1.0, CUDA ops for sm_${ARCH/./} only (nvcc: $("${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" --version | tail -1))"
    #   FORCE_CUDA=1          CUDA ops although this machine has no GPU
    #   TORCH_CUDA_ARCH_LIST  one architecture: the H200's (9.0)
    #   --no-build-isolation  compile against the venv's torch $TORCH
    #   CPATH, MMCV_CUDA_ARGS torch's CUDA headers include cuSPARSE's,
    #                         cuBLAS's and cuSOLVER's, which a bare CUDA
    #                         toolkit (nvcc and the runtime) lacks: the ones
    #                         torch's own nvidia-*-cu13 wheels install serve
    local t=$SECONDS nvinc
    nvinc="$("$BUILD/build-venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "include"))')"
    CPATH="$nvinc${CPATH:+:$CPATH}" MMCV_CUDA_ARGS="-I$nvinc" \
    CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" MMCV_WITH_OPS=1 FORCE_CUDA=1 \
      TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="${MAX_JOBS:-2}" CFLAGS=-g0 \
      "$BUILD/build-venv/bin/python" -m pip wheel -q --disable-pip-version-check \
      --no-build-isolation --no-deps --no-cache-dir -w "$WHL" mmcv==2.1.0
    echo "mmcv built in $(( (SECONDS - t) / 60 )) min $(( (SECONDS - t) % 60 )) s"
  fi
  echo "== $WHL"
  ls -l "$WHL"
  echo "bundle: $(du -sh "$WHL" | cut -f1) in $(ls "$WHL" | wc -l) wheels;" \
       "built in $(( (SECONDS - start) / 60 )) min"
}

# install SITE: the bundle into SITE with no index, as on the device
install() {
  local site="$1" py="${2:-python3}"
  mmcv_wheel >/dev/null || {
    echo "device_bundle: no mmcv wheel in $WHL: run 'bash tools/device_bundle.sh build' here and carry .whl" >&2
    exit 2; }
  "$py" -m pip install -q --disable-pip-version-check --no-index --no-deps \
    --no-compile --no-cache-dir --upgrade --target "$site" "$WHL"/*.whl
}

# pcka_det from the working tree, with the `pcka_det::` config scope an
# install gives it (pcka_det/.mim: setup.py's own helper, as an editable
# install makes it; the folder is ignored, so it does not travel)
with_source() {
  export PYTHONPATH="$1:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  (cd "$ROOT" && python3 -c "import sys; sys.argv = ['setup.py', 'develop']; import setup; setup.add_mim_extension()")
}

verify() {
  local env="$BUILD/clean-venv" site="$BUILD/clean-site"
  rm -rf "$env" "$site"
  echo "== clean cp312 venv standing in for the device: torch $TORCH + ${DEVICE_IMAGE[*]}"
  venv "$env" "${DEVICE_IMAGE[@]}"
  install "$site" "$env/bin/python"
  PATH="$env/bin:$PATH" with_source "$site"
  echo "== import from the bundle alone (no CUDA device here)"
  "$env/bin/python" - "$ARCH" <<'PY'
import os.path as osp
import sys
import torch
import mmcv, mmcv.ops, mmdet, mmengine
from mmcv.ops import nms, RoIAlign  # noqa: F401  (compiled ops mmdet uses)
import pcka_det
from mmdet.utils import register_all_modules
register_all_modules()
print('torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmengine',
      mmengine.__version__, '| mmdet', mmdet.__version__, '| pcka_det',
      pcka_det.__version__)
import mmcv._ext
ext = mmcv._ext.__file__
arch = sys.argv[1].replace('.', '')


def fatbin_archs(data):
    """{(kind, sm)} of the CUDA fat binaries embedded in a shared object:
    each fat binary (magic 0xBA55ED50: u32 magic, u16 version, u16 header
    size, u64 size) holds entries (u16 kind: 1 PTX, 2 cubin; u16; u32
    header size; u64 size; ...; u32 sm at offset 28)."""
    found, pos = set(), data.find(MAGIC)
    while pos != -1:
        head = int.from_bytes(data[pos + 6:pos + 8], 'little')
        end = pos + head + int.from_bytes(data[pos + 8:pos + 16], 'little')
        entry = pos + head
        while entry < end:
            kind = int.from_bytes(data[entry:entry + 2], 'little')
            ehead = int.from_bytes(data[entry + 4:entry + 8], 'little')
            size = int.from_bytes(data[entry + 8:entry + 16], 'little')
            sm = int.from_bytes(data[entry + 28:entry + 32], 'little')
            found.add(({1: 'ptx', 2: 'cubin'}.get(kind, kind), sm))
            entry += ehead + size
        pos = data.find(MAGIC, max(end, pos + 1))
    return found


MAGIC = (0xBA55ED50).to_bytes(4, 'little')
code = fatbin_archs(open(ext, 'rb').read())
print(f'{osp.basename(ext)}: CUDA code {code}')
assert code == {('cubin', int(arch))}, f'expected sm_{arch} machine code only'
# the CPU half of the ops runs here
boxes = torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]])
_, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
assert keep.tolist() == [0, 2], keep
print('imports ok')
PY
  echo "== the GPU report's code from the bundle, on this CPU (--quick)"
  (cd "$ROOT" && "$env/bin/python" tools/gpu_report.py --quick --device cpu \
     --out-dir "$BUILD/verify_report")
  "$env/bin/python" - "$BUILD/verify_report/gpu_report.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
status = {k: v['status'] for k, v in report['sections'].items()}
print('sections:', status)
assert status['steps'] == 'ok' and status['launcher'] == 'ok', status
print('bundle ok')
PY
}

case "${1:-build}" in
  build) build ;;
  verify) verify ;;
  report)
    shift
    install /tmp/site
    with_source /tmp/site
    cd "$ROOT" && exec python3 tools/gpu_report.py "$@" ;;
  *) echo "usage: bash tools/device_bundle.sh build|verify|report [args]" >&2; exit 2 ;;
esac
