#!/usr/bin/env bash
# Starts an N-node NetTorrent cluster on this machine and streams every
# node's output, prefixed with its id ("[n0] ...").
#
# Usage: scripts/launch-cluster.sh [N] [--section.key=value ...]
#   N            number of nodes (default 3): node-0.ini .. node-(N-1).ini of
#                the cluster directory are started, one process each
#   --a.b=value  passed identically to every node (overrides change the
#                cluster hash, so every node must get the same ones)
# Environment:
#   NETTORRENT_CLUSTER_DIR  directory of the node files (default: config/cluster
#                           of this checkout)
#   NETTORRENT_BIN          the nettorrent binary (default: build/bin/nettorrent
#                           of this checkout, built with scripts/build.sh if
#                           missing)
#   NETTORRENT_KILL_GRACE   seconds between SIGTERM and SIGKILL when stopping
#                           nodes (default 5)
#   NETTORRENT_DRAIN_TIMEOUT seconds the other nodes get to finish after the
#                           coordinator's node exited successfully (default 30)
#
# Ctrl-C or SIGTERM stops every node (SIGTERM, then SIGKILL after the grace
# period). If a node fails, the others are stopped. Exit status: 0 if every
# node exited 0; otherwise non-zero, after naming each node that failed.
# Relative paths in overrides (e.g. --training.output_dir) are taken from the
# current directory, as for `nettorrent node` itself.
set -uo pipefail

me=launch-cluster
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { say "error: $*"; exit 2; }

# --- arguments ---------------------------------------------------------------
n=3
if [[ $# -gt 0 && $1 != --* ]]; then
  if [[ ! $1 =~ ^[0-9]+$ ]] || ((10#$1 < 1)); then
    die "the node count must be a positive integer, not \"$1\" (usage: $0 [N] [--section.key=value ...])"
  fi
  n=$((10#$1))
  shift
fi
for a in "$@"; do
  [[ $a == --?*=* ]] || die "\"$a\" is not an override of the form --section.key=value"
  [[ $a == --config-file=* ]] && die "--config-file is set per node by the launcher; use NETTORRENT_CLUSTER_DIR to choose the node files"
done

dir=${NETTORRENT_CLUSTER_DIR:-$root/config/cluster}
[[ -d $dir ]] || die "cluster directory $dir does not exist"
grace=${NETTORRENT_KILL_GRACE:-5}
drain=${NETTORRENT_DRAIN_TIMEOUT:-30}
[[ $grace =~ ^[0-9]+$ ]] || die "NETTORRENT_KILL_GRACE must be a whole number of seconds, not \"$grace\""
[[ $drain =~ ^[0-9]+$ ]] || die "NETTORRENT_DRAIN_TIMEOUT must be a whole number of seconds, not \"$drain\""

# --- node files ----------------------------------------------------------------
# The value of `key = "string"` in an INI file (first match), or nothing.
ini_string() { sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*\"\([^\"]*\)\".*/\1/p" "$1" | head -n 1; }
# The quoted strings of `key = ["a", "b"]` in an INI file, one per line.
ini_strings() {
  sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*\[\(.*\)\].*/\1/p" "$1" | head -n 1 \
    | grep -o '"[^"]*"' | tr -d '"'
}

files=() ids=()
for ((i = 0; i < n; ++i)); do
  f=$dir/node-$i.ini
  if [[ ! -f $f ]]; then
    if ((n > 3)); then
      die "no node file $f: a $n-node cluster needs node-0.ini .. node-$((n - 1)).ini in $dir and a cluster.ini listing $n nodes (write them, or set NETTORRENT_CLUSTER_DIR)"
    fi
    die "no node file $f (node $i of $n)"
  fi
  id=$(ini_string "$f" id)
  files+=("$f")
  ids+=("${id:-node-$i}")
done

# Best effort, from node-0.ini's cluster file: the node list (to catch a
# wrong N before the nodes wait out their registration deadline) and the
# coordinator's node (the first id in sorted order unless placement is
# "explicit"). nettorrent itself checks everything properly.
coordinator=
cfile=$(ini_string "${files[0]}" cluster_file)
if [[ -n $cfile ]]; then
  [[ $cfile == /* ]] || cfile=$(dirname "${files[0]}")/$cfile
  if [[ -f $cfile ]]; then
    mapfile -t listed < <(ini_strings "$cfile" ids)
    if ((${#listed[@]} > 0 && ${#listed[@]} != n)); then
      die "$cfile lists ${#listed[@]} nodes (${listed[*]}) but $n were asked for"
    fi
    if [[ $(ini_string "$cfile" strategy) == explicit ]]; then
      coordinator=$(ini_string "$cfile" coordinator)
    elif ((${#listed[@]} > 0)); then
      coordinator=$(printf '%s\n' "${listed[@]}" | LC_ALL=C sort | head -n 1)
    fi
  fi
fi

# --- binary --------------------------------------------------------------------
if [[ -n ${NETTORRENT_BIN:-} ]]; then
  bin=$NETTORRENT_BIN
  [[ -x $bin ]] || die "NETTORRENT_BIN=$bin is not an executable file"
else
  bin=$root/build/bin/nettorrent
  if [[ ! -x $bin ]]; then
    say "$bin is missing: building it with scripts/build.sh"
    "$root/scripts/build.sh" >&2 || die "scripts/build.sh failed"
    [[ -x $bin ]] || die "scripts/build.sh did not produce $bin"
  fi
fi

# --- processes -----------------------------------------------------------------
declare -a pids=() sed_pids=() status=() stopped=()
stopping=0 signalled=0

alive() { kill -0 "$1" 2>/dev/null; }

# Stops every node still running: SIGTERM, then SIGKILL after $grace s.
stop_nodes() {
  local i t live
  stopping=1
  for ((i = 0; i < ${#pids[@]}; ++i)); do
    [[ -z ${status[i]:-} ]] && alive "${pids[i]}" && kill -TERM "${pids[i]}" 2>/dev/null
  done
  for ((t = 0; t < grace * 10; ++t)); do
    live=0
    for ((i = 0; i < ${#pids[@]}; ++i)); do
      [[ -z ${status[i]:-} ]] && alive "${pids[i]}" && live=1
    done
    ((live)) || return 0
    sleep 0.1
  done
  for ((i = 0; i < ${#pids[@]}; ++i)); do
    if [[ -z ${status[i]:-} ]] && alive "${pids[i]}"; then
      say "node ${ids[i]} did not stop within ${grace}s of SIGTERM: sending SIGKILL"
      kill -KILL "${pids[i]}" 2>/dev/null
    fi
  done
}

# shellcheck disable=SC2317 # on_signal and cleanup run from traps
on_signal() {
  ((signalled)) && return
  signalled=$1
  say "caught SIG$2: stopping every node"
  stop_nodes
}
trap 'on_signal 2 INT' INT
trap 'on_signal 15 TERM' TERM
# Whatever happens, leave no node behind.
# shellcheck disable=SC2317
cleanup() {
  local p
  for p in "${pids[@]}" "${sed_pids[@]}"; do
    alive "$p" && kill -KILL "$p" 2>/dev/null
  done
}
trap cleanup EXIT

say "starting $n nodes from $dir with $bin${coordinator:+ (coordinator on $coordinator)}"
for ((i = 0; i < n; ++i)); do
  ((signalled)) && break # stopped while starting: start no more
  prefix=$(printf '%s' "[${ids[i]}] " | sed 's/[\\/&]/\\&/g')
  # Each node writes into a pipe to its own sed (a child of this script, so
  # it can be waited for); this script closes its end of the pipe at once,
  # so sed ends when the node does. Background commands of a script ignore
  # SIGINT, and so does sed: Ctrl-C reaches the nodes only through
  # on_signal, which stops them in order and lets their last lines through.
  exec {out}> >(trap '' INT; exec sed -u "s/^/$prefix/")
  sed_pids+=($!)
  "$bin" node --config-file="${files[i]}" "$@" >&"$out" 2>&1 &
  pids+=($!)
  exec {out}>&-
done
n=${#pids[@]}

# --- supervision ------------------------------------------------------------------
describe_status() { # exit status -> text
  if (($1 > 128)); then
    local name
    name=$(kill -l "$(($1 - 128))" 2>/dev/null) || name=$(($1 - 128))
    printf 'killed by SIG%s' "$name"
  else
    printf 'exit status %d' "$1"
  fi
}

# Polls every 0.1 s rather than `wait -n`: bash drops a job that it reaped
# in the background (e.g. while stopping nodes) from the set `wait -n`
# looks at, while `wait PID` still returns the saved status of any child.
failed=0 remaining=$n drain_deadline=
while ((remaining > 0)); do
  if [[ -n $drain_deadline ]] && ((SECONDS >= drain_deadline)); then
    say "the coordinator's node exited but some nodes are still running after ${drain}s: stopping them"
    failed=1
    drain_deadline=
    stop_nodes
  fi
  progress=0
  for ((i = 0; i < n; ++i)); do
    [[ -z ${status[i]:-} ]] || continue
    alive "${pids[i]}" && continue
    wait "${pids[i]}"
    st=$?
    status[i]=$st
    progress=1
    ((--remaining))
    if ((st == 0)); then
      say "node ${ids[i]} finished"
      if [[ ${ids[i]} == "$coordinator" ]] && ((remaining > 0 && !stopping)); then
        drain_deadline=$((SECONDS + drain)) # the others get $drain s to finish
      fi
    elif ((stopping)); then
      stopped[i]=1
      say "node ${ids[i]} stopped ($(describe_status "$st"))"
    else
      say "node ${ids[i]} (${files[i]}) FAILED: $(describe_status "$st"); stopping the others"
      failed=1
      stop_nodes
    fi
  done
  ((remaining > 0 && !progress)) && sleep 0.1
done

# Let the output of every node drain before the verdict.
for p in "${sed_pids[@]}"; do
  wait "$p" 2>/dev/null
done

if ((signalled)); then
  say "stopped by a signal"
  exit $((128 + signalled))
fi
if ((failed)); then
  bad=() halted=()
  for ((i = 0; i < n; ++i)); do
    ((status[i] == 0)) && continue
    if [[ -n ${stopped[i]:-} ]]; then
      halted+=("${ids[i]}")
    else
      bad+=("${ids[i]} ($(describe_status "${status[i]}"))")
    fi
  done
  say "the run FAILED${bad[*]:+; failed: ${bad[*]}}${halted[*]:+; stopped by the launcher: ${halted[*]}}"
  exit 1
fi
say "all $n nodes exited 0"
exit 0
