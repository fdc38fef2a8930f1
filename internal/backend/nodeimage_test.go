package backend_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mse-in-go/mse/internal/backend"
	"github.com/mse-in-go/mse/internal/runtimes/image"
)

// `mse-backend node-image` packs the real mse-node and mse-fetch into an OCI
// layout tar that the image store's importer parses, with both binaries
// executable at the root, the same digest on a second build, and the ref
// containerd names it by.
func TestNodeImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds mse-node and mse-fetch")
	}
	dir := t.TempDir()
	bins := map[string]string{}
	for _, c := range []string{"mse-node", "mse-fetch"} {
		bins[c] = filepath.Join(dir, c)
		cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-o", bins[c], "github.com/mse-in-go/mse/cmd/"+c)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", c, err, out)
		}
	}
	build := func(out string) string {
		t.Helper()
		cmd := backend.Command()
		var so bytes.Buffer
		cmd.SetOut(&so)
		cmd.SetErr(&so)
		cmd.SetArgs([]string{"node-image", "--out", out, "--ref", "registry.example/mse/node:v1",
			"--node-binary", bins["mse-node"], "--fetch-binary", bins["mse-fetch"]})
		if err := cmd.Execute(); err != nil {
			t.Fatalf("node-image: %v\n%s", err, so.String())
		}
		return so.String()
	}
	tarA, tarB := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	outA, outB := build(tarA), build(tarB)
	m := regexp.MustCompile(`--node-image registry.example/mse/node@(sha256:[0-9a-f]{64}) --node-measurement ([0-9a-f]{64})`).FindStringSubmatch(outA)
	if m == nil {
		t.Fatalf("node-image said %q, want the --node-image and --node-measurement flags", outA)
	}
	if outA != strings.Replace(outB, tarB, tarA, 1) {
		t.Errorf("not reproducible:\n%s\n%s", outA, outB)
	}
	a, _ := os.ReadFile(tarA)
	b, _ := os.ReadFile(tarB)
	if !bytes.Equal(a, b) {
		t.Error("two builds of the same binaries differ")
	}

	// index.json names the image for containerd.
	tr := tar.NewReader(bytes.NewReader(a))
	var index struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if h.Name == "index.json" {
			if err := json.NewDecoder(tr).Decode(&index); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Digest != m[1] || index.Manifests[0].Annotations["io.containerd.image.name"] != "registry.example/mse/node:v1" {
		t.Errorf("index.json: %+v, want %s named registry.example/mse/node:v1", index, m[1])
	}

	st, err := image.Open(filepath.Join(dir, "store"), image.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d, err := st.ImportRef(ctx, tarA, "registry.example/mse/node:v1")
	if err != nil || d != m[1] {
		t.Fatalf("import: %s %v, want %s", d, err, m[1])
	}
	root, err := st.Rootfs(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	// Beside the mount points the store adds (empty directories), the two
	// binaries and nothing else.
	var names []string
	filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			names = append(names, strings.TrimPrefix(p, root+"/"))
		}
		return err
	})
	if strings.Join(names, " ") != "mse-fetch mse-node" {
		t.Errorf("the image holds %v, want mse-fetch and mse-node only", names)
	}
	for c, src := range bins {
		got, _ := os.ReadFile(filepath.Join(root, c))
		want, _ := os.ReadFile(src)
		fi, err := os.Stat(filepath.Join(root, c))
		if err != nil || !bytes.Equal(got, want) || fi.Mode().Perm() != 0o555 {
			t.Errorf("/%s: %v, mode %v, same content %v", c, err, fi.Mode(), bytes.Equal(got, want))
		}
	}
	if sum := sha256hex(t, bins["mse-node"]); sum != m[2] {
		t.Errorf("--node-measurement %s, want mse-node's SHA-256 %s", m[2], sum)
	}
	// The image's mse-fetch runs (and wants its flags).
	out, err := exec.Command(filepath.Join(root, "mse-fetch")).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "--bundle-out") {
		t.Errorf("the image's mse-fetch: %v %s", err, out)
	}
}

func sha256hex(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// `mse-backend sim-platform` creates the four files once; a second run
// loads them and prints the same root.
func TestSimPlatformCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sim")
	run := func() string {
		t.Helper()
		cmd := backend.Command()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs([]string{"sim-platform", "--dir", dir})
		if err := cmd.Execute(); err != nil {
			t.Fatalf("sim-platform: %v\n%s", err, out.String())
		}
		return out.String()
	}
	first, second := run(), run()
	if !regexp.MustCompile(`root sha256 [0-9a-f]{64}\n$`).MatchString(first) || first != second {
		t.Errorf("runs said %q then %q", first, second)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 4 {
		t.Errorf("%d files in %s, want the platform's 4", len(ents), dir)
	}
}

// `mse-backend backend-image` packs the real mse-backend and the CA
// certificates; the extracted image's binary runs.
func TestBackendImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds mse-backend")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "mse-backend")
	build := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-o", bin, "github.com/mse-in-go/mse/cmd/mse-backend")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), 0o644)
	tarPath := filepath.Join(dir, "backend.tar")
	cmd := backend.Command()
	var so bytes.Buffer
	cmd.SetOut(&so)
	cmd.SetErr(&so)
	cmd.SetArgs([]string{"backend-image", "--out", tarPath, "--ref", "registry.example/mse/backend:v1", "--backend-binary", bin, "--ca-certificates", ca})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("backend-image: %v\n%s", err, so.String())
	}
	m := regexp.MustCompile(`image: registry.example/mse/backend@(sha256:[0-9a-f]{64})`).FindStringSubmatch(so.String())
	if m == nil {
		t.Fatalf("backend-image said %q", so.String())
	}
	st, err := image.Open(filepath.Join(dir, "store"), image.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d, err := st.Import(ctx, tarPath)
	if err != nil || d != m[1] {
		t.Fatalf("import: %s %v, want %s", d, err, m[1])
	}
	root, err := st.Rootfs(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "etc/ssl/certs/ca-certificates.crt")); !bytes.HasPrefix(got, []byte("-----BEGIN CERTIFICATE")) {
		t.Errorf("CA certificates: %q", got)
	}
	out, err := exec.Command(filepath.Join(root, "usr/local/bin/mse-backend"), "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "serve") {
		t.Errorf("the image's mse-backend --help: %v\n%s", err, out)
	}
}

// The node and backend images' digests are pinned for fixed inputs: the same
// files give the same image whatever mse-backend builds it (a changed digest
// here changes every operator's --node-image pin).
func TestImageDigestsPinned(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	node, fetch, bin := file("node", "node\n"), file("fetch", "fetch\n"), file("backend", "backend\n")
	ca := file("ca", "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
	ctx := context.Background()
	for _, c := range []struct {
		epoch            int64
		node, backendImg string
	}{
		{0, "sha256:b24b535ca99a32b5ead349cec6b9f93cc490011aa51db13b750110d8fb2e977f", "sha256:93de34498911894ad6b2cdaeddac8ad2a78dec4b3140d6966928b24c18371d61"},
		{1700000000, "sha256:21d1e71ac9c5b31da13a651ec37ba339dab499b970d9eedcee4ca236c49badea", "sha256:5a48f9d676d0004ea0790d0ebdc33d093371daebc6a12485e736f04c79cf219d"},
	} {
		img, err := backend.BuildNodeImage(ctx, backend.NodeImageSpec{NodeBinary: node, FetchBinary: fetch, SourceDateEpoch: c.epoch}, "registry.example/mse/node:v1", io.Discard)
		if err != nil || img.Digest != c.node || img.NodeSHA256 != sha256hex(t, node) {
			t.Errorf("epoch %d: node image %+v, %v; want %s", c.epoch, img, err, c.node)
		}
		d, err := backend.BuildBackendImage(ctx, bin, ca, c.epoch, "registry.example/mse/backend:v1", io.Discard)
		if err != nil || d != c.backendImg {
			t.Errorf("epoch %d: backend image %s, %v; want %s", c.epoch, d, err, c.backendImg)
		}
	}
}

// `make build` and scripts/node-image.sh build mse-node with the same
// reproducible flags, so that bin/mse-node is the image's /mse-node and an
// owner rebuilding the operator's commit gets its --node-measurement.
func TestNodeBuildFlagsAgree(t *testing.T) {
	const flags = "-trimpath -buildvcs=false -ldflags=-buildid="
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^REPRO\s*:=\s*`+regexp.QuoteMeta(flags)+`\s*$`).Match(mk) ||
		!strings.Contains(string(mk), "$(GO) build $(REPRO) -o $(BIN)/mse-node ./cmd/mse-node") {
		t.Errorf("the Makefile does not build bin/mse-node with REPRO := %s", flags)
	}
	sh, err := os.ReadFile("../../scripts/node-image.sh")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(sh), "go build "+flags+" -o ") {
		t.Errorf("scripts/node-image.sh does not build with %s", flags)
	}
}
