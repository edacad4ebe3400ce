#!/usr/bin/env bash
# Builds helm (helm.sh/helm/v4, the release pinned in go.mod as a `tool`) from the Go module
# proxy into a cache outside the repository keyed on go.mod + go.sum + the build flags, and
# prints the path of the binary. The chart tests (crates/cli/tests/helm_chart.rs) run it.
#
#   tests/helm/build.sh                 # build when missing, print the binary's path
#   AVIARY_HELM_CACHE=/tmp/x ...        # another cache root (e.g. to time a cold build)
#
# A second run finds the binary and builds nothing. Progress goes to stderr; stdout is only the
# path. This is a module of its own: helm pins its own k8s.io modules, which must not move the
# control plane's (tests/control-plane).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
# shellcheck source=../go-cache.sh
. ../go-cache.sh

# The release; go.mod requires the same (`go get -tool helm.sh/helm/v4/cmd/helm@$HELM_VERSION`).
HELM_VERSION=v4.3.2
# Bump when the go build command or its flags below change.
BUILD_REVISION=1

grep -q "^[[:space:]]*helm.sh/helm/v4 $HELM_VERSION\b" go.mod || {
  echo "helm: go.mod does not require helm.sh/helm/v4 $HELM_VERSION; run: go get -tool helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >&2
  exit 1
}
key=$(go_cache_key "$HELM_VERSION $BUILD_REVISION")
root="${AVIARY_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aviary/helm}"
bin="$root/$key/helm"

complete() { [ -x "$bin" ]; }
go_cache_begin helm "$root" "$key" "$bin" "the chart tests build helm $HELM_VERSION from Go modules"
start=$(date +%s)
echo "helm: building $HELM_VERSION into $root/$key" >&2
# Module zips carry no git data: the version comes in through -ldflags, as helm's Makefile does.
CGO_ENABLED=0 go build -trimpath -p "${AVIARY_GO_BUILD_JOBS:-2}" \
  -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
  -o "$tmp/helm" helm.sh/helm/v4/cmd/helm
"$tmp/helm" version --short >&2
mkdir -p "$root/$key"
mv "$tmp/helm" "$bin"
echo "helm: built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
