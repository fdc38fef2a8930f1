package testenv

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/runtimes"
	"github.com/mse-in-go/mse/internal/runtimes/image"
	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

// TestRuntimes are the runtimes test backends offer, built from the presets
// of the same names: the first one is the default.
var TestRuntimes = []string{"flask", "fastapi"}

var (
	rtOnce    sync.Once
	rtEntries []runtimes.Entry
	rtErr     error
)

// RuntimeDir is the image store tests share (and `make demo`): built once
// per machine, then cached. MSE_RUNTIME_DIR overrides it.
func RuntimeDir() string { return cacheDir("MSE_RUNTIME_DIR", "runtimes") }

// cacheDir is $env, or the directory name under this machine's cache
// (~/.cache/mse/NAME), where the scripts that build the tests' tools put
// them by default.
func cacheDir(env, name string) string {
	if d := os.Getenv(env); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "mse", name)
	}
	return filepath.Join(os.TempDir(), "mse-"+name)
}

// NeedSandbox fails (under CI=true) or skips the test when this machine
// cannot build runtimes or sandbox nodes: mmdebstrap, runc and root.
func NeedSandbox(t testing.TB) {
	t.Helper()
	var missing string
	switch {
	case os.Geteuid() != 0:
		missing = "root (the local runner gives each node its own UID and cgroup)"
	case !onPath("runc"):
		missing = "runc (apt-get install runc)"
	case !onPath("mmdebstrap"):
		missing = "mmdebstrap (apt-get install mmdebstrap)"
	}
	if missing == "" {
		return
	}
	ciskip.Missing(t, "this test runs nodes in sandboxed runtimes and needs %s", missing)
}

func onPath(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

// Runtimes builds (once per test binary, cached across runs in RuntimeDir)
// the TestRuntimes and returns their catalog entries.
func Runtimes(t testing.TB) []runtimes.Entry {
	t.Helper()
	NeedSandbox(t)
	rtOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		st, err := image.Open(RuntimeDir(), image.DefaultLimits())
		if err != nil {
			rtErr = err
			return
		}
		for _, name := range TestRuntimes {
			e, err := buildPreset(ctx, st, name)
			if err != nil {
				rtErr = err
				return
			}
			rtEntries = append(rtEntries, e)
		}
	})
	if rtErr != nil {
		t.Fatalf("build the test runtimes in %s: %v", RuntimeDir(), rtErr)
	}
	return rtEntries
}

var (
	extraMu sync.Mutex
	extra   = map[string]runtimes.Entry{}
)

// Runtime builds (once per test binary, cached in RuntimeDir) the preset
// named name, beside the TestRuntimes, and returns its entry.
func Runtime(t testing.TB, name string) runtimes.Entry {
	t.Helper()
	for _, e := range Runtimes(t) {
		if e.Name == name {
			return e
		}
	}
	extraMu.Lock()
	defer extraMu.Unlock()
	if e, ok := extra[name]; ok {
		return e
	}
	st, err := image.Open(RuntimeDir(), image.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	e, err := buildPreset(ctx, st, name)
	if err != nil {
		t.Fatalf("build runtime %s in %s: %v", name, RuntimeDir(), err)
	}
	extra[name] = e
	return e
}

// WriteCatalog writes a catalog file offering entries.
func WriteCatalog(t testing.TB, path string, entries []runtimes.Entry) {
	t.Helper()
	cat, err := runtimes.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := cat.Put(e); err != nil {
			t.Fatal(err)
		}
	}
}

// PrivateRuntimes copies the TestRuntimes' images into a store of the
// test's own (which it may tamper with) and returns its directory.
func PrivateRuntimes(t testing.TB) string {
	t.Helper()
	entries := Runtimes(t)
	ctx := context.Background()
	shared, err := image.Open(RuntimeDir(), image.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "runtimes")
	st, err := image.Open(dir, image.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		f, err := os.CreateTemp(t.TempDir(), "image-*.tar")
		if err != nil {
			t.Fatal(err)
		}
		if err := shared.Export(ctx, e.Digest, f); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if d, err := st.Import(ctx, f.Name()); err != nil || d != e.Digest {
			t.Fatalf("copy runtime %s: %s %v", e.Name, d, err)
		}
		os.Remove(f.Name())
	}
	return dir
}

// buildPreset builds (or finds cached) the runtime preset named name, as
// `mse-backend runtime build NAME` does, and returns its catalog entry.
func buildPreset(ctx context.Context, st *image.Store, name string) (runtimes.Entry, error) {
	p, ok := runtimes.PresetNamed(name)
	if !ok {
		return runtimes.Entry{}, errors.New("no runtime preset " + name)
	}
	res, err := st.Build(ctx, image.BuildSpec{Suite: runtimes.Suite, Packages: runtimes.WithPython(p.Packages)}, nil)
	if err != nil {
		return runtimes.Entry{}, err
	}
	return runtimes.Entry{Name: name, Image: runtimes.DefaultImage(name), Digest: res.Digest, Kind: p.Kind, Packages: res.Packages, Size: res.Size}, nil
}
