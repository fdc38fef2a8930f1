// Package cli is the owner's command line, `mse`.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
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
	return root
}

func cloudCommands() []*cobra.Command {
	return []*cobra.Command{
		loginCmd(), scaffoldCmd(), deployCmd(), verifyCmd(), statusCmd(), listCmd(), logsCmd(), stopCmd(),
		contextCmd(), hardwareCmd(), projectCmd(), userCmd(),
	}
}

// Main runs the CLI and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := Command()
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "Error:", err)
		return 1
	}
	return 0
}

func apiClient() (*client.Client, *Login, error) {
	l, err := loadLogin()
	if err != nil {
		return nil, nil, err
	}
	return client.New(l.URL, l.Token), l, nil
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
