package sim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
)

// QuotePath is the quoting service's only endpoint.
const QuotePath = "/quote"

// IssuerTimeout bounds one request of the issuer to the quoting service.
const IssuerTimeout = 10 * time.Second

// NewQuotingService returns the quoting service of a simulated platform for
// one enclave: POST /quote with exactly 64 bytes of report data as the body
// answers 200 with a sim quote (application/octet-stream) stating id. The
// runner, playing the hardware, serves it on a unix socket in the node's
// private directory, so that the attestation key never enters the node.
// now is time.Now when nil.
func NewQuotingService(p *Platform, id Identity, now attest.Clock) http.Handler {
	if now == nil {
		now = time.Now
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+QuotePath, func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 65))
		if err != nil || len(body) != 64 {
			http.Error(w, "the body must be exactly 64 bytes of report data", http.StatusBadRequest)
			return
		}
		var rd [64]byte
		copy(rd[:], body)
		q, err := p.Quote(id, rd, now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(q)
	})
	return mux
}

type issuer struct {
	socket string
	client *http.Client
}

// NewIssuer returns the sim issuer of a node: it asks the quoting service
// listening on the unix socket socketPath for quotes (see NewQuotingService).
func NewIssuer(socketPath string) attest.Issuer {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialWaiting(ctx, socketPath)
		},
		DisableCompression: true,
		MaxIdleConns:       1,
	}
	return &issuer{socket: socketPath, client: &http.Client{Transport: tr, Timeout: IssuerTimeout}}
}

// dialWaiting dials the unix socket path, waiting within ctx while it is
// not there yet or refuses: the quoting service may start beside the node
// (on Kubernetes, the qe sidecar starts with the pod, not before it).
func dialWaiting(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, 500*time.Millisecond) {
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil || !(errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)) {
			return c, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

func (i *issuer) Type() string { return attest.TypeSim }

func (i *issuer) Issue(ctx context.Context, reportData [64]byte) ([]byte, error) {
	// The host is ignored: the transport always dials the socket.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://sim-quoting-service"+QuotePath, bytes.NewReader(reportData[:]))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := i.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("sim quoting service at %s: %w", i.socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxQuoteSize+1))
	if err != nil {
		return nil, fmt.Errorf("sim quoting service at %s: read answer: %w", i.socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(body[:min(len(body), 512)]))
		return nil, fmt.Errorf("sim quoting service at %s answered %s: %s", i.socket, resp.Status, msg)
	}
	q, err := ParseQuote(body)
	if err != nil {
		return nil, fmt.Errorf("sim quoting service at %s answered a bad quote: %w", i.socket, err)
	}
	if q.ReportData != reportData {
		return nil, fmt.Errorf("sim quoting service at %s answered a quote for other report data", i.socket)
	}
	return body, nil
}
