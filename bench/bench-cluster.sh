#!/usr/bin/env bash
# Benchmark: samples/s of the 3-node loopback cluster (config/cluster/,
# one process per node) next to the embedded run (config/local.ini, one
# process) with the same model, data, topology and epochs, in interleaved
# repeats; prints medians, their ratio, and the bytes that crossed the
# loopback interface per training batch during the cluster run (read from
# /proc/net/dev: all loopback traffic, BASP framing included, so nothing
# else should talk on lo while it runs).
# usage: bench/bench-cluster.sh [EPOCHS] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-3}
repeats=${2:-3}
bin=build/bin/nettorrent
[ -x "$bin" ] || scripts/build.sh
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

lo_bytes() { awk '$1 == "lo:" { print $10 }' /proc/net/dev; }
rate() { sed -n 's/^.*done: \([0-9]*\) samples in .* (\([0-9]*\) samples\/s).*/\2/p' "$1" | tail -1; }
samples() { sed -n 's/^.*done: \([0-9]*\) samples in .*/\1/p' "$1" | tail -1; }
common=(--training.max_epochs="$epochs" --training.progress_interval=1000)

emb=(); clu=(); bpb=()
for r in $(seq "$repeats"); do
  "$bin" train --config-file=config/local.ini "${common[@]}" --training.output_dir="$out/e" > "$out/e.log"
  emb+=("$(rate "$out/e.log")")
  before=$(lo_bytes)
  for i in 0 1 2; do
    "$bin" node --config-file=config/cluster/node-$i.ini "${common[@]}" \
      --training.output_dir="$out/c" > "$out/n$i.log" 2>&1 &
  done
  wait
  after=$(lo_bytes)
  clu+=("$(rate "$out/n0.log")")
  n=$(samples "$out/n0.log")
  bpb+=("$(( (after - before) / (n / 64) ))")
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
e=$(median "${emb[@]}"); c=$(median "${clu[@]}"); b=$(median "${bpb[@]}")
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo "cpu:             $cpu, $(nproc) cores"
echo "workload:        784-256-128-10, Adam, batch 64, 2 replicas, $epochs epochs; median of $repeats interleaved repeats"
echo "embedded:        $e samples/s (1 process, config/local.ini)"
echo "3-node cluster:  $c samples/s (3 processes on loopback, config/cluster/, placement by_swarm)"
awk -v c="$c" -v e="$e" 'BEGIN { printf "ratio:           %.3f cluster / embedded (target >= 0.5: %s)\n", c / e, (c / e >= 0.5 ? "met" : "NOT met") }'
awk -v b="$b" 'BEGIN { printf "loopback bytes:  %.0f per training batch (%.1f KB; includes validation passes, weight sync and BASP framing)\n", b, b / 1024 }'
