"""Compile Jittor's core and the ops diffbench uses, once, so that tests and benchmarks don't.

Jittor can end an import with "jit_utils updated, please rerun your command." and exit 0
(for instance when its cache was made under another HOME). That would make a run look
successful while doing nothing, so each warm-up runs in a child process that must print a
sentinel; a missing sentinel is retried once (the rerun Jittor asks for) and then fails loudly.
"""
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from bench.run.distributed import mpi_problem  # noqa: E402  (stdlib only: fine before pip's rest)

SENTINEL = "DIFFBENCH_JITTOR_OK"
TIMED = "TIMED "  # the child's lines that carry a part's time, shown in the setup log

CHILD = r"""
import os, sys, time
sys.path.insert(0, os.getcwd())
from models.jt import runtime  # sets nvcc_path/FIX_TORCH_ERROR/log_silent before import
t0 = time.time()
jt = runtime.import_jittor()
print(f"@TIMED@core: {time.time() - t0:.0f} s")
# Whole tiny models through training, gradients and every sampler compile the op kernels the
# benchmarks and the tests use (kernels are keyed by op pattern and some shape traits, not by
# size). --ops: the parity check's UNet (the kernels of `make bench`'s default UNet); --test-ops:
# the parity check's DiT (guidance included) and the tests' own tiny models
# (tests/tiny_models.py: one input channel, 8x8), which only `make test` needs. Needs only
# Jittor and numpy: tools/setup.sh runs --ops in the background while pip installs the rest.
from models import parity
from models.common.dit_spec import DiTSpec
from models.common.specs import UNetSpec
from tests import tiny_models
dit = {k: v for k, v in tiny_models.TINY_DIT.items() if k != "family"}
models = [("UNet", parity.TINY_UNET)] if sys.argv[1] == "--ops" else [
    ("DiT", parity.TINY_DIT), ("tests' UNet", UNetSpec(**tiny_models.TINY_MODEL)),
    ("tests' DiT", DiTSpec(**dit))]
for what, model in models:
    t0 = time.time()
    parity.run_case("jittor", parity.make_case(0, unet=model))
    print(f"@TIMED@{what} ops: {time.time() - t0:.0f} s")
print("mkl:", runtime.onednn_enabled())
print("@SENTINEL@")
""".replace("@SENTINEL@", SENTINEL).replace("@TIMED@", TIMED)


# With Open MPI installed, Jittor compiles its MPI ops the first time a rank imports it
# (use_mpi=1, docs/DISTRIBUTED.md): do it here, once, instead of inside a timed cell.
MPI_CHILD = r"""
import os, sys
sys.path.insert(0, os.getcwd())
os.environ["use_mpi"] = "1"
from models.jt import runtime
jt = runtime.import_jittor()
print("mpi:", jt.compile_extern.mpi is not None)
print("%s")
""" % SENTINEL


def run_once(child=CHILD, mode="--ops"):
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", child, mode], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    return proc.returncode, out, time.time() - t0


def main():
    """No argument: Jittor's core, the benchmark's ops, then its MPI ops. --ops: core and the
    benchmark's ops only (what setup runs in the background before Open MPI is installed);
    --test-ops: the ops of the DiT and the tests' tiny models; --mpi: the MPI ops only;
    --runs: the tests' shared real runs (after everything else is installed)."""
    mode = sys.argv[1] if sys.argv[1:] else "all"
    if mode not in ("all", "--ops", "--test-ops", "--mpi", "--runs"):
        print(f"usage: {sys.argv[0]} [--ops | --test-ops | --mpi | --runs]", file=sys.stderr)
        return 2
    if mode == "--mpi":
        return warm_mpi()
    if mode == "--runs":
        return warm_runs()
    for attempt in (1, 2):
        rc, out, secs = run_once(mode="--test-ops" if mode == "--test-ops" else "--ops")
        if rc == 0 and SENTINEL in out:
            parts = [l.removeprefix(TIMED) for l in out.splitlines()
                     if l.startswith((TIMED, "mkl:"))]
            print(f"[setup] jittor warm ({secs:.0f} s, attempt {attempt}): " + "; ".join(parts))
            if "mkl: False" in out:
                print("[setup] ERROR: jittor's oneDNN (mkl) ops did not load; CPU conv would be "
                      "25-100x slower. See docs/SETUP.md.", file=sys.stderr)
                return 1
            return 0 if mode in ("--ops", "--test-ops") else warm_mpi()
        print(f"[setup] jittor warm-up attempt {attempt} printed no result (rc={rc}):\n"
              + out[-3000:], file=sys.stderr)
    print("[setup] ERROR: jittor never completed a warm-up run. If it said 'please rerun', its "
          "cache at ~/.cache/jittor is stale: remove it and run setup again.", file=sys.stderr)
    return 1


def warm_mpi():
    if mpi_problem():
        print("[setup] no Open MPI: Jittor's data-parallel cells need openmpi-bin "
              "libopenmpi-dev (skipped)")
        return 0
    for attempt in (1, 2):
        rc, out, secs = run_once(MPI_CHILD)
        if rc == 0 and SENTINEL in out:
            print(f"[setup] jittor MPI ops warm ({secs:.0f} s); "
                  + next((l for l in out.splitlines() if l.startswith("mpi:")), ""))
            return 0
    print("[setup] WARNING: Jittor's MPI ops did not build; its data-parallel cells will fail:\n"
          + out[-2000:], file=sys.stderr)
    return 0


def warm_runs():
    """The cells of the tests' shared real runs that compile something (tests/real_runs.py,
    WARM_RUNS), each a real `harness.py bench --only ...` into a folder deleted afterwards.
    Here Jittor compiles with its default threads; the tests allow it one (tests/conftest.py),
    so a kernel compiled here costs the suite nothing and a fresh clone's suite ~2 minutes
    less. A run that fails twice is a warning, not a setup failure: the tests then compile
    what is left, and report any real fault themselves."""
    import yaml

    from tests.real_runs import WARM_RUNS

    t_all, parts = time.time(), []
    for name, make_config, only, needs_mpi in WARM_RUNS:
        if needs_mpi and mpi_problem():
            parts.append(f"{name}: skipped (no Open MPI)")
            continue
        t0 = time.time()
        for attempt in (1, 2):
            with tempfile.TemporaryDirectory(prefix="diffbench-warm-") as tmp:
                path = os.path.join(tmp, "warm.yaml")
                with open(path, "w") as f:
                    yaml.safe_dump(make_config(os.path.join(tmp, "results")), f)
                proc = subprocess.run([sys.executable, os.path.join(REPO, "harness.py"),
                                       "bench", path, "--quiet", "--only", *only],
                                      cwd=REPO, capture_output=True, text=True, timeout=1800)
            if proc.returncode == 0:
                parts.append(f"{name}: {time.time() - t0:.0f} s")
                break
            print(f"[setup] WARNING: warming the tests' {name} failed (attempt {attempt}, "
                  f"exit {proc.returncode}):\n" + (proc.stdout + proc.stderr)[-2000:],
                  file=sys.stderr)
        else:
            parts.append(f"{name}: failed (the tests compile its kernels themselves)")
    print(f"[setup] the tests' real runs warm ({time.time() - t_all:.0f} s): " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
