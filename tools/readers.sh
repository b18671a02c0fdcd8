#!/usr/bin/env bash
# Checks the reports under REPORT_DIR (default: reports) with third-party readers: junitparser reads every
# JUnit file and its counts and times are compared with the run's JSON record, which must validate against
# harness/schemas/meshconf-events-v1.schema.json; every HTML report is rendered in headless Chromium (Debian's
# package, installed by tools/browser.sh if missing) and checked through its DOM. The readers live in a venv
# under the cache (made once). `readers.sh --prepare` only sets them up.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/cache.sh
source "$here/lib/cache.sh"
cache=$meshconf_cache
key=$(sha256sum "$here/readers/requirements.txt" | cut -c1-12)
venv="$cache/pyenv/readers-$key"
if [[ ! -x "$venv/bin/python" ]]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  timeout 600 "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/readers/requirements.txt" \
    || { echo "meshconf readers: pip install failed" >&2; rm -rf "$venv"; exit 3; }
fi
# --prepare: only make the venv and find (or install) the browser; tools/prepare.sh runs it beside the Go builds.
if [[ "${1:-}" == --prepare ]]; then bash "$here/browser.sh" >/dev/null || exit 3; exit 0; fi
status=0
"$venv/bin/python" "$here/readers/check_reports.py" "$here/../harness/schemas/meshconf-events-v1.schema.json" \
  "${1:-reports}" || status=$?
# Every HTML report, rendered in headless Chromium, must show what its JSON record says.
browser=$(bash "$here/browser.sh") || exit 3
"$venv/bin/python" "$here/readers/check_html.py" "$browser" "${1:-reports}" || status=$?
exit $status
