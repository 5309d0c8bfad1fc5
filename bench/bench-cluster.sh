#!/usr/bin/env bash
# Benchmark: samples/s of the 3-node loopback cluster (config/cluster/,
# one process per node) next to the embedded run (config/local.ini, one
# process) with the same model, data, topology and epochs, in interleaved
# repeats; prints medians, their ratio, and the bytes that crossed the
# loopback interface per training batch during the cluster run (read from
# /proc/net/dev: all loopback traffic, BASP framing included, so nothing
# else should talk on lo while it runs). The same cluster runs a second
# time in each repeat with mutual TLS on (a copy of config/cluster/ with a
# [tls] section and certificates from scripts/make-certs.sh), for the cost
# of TLS as a ratio of the two, and a third time with
# system.wire_precision = "bf16" (activations and gradients as bfloat16).
# Last, the accuracy cost of bf16 and int8 without scheduling noise: the
# same cluster with one replica and max_in_flight 1 (a deterministic run)
# for ACC_EPOCHS epochs, once f32, once bf16 and once int8.
# usage: bench/bench-cluster.sh [EPOCHS] [REPEATS] [ACC_EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-3}
repeats=${2:-3}
acc_epochs=${3:-5}
bin=build/bin/nettorrent
[ -x "$bin" ] || scripts/build.sh
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

. bench/lib.sh
common=(--training.max_epochs="$epochs" --training.progress_interval=1000)

# The TLS copy of the cluster: same description plus [tls], certificates
# per node (tls.enabled is hashed, so every node reads the same copy).
mkdir -p "$out/tls"
cp config/cluster/*.ini "$out/tls/"
scripts/make-certs.sh "$out/tls/certs" n0 n1 n2 > /dev/null
printf '\n[tls]\nenabled = true\nca_file = "certs/ca.pem"\n' >> "$out/tls/cluster.ini"
for i in 0 1 2; do
  printf 'tls_certificate = "certs/n%s.pem"\ntls_key = "certs/n%s-key.pem"\n' "$i" "$i" >> "$out/tls/node-$i.ini"
done

# run_cluster DIR TAG [OVERRIDE...]: the three nodes of DIR; appends
# samples/s and bytes per batch to the arrays named TAG_rate and TAG_bpb.
run_cluster() {
  local dir=$1 tag=$2 before after n
  shift 2
  before=$(lo_bytes)
  for i in 0 1 2; do
    "$bin" node --config-file="$dir/node-$i.ini" "${common[@]}" "$@" \
      --training.output_dir="$out/$tag" > "$out/$tag-n$i.log" 2>&1 &
  done
  wait
  after=$(lo_bytes)
  n=$(samples "$out/$tag-n0.log")
  eval "${tag}_rate+=(\"$(rate "$out/$tag-n0.log")\")"
  eval "${tag}_bpb+=(\"$(( (after - before) / (n / 64) ))\")"
}

emb=(); plain_rate=(); plain_bpb=(); tls_rate=(); tls_bpb=(); bf16_rate=(); bf16_bpb=()
for r in $(seq "$repeats"); do
  "$bin" train --config-file=config/local.ini "${common[@]}" --training.output_dir="$out/e" > "$out/e.log"
  emb+=("$(rate "$out/e.log")")
  run_cluster config/cluster plain
  run_cluster "$out/tls" tls
  run_cluster config/cluster bf16 --system.wire_precision=bf16
done
e=$(median "${emb[@]}"); c=$(median "${plain_rate[@]}"); b=$(median "${plain_bpb[@]}")
t=$(median "${tls_rate[@]}"); tb=$(median "${tls_bpb[@]}")
h=$(median "${bf16_rate[@]}"); hb=$(median "${bf16_bpb[@]}")

# The accuracy cost of bf16, deterministic: 1 replica, max_in_flight 1.
common=(--training.max_epochs="$acc_epochs" --training.progress_interval=1000
        --topology.replicas=1 --topology.max_in_flight=1)
run_cluster config/cluster accf32 --system.wire_precision=f32
run_cluster config/cluster accbf16 --system.wire_precision=bf16
run_cluster config/cluster accint8 --system.wire_precision=int8
af=$(accuracy "$out/accf32-n0.log"); ab=$(accuracy "$out/accbf16-n0.log"); ai=$(accuracy "$out/accint8-n0.log")
cpu=$(cpu_name)
echo "cpu:             $cpu, $(nproc) cores"
echo "workload:        784-256-128-10, Adam, batch 64, 2 replicas, $epochs epochs; median of $repeats interleaved repeats"
echo "embedded:        $e samples/s (1 process, config/local.ini)"
echo "3-node cluster:  $c samples/s (3 processes on loopback, config/cluster/, placement by_swarm)"
awk -v c="$c" -v e="$e" 'BEGIN { printf "ratio:           %.3f cluster / embedded (target >= 0.5: %s)\n", c / e, (c / e >= 0.5 ? "met" : "NOT met") }'
awk -v b="$b" 'BEGIN { printf "loopback bytes:  %.0f per training batch (%.1f KiB; includes validation passes, weight sync and BASP framing)\n", b, b / 1024 }'
echo "3-node TLS:      $t samples/s (the same cluster with mutual TLS)"
awk -v t="$t" -v c="$c" -v b="$tb" 'BEGIN { printf "TLS cost:        %.3f TLS / plain samples/s; %.1f KiB per training batch with TLS\n", t / c, b / 1024 }'
echo "3-node bf16:     $h samples/s (the plain cluster with system.wire_precision = \"bf16\")"
awk -v h="$h" -v c="$c" -v hb="$hb" -v b="$b" 'BEGIN { printf "bf16 effect:     %.3f bf16 / f32 samples/s; %.1f KiB per training batch, %.3f of f32\n", h / c, hb / 1024, hb / b }'
awk -v f="$af" -v g="$ab" -v e="$acc_epochs" 'BEGIN { printf "bf16 accuracy:   test accuracy %.4f f32, %.4f bf16 (%+.2f pp; 1 replica, max_in_flight 1, %d epochs: deterministic)\n", f, g, (g - f) * 100, e }'
awk -v f="$af" -v g="$ai" -v e="$acc_epochs" 'BEGIN { printf "int8 accuracy:   test accuracy %.4f f32, %.4f int8 (%+.2f pp; the same runs)\n", f, g, (g - f) * 100, e }'
