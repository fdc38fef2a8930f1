package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/config"
	"github.com/mse-in-go/mse/internal/runtimes"
)

func runtimesCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "runtimes",
		Short: "List the runtimes the operator offers (mse.toml's docker key)",
		Long: `runtimes lists the operator's runtime catalog: the OCI images, named by digest,
that apps run in. Put one in mse.toml as [cloud] docker = "IMAGE" (or its name),
optionally pinned: docker = "IMAGE@sha256:…". The node attests the digest of the
runtime it runs in, and deploy refuses any other.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := apiClient()
			if err != nil {
				return err
			}
			rs, err := c.Runtimes(cmd.Context())
			if err != nil {
				return err
			}
			u := newUI(cmd)
			if asJSON {
				if rs == nil {
					rs = []runtimes.Entry{}
				}
				return u.json(rs)
			}
			if len(rs) == 0 {
				fmt.Fprintln(u.out, "The operator offers no runtime yet.")
				return nil
			}
			tw := tabwriter.NewWriter(u.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tIMAGE\tKIND\tDIGEST\tPACKAGES")
			for _, r := range rs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", sanitize(r.Name), sanitize(r.Image), sanitize(r.Kind), sanitize(r.Digest), sanitize(packageSummary(r.Packages)))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: a list of {name, image, digest, kind, packages}")
	return cmd
}

// frameworks are the packages that tell runtimes apart, shown first.
var frameworks = []string{"python3-flask", "python3-fastapi", "python3-django", "python3-gunicorn", "python3-uvicorn",
	"python3-pandas", "python3-numpy", "python3-sklearn", "python3-requests"}

// packageSummary names the packages that tell runtimes apart (python3-*),
// frameworks and servers first.
func packageSummary(pkgs []string) string {
	var first, rest []string
	for _, p := range pkgs {
		name, _, _ := strings.Cut(p, "=")
		switch {
		case slices.Contains(frameworks, name):
			first = append(first, p)
		case strings.HasPrefix(name, "python3-") && !strings.HasPrefix(name, "python3-pkg") && !strings.HasPrefix(name, "python3-minimal"):
			rest = append(rest, p)
		}
	}
	out := append(first, rest...)
	if len(out) > 6 {
		out = append(out[:6], fmt.Sprintf("(+%d)", len(out)-6))
	}
	return strings.Join(out, " ")
}

// resolveRuntime matches mse.toml's docker key against the operator's
// catalog before anything is uploaded; the answer pins the digest that the
// node must then attest.
func resolveRuntime(ctx context.Context, c *client.Client, conf *config.AppConfig) (config.Runtime, error) {
	rs, err := c.Runtimes(ctx)
	if err != nil {
		return config.Runtime{}, fmt.Errorf("list the operator's runtimes: %w", err)
	}
	for _, r := range rs {
		if err := r.Validate(); err != nil {
			return config.Runtime{}, fmt.Errorf("the operator's runtime catalog is invalid: %w", err)
		}
	}
	if len(rs) == 0 {
		return config.Runtime{}, fmt.Errorf("the operator offers no runtime yet; ask the operator to add one (mse-backend runtime build flask)")
	}
	e := rs[0]
	if conf.Cloud.Runtime != "" {
		if e, err = runtimes.Match(rs, conf.Cloud.Runtime); err != nil {
			return config.Runtime{}, fmt.Errorf("mse.toml: cloud.docker: %w", err)
		}
	}
	return config.Runtime{Name: e.Name, Image: e.Image, Digest: e.Digest, Kind: e.Kind}, nil
}
