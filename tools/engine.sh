#!/usr/bin/env bash
# A Docker engine for the kind path.
#   engine.sh up      use the engine that answers (DOCKER_HOST or the default socket) as it is; else start one owned
#                     by meshconf: data root and socket under the cache, the capability-fitting runtime (capwrap)
#                     as default. Installs Debian's docker.io first when dockerd is missing (needs root and apt).
#                     Prints the DOCKER_HOST to use on the last line of stdout.
#   engine.sh down    stop the engine meshconf started (never a user's) and remove the host state it added
#                     (iptables chains and rules, FORWARD policy, ip_forward, bridges).
#   engine.sh status  say which engine would be used.
#   engine.sh install what `up` would need, without starting anything: Debian's docker.io when no engine answers
#                     and dockerd is missing, and the capability wrapper (tools/prepare.sh runs it beside the Go
#                     builds, since it waits on the network and disks, not the CPUs).
# Exit codes: 0 ok, 3 the engine cannot start (the reason and the log's tail are printed).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/cache.sh
source "$here/lib/cache.sh"
cache=$meshconf_cache
dir=${MESHCONF_ENGINE_DIR:-$cache/engine}
sock="$dir/docker.sock"
ours="unix://$sock"
log() { echo "meshconf engine: $*" >&2; }
die() { log "$*"; exit 3; }

answers() { timeout 15 docker ${1:+-H "$1"} info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

ours_running() { [[ -S "$sock" ]] && answers "$ours"; }

# The engine a user already has: DOCKER_HOST if set, else the default socket, when it is not ours.
users_engine() {
  local h=${DOCKER_HOST:-}
  [[ "$h" == "$ours" ]] && return 1
  if [[ -n "$h" ]]; then answers "$h" && { echo "$h"; return 0; }; return 1; fi
  [[ -S /var/run/docker.sock ]] && answers "unix:///var/run/docker.sock" && { echo "unix:///var/run/docker.sock"; return 0; }
  return 1
}

build_capwrap() {
  local src="$here/capwrap" key
  key=$(cat "$src/main.go" "$src/go.mod" | sha256sum | cut -c1-16)
  if [[ -x "$dir/bin/capwrap" && "$(cat "$dir/bin/capwrap.key" 2>/dev/null)" == "$key" ]]; then return 0; fi
  command -v go >/dev/null || die "building the capability wrapper needs 'go' on PATH"
  mkdir -p "$dir/bin"
  (cd "$src" && GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir/bin/capwrap" .) \
    || die "building tools/capwrap failed"
  echo "$key" >"$dir/bin/capwrap.key"
}

install_engine() {
  command -v dockerd >/dev/null && command -v docker >/dev/null && return 0
  [[ $(id -u) -eq 0 ]] || die "no Docker engine answers and dockerd is not installed; installing it needs root (apt-get install docker.io)"
  command -v apt-get >/dev/null || die "no Docker engine answers and this is not a Debian-like machine: install Docker yourself"
  log "installing Debian's docker.io (apt-get; log: $dir/apt.log)"
  mkdir -p "$dir"
  # shellcheck source=apt.sh
  source "$here/apt.sh"
  apt_install --no-install-recommends docker.io iptables jq debootstrap >"$dir/apt.log" 2>&1 \
    || { tail -n 20 "$dir/apt.log" >&2; die "apt-get install docker.io failed (log: $dir/apt.log)"; }
}

save_host_state() {
  # What the engine is about to change, so `down` can put it back.
  iptables-save >"$dir/host.iptables" 2>/dev/null || true
  cat /proc/sys/net/ipv4/ip_forward >"$dir/host.ip_forward" 2>/dev/null || true
  ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort >"$dir/host.links"
  cat /proc/sys/fs/inotify/max_user_instances /proc/sys/fs/inotify/max_user_watches >"$dir/host.inotify" 2>/dev/null \
    || true
}

# kind's known-issues values: every kind node runs kubelet, kube-proxy and the control plane, each taking inotify
# instances; at Linux's default 128 a third cluster's kube-proxy fails with "too many open files". Raised only
# while meshconf's engine runs, restored by `down`.
raise_inotify() {
  local want_i=512 want_w=524288 i w
  i=$(cat /proc/sys/fs/inotify/max_user_instances 2>/dev/null) || return 0
  w=$(cat /proc/sys/fs/inotify/max_user_watches 2>/dev/null) || return 0
  if (( i < want_i )); then echo "$want_i" >/proc/sys/fs/inotify/max_user_instances && log "fs.inotify.max_user_instances $i -> $want_i (restored by down)"; fi
  if (( w < want_w )); then echo "$want_w" >/proc/sys/fs/inotify/max_user_watches && log "fs.inotify.max_user_watches $w -> $want_w (restored by down)"; fi
  return 0
}

restore_host_state() {
  [[ -f "$dir/host.iptables" ]] || return 0
  local t i w
  for t in $(iptables-save 2>/dev/null | sed -n 's/^\*//p'); do
    if grep -q "^\*$t\$" "$dir/host.iptables"; then
      awk -v t="$t" '/^\*/{on=($0=="*"t)} on' "$dir/host.iptables" | iptables-restore -T "$t" 2>/dev/null \
        || iptables-restore <"$dir/host.iptables"
    else
      iptables -t "$t" -F; iptables -t "$t" -X
      for c in $(iptables -t "$t" -S | sed -n 's/^-P \([A-Z]*\) .*/\1/p'); do iptables -t "$t" -P "$c" ACCEPT; done
    fi
  done
  [[ -f "$dir/host.ip_forward" ]] && cat "$dir/host.ip_forward" >/proc/sys/net/ipv4/ip_forward
  local l
  for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do
    if [[ "$l" == docker0 || "$l" == br-* || "$l" == veth* ]] && ! grep -qx "$l" "$dir/host.links"; then
      ip link delete "$l" 2>/dev/null || true
    fi
  done
  if [[ -f "$dir/host.inotify" ]]; then
    { read -r i; read -r w; } <"$dir/host.inotify" || true
    [[ -n "${i:-}" ]] && echo "$i" >/proc/sys/fs/inotify/max_user_instances
    [[ -n "${w:-}" ]] && echo "$w" >/proc/sys/fs/inotify/max_user_watches
  fi
  rm -f "$dir/host.iptables" "$dir/host.ip_forward" "$dir/host.links" "$dir/host.inotify"
}

up() {
  local h
  if h=$(users_engine); then log "using the Docker engine that answers at $h (meshconf starts none)"; echo "$h"; return; fi
  if ours_running; then log "meshconf's engine is running ($ours)"; echo "$ours"; return; fi
  install_engine
  build_capwrap
  mkdir -p "$dir/data" "$dir/exec"
  # An engine of ours that runs but does not answer, or a saved host state with none running (the last engine was
  # killed before `down`: SIGKILL, a machine stopped, its rules, bridges and FORWARD policy still there): `down`
  # first, or the new snapshot would take that engine's state for the host's own and keep it forever.
  if [[ -f "$dir/host.iptables" ]] || { [[ -f "$dir/dockerd.pid" ]] && kill -0 "$(cat "$dir/dockerd.pid")" 2>/dev/null; }; then
    log "an earlier engine of meshconf's did not come down; stopping what is left of it and restoring the host state saved before it"
    down >&2
  fi
  save_host_state
  raise_inotify
  log "starting dockerd (data root $dir/data, socket $sock, default runtime capwrap; log: $dir/dockerd.log)"
  setsid dockerd --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" -H "$ours" \
    --add-runtime "capwrap=$dir/bin/capwrap" --default-runtime capwrap --log-level warn \
    >"$dir/dockerd.log" 2>&1 </dev/null &
  local i
  for i in $(seq 1 60); do
    answers "$ours" && { log "engine up after ${i}s"; echo "$ours"; return; }
    kill -0 $! 2>/dev/null || break
    sleep 1
  done
  tail -n 20 "$dir/dockerd.log" >&2
  down >/dev/null 2>&1 || true
  die "dockerd did not answer on $sock within 60 s (log: $dir/dockerd.log)"
}

down() {
  local pid
  # Only a dockerd started with this data root is ours (a PID file may outlive its process and the PID be reused).
  if [[ -f "$dir/dockerd.pid" ]] && pid=$(cat "$dir/dockerd.pid") && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/data"; then
    log "stopping meshconf's dockerd (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$dir/dockerd.pid"
  # The managed containerd and shims dockerd started under its exec root.
  pkill -f -- "$dir/exec" 2>/dev/null || true
  # dockerd makes its data root a mount point (bound onto itself) and leaves it behind when it exits.
  local n=0
  while mountpoint -q "$dir/data" && (( n++ < 5 )); do
    timeout 30 umount "$dir/data" && log "unmounted $dir/data (dockerd's own bind mount)" || sleep 1
  done
  restore_host_state
  log "down; host state restored"
}

status() {
  local h
  if h=$(users_engine); then echo "user's engine at $h"
  elif ours_running; then echo "meshconf's engine at $ours"
  else echo "no engine"; fi
}

install() {
  if users_engine >/dev/null || ours_running; then return 0; fi
  install_engine
  build_capwrap
}

case "${1:-}" in
  up) up ;;
  install) install ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status|install" >&2; exit 2 ;;
esac
