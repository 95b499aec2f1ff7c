# diffbench: every target sets the project up first (tools/setup.sh is a no-op once done).
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= configs/quick.yaml
ARGS   ?=

# make regress: the pytest-benchmark micro-suite vs a stored baseline (docs/REGRESSION.md).
MACHINE      = $(shell $(PY) -m bench.measure.calibrate --machine-id)
BASELINE    ?= baselines/micro-$(MACHINE).json
MICRO_OUT   ?= results/micro-latest.json
# Unchanged code varies by 5-25% between runs on a shared 2-core VM: 25% is what holds here.
REGRESS_ARGS ?= --threshold 25%

.PHONY: setup bench test parity report regress regress-baseline clean

setup:
	@VENV=$(VENV) bash tools/setup.sh

# Runs the matrix, then writes the report of that run (also when a cell failed: the report
# shows the failure; not after bad input, exit 2, when no run exists), and exits with the
# bench's code.
bench: setup
	@mkdir -p results && rm -f results/.last-run
	@$(PY) harness.py bench $(CONFIG) --run-dir-file results/.last-run $(ARGS); code=$$?; \
	  if [ -f results/.last-run ] && [ $$code -ne 2 ]; then \
	    $(PY) harness.py report "$$(cat results/.last-run)" || exit $$?; fi; exit $$code

report: setup
	$(PY) harness.py report $${RUN:-$$(cat results/.last-run)}

test: setup
	$(PY) -m pytest -q $(ARGS)

parity: setup
	$(PY) -m models.parity check

regress: setup
	@mkdir -p results
	$(PY) benchmarks/run_micro.py --out $(MICRO_OUT)
	@test -f "$(BASELINE)" || { echo "no baseline $(BASELINE): run 'make regress-baseline' on a quiet machine or pass BASELINE=file" >&2; exit 2; }
	$(PY) harness.py compare $(BASELINE) $(MICRO_OUT) --markdown results/regress.md $(REGRESS_ARGS)

regress-baseline: setup
	@mkdir -p baselines
	$(PY) benchmarks/run_micro.py --out $(BASELINE)

clean:
	rm -rf results reports/*/ .pytest_cache
