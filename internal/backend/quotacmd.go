package backend

import (
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/mse-in-go/mse/internal/backend/store"
)

// quotaCommand is `mse-backend user quota USER [--FLAG N …]`: it shows a
// user's quota and, with flags, changes those limits (0: unlimited).
func quotaCommand(dataDir, db *string) *cobra.Command {
	var q store.Quota
	cmd := &cobra.Command{
		Use:   "quota USER",
		Short: "Show a user's quota, or set limits with flags (0 = unlimited)",
		Long: "Show a user's quota, or set limits with flags (0 = unlimited). Only the flags given change.\n" +
			"A request over a limit is refused with HTTP 429 and the numbers.",
		Example: "  mse-backend user quota alice --active-apps 5 --memory-mib 16384 --cores 8 --bundle-bytes 10737418240 --log-follows 4",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd.Context(), *dataDir, *db, func(st store.Store) error {
				ctx := cmd.Context()
				u, err := st.GetUserByName(ctx, args[0])
				if errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("no user %q (see `mse-backend user list`)", args[0])
				} else if err != nil {
					return err
				}
				cur, err := st.GetQuota(ctx, u.ID)
				if err != nil {
					return err
				}
				f := cmd.Flags()
				changed := false
				set := func(name string, dst *int64, v int64) {
					if f.Changed(name) {
						*dst, changed = v, true
					}
				}
				var apps, cores, follows int64 = int64(cur.ActiveApps), int64(cur.Cores), int64(cur.LogFollows)
				set("active-apps", &apps, int64(q.ActiveApps))
				set("memory-mib", &cur.MemoryMiB, q.MemoryMiB)
				set("cores", &cores, int64(q.Cores))
				set("bundle-bytes", &cur.BundleBytes, q.BundleBytes)
				set("log-follows", &follows, int64(q.LogFollows))
				cur.ActiveApps, cur.Cores, cur.LogFollows = int(apps), int(cores), int(follows)
				if cur.ActiveApps < 0 || cur.MemoryMiB < 0 || cur.Cores < 0 || cur.BundleBytes < 0 || cur.LogFollows < 0 {
					return errors.New("quota limits must be 0 (unlimited) or more")
				}
				if changed {
					if err := st.SetQuota(ctx, cur); err != nil {
						return err
					}
				}
				lim := func(v int64) string {
					if v == 0 {
						return "unlimited"
					}
					return fmt.Sprint(v)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "user\t%s\n", u.Name)
				fmt.Fprintf(tw, "active-apps\t%s\n", lim(int64(cur.ActiveApps)))
				fmt.Fprintf(tw, "memory-mib\t%s\n", lim(cur.MemoryMiB))
				fmt.Fprintf(tw, "cores\t%s\n", lim(int64(cur.Cores)))
				fmt.Fprintf(tw, "bundle-bytes\t%s\n", lim(cur.BundleBytes))
				fmt.Fprintf(tw, "log-follows\t%s\n", lim(int64(cur.LogFollows)))
				if changed {
					fmt.Fprintln(tw, "(a running backend applies it to the next request)")
				}
				return tw.Flush()
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&q.ActiveApps, "active-apps", 0, "apps spawning, initializing or running at once")
	f.Int64Var(&q.MemoryMiB, "memory-mib", 0, "memory of the hardware of the active apps (MiB)")
	f.IntVar(&q.Cores, "cores", 0, "cores of the hardware of the active apps")
	f.Int64Var(&q.BundleBytes, "bundle-bytes", 0, "bytes of the stored bundles of the active apps")
	f.IntVar(&q.LogFollows, "log-follows", 0, "concurrent `mse cloud logs --follow` streams")
	return cmd
}
