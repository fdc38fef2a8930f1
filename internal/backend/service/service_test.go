package service_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/backend/leader"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/service"
	"github.com/mse-in-go/mse/internal/backend/service/servicetest"
	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/config"
	"github.com/mse-in-go/mse/internal/nodeapi"
)

var ctx = context.Background()

var bundleBytes = []byte("MSEBNDL not really a bundle, but the backend only hashes it")

func digest(b []byte) string {
	d := sha256.Sum256(b)
	return hex.EncodeToString(d[:])
}

func request(e *servicetest.Env, name string) client.CreateAppRequest {
	return client.CreateAppRequest{
		Name: name, Hardware: "1g", PythonApplication: "app:app", ExpiresAt: e.Now().Add(24 * time.Hour),
		TLSMode: config.TLSSelf, CodeDigest: digest(bundleBytes),
	}
}

func create(t *testing.T, e *servicetest.Env, u *store.User, req client.CreateAppRequest) *store.App {
	t.Helper()
	a, err := e.Service.CreateApp(ctx, u, req, bytes.NewReader(bundleBytes))
	if err != nil {
		t.Fatalf("CreateApp: %v", err)
	}
	return a
}

// TestCreateAppRefusals: each bad request is refused with the sentinel of its
// kind and a message naming the cause, and leaves no app and no blob.
func TestCreateAppRefusals(t *testing.T) {
	e := servicetest.New(t)
	u, _ := e.User(t, "alice", false)
	cases := []struct {
		name string
		mod  func(*client.CreateAppRequest)
		kind error
		msg  string
	}{
		{"bad name", func(r *client.CreateAppRequest) { r.Name = "-x" }, service.ErrInvalid, "invalid app name"},
		{"unknown hardware", func(r *client.CreateAppRequest) { r.Hardware = "99g" }, service.ErrInvalid, `unknown hardware "99g" (offered: 1g, 4g)`},
		{"no expiry", func(r *client.CreateAppRequest) { r.ExpiresAt = time.Time{} }, service.ErrInvalid, "expires_at is required"},
		{"past expiry", func(r *client.CreateAppRequest) { r.ExpiresAt = e.Now().Add(-time.Minute) }, service.ErrInvalid, "is in the past"},
		{"too far", func(r *client.CreateAppRequest) { r.ExpiresAt = e.Now().Add(365 * 24 * time.Hour) }, service.ErrInvalid, "maximum app lifetime"},
		{"bad digest", func(r *client.CreateAppRequest) { r.CodeDigest = strings.ToUpper(r.CodeDigest) }, service.ErrInvalid, "code_digest must be 64 lowercase hex"},
		{"wrong digest", func(r *client.CreateAppRequest) { r.CodeDigest = digest([]byte("other")) }, service.ErrInvalid, "is not the code_digest"},
		{"unknown project", func(r *client.CreateAppRequest) { r.Project = "nope" }, service.ErrNotFound, `no project "nope"`},
		{"domain in self mode", func(r *client.CreateAppRequest) { r.Domain = "a.example" }, service.ErrInvalid, "domain is only for tls_mode owner"},
		{"operator mode", func(r *client.CreateAppRequest) { r.TLSMode = config.TLSOperator }, service.ErrInvalid, "tls_mode operator is not offered"},
		{"unknown mode", func(r *client.CreateAppRequest) { r.TLSMode = "x" }, service.ErrInvalid, `unknown tls_mode "x"`},
		{"no entrypoint", func(r *client.CreateAppRequest) { r.PythonApplication = "" }, service.ErrInvalid, ""},
		{"unknown runtime", func(r *client.CreateAppRequest) { r.Runtime = "ghcr.io/cosmian/mse-flask:1" }, service.ErrInvalid,
			`runtime not offered: "ghcr.io/cosmian/mse-flask:1" is not in the operator's catalog; did you mean "mse/flask:bookworm"?`},
		{"runtime pinned elsewhere", func(r *client.CreateAppRequest) { r.Runtime = "flask@" + servicetest.Runtimes[1].Digest }, service.ErrInvalid, "flask is pinned to"},
		{"start timeout above the maximum", func(r *client.CreateAppRequest) { r.StartTimeoutSeconds = 3600 }, service.ErrInvalid,
			"start_timeout 1h0m0s is above this operator's maximum of 30m0s"},
		{"negative start timeout", func(r *client.CreateAppRequest) { r.StartTimeoutSeconds = -1 }, service.ErrInvalid, "must not be negative"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := request(e, "app")
			c.mod(&req)
			_, err := e.Service.CreateApp(ctx, u, req, bytes.NewReader(bundleBytes))
			if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("err = %v, want %v with %q", err, c.kind, c.msg)
			}
		})
	}
	apps, err := e.Service.ListApps(ctx, u, "", "", "", true)
	if err != nil || len(apps) != 0 {
		t.Errorf("apps after refusals: %d, %v", len(apps), err)
	}
	if ents, _ := os.ReadDir(e.BlobDir); len(ents) != 0 {
		t.Errorf("blobs left after refusals: %v", ents)
	}
}

// TestLifecycle: an app goes spawning → initializing → running as its node
// reports, and a node error ends it on_error with the node's message, its
// node stopped and its bundle deleted.
func TestLifecycle(t *testing.T) {
	e := servicetest.New(t)
	u, _ := e.User(t, "alice", false)
	a := create(t, e, u, request(e, "app"))
	if a.Status != store.StatusSpawning || !e.Runner.Live(a.ID) || len(a.Domains) != 1 || !strings.HasSuffix(a.Domains[0], ".mse.test") {
		t.Fatalf("created: %+v", a)
	}
	step := func(state string, want store.AppStatus) *store.App {
		t.Helper()
		e.Runner.SetState(a.ID, state, "")
		got, err := e.Service.App(ctx, u, a.ID)
		if err != nil || got.Status != want {
			t.Fatalf("node %s: app %v, %v; want %s", state, got, err, want)
		}
		return got
	}
	step(nodeapi.StateStarting, store.StatusSpawning)
	step(nodeapi.StateWaiting, store.StatusInitializing)
	step(nodeapi.StateRunning, store.StatusRunning)
	e.Runner.SetState(a.ID, nodeapi.StateError, "the app exited with status 1")
	e.Service.Reconcile(ctx)
	got, _ := e.Service.App(ctx, u, a.ID)
	if got.Status != store.StatusOnError || got.Error != "the app exited with status 1" {
		t.Errorf("after node error: %s %q", got.Status, got.Error)
	}
	if e.Runner.Live(a.ID) {
		t.Error("the node was not stopped")
	}
	if _, err := os.Stat(e.BlobDir + "/" + a.ID); !os.IsNotExist(err) {
		t.Errorf("the bundle was not deleted: %v", err)
	}
}

// TestExpiry: an app past its expiry date is stopped with the reason "expired".
func TestExpiry(t *testing.T) {
	e := servicetest.New(t)
	u, _ := e.User(t, "alice", false)
	a := create(t, e, u, request(e, "app"))
	e.Runner.SetState(a.ID, nodeapi.StateRunning, "")
	e.Service.Reconcile(ctx)
	e.Advance(25 * time.Hour)
	e.Service.Reconcile(ctx)
	got, _ := e.Service.App(ctx, u, a.ID)
	if got.Status != store.StatusStopped || got.Error != "expired" || e.Runner.Live(a.ID) {
		t.Errorf("after expiry: %s %q live=%v", got.Status, got.Error, e.Runner.Live(a.ID))
	}
}

// TestTenants: another tenant's app is not found, whether read, stopped or
// its logs asked for; an admin sees it.
func TestTenants(t *testing.T) {
	e := servicetest.New(t)
	alice, _ := e.User(t, "alice", false)
	bob, _ := e.User(t, "bob", false)
	admin, _ := e.User(t, "root", true)
	a := create(t, e, alice, request(e, "app"))
	if _, err := e.Service.App(ctx, bob, a.ID); !errors.Is(err, service.ErrNotFound) {
		t.Errorf("bob reads alice's app: %v", err)
	}
	if _, err := e.Service.StopApp(ctx, bob, a.ID); !errors.Is(err, service.ErrNotFound) {
		t.Errorf("bob stops alice's app: %v", err)
	}
	if _, err := e.Service.Logs(ctx, bob, a.ID, 100, false); !errors.Is(err, service.ErrNotFound) {
		t.Errorf("bob reads alice's logs: %v", err)
	}
	if apps, _ := e.Service.ListApps(ctx, bob, "", "", "", true); len(apps) != 0 {
		t.Errorf("bob lists %d apps", len(apps))
	}
	if !e.Runner.Live(a.ID) {
		t.Error("alice's node was stopped by bob")
	}
	if _, err := e.Service.App(ctx, admin, a.ID); err != nil {
		t.Errorf("admin reads alice's app: %v", err)
	}
	if _, _, err := e.Service.CreateUser(ctx, bob, "carol", false); !errors.Is(err, service.ErrForbidden) {
		t.Errorf("bob creates a user: %v", err)
	}
	if got, err := e.Service.StopApp(ctx, alice, a.ID); err != nil || got.Status != store.StatusStopped || got.Error != "stopped by alice" {
		t.Errorf("alice stops her app: %+v, %v", got, err)
	}
}

// TestAuthenticate: missing, unknown and revoked tokens are ErrUnauthenticated.
func TestAuthenticate(t *testing.T) {
	e := servicetest.New(t)
	u, tok := e.User(t, "alice", false)
	if got, err := e.Service.Authenticate(ctx, tok); err != nil || got.ID != u.ID {
		t.Fatalf("good token: %v, %v", got, err)
	}
	for _, bad := range []string{"", "mse_unknown"} {
		if _, err := e.Service.Authenticate(ctx, bad); !errors.Is(err, service.ErrUnauthenticated) {
			t.Errorf("token %q: %v", bad, err)
		}
	}
	toks, _ := e.Store.ListTokens(ctx, u.ID)
	if err := e.Service.RevokeToken(ctx, u, toks[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Service.Authenticate(ctx, tok); !errors.Is(err, service.ErrUnauthenticated) || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("revoked token: %v", err)
	}
	if err := e.Service.RevokeToken(ctx, u, "00000000-0000-0000-0000-000000000000"); !errors.Is(err, service.ErrNotFound) {
		t.Errorf("revoke an unknown token: %v", err)
	}
}

// TestConflictsAndCapacity: an owner domain held by an active app is a
// conflict; a spawn without capacity is ErrUnavailable and the app on_error.
func TestConflictsAndCapacity(t *testing.T) {
	ca := servicetest.NewCA(t, "Owner CA")
	e := servicetest.New(t, servicetest.TrustCAs(ca))
	u, _ := e.User(t, "alice", false)
	chain := ca.Leaf(t, "app.example.com")
	owner := func() client.CreateAppRequest {
		r := request(e, "own")
		r.TLSMode, r.Domain, r.OwnerCertificate = config.TLSOwner, "app.example.com", chain
		return r
	}
	if _, err := e.Service.CreateApp(ctx, u, owner(), bytes.NewReader(bundleBytes)); err != nil {
		t.Fatalf("first owner app: %v", err)
	}
	if _, err := e.Service.CreateApp(ctx, u, owner(), bytes.NewReader(bundleBytes)); !errors.Is(err, service.ErrConflict) || !strings.Contains(err.Error(), "app.example.com is already used") {
		t.Errorf("second app on the domain: %v", err)
	}
	e.Runner.Total = runner.Resources{MemoryMiB: 1024, Cores: 1}
	_, err := e.Service.CreateApp(ctx, u, request(e, "big"), bytes.NewReader(bundleBytes))
	if !errors.Is(err, service.ErrUnavailable) || !strings.Contains(err.Error(), "not enough capacity") {
		t.Errorf("no capacity: %v", err)
	}
	apps, _ := e.Service.ListApps(ctx, u, "big", "", "", true)
	if len(apps) != 1 || apps[0].Status != store.StatusOnError {
		t.Errorf("the app without capacity: %+v", apps)
	}
}

// TestNoKeyReceived: an app whose node waits for its key past KeyTimeout is
// stopped with "no key received"; one whose node got its key (launching) or
// that is younger than the bound is left alone.
func TestNoKeyReceived(t *testing.T) {
	e := servicetest.New(t, func(c *service.Config) { c.KeyTimeout = 10 * time.Minute })
	u, _ := e.User(t, "alice", false)
	waiting := create(t, e, u, request(e, "waiting"))
	launching := create(t, e, u, request(e, "launching"))
	for _, a := range []*store.App{waiting, launching} {
		e.Runner.SetState(a.ID, nodeapi.StateWaiting, "")
	}
	e.Service.Reconcile(ctx)
	e.Runner.SetState(launching.ID, nodeapi.StateLaunching, "")
	e.Advance(9 * time.Minute)
	e.Service.Reconcile(ctx)
	if a, _ := e.Service.App(ctx, u, waiting.ID); a.Status != store.StatusInitializing {
		t.Fatalf("before the bound: %s %q", a.Status, a.Error)
	}
	e.Advance(2 * time.Minute)
	e.Service.Reconcile(ctx)
	a, _ := e.Service.App(ctx, u, waiting.ID)
	if a.Status != store.StatusStopped || !strings.HasPrefix(a.Error, "no key received") || e.Runner.Live(a.ID) {
		t.Errorf("after the bound: %s %q live=%v", a.Status, a.Error, e.Runner.Live(a.ID))
	}
	if a, _ := e.Service.App(ctx, u, launching.ID); a.Status != store.StatusInitializing || !e.Runner.Live(a.ID) {
		t.Errorf("the app that got its key: %s %q", a.Status, a.Error)
	}
}

// TestStartSweepsPartialUploads: a partial upload left by a crash is removed
// when the service starts; bundles of active apps stay.
func TestStartSweepsPartialUploads(t *testing.T) {
	e := servicetest.New(t)
	u, _ := e.User(t, "alice", false)
	a := create(t, e, u, request(e, "app"))
	partial := e.BlobDir + "/.upload-123456"
	if err := os.WriteFile(partial, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.Service.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(partial); !os.IsNotExist(err) {
		t.Errorf("the partial upload is still there: %v", err)
	}
	if _, err := os.Stat(e.BlobDir + "/" + a.ID); err != nil {
		t.Errorf("the active app's bundle went: %v", err)
	}
}

// orphanBundle stores a bundle that no app claims, as a crash between
// storing a bundle and recording its app leaves one.
func orphanBundle(t *testing.T, e *servicetest.Env) string {
	t.Helper()
	const key = "app-orphan"
	if _, err := e.Blobs.Put(ctx, key, bytes.NewReader(bundleBytes), 1<<20); err != nil {
		t.Fatal(err)
	}
	return key
}

func hasBlob(t *testing.T, e *servicetest.Env, key string) bool {
	t.Helper()
	keys, err := e.Blobs.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(keys, key)
}

// TestStartRemovesOrphanBundles: a backend alone on its store removes, when
// it starts, the bundles no active app claims at once; an active app's
// bundle stays.
func TestStartRemovesOrphanBundles(t *testing.T) {
	e := servicetest.New(t)
	u, _ := e.User(t, "alice", false)
	a := create(t, e, u, request(e, "app"))
	orphan := orphanBundle(t, e)
	if err := e.Service.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if hasBlob(t, e, orphan) {
		t.Error("the orphan bundle is still there after Start")
	}
	if !hasBlob(t, e, a.ID) {
		t.Error("the active app's bundle went")
	}
}

// TestLeaderSweepsOrphansAfterGrace: the leader's sweeps remove a bundle no
// active app claims only once it has been an orphan for OrphanGrace by the
// service's clock (another replica may be between storing a bundle and
// recording its app); an active app's bundle stays.
func TestLeaderSweepsOrphansAfterGrace(t *testing.T) {
	const grace = 10 * time.Minute
	e := servicetest.New(t, func(c *service.Config) { c.SweepInterval, c.OrphanGrace = 5*time.Millisecond, grace })
	u, _ := e.User(t, "alice", false)
	a := create(t, e, u, request(e, "app"))
	orphan := orphanBundle(t, e)
	stored := e.Now()
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.Service.Lead(lctx, leader.Always{}, false) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Lead: %v", err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for hasBlob(t, e, orphan) {
		if time.Now().After(deadline) {
			t.Fatalf("the orphan bundle is still there %s after it was stored (grace %s)", e.Now().Sub(stored), grace)
		}
		e.Advance(grace / 4)
		time.Sleep(20 * time.Millisecond)
	}
	if age := e.Now().Sub(stored); age < grace {
		t.Errorf("the orphan bundle was removed %s after it was stored, before its grace (%s) ended", age, grace)
	}
	if !hasBlob(t, e, a.ID) {
		t.Error("the active app's bundle went")
	}
}

// TestCreateAppRuntime: the spec names the runtime the request resolved to
// (the catalog's first when none), and the default start timeout.
func TestCreateAppRuntime(t *testing.T) {
	e := servicetest.New(t)
	u, _ := e.User(t, "alice", false)
	for ref, want := range map[string]string{"": "flask", "fastapi": "fastapi", "mse/fastapi:bookworm@" + servicetest.Runtimes[1].Digest: "fastapi"} {
		req := request(e, "rt"+strings.NewReplacer("/", "", ":", "", "@", "").Replace(ref)[:min(8, len(ref))])
		req.Runtime = ref
		a := create(t, e, u, req)
		var spec config.Spec
		if err := json.Unmarshal(a.Spec, &spec); err != nil {
			t.Fatal(err)
		}
		if spec.Runtime.Name != want || spec.StartTimeoutSeconds != 120 {
			t.Errorf("runtime %q: spec runtime %+v, start timeout %d", ref, spec.Runtime, spec.StartTimeoutSeconds)
		}
	}
}
