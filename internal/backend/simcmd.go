package backend

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/mse-in-go/mse/internal/attest/sim"
)

// simPlatformCommand is `mse-backend sim-platform --dir DIR`: it creates the
// simulated platform (docs/sim.md) in DIR, or loads the one there, and
// prints its root fingerprint. Several backends share one platform by
// sharing its four files (deploy/: the Secret mse-sim).
func simPlatformCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "sim-platform --dir DIR",
		Short: "Create (or check) a simulated platform's files in DIR and print its root fingerprint",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := sim.LoadOrCreatePlatform(dir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: simulated platform, root sha256 %s\n", dir, p.RootFingerprint())
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the platform's directory (created if missing)")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}
