# Sourced by the scripts that install Debian packages (engine.sh, browser.sh, rootfs.sh): one way to call apt.
# apt_install [OPTION...] PACKAGE...: apt-get install with deadlines; waits for apt's lock (tools/prepare.sh runs
# installers side by side) and refreshes the package lists once when an install fails (a fresh machine may have
# none, or stale ones). Output goes to stdout; callers redirect it.
apt_install() {
  local lock=(-o DPkg::Lock::Timeout=600)
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "${lock[@]}" "$@" && return 0
  timeout 600 apt-get update -qq "${lock[@]}" && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "${lock[@]}" "$@"
}
