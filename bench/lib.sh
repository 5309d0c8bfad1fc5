# Shared by the bench/*.sh scripts (sourced): read figures out of a run's
# log (the summary lines of `nettorrent train|centralised|node`) and of the
# machine.

# samples/s and samples of the run's "done: N samples in T (R samples/s)" line
rate() { sed -n 's/^.*done: [0-9]* samples in [^ ]* (\([0-9]*\) samples\/s).*/\1/p' "$1" | tail -1; }
samples() { sed -n 's/^.*done: \([0-9]*\) samples in .*/\1/p' "$1" | tail -1; }
# "3.2s" or "not reached"
to_target() { sed -n 's/^.*time to target: \(.*\)$/\1/p' "$1" | tail -1; }
accuracy() { sed -n 's/^.*test: accuracy \([0-9.]*\).*/\1/p' "$1" | tail -1; }
# Bytes received on loopback so far (all of it: keep other traffic away).
lo_bytes() { awk '$1 == "lo:" { print $10 }' /proc/net/dev; }
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
cpu_name() { sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1; }
