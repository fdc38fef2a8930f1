package backend_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mse-in-go/mse/internal/backend"
	"github.com/mse-in-go/mse/internal/backend/blob"
	"github.com/mse-in-go/mse/internal/backend/blob/fs"
	"github.com/mse-in-go/mse/internal/testenv"
)

// TestOpenBlobs: --blobs names a directory (default DATA_DIR/bundles) or an
// S3 bucket, whose bundles the local runner gets as local copies; bad
// values and missing credentials fail saying what to do.
func TestOpenBlobs(t *testing.T) {
	ctx := context.Background()
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	data := t.TempDir()

	s, err := backend.OpenBlobs(ctx, backend.Config{DataDir: data}, log)
	if st, ok := s.(*fs.Store); err != nil || !ok || st.Dir != filepath.Join(data, "bundles") {
		t.Errorf("default: %T %+v, %v", s, s, err)
	}
	dir := filepath.Join(t.TempDir(), "elsewhere")
	if s, err := backend.OpenBlobs(ctx, backend.Config{DataDir: data, BlobsURL: dir}, log); err != nil || s.(*fs.Store).Dir != dir {
		t.Errorf("a directory: %v", err)
	}

	srv := testenv.S3(t)
	url := "s3://" + srv.Bucket + "/prod/bundles?endpoint=" + srv.Endpoint + "&region=" + srv.Region + "&tls=false"
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	if _, err := backend.OpenBlobs(ctx, backend.Config{DataDir: data, BlobsURL: url}, log); err == nil || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
		t.Errorf("no credentials: %v", err)
	}
	if _, err := backend.OpenBlobs(ctx, backend.Config{DataDir: data, BlobsURL: "s3://" + srv.Bucket + "?endpoint=nohost"}, log); err == nil || !strings.Contains(err.Error(), "--blobs") {
		t.Errorf("a bad URL: %v", err)
	}
	// From a credentials file, then from the environment.
	cred := filepath.Join(t.TempDir(), "credentials")
	os.WriteFile(cred, []byte("[default]\naws_access_key_id = "+srv.AccessKey+"\naws_secret_access_key = "+srv.SecretKey+"\n"), 0o600)
	s, err = backend.OpenBlobs(ctx, backend.Config{DataDir: data, BlobsURL: url, BlobsCredentials: cred}, log)
	if err != nil {
		t.Fatalf("S3 with a credentials file: %v", err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	if _, err := backend.OpenBlobs(ctx, backend.Config{DataDir: data, BlobsURL: url}, log); err != nil {
		t.Fatalf("S3 with credentials in the environment: %v", err)
	}
	if strings.Contains(logBuf.String(), srv.SecretKey) {
		t.Errorf("the log shows the secret key:\n%s", logBuf.String())
	}
	if !strings.Contains(logBuf.String(), "s3://"+srv.Bucket+"/prod/bundles/") {
		t.Errorf("the log does not say where the bundles are:\n%s", logBuf.String())
	}

	// A bundle goes to the bucket under the prefix; the runner's path is a
	// local copy.
	bundle := []byte("ciphertext of a bundle")
	if _, err := s.Put(ctx, "app1", bytes.NewReader(bundle), 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(srv.Dir, srv.Bucket, "prod", "bundles", "app1")); err != nil {
		t.Errorf("the bundle is not in the bucket under the prefix: %v", err)
	}
	p, err := s.(blob.Local).LocalPath("app1")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, bundle) || !strings.HasPrefix(p, filepath.Join(data, "bundle-cache")) {
		t.Errorf("LocalPath = %s holding %q", p, got)
	}
	if _, ok := s.(blob.Presigner); !ok {
		t.Error("the S3 store does not presign")
	}
}
