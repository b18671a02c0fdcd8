#!/usr/bin/env bash
# Prints the path of a headless-capable Chromium for the HTML report check, installing Debian's `chromium`
# package when none is on the machine (needs root and the Debian mirror; nothing else is fetched).
set -euo pipefail
for b in "${MESHCONF_CHROMIUM:-}" chromium chromium-browser google-chrome; do
  if [[ -n "$b" ]] && command -v "$b" >/dev/null 2>&1; then command -v "$b"; exit 0; fi
done
if [[ $(id -u) -ne 0 ]]; then
  echo "meshconf browser: no Chromium found; install Debian's chromium package (or set MESHCONF_CHROMIUM)" >&2
  exit 3
fi
echo "meshconf browser: installing Debian's chromium package" >&2
# shellcheck source=apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
apt_install chromium >&2 || { echo "meshconf browser: apt-get install chromium failed" >&2; exit 3; }
command -v chromium
