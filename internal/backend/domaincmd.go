package backend

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mse-in-go/mse/internal/backend/service"
	"github.com/mse-in-go/mse/internal/backend/store"
)

// DomainReservationJSON is a line of `mse-backend domain list --json`.
type DomainReservationJSON struct {
	Domain    string    `json:"domain"`
	User      string    `json:"user"`
	UserID    string    `json:"user_id"`
	Proof     string    `json:"proof"`
	CreatedAt time.Time `json:"created_at"`
}

// domainCommand is `mse-backend domain reserve|list|release`: the domains
// reserved per tenant (docs/api.md "Domains"), on the database directly.
func domainCommand(dataDir, db *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "domain",
		Short: "Manage domain reservations (works on the database directly)",
		Long: "A reserved domain is served only by its holder's apps. A tenant reserves a domain by deploying it\n" +
			"in tls_mode owner with a certificate that chains to a root this operator trusts; the operator can\n" +
			"reserve one for a tenant (proof \"admin\"), e.g. for tls_mode acme, or release one.",
	}
	var userName string
	reserve := &cobra.Command{
		Use:     "reserve DOMAIN --user NAME",
		Short:   "Reserve a domain for a user",
		Example: "  mse-backend domain reserve shop.example.com --user alice",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if userName == "" {
				return errors.New("--user NAME is required: the user who gets the domain (see `mse-backend user list`)")
			}
			return withStore(cmd.Context(), *dataDir, *db, func(st store.Store) error {
				r, u, err := service.ReserveDomain(cmd.Context(), st, args[0], userName, time.Now())
				if err != nil {
					return err
				}
				if r.Proof == store.ProofAdmin {
					fmt.Fprintf(cmd.OutOrStdout(), "reserved %s for user %s\n", r.Domain, u.Name)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "%s was already reserved for user %s (proof %s, since %s)\n", r.Domain, u.Name, r.Proof, r.CreatedAt.Format(time.RFC3339))
				}
				return nil
			})
		},
	}
	reserve.Flags().StringVar(&userName, "user", "", "the user who gets the domain")

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List reserved domains",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd.Context(), *dataDir, *db, func(st store.Store) error {
				rs, err := st.ListDomainReservations(cmd.Context())
				if err != nil {
					return err
				}
				names := map[string]string{}
				if us, err := st.ListUsers(cmd.Context()); err == nil {
					for _, u := range us {
						names[u.ID] = u.Name
					}
				}
				if asJSON {
					out := make([]DomainReservationJSON, 0, len(rs))
					for _, r := range rs {
						out = append(out, DomainReservationJSON{Domain: r.Domain, User: names[r.UserID], UserID: r.UserID, Proof: r.Proof, CreatedAt: r.CreatedAt})
					}
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					return enc.Encode(out)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "DOMAIN\tUSER\tPROOF\tRESERVED")
				for _, r := range rs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Domain, names[r.UserID], r.Proof, r.CreatedAt.Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	release := &cobra.Command{
		Use:   "release DOMAIN",
		Short: "Delete a domain's reservation (running apps keep serving it until they stop)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd.Context(), *dataDir, *db, func(st store.Store) error {
				if err := st.ReleaseDomain(cmd.Context(), args[0]); errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("domain %s is not reserved (see `mse-backend domain list`)", args[0])
				} else if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "released %s\n", args[0])
				return nil
			})
		},
	}
	cmd.AddCommand(reserve, list, release)
	return cmd
}
