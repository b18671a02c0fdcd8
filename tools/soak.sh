#!/usr/bin/env bash
# Soak: N consecutive `meshconf run --reuse` runs of multi-primary on one kind fleet (run 1 creates it when
# missing). Per run: exit code, wall time, cluster1's object counts before and after (from the run's JSON), and
# MemAvailable before it. Leaves the fleet up: `meshconf fleet down --all` removes it.
set -u
cd "$(dirname "$0")/.."
N=${1:-10}
DIR=${SOAK_DIR:-reports/soak}
mkdir -p "$DIR"
command -v jq >/dev/null || { echo "meshconf soak: jq not found" >&2; exit 2; }
timeout 1800 cargo build -q -p meshconf || exit 3
# Wherever cargo puts it (CARGO_TARGET_DIR included).
bin="$(timeout 120 cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/debug/meshconf"
DOCKER_HOST="$(timeout 300 bash tools/engine.sh up 2>/dev/null | tail -n1)"
export DOCKER_HOST
status=0
for i in $(seq 1 "$N"); do
  mem=$(awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo)
  start=$(date +%s%N)
  timeout 900 "$bin" run scenarios/multi-primary.yaml --provider kind --reuse \
    --report-dir "$DIR" --report-name "run$i" >"$DIR/run$i.log" 2>&1
  rc=$?
  [ "$rc" -eq 0 ] || status=1
  wall=$(( ($(date +%s%N) - start) / 1000000 ))
  counts=$(python3 - "$DIR/run$i.json" <<'PY' 2>/dev/null
import json, sys
props = {}
for ev in json.load(open(sys.argv[1]))["events"]:
    if ev["event"] == "step-finished":
        props.update(ev.get("properties", {}))
print(props.get("snapshot/cluster1", "?"), "|", props.get("snapshot-after/cluster1", "?"))
PY
)
  echo "run $i exit $rc wall ${wall} ms memavail-before ${mem} MiB cluster1 before|after: ${counts}"
done
exit $status
