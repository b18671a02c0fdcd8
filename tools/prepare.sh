#!/usr/bin/env bash
# Warms every cache the tests need before the first test runs, overlapping work that waits on different things:
# the Go builds (the CPUs) run in the foreground while the Debian work (apt installs and the debootstrap trees:
# the network and the disks) and the readers' venv run beside them. On a fresh machine this takes the apt and
# debootstrap minutes off the critical path; on a warm one every part is a no-op.
#   prepare.sh rehearsal   Go tools of the kwok rehearsal, the report readers (venv + Chromium)
#   prepare.sh kind        those, every binary of the kind path, the Docker engine's packages, both rootfs trees
# Logs of the parts beside the Go builds: $cache/prepare/<part>.log. Exit codes: 0 ok, else the exit code of the
# first part that failed (its name and log tail are printed).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/cache.sh
source "$here/lib/cache.sh"
cache=$meshconf_cache
profile=${1:-rehearsal}
case "$profile" in rehearsal | kind) ;; *) echo "usage: $0 rehearsal|kind" >&2; exit 2 ;; esac
logs="$cache/prepare" && mkdir -p "$logs"
start=$(date +%s)
log() { echo "meshconf prepare: [$(( $(date +%s) - start ))s] $*" >&2; }

names=() pids=()
beside() { # NAME COMMAND...: run beside the Go builds, output to its log
  local name=$1; shift
  ( "$@" ) >"$logs/$name.log" 2>&1 &
  names+=("$name") pids+=($!)
}

kind_debian() {
  # docker.io, jq and debootstrap first (one apt run), then the trees and the browser side by side: debootstrap
  # installs into its own directory, and apt_install (tools/apt.sh) waits for apt's lock.
  bash "$here/engine.sh" install
  bash "$here/rootfs.sh" base >/dev/null & local b=$!
  bash "$here/rootfs.sh" node >/dev/null & local n=$!
  bash "$here/readers.sh" --prepare || { wait $b $n || true; return 3; }
  wait $b && wait $n
}

if [[ "$profile" == kind ]]; then
  beside debian kind_debian
else
  beside readers bash "$here/readers.sh" --prepare
fi
status=0
bash "$here/build.sh" "$profile" >/dev/null || status=$?
for i in "${!pids[@]}"; do
  rc=0; wait "${pids[$i]}" || rc=$?
  if [[ $rc -ne 0 ]]; then
    log "${names[$i]} failed (exit $rc); last lines of $logs/${names[$i]}.log:"
    tail -n 20 "$logs/${names[$i]}.log" >&2
    [[ $status -eq 0 ]] && status=$rc
  fi
done
[[ $status -eq 0 ]] && log "ready ($profile)"
exit "$status"
