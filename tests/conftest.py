"""Shared helpers for the harness tests: tiny configs, running the real CLI, one shared run.

Every run goes through `harness.py` in a subprocess (the real code path: argument parsing,
validation, one worker process per cell). Models are tiny so a cell costs seconds.
"""
import os
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from tests.tiny_models import SMALL_MODEL, TINY_MODEL  # noqa: E402 F401  (the tests import them here)
from tests.real_runs import tiny_config  # noqa: E402 F401

# Jittor compiles new kernels in parallel threads (min(16, RAM / 3 GB) of them: 8 here, on 2
# cores). One CI run lost a Jittor process to a segfault in such a thread ("Caught segfault
# ... thread_name: 'C1'") while it compiled a tiny model's sampling kernels; the threads
# prepare fused ops that share state unlocked (src/parallel_compiler.cc: Jittor's own debug
# build forces one thread "because global id map has no lock"). One compile thread removes
# that race for every Jittor process the tests start (they inherit the environment; Jittor
# reads a flag from the environment variable of its name); benchmarks keep Jittor's default,
# and their compile time is reported apart.
os.environ.setdefault("use_parallel_op_compiler", "1")

# The tiers (docs/ARCHITECTURE.md, "Tests"): `make test` runs everything; `make test-fast` leaves
# out the tests marked `process` (they start a real framework process: a harness run, a
# worker, both frameworks' parity) and `slow` (over ~20 s on 2 cores). A test is `process`
# when its module is listed here or it uses one of the real-run fixtures; a test elsewhere that
# starts one carries the marker itself.
PROCESS_MODULES = {"test_ab", "test_distributed", "test_fid", "test_harness",
                   "test_integration", "test_new_user", "test_offline", "test_parity",
                   "test_regress", "test_sample", "test_timing", "test_train", "test_variants"}
PROCESS_FIXTURES = {"both_frameworks_run", "profiled_run", "sweep_run", "dit_run"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if module in PROCESS_MODULES or PROCESS_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.process)


def write_config(path, cfg):
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return str(path)


def harness(*args, timeout=600, **kw):
    """Run harness.py with the project's python; returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(REPO, "harness.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, **kw)


def bench_and_report(tmp, cfg, timeout=600):
    """harness.py bench of cfg (written to tmp/c.yaml, quiet), then harness.py report of
    the run into tmp/report: (bench process, run dir, report process, tmp)."""
    proc = harness("bench", write_config(tmp / "c.yaml", cfg), "--quiet", timeout=timeout)
    run_dir = run_dirs(cfg["runner"]["results_dir"])[0]
    report = harness("report", run_dir, "--out", tmp / "report", timeout=300)
    return proc, run_dir, report, tmp


def run_dirs(results_dir):
    if not os.path.isdir(results_dir):
        return []
    return sorted(os.path.join(results_dir, d) for d in os.listdir(results_dir))


@pytest.fixture(scope="session")
def both_frameworks_run(tmp_path_factory):
    """One real run of both frameworks (train + sample), two processes (replicates) per
    cell, shared by test_harness, test_integration and test_timing: the slowest thing in
    these tests, so it happens once. Train cells: 2 epochs x 3 steps (compile, 1 warm-up, 4
    measured per process): no test checks the step count. The batch stays 8: on SMALL_MODEL
    that keeps a Jittor step's compute well above its graph building (test_timing; batch 4
    brought the median dispatch/compute ratio to ~0.18 on a quiet machine, against 0.5)."""
    root = tmp_path_factory.mktemp("both")
    cfg = tiny_config(root / "results", name="both", frameworks=["torch", "jittor"],
                      model=SMALL_MODEL, data={"num_samples": 48, "val_fraction": 0.25},
                      train={"epochs": 2, "steps_per_epoch": 3, "batch_size": 8,
                             "warmup_steps": 1, "val_batches": 1},
                      runner={"replicates": 2})
    cfg["diffusion"] = {"timesteps": 100}
    path = write_config(root / "both.yaml", cfg)
    proc = harness("bench", path)
    dirs = run_dirs(root / "results")
    return {"proc": proc, "run_dir": dirs[0] if dirs else None, "config": cfg}
