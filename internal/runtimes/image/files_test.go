package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAddFiles(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.WriteFile(a, []byte("one"), 0o600)
	os.WriteFile(b, []byte("two"), 0o600)
	st, err := Open(filepath.Join(dir, "store"), DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	add := func(files ...File) (string, error) { return st.AddFiles(ctx, FilesSpec{Files: files, User: "65532"}) }

	d1, err := add(File{"/bin/x", 0o555, a}, File{"/y", 0o444, b})
	if err != nil {
		t.Fatal(err)
	}
	if d2, _ := add(File{"/y", 0o444, b}, File{"/bin/x", 0o555, a}); d2 != d1 {
		t.Errorf("the order of the files changed the digest: %s, %s", d1, d2)
	}
	if d3, _ := add(File{"/bin/x", 0o555, b}, File{"/y", 0o444, b}); d3 == d1 {
		t.Error("other content, same digest")
	}
	if d4, _ := add(File{"/bin/x", 0o755, a}, File{"/y", 0o444, b}); d4 == d1 {
		t.Error("other mode, same digest")
	}
	root, err := st.Rootfs(ctx, d1)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "bin/x")); string(got) != "one" {
		t.Errorf("/bin/x holds %q", got)
	}

	for _, c := range []struct {
		name  string
		files []File
		err   string
	}{
		{"none", nil, "unsafe"},
		{"relative", []File{{"x", 0o555, a}}, "clean absolute path"},
		{"climbs", []File{{"/a/../x", 0o555, a}}, "clean absolute path"},
		{"root", []File{{"/", 0o555, a}}, "clean absolute path"},
		{"setuid", []File{{"/x", 0o4555, a}}, "permission bits only"},
		{"twice", []File{{"/x", 0o555, a}, {"/x", 0o555, b}}, "listed twice"},
		{"file and directory", []File{{"/x", 0o555, a}, {"/x/y", 0o555, b}}, "also a directory"},
		{"missing source", []File{{"/x", 0o555, filepath.Join(dir, "nope")}}, "no such file"},
		{"directory source", []File{{"/x", 0o555, dir}}, "not a regular file"},
	} {
		_, err := add(c.files...)
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: %v, want %q", c.name, err, c.err)
		}
	}
	small, _ := Open(filepath.Join(dir, "small"), Limits{MaxFileBytes: 2})
	if _, err := small.AddFiles(ctx, FilesSpec{Files: []File{{"/x", 0o555, a}}}); !errors.Is(err, ErrLimit) {
		t.Errorf("a file over the limit: %v", err)
	}
}
