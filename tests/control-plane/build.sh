#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, kube-controller-manager, etcd) from the Go
# module proxy at the releases pinned in go.mod, into a cache outside the repository keyed on
# go.mod + go.sum + the build flags, exports the upstream CRDs the tests install (Knative
# Serving, Gateway API, Istio, KEDA; Contour and Traefik for the router tests) beside them, and
# prints the directory.
#
#   tests/control-plane/build.sh            # build when missing, print the bin dir
#   AVIARY_CONTROL_PLANE_CACHE=/tmp/x ...   # another cache root (e.g. to time a cold build)
#
# A second run finds everything and builds nothing. Binaries are never committed. Progress goes
# to stderr; stdout is only the directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
# shellcheck source=../go-cache.sh
. ../go-cache.sh

# The releases. go.mod pins the same Kubernetes and etcd (update-go-mod.sh writes it).
KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.7.0
# Upstream CRDs, read out of these Go modules (nothing is copied into the repository).
KNATIVE_SERVING=knative.dev/serving@v0.49.1
GATEWAY_API=sigs.k8s.io/gateway-api@v1.6.3
ISTIO_API=istio.io/api@v1.32.0
# KEDA v2.20.2: the newest release whose go.mod Go 1.26 accepts (v2.21 needs Go 1.27).
KEDA=github.com/kedacore/keda/v2@v2.20.2
# Traffic providers whose modules the Go proxy serves (the router tests install these).
CONTOUR=github.com/projectcontour/contour@v1.33.8
TRAEFIK=github.com/traefik/traefik/v3@v3.7.13
# Bump when the go build command or its flags below change.
BUILD_REVISION=1

key=$(go_cache_key "$BUILD_REVISION")
root="${AVIARY_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aviary/control-plane}"
bin="$root/$key"
programs=(kube-apiserver kube-controller-manager etcd)
crd_stamp="$KNATIVE_SERVING $GATEWAY_API $ISTIO_API $KEDA"
provider_stamp="$CONTOUR $TRAEFIK"
# What the script prints: a directory per set of CRDs, holding links to the programs, its crds/
# and provider-crds/, so checkouts that pin different CRDs share the programs without
# overwriting each other's CRDs.
view="$bin/view-$(echo "$crd_stamp $provider_stamp" | sha256sum | cut -c1-12)"

complete() {
  for p in "${programs[@]}"; do [ -x "$bin/$p" ] && [ -L "$view/$p" ] || return 1; done
  [ "$(cat "$view/crds/.versions" 2>/dev/null)" = "$crd_stamp" ] &&
    [ "$(cat "$view/provider-crds/.versions" 2>/dev/null)" = "$provider_stamp" ]
}

go_cache_begin "control plane" "$root" "$key" "$view" \
  "it builds kube-apiserver, kube-controller-manager and etcd from Go modules"

build_programs() {
  local major minor version_flags start
  major=${KUBE_VERSION#v}; major=${major%%.*}
  minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}
  # Module zips carry no git data: without these /version says v0.0.0-master and
  # semver-checking clients (Flagger) refuse the cluster.
  version_flags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    version_flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    version_flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  start=$(date +%s)
  echo "control plane: building kube-apiserver and kube-controller-manager $KUBE_VERSION and etcd $ETCD_VERSION into $bin (a cold build takes a while on 2 cores)" >&2
  CGO_ENABLED=0 go build -trimpath -p "${AVIARY_GO_BUILD_JOBS:-2}" \
    -ldflags "-s -w $version_flags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
  CGO_ENABLED=0 go build -trimpath -p "${AVIARY_GO_BUILD_JOBS:-2}" \
    -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" -o "$tmp/etcd" ./etcd
  "$tmp/kube-apiserver" --version >&2
  "$tmp/etcd" --version | head -1 >&2
  mkdir -p "$bin"
  mv "$tmp/kube-apiserver" "$tmp/kube-controller-manager" "$tmp/etcd" "$bin/"
  echo "control plane: built in $(( $(date +%s) - start )) s" >&2
}

module_dir() { # module@version -> its directory in the module cache (downloaded if needed)
  (cd "$tmp" && go mod download -json "$1") | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

export_crds() {
  local out="$tmp/crds" d
  mkdir -p "$out"
  d=$(module_dir "$KNATIVE_SERVING")
  for f in service configuration revision route; do
    cp "$d/config/core/300-resources/$f.yaml" "$out/knative-serving-$f.yaml"
  done
  d=$(module_dir "$GATEWAY_API")
  for f in gatewayclasses gateways httproutes referencegrants; do
    cp "$d/config/crd/standard/gateway.networking.k8s.io_$f.yaml" "$out/gateway-api-$f.yaml"
  done
  d=$(module_dir "$ISTIO_API")
  cp "$d/kubernetes/customresourcedefinitions.gen.yaml" "$out/istio.yaml"
  d=$(module_dir "$KEDA")
  cp "$d/config/crd/bases/keda.sh_scaledobjects.yaml" "$out/keda-scaledobjects.yaml"
  publish "$out" "$crd_stamp"
}

publish() { # scratch dir, stamp -> the view's directory of the same name, stamped
  local name
  name=$(basename "$1")
  chmod -R u+w "$1"
  echo "$2" >"$1/.versions"
  mkdir -p "$view"
  rm -rf "${view:?}/$name"
  mv "$1" "$view/$name"
}

export_provider_crds() {
  local out="$tmp/provider-crds" d
  mkdir -p "$out"
  d=$(module_dir "$CONTOUR")
  cp "$d/examples/contour/01-crds.yaml" "$out/contour.yaml"
  d=$(module_dir "$TRAEFIK")
  cp "$d/docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml" "$out/traefik.yaml"
  publish "$out" "$provider_stamp"
}

for p in "${programs[@]}"; do
  [ -x "$bin/$p" ] || { build_programs; break; }
done
[ "$(cat "$view/crds/.versions" 2>/dev/null)" = "$crd_stamp" ] || export_crds
[ "$(cat "$view/provider-crds/.versions" 2>/dev/null)" = "$provider_stamp" ] || export_provider_crds
for p in "${programs[@]}"; do ln -sfn "../$p" "$view/$p"; done
echo "$view"
