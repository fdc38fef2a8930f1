// Package nodepod is mse-fetch, the helper containers of a node's pod on
// Kubernetes: the init container fetches the app's encrypted bundle from
// the backend with the pod's credential and copies mse-node into the pod;
// the qe sidecar (sim nodes) relays the node's quote requests to the
// backend. It uses only the standard library (it runs beside the trusted
// node).
package nodepod

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Files of the credentials directory (the runner's Secret).
const (
	TokenFile  = "token"
	URLFile    = "bundle-url"
	SHA256File = "bundle-sha256" // optional: the expected SHA-256, hex
)

// SHA256Header is the bundle's SHA-256 as the backend states it
// (api.BundleSHA256Header).
const SHA256Header = "Mse-Bundle-Sha256"

// maxCredentialFile bounds each file of the credentials directory.
const maxCredentialFile = 4 << 10

// Config is what one fetch does.
type Config struct {
	Credentials string // directory with TokenFile, URLFile (and SHA256File)
	BundleOut   string
	NodeIn      string // the image's mse-node
	NodeOut     string
	MaxSize     int64         // largest bundle accepted
	Timeout     time.Duration // for the whole fetch, retries included
	Client      *http.Client  // default: one with no redirects
	Logger      *slog.Logger
}

// Main runs mse-fetch with its command-line arguments (`mse-fetch
// qe-proxy …` runs the qe sidecar); it returns the exit code.
func Main(args []string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "qe-proxy" {
		return qeMain(args[1:], stderr)
	}
	fs := flag.NewFlagSet("mse-fetch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c Config
	fs.StringVar(&c.Credentials, "credentials", "/run/mse/fetch", "directory with the pod's credential: token, bundle-url (and bundle-sha256)")
	fs.StringVar(&c.BundleOut, "bundle-out", "", "where to write the encrypted bundle")
	fs.StringVar(&c.NodeIn, "node-in", "/mse-node", "the mse-node to copy")
	fs.StringVar(&c.NodeOut, "node-out", "", "where to copy mse-node")
	fs.Int64Var(&c.MaxSize, "max-size", 2<<30, "largest bundle accepted (bytes)")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Minute, "give up after this long, retries included")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if c.BundleOut == "" || c.NodeOut == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "mse-fetch: --bundle-out and --node-out are required, and nothing else")
		return 2
	}
	c.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	if err := Run(ctx, c); err != nil {
		fmt.Fprintln(stderr, "mse-fetch:", err)
		return 1
	}
	return 0
}

// Run fetches the bundle and copies mse-node; ctx bounds it.
func Run(ctx context.Context, c Config) error {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxSize <= 0 {
		return errors.New("the bundle size bound must be positive")
	}
	token, u, err := readEndpoint(c.Credentials, URLFile)
	if err != nil {
		return err
	}
	want, err := readCredential(c.Credentials, SHA256File)
	if errors.Is(err, os.ErrNotExist) {
		want = ""
	} else if err != nil {
		return err
	} else if !isSHA256(want) {
		return fmt.Errorf("%s: not a hex SHA-256", filepath.Join(c.Credentials, SHA256File))
	}
	client := c.Client
	if client == nil {
		client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if err := fetch(ctx, client, u.String(), token, want, c); err != nil {
		return err
	}
	node, err := copyNode(c.NodeIn, c.NodeOut)
	if err != nil {
		return err
	}
	c.Logger.Info("mse-node copied", "to", c.NodeOut, "sha256", node)
	return nil
}

// readEndpoint reads the pod's token and the backend URL in file name of
// the credentials directory dir.
func readEndpoint(dir, name string) (token string, u *url.URL, err error) {
	if token, err = readCredential(dir, TokenFile); err != nil {
		return "", nil, err
	}
	raw, err := readCredential(dir, name)
	if err != nil {
		return "", nil, err
	}
	if u = httpURL(raw); u == nil {
		return "", nil, fmt.Errorf("%s: not an http(s) URL without user info", filepath.Join(dir, name))
	}
	return token, u, nil
}

// httpURL is raw as an absolute http(s) URL without user info, or nil.
func httpURL(raw string) *url.URL {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil
	}
	return u
}

func readCredential(dir, name string) (string, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return "", fmt.Errorf("the pod's credential: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCredentialFile+1))
	if err != nil {
		return "", fmt.Errorf("the pod's credential %s: %w", name, err)
	}
	if len(b) > maxCredentialFile {
		return "", fmt.Errorf("the pod's credential %s is larger than %d bytes", name, maxCredentialFile)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("the pod's credential %s is empty", name)
	}
	return s, nil
}

func isSHA256(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size && s == strings.ToLower(s)
}

// permanentError ends the retries.
type permanentError struct{ error }

// fetch GETs the bundle into c.BundleOut (and logs it), retrying what may pass (the
// backend not reachable yet, 503 while the node is being created, 5xx)
// until ctx ends.
func fetch(ctx context.Context, client *http.Client, u, token, want string, c Config) error {
	delay := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fetchOnce(ctx, client, u, token, want, c)
		var pe permanentError
		if err == nil || errors.As(err, &pe) {
			return err
		}
		c.Logger.Warn("bundle fetch failed; retrying", "attempt", attempt, "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return fmt.Errorf("fetch the bundle: gave up after %d attempts: %w", attempt, err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func fetchOnce(ctx context.Context, client *http.Client, u, token, want string, c Config) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return permanentError{err}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("fetch the bundle: %w", err)
	}
	defer func() { resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusTemporaryRedirect {
		return answerError(resp)
	}
	stated := resp.Header.Get(SHA256Header)
	if !isSHA256(stated) {
		return permanentError{fmt.Errorf("fetch the bundle: the backend's answer has no valid %s header", SHA256Header)}
	}
	if want != "" && stated != want {
		return permanentError{fmt.Errorf("fetch the bundle: the backend offers SHA-256 %s, not the expected %s", stated, want)}
	}
	from := "the backend"
	if resp.StatusCode == http.StatusTemporaryRedirect {
		// A presigned URL of the bundle store, for this bundle alone and
		// for a short while: GET it without the pod's credential. It is a
		// credential itself: never in a log or an error.
		loc := httpURL(resp.Header.Get("Location"))
		if loc == nil {
			return permanentError{errors.New("fetch the bundle: the backend redirects to something that is not an http(s) URL")}
		}
		resp.Body.Close()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
		if err != nil {
			return permanentError{errors.New("fetch the bundle: the backend's redirect is not a URL to GET")}
		}
		from = "the bundle store (" + loc.Host + ")"
		stored, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("fetch the bundle from %s: %w", from, redact(err))
		}
		resp = stored // closed by the deferred Close
		if resp.StatusCode != http.StatusOK {
			// Retried: the next attempt asks the backend for a new URL
			// (this one may have expired). Not the body: an S3 error may
			// quote the URL's signature.
			return fmt.Errorf("fetch the bundle: %s answered %s", from, resp.Status)
		}
	}
	size := resp.ContentLength
	if size < 0 {
		return permanentError{fmt.Errorf("fetch the bundle: the answer of %s has no Content-Length", from)}
	}
	if size > c.MaxSize {
		return permanentError{fmt.Errorf("fetch the bundle: it has %d bytes, over the bound of %d (--max-size)", size, c.MaxSize)}
	}
	h := sha256.New()
	n, err := writeAtomic(c.BundleOut, 0o444, io.TeeReader(io.LimitReader(resp.Body, size+1), h), func(n int64) error {
		got := hex.EncodeToString(h.Sum(nil))
		switch {
		case n != size:
			return fmt.Errorf("fetch the bundle: got %d bytes of %d", n, size)
		case got != stated:
			return fmt.Errorf("fetch the bundle: its SHA-256 is %s, not the stated %s", got, stated)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.Logger.Info("bundle fetched", "bytes", n, "sha256", stated, "from", from)
	return nil
}

// answerError is the error of a fetch that the backend answered with
// resp's status other than 200 and 307: worth retrying for 503, 429 and
// 5xx.
func answerError(resp *http.Response) error {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	err := fmt.Errorf("fetch the bundle: the backend answered %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		return err
	}
	return permanentError{err}
}

// redact is err without the URL a *url.Error carries (a presigned URL is a
// credential).
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// writeAtomic writes r to path (a temporary file renamed when check, given
// the byte count, accepts it): a failed write leaves nothing at path.
func writeAtomic(path string, mode os.FileMode, r io.Reader, check func(n int64) error) (int64, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the rename: nothing
	n, err := io.Copy(f, r)
	if err == nil {
		err = check(n)
	}
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return n, fmt.Errorf("write %s: %w", path, err)
	}
	return n, nil
}

// copyNode copies the image's mse-node into the pod, executable, and
// returns its SHA-256 (hex), which the logs show beside --node-measurement.
func copyNode(from, to string) (string, error) {
	f, err := os.Open(from)
	if err != nil {
		return "", fmt.Errorf("copy mse-node: %w (is --node-image the node image?)", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := writeAtomic(to, 0o555, io.TeeReader(f, h), func(int64) error { return nil }); err != nil {
		return "", fmt.Errorf("copy mse-node: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
