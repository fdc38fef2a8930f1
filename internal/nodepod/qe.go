package nodepod

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// QuoteURLFile is the credentials directory's URL of the backend's quoting
// endpoint (sim nodes only).
const QuoteURLFile = "quote-url"

// Bounds of the relay: a sim quote is at most 8192 bytes (docs/sim.md).
const (
	maxQuote     = 8192
	quoteTimeout = 9 * time.Second // the node's issuer gives up after 10 s
)

// QEConfig is the qe sidecar: the simulated quoting service's unix socket
// in the pod (docs/sim.md "Quoting service protocol"), relayed to the
// backend with the pod's credential.
type QEConfig struct {
	Credentials string
	Listen      string // the unix socket
	Client      *http.Client
	Logger      *slog.Logger
}

// QEHandler answers POST /quote (64 bytes of report data) with the
// backend's sim quote for this pod's node.
func QEHandler(c QEConfig) (http.Handler, error) {
	token, u, err := readEndpoint(c.Credentials, QuoteURLFile)
	if err != nil {
		return nil, err
	}
	client := c.Client
	if client == nil {
		client = &http.Client{Timeout: quoteTimeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/quote", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		rd, err := io.ReadAll(io.LimitReader(r.Body, 65))
		if err != nil || len(rd) != 64 {
			http.Error(w, "the body must be exactly 64 bytes of report data", http.StatusBadRequest)
			return
		}
		q, err := relayQuote(r.Context(), client, u.String(), token, rd)
		if err != nil {
			log.Warn("quote relay failed", "err", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(q)
	})
	return mux, nil
}

func relayQuote(ctx context.Context, client *http.Client, u, token string, rd []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(rd))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask the backend for a quote: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxQuote+1))
	if err != nil {
		return nil, fmt.Errorf("ask the backend for a quote: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ask the backend for a quote: it answered %s: %s", resp.Status, strings.TrimSpace(string(b[:min(len(b), 1024)])))
	}
	if len(b) > maxQuote || len(b) == 0 {
		return nil, fmt.Errorf("ask the backend for a quote: its answer has %d bytes (a quote has 1 to %d)", len(b), maxQuote)
	}
	return b, nil
}

// ServeQE serves the qe sidecar on c.Listen until ctx ends.
func ServeQE(ctx context.Context, c QEConfig) error {
	h, err := QEHandler(c)
	if err != nil {
		return err
	}
	_ = os.Remove(c.Listen) // a socket left by an earlier run of this sidecar
	ln, err := net.Listen("unix", c.Listen)
	if err != nil {
		return fmt.Errorf("quoting service socket: %w", err)
	}
	if err := os.Chmod(c.Listen, 0o600); err != nil { // the node runs as the same user
		ln.Close()
		return fmt.Errorf("quoting service socket: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if c.Logger != nil {
		c.Logger.Info("quoting service relay listening", "socket", c.Listen)
	}
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// qeMain is `mse-fetch qe-proxy`.
func qeMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("mse-fetch qe-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c QEConfig
	fs.StringVar(&c.Credentials, "credentials", "/run/mse/fetch", "directory with the pod's credential: token, quote-url")
	fs.StringVar(&c.Listen, "listen", "", "the unix socket the node's sim issuer asks (--sim-socket)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if c.Listen == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "mse-fetch qe-proxy: --listen is required, and nothing else")
		return 2
	}
	c.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := ServeQE(ctx, c); err != nil {
		fmt.Fprintln(stderr, "mse-fetch qe-proxy:", err)
		return 1
	}
	return 0
}
