#!/usr/bin/env bash
# Benchmark: the 3-host cluster of config/hosts/ (mutual TLS, 3 replicas,
# outer, rounds without the moments) on three network namespaces joined by
# one bridge, every host's link limited with a token bucket (tc tbf, both
# directions), under five layouts:
#   by_swarm f32    placement.strategy = "by_swarm" (the seed's picture),
#                   f32 activations, gradients and sync rounds
#   by_swarm int8   the same with system.wire_precision = "int8"
#   by_replica f32  placement.strategy = "by_replica", f32 sync rounds
#   by_replica int8 the same with topology.sync_precision = "int8", no
#                   error feedback
#   auto            placement.strategy = "auto" on what each node measures
#                   at start (nothing in nodes.bandwidth_mbit), config/hosts
#                   as shipped (int8 sync rounds with error feedback)
# Rows: free links, then each RATE (tc syntax in Mbit/s: 1000, 100, 10).
# Each cell: samples/s, bytes per training batch on the busiest host link
# (kernel counters, BASP and TLS framing included), seconds to 88% validation
# accuracy (the first scored round at or above it; "-" if never), test
# accuracy, and what `nettorrent plan` predicts for that layout and rate.
# Needs root (network namespaces). Every figure in the table comes from
# this run on this machine.
# usage: [REPEATS=N] [LAYOUTS="..."] bench/bench-links.sh [EPOCHS] [RATE...]
#        (default: 4 1000 100 10)
# With REPEATS each cell runs N times and shows the median run. LAYOUTS
# picks columns (default all): swarm_f32 swarm_int8 replica_f32
# replica_int8 auto.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-4}
shift || true
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(1000 100 10)
[ "$(id -u)" = 0 ] || { echo "bench-links: needs root (network namespaces)" >&2; exit 1; }
bin=build/bin/nettorrent
[ -x "$bin" ] || scripts/build.sh
layouts=${LAYOUTS:-swarm_f32 swarm_int8 replica_f32 replica_int8 auto}
for l in $layouts; do
  case $l in
    swarm_f32 | swarm_int8 | replica_f32 | replica_int8 | auto) ;;
    *) echo "bench-links: LAYOUTS: unknown layout \"$l\" (swarm_f32 swarm_int8 replica_f32 replica_int8 auto)" >&2; exit 2 ;;
  esac
done
wanted() { [[ " $layouts " == *" $1 "* ]]; }
columns=()
wanted swarm_f32 && columns+=("by_swarm f32")
wanted swarm_int8 && columns+=("by_swarm int8")
wanted replica_f32 && columns+=("by_replica f32")
wanted replica_int8 && columns+=("by_replica int8 sync")
wanted auto && columns+=("auto")
. bench/lib.sh
here=$(pwd)
# The three hosts share this machine's cores: the plan gives each its share.
cores=$(awk -v n="$(nproc)" 'BEGIN { printf "%.2f", n / 3 }')
out=$(mktemp -d)
tag=ntbl$$
teardown() {
  for i in 0 1 2; do
    for p in $(ip netns pids "$tag-h$i" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    ip netns del "$tag-h$i" 2>/dev/null || true
  done
  ip link del "${tag}br" 2>/dev/null || true
  rm -rf "$out"
}
trap teardown EXIT

# The lab: hosts $tag-h0..2 at 10.213.0.1..3 (config/hosts' addresses).
ip link add "${tag}br" type bridge
ip link set "${tag}br" up
for i in 0 1 2; do
  ip netns add "$tag-h$i"
  ip link add "${tag}v$i" type veth peer name "${tag}b$i"
  ip link set "${tag}v$i" netns "$tag-h$i"
  ip link set "${tag}b$i" master "${tag}br"
  ip link set "${tag}b$i" up
  ip -n "$tag-h$i" addr add "10.213.0.$((i + 1))/24" dev "${tag}v$i"
  ip -n "$tag-h$i" link set "${tag}v$i" up
  ip -n "$tag-h$i" link set lo up
done
# limit RATE_MBIT: a token bucket on both directions of every host's link
# (burst: 10 ms at the rate, at least 8 KB); "free" removes them.
limit() {
  for i in 0 1 2; do
    tc -n "$tag-h$i" qdisc del dev "${tag}v$i" root 2>/dev/null || true
    tc qdisc del dev "${tag}b$i" root 2>/dev/null || true
    [ "$1" = free ] && continue
    local burst=$(( $1 * 1000000 / 8 / 100 ))
    [ "$burst" -ge 8192 ] || burst=8192
    local tbf="root tbf rate ${1}mbit burst $burst latency 50ms"
    tc -n "$tag-h$i" qdisc add dev "${tag}v$i" $tbf
    tc qdisc add dev "${tag}b$i" $tbf
  done
}
link_bytes() {
  echo $(( $(cat /sys/class/net/${tag}b$1/statistics/rx_bytes) + $(cat /sys/class/net/${tag}b$1/statistics/tx_bytes) ))
}

# One copy of config/hosts per strategy, sharing one set of certificates.
scripts/make-certs.sh "$out/certs" n0 n1 n2 > /dev/null
layout_dir() { # STRATEGY [BANDWIDTH_MBIT]
  local d="$out/cfg-$1-${2:-none}"
  if [ ! -d "$d" ]; then
    mkdir -p "$d"
    cp config/hosts/*.ini "$d/"
    ln -s "$out/certs" "$d/certs"
    sed -i "s/^strategy = .*/strategy = \"$1\"/" "$d/cluster.ini"
    [ -z "${2:-}" ] || printf 'bandwidth_mbit = [%s, %s, %s]\n' "$2" "$2" "$2" >> "$d/cluster.ini"
  fi
  echo "$d"
}

# first_at CURVE_CSV: seconds of the first scored round at >= 0.88 validation accuracy.
first_at() { awk -F, 'NR > 1 && $6 >= 0.88 { print $3; exit }' "$1"; }

# one_cell STRATEGY RATE BANDWIDTH [OVERRIDE...]: runs the cluster once;
# prints "samples/s|bytes per batch|to 88%|test accuracy|predicted samples/s".
one_cell() {
  local strategy=$1 rate=$2 bw=$3
  shift 3
  local dir run before=() after=() i n best=0
  dir=$(layout_dir "$strategy" "$bw")
  run="$out/run-$strategy-$rate-$RANDOM"
  for i in 0 1 2; do before[$i]=$(link_bytes $i); done
  for i in 0 1 2; do
    ip netns exec "$tag-h$i" "$here/$bin" node --config-file="$dir/node-$i.ini" \
      --training.max_epochs="$epochs" --training.progress_interval=1000 \
      --training.output_dir="$run" "$@" > "$run-n$i.log" 2>&1 &
  done
  wait
  for i in 0 1 2; do
    after[$i]=$(link_bytes $i)
    [ $(( after[i] - before[i] )) -le "$best" ] || best=$(( after[i] - before[i] ))
  done
  n=$(samples "$run-n0.log")
  if [ -z "$n" ]; then
    echo "bench-links: the $strategy run at $rate ($*) did not finish; n0's log ends:" >&2
    tail -5 "$run-n0.log" >&2
    echo "failed|0|-|-|-"
    return
  fi
  local plan_rate=$rate
  [ "$rate" != free ] || plan_rate=10000
  local predicted
  predicted=$("$here/$bin" plan --config-file="$dir/cluster.ini" --bandwidth="$plan_rate" \
    --cores="$cores" "$@" |
    awk -v s="$strategy" '$1 == s { print $2 } $1 == "auto," && /as if measured/ { for (k = 1; k <= NF; ++k) if ($k == "chooses") { print $(k + 2); exit } }' |
    head -1)
  printf '%s|%s|%s|%s|%s\n' "$(rate "$run-n0.log")" "$(( best / (n / 64) ))" \
    "$(first_at "$run/curve.csv" || true)" "$(accuracy "$run-n0.log")" "${predicted%%:*}"
}

# cell ...: one_cell REPEATS times (env REPEATS, default 1); the run with
# the median samples/s.
cell() {
  local k runs=()
  for k in $(seq "${REPEATS:-1}"); do runs+=("$(one_cell "$@")"); done
  printf '%s\n' "${runs[@]}" | sort -t'|' -k1,1n | sed -n "$(( (${#runs[@]} + 1) / 2 ))p"
}

replicas=$(sed -n 's/^replicas = //p' config/hosts/cluster.ini)
echo "cpu: $(cpu_name), $(nproc) cores; config/hosts (784-256-128-10, Adam, batch 64, $replicas replicas, outer, rounds without moments, max_in_flight 2, mutual TLS), $epochs epochs, median of ${REPEATS:-1} run(s) per cell; nothing else should run meanwhile"
echo "each cell: samples/s (predicted by nettorrent plan, free links as 10000 Mbit/s, $cores cores per host) | KB per batch on the busiest link | s to 88% val | test accuracy"
for rate in free "${rates[@]}"; do
  limit "$rate"
  row=()
  f32=(--topology.sync_precision=f32 --topology.sync_feedback=false)
  ! wanted swarm_f32 || row+=("$(cell by_swarm "$rate" "" "${f32[@]}")")
  ! wanted swarm_int8 || row+=("$(cell by_swarm "$rate" "" "${f32[@]}" --system.wire_precision=int8)")
  ! wanted replica_f32 || row+=("$(cell by_replica "$rate" "" "${f32[@]}")")
  ! wanted replica_int8 ||
    row+=("$(cell by_replica "$rate" "" --topology.sync_precision=int8 --topology.sync_feedback=false)")
  ! wanted auto || row+=("$(cell auto "$rate" "")")
  # What the coordinator chose and predicted on the figures measured at start.
  chosen=$(sed -n 's/^coordinator:   auto chose \([a-z_]*\): \([0-9]*\) samples.*/\1, predicting \2 samples\/s at start/p' \
    "$out"/run-auto-"$rate"-*-n0.log 2>/dev/null | head -1)
  label=$rate
  [ "$rate" = free ] || label="$rate Mbit/s"
  printf '%-12s' "$label"
  for c in "${row[@]}"; do
    IFS='|' read -r s b t a p <<< "$c"
    printf ' | %6s (%6s) %6.1f KB %6ss %s' "$s" "$p" "$(awk -v b="$b" 'BEGIN { print b / 1000 }')" "${t:--}" "$a"
  done
  echo "   auto chose: ${chosen:-?}"
done
echo "columns: ${columns[*]}"
