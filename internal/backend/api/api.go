// Package api is the backend's JSON HTTP API (docs/api.md): bearer-token
// authentication, then thin handlers over package service.
package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mse-in-go/mse/internal/backend/service"
	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/config"
)

// Config configures the API handler.
type Config struct {
	Service  *service.Service
	Logger   *slog.Logger
	Gatherer prometheus.Gatherer
	// SimRootPEM is served at /v1/sim/root when the platform is simulated.
	SimRootPEM []byte
	// BodyGrace and MinBodyRate bound how slowly a request body may come
	// (defaults DefaultBodyGrace, DefaultMinBodyRate; see bodyDeadline).
	BodyGrace   time.Duration
	MinBodyRate int
}

type api struct {
	Config
	requests *prometheus.CounterVec
}

// maxConfigPart bounds the JSON configuration part of an upload.
const maxConfigPart = 1 << 20

// New returns the API handler.
func New(cfg Config, reg prometheus.Registerer) (http.Handler, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &api{Config: cfg}
	a.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mse_api_requests_total", Help: "API requests by route and status code."}, []string{"route", "code"})
	if reg != nil {
		if err := reg.Register(a.requests); err != nil {
			return nil, err
		}
	}
	mux := http.NewServeMux()
	route := func(pattern string, h func(http.ResponseWriter, *http.Request, *store.User)) {
		mux.Handle(pattern, a.counted(pattern, a.bodyDeadline(a.auth(h))))
	}
	route("GET /v1/me", a.me)
	route("GET /v1/hardware", a.hardware)
	route("GET /v1/runtimes", a.runtimes)
	route("GET /v1/runtimes/{name}/image", a.runtimeImage)
	route("GET /v1/projects", a.listProjects)
	route("POST /v1/projects", a.createProject)
	route("POST /v1/users", a.createUser)
	route("POST /v1/tokens", a.createToken)
	route("GET /v1/tokens", a.listTokens)
	route("DELETE /v1/tokens/{id}", a.revokeToken)
	route("POST /v1/apps", a.createApp)
	route("GET /v1/apps", a.listApps)
	route("GET /v1/apps/{id}", a.getApp)
	route("POST /v1/apps/{id}/stop", a.stopApp)
	route("GET /v1/apps/{id}/logs", a.logs)
	mux.Handle("GET /v1/nodes/{app_id}/bundle", a.counted("GET /v1/nodes/{app_id}/bundle", http.HandlerFunc(a.nodeBundle)))
	mux.Handle("POST /v1/nodes/{app_id}/quote", a.counted("POST /v1/nodes/{app_id}/quote", a.bodyDeadline(http.HandlerFunc(a.nodeQuote))))
	mux.Handle("GET /v1/platform", a.counted("GET /v1/platform", http.HandlerFunc(a.platform)))
	mux.Handle("GET /v1/sim/root", a.counted("GET /v1/sim/root", http.HandlerFunc(a.simRoot)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	if cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux, nil
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) { s.code = code; s.ResponseWriter.WriteHeader(code) }

// Unwrap lets http.ResponseController reach the connection (deadlines).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (a *api) counted(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: 200}
		h.ServeHTTP(rec, r)
		a.requests.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
	})
}

func (a *api) auth(h func(http.ResponseWriter, *http.Request, *store.User)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := bearerToken(w, r)
		if !ok {
			return
		}
		u, err := a.Service.Authenticate(r.Context(), tok)
		if err != nil {
			a.fail(w, err)
			return
		}
		h(w, r, u)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, client.Error{Error: msg})
}

func (a *api) me(w http.ResponseWriter, r *http.Request, u *store.User) {
	writeJSON(w, 200, client.User{ID: u.ID, Name: u.Name, Admin: u.Admin})
}

func (a *api) platform(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, a.Service.Platform())
}

func (a *api) simRoot(w http.ResponseWriter, r *http.Request) {
	if len(a.SimRootPEM) == 0 {
		writeErr(w, 404, "this platform is not simulated")
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(a.SimRootPEM)
}

func (a *api) hardware(w http.ResponseWriter, r *http.Request, u *store.User) {
	writeJSON(w, 200, a.Service.Hardware())
}

func (a *api) runtimes(w http.ResponseWriter, r *http.Request, u *store.User) {
	writeJSON(w, 200, a.Service.Runtimes())
}

// runtimeImage streams a runtime's image as an OCI layout tar
// (docs/api.md), for `mse cloud localtest`.
func (a *api) runtimeImage(w http.ResponseWriter, r *http.Request, u *store.User) {
	e, err := a.Service.RuntimeImage(r.PathValue("name"))
	if err != nil {
		a.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Mse-Runtime-Digest", e.Digest)
	if err := a.Service.ExportRuntime(r.Context(), e, w); err != nil {
		// The status is sent; a broken stream fails the client's digest check.
		a.Logger.Warn("runtime image export failed", "runtime", e.Name, "err", err)
	}
}

func (a *api) listProjects(w http.ResponseWriter, r *http.Request, u *store.User) {
	ps, err := a.Service.ListProjects(r.Context(), u)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := make([]client.Project, 0, len(ps))
	for _, p := range ps {
		out = append(out, client.Project{ID: p.ID, Name: p.Name, CreatedAt: p.CreatedAt})
	}
	writeJSON(w, 200, out)
}

func decodeBody(r *http.Request, v any) error {
	return decodeOne(r.Body, maxConfigPart, "JSON body", v)
}

func (a *api) createProject(w http.ResponseWriter, r *http.Request, u *store.User) {
	var req struct {
		Name string `json:"name"`
	}
	if err := decodeBody(r, &req); err != nil {
		a.fail(w, err)
		return
	}
	p, err := a.Service.CreateProject(r.Context(), u, req.Name)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 201, client.Project{ID: p.ID, Name: p.Name, CreatedAt: p.CreatedAt})
}

func (a *api) createUser(w http.ResponseWriter, r *http.Request, u *store.User) {
	var req struct {
		Name  string `json:"name"`
		Admin bool   `json:"admin"`
	}
	if err := decodeBody(r, &req); err != nil {
		a.fail(w, err)
		return
	}
	nu, tok, err := a.Service.CreateUser(r.Context(), u, req.Name, req.Admin)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 201, client.CreateUserResponse{User: client.User{ID: nu.ID, Name: nu.Name, Admin: nu.Admin}, Token: tok})
}

func (a *api) createToken(w http.ResponseWriter, r *http.Request, u *store.User) {
	var req struct {
		Name string `json:"name"`
	}
	if err := decodeBody(r, &req); err != nil {
		a.fail(w, err)
		return
	}
	tok, err := a.Service.CreateToken(r.Context(), u, req.Name)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 201, map[string]string{"token": tok})
}

func (a *api) listTokens(w http.ResponseWriter, r *http.Request, u *store.User) {
	ts, err := a.Service.Store().ListTokens(r.Context(), u.ID)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := make([]client.Token, 0, len(ts))
	for _, t := range ts {
		out = append(out, client.Token{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt, RevokedAt: t.RevokedAt})
	}
	writeJSON(w, 200, out)
}

func (a *api) revokeToken(w http.ResponseWriter, r *http.Request, u *store.User) {
	if err := a.Service.RevokeToken(r.Context(), u, r.PathValue("id")); err != nil {
		a.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// createApp reads a multipart body: part "config" (JSON CreateAppRequest)
// first, then part "bundle", streamed to the blob store.
func (a *api) createApp(w http.ResponseWriter, r *http.Request, u *store.User) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		writeErr(w, 400, "POST /v1/apps takes multipart/form-data with a \"config\" part then a \"bundle\" part")
		return
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	part, err := mr.NextPart()
	if err != nil || part.FormName() != "config" {
		writeErr(w, 400, "the first part must be \"config\" (JSON)")
		return
	}
	var req client.CreateAppRequest
	if err := decodeOne(part, maxConfigPart, "config JSON", &req); err != nil {
		a.fail(w, err)
		return
	}
	part, err = mr.NextPart()
	if err != nil || part.FormName() != "bundle" {
		writeErr(w, 400, "the second part must be \"bundle\" (the encrypted bundle)")
		return
	}
	app, err := a.Service.CreateApp(r.Context(), u, req, part)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 201, a.view(r.Context(), app))
}

func (a *api) listApps(w http.ResponseWriter, r *http.Request, u *store.User) {
	q := r.URL.Query()
	all := q.Get("all") == "1" || q.Get("all") == "true"
	lq := service.ListQuery{Name: q.Get("name"), Status: q.Get("status"), Project: q.Get("project"), All: all, Cursor: q.Get("cursor")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > service.MaxPageSize {
			writeErr(w, 400, fmt.Sprintf("limit must be a number from 1 to %d", service.MaxPageSize))
			return
		}
		lq.Limit = n
	}
	apps, next, err := a.Service.ListAppsPage(r.Context(), u, lq)
	if err != nil {
		a.fail(w, err)
		return
	}
	if next != "" {
		w.Header().Set(client.HeaderNextCursor, next)
	}
	// The caller's apps are in the caller's projects: name them in one query.
	projects := map[string]string{}
	if ps, err := a.Service.ListProjects(r.Context(), u); err == nil {
		for _, p := range ps {
			projects[p.ID] = p.Name
		}
	}
	out := make([]client.App, 0, len(apps))
	for i := range apps {
		out = append(out, a.viewIn(r.Context(), &apps[i], projects[apps[i].ProjectID]))
	}
	writeJSON(w, 200, out)
}

func (a *api) getApp(w http.ResponseWriter, r *http.Request, u *store.User) {
	app, err := a.Service.App(r.Context(), u, r.PathValue("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 200, a.view(r.Context(), app))
}

func (a *api) stopApp(w http.ResponseWriter, r *http.Request, u *store.User) {
	app, err := a.Service.StopApp(r.Context(), u, r.PathValue("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 200, a.view(r.Context(), app))
}

func (a *api) logs(w http.ResponseWriter, r *http.Request, u *store.User) {
	q := r.URL.Query()
	tail := int64(64 << 10)
	if v := q.Get("tail_kib"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > 1<<20 {
			writeErr(w, 400, "tail_kib must be a number of KiB from 0 to 1048576")
			return
		}
		tail = n << 10
	}
	follow := q.Get("follow") == "1" || q.Get("follow") == "true"
	rc, err := a.Service.Logs(r.Context(), u, r.PathValue("id"), tail, follow)
	if err != nil {
		a.fail(w, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(200)
	fl, _ := w.(http.Flusher)
	buf := make([]byte, 32<<10)
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

func (a *api) view(ctx context.Context, app *store.App) client.App {
	project := ""
	if p, err := a.Service.Store().GetProject(ctx, app.ProjectID); err == nil {
		project = p.Name
	}
	return a.viewIn(ctx, app, project)
}

func (a *api) viewIn(ctx context.Context, app *store.App, project string) client.App {
	var spec config.Spec
	_ = json.Unmarshal(app.Spec, &spec)
	v := client.App{
		ID: app.ID, Name: app.Name, Project: project, Status: string(app.Status), Hardware: app.Hardware,
		Domains: app.Domains, URL: a.Service.AppURL(app), RouterAddr: a.Service.RouterAddr(), CodeDigest: app.CodeDigest,
		BundleSize: app.BundleSize, TLSMode: spec.TLSMode, Error: app.Error, CreatedAt: app.CreatedAt, UpdatedAt: app.UpdatedAt,
		ExpiresAt: app.ExpiresAt, StoppedAt: app.StoppedAt, Spec: spec,
	}
	ns := a.Service.NodeState(ctx, app)
	v.Fingerprint, v.TLS = ns.Fingerprint, ns.TLS
	return v
}
