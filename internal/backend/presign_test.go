package backend_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/backend"
	"github.com/mse-in-go/mse/internal/testenv"
)

// --bundle-presign-ttl is refused where it cannot work: with the local
// runner (its nodes read a file), without an S3 bundle store, and
// --kube-bundle-store-cidr without it.
func TestServeRefusesPresignWhereItCannotWork(t *testing.T) {
	k := testenv.Kube(t)
	ns := k.Namespace(t)
	kube := []string{"--runner", "kubernetes", "--kubeconfig", k.Kubeconfig, "--namespace", ns,
		"--node-image", "mse/node@sha256:1111111111111111111111111111111111111111111111111111111111111111",
		"--bundle-url", "https://mse-backend.mse.svc:8081", "--node-measurement", testMeasurement}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"local runner", []string{"--bundle-presign-ttl", "1m"}, "--bundle-presign-ttl is for --runner kubernetes"},
		{"bundles on disk", append([]string{"--bundle-presign-ttl", "1m"}, kube...), "needs an S3 bundle store (--blobs s3://"},
		{"store CIDR without presigning", append([]string{"--kube-bundle-store-cidr", "198.51.100.0/24"}, kube...), "pass --bundle-presign-ttl"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := backend.Command()
			out := &syncBuf{}
			cmd.SetOut(out)
			cmd.SetErr(out)
			cmd.SetArgs(append([]string{"serve", "--data-dir", filepath.Join(t.TempDir(), "data"), "--api-addr", "127.0.0.1:0", "--router-addr", "127.0.0.1:0"}, c.args...))
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			err := cmd.ExecuteContext(ctx)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("serve %s: %v, want %q\n%s", strings.Join(c.args, " "), err, c.want, out.String())
			}
		})
	}
}
