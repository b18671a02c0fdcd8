# start_recipe NAME LOG [ARGS...]: starts the shell function NAME (with ARGS) in the background, errexit in force, its output in LOG;
# the caller then takes its status with `wait $!`. Call it as a plain command, never as a condition.
# Sourced by build.sh (and by the tests of this file).
# Why not `if ! ( NAME ) >LOG; then`: bash ignores errexit in anything run as part of an `if`/`!`/`&&`/`||`
# condition, even inside a subshell that sets -e again (and even inside a function called from a condition), so a
# recipe whose `go build` failed but whose last `cp` succeeded counted as built. A background subshell started by
# a plain command runs outside any condition: its first failing command ends it with that command's status.
start_recipe() {
  local name=$1 log=$2
  shift 2
  ( set -euo pipefail; "$name" "$@" ) >"$log" 2>&1 &
}

# _run_recipes_kill_tree PID: TERM to PID's descendants (children listed before their own children), then PID.
_run_recipes_kill_tree() {
  local c
  for c in $(pgrep -P "$1" || true); do _run_recipes_kill_tree "$c"; done
  kill -TERM "$1" 2>/dev/null || true
}

# run_recipes PARALLEL RECIPE LOGDIR STARTED BUILT STEP...: runs `RECIPE STEP` for each STEP in order, at most
# PARALLEL at a time, each through start_recipe with its output in LOGDIR/build-STEP.log; calls `STARTED STEP` as
# one starts and `BUILT STEP` after each that succeeded. After a failure it starts no further step, lets those under
# way end (they are marked built if they succeed), prints each failed step with its log's tail and returns 1.
# Call it as a plain command (see start_recipe): under `|| exit` its recipes would ignore errexit.
# Each step's wrapper writes its status to a file that is polled: bash 5.2's `wait -n` loses a job that ended while
# it waited for another ("no such job", seen in the tests), and `wait PID` alone cannot wait for any of several.
run_recipes() {
  local parallel=$1 recipe=$2 logdir=$3 started=$4 built=$5
  shift 5
  local -A running=()  # step -> pid of its wrapper
  local failed="" step ends
  ends=$(mktemp -d "$logdir/.ends.XXXXXX")
  local deadline=${MESHCONF_GO_STEP_DEADLINE:-2400}
  local -A since=()  # step -> when it started (seconds)
  _run_recipes_finish_one() {
    local s rc
    while :; do
      for s in "${!running[@]}"; do
        if [[ ! -f "$ends/$s" && $(( $(date +%s) - ${since[$s]} )) -ge $deadline ]]; then
          # Past its deadline: end the wrapper's own descendants (found from its pid, so only ours), then itself.
          echo "meshconf tools: $s did not finish within ${deadline}s (MESHCONF_GO_STEP_DEADLINE); stopping it" >&2
          _run_recipes_kill_tree "${running[$s]}"
          echo 124 >"$ends/$s"
        fi
        [[ -f "$ends/$s" ]] || continue
        rc=$(<"$ends/$s")
        wait "${running[$s]}" || true
        unset "running[$s]"
        if [[ "$rc" != 0 ]]; then
          echo "meshconf tools: building $s failed (exit $rc); last lines of $logdir/build-$s.log:" >&2
          tail -n 30 "$logdir/build-$s.log" >&2
          failed="$failed $s"
        else
          "$built" "$s"
        fi
        return 0
      done
      sleep 0.2
    done
  }
  for step in "$@"; do
    while [[ ${#running[@]} -ge $parallel ]]; do _run_recipes_finish_one; done
    [[ -z "$failed" ]] || break
    "$started" "$step"
    (
      start_recipe "$recipe" "$logdir/build-$step.log" "$step"
      rc=0 && wait $! || rc=$?
      echo "$rc" >"$ends/$step.tmp" && mv "$ends/$step.tmp" "$ends/$step"
    ) &
    running[$step]=$!
    since[$step]=$(date +%s)
  done
  while [[ ${#running[@]} -gt 0 ]]; do _run_recipes_finish_one; done
  rm -rf "$ends"
  [[ -z "$failed" ]] || { echo "meshconf tools: failed:$failed" >&2; return 1; }
}
