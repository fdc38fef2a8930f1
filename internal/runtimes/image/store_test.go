package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

// testImage builds an image in-process from crafted layer tarballs.
func testImage(t testing.TB, arch string, layers ...[]byte) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: arch, RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		b := l
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
			tarball.WithMediaType(types.OCILayer))
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer}); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

func baseLayers(t testing.TB) [][]byte {
	return [][]byte{
		mkTar(t, dirEnt("usr/bin"), withMode(file("usr/bin/python3.11", "#!python"), 0o755), symlink("usr/bin/python3", "python3.11"),
			file("etc/os-release", "bookworm"), file("etc/old", "gone"), withMode(file("usr/bin/su", "su"), 0o4755)),
		mkTar(t, file("etc/.wh.old", ""), file("app/lib.py", "print(1)")),
	}
}

func writeLayout(t testing.TB, dir string, imgs map[string]v1.Image) {
	t.Helper()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for ref, img := range imgs {
		var opts []layout.Option
		if ref != "" {
			opts = append(opts, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref}))
		}
		if err := p.AppendImage(img, opts...); err != nil {
			t.Fatal(err)
		}
	}
}

// tarDir packs a directory (an OCI layout) as a tarball.
func tarDir(t testing.TB, dir, out string) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		r, _ := filepath.Rel(dir, p)
		if r == "." {
			return nil
		}
		h, _ := tar.FileInfoHeader(fi, "")
		h.Name = filepath.ToSlash(r)
		tw.WriteHeader(h)
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			tw.Write(b)
		}
		return nil
	})
	tw.Close()
	f.Close()
}

func openStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestImportAndRootfs(t *testing.T) {
	ctx := context.Background()
	img := testImage(t, "amd64", baseLayers(t)...)
	want, _ := img.Digest()
	src := t.TempDir()
	writeLayout(t, filepath.Join(src, "layout"), map[string]v1.Image{"": img})
	tarDir(t, filepath.Join(src, "layout"), filepath.Join(src, "oci.tar"))
	if err := tarball.WriteToFile(filepath.Join(src, "docker.tar"), name.MustParseReference("mse/test:1").(name.Tag), img); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ name, path string }{
		{"OCI layout", filepath.Join(src, "layout")},
		{"OCI layout tarball", filepath.Join(src, "oci.tar")},
		{"docker-save tarball", filepath.Join(src, "docker.tar")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			d, err := s.Import(ctx, tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if tc.name != "docker-save tarball" && d != want.String() {
				t.Fatalf("digest %s, want the layout's %s", d, want)
			}
			if !s.Has(d) {
				t.Fatal("Has is false after Import")
			}
			root, err := s.Rootfs(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			if root != filepath.Join(s.Dir(), "rootfs", strings.TrimPrefix(d, "sha256:")) {
				t.Fatalf("rootfs at %s", root)
			}
			b, err := os.ReadFile(filepath.Join(root, "usr/bin/python3"))
			if err != nil || string(b) != "#!python" {
				t.Fatalf("python3: %q %v", b, err)
			}
			if _, err := os.Lstat(filepath.Join(root, "etc/old")); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("the whiteout of etc/old was not applied")
			}
			if fi, _ := os.Stat(filepath.Join(root, "usr/bin/su")); fi.Mode() != 0o755 {
				t.Fatalf("su mode %v; setuid must be stripped", fi.Mode())
			}
			if _, err := s.Rootfs(ctx, d); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestImportRefusals(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	arm := filepath.Join(dir, "arm")
	writeLayout(t, arm, map[string]v1.Image{"": testImage(t, "arm64", baseLayers(t)...)})
	two := filepath.Join(dir, "two")
	writeLayout(t, two, map[string]v1.Image{
		"one": testImage(t, "amd64", mkTar(t, file("a", "1"))),
		"two": testImage(t, "amd64", mkTar(t, file("a", "2"))),
	})
	gz := filepath.Join(dir, "img.tar.gz")
	os.WriteFile(gz, []byte{0x1f, 0x8b, 8, 0}, 0o644)
	for _, tc := range []struct{ name, path, want string }{
		{"arm64", arm, "linux/arm64; runtimes must be linux/amd64"},
		{"two images", two, "holds 2 images; name one"},
		{"gzip", gz, "decompress it first"},
		{"missing", filepath.Join(dir, "nope"), "no such file"},
		{"not a layout", t.TempDir(), "not an OCI image layout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := openStore(t).Import(ctx, tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want %q", err, tc.want)
			}
		})
	}
	s := openStore(t)
	d, err := s.ImportRef(ctx, two, "two")
	if err != nil {
		t.Fatal(err)
	}
	root, err := s.Rootfs(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "a")); string(b) != "2" {
		t.Fatalf("ImportRef took the wrong image: a=%q", b)
	}
}

func TestCorruptBlobRefused(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	img := testImage(t, "amd64", baseLayers(t)...)
	writeLayout(t, src, map[string]v1.Image{"": img})
	s := openStore(t)
	d, err := s.Import(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	p := s.blobPath(m.Layers[1].Digest)
	b, _ := os.ReadFile(p)
	b[len(b)-10] ^= 1 // inside the gzip trailer/stream: same size, other content
	os.WriteFile(p, b, 0o644)
	_, err = s.Rootfs(ctx, d)
	if err == nil || !strings.Contains(err.Error(), "layer 1") {
		t.Fatalf("error %v; want the corrupt layer 1 named", err)
	}
	if _, serr := os.Lstat(filepath.Join(s.Dir(), "rootfs", m.Layers[0].Digest.Hex)); serr == nil {
		t.Fatal("a tree was left in place")
	}
	ents, _ := os.ReadDir(filepath.Join(s.Dir(), "rootfs"))
	if len(ents) != 0 {
		t.Fatalf("rootfs/ holds %v after a failed extraction", ents)
	}
}

// modify is a change of an extracted tree that Rootfs must catch.
type modify struct {
	name string
	path string // named in the error
	want string
	do   func(t *testing.T, root string)
}

func modifications() []modify {
	w := func(p, body string) func(t *testing.T, root string) {
		return func(t *testing.T, root string) {
			if err := os.WriteFile(filepath.Join(root, p), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return []modify{
		{"content", "usr/bin/python3.11", "differs from the image (sha256 ", w("usr/bin/python3.11", "#!evil!!")},
		{"size", "etc/os-release", "differs from the image (5 bytes, want 8)", w("etc/os-release", "trixi")},
		{"added", "etc/added", "is not in the image (added to the tree)", w("etc/added", "x")},
		{"removed", "app/lib.py", "is missing", func(t *testing.T, root string) { os.Remove(filepath.Join(root, "app/lib.py")) }},
		{"chmod", "usr/bin/python3.11", "has mode 0777, want 0755", func(t *testing.T, root string) { os.Chmod(filepath.Join(root, "usr/bin/python3.11"), 0o777) }},
		{"dir chmod", "etc", "has mode 0777, want 0755", func(t *testing.T, root string) { os.Chmod(filepath.Join(root, "etc"), 0o777) }},
		{"symlink retargeted", "usr/bin/python3", `is a symlink to "/bin/sh", want "python3.11"`, func(t *testing.T, root string) {
			p := filepath.Join(root, "usr/bin/python3")
			os.Remove(p)
			os.Symlink("/bin/sh", p)
		}},
		{"file replaced by a symlink", "etc/os-release", "is a symlink, want a regular file", func(t *testing.T, root string) {
			p := filepath.Join(root, "etc/os-release")
			os.Remove(p)
			os.Symlink("/etc/os-release", p)
		}},
		{"chown", "app/lib.py", "is owned by 4242:4242", func(t *testing.T, root string) {
			if os.Geteuid() != 0 {
				ciskip.Missing(t, "chown needs root (run the tests as root)")
			}
			os.Lchown(filepath.Join(root, "app/lib.py"), 4242, 4242)
		}},
		{"same size and mtime kept (touch -d back)", "usr/bin/python3.11", "differs from the image (sha256 ", func(t *testing.T, root string) {
			p := filepath.Join(root, "usr/bin/python3.11")
			fi, _ := os.Stat(p)
			f, _ := os.OpenFile(p, os.O_WRONLY, 0)
			f.WriteAt([]byte("X"), 0)
			f.Close()
			os.Chtimes(p, fi.ModTime(), fi.ModTime())
			if fi2, _ := os.Stat(p); !fi2.ModTime().Equal(fi.ModTime()) || fi2.Size() != fi.Size() {
				t.Fatal("could not restore mtime")
			}
		}},
	}
}

func TestRootfsDetectsModification(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	writeLayout(t, src, map[string]v1.Image{"": testImage(t, "amd64", baseLayers(t)...)})
	for _, tc := range modifications() {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			d, err := s.Import(ctx, src)
			if err != nil {
				t.Fatal(err)
			}
			root, err := s.Rootfs(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			tc.do(t, root)
			check := func(s *Store, when string) {
				_, err = s.Rootfs(ctx, d)
				var me *ModifiedError
				if !errors.As(err, &me) || !errors.Is(err, ErrModified) {
					t.Fatalf("%s: error %v; want a ModifiedError", when, err)
				}
				msg := err.Error()
				for _, w := range []string{"runtime " + d[:19], "file " + tc.path + " ", tc.want, "remove " + root} {
					if !strings.Contains(msg, w) {
						t.Fatalf("%s: error %q does not contain %q", when, msg, w)
					}
				}
			}
			check(s, "fast pass")
			check(s, "fast pass again")
			// A new process (no snapshot in memory) re-hashes everything.
			s2, err := Open(s.Dir(), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			check(s2, "full pass")
		})
	}
}

func TestRootfsAcceptsUnchangedContent(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	writeLayout(t, src, map[string]v1.Image{"": testImage(t, "amd64", baseLayers(t)...)})
	s := openStore(t)
	d, _ := s.Import(ctx, src)
	root, err := s.Rootfs(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, "usr/bin/python3.11")
	// Same content rewritten: stat differs, hash matches.
	os.WriteFile(p, []byte("#!python"), 0o755)
	if _, err := s.Rootfs(ctx, d); err != nil {
		t.Fatalf("rewritten with the same content: %v", err)
	}
	os.WriteFile(p, []byte("#!python3"), 0o755)
	if _, err := s.Rootfs(ctx, d); err == nil {
		t.Fatal("modified file accepted")
	}
	os.WriteFile(p, []byte("#!python"), 0o755)
	if _, err := s.Rootfs(ctx, d); err != nil {
		t.Fatalf("restored: %v", err)
	}
	s2, _ := Open(s.Dir(), Limits{})
	if _, err := s2.Rootfs(ctx, d); err != nil {
		t.Fatalf("full pass of an intact tree: %v", err)
	}
}

func TestRootfsConcurrent(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	writeLayout(t, src, map[string]v1.Image{"": testImage(t, "amd64", tree(t, 20, 50))})
	s := openStore(t)
	d, err := s.Import(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := Open(s.Dir(), Limits{}) // a second process on the same directory
	var wg sync.WaitGroup
	roots := make([]string, 16)
	errs := make([]error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := s
			if i%2 == 1 {
				st = s2
			}
			for range 5 {
				roots[i], errs[i] = st.Rootfs(ctx, d)
				if errs[i] != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	for i := range 16 {
		if errs[i] != nil || roots[i] != roots[0] {
			t.Fatalf("call %d: %s %v", i, roots[i], errs[i])
		}
	}
	ents, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp"))
	if len(ents) != 0 {
		t.Fatalf("tmp/ holds %v", ents)
	}
	if n := countFiles(t, roots[0]); n != 20*50 {
		t.Fatalf("tree has %d files", n)
	}
}

func countFiles(t testing.TB, root string) int {
	n := 0
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// tree is a layer of dirs×files small files.
func tree(t testing.TB, dirs, files int) []byte {
	var ents []ent
	for i := range dirs {
		for j := range files {
			ents = append(ents, file(fmt.Sprintf("usr/lib/d%03d/f%04d.py", i, j), fmt.Sprintf("content %d %d", i, j)))
		}
	}
	return mkTar(t, ents...)
}

func TestRemoveAndCleanup(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	img := testImage(t, "amd64", baseLayers(t)...)
	writeLayout(t, src, map[string]v1.Image{"": img})
	s := openStore(t)
	d, _ := s.Import(ctx, src)
	root, err := s.Rootfs(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	// An abandoned work directory (a crash mid-extraction) goes at Open.
	os.MkdirAll(filepath.Join(s.Dir(), "tmp", "rootfs-123", "tree"), 0o755)
	os.WriteFile(filepath.Join(s.Dir(), "tmp", "rootfs-123.lock"), nil, 0o600)
	s, err = Open(s.Dir(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp")); len(ents) != 0 {
		t.Fatalf("tmp/ holds %v after Open", ents)
	}
	if err := s.Remove(d); err != nil {
		t.Fatal(err)
	}
	if s.Has(d) {
		t.Fatal("Has after Remove")
	}
	if _, err := os.Lstat(root); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the tree is still there")
	}
	blobs, _ := os.ReadDir(filepath.Join(s.LayoutDir(), "blobs", "sha256"))
	if len(blobs) != 0 {
		t.Fatalf("%d blobs left after removing the only image", len(blobs))
	}
	if _, err := s.Rootfs(ctx, d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Rootfs after Remove: %v", err)
	}
	if err := s.Remove(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Remove: %v", err)
	}
}

func BenchmarkRootfsVerify(b *testing.B) {
	ctx := context.Background()
	src := b.TempDir()
	writeLayout(b, src, map[string]v1.Image{"": testImage(b, "amd64", tree(b, 100, 100))})
	s, _ := Open(b.TempDir(), Limits{})
	d, err := s.Import(ctx, src)
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	if _, err := s.Rootfs(ctx, d); err != nil {
		b.Fatal(err)
	}
	b.Logf("extraction of 10,000 files: %v", time.Since(t0))
	s2, _ := Open(s.Dir(), Limits{})
	t0 = time.Now()
	if _, err := s2.Rootfs(ctx, d); err != nil {
		b.Fatal(err)
	}
	b.Logf("full pass (re-hash) of 10,000 files: %v", time.Since(t0))
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Rootfs(ctx, d); err != nil {
			b.Fatal(err)
		}
	}
}
