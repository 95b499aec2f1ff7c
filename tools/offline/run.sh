#!/usr/bin/env bash
# diffbench on an offline GPU host: one command, one time budget (docs/GPU.md, "On an offline
# GPU host"). Needs only the working tree and the bundle `make offline-bundle` made (.offline/):
#   bash .offline/run.sh [--budget 540] [--out DIR] [--only STEP ...] [--dry-run] [--list]
# Installs the bundle's wheels into a fresh site folder (no network, --no-deps: the host's own
# torch, numpy, ... are never touched), then tools/offline/host_run.py probes, runs the steps
# that fit the budget and packs the results (<= 8 files) into --out (default $OUT).
set -u
started=$(date +%s.%N)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$here
while [ "$repo" != / ] && [ ! -f "$repo/harness.py" ]; do repo=$(dirname "$repo"); done
[ -f "$repo/harness.py" ] || { echo "run.sh: no diffbench checkout above $here" >&2; exit 2; }
bundle=${DIFFBENCH_BUNDLE:-$repo/.offline}
py=${PYTHON:-python3}
# One fixed place per user: Jittor keys its compile cache by the path it is installed at, so a
# re-run (or the next step) reuses what the first one compiled.
site=${DIFFBENCH_OFFLINE_SITE:-${TMPDIR:-/tmp}/diffbench-offline-$(id -u)/site}
ls "$bundle"/wheels/*.whl >/dev/null 2>&1 \
  || { echo "run.sh: no wheels in $bundle/wheels: run 'make offline-bundle' where there is a network" >&2; exit 2; }
rm -rf "$site" && mkdir -p "$site"
t0=$(date +%s)
PIP_NO_INDEX=1 "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --disable-pip-version-check --target "$site" "$bundle"/wheels/*.whl \
  || { echo "run.sh: installing the bundle's wheels with $py failed" >&2; exit 3; }
echo "[offline] wheels installed into $site in $(( $(date +%s) - t0 )) s: $(cd "$bundle/wheels" && ls | tr '\n' ' ')"
export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PIP_NO_INDEX=1
exec "$py" "$repo/tools/offline/host_run.py" --bundle "$bundle" --site "$site" \
  --started "$started" "$@"
