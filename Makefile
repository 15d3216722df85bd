# The two commands a user types: `make demo` and `make test`.
# Each installs what it needs first (tools/install.sh, idempotent).
# `make test` runs the whole suite, the `slow` end-to-end tests included.
# `make study` compares the methods over seeds with equal tuning (opt-in,
# hours; tools/study/study.py).
# `make demo DETECTOR=fcos` runs the FCOS toy pair instead of RetinaNet, in
# work_dirs/demo_fcos. `make clean-demo` deletes what `make demo` made: the
# work dirs of both and the dataset it generated (the defaults of
# tools/demo/demo.py).
VENV   ?= .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.pcka_det-installed

.PHONY: install test test-fast demo study gpu-report device-bundle clean-demo

install: $(STAMP)

$(STAMP): tools/install.sh setup.py
	bash tools/install.sh
	touch $@

# The suite runs in JOBS pytest processes (pytest-xdist), one torch thread
# each, a test file per process at a time (module fixtures run once):
# `make test JOBS=1` runs it in one process.
JOBS ?= 2
PYTEST := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PYTHON) -m pytest \
	$(if $(filter-out 1,$(JOBS)),-n $(JOBS) --dist loadfile)

test: install
	$(PYTEST) tests -q

# The unit tests without the slow end-to-end runs (tests/unit): the inner loop.
test-fast: install
	$(PYTEST) tests/unit -q -m "not slow"

demo: install
	$(PYTHON) tools/demo/demo.py $(if $(DETECTOR),--detector $(DETECTOR)) \
		$(if $(FRESH),--fresh) $(if $(METHODS),--methods $(METHODS))

# The comparison to trust: every method tuned alike, several seeds
# (tools/study/study.py; hours on 2 cores, resumable: rerun to continue).
study: install
	$(PYTHON) tools/study/study.py $(if $(DETECTOR),--detector $(DETECTOR)) \
		$(if $(SEEDS),--seeds $(SEEDS)) $(if $(MAX_SEEDS),--max-seeds $(MAX_SEEDS)) \
		$(if $(METHODS),--methods $(METHODS))

# Every GPU figure README quotes, in one command (tools/gpu_report.py;
# random weights, nothing downloaded): work_dirs/gpu_report/gpu_report.{json,md}
gpu-report: install
	$(PYTHON) tools/gpu_report.py $(if $(QUICK),--quick)

# The wheels the lent GPU machine lacks (tools/device_bundle.sh): built
# here into .whl/ (mmcv's CUDA ops: long), then installed into a clean
# Python 3.12 venv and imported. There: `bash tools/device_bundle.sh report`.
device-bundle:
	bash tools/device_bundle.sh build
	bash tools/device_bundle.sh verify

clean-demo:
	rm -rf work_dirs/demo work_dirs/demo_fcos data/synthetic
