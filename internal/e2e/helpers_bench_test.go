package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/cli"
	"github.com/mse-in-go/mse/internal/testenv"
)

func runOut(tb testing.TB, args ...string) (string, int) {
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := cli.Main(ctx, args, &out, &errb)
	if code != 0 {
		tb.Logf("mse %v: %s", args, errb.String())
	}
	return out.String(), code
}

func runB(tb testing.TB, args ...string) int {
	_, code := runOut(tb, args...)
	return code
}

func jsonField(tb testing.TB, s, field string) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		tb.Fatalf("not JSON: %q", s)
	}
	return fmt.Sprint(m[field])
}

func helloAppB(tb testing.TB, name string) string {
	dst := tb.TempDir()
	src := filepath.Join(testenv.RepoRoot(), "examples", "helloworld", "mse_src")
	if err := os.CopyFS(filepath.Join(dst, "mse_src"), os.DirFS(src)); err != nil {
		tb.Fatal(err)
	}
	conf := fmt.Sprintf("name = %q\npython_application = \"app:app\"\nhealthcheck_endpoint = \"/health\"\n\n[cloud]\ncode = \"mse_src\"\nhardware = \"1g\"\n", name)
	p := filepath.Join(dst, "mse.toml")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}
