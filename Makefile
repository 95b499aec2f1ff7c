# diffbench: every target sets the project up first (tools/setup.sh is a no-op once done).
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= configs/quick.yaml
ARGS   ?=

# make regress: the A/B gate (docs/REGRESSION.md): revision BASE (default HEAD) against
# CANDIDATE (default: the working tree), both measured here and now, interleaved call by call
# in one process per pair. AB_ARGS adds options, e.g. AB_ARGS="--pairs 8 --report-only".
BASE      ?= HEAD
CANDIDATE ?=
AB_ARGS   ?=

# make regress-stored: the micro-suite against a baseline JSON stored earlier on this machine.
MACHINE      = $(shell $(PY) -m bench.measure.calibrate --machine-id)
BASELINE    ?= baselines/micro-$(MACHINE).json
MICRO_OUT   ?= results/micro-latest.json
# Unchanged code varies by 5-25% between runs on a shared 2-core VM: 25% is what holds here.
REGRESS_ARGS ?= --threshold 25%

.PHONY: setup bench test test-fast parity report regress regress-stored regress-baseline gpu-check cuda-rehearsal offline-bundle clean

setup:
	@VENV=$(VENV) bash tools/setup.sh

# Runs the matrix, then writes the report of that run (also when a cell failed: the report
# shows the failure; not after bad input, exit 2, when no run exists), and exits with the
# bench's code.
bench: setup
	@mkdir -p results && rm -f results/.last-run
	@# Same model? The config's model checked in both frameworks first (recorded in
	@# results/parity/, shown in the report's headline); a failure is reported, not fatal.
	@$(PY) harness.py parity --config $(CONFIG) > results/parity-last.log 2>&1 \
	  && echo "[bench] parity: passed ($$(tail -n 1 results/parity-last.log))" \
	  || { echo "[bench] parity check did not pass: results/parity-last.log"; tail -n 20 results/parity-last.log; }
	@$(PY) harness.py bench $(CONFIG) --run-dir-file results/.last-run $(ARGS); code=$$?; \
	  if [ -f results/.last-run ] && [ $$code -ne 2 ]; then \
	    $(PY) harness.py report "$$(cat results/.last-run)" || exit $$?; fi; exit $$code

report: setup
	$(PY) harness.py report $${RUN:-$$(cat results/.last-run)}

# The tests' shared real runs are warmed once, here (tools/setup.sh --tests), not by make bench.
test: setup
	@VENV=$(VENV) bash tools/setup.sh --tests
	$(PY) -m pytest -q --durations=20 $(ARGS)

# The edit loop's tier (<= 2 min): config, statistics, reports from stored records, layering,
# specs, the math and bad input; no framework process, nothing slow (tests/conftest.py).
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not process" --durations=5 $(ARGS)

parity: setup
	$(PY) harness.py parity --config $(CONFIG)

regress: setup
	$(PY) harness.py ab $(BASE) $(CANDIDATE) $(AB_ARGS)

regress-stored: setup
	@mkdir -p results
	$(PY) benchmarks/run_micro.py --out $(MICRO_OUT)
	@test -f "$(BASELINE)" || { echo "no baseline $(BASELINE): run 'make regress-baseline' on a quiet machine or pass BASELINE=file" >&2; exit 2; }
	$(PY) harness.py compare $(BASELINE) $(MICRO_OUT) --markdown results/regress.md $(REGRESS_ARGS)

regress-baseline: setup
	@mkdir -p baselines
	$(PY) benchmarks/run_micro.py --out $(BASELINE)

# On a GPU machine: NVML, torch and Jittor on CUDA, parity on CUDA, configs/quick-gpu.yaml;
# a PASS/FAIL checklist in results/gpu-check.md, exit 1 if a line failed (docs/GPU.md).
# Without a GPU it says so in one line and exits 0.
gpu-check: setup
	$(PY) harness.py gpu-check $(ARGS)

# Jittor on the GPU hosts' CUDA 13.0 + cuDNN 9.19, rehearsed without a GPU (docs/GPU.md, "The
# CUDA rehearsal"): lays out that CUDA from PyPI's NVIDIA wheels (~1 GB under
# ~/.cache/diffbench/cuda-rehearsal), imports the patched Jittor against it for sm_90 and has
# nvcc compile every kernel of the UNet's and DiT's steps; a PASS/FAIL checklist in
# reports/reference/cuda-rehearsal/checklist.md. Not part of `make test` (~15-25 min cold).
cuda-rehearsal: setup
	$(PY) -m tools.cuda_rehearsal.run $(ARGS)

# For an offline GPU host (docs/GPU.md, "On an offline GPU host"): .offline/ with the wheels
# such a host lacks (Jittor patched for numpy 2, torch-fidelity), Python's headers and run.sh;
# prints its size (<= 60 MiB). There: bash .offline/run.sh --budget 540
offline-bundle:
	python3 tools/offline/build_bundle.py

# Generated output only: reports/reference/ holds committed reference reports and stays.
clean:
	rm -rf results .pytest_cache
	find reports -mindepth 1 -maxdepth 1 -type d ! -name reference -exec rm -rf {} +
