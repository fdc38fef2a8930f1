package testenv

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/mse-in-go/mse/internal/apphost"
	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

// VersityGWVersion is the S3 server the tests run: versitygw (Apache-2.0)
// with its posix backend, built from its Go module by
// scripts/build-versitygw.sh into VersityGWBinary.
const VersityGWVersion = "v1.8.0"

// VersityGWBinary is where scripts/build-versitygw.sh puts the server
// ($MSE_VERSITYGW overrides it).
func VersityGWBinary() string {
	if p := os.Getenv("MSE_VERSITYGW"); p != "" {
		return p
	}
	d, err := os.UserCacheDir()
	if err != nil {
		d = filepath.Join(os.TempDir(), "mse-cache")
	}
	return filepath.Join(d, "mse", "versitygw-"+VersityGWVersion, "versitygw")
}

// S3Server is a real S3 server on loopback, with a bucket of its own.
type S3Server struct {
	Endpoint  string // HOST:PORT (127.0.0.1 unless S3On), plain HTTP
	Region    string
	AccessKey string
	SecretKey string
	Bucket    string
	Dir       string // the posix backend's root: Dir/BUCKET/OBJECT

	bin  string
	log  string
	cmd  *exec.Cmd
	done chan error
}

// S3 starts versitygw on loopback with a temporary directory and fresh
// credentials, and creates a bucket. It stops with the test. Without the
// binary the test fails under CI=true and is skipped otherwise.
func S3(t testing.TB) *S3Server {
	t.Helper()
	return S3On(t, "127.0.0.1")
}

// S3On is S3 listening on host (an address of this machine's, e.g. one
// pods reach).
func S3On(t testing.TB, host string) *S3Server {
	t.Helper()
	bin := VersityGWBinary()
	if _, err := os.Stat(bin); err != nil {
		ciskip.Missing(t, "no S3 server at %s: build it with scripts/build-versitygw.sh (2.5–3.5 minutes, once)", bin)
	}
	port, err := apphost.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	s := &S3Server{
		Endpoint: net.JoinHostPort(host, strconv.Itoa(port)), Region: "us-east-1",
		AccessKey: randHex(10), SecretKey: randHex(20), Bucket: "mse-test",
		Dir: filepath.Join(tmp, "root"), bin: bin, log: filepath.Join(tmp, "versitygw.log"),
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Kill(t)
		if t.Failed() {
			if b, err := os.ReadFile(s.log); err == nil {
				t.Logf("versitygw log:\n%s", b)
			}
		}
	})
	s.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Client(t).MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{Region: s.Region}); err != nil {
		t.Fatalf("create the test bucket: %v", err)
	}
	return s
}

// Start (re)starts the server on its address and directory, and waits
// until it accepts connections.
func (s *S3Server) Start(t testing.TB) {
	t.Helper()
	if s.cmd != nil {
		t.Fatal("testenv.S3: the server is already running")
	}
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(s.bin, "--port", s.Endpoint, "--region", s.Region, "--quiet", "posix", s.Dir)
	// The credentials go by environment, not on the command line (ps).
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+s.AccessKey, "ROOT_SECRET_ACCESS_KEY="+s.SecretKey)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	s.cmd, s.done = cmd, make(chan error, 1)
	go func() { s.done <- cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Endpoint, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-s.done:
			s.cmd = nil
			b, _ := os.ReadFile(s.log)
			t.Fatalf("versitygw exited at start: %v\n%s", err, b)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw does not listen on %s after 15s", s.Endpoint)
		}
	}
}

// Kill ends the server at once (SIGKILL), as a crash would; Start brings it
// back with what it stored.
func (s *S3Server) Kill(t testing.TB) {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Errorf("versitygw (pid %d) did not end after SIGKILL", s.cmd.Process.Pid)
	}
	s.cmd = nil
}

// Creds are the server's credentials.
func (s *S3Server) Creds() *credentials.Credentials {
	return credentials.NewStaticV4(s.AccessKey, s.SecretKey, "")
}

// Client is a minio-go client of the server (for checks behind a store's
// back).
func (s *S3Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(s.Endpoint, &minio.Options{Creds: s.Creds(), Region: s.Region, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
