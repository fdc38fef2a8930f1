// Command kube-proxy is the upstream kube-proxy built from the published
// k8s.io/kubernetes module, for tests on this machine (see scripts/k8s-tools.sh):
// it routes Services to pods on the test kubelet.
package main

import (
	"os"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	os.Exit(cli.Run(app.NewProxyCommand()))
}
