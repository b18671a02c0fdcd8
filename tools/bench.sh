#!/usr/bin/env bash
# `make bench`: one scenario on kind four times in one go, then a table of phase times and the ratios:
#   fresh         its own clusters, created and deleted (meshconf run)
#   fleet-first   --reuse with no fleet yet: creates the fleet, keeps it
#   fleet-reused  --reuse again: reuses the clusters, resets them, proves them clean
#   fleet-serial  --reuse --serial: the same, the steps of each stage one after another
# fresh / reused compares the first and third; serial / parallel the fourth and third. A phase is the span of
# the actions of the steps sharing an id prefix (create-cluster, install-istio, …), read from each run's JSON
# record; "verdict" is the time from launching `meshconf run` to the end of its last traffic check, "wall" to
# the process's exit (the reset included). Every run must pass, or its times mean nothing and the bench fails.
# The bench's fleets live apart (<cache>/bench-fleets) and are removed at the end, whatever happened.
# Needs: DOCKER_HOST of a running engine (make bench starts meshconf's), the images of `make images`, jq.
# Usage: tools/bench.sh [SCENARIO]   (default scenarios/multi-primary.yaml); reports in reports/bench/<run>/.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=lib/cache.sh
source "$here/lib/cache.sh"
scenario=${1:-scenarios/multi-primary.yaml}
out=${MESHCONF_BENCH_REPORTS:-$root/reports/bench}
run_deadline=${MESHCONF_BENCH_RUN_DEADLINE:-1200}
export MESHCONF_FLEETS_DIR="$meshconf_cache/bench-fleets"
command -v jq >/dev/null || { echo "meshconf bench: jq not found" >&2; exit 2; }
target=$(cd "$root" && timeout 120 cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
(cd "$root" && timeout 3600 cargo build --release -q -p meshconf)
bin="$target/release/meshconf"

down() { timeout --kill-after=10 600 "$bin" fleet down --all >&2 || echo "meshconf bench: fleet down failed" >&2; }
trap down EXIT
rm -rf "$out" && mkdir -p "$out"

now_ms() { date +%s%3N; }
# bench NAME ARGS...: one run; records its launch and exit times beside its reports.
bench() {
  local name=$1; shift
  local dir="$out/$name" start rc=0
  mkdir -p "$dir"
  echo "meshconf bench: $name: meshconf run $scenario --provider kind $*" >&2
  start=$(now_ms)
  timeout --kill-after=30 "$run_deadline" "$bin" run "$root/$scenario" --provider kind --report-dir "$dir" \
    --report-name bench "$@" >"$dir/console.log" 2>&1 || rc=$?
  echo "$start $(now_ms) $rc" >"$dir/times"
  if [[ $rc -ne 0 ]]; then
    echo "meshconf bench: $name ended with exit $rc (a failed run's times mean nothing); last lines:" >&2
    tail -n 20 "$dir/console.log" >&2
    exit 1
  fi
}

bench fresh
bench fleet-first --reuse
bench fleet-reused --reuse
bench fleet-serial --reuse --serial

# phases DIR: "phase seconds" lines, plan order, then verdict and wall.
phases() {
  local dir=$1 start end
  read -r start end _ <"$dir/times"
  # $t0/$t1, not $start/$end: `end` is a keyword jq 1.6 refuses as a variable name.
  jq -r --argjson t0 "$start" --argjson t1 "$end" '
    [.events[] | select(.event == "action-finished")
      | {phase: (.id | split("/")[0]), s: .record.started, e: .record.ended}] as $a
    | ($a | map(.phase) | reduce .[] as $p ([]; if index([$p]) then . else . + [$p] end)) as $order
    | ($order[] as $p | [$a[] | select(.phase == $p)] | "\($p) \(((map(.e) | max) - (map(.s) | min)) / 1000)"),
      "verdict \((([$a[] | select(.phase == "check-traffic") | .e] | max) - $t0) / 1000)",
      "wall \(($t1 - $t0) / 1000)"
  ' "$dir/bench.json"
}

runs=(fresh fleet-first fleet-reused fleet-serial)
declare -A t
order=()
for r in "${runs[@]}"; do
  # A record the table cannot read fails the bench: a table of dashes measures nothing.
  phases "$out/$r" >"$out/$r/phases.txt" && grep -q '^verdict [0-9]' "$out/$r/phases.txt" || {
    echo "meshconf bench: cannot read the phase times of $r from $out/$r/bench.json" >&2
    exit 1
  }
  while read -r phase secs; do
    [[ -v "t[$phase]" ]] || order+=("$phase")
    t[$phase]=1
    t[$r/$phase]=$secs
  done <"$out/$r/phases.txt"
done
# Phases in first-seen order, verdict and wall last.
rows=()
for p in "${order[@]}"; do [[ $p == verdict || $p == wall ]] || rows+=("$p"); done
rows+=(verdict wall)
ratio() { awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'; }
{
  echo "meshconf bench: $scenario on kind, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
  printf '%-22s %10s %12s %13s %13s %15s %17s\n' phase fresh fleet-first fleet-reused fleet-serial \
    fresh/reused serial/parallel
  for p in "${rows[@]}"; do
    printf '%-22s %10s %12s %13s %13s %15s %17s\n' "$p" "${t[fresh/$p]:--}" "${t[fleet-first/$p]:--}" \
      "${t[fleet-reused/$p]:--}" "${t[fleet-serial/$p]:--}" \
      "$(ratio "${t[fresh/$p]:-}" "${t[fleet-reused/$p]:-}")" \
      "$(ratio "${t[fleet-serial/$p]:-}" "${t[fleet-reused/$p]:-}")"
  done
} | tee "$out/table.txt"
