#!/usr/bin/env bash
# `make matrix`: every scenario on two Istio builds made here, then `meshconf compare` of the two:
#   reports/matrix/<baseline>/   reports/matrix/<candidate>/   reports/matrix/comparison.{json,html}
# The baseline is the older line (MATRIX_BASELINE, default 1.31-dev), the candidate the default line
# (MATRIX_CANDIDATE, default 1.32-dev); both name builds of tools/istio-builds.env or the default build. On kind
# each scenario runs on its topology's fleet (--reuse) for both builds, one build after the other; the matrix's
# fleets live apart (<cache>/matrix-fleets) and are removed at the end, whatever happened.
# Exit: the comparison's (0 no regression, 1 a regression, 3 something could not be judged); 2 bad usage.
# Needs: the images of `make images` and DOCKER_HOST of a running engine (kind), or `make tools` (kwok).
# Usage: tools/matrix.sh [SCENARIO...]   (default: every scenarios/*.yaml)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=lib/cache.sh
source "$here/lib/cache.sh"
provider=${MATRIX_PROVIDER:-kind}
baseline=${MATRIX_BASELINE:-1.31-dev}
candidate=${MATRIX_CANDIDATE:-1.32-dev}
out=${MATRIX_REPORTS:-$root/reports/matrix}
run_deadline=${MATRIX_RUN_DEADLINE:-1800}
case "$provider" in kind | kwok) ;; *) echo "meshconf matrix: MATRIX_PROVIDER is kind or kwok, not '$provider'" >&2; exit 2 ;; esac
[[ "$baseline" != "$candidate" ]] || { echo "meshconf matrix: the baseline and the candidate are both $baseline" >&2; exit 2; }
if [[ $# -gt 0 ]]; then scenarios=("$@"); else scenarios=("$root"/scenarios/*.yaml); fi
export MESHCONF_FLEETS_DIR="$meshconf_cache/matrix-fleets"
command -v jq >/dev/null || { echo "meshconf matrix: jq not found" >&2; exit 2; }
target=$(cd "$root" && timeout 120 cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
# The debug build `make test` already made (a release build costs minutes and the runs wait on clusters, not CPU).
(cd "$root" && timeout 3600 cargo build -q -p meshconf)
bin="$target/debug/meshconf"
down() { [[ "$provider" == kind ]] && { timeout --kill-after=10 600 "$bin" fleet down --all >&2 || echo "meshconf matrix: fleet down failed" >&2; }; return 0; }
trap down EXIT
rm -rf "$out" && mkdir -p "$out/$baseline" "$out/$candidate"
args=(--provider "$provider")
[[ "$provider" == kind ]] && args+=(--reuse)
[[ "$provider" == kwok ]] && args+=(--port-base "${MATRIX_PORT_BASE:-30000}")
if [[ "$provider" == kwok ]]; then
  MESHCONF_TOOLS_BIN="$(bash "$here/build.sh" | tail -n1)"
  export MESHCONF_TOOLS_BIN
fi
printf '%-40s %-10s %s\n' scenario build exit >"$out/runs.txt"
for s in "${scenarios[@]}"; do
  # An upgrade scenario names both builds itself (a canary from one to the other): it is the version axis, not a
  # side of the comparison, and runs with `meshconf run` (kind only).
  if grep -q '^ *- start-traffic:' "$s"; then
    echo "meshconf matrix: $(basename "$s") skipped: an upgrade between builds, not one build's run" >&2
    continue
  fi
  for b in "$baseline" "$candidate"; do
    echo "meshconf matrix: $(basename "$s") on Istio $b ($provider)" >&2
    rc=0
    timeout --kill-after=30 "$run_deadline" "$bin" run "$s" "${args[@]}" --istio "$b" --report-dir "$out/$b" \
      >"$out/$b/$(basename "$s" .yaml).log" 2>&1 || rc=$?
    # Bad input (a build that is not there) is the matrix's own: stop rather than compare nothing.
    [[ $rc -eq 2 ]] && { tail -n 5 "$out/$b/$(basename "$s" .yaml).log" >&2; exit 2; }
    printf '%-40s %-10s %s\n' "$(basename "$s" .yaml)" "$b" "$rc" | tee -a "$out/runs.txt" >&2
  done
done
rc=0
"$bin" compare "$out/$baseline" "$out/$candidate" --out "$out" || rc=$?
exit "$rc"
