#!/usr/bin/env bash
# One table from one run: every way NetTorrent trains the default model
# (784-256-128-10, Adam, batch 64, Fashion-MNIST), each until TARGET
# validation accuracy (default 0.88) or its epoch limit, on this machine:
#   - the centralised trainer, and two of them side by side (the 2-core
#     ceiling: their summed samples/s, measured, not assumed);
#   - the embedded actor run with 1, 2, 4 replicas x 1, 2, 4 slices per
#     layer (config/local.ini otherwise);
#   - the default config as shipped, and the seed's example;
#   - the 3-node loopback cluster (config/cluster/) in f32 and bf16.
# Columns: samples/s, ratio to the centralised trainer, share of the
# ceiling, seconds to TARGET (from the run's own summary), test accuracy
# at the stop, peak RSS (GNU time; the cluster: the largest node), for
# the cluster the bytes through loopback per training batch (/proc/net/dev:
# keep other loopback traffic away while it runs), and for the embedded
# actor runs the data-flow messages per training batch (from a second run
# with the Prometheus metrics on).
# usage: bench/bench-table.sh [TARGET]
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-0.88}
bin=build/bin/nettorrent
[ -x "$bin" ] || scripts/build.sh
[ -x /usr/bin/time ] || { echo "bench-table: needs GNU time (apt-get install time)" >&2; exit 2; }
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
common=(--training.target_accuracy="$target" --training.progress_interval=1000
        --system.metrics=false)

. bench/lib.sh
rss_mb() { awk '/Maximum resident set size/ { printf "%.0f", $NF / 1024 }' "$1"; }

rows=()
# row NAME LOG RSS_MB [BYTES_PER_BATCH] [MESSAGES_PER_BATCH]
row() { rows+=("$1|$(rate "$2")|$(to_target "$2")|$(accuracy "$2")|$3|${4:--}|${5:--}"); }

# messages TAG ARGS...: the same actor run once more with the metrics on
# (the timed run keeps them off), scraped while the exporter lingers: the
# data-flow messages sent (every kind, validation passes and rounds
# included) per training batch.
# Prints "?" when the count cannot be had (the port taken, a failed scrape).
messages() {
  local tag=$1 port=$((19470 + RANDOM % 500)) log n s
  shift
  log="$out/$tag-msg.log"
  "$bin" "$@" "${common[@]}" --system.metrics=true --system.metrics_bind=127.0.0.1 \
    --system.metrics_port="$port" --system.metrics_linger=20 \
    --training.output_dir="$out/$tag-msg" > "$log" 2>&1 &
  msg_pid=$! # global: the trap below runs after this function returns
  local pid=$msg_pid
  trap 'kill "$msg_pid" 2>/dev/null' EXIT # this runs in $(...): the script's trap does not see it
  until grep -q "^metrics: the exporter stays up" "$log"; do
    kill -0 "$pid" 2>/dev/null || { echo "bench-table: the $tag metrics run ended early" >&2; echo "?"; return 0; }
    sleep 0.2
  done
  n=$(curl -sf --max-time 10 "http://127.0.0.1:$port/metrics" \
        | awk '/^nettorrent_messages_sent_total\{/ { s += $NF } END { printf "%.0f", s }') || n=0
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  s=$(samples "$log")
  if [ "${n:-0}" -gt 0 ] && [ -n "$s" ]; then
    # training batches: samples / training.batch_size (64 in every config run here)
    awk -v n="$n" -v b="$(( s / 64 ))" 'BEGIN { printf "%.1f", n / b }'
  else
    echo "bench-table: no message count for $tag" >&2
    echo "?"
  fi
}

# run NAME TAG ARGS...: one process under GNU time (actor runs: then a
# second run of the same configuration for its messages per batch).
run() {
  local name=$1 tag=$2 per=-
  shift 2
  /usr/bin/time -v "$bin" "$@" "${common[@]}" --training.output_dir="$out/$tag" \
    > "$out/$tag.log" 2> "$out/$tag.time"
  if [ "$1" = train ]; then per=$(messages "$tag" "$@"); fi
  row "$name" "$out/$tag.log" "$(rss_mb "$out/$tag.time")" - "$per"
}

echo "bench-table: running (a few minutes)..." >&2
run "centralised trainer" central centralised --config-file=config/local.ini
# The ceiling: two centralised trainers at once, samples/s summed.
for i in 1 2; do
  /usr/bin/time -v "$bin" centralised --config-file=config/local.ini "${common[@]}" \
    --training.output_dir="$out/pair$i" > "$out/pair$i.log" 2> "$out/pair$i.time" &
done
wait
ceiling=$(( $(rate "$out/pair1.log") + $(rate "$out/pair2.log") ))
central=$(rate "$out/central.log")
for r in 1 2 4; do
  for p in 1 2 4; do
    run "embedded, $r replicas x $p slices" "emb-$r-$p" train --config-file=config/local.ini \
      --topology.replicas="$r" --topology.slices="$p"
  done
done
run "default (config/local.ini as shipped)" default train --config-file=config/local.ini
run "seed example (10 swarms x 100 peers)" seed train --config-file=config/seed-example.ini

cluster() {
  local name=$1 tag=$2 before after n peak=0 m
  shift 2
  before=$(lo_bytes)
  for i in 0 1 2; do
    /usr/bin/time -v "$bin" node --config-file=config/cluster/node-$i.ini "${common[@]}" "$@" \
      --training.output_dir="$out/$tag" > "$out/$tag-n$i.log" 2> "$out/$tag-n$i.time" &
  done
  wait
  after=$(lo_bytes)
  for i in 0 1 2; do
    m=$(rss_mb "$out/$tag-n$i.time")
    [ "$m" -gt "$peak" ] && peak=$m
  done
  n=$(samples "$out/$tag-n0.log")
  row "$name" "$out/$tag-n0.log" "$peak" "$(( (after - before) / (n / 64) / 1024 )) KiB"
}
cluster "3-node loopback cluster, f32" clu-f32 --system.wire_precision=f32
cluster "3-node loopback cluster, bf16" clu-bf16 --system.wire_precision=bf16

# Time to target, the default against the centralised trainer: 3 rounds,
# interleaved, of the centralised trainer as configured (one validation pass
# per epoch), the centralised trainer validating every 10 000 samples (the
# default's round: 2 replicas x 5000, the same resolution), and the default;
# the median ratios.
# Seconds (ms resolution) of the first curve point at or above the target.
secs() {
  awk -F, -v t="$target" 'NR > 1 && $6 >= t { printf "%.3f", $3; exit }' "$1/curve.csv"
}
c_t=() e_t=() d_t=() ratios=() ratios_e=()
for i in 1 2 3; do
  "$bin" centralised --config-file=config/local.ini "${common[@]}" \
    --training.output_dir="$out/tc$i" > "$out/tc$i.log" 2>&1
  "$bin" centralised --config-file=config/local.ini "${common[@]}" --training.eval_every=10000 \
    --training.output_dir="$out/te$i" > "$out/te$i.log" 2>&1
  "$bin" train --config-file=config/local.ini "${common[@]}" \
    --training.output_dir="$out/td$i" > "$out/td$i.log" 2>&1
  c=$(secs "$out/tc$i") e=$(secs "$out/te$i") d=$(secs "$out/td$i")
  [ -n "$c" ] && [ -n "$e" ] && [ -n "$d" ] \
    || { echo "bench-table: a run of the time-to-target rounds did not reach $target" >&2; exit 1; }
  c_t+=("$c") e_t+=("$e") d_t+=("$d")
  ratios+=("$(awk -v c="$c" -v d="$d" 'BEGIN { printf "%.3f", d / c }')")
  ratios_e+=("$(awk -v c="$e" -v d="$d" 'BEGIN { printf "%.3f", d / c }')")
done

cpu=$(cpu_name)
echo "cpu: $cpu, $(nproc) cores; until $target validation accuracy or the epoch limit"
echo "two centralised trainers side by side: $(rate "$out/pair1.log") + $(rate "$out/pair2.log") = $ceiling samples/s (the ceiling)"
echo
echo "| run | samples/s | x centralised | share of ceiling | time to $target | test accuracy | peak RSS | loopback bytes/batch | messages/batch |"
echo "|---|---|---|---|---|---|---|---|---|"
for r in "${rows[@]}"; do
  IFS='|' read -r name rs tt acc rss bpb mpb <<< "$r"
  awk -v n="$name" -v r="$rs" -v c="$central" -v k="$ceiling" -v t="$tt" -v a="$acc" -v m="$rss" -v b="$bpb" -v p="$mpb" \
    'BEGIN { printf "| %s | %d | %.2f | %.2f | %s | %s | %s MB | %s | %s |\n", n, r, r / c, r / k, t, a, m, b, p }'
done
echo
echo "time to $target, 3 interleaved rounds: default ${d_t[*]} s;"
echo "  centralised, validating per epoch: ${c_t[*]} s; default / it: ${ratios[*]};" \
  "median $(median "${ratios[@]}")"
echo "  centralised, validating every 10000 samples: ${e_t[*]} s; default / it: ${ratios_e[*]};" \
  "median $(median "${ratios_e[@]}")"
