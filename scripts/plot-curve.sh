#!/usr/bin/env bash
# Draws a learning curve (curve.csv of any run) as a PNG with gnuplot: loss
# and validation accuracy against seconds and against training samples.
# A thin wrapper over `nettorrent plot`, which every run calls at its end.
# Usage: scripts/plot-curve.sh CURVE_CSV [OUT_PNG]   (default: CURVE.png)
# Exit: 0 (also, with a warning, when gnuplot is missing), 1 for a missing or
# foreign curve or a gnuplot failure, 2 for a usage error.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 CURVE_CSV [OUT_PNG]" >&2
  exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${NETTORRENT_BIN:-$root/build/bin/nettorrent}
[ -x "$bin" ] || "$root/scripts/build.sh" >&2
exec "$bin" plot --curve="$1" ${2:+--out="$2"}
