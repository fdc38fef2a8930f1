package scaffold

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/config"
)

func TestWriteThenLoad(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, "my-app_1.0"); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "my-app_1.0")
	for _, f := range []string{"mse.toml", "mse_src/app.py", "mse_src/.mseignore", "tests/test_app.py", "README.md"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	c, err := config.Load(filepath.Join(root, "mse.toml"), time.Now())
	if err != nil {
		t.Fatalf("scaffolded config invalid: %v", err)
	}
	if c.Name != "my-app_1.0" || c.PythonApplication != "app:app" || c.HealthcheckEndpoint != "/health" {
		t.Errorf("unexpected config %+v", c)
	}
	if c.Cloud.Code != filepath.Join(root, "mse_src") || c.Cloud.Tests != filepath.Join(root, "tests") {
		t.Errorf("paths: code %s tests %s", c.Cloud.Code, c.Cloud.Tests)
	}
	if c.Cloud.Project != config.DefaultProject || c.Cloud.Hardware != config.DefaultHardware {
		t.Errorf("project %q hardware %q, want the defaults", c.Cloud.Project, c.Cloud.Hardware)
	}
	if c.TLSMode() != config.TLSSelf {
		t.Errorf("TLSMode = %s", c.TLSMode())
	}
	app, _ := os.ReadFile(filepath.Join(root, "mse_src/app.py"))
	if !strings.Contains(string(app), `NAME = "my-app_1.0"`) {
		t.Error("app.py is not named after the app")
	}
	// The generated tests run against a deployed or local app: e2e's
	// TestScaffoldedApp runs them under localtest and test.
	tests, _ := os.ReadFile(filepath.Join(root, "tests/test_app.py"))
	if !strings.Contains(string(tests), `TEST_REMOTE_URL`) || !strings.Contains(string(tests), `"Hello from my-app_1.0!"`) {
		t.Error("test_app.py does not test the app at TEST_REMOTE_URL")
	}
	if c.Cloud.Runtime != DefaultRuntime || c.TestsCmd != "pytest" {
		t.Errorf("runtime %q tests_cmd %q", c.Cloud.Runtime, c.TestsCmd)
	}
}

func TestWriteIntoEmptyDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, "app"); err != nil {
		t.Fatal(err)
	}
}

func TestWriteRefusesNonEmpty(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "app")
	os.Mkdir(root, 0o755)
	os.WriteFile(filepath.Join(root, "keep.txt"), []byte("mine"), 0o644)
	err := Write(dir, "app")
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("err = %v, want 'not empty'", err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "keep.txt")); string(b) != "mine" {
		t.Error("existing file touched")
	}
	if _, err := os.Stat(filepath.Join(root, "mse.toml")); err == nil {
		t.Error("wrote into a non-empty directory")
	}
	// A file in the way.
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	if err := Write(dir, "file"); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("err = %v, want 'not a directory'", err)
	}
}

func TestWriteRefusesBadNames(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"", ".", "..", "../evil", "a/b", "-x", "has space", "é", strings.Repeat("a", 256)} {
		err := Write(dir, name)
		if err == nil {
			t.Errorf("Write(%q) succeeded", name)
			continue
		}
		if !strings.Contains(err.Error(), "invalid app name") || !strings.Contains(err.Error(), "name:") {
			t.Errorf("Write(%q) = %v", name, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("bad names created %d entries", len(ents))
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "evil")); err == nil {
		t.Error("escaped the directory")
	}
}
