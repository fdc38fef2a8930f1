package client

import (
	"github.com/mse-in-go/mse/internal/runtimes"

	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to a backend's API.
type Client struct {
	BaseURL string
	Token   string
	HTTP    *http.Client
}

// New returns a client for the API at baseURL.
func New(baseURL, token string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: token, HTTP: &http.Client{}}
}

// APIError is an error answer of the API.
type APIError struct {
	Status int
	Msg    string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("backend: %s (HTTP %d)", e.Msg, e.Status)
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, contentType string, out any) error {
	resp, err := c.send(ctx, method, path, body, contentType)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	return decodeAnswer(resp, method, path, out)
}

// decodeAnswer decodes a JSON answer, at most 64 MiB, into out.
func decodeAnswer(resp *http.Response, method, path string, out any) error {
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out); err != nil {
		return fmt.Errorf("backend: unreadable answer to %s %s: %w", method, path, err)
	}
	if err := validateAnswer(out); err != nil {
		return fmt.Errorf("backend: %w to %s %s: %v; the backend is broken or not an MSE backend (check `mse cloud login`)", errInvalidAnswer, method, path, err)
	}
	return nil
}

func (c *Client) send(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the backend at %s: %w (is it running? check `mse cloud login`)", c.BaseURL, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var e Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
			if e.Error == "" {
				e.Error = resp.Status
			}
		}
		return nil, &APIError{Status: resp.StatusCode, Msg: e.Error}
	}
	return resp, nil
}

func jsonBody(v any) (io.Reader, error) {
	b, err := json.Marshal(v)
	return bytes.NewReader(b), err
}

// Me returns the caller.
func (c *Client) Me(ctx context.Context) (*User, error) {
	var u User
	return &u, c.do(ctx, "GET", "/v1/me", nil, "", &u)
}

// Platform describes the operator's platform (no token needed).
func (c *Client) Platform(ctx context.Context) (*Platform, error) {
	var p Platform
	return &p, c.do(ctx, "GET", "/v1/platform", nil, "", &p)
}

// SimRoot returns the simulated platform's root certificate (PEM).
func (c *Client) SimRoot(ctx context.Context) ([]byte, error) {
	resp, err := c.send(ctx, "GET", "/v1/sim/root", nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, 64<<10))
}

// Hardware lists the hardware catalog.
func (c *Client) Hardware(ctx context.Context) ([]Hardware, error) {
	var h []Hardware
	return h, c.do(ctx, "GET", "/v1/hardware", nil, "", &h)
}

// Runtimes lists the operator's runtime catalog.
func (c *Client) Runtimes(ctx context.Context) ([]runtimes.Entry, error) {
	var r []runtimes.Entry
	return r, c.do(ctx, "GET", "/v1/runtimes", nil, "", &r)
}

// RuntimeImage downloads a runtime's image as an OCI layout tar stream;
// the caller imports it and checks its digest.
func (c *Client) RuntimeImage(ctx context.Context, name string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, "GET", "/v1/runtimes/"+url.PathEscape(name)+"/image", nil, "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Projects lists the caller's projects.
func (c *Client) Projects(ctx context.Context) ([]Project, error) {
	var p []Project
	return p, c.do(ctx, "GET", "/v1/projects", nil, "", &p)
}

// CreateProject creates a project.
func (c *Client) CreateProject(ctx context.Context, name string) (*Project, error) {
	body, err := jsonBody(map[string]string{"name": name})
	if err != nil {
		return nil, err
	}
	var p Project
	return &p, c.do(ctx, "POST", "/v1/projects", body, "application/json", &p)
}

// CreateUser creates a user (admin only) and returns its first token.
func (c *Client) CreateUser(ctx context.Context, name string, admin bool) (*CreateUserResponse, error) {
	body, err := jsonBody(map[string]any{"name": name, "admin": admin})
	if err != nil {
		return nil, err
	}
	var r CreateUserResponse
	return &r, c.do(ctx, "POST", "/v1/users", body, "application/json", &r)
}

// Tokens lists the caller's tokens.
func (c *Client) Tokens(ctx context.Context) ([]Token, error) {
	var t []Token
	return t, c.do(ctx, "GET", "/v1/tokens", nil, "", &t)
}

// RevokeToken revokes a token by id.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/v1/tokens/"+url.PathEscape(id), nil, "", nil)
}

// CreateApp uploads the configuration and the encrypted bundle, streaming
// it; progress, if set, is called with the bundle bytes sent so far.
func (c *Client) CreateApp(ctx context.Context, req CreateAppRequest, bundle io.Reader, progress func(int64)) (*App, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := func() error {
			h := textproto.MIMEHeader{}
			h.Set("Content-Disposition", `form-data; name="config"`)
			h.Set("Content-Type", "application/json")
			w, err := mw.CreatePart(h)
			if err != nil {
				return err
			}
			if err := json.NewEncoder(w).Encode(req); err != nil {
				return err
			}
			h = textproto.MIMEHeader{}
			h.Set("Content-Disposition", `form-data; name="bundle"; filename="bundle.mse"`)
			h.Set("Content-Type", "application/octet-stream")
			if w, err = mw.CreatePart(h); err != nil {
				return err
			}
			var sent int64
			buf := make([]byte, 256<<10)
			for {
				n, rerr := bundle.Read(buf)
				if n > 0 {
					if _, err := w.Write(buf[:n]); err != nil {
						return err
					}
					sent += int64(n)
					if progress != nil {
						progress(sent)
					}
				}
				if rerr == io.EOF {
					break
				}
				if rerr != nil {
					return rerr
				}
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	var app App
	err := c.do(ctx, "POST", "/v1/apps", pr, mw.FormDataContentType(), &app)
	pr.Close()
	if err != nil {
		return nil, err
	}
	return &app, nil
}

// App returns one app.
func (c *Client) App(ctx context.Context, id string) (*App, error) {
	var a App
	return &a, c.do(ctx, "GET", "/v1/apps/"+url.PathEscape(id), nil, "", &a)
}

// ListOptions filter Apps.
type ListOptions struct {
	Name, Status, Project string
	All                   bool
}

// Apps lists the caller's apps.
func (c *Client) Apps(ctx context.Context, o ListOptions) ([]App, error) {
	q := url.Values{}
	if o.Name != "" {
		q.Set("name", o.Name)
	}
	if o.Status != "" {
		q.Set("status", o.Status)
	}
	if o.Project != "" {
		q.Set("project", o.Project)
	}
	if o.All {
		q.Set("all", "1")
	}
	// The backend answers a page at a time; follow the cursors to the end.
	var all []App
	seen := map[string]bool{}
	for {
		path := "/v1/apps?" + q.Encode()
		resp, err := c.send(ctx, "GET", path, nil, "")
		if err != nil {
			return nil, err
		}
		var page []App
		err = decodeAnswer(resp, "GET", path, &page)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		next := resp.Header.Get(HeaderNextCursor)
		if next == "" {
			return all, nil
		}
		if seen[next] || len(page) == 0 || len(seen) >= maxPages {
			return nil, fmt.Errorf("backend: the pages of GET /v1/apps do not end (cursor %q after %d pages); report this to the operator", next, len(seen)+1)
		}
		seen[next] = true
		q.Set("cursor", next)
	}
}

// maxPages bounds the pages Apps follows.
const maxPages = 10000

// Stop stops an app.
func (c *Client) Stop(ctx context.Context, id string) (*App, error) {
	var a App
	return &a, c.do(ctx, "POST", "/v1/apps/"+url.PathEscape(id)+"/stop", nil, "", &a)
}

// Logs returns the app's log: the last tailKiB KiB, then, with follow, what
// comes next until the app stops or ctx ends.
func (c *Client) Logs(ctx context.Context, id string, tailKiB int, follow bool) (io.ReadCloser, error) {
	q := url.Values{"tail_kib": {strconv.Itoa(tailKiB)}}
	if follow {
		q.Set("follow", "1")
	}
	resp, err := c.send(ctx, "GET", "/v1/apps/"+url.PathEscape(id)+"/logs?"+q.Encode(), nil, "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// WaitStatus polls an app until its status is one of want, it fails, or
// ctx ends.
func (c *Client) WaitStatus(ctx context.Context, id string, interval time.Duration, want ...string) (*App, error) {
	for {
		a, err := c.App(ctx, id)
		if err != nil {
			return nil, err
		}
		for _, w := range want {
			if a.Status == w {
				return a, nil
			}
		}
		if a.Status == "on_error" || a.Status == "stopped" {
			return a, fmt.Errorf("app %s is %s: %s", id, a.Status, a.Error)
		}
		select {
		case <-ctx.Done():
			return a, fmt.Errorf("app %s is still %s: %w", id, a.Status, ctx.Err())
		case <-time.After(interval):
		}
	}
}
