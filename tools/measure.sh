#!/usr/bin/env bash
# Runs a command and reports its wall time, the CPU time the whole machine spent meanwhile (busy core-seconds from
# /proc/stat: what a command that starts daemons costs, them included) and the peak memory the machine used for it:
# the maximum of (MemTotal - MemAvailable) sampled every 0.2 s, minus the value before the command started. Rehearsal
# components are daemonised (kwokctl forks them with setsid), so a per-process peak would miss them.
# With MEASURE_TRACE=FILE it also appends a line every 5 s: seconds since start, the CPUs' busy share over those 5 s
# (from /proc/stat, all processes) and the memory in use, so a slow phase shows whether it waited or computed.
# Usage: tools/measure.sh COMMAND [ARGS...]
set -uo pipefail
used_kib() { awk '/MemTotal/ {t=$2} /MemAvailable/ {a=$2} END {print t-a}' /proc/meminfo; }
base=$(used_kib)
peak=$base
cpu() { awk '/^cpu / {print $2+$3+$4+$7+$8, $5+$6; exit}' /proc/stat; }  # busy idle (jiffies)
trace=${MEASURE_TRACE:-}
start=$(date +%s.%N)
"$@" &
pid=$!
n=0; read -r b0 i0 < <(cpu); busy_start=$b0
while kill -0 "$pid" 2>/dev/null; do
  u=$(used_kib); (( u > peak )) && peak=$u
  sleep 0.2
  if [[ -n "$trace" ]] && (( ++n % 25 == 0 )); then
    read -r b1 i1 < <(cpu)
    awk -v s="$start" -v n="$(date +%s.%N)" -v b=$((b1 - b0)) -v i=$((i1 - i0)) -v m=$((u / 1024)) \
      'BEGIN {printf "%.0f s  busy %3.0f%%  used %d MiB\n", n - s, (b + i) ? 100 * b / (b + i) : 0, m}' >>"$trace"
    b0=$b1 i0=$i1
  fi
done
wait "$pid"; rc=$?
end=$(date +%s.%N)
read -r busy_end _ < <(cpu)
printf 'measure: wall %.1f s, cpu %.1f s, peak memory above baseline %d MiB (baseline %d MiB), exit %d\n' \
  "$(awk -v s="$start" -v e="$end" 'BEGIN{print e-s}')" \
  "$(awk -v b=$((busy_end - busy_start)) -v hz="$(getconf CLK_TCK)" 'BEGIN{print b / hz}')" \
  $(( (peak - base) / 1024 )) $(( base / 1024 )) "$rc" >&2
exit "$rc"
