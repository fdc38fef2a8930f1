// Command mse-backend is the operator's control plane.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/mse-in-go/mse/internal/backend"
)

func main() {
	if err := backend.Command().ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "mse-backend:", err)
		os.Exit(1)
	}
}
