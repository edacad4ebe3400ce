// Command etcd is etcd's own server (go.etcd.io/etcd/server/v3) built at the release that
// k8s.io/kubernetes pins, so one module holds the whole test control plane.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
