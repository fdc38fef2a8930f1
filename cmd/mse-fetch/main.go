// Command mse-fetch is the init container of a node's pod on Kubernetes:
// it fetches the app's encrypted bundle from the backend with the pod's
// credential and copies mse-node into the pod (docs/kubernetes.md).
package main

import (
	"os"

	"github.com/mse-in-go/mse/internal/nodepod"
)

func main() { os.Exit(nodepod.Main(os.Args[1:], os.Stderr)) }
