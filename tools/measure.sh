#!/usr/bin/env bash
# Runs a command and reports its wall time and the peak memory the machine used for it: the maximum of
# (MemTotal - MemAvailable) sampled every 0.2 s, minus the value before the command started. Rehearsal
# components are daemonised (kwokctl forks them with setsid), so a per-process peak would miss them.
# Usage: tools/measure.sh COMMAND [ARGS...]
set -uo pipefail
used_kib() { awk '/MemTotal/ {t=$2} /MemAvailable/ {a=$2} END {print t-a}' /proc/meminfo; }
base=$(used_kib)
peak=$base
start=$(date +%s.%N)
"$@" &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
  u=$(used_kib); (( u > peak )) && peak=$u
  sleep 0.2
done
wait "$pid"; rc=$?
end=$(date +%s.%N)
printf 'measure: wall %.1f s, peak memory above baseline %d MiB (baseline %d MiB), exit %d\n' \
  "$(awk -v s="$start" -v e="$end" 'BEGIN{print e-s}')" $(( (peak - base) / 1024 )) $(( base / 1024 )) "$rc" >&2
exit "$rc"
