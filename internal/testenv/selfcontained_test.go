package testenv

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSelfContained: no test reads the project's sibling directory of shared
// data, which a fresh clone does not have (issue 7, item 7). Comments may name
// it as the source of the copies in testdata/.
func TestSelfContained(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("the module root is not at %s: %v", root, err)
	}
	needle := "shared" + "/testdata" // not written out: this file would match
	checked := 0
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") && !strings.HasSuffix(path, ".txtar") && d.Name() != "Makefile" {
			return nil
		}
		checked++
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for line := 1; sc.Scan(); line++ {
			text := strings.TrimSpace(sc.Text())
			if strings.HasPrefix(text, "//") || strings.HasPrefix(text, "#") {
				continue
			}
			if strings.Contains(text, needle) {
				rel, _ := filepath.Rel(root, path)
				t.Errorf("%s:%d uses data outside the repository (%q): copy it into a testdata/ directory with its source and license", rel, line, needle)
			}
		}
		return sc.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("only %d test files found under %s: the walk is wrong", checked, root)
	}
}
