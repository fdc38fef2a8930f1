package local

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/mse-in-go/mse/internal/runtimes/image"
)

// BenchmarkSandboxStart measures what the sandbox adds to starting a node:
// the same mse-node bytes (the sealed memfd), run once directly and once as
// the runner runs them (runc: namespaces, cgroups, the runtime's tree
// mounted read-only, tmpfs), both asked for an unknown flag so that they
// exit at once. It needs root, runc, an mse-node binary (MSE_NODE_BINARY or
// bin/mse-node) and a runtime in the shared store (built by `make test` or
// `make demo`).
//
//	go test ./internal/backend/runner/local -run '^$' -bench SandboxStart -count 5
func BenchmarkSandboxStart(b *testing.B) {
	node := os.Getenv("MSE_NODE_BINARY")
	if node == "" {
		node = filepath.Join("..", "..", "..", "..", "bin", "mse-node")
	}
	runc, err := exec.LookPath("runc")
	if err != nil || os.Geteuid() != 0 {
		b.Skip("needs root and runc")
	}
	exe, _, err := sealedCopy(node)
	if err != nil {
		b.Skipf("no node binary (%v): run make build", err)
	}
	defer exe.Close()
	cache, _ := os.UserCacheDir()
	st, err := image.Open(filepath.Join(cache, "mse", "runtimes"), image.DefaultLimits())
	if err != nil {
		b.Fatal(err)
	}
	ds, _ := st.Digests()
	if len(ds) == 0 {
		b.Skip("no runtime in the shared store: run make demo or make test first")
	}
	rootfs, err := st.Rootfs(context.Background(), ds[0])
	if err != nil {
		b.Fatal(err)
	}
	b.Run("direct", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			cmd := exec.Command("/proc/self/fd/3", "--no-such-flag")
			cmd.ExtraFiles = []*os.File{exe}
			if err := cmd.Run(); err == nil {
				b.Fatal("the node accepted an unknown flag")
			}
		}
	})
	b.Run("sandbox", func(b *testing.B) {
		dir := b.TempDir()
		run := filepath.Join(dir, "run")
		if err := os.MkdirAll(run, 0o700); err != nil {
			b.Fatal(err)
		}
		bundleFile, err := os.Open(node) // any readable file: fd 3
		if err != nil {
			b.Fatal(err)
		}
		defer bundleFile.Close()
		for i := 0; i < b.N; i++ {
			id := "bench-" + strconv.Itoa(i)
			if err := writeBundle(dir, sandboxSpec{AppID: id, Rootfs: rootfs, RunDir: run, UID: 299999, MemoryMiB: 256, Cores: 1,
				Args: []string{"--no-such-flag"}}); err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command(runc, "--root", filepath.Join(dir, ".runc"), "run", "--bundle", dir, "--preserve-fds", "2", id)
			cmd.ExtraFiles = []*os.File{bundleFile, exe}
			out, err := cmd.CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
				b.Fatalf("runc run: %v\n%s", err, out)
			}
		}
	})
}
