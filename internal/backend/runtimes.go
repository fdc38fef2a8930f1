package backend

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/mse-in-go/mse/internal/runtimes"
	"github.com/mse-in-go/mse/internal/runtimes/image"
)

// runtimePaths are where a backend keeps its runtimes: the image store
// (layout and extracted root filesystems; shareable between backends, e.g.
// a cache) and the catalog file (what this backend offers).
type runtimePaths struct {
	dir, catalog string
}

func (c *Config) runtimePaths() runtimePaths {
	p := runtimePaths{dir: c.RuntimeDir, catalog: c.RuntimeCatalog}
	if p.dir == "" {
		p.dir = filepath.Join(c.DataDir, "runtimes")
	}
	if p.catalog == "" {
		p.catalog = filepath.Join(c.DataDir, "runtimes.json")
	}
	return p
}

// fileCatalog is the catalog file, read again when it changes on disk (so
// that `mse-backend runtime build` takes effect on a running backend).
type fileCatalog struct {
	path  string
	store *image.Store
	// requireImages offers only entries whose image is in store (the local
	// runner runs them from there; a cluster pulls them from a registry).
	requireImages bool
	log           *slog.Logger

	mu      sync.Mutex
	modTime int64
	size    int64
	entries []runtimes.Entry
}

func openCatalog(path string, st *image.Store, requireImages bool, log *slog.Logger) (*fileCatalog, error) {
	c := &fileCatalog{path: path, store: st, requireImages: requireImages, log: log}
	st0, statErr := os.Stat(path)
	if _, err := c.load(); err != nil {
		return nil, err
	}
	if statErr == nil { // read once: Entries reads it again only when it changes
		c.modTime, c.size = st0.ModTime().UnixNano(), st0.Size()
	}
	return c, nil
}

func (c *fileCatalog) load() ([]runtimes.Entry, error) {
	cat, err := runtimes.Load(c.path)
	if err != nil {
		return nil, err
	}
	var ok []runtimes.Entry
	for _, e := range cat.Entries() {
		if c.requireImages && !c.store.Has(e.Digest) {
			c.log.Warn("runtime in the catalog has no image in the store: not offered; build or add it again",
				"runtime", e.Name, "digest", e.Digest, "store", c.store.Dir())
			continue
		}
		ok = append(ok, e)
	}
	c.entries = ok
	return ok, nil
}

// Entries implements service.Catalog.
func (c *fileCatalog) Entries() []runtimes.Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, err := os.Stat(c.path); err == nil && (st.ModTime().UnixNano() != c.modTime || st.Size() != c.size) {
		if _, err := c.load(); err != nil {
			c.log.Error("runtime catalog unreadable: keeping the previous one", "file", c.path, "err", err)
		} else {
			c.modTime, c.size = st.ModTime().UnixNano(), st.Size()
		}
	}
	return c.entries
}

// runtimeCommand is `mse-backend runtime …`.
func runtimeCommand(dataDir *string) *cobra.Command {
	var dir, catalogPath string
	paths := func() runtimePaths {
		c := Config{DataDir: *dataDir, RuntimeDir: dir, RuntimeCatalog: catalogPath}
		return c.runtimePaths()
	}
	open := func() (*image.Store, *runtimes.Catalog, error) {
		p := paths()
		st, err := image.Open(p.dir, image.DefaultLimits())
		if err != nil {
			return nil, nil, err
		}
		if err := os.MkdirAll(filepath.Dir(p.catalog), 0o700); err != nil {
			return nil, nil, err
		}
		cat, err := runtimes.Load(p.catalog)
		if err != nil {
			return nil, nil, err
		}
		return st, cat, nil
	}
	cmd := &cobra.Command{Use: "runtime", Short: "Manage the runtime catalog: the OCI images nodes run in"}
	cmd.PersistentFlags().StringVar(&dir, "runtime-dir", os.Getenv("MSE_RUNTIME_DIR"), "image store (default DATA_DIR/runtimes)")
	cmd.PersistentFlags().StringVar(&catalogPath, "catalog", os.Getenv("MSE_RUNTIME_CATALOG"), "catalog file (default DATA_DIR/runtimes.json)")

	var b struct {
		packages []string
		kind     string
		image    string
		epoch    int64
		mirror   string
	}
	build := &cobra.Command{
		Use:   "build NAME",
		Short: "Build a runtime from Debian packages (mmdebstrap) and add it to the catalog",
		Long: `build makes a root filesystem from Debian ` + runtimes.Suite + ` packages with mmdebstrap, packs it as an
OCI image (reproducibly: the same packages give the same digest), stores it and
adds it to the catalog. NAME is a preset (` + presetNames() + `) or, with
--packages and --kind, a runtime of your own. Builds are cached by recipe.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			name := args[0]
			pkgs, kind := b.packages, b.kind
			if p, ok := runtimes.PresetNamed(name); ok {
				if len(pkgs) == 0 {
					pkgs = p.Packages
				}
				if kind == "" {
					kind = p.Kind
				}
			}
			if len(pkgs) == 0 || kind == "" {
				return fmt.Errorf("runtime %q is not a preset (%s): give --packages and --kind", name, presetNames())
			}
			st, cat, err := open()
			if err != nil {
				return err
			}
			img := b.image
			if img == "" {
				img = runtimes.DefaultImage(name)
			}
			// Check the entry before the build takes its time.
			probe := runtimes.Entry{Name: name, Image: img, Digest: "sha256:" + strings.Repeat("0", 64), Kind: kind}
			if err := probe.Validate(); err != nil {
				return err
			}
			fmt.Fprintf(c.ErrOrStderr(), "building runtime %s (%s) from %s: python3 %s\n", name, kind, runtimes.Suite, strings.Join(pkgs, " "))
			res, err := st.Build(c.Context(), image.BuildSpec{Suite: runtimes.Suite, Packages: runtimes.WithPython(pkgs),
				SourceDateEpoch: b.epoch, Mirror: b.mirror}, c.ErrOrStderr())
			if err != nil {
				return err
			}
			e := runtimes.Entry{Name: name, Image: img, Digest: res.Digest, Kind: kind, Packages: res.Packages, Size: res.Size}
			if err := cat.Put(e); err != nil {
				return err
			}
			cached := ""
			if res.Cached {
				cached = " (cached)"
			}
			fmt.Fprintf(c.OutOrStdout(), "runtime %s: %s@%s, %s, %d MiB%s\n", name, img, res.Digest, kind, res.Size>>20, cached)
			return nil
		},
	}
	build.Flags().StringSliceVar(&b.packages, "packages", nil, "Debian packages beside python3 (default: the preset's)")
	build.Flags().StringVar(&b.kind, "kind", "", "server kind: wsgi, asgi or any (default: the preset's)")
	build.Flags().StringVar(&b.image, "image", "", "image reference owners write in mse.toml (default mse/NAME:"+runtimes.Suite+")")
	build.Flags().Int64Var(&b.epoch, "source-date-epoch", 0, "SOURCE_DATE_EPOCH of the build (default: a fixed date)")
	build.Flags().StringVar(&b.mirror, "mirror", "", "Debian mirror (default: this machine's apt sources)")

	var a struct {
		from, image, kind string
		packages          []string
	}
	add := &cobra.Command{
		Use:   "add NAME --from PATH --image REF --kind KIND",
		Short: "Add a runtime from an OCI image layout directory or an image tarball",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if a.from == "" || a.image == "" || a.kind == "" {
				return fmt.Errorf("add needs --from, --image and --kind")
			}
			st, cat, err := open()
			if err != nil {
				return err
			}
			probe := runtimes.Entry{Name: args[0], Image: a.image, Digest: "sha256:" + strings.Repeat("0", 64), Kind: a.kind}
			if err := probe.Validate(); err != nil {
				return err
			}
			d, err := st.Import(c.Context(), a.from)
			if err != nil {
				return err
			}
			// Extract and check it now, so that a bad image fails here and not at a deploy.
			if _, err := st.Rootfs(c.Context(), d); err != nil {
				return err
			}
			e := runtimes.Entry{Name: args[0], Image: a.image, Digest: d, Kind: a.kind, Packages: a.packages}
			if err := cat.Put(e); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "runtime %s: %s@%s, %s\n", e.Name, e.Image, e.Digest, e.Kind)
			return nil
		},
	}
	add.Flags().StringVar(&a.from, "from", "", "OCI image layout directory, or an OCI/docker-save tarball")
	add.Flags().StringVar(&a.image, "image", "", "image reference owners write in mse.toml")
	add.Flags().StringVar(&a.kind, "kind", "", "server kind: wsgi, asgi or any")
	add.Flags().StringSliceVar(&a.packages, "packages", nil, "what the image holds, for the catalog listing")

	var asJSON bool
	list := &cobra.Command{
		Use: "list", Short: "List the catalog", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cat, err := runtimes.Load(paths().catalog)
			if err != nil {
				return err
			}
			return printRuntimes(c.OutOrStdout(), cat.Entries(), asJSON)
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var prune bool
	remove := &cobra.Command{
		Use: "remove NAME", Short: "Remove a runtime from the catalog (running apps keep theirs)", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			st, cat, err := open()
			if err != nil {
				return err
			}
			e, err := cat.Remove(args[0])
			if err != nil {
				return err
			}
			if prune {
				if err := st.Remove(e.Digest); err != nil {
					return err
				}
			}
			fmt.Fprintf(c.OutOrStdout(), "removed runtime %s (%s)\n", e.Name, e.Digest)
			return nil
		},
	}
	remove.Flags().BoolVar(&prune, "prune", false, "also delete the image from the store (only when no node runs in it)")
	cmd.AddCommand(build, add, list, remove)
	return cmd
}

func presetNames() string {
	var n []string
	for _, p := range runtimes.Presets {
		n = append(n, p.Name)
	}
	return strings.Join(n, ", ")
}

// printRuntimes prints a catalog as a table or JSON (a list of entries).
func printRuntimes(w io.Writer, entries []runtimes.Entry, asJSON bool) error {
	if asJSON {
		if entries == nil {
			entries = []runtimes.Entry{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(entries)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tIMAGE\tKIND\tDIGEST\tSIZE")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d MiB\n", e.Name, e.Image, e.Kind, e.Digest, e.Size>>20)
	}
	return tw.Flush()
}
