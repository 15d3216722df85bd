# The two commands a user types: `make demo` and `make test`.
# Each installs what it needs first (tools/install.sh, idempotent).
VENV   ?= .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.pcka_det-installed

.PHONY: install test test-all demo clean-demo

install: $(STAMP)

$(STAMP): tools/install.sh setup.py
	bash tools/install.sh
	touch $@

test: install
	$(PYTHON) -m pytest tests -q

demo: install
	$(PYTHON) tools/demo.py $(if $(FRESH),--fresh) $(if $(METHODS),--methods $(METHODS))
