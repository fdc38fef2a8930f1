// Command kubelet is the upstream kubelet built from the published
// k8s.io/kubernetes module, for the end-to-end test on a real kubelet on this
// machine (see scripts/k8s-tools.sh and internal/testenv/kubelet.go).
package main

import (
	"context"
	"os"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	os.Exit(cli.Run(app.NewKubeletCommand(context.Background())))
}
