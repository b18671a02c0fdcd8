# meshconf's cache outside any clone, computed in this one place for every script (the Rust side,
# harness/src/tools/mod.rs `cache_dir`, follows the same rule and a test holds the two together):
#   $MESHCONF_CACHE, else $XDG_CACHE_HOME/meshconf, else ~/.cache/meshconf
# MESHCONF_TOOLS_CACHE is kept as an alias for the Go tools' directory alone ($meshconf_cache/tools otherwise).
# Sourced; defines meshconf_cache, meshconf_tools_cache and with_key_lock.
meshconf_cache=${MESHCONF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshconf}
meshconf_tools_cache=${MESHCONF_TOOLS_CACHE:-$meshconf_cache/tools}

# lock_key NAME: holds an exclusive lock for cache key NAME on file descriptor 9 until the script exits, so two
# jobs sharing one cache never build the same key at once (the second waits, then finds it built). Waits at most
# MESHCONF_LOCK_WAIT seconds (default 3600), then fails naming the lock file.
lock_key() {
  local dir="$meshconf_cache/locks" wait=${MESHCONF_LOCK_WAIT:-3600}
  mkdir -p "$dir"
  exec 9>"$dir/$1.lock"
  if ! flock -n 9; then
    echo "meshconf: waiting up to ${wait}s for another job building $1 (lock $dir/$1.lock)" >&2
    flock -w "$wait" 9 || { echo "meshconf: $dir/$1.lock still held after ${wait}s" >&2; return 1; }
  fi
}
