package pack

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/bundle"
	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

// archiveEntries lists the headers of an archive.
func archiveEntries(t *testing.T, b []byte) []*tar.Header {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var out []*tar.Header
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
}

func TestPackNormalizedHeaders(t *testing.T) {
	d := t.TempDir()
	writeTree(t, d, sampleTree)
	hs := archiveEntries(t, packBytes(t, d, bundle.Limits{}))
	var names []string
	for _, h := range hs {
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner not normalized: %d/%d %q/%q", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if !h.ModTime.Equal(time.Unix(0, 0)) || !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
			t.Errorf("%s: times not normalized: %v %v %v", h.Name, h.ModTime, h.AccessTime, h.ChangeTime)
		}
		want := int64(0o644)
		switch {
		case h.Typeflag == tar.TypeDir:
			want = 0o755
		case h.Name == "run.sh":
			want = 0o755
		}
		if h.Mode != want {
			t.Errorf("%s: mode %o, want %o", h.Name, h.Mode, want)
		}
		if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeDir {
			t.Errorf("%s: type %q", h.Name, h.Typeflag)
		}
	}
	// Depth-first, names sorted bytewise within each directory.
	want := []string{"Upper.txt", "d/"}
	for i := 2; i <= 60; i++ {
		want = append(want, strings.Repeat("d/", i))
	}
	want = append(want, strings.Repeat("d/", 60)+"deep.txt",
		"empty/", "emptyfile", "index.js", "lib/", "lib/a-b.js", "lib/a.js", "lib/sub/", "lib/sub/z.txt",
		"lib-x/", "lib-x/c", "run.sh", "unicodé/", "unicodé/naïve.txt")
	if !reflect.DeepEqual(names, want) {
		t.Errorf("order:\n got %q\nwant %q", names, want)
	}
	// The canonical order (docs/bundle-format.md): paths compared component
	// by component, bytewise, as the node's reader checks it.
	for i := 1; i < len(names); i++ {
		a, b := strings.TrimSuffix(names[i-1], "/"), strings.TrimSuffix(names[i], "/")
		if slices.Compare(strings.Split(a, "/"), strings.Split(b, "/")) >= 0 {
			t.Errorf("not in canonical order: %q then %q", a, b)
		}
	}
}

func TestPackDeterministic(t *testing.T) {
	d1, d2 := t.TempDir(), t.TempDir()
	old := syscall.Umask(0o022)
	writeTree(t, d1, sampleTree)
	syscall.Umask(0o077) // different umask, and write in a different order
	keys := make([]string, 0, len(sampleTree))
	for k := range sampleTree {
		keys = append(keys, k)
	}
	for i := len(keys) - 1; i >= 0; i-- {
		writeTree(t, d2, tree{keys[i]: sampleTree[keys[i]]})
	}
	syscall.Umask(old)
	// Different times, permissions (beyond the executable bit) and owners.
	i := 0
	filepath.Walk(d2, func(p string, info os.FileInfo, err error) error {
		i++
		os.Chtimes(p, time.Unix(int64(1e9+i), 0), time.Unix(int64(2e9+i), 0))
		if info.Mode().IsRegular() {
			if info.Mode()&0o100 != 0 {
				os.Chmod(p, 0o710)
			} else {
				os.Chmod(p, 0o600)
			}
		} else {
			os.Chmod(p, 0o700)
		}
		if os.Getuid() == 0 {
			os.Lchown(p, 1234, 5678)
		}
		return nil
	})
	os.Chmod(d2, 0o755)
	a, b := packBytes(t, d1, bundle.Limits{}), packBytes(t, d1, bundle.Limits{})
	if !bytes.Equal(a, b) {
		t.Fatal("packing the same tree twice gave different bytes")
	}
	c := packBytes(t, d2, bundle.Limits{})
	if !bytes.Equal(a, c) {
		t.Fatalf("packing equal trees with different metadata gave different bytes (%d vs %d bytes)", len(a), len(c))
	}
}

func TestIgnoreRules(t *testing.T) {
	base := tree{
		"app.py":            "x",
		"debug.log":         "x",
		"build/":            "",
		"build/out.bin":     "x",
		"src/":              "",
		"src/main.py":       "x",
		"src/main.pyc":      "x",
		"src/keep.log":      "x",
		"src/gen/":          "",
		"src/gen/g.py":      "x",
		"docs/build/":       "",
		"docs/build/x.html": "x",
		".git/":             "",
		".git/HEAD":         "x",
		".env":              "SECRET=1",
	}
	tests := []struct {
		name    string
		ignore  string            // root .mseignore; "" = none
		nested  map[string]string // dir -> .mseignore
		include []string
		exclude []string
	}{
		{name: "no rules", include: []string{"app.py", "debug.log", "build/out.bin", ".git/HEAD", ".env"}},
		{name: "glob and negation", ignore: "*.log\n!src/keep.log\n", include: []string{"src/keep.log", "app.py", ".mseignore"}, exclude: []string{"debug.log"}},
		{name: "dir only", ignore: "build/\n", include: []string{"app.py"}, exclude: []string{"build/", "build/out.bin", "docs/build/x.html"}},
		{name: "anchored", ignore: "/build\n", include: []string{"docs/build/x.html"}, exclude: []string{"build/out.bin"}},
		{name: "double star", ignore: "**/*.pyc\nsrc/gen/**\n", include: []string{"src/main.py"}, exclude: []string{"src/main.pyc", "src/gen/g.py"}},
		{name: "comments, blanks, CRLF", ignore: "# a comment\r\n\r\n.git\r\n.env\r\n", include: []string{"app.py"}, exclude: []string{".git/", ".git/HEAD", ".env"}},
		{name: "ignore file excludes itself", ignore: ".mseignore\n*.log\n", include: []string{"app.py"}, exclude: []string{".mseignore", "debug.log"}},
		{name: "nested file", nested: map[string]string{"src": "*.pyc\n"}, include: []string{"src/main.py", "src/.mseignore", "build/out.bin"}, exclude: []string{"src/main.pyc"}},
		{name: "nested overrides parent", ignore: "*.py\n", nested: map[string]string{"src": "!main.py\n"}, include: []string{"src/main.py"}, exclude: []string{"app.py", "src/gen/g.py"}},
		{name: "nested does not apply above", nested: map[string]string{"src": "app.py\n"}, include: []string{"app.py"}},
		{name: "excluded dir is not entered", ignore: "src\n!src/main.py\n", exclude: []string{"src/", "src/main.py"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := t.TempDir()
			writeTree(t, d, base)
			if tt.ignore != "" {
				writeTree(t, d, tree{".mseignore": tt.ignore})
			}
			for dir, rules := range tt.nested {
				writeTree(t, d, tree{dir + "/.mseignore": rules})
			}
			got := map[string]bool{}
			for _, h := range archiveEntries(t, packBytes(t, d, bundle.Limits{})) {
				got[h.Name] = true
			}
			for _, p := range tt.include {
				if !got[p] {
					t.Errorf("%s is missing from the archive", p)
				}
			}
			for _, p := range tt.exclude {
				if got[p] {
					t.Errorf("%s should have been ignored", p)
				}
			}
		})
	}
}

func TestPackRefusesSpecialFiles(t *testing.T) {
	t.Run("symlink", func(t *testing.T) {
		d := filepath.Join(t.TempDir(), "code")
		writeTree(t, d, tree{"lib/real": "x"})
		os.Symlink("real", filepath.Join(d, "lib", "x"))
		_, err := Pack(d, io.Discard, bundle.Limits{})
		want := filepath.Join(d, "lib/x") + ": symbolic links are not allowed in a bundle; replace it with the file it points to or add it to .mseignore"
		if err == nil || err.Error() != want {
			t.Fatalf("got %v\nwant %s", err, want)
		}
		// Relative code directory: the message names the path as the user wrote it.
		wd, _ := os.Getwd()
		defer os.Chdir(wd)
		os.Chdir(filepath.Dir(d))
		_, err = Pack("code", io.Discard, bundle.Limits{})
		if want := "code/lib/x: symbolic links are not allowed in a bundle; replace it with the file it points to or add it to .mseignore"; err == nil || err.Error() != want {
			t.Fatalf("got %v\nwant %s", err, want)
		}
	})
	t.Run("ignored symlink", func(t *testing.T) {
		d := t.TempDir()
		writeTree(t, d, tree{"a": "x", ".mseignore": "node_modules/.bin/\n"})
		os.MkdirAll(filepath.Join(d, "node_modules/.bin"), 0o755)
		os.Symlink("../../a", filepath.Join(d, "node_modules/.bin/tool"))
		if _, err := Pack(d, io.Discard, bundle.Limits{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("symlink to directory", func(t *testing.T) {
		d := t.TempDir()
		writeTree(t, d, tree{"real/a": "x"})
		os.Symlink("real", filepath.Join(d, "link"))
		if _, err := Pack(d, io.Discard, bundle.Limits{}); err == nil || !strings.Contains(err.Error(), "link: symbolic links are not allowed") {
			t.Fatal(err)
		}
	})
	t.Run("fifo", func(t *testing.T) {
		d := t.TempDir()
		if err := syscall.Mkfifo(filepath.Join(d, "pipe"), 0o644); err != nil {
			skipUnlessCI(t, err)
		}
		if _, err := Pack(d, io.Discard, bundle.Limits{}); err == nil || !strings.Contains(err.Error(), "pipe: named pipes (FIFOs) are not allowed") {
			t.Fatal(err)
		}
	})
	t.Run("socket", func(t *testing.T) {
		d := t.TempDir()
		l, err := net.Listen("unix", filepath.Join(d, "sock"))
		if err != nil {
			skipUnlessCI(t, err)
		}
		defer l.Close()
		if _, err := Pack(d, io.Discard, bundle.Limits{}); err == nil || !strings.Contains(err.Error(), "sock: sockets are not allowed") {
			t.Fatal(err)
		}
	})
	t.Run("device", func(t *testing.T) {
		d := t.TempDir()
		if err := syscall.Mknod(filepath.Join(d, "null"), syscall.S_IFCHR|0o644, 1<<8|3); err != nil {
			skipUnlessCI(t, err)
		}
		if _, err := Pack(d, io.Discard, bundle.Limits{}); err == nil || !strings.Contains(err.Error(), "null: device files are not allowed") {
			t.Fatal(err)
		}
	})
	t.Run("not a directory", func(t *testing.T) {
		d := t.TempDir()
		writeTree(t, d, tree{"f": "x"})
		if _, err := Pack(filepath.Join(d, "f"), io.Discard, bundle.Limits{}); err == nil {
			t.Fatal("packed a file")
		}
		if _, err := Pack(filepath.Join(d, "missing"), io.Discard, bundle.Limits{}); err == nil {
			t.Fatal("packed a missing directory")
		}
	})
}

func TestPackLimits(t *testing.T) {
	d := t.TempDir()
	writeTree(t, d, tree{"a/b/c.txt": "0123456789", "d.txt": "01234", "e.txt": ""})
	tests := []struct {
		lim   bundle.Limits
		limit string
		path  string
	}{
		{bundle.Limits{MaxTotalSize: 14}, "MaxTotalSize", "d.txt"},
		{bundle.Limits{MaxFileSize: 9}, "MaxFileSize", "a/b/c.txt"},
		{bundle.Limits{MaxFiles: 4}, "MaxFiles", "e.txt"},
		{bundle.Limits{MaxPathLen: 8}, "MaxPathLen", "a/b/c.txt"},
	}
	for _, tt := range tests {
		t.Run(tt.limit, func(t *testing.T) {
			_, err := Pack(d, io.Discard, tt.lim)
			var le *bundle.LimitError
			if !errors.As(err, &le) {
				t.Fatalf("got %v, want a LimitError", err)
			}
			if le.Limit != tt.limit || !le.Packing || le.Path != filepath.Join(d, tt.path) {
				t.Errorf("got %+v", le)
			}
			if !strings.Contains(err.Error(), tt.limit) || !strings.Contains(err.Error(), ".mseignore") || !strings.Contains(err.Error(), "raise the limit") {
				t.Errorf("unhelpful message: %v", err)
			}
		})
	}
	// Exactly at the limits is fine.
	if _, err := Pack(d, io.Discard, bundle.Limits{MaxTotalSize: 15, MaxFileSize: 10, MaxFiles: 5, MaxPathLen: 9}); err != nil {
		t.Fatal(err)
	}
}

// skipUnlessCI skips a case the machine cannot set up (no mkfifo, mknod or
// unix sockets), except under CI=true, where such a machine is an error.
func skipUnlessCI(t *testing.T, err error) {
	t.Helper()
	ciskip.Missing(t, "cannot set up the case (run the tests as root, on a filesystem that takes FIFOs, devices and sockets): %v", err)
}
