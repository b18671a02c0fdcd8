#!/usr/bin/env bash
# Debian rootfs trees for the kind path's images, built with debootstrap from the mirror in the machine's apt
# sources (a dated snapshot on these machines, so builds repeat). Cached by a hash of the package list:
#   rootfs.sh base|node  -> prints the directory holding the tree
#   base: what binary-plus-userland images need (iptables for kube-proxy and Istio's init, curl for the client)
#   node: kind's node userland: systemd, containerd, runc, CNI plugins, conntrack, iptables, ...
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/cache.sh
source "$here/lib/cache.sh"
cache=$meshconf_cache
suite=bookworm
common="ca-certificates,iproute2,iptables,procps"
case "${1:-}" in
  base) pkgs="$common,curl,netbase" ;;
  node) pkgs="$common,systemd,systemd-sysv,dbus,containerd,runc,containernetworking-plugins,conntrack,nftables,ethtool,util-linux,mount,kmod,socat,ebtables,ipset,libseccomp2,curl,netbase" ;;
  *) echo "usage: $0 base|node" >&2; exit 2 ;;
esac
mirror=${MESHCONF_DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian}
key=$(printf '%s\n' "$1" "$suite" "$pkgs" "$mirror" | cat - "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
dest="$cache/rootfs/$1-$key"
if [[ -f "$dest.complete" ]]; then echo "$dest"; exit 0; fi
# Another job sharing this cache may be building the same tree: wait for it, then take what it built.
lock_key "rootfs-$1-$key"
if [[ -f "$dest.complete" ]]; then echo "$dest"; exit 0; fi
command -v debootstrap >/dev/null || {
  [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null || { echo "meshconf rootfs: debootstrap is missing (apt-get install debootstrap)" >&2; exit 3; }
  # shellcheck source=apt.sh
  source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
  apt_install --no-install-recommends debootstrap >&2 || exit 3
}
rm -rf "$dest" && mkdir -p "$(dirname "$dest")"
echo "meshconf rootfs: debootstrap $1 from $mirror (log: $dest.log)" >&2
if ! timeout 1200 debootstrap --variant=minbase --include="$pkgs" "$suite" "$dest" "$mirror" >"$dest.log" 2>&1; then
  tail -n 20 "$dest.log" >&2
  echo "meshconf rootfs: debootstrap $1 failed (log: $dest.log)" >&2
  exit 3
fi
# Prune what images never need: apt lists and caches, docs, man pages, locales.
rm -rf "$dest"/var/cache/apt/archives/*.deb "$dest"/var/lib/apt/lists/* "$dest"/usr/share/doc/* \
  "$dest"/usr/share/man/* "$dest"/usr/share/locale/* "$dest"/var/log/*.log
touch "$dest.complete"
echo "$dest"
