// Command coredns is CoreDNS with the plugins the test cluster's DNS uses
// (kubernetes, cache, errors, log, health, ready): the tests run it as the
// cluster's kube-dns on the test kubelet (testenv.ClusterDNS), so that pods
// resolve Service names as in a real cluster. Test-only: it is never linked
// into the product. The directives keep their order in CoreDNS's
// plugin.cfg.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"errors", "log", "health", "ready", "cache", "kubernetes"}
}

func main() { coremain.Run() }
