package image

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

func TestBuildSpecRefusals(t *testing.T) {
	s := openStore(t)
	for _, tc := range []struct {
		spec BuildSpec
		want string
	}{
		{BuildSpec{Suite: "Bookworm"}, "not a Debian suite name"},
		{BuildSpec{Suite: "bookworm", Packages: []string{"--hook=evil"}}, "not a Debian package name"},
		{BuildSpec{Suite: "bookworm", Packages: []string{"a,b"}}, "not a Debian package name"},
		{BuildSpec{Suite: "bookworm", SourceDateEpoch: -1}, "SOURCE_DATE_EPOCH -1"},
		{BuildSpec{Suite: "bookworm", Mirror: "--aptopt=x"}, "must be an http(s)://"},
		{BuildSpec{Suite: "bookworm", Mirror: "http://x/\ndeb http://evil"}, "must be an http(s)://"},
	} {
		_, err := s.Build(context.Background(), tc.spec, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v; want %q", tc.spec, err, tc.want)
		}
	}
}

func TestParseStatus(t *testing.T) {
	got := parseStatus([]byte("Package: a\nStatus: install ok installed\nVersion: 1.0-1\nDescription: x\n continued: y\n\n" +
		"Package: b\nStatus: deinstall ok config-files\nVersion: 2\n\nPackage: c\nVersion: 3:1.2\nStatus: install ok installed\n"))
	if want := []string{"a=1.0-1", "c=3:1.2"}; !slices.Equal(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
}

// TestBuildReproducible runs mmdebstrap twice into two fresh stores with the
// same SOURCE_DATE_EPOCH: the digests must be equal; a third Build is cached.
func TestBuildReproducible(t *testing.T) {
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		ciskip.Missing(t, "mmdebstrap is not installed (apt-get install mmdebstrap): the test builds a real runtime image")
	}
	if testing.Short() && !ciskip.CI() {
		t.Skip("-short: skipping two real mmdebstrap runs (about a minute)")
	}
	ctx := context.Background()
	spec := BuildSpec{Suite: "bookworm", Packages: []string{"python3-minimal"}, SourceDateEpoch: 1704067200}
	var results []BuildResult
	var stores []*Store
	for i := range 2 {
		s := openStore(t)
		logf, _ := os.Create(filepath.Join(t.TempDir(), "build.log"))
		t0 := time.Now()
		r, err := s.Build(ctx, spec, logf)
		logf.Close()
		if err != nil {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("build %d: %v\n%s", i, err, b)
		}
		t.Logf("build %d: %s, %d bytes, %d packages, %v", i, r.Digest, r.Size, len(r.Packages), time.Since(t0))
		if r.Cached || !s.Has(r.Digest) {
			t.Fatalf("build %d: %+v", i, r)
		}
		results = append(results, r)
		stores = append(stores, s)
	}
	if results[0].Digest != results[1].Digest {
		t.Fatalf("same spec, different digests: %s and %s", results[0].Digest, results[1].Digest)
	}
	if !slices.Equal(results[0].Packages, results[1].Packages) || results[0].Size != results[1].Size {
		t.Fatal("same spec, different package lists or sizes")
	}
	if !slices.ContainsFunc(results[0].Packages, func(p string) bool { return strings.HasPrefix(p, "python3-minimal=3.11") }) {
		t.Fatalf("python3-minimal is not in %v", results[0].Packages)
	}
	t0 := time.Now()
	r, err := stores[0].Build(ctx, spec, nil)
	if err != nil || !r.Cached || r.Digest != results[0].Digest || time.Since(t0) > 2*time.Second {
		t.Fatalf("third build: %+v %v (%v); want cached", r, err, time.Since(t0))
	}
	// The built image extracts and verifies like any other.
	t0 = time.Now()
	root, err := stores[0].Rootfs(ctx, r.Digest)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("extraction: %v", time.Since(t0))
	if fi, err := os.Stat(filepath.Join(root, "usr/bin/python3.11")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("python3.11 in the tree: %v %v", fi, err)
	}
	for range 3 {
		t0 = time.Now()
		if _, err := stores[0].Rootfs(ctx, r.Digest); err != nil {
			t.Fatal(err)
		}
		t.Logf("fast pass: %v", time.Since(t0))
	}
	s2, _ := Open(stores[0].Dir(), Limits{})
	t0 = time.Now()
	if _, err := s2.Rootfs(ctx, r.Digest); err != nil {
		t.Fatal(err)
	}
	t.Logf("full pass (new process): %v", time.Since(t0))
	if err := stores[0].Remove(r.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := stores[0].Rootfs(ctx, r.Digest); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after Remove: %v", err)
	}
}
