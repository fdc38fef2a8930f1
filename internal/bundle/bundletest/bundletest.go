// Package bundletest holds the test helpers shared by the tests of
// internal/bundle (the node side) and internal/bundle/pack (the owner side):
// code directories described as data.
package bundletest

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Tree describes a directory: "path/" is a directory, "path" a file with its
// contents, "path*" an executable file.
type Tree map[string]string

// WriteTree creates the files and directories of tr under dir.
func WriteTree(t testing.TB, dir string, tr Tree) {
	t.Helper()
	paths := make([]string, 0, len(tr))
	for p := range tr {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		content := tr[p]
		full := filepath.Join(dir, filepath.FromSlash(strings.TrimSuffix(strings.TrimSuffix(p, "/"), "*")))
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := fs.FileMode(0o644)
		if strings.HasSuffix(p, "*") {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, mode); err != nil {
			t.Fatal(err)
		}
	}
}

// ListTree describes what is in dir: path -> "dir 0755" or "file 0644 <sha256>".
func ListTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case info.IsDir():
			out[rel] = "dir " + info.Mode().Perm().String()
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			out[rel] = "file " + info.Mode().Perm().String() + " " + hex.EncodeToString(sum[:8])
		default:
			out[rel] = "other " + info.Mode().String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// SampleTree has what packing must get right: an executable, empty
// directories and files, names that sort differently bytewise and by
// component, non-ASCII names, and a path over the 100 bytes of a ustar name.
var SampleTree = Tree{
	"index.js":                            "console.log('hi')\n",
	"run.sh*":                             "#!/bin/sh\nexec node index.js\n",
	"lib/":                                "",
	"lib/a.js":                            "a",
	"lib/a-b.js":                          "ab",
	"lib/sub/":                            "",
	"lib/sub/z.txt":                       "z",
	"lib-x/c":                             "c",
	"empty/":                              "",
	"emptyfile":                           "",
	"unicodé/naïve.txt":                   "utf-8 names",
	"Upper.txt":                           "case",
	strings.Repeat("d/", 60) + "deep.txt": "deep path over 100 bytes",
}

// RandomBytes returns n bytes from a ChaCha8 stream seeded with seed: the same
// bytes on every run.
func RandomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(b)
	return b
}
