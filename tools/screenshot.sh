#!/usr/bin/env bash
# Screenshot of a report in headless Chromium (Debian package `chromium`), to check the HTML
# renders offline the way a reader sees it.
#   tools/screenshot.sh REPORT_HTML OUT_PNG [WIDTH,HEIGHT]
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 REPORT_HTML OUT_PNG [WIDTH,HEIGHT]  (e.g. 1400,4000)" >&2
  exit 2
fi
html="$1"; out="$2"; size="${3:-1400,4000}"
if [ ! -f "$html" ]; then echo "error: $html: no such file" >&2; exit 2; fi
browser="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$browser" ]; then
  echo "error: chromium not found (apt-get install -y chromium)" >&2; exit 2
fi
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
html_abs="$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
rm -f "$out_abs"
# No network, no GPU, no sandbox (root in a container); a throwaway profile each time.
timeout 90 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$profile" --window-size="$size" \
  --screenshot="$out_abs" "file://$html_abs" >/dev/null 2>"$profile/stderr.log" || {
    echo "error: chromium failed:" >&2; tail -5 "$profile/stderr.log" >&2; exit 1; }
if [ ! -s "$out_abs" ]; then
  echo "error: chromium wrote no screenshot:" >&2; tail -5 "$profile/stderr.log" >&2; exit 1
fi
echo "$out_abs"
