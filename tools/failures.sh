#!/usr/bin/env bash
# Prints the failures sections libtest-mimic wrote into the suites' logs, so the last lines of `make test` (all a
# CI page may show) name each failing trial and its reason. Reads only the logs it is given; never fails.
set -uo pipefail
for log in "$@"; do
  [ -f "$log" ] || continue
  out=$(awk '/^failures:$/ {on=1} on {print} /^test result:/ {on=0}' "$log" | head -n 80)
  [ -n "$out" ] || continue
  echo "== failures in $log:"
  printf '%s\n' "$out"
done
exit 0
