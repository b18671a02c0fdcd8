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
