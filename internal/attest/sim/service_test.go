package sim

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
)

// serve runs the quoting service on a unix socket in a temporary directory.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "q.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func unixClient(sock string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
}

func TestIssuerAndService(t *testing.T) {
	a, _ := platforms(t)
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	id := testIdentity()
	sock := serve(t, NewQuotingService(a, id, func() time.Time { return at }))

	iss := NewIssuer(sock)
	if iss.Type() != attest.TypeSim {
		t.Fatalf("Type() = %q", iss.Type())
	}
	rd := testReportData()
	raw, err := iss.Issue(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	got, err := NewVerifier(a.RootCertificate(), func() time.Time { return at }).Verify(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.ReportData != rd || !bytes.Equal(got.Measurement, id.Measurement[:]) || got.TCBStatus != id.TCBStatus {
		t.Fatalf("verified values: %+v", got)
	}
	if got.Details["timestamp"] != strconv.FormatInt(at.Unix(), 10) {
		t.Fatalf("timestamp %q", got.Details["timestamp"])
	}
	// Several requests over the same issuer.
	for i := range 3 {
		rd[0] = byte(i)
		if _, err := iss.Issue(context.Background(), rd); err != nil {
			t.Fatal(err)
		}
	}
}

func TestServiceRequests(t *testing.T) {
	a, _ := platforms(t)
	sock := serve(t, NewQuotingService(a, testIdentity(), nil))
	c := unixClient(sock)
	for _, tc := range []struct {
		method, path string
		n            int
		status       int
	}{
		{"POST", QuotePath, 64, 200},
		{"POST", QuotePath, 63, 400},
		{"POST", QuotePath, 65, 400},
		{"POST", QuotePath, 0, 400},
		{"POST", QuotePath, 1 << 20, 400},
		{"GET", QuotePath, 0, 405},
		{"POST", "/other", 64, 404},
	} {
		req, _ := http.NewRequest(tc.method, "http://x"+tc.path, bytes.NewReader(make([]byte, tc.n)))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s %d bytes: status %d (%s), want %d", tc.method, tc.path, tc.n, resp.StatusCode, body, tc.status)
		}
		if tc.status == 200 {
			if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
				t.Errorf("content type %q", ct)
			}
			if _, err := ParseQuote(body); err != nil {
				t.Error(err)
			}
		}
		if tc.status == 400 && !strings.Contains(string(body), "exactly 64 bytes") {
			t.Errorf("400 body %q", body)
		}
	}
}

func TestIssuerErrors(t *testing.T) {
	a, _ := platforms(t)

	// No service: the issuer waits for one within its context.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := NewIssuer(filepath.Join(t.TempDir(), "none.sock")).Issue(ctx, [64]byte{})
	cancel()
	if err == nil || !strings.Contains(err.Error(), "sim quoting service at") {
		t.Fatalf("no service: %v", err)
	}

	// A service that cannot state its identity.
	bad := testIdentity()
	bad.TCBStatus = "Bogus"
	_, err = NewIssuer(serve(t, NewQuotingService(a, bad, nil))).Issue(context.Background(), [64]byte{})
	if err == nil || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), "Bogus") {
		t.Fatalf("bad identity: %v", err)
	}

	// A service that answers a quote for other report data.
	liar := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, _ := a.Quote(testIdentity(), [64]byte{1}, time.Now())
		w.Write(q)
	})
	_, err = NewIssuer(serve(t, liar)).Issue(context.Background(), [64]byte{2})
	if err == nil || !strings.Contains(err.Error(), "other report data") {
		t.Fatalf("liar: %v", err)
	}

	// A service that answers garbage.
	junk := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(make([]byte, 2*MaxQuoteSize)) })
	_, err = NewIssuer(serve(t, junk)).Issue(context.Background(), [64]byte{})
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("junk: %v", err)
	}

	// A cancelled context.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	_, err = NewIssuer(serve(t, NewQuotingService(a, testIdentity(), nil))).Issue(ctx, [64]byte{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// The quoting service starts after the node asks (the Kubernetes qe
// sidecar beside the node): the issuer waits for its socket.
func TestIssuerWaitsForTheService(t *testing.T) {
	a, _ := platforms(t)
	sock := filepath.Join(t.TempDir(), "late.sock")
	go func() {
		time.Sleep(300 * time.Millisecond)
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Error(err)
			return
		}
		srv := &http.Server{Handler: NewQuotingService(a, testIdentity(), nil), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := NewIssuer(sock).Issue(ctx, [64]byte{9})
	if err != nil {
		t.Fatalf("issue while the service starts: %v", err)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Fatal("answered before the service listened")
	}
	if p, err := ParseQuote(q); err != nil || p.ReportData != [64]byte{9} {
		t.Fatalf("quote: %v", err)
	}
}
