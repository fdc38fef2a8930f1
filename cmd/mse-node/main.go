// Command mse-node is the runtime inside the enclave: it attests, waits for
// the owner's secrets over RA-TLS, then decrypts and serves the app.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/mse-in-go/mse/internal/node"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := node.Main(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}
