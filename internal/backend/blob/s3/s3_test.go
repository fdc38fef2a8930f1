package s3_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/mse-in-go/mse/internal/backend/blob"
	"github.com/mse-in-go/mse/internal/backend/blob/blobtest"
	"github.com/mse-in-go/mse/internal/backend/blob/s3"
	"github.com/mse-in-go/mse/internal/testenv"
)

var ctx = context.Background()

// big is more than two parts of s3.MinPartSize.
const big = 2*s3.MinPartSize + 1<<20

func config(srv *testenv.S3Server, prefix string) s3.Config {
	return s3.Config{
		Endpoint: srv.Endpoint, Insecure: true, Region: srv.Region, Bucket: srv.Bucket, Prefix: prefix,
		Creds: srv.Creds(), PartSize: s3.MinPartSize, SweepAge: time.Nanosecond, MaxRetries: 2,
	}
}

func newStore(t testing.TB, srv *testenv.S3Server, prefix string) *s3.Store {
	t.Helper()
	s, err := s3.New(ctx, config(srv, prefix))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// incomplete lists the multipart uploads under way in the bucket, whoever
// started them.
func incomplete(t testing.TB, srv *testenv.S3Server) []string {
	t.Helper()
	var out []string
	for u := range srv.Client(t).ListIncompleteUploads(ctx, srv.Bucket, "", true) {
		if u.Err != nil {
			t.Fatalf("list incomplete uploads: %v", u.Err)
		}
		out = append(out, u.Key+" "+u.UploadID)
	}
	return out
}

// TestConformance: the blob store suite against a real S3 server, one
// prefix per subtest.
func TestConformance(t *testing.T) {
	srv := testenv.S3(t)
	n := 0
	blobtest.Run(t, blobtest.Suite{
		New: func(t *testing.T) blob.Store {
			n++
			return newStore(t, srv, "c"+string(rune('a'+n))+"/")
		},
		Partial: func(t *testing.T, _ blob.Store) []string { return incomplete(t, srv) },
		Big:     big,
	})
}

// TestMismatchLeavesNothingOnDisk: a PutVerified whose content does not
// match is not on the server's disk under its key, nor anywhere as parts.
func TestMismatchLeavesNothingOnDisk(t *testing.T) {
	srv := testenv.S3(t)
	s := newStore(t, srv, "bundles/")
	for _, n := range []int{1000, big} {
		data := blobtest.Content(n, 1)
		want := sha256.Sum256([]byte("what the owner declared"))
		_, err := s.PutVerified(ctx, "app1", bytes.NewReader(data), int64(n), want)
		if !errors.Is(err, blob.ErrDigestMismatch) {
			t.Fatalf("PutVerified of %d bytes: %v", n, err)
		}
		if !strings.Contains(err.Error(), "send it again") {
			t.Errorf("the error does not say what to do: %v", err)
		}
		if _, err := os.Stat(filepath.Join(srv.Dir, srv.Bucket, "bundles", "app1")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the server's disk has the object: %v", err)
		}
		if u := incomplete(t, srv); len(u) != 0 {
			t.Errorf("incomplete uploads left: %v", u)
		}
		blobtest.Absent(t, s, "app1")
	}
}

// TestServerKilledMidUpload: the S3 server dies (SIGKILL) while a bundle is
// streaming in. Put fails saying the server is unreachable and what to do;
// once the server is back nothing is under the key, and the incomplete
// upload it could not abort is swept.
func TestServerKilledMidUpload(t *testing.T) {
	srv := testenv.S3(t)
	s := newStore(t, srv, "")
	data := blobtest.Content(4*s3.MinPartSize, 2)
	pr, pw := io.Pipe()
	var sent atomic.Int64
	go func() {
		for off := 0; off < len(data); off += 64 << 10 {
			n, err := pw.Write(data[off:min(off+64<<10, len(data))])
			sent.Add(int64(n))
			if err != nil {
				return
			}
			if off == 2*s3.MinPartSize {
				// Two parts read: the first is uploaded or on its way.
				srv.Kill(t)
			}
		}
		pw.Close()
	}()
	_, err := s.Put(ctx, "app2", pr, int64(len(data)))
	pr.CloseWithError(errors.New("test: the store stopped reading"))
	if err == nil {
		t.Fatal("Put succeeded with the server killed")
	}
	for _, want := range []string{"unreachable", "check that it runs", srv.Endpoint} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	t.Logf("Put with the server killed: %v", err)
	if strings.Contains(err.Error(), srv.SecretKey) {
		t.Errorf("the error shows the secret key: %v", err)
	}
	srv.Start(t)
	blobtest.Absent(t, s, "app2")
	if _, err := os.Stat(filepath.Join(srv.Dir, srv.Bucket, "app2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the server's disk has the object: %v", err)
	}
	// Nothing visible; what the server kept of the upload is swept.
	if u := incomplete(t, srv); len(u) != 1 {
		t.Errorf("incomplete uploads once the server is back: %v, want the one that could not be aborted", u)
	}
	if n, _, err := s.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}
	if u := incomplete(t, srv); len(u) != 0 {
		t.Errorf("incomplete uploads after the sweep: %v", u)
	}
	// The store works again.
	if _, err := s.Put(ctx, "app2", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put once the server is back: %v", err)
	}
	blobtest.Has(t, s, "app2", data)
}

// TestSweep: leftovers of a crashed backend (incomplete uploads no upload
// of this store owns) are aborted once SweepAge old, and counted; younger
// ones (maybe another replica's upload under way) are not.
func TestSweep(t *testing.T) {
	srv := testenv.S3(t)
	core := minio.Core{Client: srv.Client(t)}
	var ids []string
	for _, key := range []string{"bundles/crashed1", "bundles/crashed2", "elsewhere/other"} {
		id, err := core.NewMultipartUpload(ctx, srv.Bucket, key, minio.PutObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		part := blobtest.Content(1000, 3)
		if _, err := core.PutObjectPart(ctx, srv.Bucket, key, id, 1, bytes.NewReader(part), int64(len(part)), minio.PutObjectPartOptions{}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	cfg := config(srv, "bundles/")
	cfg.SweepAge = time.Hour
	young, err := s3.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n, _, err := young.Sweep(ctx); err != nil || n != 0 {
		t.Errorf("Sweep with SweepAge 1h = %d, %v; want 0: the uploads began just now", n, err)
	}
	s := newStore(t, srv, "bundles/")
	n, size, err := s.Sweep(ctx)
	if err != nil || n != 2 || size != 2000 {
		t.Errorf("Sweep = %d uploads, %d bytes, %v; want 2, 2000", n, size, err)
	}
	// Outside the prefix: not this store's.
	if u := incomplete(t, srv); len(u) != 1 || !strings.HasPrefix(u[0], "elsewhere/other ") {
		t.Errorf("after the sweep: %v", u)
	}
}

// TestPresignGet: the URL fetches exactly its object, only with GET, and
// stops working when it expires.
func TestPresignGet(t *testing.T) {
	srv := testenv.S3(t)
	s := newStore(t, srv, "bundles/")
	a, b := blobtest.Content(5000, 4), blobtest.Content(6000, 5)
	for k, v := range map[string][]byte{"app-a": a, "app-b": b} {
		if _, err := s.Put(ctx, k, bytes.NewReader(v), 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	u, err := s.PresignGet(ctx, "app-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	do := func(method string, u *url.URL) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, u.String(), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	if code, body := do("GET", u); code != 200 || !bytes.Equal(body, a) {
		t.Fatalf("GET the presigned URL: %d, %d bytes", code, len(body))
	}
	other := *u
	other.Path = strings.Replace(u.Path, "app-a", "app-b", 1)
	if code, body := do("GET", &other); code != http.StatusForbidden || bytes.Equal(body, b) {
		t.Errorf("the URL with another object's name: %d, want 403", code)
	}
	list := *u
	list.Path = "/" + srv.Bucket + "/"
	if code, _ := do("GET", &list); code != http.StatusForbidden {
		t.Errorf("the URL's signature on the bucket listing: %d, want 403", code)
	}
	if code, _ := do("DELETE", u); code != http.StatusForbidden {
		t.Errorf("DELETE with the URL: %d, want 403", code)
	}
	if code, _ := do("PUT", u); code != http.StatusForbidden {
		t.Errorf("PUT with the URL: %d, want 403", code)
	}
	longer := *u
	q := longer.Query()
	q.Set("X-Amz-Expires", "604800")
	longer.RawQuery = q.Encode()
	if code, _ := do("GET", &longer); code != http.StatusForbidden {
		t.Errorf("the URL with a longer expiry: %d, want 403", code)
	}
	blobtest.Has(t, s, "app-a", a)
	blobtest.Has(t, s, "app-b", b)

	short, err := s.PresignGet(ctx, "app-a", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := do("GET", short); code != 200 {
		t.Fatalf("GET the 1s URL at once: %d", code)
	}
	time.Sleep(2500 * time.Millisecond)
	if code, body := do("GET", short); code != http.StatusForbidden || bytes.Equal(body, a) {
		t.Errorf("GET the 1s URL after 2.5s: %d, want 403", code)
	}

	if _, err := s.PresignGet(ctx, "missing", time.Minute); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("PresignGet of a missing blob: %v, want ErrNotFound", err)
	}
	for _, ttl := range []time.Duration{0, time.Millisecond, blob.MaxPresignTTL + time.Second} {
		if _, err := s.PresignGet(ctx, "app-a", ttl); err == nil {
			t.Errorf("PresignGet with ttl %v was accepted", ttl)
		}
	}
	if _, err := s.PresignGet(ctx, "../app-a", time.Minute); err == nil {
		t.Error("PresignGet of an invalid key was accepted")
	}
}

// TestNew: a missing bucket and wrong credentials fail at start, saying
// what to do, and without the secret.
func TestNew(t *testing.T) {
	srv := testenv.S3(t)
	cfg := config(srv, "")
	cfg.Bucket = "no-such-bucket"
	if _, err := s3.New(ctx, cfg); err == nil || !strings.Contains(err.Error(), "create it") {
		t.Errorf("a missing bucket: %v", err)
	}
	cfg = config(srv, "")
	cfg.Creds = (&testenv.S3Server{AccessKey: srv.AccessKey, SecretKey: "wrong-secret-0123456789"}).Creds()
	_, err := s3.New(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "refused the credentials") || strings.Contains(err.Error(), "wrong-secret") {
		t.Errorf("wrong credentials: %v", err)
	}
	for _, p := range []string{"no-slash", "/abs/", "a//b/", "a/../b/", "sp ace/"} {
		cfg = config(srv, p)
		if _, err := s3.New(ctx, cfg); err == nil {
			t.Errorf("prefix %q was accepted", p)
		}
	}
}

// faultProxy forwards to the real server, but answers the requests that
// fault matches with fault's answer: for what a real server cannot be made
// to do on demand (a full disk, a failure at one precise step).
func faultProxy(t *testing.T, srv *testenv.S3Server, fault func(w http.ResponseWriter, r *http.Request) bool) string {
	target, _ := url.Parse("http://" + srv.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	h := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fault(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(h.Close)
	return strings.TrimPrefix(h.URL, "http://")
}

func s3Error(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>`+code+`</Code><Message>injected</Message></Error>`)
}

// TestFaults: failures at each step of a multipart upload leave nothing
// under the key and no incomplete upload; a full server is a
// *blob.FullError.
func TestFaults(t *testing.T) {
	srv := testenv.S3(t)
	data := blobtest.Content(big, 6)
	for _, tc := range []struct {
		name   string
		match  func(r *http.Request) bool
		status int
		code   string
		check  func(t *testing.T, err error)
	}{
		{"storage full on part 2", func(r *http.Request) bool { return r.Method == "PUT" && r.URL.Query().Get("partNumber") == "2" },
			507, "XMinioStorageFull", func(t *testing.T, err error) {
				var full *blob.FullError
				if !errors.As(err, &full) || !errors.Is(err, blob.ErrFull) || !strings.Contains(full.Path, srv.Bucket) {
					t.Errorf("err = %v, want a *blob.FullError naming the bucket", err)
				}
			}},
		{"complete fails", func(r *http.Request) bool { return r.Method == "POST" && r.URL.Query().Has("uploadId") },
			500, "InternalError", func(t *testing.T, err error) {
				if err == nil || !strings.Contains(err.Error(), "retry later") {
					t.Errorf("err = %v", err)
				}
			}},
		{"bucket gone", func(r *http.Request) bool { return r.Method == "PUT" && r.URL.Query().Get("partNumber") == "1" },
			404, "NoSuchBucket", func(t *testing.T, err error) {
				if err == nil || !strings.Contains(err.Error(), "create it again") {
					t.Errorf("err = %v", err)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config(srv, "")
			cfg.Endpoint = faultProxy(t, srv, func(w http.ResponseWriter, r *http.Request) bool {
				if tc.match(r) {
					s3Error(w, tc.status, tc.code)
					return true
				}
				return false
			})
			cfg.MaxRetries = 1
			s, err := s3.New(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Put(ctx, "faulty", bytes.NewReader(data), int64(len(data)))
			tc.check(t, err)
			blobtest.Absent(t, newStore(t, srv, ""), "faulty")
			if u := incomplete(t, srv); len(u) != 0 {
				t.Errorf("incomplete uploads left: %v", u)
			}
		})
	}
}
