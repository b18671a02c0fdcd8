#!/usr/bin/env bash
# Builds pinned binaries from the Go module proxy into a cache outside the clone:
#   <cache>/tools/<key>/bin   (<cache>: tools/lib/cache.sh; MESHCONF_TOOLS_CACHE still names the tools directory)
#   build.sh [rehearsal]  etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok, kwokctl,
#                         istioctl, pilot-discovery, MetalLB controller, helm and Istio's charts (the kwok
#                         rehearsal)
#   build.sh kind         those plus kind, crictl, kubelet, kubeadm, kube-proxy, CoreDNS,
#                         pilot-agent and the MetalLB speaker (what tools/images.sh puts into images)
# <key> hashes versions.env; each step's marker also hashes that step's own recipe (its function and the shared
# set-up), so a second run with the same pins is a no-op and editing one recipe rebuilds that step only.
# Prints the bin directory on the last line of stdout. Needs: go (>= 1.26), network access to the Go module proxy.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=istio-builds.env
source "$here/istio-builds.env"
# shellcheck source=lib/recipe.sh
source "$here/lib/recipe.sh"
# shellcheck source=lib/cache.sh
source "$here/lib/cache.sh"

cache_root=$meshconf_tools_cache
key=$(sha256sum <"$here/versions.env" | cut -c1-16)
dest="$cache_root/$key"
bin="$dest/bin"

profile=${1:-rehearsal}
# Longest first (cold, 2 cores: k8s ~450 s, each Istio build ~240 s, MetalLB 200, kwok 180, etcd 130, helm 100,
# CoreDNS 95, the rest under 30), so the two builds that run at a time (below) end close together.
case "$profile" in
  rehearsal) first="k8s istio" rest="metallb kwok etcd helm charts" ;;
  kind) first="k8s istio" rest="metallb kwok etcd helm coredns crictl kind charts" ;;
  *) echo "usage: $0 [rehearsal|kind]" >&2; exit 2 ;;
esac
# Each extra Istio build is a step of its own (istio@<name>); MESHCONF_ISTIO_BUILDS narrows them ("" for none).
extra_builds=${MESHCONF_ISTIO_BUILDS-$ISTIO_EXTRA_BUILDS}
steps=$first
for b in $extra_builds; do
  [[ " $ISTIO_EXTRA_BUILDS " == *" $b "* ]] || { echo "meshconf tools: no Istio build '$b' in tools/istio-builds.env (known: $ISTIO_EXTRA_BUILDS)" >&2; exit 2; }
  steps="$steps istio@$b"
done
steps="$steps $rest"

# Never let a newer go directive trigger a toolchain download. `-s -w` strips the DWARF the compiler would make for
# every package, so it is not made (-dwarf=false): binaries of the same size, 14 % less compile time (helm, cold cache).
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath -gcflags=all=-dwarf=false"
start=$(date +%s)
log() { echo "meshconf tools: [$(( $(date +%s) - start ))s] $*" >&2; }

# new_module DIR NAME: a fresh wrapper module so each tool family resolves its own dependency graph.
new_module() {
  rm -rf "$1" && mkdir -p "$1"
  (cd "$1" && go mod init "meshconf.local/tools/$2" >/dev/null 2>&1)
}

build_k8s() {
  local d="$dest/src/k8s" minor staging
  new_module "$d" k8s
  cd "$d"
  go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
  # k8s.io/kubernetes requires its staging modules at v0.0.0, which the proxy does not have. Generate one replace
  # per staging module from k8s.io/kubernetes' own go.mod (v1.N.P -> v0.N.P), never a hand-kept list.
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  staging="v0.${K8S_VERSION#v1.}"
  local staged
  staged=$(go mod edit -json "$gomod" | awk '
    /"Path": "k8s.io\// { p = $0; sub(/.*"Path": "/, "", p); sub(/".*/, "", p); next }
    /"Version": "v0.0.0"/ { if (p != "") print p }
    { p = "" }' | sort -u)
  [[ -n "$staged" ]] || { echo "meshconf tools: found no staging modules in $gomod" >&2; return 1; }
  for m in $staged; do go mod edit -replace="$m=$m@$staging"; done
  local pkgs="k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl"
  # kind nodes also need the kubelet, kubeadm and kube-proxy: one `go build` shares the compile work.
  [[ "$profile" == kind ]] && pkgs="$pkgs k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kube-proxy"
  for p in $pkgs; do go get -tool "$p@$K8S_VERSION" >/dev/null; done
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1"
  ld="$ld -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1"
  ld="$ld -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  # shellcheck disable=SC2086
  go build -ldflags "$ld" -o "$bin/" $pkgs
}

build_etcd() {
  local d="$dest/src/etcd"
  new_module "$d" etcd
  cd "$d"
  # server/go.mod has relative replaces, so `go install` refuses it; as a dependency its replaces are ignored.
  go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
  go build -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
}

build_kwok() {
  local d="$dest/src/kwok"
  new_module "$d" kwok
  cd "$d"
  go get -tool "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION" >/dev/null
  go build -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" -o "$bin/" \
    sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
}

# istio_recipe OUT MODULE LABEL API CLIENT_GO GCP_ENVOY GCP_CONTRIB: istioctl and pilot-discovery (and the kind
# profile's pilot-agent) of one Istio module into OUT, with the files images need from the same module. Every
# istio pseudo-version the proxy serves requires pseudo-versions of istio.io/api, istio.io/client-go and
# go-control-plane that the proxy or the checksum database refuses; the nearest served versions replace them.
istio_recipe() {
  local out=$1 module=$2 label=$3 api=$4 client_go=$5 gcp_envoy=$6 gcp_contrib=$7
  go mod edit -replace="istio.io/api=istio.io/api@$api" \
    -replace="istio.io/client-go=istio.io/client-go@$client_go" \
    -replace="github.com/envoyproxy/go-control-plane/envoy=github.com/envoyproxy/go-control-plane/envoy@$gcp_envoy" \
    -replace="github.com/envoyproxy/go-control-plane/contrib=github.com/envoyproxy/go-control-plane/contrib@$gcp_contrib"
  local pkgs="istio.io/istio/istioctl/cmd/istioctl istio.io/istio/pilot/cmd/pilot-discovery"
  # The proxyv2 image's pilot-agent (kind profile).
  [[ "$profile" == kind ]] && pkgs="$pkgs istio.io/istio/pilot/cmd/pilot-agent"
  local p
  for p in $pkgs; do go get -tool "$p@$module" >/dev/null; done
  local ld="-s -w -X istio.io/istio/pkg/version.buildVersion=$label"
  ld="$ld -X istio.io/istio/pkg/version.buildTag=$label -X istio.io/istio/pkg/version.buildStatus=Clean"
  mkdir -p "$out"
  # shellcheck disable=SC2086
  go build -tags "vtprotobuf,disable_pgv" -ldflags "$ld" -o "$out/" $pkgs
  # The files images need from the same module: Envoy's bootstrap template and the sample manifests.
  local moddir
  moddir=$(go list -m -f '{{.Dir}}' istio.io/istio)
  mkdir -p "$out/istio-files"
  cp "$moddir/tools/packaging/common/envoy_bootstrap.json" "$out/istio-files/envoy_bootstrap_tmpl.json"
  cp "$moddir/samples/helloworld/helloworld.yaml" "$out/istio-files/helloworld.yaml"
  cp "$moddir/samples/curl/curl.yaml" "$out/istio-files/curl.yaml"
  chmod -R u+w "$out/istio-files"
}

# copy_charts MODDIR OUT: the Helm tab's charts (base, istiod, gateway) of one Istio module.
copy_charts() {
  local moddir=$1 out=$2
  [[ -d "$moddir/manifests/charts/base" ]] || { echo "no manifests/charts in $moddir" >&2; return 1; }
  rm -rf "$out/istio-charts" && mkdir -p "$out/istio-charts"
  cp -r "$moddir/manifests/charts/base" "$moddir/manifests/charts/gateway" "$out/istio-charts/"
  cp -r "$moddir/manifests/charts/istio-control/istio-discovery" "$out/istio-charts/istiod"
  chmod -R u+w "$out/istio-charts"
}

build_istio() {
  local d="$dest/src/istio"
  new_module "$d" istio
  cd "$d"
  istio_recipe "$bin" "$ISTIO_MODULE_VERSION" "$ISTIO_BUILD_VERSION" "$ISTIO_API_VERSION" "$ISTIO_CLIENT_GO_VERSION" \
    "$ENVOY_GCP_VERSION" "$ENVOY_GCP_CONTRIB_VERSION"
}

# One more Istio build (tools/istio-builds.env) into $bin/istio/<name>/: its binaries, files, charts and a VERSION
# line (`<label> (<module>)`) the harness reads. The step is named istio@<name>.
build_istio_extra() {
  local name=$1 var
  var="ISTIO_$(echo "$name" | tr 'a-z.-' 'A-Z__')"
  local module="${var}_MODULE" label="${var}_LABEL" api="${var}_API" cgo="${var}_CLIENT_GO"
  local envoy="${var}_GCP_ENVOY" contrib="${var}_GCP_CONTRIB"
  local d="$dest/src/istio-$name" out="$bin/istio/$name"
  new_module "$d" "istio-$name"
  cd "$d"
  rm -rf "$out"
  istio_recipe "$out" "${!module}" "${!label}" "${!api}" "${!cgo}" "${!envoy}" "${!contrib}"
  copy_charts "$(go list -m -f '{{.Dir}}' istio.io/istio)" "$out"
  echo "${!label} (${!module})" >"$out/VERSION"
}

build_helm() {
  local d="$dest/src/helm"
  new_module "$d" helm
  cd "$d"
  go get -tool "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >/dev/null
  go build -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" -o "$bin/helm" \
    helm.sh/helm/v4/cmd/helm
}

# The Helm tab's charts, from the same Istio module as istioctl (its manifests/charts are in the module zip).
build_charts() {
  local d="$dest/src/charts"
  new_module "$d" charts
  cd "$d"
  go mod download "istio.io/istio@$ISTIO_MODULE_VERSION"
  copy_charts "$(go env GOMODCACHE)/istio.io/istio@$ISTIO_MODULE_VERSION" "$bin"
}

build_metallb() {
  local d="$dest/src/metallb"
  new_module "$d" metallb
  cd "$d"
  go get -tool "go.universe.tf/metallb/controller@$METALLB_VERSION" "go.universe.tf/metallb/speaker@$METALLB_VERSION" >/dev/null
  go build -ldflags "-s -w" -o "$bin/metallb-controller" go.universe.tf/metallb/controller
  [[ "$profile" == kind ]] && go build -ldflags "-s -w" -o "$bin/metallb-speaker" go.universe.tf/metallb/speaker
  # The native manifest (CRDs, namespace, webhook configuration) ships in the module source.
  local moddir
  moddir=$(go list -m -f '{{.Dir}}' go.universe.tf/metallb)
  cp "$moddir/config/manifests/metallb-native.yaml" "$bin/metallb-native.yaml"
  chmod u+w "$bin/metallb-native.yaml"
}

build_kind() {
  local d="$dest/src/kind"
  new_module "$d" kind
  cd "$d"
  go get -tool "sigs.k8s.io/kind@$KIND_VERSION" >/dev/null
  go build -ldflags "-s -w" -o "$bin/kind" sigs.k8s.io/kind
}

build_crictl() {
  local d="$dest/src/crictl"
  new_module "$d" crictl
  cd "$d"
  go get -tool "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" >/dev/null
  go build -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" -o "$bin/crictl" \
    sigs.k8s.io/cri-tools/cmd/crictl
}

build_coredns() {
  local d="$dest/src/coredns"
  new_module "$d" coredns
  cd "$d"
  go get -tool "github.com/coredns/coredns@$COREDNS_VERSION" >/dev/null
  mkdir -p "$bin/node"
  go build -ldflags "-s -w" -o "$bin/node/coredns" github.com/coredns/coredns
}

# build_step STEP: the recipe of STEP (istio@<name> is an extra Istio build).
build_step() { case "$1" in istio@*) build_istio_extra "${1#istio@}" ;; *) "build_$1" ;; esac; }
# recipe_text STEP: what a step's marker hashes: its functions, the shared set-up and, for an extra Istio build,
# its lines of istio-builds.env.
recipe_text() {
  case "$1" in
    istio@*)
      declare -f new_module istio_recipe copy_charts build_istio_extra
      grep "^ISTIO_$(echo "${1#istio@}" | tr 'a-z.-' 'A-Z__')_" "$here/istio-builds.env" ;;
    istio) declare -f new_module istio_recipe build_istio ;;
    charts) declare -f new_module copy_charts build_charts ;;
    *) declare -f new_module "build_$1" ;;
  esac
  echo "$GOFLAGS"
}
# marker STEP PROFILE: names the profile (the kind profile adds binaries to shared steps) and the recipe's hash.
prefix() { case "$1" in k8s|istio|istio@*|metallb) echo "$bin/.built-$1-$2-" ;; *) echo "$bin/.built-$1-any-" ;; esac; }
marker() { echo "$(prefix "$1" "$2")$(recipe_text "$1" | sha256sum | cut -c1-12)"; }
# built STEP: built for this profile, or for kind (a superset) when the rehearsal asks.
built() { [[ -f "$(marker "$1" "$profile")" ]] || [[ "$profile" == rehearsal && -f "$(marker "$1" kind)" ]]; }

todo=()
for step in $steps; do built "$step" || todo+=("$step"); done
if [[ ${#todo[@]} -eq 0 && -f "$bin/.complete-$profile" ]]; then
  echo "meshconf tools: up to date ($bin)" >&2
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "meshconf tools: 'go' not found on PATH; install Go >= 1.26" >&2; exit 2; }
# Another job sharing this cache may be building the same key: wait for it, then build only what it left.
lock_key "tools-$key" || exit 3
todo=()
for step in $steps; do built "$step" || todo+=("$step"); done
mkdir -p "$bin" "$dest/src"
[[ ${#todo[@]} -gt 0 ]] && rm -f "$bin/.complete-"*  # complete again only once each of its steps is
# Two steps at a time: while one resolves and downloads its modules (the network), the other compiles. One at a
# time left both CPUs idle 10-25 s at each step's start (measured cold), but the one cold run with two at a time was
# no faster (1766 s vs 1685 s, within this machine's spread): MESHCONF_GO_STEPS=1 runs them one at a time. The Go
# build and module caches are safe to share between concurrent builds, and each step writes only its own files.
parallel=${MESHCONF_GO_STEPS:-2}
[[ "$parallel" =~ ^[1-9][0-9]*$ ]] || { echo "meshconf tools: MESHCONF_GO_STEPS must be a positive integer, not '$parallel'" >&2; exit 2; }
step_started() { log "building $1 (go output: $dest/build-$1.log)"; }
step_built() {
  rm -f "$(prefix "$1" "$profile")"*
  touch "$(marker "$1" "$profile")"
  log "built $1"
}
# A plain command (errexit ends the script with its status 1): see tools/lib/recipe.sh.
run_recipes "$parallel" build_step "$dest" step_started step_built "${todo[@]}"

cat > "$bin/VERSIONS" <<V
k8s=$K8S_VERSION
etcd=$ETCD_VERSION
kwok=$KWOK_VERSION
istio=$ISTIO_BUILD_VERSION ($ISTIO_MODULE_VERSION)
metallb=$METALLB_VERSION
helm=$HELM_VERSION
V
# The kind lines stay when a rehearsal build follows a kind one.
[[ "$profile" == kind || -f "$bin/.complete-kind" ]] && cat >> "$bin/VERSIONS" <<V
kind=$KIND_VERSION
crictl=$CRICTL_VERSION
coredns=$COREDNS_VERSION
V
touch "$bin/.complete-$profile"
log "done: $bin"
echo "$bin"
