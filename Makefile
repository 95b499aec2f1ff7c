# diffbench: every target sets the project up first (tools/setup.sh is a no-op once done).
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= configs/quick.yaml
ARGS   ?=

.PHONY: setup bench test parity report regress clean

setup:
	@VENV=$(VENV) bash tools/setup.sh

bench: setup
	$(PY) harness.py bench $(CONFIG) $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

parity: setup
	$(PY) -m models.parity check

clean:
	rm -rf results reports/*/ .pytest_cache
