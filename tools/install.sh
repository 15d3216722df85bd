#!/usr/bin/env bash
# Creates .venv at the repo root with the pinned stack and pcka_det (editable).
# Idempotent: every step is skipped when what it installs is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  $PIP install --upgrade pip
fi

have() { "$VENV/bin/python" -c "$1" >/dev/null 2>&1; }

# torch first: mmcv compiles against it. torchvision is what mmdet's
# `torchvision://resnet50` backbone inits (every COCO student) import, so it
# is pinned with the torch release it was built for: PyPI's torchvision
# fails to import beside a CPU-only torch ("operator torchvision::nms does
# not exist"). setuptools<81 keeps pkg_resources, which mmcv's setup.py and
# mmengine import. numpy is left unpinned: mmdet's opencv-python needs
# numpy 2, and mmcv/mmdet run with it.
have "import torch, torchvision, numpy, ninja, pkg_resources; assert torch.__version__.startswith('2.14.1') and torchvision.__version__.startswith('0.29.1')" \
  || $PIP install torch==2.14.1 torchvision==0.29.1 numpy ninja 'setuptools<81' wheel

# mmcv 2.1.0 has no wheel on PyPI for this torch: build it from source, once
# (pip caches the wheel, so later venvs take seconds).
#   MMCV_WITH_OPS=1   compile the C++ ops mmdet needs (nms, RoIAlign, ...)
#   FORCE_CUDA=0      CPU-only ops unless nvcc and a GPU are present
#   MAX_JOBS=2        the build is memory hungry; 2 jobs fit a 2-core box
#   CFLAGS=-g0        no debug info: a smaller, faster build
#   --no-build-isolation  build against the torch installed above
# pip's wheel cache does not key on the torch a wheel was compiled against:
# a cached mmcv built for another torch installs and then fails to import
# (undefined symbols), so that case is rebuilt without the cache.
MMCV_CHECK="import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'"
# torch 2.14's headers need C++20, and mmcv 2.1.0's setup.py hard-codes
# -std=c++17: the compiler is called through a wrapper that raises it.
CXX20="$VENV/bin/cxx20"
cat > "$CXX20" <<'SH'
#!/bin/sh
# g++ with -std=c++14/17 raised to -std=c++20 (written by tools/install.sh)
for a in "$@"; do
  shift
  case "$a" in -std=c++14|-std=c++17) a=-std=c++20 ;; esac
  set -- "$@" "$a"
done
exec "${CXX_REAL:-g++}" "$@"
SH
chmod +x "$CXX20"
build_mmcv() {
  MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="${MAX_JOBS:-2}" CFLAGS=-g0 \
    CC="$CXX20" CXX="$CXX20" $PIP install --no-build-isolation "$@" mmcv==2.1.0
}
if ! have "$MMCV_CHECK"; then
  build_mmcv
  have "$MMCV_CHECK" || build_mmcv --force-reinstall --no-deps --no-cache-dir
fi

# pytest-xdist: `make test` runs the suite in two processes (one per core)
have "import mmengine, mmdet, pycocotools, pytest, xdist, matplotlib; assert mmengine.__version__ == '0.10.7' and mmdet.__version__ == '3.3.0'" \
  || $PIP install mmengine==0.10.7 mmdet==3.3.0 pycocotools pytest pytest-xdist matplotlib

# The optional mmrazor extra, so the interop tests run too; joblib and
# ordered-set are imported by mmrazor 1.0.0 but not all declared.
have "import importlib.metadata as m, joblib, ordered_set; assert m.version('mmrazor') == '1.0.0'" \
  || $PIP install mmrazor==1.0.0 ordered-set joblib

# pcka_det itself: pure Python, editable
have "import importlib.metadata as m; m.version('pcka-detection')" || $PIP install --no-deps -e "$ROOT"
"$VENV/bin/python" -c "import pcka_det, mmdet, mmcv.ops; print('pcka_det', pcka_det.__version__, 'ready in', '$VENV')"
