#!/usr/bin/env bash
# Starts an N-node NetTorrent cluster on this machine and streams every
# node's output, prefixed with its id ("[n0] ...").
#
# Usage: scripts/launch-cluster.sh [N] [--restart-failed] [--section.key=value ...]
#   N                 number of nodes (default 3): node-0.ini .. node-(N-1).ini
#                     of the cluster directory are started, one process each
#   --restart-failed  start a failed node again (same node file, same
#                     overrides), at most NETTORRENT_MAX_RESTARTS times per
#                     node; never the coordinator's node, and not once the
#                     coordinator's node has exited
#   --a.b=value       passed identically to every node (overrides change the
#                     cluster hash, so every node must get the same ones)
# Environment:
#   NETTORRENT_CLUSTER_DIR  directory of the node files (default: config/cluster
#                           of this checkout)
#   NETTORRENT_BIN          the nettorrent binary (default: build/bin/nettorrent
#                           of this checkout, built with scripts/build.sh if
#                           missing; for an installed copy: nettorrent on PATH)
#   NETTORRENT_KILL_GRACE   seconds between SIGTERM and SIGKILL when stopping
#                           nodes (default 5)
#   NETTORRENT_DRAIN_TIMEOUT seconds the other nodes get to finish after the
#                           coordinator's node exited successfully (default 30)
#   NETTORRENT_MAX_RESTARTS restarts per node with --restart-failed (default 3)
#
# The coordinator's node is the first of the cluster file's nodes.ids in
# sorted order, or placement.coordinator with placement.strategy "explicit"
# (the cluster file named by node-0.ini). The run's outcome is the
# coordinator's:
#   - the coordinator's node fails: every other node is stopped;
#   - another node fails: it is reported (id, node file, exit status or
#     signal) and the others keep running; the coordinator decides whether
#     the run goes on without it. With --restart-failed it is started again.
# If the coordinator's node is unknown (no readable cluster file), every
# failure stops the others.
# Ctrl-C or SIGTERM stops every node: SIGTERM to the coordinator's node
# first, which finishes the sync round under way, writes a run checkpoint and
# its outputs and ends the run (the other nodes then leave by themselves);
# then SIGTERM to any node still running, and SIGKILL after the grace period.
# The nodes ignore Ctrl-C themselves (background jobs of this script), so
# the coordinator's node is not stopped twice.
# Exit status: 0 if the coordinator's node exited 0 (the run completed) and
# no node had to be stopped after it; every node that failed on the way is
# still named, restarted or not. 1 if the coordinator's node failed, or nodes
# still ran NETTORRENT_DRAIN_TIMEOUT s after it exited 0. 2 for a usage or
# setup error; 128+n when stopped by signal n.
# Relative paths in overrides (e.g. --training.output_dir) are taken from the
# current directory, as for `nettorrent node` itself.
set -uo pipefail

me=launch-cluster
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { say "error: $*"; exit 2; }

# --- arguments ---------------------------------------------------------------
usage="$0 [N] [--restart-failed] [--section.key=value ...]"
n=3
if [[ $# -gt 0 && $1 != --* ]]; then
  if [[ ! $1 =~ ^[0-9]+$ ]] || ((10#$1 < 1)); then
    die "the node count must be a positive integer, not \"$1\" (usage: $usage)"
  fi
  n=$((10#$1))
  shift
fi
restart_failed=0 overrides=()
for a in "$@"; do
  if [[ $a == --restart-failed ]]; then
    restart_failed=1
    continue
  fi
  [[ $a == --?*=* ]] || die "\"$a\" is not --restart-failed nor an override of the form --section.key=value (usage: $usage)"
  [[ $a == --config-file=* ]] && die "--config-file is set per node by the launcher; use NETTORRENT_CLUSTER_DIR to choose the node files"
  overrides+=("$a")
done

dir=${NETTORRENT_CLUSTER_DIR:-$root/config/cluster}
[[ -d $dir ]] || die "cluster directory $dir does not exist"
grace=${NETTORRENT_KILL_GRACE:-5}
drain=${NETTORRENT_DRAIN_TIMEOUT:-30}
[[ $grace =~ ^[0-9]+$ ]] || die "NETTORRENT_KILL_GRACE must be a whole number of seconds, not \"$grace\""
[[ $drain =~ ^[0-9]+$ ]] || die "NETTORRENT_DRAIN_TIMEOUT must be a whole number of seconds, not \"$drain\""
max_restarts=${NETTORRENT_MAX_RESTARTS:-3}
[[ $max_restarts =~ ^[0-9]+$ ]] || die "NETTORRENT_MAX_RESTARTS must be a whole number, not \"$max_restarts\""
max_restarts=$((10#$max_restarts))

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
elif [[ ! -x $root/scripts/build.sh ]]; then
  # An installed copy (share/nettorrent/scripts): the installed binary.
  bin=$(command -v nettorrent) || die "nettorrent is not on PATH; set NETTORRENT_BIN"
else
  bin=$root/build/bin/nettorrent
  if [[ ! -x $bin ]]; then
    say "$bin is missing: building it with scripts/build.sh"
    "$root/scripts/build.sh" >&2 || die "scripts/build.sh failed"
    [[ -x $bin ]] || die "scripts/build.sh did not produce $bin"
  fi
fi

# --- processes -----------------------------------------------------------------
declare -a pids=() sed_pids=() status=() stopped=() failures=() restarts=()
stopping=0 signalled=0

alive() { kill -0 "$1" 2>/dev/null; }

# Whether node i runs the coordinator (every node, if that is unknown: then
# any failure stops the run).
runs_coordinator() { [[ -z $coordinator || ${ids[$1]} == "$coordinator" ]]; }

# True once no node is running, within $1 s.
all_stopped_within() {
  local i t live
  for ((t = 0; t < $1 * 10; ++t)); do
    live=0
    for ((i = 0; i < ${#pids[@]}; ++i)); do
      [[ -z ${status[i]:-} ]] && alive "${pids[i]}" && live=1
    done
    ((live)) || return 0
    sleep 0.1
  done
  return 1
}

# Stops every node still running: the coordinator's node first (SIGTERM: it
# ends the run at its next sync round, with a run checkpoint, and the others
# leave), then SIGTERM to the rest, then SIGKILL after $grace s.
stop_nodes() {
  local i
  stopping=1
  for ((i = 0; i < ${#pids[@]}; ++i)); do
    if [[ -n $coordinator && ${ids[i]} == "$coordinator" && -z ${status[i]:-} ]] && alive "${pids[i]}"; then
      kill -TERM "${pids[i]}" 2>/dev/null
      all_stopped_within "$grace" && return 0
    fi
  done
  for ((i = 0; i < ${#pids[@]}; ++i)); do
    [[ -z ${status[i]:-} ]] && alive "${pids[i]}" && kill -TERM "${pids[i]}" 2>/dev/null
  done
  all_stopped_within "$grace" && return 0
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

# Starts node i (again, after a failure): node file i, the same overrides.
start_node() {
  local i=$1 prefix out
  prefix=$(printf '%s' "[${ids[i]}] " | sed 's/[\\/&]/\\&/g')
  # Each node writes into a pipe to its own sed (a child of this script, so
  # it can be waited for); this script closes its end of the pipe at once,
  # so sed ends when the node does. Background commands of a script ignore
  # SIGINT, and so does sed: Ctrl-C reaches the nodes only through
  # on_signal, which stops them in order and lets their last lines through.
  exec {out}> >(trap '' INT; exec sed -u "s/^/$prefix/")
  sed_pids+=($!)
  "$bin" node --config-file="${files[i]}" "${overrides[@]}" >&"$out" 2>&1 &
  pids[i]=$!
  status[i]=
  exec {out}>&-
}

say "starting $n nodes from $dir with $bin${coordinator:+ (coordinator on $coordinator)}"
if [[ -z $coordinator ]]; then
  say "the coordinator's node is unknown (no readable cluster file with nodes.ids): any failure stops every node$( ((restart_failed)) && printf ', and --restart-failed restarts none')"
elif ((restart_failed)); then
  say "a failed node other than $coordinator is restarted, at most $max_restarts times (NETTORRENT_MAX_RESTARTS)"
fi
for ((i = 0; i < n; ++i)); do
  ((signalled)) && break # stopped while starting: start no more
  start_node "$i"
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

# Node i failed (not stopped by the launcher) with status $2: report it, and
# stop the others, restart it, or leave the others running.
on_failure() {
  local i=$1 what
  what="node ${ids[i]} (${files[i]}) FAILED: $(describe_status "$2")"
  failures[i]+="${failures[i]:+, }$(describe_status "$2")"
  if runs_coordinator "$i"; then
    say "$what${coordinator:+; it runs the coordinator}; stopping the others"
    failed=1
    stop_nodes
  elif ((coordinator_exited)); then
    say "$what, after the coordinator's node exited; not restarted"
  elif ((restart_failed && ${restarts[i]:-0} < max_restarts)); then
    restarts[i]=$((${restarts[i]:-0} + 1))
    say "$what; restarting it (restart ${restarts[i]} of $max_restarts); the others keep running"
    start_node "$i"
    ((++remaining))
    ((stopping)) && kill -TERM "${pids[i]}" 2>/dev/null # a signal came in meanwhile
  elif ((restart_failed)); then
    say "$what; not restarted: restarted $max_restarts times already (NETTORRENT_MAX_RESTARTS); the others keep running"
  else
    say "$what; the others keep running (the coordinator decides whether the run goes on)"
  fi
}

# Polls every 0.1 s rather than `wait -n`: bash drops a job that it reaped
# in the background (e.g. while stopping nodes) from the set `wait -n`
# looks at, while `wait PID` still returns the saved status of any child.
failed=0 remaining=$n coordinator_exited=0 drain_deadline=
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
    elif ((stopping)); then
      stopped[i]=1
      say "node ${ids[i]} stopped ($(describe_status "$st"))"
    else
      on_failure "$i" "$st"
    fi
    if [[ ${ids[i]} == "$coordinator" ]]; then
      coordinator_exited=1
      ((st == 0 && remaining > 0 && !stopping)) && drain_deadline=$((SECONDS + drain)) # the others get $drain s to finish
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
# Every node that failed: its failures, its restarts, how it ended.
bad=() halted=()
for ((i = 0; i < n; ++i)); do
  if [[ -n ${failures[i]:-} ]]; then
    note=${failures[i]}
    ((${restarts[i]:-0} > 0)) && note+="; restarts: ${restarts[i]}"
    if ((status[i] == 0)); then
      note+=", then exited 0"
    elif [[ -n ${stopped[i]:-} ]]; then
      note+=", then stopped by the launcher"
    fi
    bad+=("${ids[i]} ($note)")
  elif [[ -n ${stopped[i]:-} ]]; then
    halted+=("${ids[i]}")
  fi
done
if ((failed)); then
  say "the run FAILED${bad[*]:+; failed: ${bad[*]}}${halted[*]:+; stopped by the launcher: ${halted[*]}}"
  exit 1
fi
if ((${#bad[@]} > 0)); then
  say "the run completed (the coordinator's node $coordinator exited 0); nodes that failed on the way: ${bad[*]}"
  exit 0
fi
say "all $n nodes exited 0"
exit 0
