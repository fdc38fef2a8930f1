// Package cli is the owner's command line, `mse`.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/mse-in-go/mse/internal/client"
)

// Version is set at build time.
var Version = "dev"

// ui prints a command's progress to stderr and its results to stdout.
type ui struct {
	out, err io.Writer
	tty      bool
}

func newUI(cmd *cobra.Command) *ui {
	u := &ui{out: cmd.OutOrStdout(), err: cmd.ErrOrStderr()}
	if f, ok := u.err.(*os.File); ok {
		u.tty = isatty.IsTerminal(f.Fd())
	}
	return u
}

func (u *ui) step(format string, args ...any) { fmt.Fprintf(u.err, "✔ "+format+"\n", args...) }
func (u *ui) info(format string, args ...any) { fmt.Fprintf(u.err, "  "+format+"\n", args...) }
func (u *ui) warn(format string, args ...any) {
	fmt.Fprintf(u.err, "WARNING: "+format+"\n", args...)
}
func (u *ui) json(v any) error {
	enc := json.NewEncoder(u.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Command returns the `mse` root command. With MSE_DEFAULT_ENV=cloud the
// cloud commands are also at the top level (`mse deploy`).
func Command() *cobra.Command {
	root := &cobra.Command{
		Use:           "mse",
		Short:         "Deploy web apps into trusted execution environments, verified end to end",
		Version:       Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cloud := &cobra.Command{Use: "cloud", Short: "Deploy and manage apps on an MSE backend"}
	cloud.AddCommand(cloudCommands()...)
	root.AddCommand(cloud)
	root.AddCommand(attestCommand())
	if os.Getenv("MSE_DEFAULT_ENV") == "cloud" {
		root.AddCommand(cloudCommands()...)
	}
	root.InitDefaultCompletionCmd()
	strictGroups(root)
	return root
}

// args requires exactly the named positional arguments and names what is
// missing ("missing DOMAIN").
func args(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if len(a) < len(names) {
			return fmt.Errorf("missing %s (usage: %s)", strings.Join(names[len(a):], " "), cmd.UseLine())
		}
		if len(a) > len(names) {
			return fmt.Errorf("too many arguments: %s takes %s (usage: %s)", cmd.CommandPath(), strings.Join(names, " "), cmd.UseLine())
		}
		return nil
	}
}

// atLeastOne requires one or more arguments named name.
func atLeastOne(name string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if len(a) == 0 {
			return fmt.Errorf("missing %s (usage: %s)", name, cmd.UseLine())
		}
		return nil
	}
}

// strictGroups makes a command that only groups subcommands fail on an
// unknown subcommand (cobra would print help and exit 0, so a typo in a
// script would "succeed").
func strictGroups(c *cobra.Command) {
	for _, sub := range c.Commands() {
		strictGroups(sub)
	}
	if c.HasParent() && c.HasSubCommands() && c.Run == nil && c.RunE == nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
				if cmd.SuggestionsMinimumDistance <= 0 {
					cmd.SuggestionsMinimumDistance = 2
				}
				if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
					msg += "; did you mean " + strings.Join(s, ", ") + "?"
				}
				return fmt.Errorf("%s (see %s --help)", msg, cmd.CommandPath())
			}
			return nil
		}
		c.RunE = func(cmd *cobra.Command, args []string) error { return cmd.Help() }
	}
}

func cloudCommands() []*cobra.Command {
	return []*cobra.Command{
		loginCmd(), scaffoldCmd(), deployCmd(), testCmd(), localtestCmd(), verifyCmd(), statusCmd(), listCmd(), logsCmd(), stopCmd(),
		contextCmd(), hardwareCmd(), runtimesCmd(), projectCmd(), userCmd(),
	}
}

// Main runs the CLI and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := Command()
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	if err := cmd.ExecuteContext(ctx); err != nil {
		msg := err.Error()
		if strings.HasPrefix(msg, "unknown command") && len(args) > 0 && os.Getenv("MSE_DEFAULT_ENV") != "cloud" {
			for _, c := range cloudCommands() {
				if c.Name() == args[0] {
					msg += fmt.Sprintf("; did you mean `mse cloud %s`? (or set MSE_DEFAULT_ENV=cloud)", args[0])
				}
			}
		}
		// Errors carry text from the backend and the node: no escape
		// sequence reaches the terminal.
		fmt.Fprintln(stderr, "Error:", sanitizeText(msg, true))
		return 1
	}
	return 0
}

// isTerminal reports whether w is a terminal (a variable, for tests).
var isTerminal = func(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}

func apiClient() (*client.Client, *Login, error) {
	l, err := loadLogin()
	if err != nil {
		return nil, nil, err
	}
	c, err := newClient(l)
	return c, l, err
}

// newClient is the API client for a login, trusting its CA file if any.
func newClient(l *Login) (*client.Client, error) {
	c := client.New(l.URL, l.Token)
	if l.CACert != "" {
		pool, err := loadRoots(l.CACert)
		if err != nil {
			return nil, fmt.Errorf("the backend's CA file: %w", err)
		}
		c.HTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	}
	return c, nil
}

// loadRoots reads a PEM file of trusted roots.
func loadRoots(path string) (*x509.CertPool, error) {
	return appendRoots(x509.NewCertPool(), path)
}

// appendRoots adds the PEM certificates of path to pool.
func appendRoots(pool *x509.CertPool, path string) (*x509.CertPool, error) {
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}
