// Command etcd is the upstream etcd server (etcdmain), for tests on this
// machine (see scripts/k8s-tools.sh).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
