#!/usr/bin/env bash
# Re-pins the control plane to another Kubernetes release: rewrites go.mod and go.sum from
# scratch. k8s.io/kubernetes requires its staging modules at v0.0.0 with `replace` lines into its
# own tree, which Go ignores in a dependency, so every staging module is replaced here by its
# published v0.X.Y tag; etcd is pinned to the release Kubernetes itself requires.
#
#   tests/control-plane/update-go-mod.sh v1.37.2
# Then set KUBE_VERSION (and ETCD_VERSION, printed below) in build.sh.
set -euo pipefail
cd "$(dirname "$0")"
kube=${1:?usage: update-go-mod.sh vMAJOR.MINOR.PATCH}
staging=v0.${kube#v1.}

rm -f go.mod go.sum
go mod init aviary.invalid/control-plane
go mod edit -go=1.26.0 -godebug=default=go1.26
kube_mod=$(go mod download -json "k8s.io/kubernetes@$kube" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
for m in $(sed -n 's/^[[:space:]]*\(k8s.io\/[^ ]*\) => \.\/staging.*/\1/p' "$kube_mod"); do
  go mod edit -replace="$m=$m@$staging"
done
go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$kube" "k8s.io/kubernetes/cmd/kube-controller-manager@$kube"
etcd=$(sed -n 's/^[[:space:]]*go.etcd.io\/etcd\/server\/v3 \(v[^ ]*\).*/\1/p' "$kube_mod")
go get "go.etcd.io/etcd/server/v3@$etcd"
go mod tidy
echo "pinned Kubernetes $kube (staging $staging) and etcd $etcd: set KUBE_VERSION=$kube ETCD_VERSION=$etcd in build.sh"
