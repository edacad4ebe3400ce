#!/usr/bin/env bash
# Builds Flagger itself (github.com/fluxcd/flagger/cmd/flagger, a `tool` of this Go module, at the
# release go.mod pins) from the Go module proxy into a cache outside the repository keyed on
# go.mod + go.sum + the build flags, copies Flagger's own CRD, RBAC and ServiceAccount out of its
# module (kustomize/base/flagger/) beside the binary, and prints the directory. The differential
# harness and the Kubernetes scale benchmark run it next to aviary (crates/differential).
#
#   tests/flagger/build.sh              # build when missing, print the directory
#   AVIARY_FLAGGER_CACHE=/tmp/x ...     # another cache root (e.g. to time a cold build)
#
# A second run finds everything and builds nothing. Nothing of Flagger is ever committed.
# Progress goes to stderr; stdout is only the directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
# shellcheck source=../go-cache.sh
. ../go-cache.sh

FLAGGER=github.com/fluxcd/flagger
# Bump when the go build command or its flags below change.
BUILD_REVISION=1

key=$(go_cache_key "$BUILD_REVISION")
root="${AVIARY_FLAGGER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aviary/flagger}"
out="$root/$key"
manifests=(crd.yaml rbac.yaml account.yaml)

complete() {
  [ -x "$out/flagger" ] || return 1
  for m in "${manifests[@]}"; do [ -f "$out/kustomize/$m" ] || return 1; done
}

go_cache_begin flagger "$root" "$key" "$out" "it builds Flagger from its Go module"
mkdir -p "$tmp/kustomize"

version=$(sed -n "s|^[[:space:]]*$FLAGGER v\([^ ]*\).*|\1|p" go.mod | head -1)
start=$(date +%s)
echo "flagger: building $FLAGGER/cmd/flagger v$version into $out (a cold build takes a few minutes on 2 cores)" >&2
# Upstream builds it the same way (Makefile: CGO_ENABLED=0 go build ./cmd/flagger).
CGO_ENABLED=0 go build -trimpath -p "${AVIARY_GO_BUILD_JOBS:-2}" -ldflags "-s -w" \
  -o "$tmp/flagger" "$FLAGGER/cmd/flagger"
"$tmp/flagger" -version >&2
dir=$(go list -m -f '{{.Dir}}' "$FLAGGER")
for m in "${manifests[@]}"; do
  cp "$dir/kustomize/base/flagger/$m" "$tmp/kustomize/$m"
done
chmod -R u+w "$tmp"
mkdir -p "$out"
rm -rf "$out/kustomize"
mv "$tmp/flagger" "$tmp/kustomize" "$out/"
echo "flagger: built in $(( $(date +%s) - start )) s" >&2
echo "$out"
