package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/backend"
	"github.com/mse-in-go/mse/internal/backend/blob"
	"github.com/mse-in-go/mse/internal/backend/blob/fs"
	"github.com/mse-in-go/mse/internal/backend/router"
	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/e2e/e2eutil"
	"github.com/mse-in-go/mse/internal/testenv"
)

// appIDFrom finds the app id in deploy's output ("app <id> created").
func appIDFrom(t *testing.T, stderr string) string {
	t.Helper()
	m := regexp.MustCompile(`app ([0-9a-f-]{36}) created`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no app id in deploy output:\n%s", stderr)
	}
	return m[1]
}

// assertNeverStarted checks that a refused deploy never gave the node a
// secret: the CLI stopped the app, and the node's log shows no stage-2
// request and no app start.
func assertNeverStarted(t *testing.T, b *testenv.Backend, appID string) {
	t.Helper()
	a, err := apiFor(b, b.AdminToken).App(context.Background(), appID)
	if err != nil {
		t.Fatal(err)
	}
	if a.Status != "stopped" {
		t.Fatalf("app %s is %s after a refused deploy; the CLI should have stopped it", appID, a.Status)
	}
	logb, err := os.ReadFile(filepath.Join(b.NodeDir(appID), "node.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logb), "waiting for the owner's secrets") {
		t.Fatalf("node log lacks the waiting line:\n%s", logb)
	}
	for _, s := range []string{"stage-2", "app started", "app running"} {
		if strings.Contains(string(logb), s) {
			t.Fatalf("node log shows %q: a secret reached the node\n%s", s, logb)
		}
	}
}

func refused(t *testing.T, want string, args ...string) string {
	t.Helper()
	out, errs, code := run(t, append([]string{"cloud", "deploy", "-y", "--timeout", "60s"}, args...)...)
	if code == 0 {
		t.Fatalf("deploy succeeded, want refusal %q\n%s\n%s", want, out, errs)
	}
	if !strings.Contains(errs, want) {
		t.Fatalf("deploy refused, but the message lacks %q:\n%s", want, errs)
	}
	if strings.Contains(errs, "Sent the code key") {
		t.Fatalf("the code key was sent:\n%s", errs)
	}
	return errs
}

// TestPolicyRefusals: evidence outside the owner's policy is refused with a
// message naming the cause, before any secret is sent.
func TestPolicyRefusals(t *testing.T) {
	b := testenv.Start(t, testenv.Options{})
	login(t, b, b.AdminToken)
	other := strings.Repeat("ab", 32)
	cases := []struct {
		name   string
		policy string
		args   []string
		want   string
	}{
		{"sim without opt-in", fmt.Sprintf("tee_types = [\"sgx\"]\nmeasurements = [%q]\n", b.Measurement), nil, "simulation is not accepted: pass --simulation"},
		{"sim listed but not allowed", fmt.Sprintf("tee_types = [\"sim\"]\nmeasurements = [%q]\n", b.Measurement), []string{"--sim-root", b.SimRootFile}, "simulation is not accepted"},
		{"unknown measurement", fmt.Sprintf("tee_types = [\"sim\"]\nallow_simulation = true\nmeasurements = [%q]\n", other), nil, "measurement " + b.Measurement[:8]},
		{"unknown signer", fmt.Sprintf("tee_types = [\"sim\"]\nallow_simulation = true\nmeasurements = [%q]\nsigners = [%q]\n", b.Measurement, other), nil, "MRSIGNER"},
		{"no runtime", "tee_types = [\"sim\"]\nallow_simulation = true\n", nil, "accepts no runtime"},
		{"pinned sim root differs", fmt.Sprintf("tee_types = [\"sim\"]\nallow_simulation = true\nmeasurements = [%q]\n[simulation]\nroot_sha256 = %q\n", b.Measurement, other), nil, "is not the one your policy pins"},
		{"tcb status", fmt.Sprintf("tee_types = [\"sim\"]\nallow_simulation = true\nmeasurements = [%q]\naccepted_tcb_statuses = [\"SWHardeningNeeded\"]\n", b.Measurement), nil, "TCB status UpToDate is not accepted"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "policy.toml")
			if err := os.WriteFile(p, []byte(c.policy), 0o600); err != nil {
				t.Fatal(err)
			}
			errs := refused(t, c.want, append([]string{"--path", helloApp(t, fmt.Sprintf("pol%d", i), ""), "--policy", p}, c.args...)...)
			if strings.Contains(errs, "Uploaded") {
				assertNeverStarted(t, b, appIDFrom(t, errs))
			}
		})
	}
}

// TestDebugEnclave: a debug enclave is refused unless the policy allows it.
func TestDebugEnclave(t *testing.T) {
	b := testenv.Start(t, testenv.Options{SimDebug: true})
	login(t, b, b.AdminToken)
	errs := refused(t, "debug mode", "--path", helloApp(t, "dbg", ""), "--policy", b.PolicyFile(t, ""))
	assertNeverStarted(t, b, appIDFrom(t, errs))
	mustDeploy(t, "--path", helloApp(t, "dbg2", ""), "--policy", b.PolicyFile(t, "allow_debug = true\n"))
}

// tamperingBlobs is an operator that alters bundles at rest after accepting them.
type tamperingBlobs struct {
	*fs.Store
	on atomic.Bool
}

func (s *tamperingBlobs) Put(ctx context.Context, key string, r io.Reader, max int64) (blob.Info, error) {
	info, err := s.Store.Put(ctx, key, r, max)
	return info, s.tamper(key, err)
}

// PutVerified: the bundle is checked on arrival, then altered at rest.
func (s *tamperingBlobs) PutVerified(ctx context.Context, key string, r io.Reader, max int64, want [32]byte) (blob.Info, error) {
	info, err := s.Store.PutVerified(ctx, key, r, max, want)
	return info, s.tamper(key, err)
}

func (s *tamperingBlobs) tamper(key string, err error) error {
	if err != nil || !s.on.Load() {
		return err
	}
	p, _ := s.LocalPath(key)
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 0x01
	return os.WriteFile(p, b, 0o600)
}

// TestTamperedBundle: the operator changes the stored bundle; the node
// attests the digest of what it holds, and the owner refuses.
func TestTamperedBundle(t *testing.T) {
	dir := t.TempDir()
	inner, err := fs.New(filepath.Join(dir, "bundles"))
	if err != nil {
		t.Fatal(err)
	}
	blobs := &tamperingBlobs{Store: inner}
	blobs.on.Store(true)
	b := testenv.Start(t, testenv.Options{DataDir: dir, Blobs: blobs})
	login(t, b, b.AdminToken)
	errs := refused(t, "the code it holds is not yours", "--path", helloApp(t, "tamper", ""), "--policy", b.PolicyFile(t, ""))
	assertNeverStarted(t, b, appIDFrom(t, errs))
}

// nodeAddr reads an app's node address from the backend's store.
func nodeAddr(t *testing.T, dataDir, appID string) string {
	t.Helper()
	st, err := backend.OpenStore(context.Background(), dataDir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := st.GetApp(context.Background(), appID)
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Addr string `json:"addr"`
	}
	if err := json.Unmarshal(a.Node, &h); err != nil || h.Addr == "" {
		t.Fatalf("node handle %s: %v", a.Node, err)
	}
	return h.Addr
}

// TestRouterSwap: a router that sends the owner to another node with a valid
// RA-TLS certificate — another app's, or one of another runtime — is caught.
func TestRouterSwap(t *testing.T) {
	dir := t.TempDir()
	// The evil router must exist before the backend, which advertises it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	evil := ln.Addr().String()
	var swap, real atomic.Value
	swap.Store("")
	real.Store("")
	r := &router.Router{Lookup: func(ctx context.Context, name string) (router.Route, error) {
		if s := swap.Load().(string); s != "" {
			return router.Route{Addr: s}, nil
		}
		return router.Route{Addr: real.Load().(string)}, nil
	}}
	go func() { _ = r.Serve(ln) }()
	t.Cleanup(func() { _ = r.Close() })

	b := testenv.Start(t, testenv.Options{DataDir: dir, PublicRouterAddr: evil})
	real.Store(b.RouterListenAddr)
	login(t, b, b.AdminToken)
	policy := b.PolicyFile(t, "")
	first := mustDeploy(t, "--path", helloApp(t, "victim-a", ""), "--policy", policy)

	t.Run("another app's node", func(t *testing.T) {
		swap.Store(nodeAddr(t, dir, first.AppID))
		defer swap.Store("")
		errs := refused(t, "this is another app's node", "--path", helloApp(t, "victim-b", ""), "--policy", policy)
		assertNeverStarted(t, b, appIDFrom(t, errs))
	})

	t.Run("a node of another runtime", func(t *testing.T) {
		// A second platform, same simulated hardware root, whose node binary
		// differs by a few bytes: its measurement differs.
		dir2 := t.TempDir()
		e2eutil.CopyTree(t, filepath.Join(dir, "sim"), filepath.Join(dir2, "sim"))
		for _, f := range []string{"sim-root.key", "sim-ak.key"} {
			_ = os.Chmod(filepath.Join(dir2, "sim", f), 0o600)
		}
		nb, err := os.ReadFile(testenv.Build(t, "mse-node"))
		if err != nil {
			t.Fatal(err)
		}
		patched := filepath.Join(t.TempDir(), "mse-node")
		if err := os.WriteFile(patched, append(nb, []byte("other runtime")...), 0o755); err != nil {
			t.Fatal(err)
		}
		b2 := testenv.Start(t, testenv.Options{DataDir: dir2, NodeBinary: patched})
		if b2.Measurement == b.Measurement || b2.SimRootSHA256 != b.SimRootSHA256 {
			t.Fatalf("setup: measurements %s %s, roots %s %s", b.Measurement, b2.Measurement, b.SimRootSHA256, b2.SimRootSHA256)
		}
		cfg1 := os.Getenv("MSE_CONFIG_DIR")
		login(t, b2, b2.AdminToken)
		other := mustDeploy(t, "--path", helloApp(t, "other-runtime", ""), "--policy", b2.PolicyFile(t, ""))
		t.Setenv("MSE_CONFIG_DIR", cfg1)

		swap.Store(nodeAddr(t, dir2, other.AppID))
		defer swap.Store("")
		errs := refused(t, "measurement "+b2.Measurement[:8], "--path", helloApp(t, "victim-c", ""), "--policy", policy)
		assertNeverStarted(t, b, appIDFrom(t, errs))
	})
}

// TestSameName: a second deploy of a running name needs -y.
func TestSameName(t *testing.T) {
	b := testenv.Start(t, testenv.Options{})
	login(t, b, b.AdminToken)
	policy := b.PolicyFile(t, "")
	toml := helloApp(t, "twice", "")
	first := mustDeploy(t, "--path", toml, "--policy", policy)
	_, errs, code := run(t, "cloud", "deploy", "--path", toml, "--policy", policy)
	if code == 0 || !strings.Contains(errs, "already running") || !strings.Contains(errs, "-y") {
		t.Fatalf("second deploy without -y: exit %d\n%s", code, errs)
	}
	second := mustDeploy(t, "--path", toml, "--policy", policy)
	if second.AppID == first.AppID {
		t.Fatal("same app id")
	}
	a, err := apiFor(b, b.AdminToken).App(context.Background(), first.AppID)
	if err != nil || a.Status != "stopped" {
		t.Fatalf("first app: %v %v", a.Status, err)
	}
}

// TestTokensAndTenants: missing, unknown and revoked tokens are refused; a
// tenant cannot see, stop, read the logs of, or reach another's app.
func TestTokensAndTenants(t *testing.T) {
	b := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	admin := apiFor(b, b.AdminToken)

	t.Setenv("MSE_CONFIG_DIR", t.TempDir())
	if _, errs, code := run(t, "cloud", "list"); code == 0 || !strings.Contains(errs, "not logged in") {
		t.Fatalf("list without login: %d %s", code, errs)
	}
	if _, errs, code := run(t, "cloud", "login", "--url", b.APIURL, "--token", "mse_wrong"); code == 0 || !strings.Contains(errs, "unknown API token") {
		t.Fatalf("login with a wrong token: %d %s", code, errs)
	}

	alice, err := admin.CreateUser(ctx, "alice", false)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := admin.CreateUser(ctx, "bob", false)
	if err != nil {
		t.Fatal(err)
	}
	login(t, b, alice.Token)
	d := mustDeploy(t, "--path", helloApp(t, "alice-app", ""), "--policy", b.PolicyFile(t, ""))

	bc := apiFor(b, bob.Token)
	if _, err := bc.App(ctx, d.AppID); !isStatus(err, 404) {
		t.Errorf("bob reads alice's app: %v", err)
	}
	if _, err := bc.Stop(ctx, d.AppID); !isStatus(err, 404) {
		t.Errorf("bob stops alice's app: %v", err)
	}
	if _, err := bc.Logs(ctx, d.AppID, 10, false); !isStatus(err, 404) {
		t.Errorf("bob reads alice's logs: %v", err)
	}
	if apps, err := bc.Apps(ctx, client.ListOptions{All: true}); err != nil || len(apps) != 0 {
		t.Errorf("bob lists %d apps (%v)", len(apps), err)
	}
	if _, err := bc.CreateUser(ctx, "mallory", true); !isStatus(err, 403) {
		t.Errorf("bob creates a user: %v", err)
	}
	ac := apiFor(b, alice.Token)
	if a, err := ac.App(ctx, d.AppID); err != nil || a.Status != "running" {
		t.Fatalf("alice's app: %v %v", a, err)
	}

	// Revoke alice's token, as `mse-backend token revoke` does.
	st, err := backend.OpenStore(ctx, b.DataDir, "")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := st.GetUserByName(ctx, "alice")
	toks, _ := st.ListTokens(ctx, u.ID)
	if err := st.RevokeToken(ctx, toks[0].ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if _, errs, code := run(t, "cloud", "list"); code == 0 || !strings.Contains(errs, "revoked") {
		t.Fatalf("list with a revoked token: %d %s", code, errs)
	}
}

func isStatus(err error, code int) bool {
	e, ok := err.(*client.APIError)
	return ok && e.Status == code
}

// TestRestartAndNodeCrash: nodes survive a backend restart and are adopted
// (still routed, still running); a node that dies puts its app on_error.
func TestRestartAndNodeCrash(t *testing.T) {
	dir := t.TempDir()
	b := testenv.Start(t, testenv.Options{DataDir: dir})
	login(t, b, b.AdminToken)
	policy := b.PolicyFile(t, "")
	d := mustDeploy(t, "--path", helloApp(t, "survivor", ""), "--policy", policy)
	b.Stop(t)

	b2 := testenv.Start(t, testenv.Options{DataDir: dir})
	if b2.AdminToken != b.AdminToken {
		t.Fatal("the admin token changed across restarts")
	}
	c := apiFor(b2, b2.AdminToken)
	a, err := c.App(context.Background(), d.AppID)
	if err != nil || a.Status != "running" {
		t.Fatalf("after restart: %+v %v", a, err)
	}
	login(t, b2, b2.AdminToken)
	mustRun(t, "cloud", "verify", d.Domain, "--addr", b2.RouterAddr, "--fingerprint", d.Fingerprint, "--policy", policy)

	// Kill the node: the app goes on_error with a reason.
	pid, err := os.ReadFile(filepath.Join(testenv.NodeDir(dir, d.AppID), "node.pid"))
	if err != nil {
		t.Fatal(err)
	}
	var p int
	fmt.Sscanf(string(pid), "%d", &p)
	if err := killProcess(p); err != nil {
		t.Fatal(err)
	}
	a, err = c.WaitStatus(context.Background(), d.AppID, 100*time.Millisecond, "on_error")
	if err != nil || a.Status != string(store.StatusOnError) || !strings.Contains(a.Error, "node process") {
		t.Fatalf("after the node died: %+v %v", a, err)
	}
}

// TestExpiry: an app is stopped at its expiration date.
func TestExpiry(t *testing.T) {
	b := testenv.Start(t, testenv.Options{})
	login(t, b, b.AdminToken)
	exp := time.Now().Add(8 * time.Second).UTC().Format(time.RFC3339)
	d := mustDeploy(t, "--path", helloApp(t, "shortlived", "expiration_date = "+exp+"\n"), "--policy", b.PolicyFile(t, ""))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := apiFor(b, b.AdminToken).WaitStatus(ctx, d.AppID, 200*time.Millisecond, "stopped")
	if err != nil || a.Status != "stopped" || a.Error != "expired" || a.StoppedAt == nil || a.StoppedAt.Before(a.ExpiresAt) || a.StoppedAt.Sub(a.ExpiresAt) > 5*time.Second {
		t.Fatalf("after expiry: %+v %v", a, err)
	}
}
