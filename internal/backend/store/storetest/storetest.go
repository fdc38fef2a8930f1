// Package storetest is the conformance suite every store.Store driver passes.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { ... a fresh, empty store ... })
//	}
//
// open is called once per subtest and must return a fresh, empty store; Run
// closes it when the subtest ends (drivers' Close is idempotent, so open may
// also register a Close).
//
// Times are compared with Equal after truncation to microseconds: drivers
// store UTC at microsecond precision (truncated, not rounded) and return UTC.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mse-in-go/mse/internal/backend/store"
)

// Precision is the time resolution drivers must keep.
const Precision = time.Microsecond

// Run runs the conformance suite.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		f    func(t *testing.T, s store.Store)
	}{
		{"Users", testUsers},
		{"Tokens", testTokens},
		{"Projects", testProjects},
		{"IDsGenerated", testIDsGenerated},
		{"AppRoundTrip", testAppRoundTrip},
		{"AppReferences", testAppReferences},
		{"Times", testTimes},
		{"Blobs", testBlobs},
		{"ListAppsFilters", testListAppsFilters},
		{"ListAppsNewestFirst", testListAppsNewestFirst},
		{"ListAppsPages", testListAppsPages},
		{"Quotas", testQuotas},
		{"DomainReservations", testDomainReservations},
		{"DomainReservationsConcurrent", testDomainReservationsConcurrent},
		{"SetAppNode", testSetAppNode},
		{"ClaimSpawn", testClaimSpawn},
		{"ClaimSpawnConcurrent", testClaimSpawnConcurrent},
		{"TransitionCAS", testTransitionCAS},
		{"TransitionReleasesDomains", testTransitionReleasesDomains},
		{"TransitionRestart", testTransitionRestart},
		{"TransitionConcurrent", testTransitionConcurrent},
		{"CreateAppDomainConflict", testCreateAppDomainConflict},
		{"CreateAppConcurrentDomain", testCreateAppConcurrentDomain},
		{"DomainsCaseInsensitive", testDomainsCaseInsensitive},
		{"AppByDomain", testAppByDomain},
		{"ConcurrentLoad", testConcurrentLoad},
		{"CanceledContext", testCanceledContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.f(t, s)
		})
	}
}

// ---- helpers

var ctx = context.Background()

// base is a fixed instant with sub-microsecond digits, in a non-UTC zone, so
// that tests see truncation and UTC conversion.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.FixedZone("X", 5*3600+30*60))

func at(i int) time.Time { return base.Add(time.Duration(i) * time.Second) }

// tr is what a stored time must come back as.
func tr(t time.Time) time.Time { return t.UTC().Truncate(Precision) }

func eqTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(tr(want)) {
		t.Errorf("%s = %v, want %v", what, got, tr(want))
	}
	if got.Location() != time.UTC {
		t.Errorf("%s location = %v, want UTC", what, got.Location())
	}
}

func eqTimeP(t *testing.T, what string, got, want *time.Time) {
	t.Helper()
	switch {
	case got == nil && want == nil:
	case got == nil || want == nil:
		t.Errorf("%s = %v, want %v", what, got, want)
	default:
		eqTime(t, what, *got, *want)
	}
}

func ok(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func isErr(t *testing.T, err, want error, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want errors.Is(err, %v)", what, err, want)
	}
}

func mkUser(t *testing.T, s store.Store, name string) *store.User {
	t.Helper()
	u := &store.User{ID: "u-" + name, Name: name, CreatedAt: at(0)}
	ok(t, s.CreateUser(ctx, u), "CreateUser "+name)
	return u
}

func mkProject(t *testing.T, s store.Store, owner *store.User, name string) *store.Project {
	t.Helper()
	p := &store.Project{ID: "p-" + owner.Name + "-" + name, OwnerID: owner.ID, Name: name, CreatedAt: at(1)}
	ok(t, s.CreateProject(ctx, p), "CreateProject "+name)
	return p
}

var appSeq atomic.Int64

func newApp(owner *store.User, project *store.Project, name string, domains ...string) *store.App {
	n := appSeq.Add(1)
	a := &store.App{
		ID:         fmt.Sprintf("app-%s-%d", name, n),
		OwnerID:    owner.ID,
		Name:       name,
		Status:     store.StatusSpawning,
		Hardware:   "sim-small",
		Domains:    domains,
		Spec:       []byte(`{"name":"` + name + `"}`),
		CodeDigest: fmt.Sprintf("%064x", n),
		BundleSize: 1 << 20,
		CreatedAt:  at(int(n)),
		ExpiresAt:  at(int(n)).Add(24 * time.Hour),
	}
	if project != nil {
		a.ProjectID = project.ID
	}
	return a
}

func mkApp(t *testing.T, s store.Store, owner *store.User, project *store.Project, name string, domains ...string) *store.App {
	t.Helper()
	a := newApp(owner, project, name, domains...)
	ok(t, s.CreateApp(ctx, a), "CreateApp "+name)
	return a
}

func getApp(t *testing.T, s store.Store, id string) *store.App {
	t.Helper()
	a, err := s.GetApp(ctx, id)
	ok(t, err, "GetApp "+id)
	return a
}

func ids(apps []store.App) []string {
	out := make([]string, len(apps))
	for i, a := range apps {
		out[i] = a.ID
	}
	return out
}

func eqApp(t *testing.T, got, want *store.App) {
	t.Helper()
	if got.ID != want.ID || got.OwnerID != want.OwnerID || got.ProjectID != want.ProjectID || got.Name != want.Name ||
		got.Status != want.Status || got.Hardware != want.Hardware || got.CodeDigest != want.CodeDigest ||
		got.BundleSize != want.BundleSize || got.Error != want.Error {
		t.Errorf("app fields:\n got %+v\nwant %+v", *got, *want)
	}
	if !slices.Equal(got.Domains, want.Domains) { // nil and empty are equal
		t.Errorf("Domains = %q, want %q", got.Domains, want.Domains)
	}
	if !bytes.Equal(got.Spec, want.Spec) {
		t.Errorf("Spec = %q, want %q", got.Spec, want.Spec)
	}
	if !bytes.Equal(got.Node, want.Node) {
		t.Errorf("Node = %q, want %q", got.Node, want.Node)
	}
	eqTime(t, "CreatedAt", got.CreatedAt, want.CreatedAt)
	eqTime(t, "UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	eqTime(t, "ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	eqTimeP(t, "StoppedAt", got.StoppedAt, want.StoppedAt)
}

// ---- users, tokens, projects

func testUsers(t *testing.T, s store.Store) {
	bob := &store.User{ID: "u-bob", Name: "bob", CreatedAt: at(2)}
	alice := &store.User{ID: "u-alice", Name: "alice", Admin: true, CreatedAt: at(1)}
	ok(t, s.CreateUser(ctx, bob), "CreateUser bob")
	ok(t, s.CreateUser(ctx, alice), "CreateUser alice")

	u, err := s.GetUser(ctx, "u-alice")
	ok(t, err, "GetUser")
	if u.ID != "u-alice" || u.Name != "alice" || !u.Admin {
		t.Errorf("GetUser = %+v", u)
	}
	eqTime(t, "CreatedAt", u.CreatedAt, at(1))
	u, err = s.GetUserByName(ctx, "bob")
	ok(t, err, "GetUserByName")
	if u.ID != "u-bob" || u.Admin {
		t.Errorf("GetUserByName = %+v", u)
	}

	_, err = s.GetUser(ctx, "u-nobody")
	isErr(t, err, store.ErrNotFound, "GetUser unknown")
	_, err = s.GetUserByName(ctx, "nobody")
	isErr(t, err, store.ErrNotFound, "GetUserByName unknown")
	_, err = s.GetUserByName(ctx, "Alice")
	isErr(t, err, store.ErrNotFound, "GetUserByName is case-sensitive")

	isErr(t, s.CreateUser(ctx, &store.User{ID: "u-other", Name: "alice"}), store.ErrConflict, "CreateUser same name")
	isErr(t, s.CreateUser(ctx, &store.User{ID: "u-alice", Name: "carol"}), store.ErrConflict, "CreateUser same id")
	if err := s.CreateUser(ctx, &store.User{ID: "u-empty", Name: ""}); err == nil {
		t.Errorf("CreateUser with an empty name succeeded")
	}

	us, err := s.ListUsers(ctx)
	ok(t, err, "ListUsers")
	var names []string
	for _, u := range us {
		names = append(names, u.Name)
	}
	if !slices.Equal(names, []string{"alice", "bob"}) {
		t.Errorf("ListUsers names = %q, want [alice bob] (ordered by name, no failed inserts)", names)
	}
}

func testTokens(t *testing.T, s store.Store) {
	alice, bob := mkUser(t, s, "alice"), mkUser(t, s, "bob")
	t1 := &store.Token{ID: "t1", UserID: alice.ID, Name: "laptop", Hash: fmt.Sprintf("%064x", 1), CreatedAt: at(1)}
	t2 := &store.Token{ID: "t2", UserID: alice.ID, Name: "ci", Hash: fmt.Sprintf("%064x", 2), CreatedAt: at(3)}
	t3 := &store.Token{ID: "t3", UserID: bob.ID, Name: "bob", Hash: fmt.Sprintf("%064x", 3), CreatedAt: at(2)}
	for _, tk := range []*store.Token{t2, t1, t3} {
		ok(t, s.CreateToken(ctx, tk), "CreateToken "+tk.ID)
	}

	got, err := s.TokenByHash(ctx, t1.Hash)
	ok(t, err, "TokenByHash")
	if got.ID != "t1" || got.UserID != alice.ID || got.Name != "laptop" || got.Hash != t1.Hash || got.RevokedAt != nil {
		t.Errorf("TokenByHash = %+v", got)
	}
	eqTime(t, "CreatedAt", got.CreatedAt, at(1))
	_, err = s.TokenByHash(ctx, fmt.Sprintf("%064x", 99))
	isErr(t, err, store.ErrNotFound, "TokenByHash unknown")

	isErr(t, s.CreateToken(ctx, &store.Token{ID: "t4", UserID: bob.ID, Hash: t1.Hash}), store.ErrConflict, "CreateToken same hash")
	isErr(t, s.CreateToken(ctx, &store.Token{ID: "t1", UserID: bob.ID, Hash: "other"}), store.ErrConflict, "CreateToken same id")
	isErr(t, s.CreateToken(ctx, &store.Token{ID: "t5", UserID: "u-nobody", Hash: "h5"}), store.ErrNotFound, "CreateToken unknown user")

	ts, err := s.ListTokens(ctx, alice.ID)
	ok(t, err, "ListTokens")
	if len(ts) != 2 || ts[0].ID != "t1" || ts[1].ID != "t2" {
		t.Errorf("ListTokens(alice) = %+v, want t1, t2 (oldest first)", ts)
	}
	ts, err = s.ListTokens(ctx, "u-nobody")
	ok(t, err, "ListTokens unknown user")
	if len(ts) != 0 {
		t.Errorf("ListTokens(unknown) = %+v", ts)
	}

	ok(t, s.RevokeToken(ctx, "t1", at(10)), "RevokeToken")
	got, err = s.TokenByHash(ctx, t1.Hash)
	ok(t, err, "TokenByHash revoked")
	eqTimeP(t, "RevokedAt", got.RevokedAt, new(at(10)))
	ok(t, s.RevokeToken(ctx, "t1", at(20)), "RevokeToken again")
	got, _ = s.TokenByHash(ctx, t1.Hash)
	eqTimeP(t, "RevokedAt after second revoke (first time kept)", got.RevokedAt, new(at(10)))
	got, _ = s.TokenByHash(ctx, t2.Hash)
	if got.RevokedAt != nil {
		t.Errorf("t2 revoked too: %v", got.RevokedAt)
	}
	isErr(t, s.RevokeToken(ctx, "t-nope", at(10)), store.ErrNotFound, "RevokeToken unknown")
}

func testProjects(t *testing.T, s store.Store) {
	alice, bob := mkUser(t, s, "alice"), mkUser(t, s, "bob")
	web := &store.Project{ID: "p1", OwnerID: alice.ID, Name: "web", CreatedAt: at(5)}
	ok(t, s.CreateProject(ctx, web), "CreateProject")
	ok(t, s.CreateProject(ctx, &store.Project{ID: "p2", OwnerID: alice.ID, Name: "api"}), "CreateProject api")
	ok(t, s.CreateProject(ctx, &store.Project{ID: "p3", OwnerID: bob.ID, Name: "web"}), "same name, other owner")
	isErr(t, s.CreateProject(ctx, &store.Project{ID: "p4", OwnerID: alice.ID, Name: "web"}), store.ErrConflict, "same name, same owner")
	isErr(t, s.CreateProject(ctx, &store.Project{ID: "p1", OwnerID: bob.ID, Name: "x"}), store.ErrConflict, "same id")
	isErr(t, s.CreateProject(ctx, &store.Project{ID: "p5", OwnerID: "u-nobody", Name: "x"}), store.ErrNotFound, "unknown owner")

	p, err := s.GetProject(ctx, "p1")
	ok(t, err, "GetProject")
	if p.ID != "p1" || p.OwnerID != alice.ID || p.Name != "web" {
		t.Errorf("GetProject = %+v", p)
	}
	eqTime(t, "CreatedAt", p.CreatedAt, at(5))
	p, err = s.GetProjectByName(ctx, bob.ID, "web")
	ok(t, err, "GetProjectByName")
	if p.ID != "p3" {
		t.Errorf("GetProjectByName(bob, web) = %+v", p)
	}
	_, err = s.GetProject(ctx, "p-nope")
	isErr(t, err, store.ErrNotFound, "GetProject unknown")
	_, err = s.GetProjectByName(ctx, bob.ID, "api")
	isErr(t, err, store.ErrNotFound, "GetProjectByName other owner's name")

	ps, err := s.ListProjects(ctx, alice.ID)
	ok(t, err, "ListProjects")
	if len(ps) != 2 || ps[0].Name != "api" || ps[1].Name != "web" {
		t.Errorf("ListProjects(alice) = %+v, want api, web (by name)", ps)
	}
	ps, err = s.ListProjects(ctx, "u-nobody")
	ok(t, err, "ListProjects unknown")
	if len(ps) != 0 {
		t.Errorf("ListProjects(unknown) = %+v", ps)
	}
}

func testIDsGenerated(t *testing.T, s store.Store) {
	u := &store.User{Name: "anon"}
	ok(t, s.CreateUser(ctx, u), "CreateUser without ID")
	if _, err := uuid.Parse(u.ID); err != nil {
		t.Fatalf("generated user ID %q is not a UUID: %v", u.ID, err)
	}
	if u.CreatedAt.IsZero() || time.Since(u.CreatedAt) > time.Minute {
		t.Errorf("CreatedAt not filled with now: %v", u.CreatedAt)
	}
	got, err := s.GetUser(ctx, u.ID)
	ok(t, err, "GetUser generated")
	eqTime(t, "CreatedAt", got.CreatedAt, u.CreatedAt)

	tk := &store.Token{UserID: u.ID, Hash: "h"}
	ok(t, s.CreateToken(ctx, tk), "CreateToken without ID")
	p := &store.Project{OwnerID: u.ID, Name: "p"}
	ok(t, s.CreateProject(ctx, p), "CreateProject without ID")
	a := &store.App{OwnerID: u.ID, ProjectID: p.ID, Name: "a", Status: store.StatusSpawning}
	ok(t, s.CreateApp(ctx, a), "CreateApp without ID")
	for _, id := range []string{tk.ID, p.ID, a.ID} {
		if _, err := uuid.Parse(id); err != nil {
			t.Errorf("generated ID %q is not a UUID", id)
		}
	}
	if tk.ID == p.ID || p.ID == a.ID {
		t.Errorf("generated IDs collide")
	}
	g := getApp(t, s, a.ID)
	eqTime(t, "UpdatedAt defaults to CreatedAt", g.UpdatedAt, a.CreatedAt)
	if g.Domains == nil || len(g.Domains) != 0 {
		t.Errorf("Domains = %#v, want empty non-nil", g.Domains)
	}
	if g.Spec != nil || g.Node != nil {
		t.Errorf("empty blobs came back as %#v, %#v; want nil", g.Spec, g.Node)
	}
}

// ---- apps

func testAppRoundTrip(t *testing.T, s store.Store) {
	alice := mkUser(t, s, "alice")
	web := mkProject(t, s, alice, "web")
	a := newApp(alice, web, "shop", "shop.example.com", "www.shop.example.com")
	a.Status = store.StatusInitializing
	a.UpdatedAt = at(100)
	a.Node = []byte(`{"pid":42}`)
	a.Error = ""
	want := *a
	ok(t, s.CreateApp(ctx, a), "CreateApp")
	eqApp(t, getApp(t, s, a.ID), &want)

	// The struct handed to CreateApp holds the stored (normalized) values.
	eqApp(t, a, &want)

	isErr(t, s.CreateApp(ctx, newAppWithID(a.ID, alice, web, "dup")), store.ErrConflict, "CreateApp same id")
	_, err := s.GetApp(ctx, "app-nope")
	isErr(t, err, store.ErrNotFound, "GetApp unknown")

	if err := s.CreateApp(ctx, &store.App{ID: "bad", OwnerID: alice.ID, Status: "exploded"}); err == nil {
		t.Errorf("CreateApp with an unknown status succeeded")
	}

	// An app created stopped holds no domains and has a StoppedAt.
	st := newApp(alice, web, "old", "shop.example.com")
	st.Status = store.StatusStopped
	ok(t, s.CreateApp(ctx, st), "CreateApp stopped with a taken domain")
	g := getApp(t, s, st.ID)
	if g.StoppedAt == nil {
		t.Errorf("app created stopped has no StoppedAt")
	}
	d, err := s.AppByDomain(ctx, "shop.example.com")
	ok(t, err, "AppByDomain")
	if d.ID != a.ID {
		t.Errorf("AppByDomain = %s, want %s", d.ID, a.ID)
	}
}

func newAppWithID(id string, owner *store.User, p *store.Project, name string) *store.App {
	a := newApp(owner, p, name)
	a.ID = id
	return a
}

func testAppReferences(t *testing.T, s store.Store) {
	alice, bob := mkUser(t, s, "alice"), mkUser(t, s, "bob")
	bobs := mkProject(t, s, bob, "web")
	isErr(t, s.CreateApp(ctx, newApp(&store.User{ID: "u-nobody"}, nil, "x")), store.ErrNotFound, "CreateApp unknown owner")
	isErr(t, s.CreateApp(ctx, newApp(alice, &store.Project{ID: "p-nope"}, "x")), store.ErrNotFound, "CreateApp unknown project")
	isErr(t, s.CreateApp(ctx, newApp(alice, bobs, "x", "x.example")), store.ErrNotFound, "CreateApp in another owner's project")
	// Without a project.
	a := mkApp(t, s, alice, nil, "loose", "x.example")
	if g := getApp(t, s, a.ID); g.ProjectID != "" {
		t.Errorf("ProjectID = %q, want empty", g.ProjectID)
	}
	as, err := s.ListApps(ctx, store.AppFilter{})
	ok(t, err, "ListApps")
	if len(as) != 1 {
		t.Errorf("ListApps = %v, want only %s (failed inserts left rows)", ids(as), a.ID)
	}
}

func testTimes(t *testing.T, s store.Store) {
	alice := mkUser(t, s, "alice")
	a := newApp(alice, nil, "t")
	nanos := time.Date(2031, 12, 31, 23, 59, 59, 999999999, time.FixedZone("Y", -7*3600))
	a.CreatedAt = nanos
	a.UpdatedAt = nanos.Add(time.Nanosecond * 1500)
	a.ExpiresAt = time.Time{} // zero survives
	ok(t, s.CreateApp(ctx, a), "CreateApp")
	g := getApp(t, s, a.ID)
	eqTime(t, "CreatedAt", g.CreatedAt, nanos)
	if g.CreatedAt.Nanosecond() != 999999000 {
		t.Errorf("CreatedAt nanos = %d, want 999999000 (truncated to µs, not rounded)", g.CreatedAt.Nanosecond())
	}
	eqTime(t, "UpdatedAt", g.UpdatedAt, nanos.Add(1500))
	if !g.ExpiresAt.IsZero() {
		t.Errorf("zero ExpiresAt came back as %v", g.ExpiresAt)
	}
	// A far future and an old time.
	b := newApp(alice, nil, "t2")
	b.CreatedAt = time.Date(1970, 1, 1, 0, 0, 0, 1000, time.UTC)
	b.ExpiresAt = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
	ok(t, s.CreateApp(ctx, b), "CreateApp b")
	gb := getApp(t, s, b.ID)
	eqTime(t, "CreatedAt 1970", gb.CreatedAt, b.CreatedAt)
	eqTime(t, "ExpiresAt 9999", gb.ExpiresAt, b.ExpiresAt)
}

func testBlobs(t *testing.T, s store.Store) {
	alice := mkUser(t, s, "alice")
	spec := []byte("{\n  \"name\": \"x\",  \"emoji\": \"\u00e9\u2603\",\n\t\"raw\": \"\\u0000\"\n}\n")
	odd := make([]byte, 0, 512)
	for i := range 256 {
		odd = append(odd, byte(i), byte(255-i))
	}
	for i, b := range [][]byte{spec, odd, []byte(`{}`), []byte{0}} {
		a := newApp(alice, nil, fmt.Sprintf("b%d", i))
		a.Spec = b
		a.Node = slices.Clone(b)
		ok(t, s.CreateApp(ctx, a), "CreateApp")
		g := getApp(t, s, a.ID)
		if !bytes.Equal(g.Spec, b) || !bytes.Equal(g.Node, b) {
			t.Errorf("blob %d: Spec/Node not byte-exact:\n got %q\n     %q\nwant %q", i, g.Spec, g.Node, b)
		}
		ok(t, s.SetAppNode(ctx, a.ID, odd, at(1)), "SetAppNode")
		if g := getApp(t, s, a.ID); !bytes.Equal(g.Node, odd) {
			t.Errorf("SetAppNode blob not byte-exact: %q", g.Node)
		}
	}
}

func testListAppsFilters(t *testing.T, s store.Store) {
	alice, bob := mkUser(t, s, "alice"), mkUser(t, s, "bob")
	aw, aa, bw := mkProject(t, s, alice, "web"), mkProject(t, s, alice, "api"), mkProject(t, s, bob, "web")
	a1 := mkApp(t, s, alice, aw, "front")
	a2 := mkApp(t, s, alice, aw, "front")
	a3 := mkApp(t, s, alice, aa, "back")
	b1 := mkApp(t, s, bob, bw, "front")
	ok(t, s.TransitionApp(ctx, a1.ID, []store.AppStatus{store.StatusSpawning}, store.StatusStopped, "", at(50)), "stop a1")
	ok(t, s.TransitionApp(ctx, a3.ID, []store.AppStatus{store.StatusSpawning}, store.StatusRunning, "", at(50)), "run a3")
	ok(t, s.TransitionApp(ctx, b1.ID, []store.AppStatus{store.StatusSpawning}, store.StatusOnError, "boom", at(50)), "fail b1")

	for _, c := range []struct {
		name string
		f    store.AppFilter
		want []*store.App
	}{
		{"all", store.AppFilter{}, []*store.App{b1, a3, a2, a1}},
		{"owner", store.AppFilter{OwnerID: alice.ID}, []*store.App{a3, a2, a1}},
		{"project", store.AppFilter{ProjectID: aw.ID}, []*store.App{a2, a1}},
		{"name", store.AppFilter{Name: "front"}, []*store.App{b1, a2, a1}},
		{"owner+name", store.AppFilter{OwnerID: bob.ID, Name: "front"}, []*store.App{b1}},
		{"status", store.AppFilter{Statuses: []store.AppStatus{store.StatusRunning}}, []*store.App{a3}},
		{"statuses", store.AppFilter{Statuses: []store.AppStatus{store.StatusStopped, store.StatusOnError}}, []*store.App{b1, a1}},
		{"active", store.AppFilter{OwnerID: alice.ID, Statuses: store.ActiveStatuses}, []*store.App{a3, a2}},
		{"all four", store.AppFilter{OwnerID: alice.ID, ProjectID: aw.ID, Name: "front", Statuses: []store.AppStatus{store.StatusStopped}}, []*store.App{a1}},
		{"none", store.AppFilter{OwnerID: bob.ID, ProjectID: aw.ID}, nil},
		{"unknown owner", store.AppFilter{OwnerID: "u-nobody"}, nil},
	} {
		got, err := s.ListApps(ctx, c.f)
		ok(t, err, "ListApps "+c.name)
		var want []string
		for _, a := range c.want {
			want = append(want, a.ID)
		}
		if !slices.Equal(ids(got), want) { // nil and empty are equal
			t.Errorf("ListApps %s = %v, want %v", c.name, ids(got), want)
		}
	}
	got, err := s.ListApps(ctx, store.AppFilter{Name: "back"})
	ok(t, err, "ListApps back")
	if len(got) != 1 {
		t.Fatalf("ListApps back = %v", ids(got))
	}
	want := *a3
	want.Status, want.UpdatedAt = store.StatusRunning, tr(at(50))
	eqApp(t, &got[0], &want)
}

func testListAppsNewestFirst(t *testing.T, s store.Store) {
	alice := mkUser(t, s, "alice")
	var want []string
	// Created out of time order, and some at the same instant: newest
	// CreatedAt first, ties by insertion order, last inserted first.
	for i, sec := range []int{5, 1, 9, 3, 3, 3, 7, 9} {
		a := newApp(alice, nil, fmt.Sprintf("n%d", i))
		a.CreatedAt = at(sec)
		ok(t, s.CreateApp(ctx, a), "CreateApp")
		want = append(want, a.ID)
	}
	// Expected: sec 9 (i=7, i=2), 7 (i=6), 5 (i=0), 3 (i=5, 4, 3), 1 (i=1).
	order := []int{7, 2, 6, 0, 5, 4, 3, 1}
	var exp []string
	for _, i := range order {
		exp = append(exp, want[i])
	}
	got, err := s.ListApps(ctx, store.AppFilter{OwnerID: alice.ID})
	ok(t, err, "ListApps")
	if !slices.Equal(ids(got), exp) {
		t.Errorf("ListApps order = %v\nwant %v", ids(got), exp)
	}
	// Sub-second differences count.
	x := newApp(alice, nil, "micro")
	x.CreatedAt = at(9).Add(time.Microsecond)
	ok(t, s.CreateApp(ctx, x), "CreateApp micro")
	y := newApp(alice, nil, "micro-earlier")
	y.CreatedAt = at(9).Add(-time.Microsecond)
	ok(t, s.CreateApp(ctx, y), "CreateApp micro-earlier")
	got, _ = s.ListApps(ctx, store.AppFilter{OwnerID: alice.ID})
	if len(got) < 4 || got[0].ID != x.ID || got[3].ID != y.ID {
		t.Errorf("ListApps with µs differences = %v", ids(got))
	}
}

func testSetAppNode(t *testing.T, s store.Store) {
	alice := mkUser(t, s, "alice")
	a := mkApp(t, s, alice, nil, "n")
	if g := getApp(t, s, a.ID); g.Node != nil {
		t.Errorf("Node before SetAppNode = %q", g.Node)
	}
	node := []byte(`{"kind":"local","pid":1234,"port":40001}`)
	ok(t, s.SetAppNode(ctx, a.ID, node, at(77)), "SetAppNode")
	g := getApp(t, s, a.ID)
	if !bytes.Equal(g.Node, node) {
		t.Errorf("Node = %q", g.Node)
	}
	eqTime(t, "UpdatedAt", g.UpdatedAt, at(77))
	if g.Status != store.StatusSpawning {
		t.Errorf("SetAppNode changed the status to %s", g.Status)
	}
	isErr(t, s.SetAppNode(ctx, "app-nope", node, at(1)), store.ErrNotFound, "SetAppNode unknown")
}

func testClaimSpawn(t *testing.T, s store.Store) {
	alice := mkUser(t, s, "alice")
	a := mkApp(t, s, alice, nil, "claim")
	seen := getApp(t, s, a.ID).UpdatedAt
	isErr(t, s.ClaimSpawn(ctx, a.ID, seen.Add(-time.Second), at(100)), store.ErrConflict, "ClaimSpawn with a stale UpdatedAt")
	eqTime(t, "UpdatedAt after a refused claim", getApp(t, s, a.ID).UpdatedAt, seen)
	ok(t, s.ClaimSpawn(ctx, a.ID, seen, at(100)), "ClaimSpawn")
	g := getApp(t, s, a.ID)
	eqTime(t, "UpdatedAt after ClaimSpawn", g.UpdatedAt, at(100))
	if g.Status != store.StatusSpawning || g.Node != nil {
		t.Errorf("ClaimSpawn changed more than UpdatedAt: %s, node %q", g.Status, g.Node)
	}
	// The same claim again: the first one moved UpdatedAt.
	isErr(t, s.ClaimSpawn(ctx, a.ID, seen, at(101)), store.ErrConflict, "ClaimSpawn again with the old UpdatedAt")
	// A claim taken over from an expired one sees the claim's time.
	ok(t, s.ClaimSpawn(ctx, a.ID, at(100), at(200)), "ClaimSpawn over an expired claim")
	// An app with a node, or no longer spawning, cannot be claimed.
	ok(t, s.SetAppNode(ctx, a.ID, []byte(`{"pid":1}`), at(300)), "SetAppNode")
	isErr(t, s.ClaimSpawn(ctx, a.ID, at(300), at(301)), store.ErrConflict, "ClaimSpawn of an app with a node")
	b := mkApp(t, s, alice, nil, "moved")
	ok(t, s.TransitionApp(ctx, b.ID, spawning, store.StatusStopped, "stopped", at(400)), "→ stopped")
	isErr(t, s.ClaimSpawn(ctx, b.ID, at(400), at(401)), store.ErrConflict, "ClaimSpawn of a stopped app")
	isErr(t, s.ClaimSpawn(ctx, "app-nope", at(1), at(2)), store.ErrNotFound, "ClaimSpawn unknown")
}

// claimRace has workers claim one app's spawn at once, half through a, half
// through b: exactly one wins.
func claimRace(t *testing.T, a, b store.Store, id string, seen time.Time, workers int) {
	t.Helper()
	race(t, "ClaimSpawn", workers, func(w int) error {
		s := a
		if w%2 == 1 {
			s = b
		}
		return s.ClaimSpawn(ctx, id, seen, at(1000+w))
	})
}

// race runs try(0..workers-1) at once and requires exactly one success;
// the others must fail with ErrConflict. It returns the winner's index.
func race(t *testing.T, what string, workers int, try func(w int) error) int {
	t.Helper()
	var wins atomic.Int32
	var winner atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			switch err := try(w); {
			case err == nil:
				wins.Add(1)
				winner.Store(int32(w))
			case errors.Is(err, store.ErrConflict):
			default:
				errs <- err
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent %s: unexpected error %v", what, err)
	}
	if n := wins.Load(); n != 1 {
		t.Fatalf("%d concurrent %s won, want exactly 1", n, what)
	}
	return int(winner.Load())
}

func testClaimSpawnConcurrent(t *testing.T, s store.Store) {
	alice := mkUser(t, s, "alice")
	for range 5 {
		a := mkApp(t, s, alice, nil, "race")
		claimRace(t, s, s, a.ID, getApp(t, s, a.ID).UpdatedAt, 24)
	}
}

// RunReplicas checks what several backends on one database rely on: open
// returns two handles on one fresh, empty database (two pools, as two
// processes would have); compare-and-set transitions and spawn claims made
// through both at once have exactly one winner.
func RunReplicas(t *testing.T, open func(t *testing.T) (store.Store, store.Store)) {
	t.Run("TransitionAcrossHandles", func(t *testing.T) {
		a, b := open(t)
		alice := mkUser(t, a, "alice")
		for r := range 5 {
			app := mkApp(t, a, alice, nil, "race", fmt.Sprintf("race%d.example", r))
			race(t, fmt.Sprintf("stops across two handles (round %d)", r), 16, func(w int) error {
				s := a
				if w%2 == 1 {
					s = b
				}
				// Half stop it (a user), half expire it (the loop).
				reason := "stopped by alice"
				if w%4 >= 2 {
					reason = "expired"
				}
				return s.TransitionApp(ctx, app.ID, active, store.StatusStopped, reason, at(100+w))
			})
			if g := getApp(t, b, app.ID); g.Status != store.StatusStopped {
				t.Errorf("status through the other handle = %s", g.Status)
			}
			// The domain is free for a new app, seen through either handle.
			if _, err := b.AppByDomain(ctx, fmt.Sprintf("race%d.example", r)); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("AppByDomain after the stop: %v", err)
			}
		}
	})
	t.Run("ClaimSpawnAcrossHandles", func(t *testing.T) {
		a, b := open(t)
		alice := mkUser(t, a, "alice")
		for range 5 {
			app := mkApp(t, a, alice, nil, "race")
			claimRace(t, a, b, app.ID, getApp(t, b, app.ID).UpdatedAt, 16)
		}
	})
}

// ---- transitions and domains

var (
	spawning     = []store.AppStatus{store.StatusSpawning}
	initializing = []store.AppStatus{store.StatusInitializing}
	active       = store.ActiveStatuses
)

func testTransitionCAS(t *testing.T, s store.Store) {
	alice := mkUser(t, s, "alice")
	a := mkApp(t, s, alice, nil, "cas", "cas.example")

	ok(t, s.TransitionApp(ctx, a.ID, spawning, store.StatusInitializing, "", at(10)), "spawning → initializing")
	g := getApp(t, s, a.ID)
	if g.Status != store.StatusInitializing || g.StoppedAt != nil {
		t.Errorf("after transition: %s, StoppedAt %v", g.Status, g.StoppedAt)
	}
	eqTime(t, "UpdatedAt", g.UpdatedAt, at(10))

	// from does not hold the current status: conflict, nothing changes.
	err := s.TransitionApp(ctx, a.ID, spawning, store.StatusRunning, "", at(20))
	isErr(t, err, store.ErrConflict, "stale from")
	g = getApp(t, s, a.ID)
	if g.Status != store.StatusInitializing {
		t.Errorf("status after a refused transition = %s", g.Status)
	}
	eqTime(t, "UpdatedAt after a refused transition", g.UpdatedAt, at(10))
	isErr(t, s.TransitionApp(ctx, a.ID, nil, store.StatusRunning, "", at(20)), store.ErrConflict, "empty from")
	isErr(t, s.TransitionApp(ctx, "app-nope", spawning, store.StatusRunning, "", at(20)), store.ErrNotFound, "unknown app")
	if err := s.TransitionApp(ctx, a.ID, initializing, "exploded", "", at(20)); err == nil || errors.Is(err, store.ErrConflict) {
		t.Errorf("transition to an unknown status: err = %v, want a non-conflict error", err)
	}

	ok(t, s.TransitionApp(ctx, a.ID, []store.AppStatus{store.StatusSpawning, store.StatusInitializing}, store.StatusRunning, "ignored", at(30)), "initializing → running")
	g = getApp(t, s, a.ID)
	if g.Status != store.StatusRunning || g.Error != "" {
		t.Errorf("after running: status %s, error %q (errMsg only stored for on_error)", g.Status, g.Error)
	}
	ok(t, s.TransitionApp(ctx, a.ID, active, store.StatusOnError, "enclave crashed", at(40)), "running → on_error")
	g = getApp(t, s, a.ID)
	if g.Status != store.StatusOnError || g.Error != "enclave crashed" {
		t.Errorf("after on_error: status %s, error %q", g.Status, g.Error)
	}
	eqTimeP(t, "StoppedAt", g.StoppedAt, new(at(40)))
	isErr(t, s.TransitionApp(ctx, a.ID, active, store.StatusStopped, "", at(50)), store.ErrConflict, "on_error is not active")
	// on_error → stopped when allowed: StoppedAt keeps the first stop.
	ok(t, s.TransitionApp(ctx, a.ID, []store.AppStatus{store.StatusOnError}, store.StatusStopped, "", at(60)), "on_error → stopped")
	g = getApp(t, s, a.ID)
	eqTimeP(t, "StoppedAt kept", g.StoppedAt, new(at(40)))
	if g.Error != "enclave crashed" {
		t.Errorf("Error after on_error → stopped = %q, want kept", g.Error)
	}
	// A stop with a reason records it.
	b := mkApp(t, s, alice, nil, "reason", "reason.example")
	ok(t, s.TransitionApp(ctx, b.ID, active, store.StatusStopped, "expired", at(70)), "→ stopped with a reason")
	if g := getApp(t, s, b.ID); g.Error != "expired" {
		t.Errorf("stop reason = %q, want expired", g.Error)
	}
}

func testTransitionReleasesDomains(t *testing.T, s store.Store) {
	alice, bob := mkUser(t, s, "alice"), mkUser(t, s, "bob")
	for _, to := range []store.AppStatus{store.StatusStopped, store.StatusOnError} {
		d := string(to) + ".example"
		a := mkApp(t, s, alice, nil, "first", d, "www."+d)
		isErr(t, s.CreateApp(ctx, newApp(bob, nil, "second", d)), store.ErrConflict, "domain held by "+string(to)+"-to-be app")
		ok(t, s.TransitionApp(ctx, a.ID, active, to, "x", at(5)), "→ "+string(to))
		g := getApp(t, s, a.ID)
		if g.StoppedAt == nil {
			t.Errorf("StoppedAt not set on %s", to)
		}
		if !slices.Equal(g.Domains, []string{d, "www." + d}) {
			t.Errorf("Domains after %s = %q, want kept as history", to, g.Domains)
		}
		_, err := s.AppByDomain(ctx, d)
		isErr(t, err, store.ErrNotFound, "AppByDomain after "+string(to))
		b := mkApp(t, s, bob, nil, "second", d) // claims the released domain
		h, err := s.AppByDomain(ctx, d)
		ok(t, err, "AppByDomain new holder")
		if h.ID != b.ID {
			t.Errorf("AppByDomain = %s, want %s", h.ID, b.ID)
		}
		// www. is free too.
		mkApp(t, s, bob, nil, "third", "www."+d)
	}
}

func testTransitionRestart(t *testing.T, s store.Store) {
	alice := mkUser(t, s, "alice")
	a := mkApp(t, s, alice, nil, "r", "r.example")
	ok(t, s.TransitionApp(ctx, a.ID, active, store.StatusOnError, "oops", at(5)), "→ on_error")
	// Coming back from a terminal status (only when the caller allows it)
	// claims the domains again.
	ok(t, s.TransitionApp(ctx, a.ID, []store.AppStatus{store.StatusOnError}, store.StatusSpawning, "", at(6)), "on_error → spawning")
	g := getApp(t, s, a.ID)
	if g.StoppedAt != nil || g.Error != "" || g.Status != store.StatusSpawning {
		t.Errorf("after restart: %s, StoppedAt %v, Error %q", g.Status, g.StoppedAt, g.Error)
	}
	if h, err := s.AppByDomain(ctx, "r.example"); err != nil || h.ID != a.ID {
		t.Errorf("AppByDomain after restart = %v, %v", h, err)
	}
	// Stopped, the domain taken by another app: the restart is refused and
	// nothing changes.
	ok(t, s.TransitionApp(ctx, a.ID, active, store.StatusStopped, "", at(7)), "→ stopped")
	b := mkApp(t, s, alice, nil, "thief", "r.example")
	isErr(t, s.TransitionApp(ctx, a.ID, []store.AppStatus{store.StatusStopped}, store.StatusRunning, "", at(8)), store.ErrConflict, "restart with a taken domain")
	g = getApp(t, s, a.ID)
	if g.Status != store.StatusStopped || g.StoppedAt == nil {
		t.Errorf("after a refused restart: %s, StoppedAt %v", g.Status, g.StoppedAt)
	}
	if h, err := s.AppByDomain(ctx, "r.example"); err != nil || h.ID != b.ID {
		t.Errorf("AppByDomain after refused restart = %v, %v", h, err)
	}
}

func testTransitionConcurrent(t *testing.T, s store.Store) {
	alice := mkUser(t, s, "alice")
	const rounds, workers = 5, 24
	for r := range rounds {
		a := mkApp(t, s, alice, nil, "race", fmt.Sprintf("race%d.example", r))
		targets := []store.AppStatus{store.StatusInitializing, store.StatusRunning, store.StatusStopped, store.StatusOnError}
		w := race(t, fmt.Sprintf("TransitionApp (round %d)", r), workers, func(w int) error {
			return s.TransitionApp(ctx, a.ID, spawning, targets[w%len(targets)], fmt.Sprint("worker ", w), at(100+w))
		})
		g := getApp(t, s, a.ID)
		if want := targets[w%len(targets)]; g.Status != want {
			t.Errorf("status %s, the winner set %s", g.Status, want)
		}
	}
}

func testCreateAppDomainConflict(t *testing.T, s store.Store) {
	alice, bob := mkUser(t, s, "alice"), mkUser(t, s, "bob")
	a := mkApp(t, s, alice, nil, "holder", "taken.example")
	for _, st := range store.ActiveStatuses {
		c := newApp(bob, nil, "claimer", "free.example", "taken.example", "also-free.example")
		c.Status = st
		err := s.CreateApp(ctx, c)
		isErr(t, err, store.ErrConflict, "CreateApp with a held domain")
		_, err = s.GetApp(ctx, c.ID)
		isErr(t, err, store.ErrNotFound, "GetApp of the refused app (partial insert?)")
	}
	as, err := s.ListApps(ctx, store.AppFilter{})
	ok(t, err, "ListApps")
	if !slices.Equal(ids(as), []string{a.ID}) {
		t.Errorf("apps after refused creates = %v", ids(as))
	}
	for _, d := range []string{"free.example", "also-free.example"} {
		_, err := s.AppByDomain(ctx, d)
		isErr(t, err, store.ErrNotFound, "claim left behind for "+d)
	}
	// The free domains were not claimed: another app gets them.
	mkApp(t, s, bob, nil, "later", "free.example", "also-free.example")
	// An app listing the same domain twice claims it once.
	mkApp(t, s, bob, nil, "twice", "dup.example", "dup.example")
}

func testCreateAppConcurrentDomain(t *testing.T, s store.Store) {
	alice := mkUser(t, s, "alice")
	const workers = 24
	race(t, "CreateApp", workers, func(w int) error {
		// Overlapping sets in different orders: one must win, no deadlock.
		ds := []string{"a.example", "b.example", fmt.Sprintf("own%d.example", w)}
		if w%2 == 1 {
			ds = []string{fmt.Sprintf("own%d.example", w), "b.example", "a.example"}
		}
		return s.CreateApp(ctx, newApp(alice, nil, fmt.Sprint("c", w), ds...))
	})
	as, err := s.ListApps(ctx, store.AppFilter{})
	ok(t, err, "ListApps")
	if len(as) != 1 {
		t.Fatalf("apps = %v, want 1", ids(as))
	}
	for w := range workers {
		d := fmt.Sprintf("own%d.example", w)
		h, err := s.AppByDomain(ctx, d)
		if err == nil && h.ID != as[0].ID {
			t.Errorf("%s held by %s, a loser", d, h.ID)
		}
	}
}

func testDomainsCaseInsensitive(t *testing.T, s store.Store) {
	alice := mkUser(t, s, "alice")
	a := mkApp(t, s, alice, nil, "c", "Shop.Example.COM")
	isErr(t, s.CreateApp(ctx, newApp(alice, nil, "d", "shop.example.com.")), store.ErrConflict, "same domain, other case")
	h, err := s.AppByDomain(ctx, "SHOP.example.com.")
	ok(t, err, "AppByDomain other case")
	if h.ID != a.ID {
		t.Errorf("AppByDomain = %s", h.ID)
	}
	if g := getApp(t, s, a.ID); !slices.Equal(g.Domains, []string{"Shop.Example.COM"}) {
		t.Errorf("Domains = %q, want as given", g.Domains)
	}
}

func testAppByDomain(t *testing.T, s store.Store) {
	alice := mkUser(t, s, "alice")
	_, err := s.AppByDomain(ctx, "none.example")
	isErr(t, err, store.ErrNotFound, "AppByDomain unknown")
	a := mkApp(t, s, alice, nil, "x", "x.example", "y.example")
	for _, st := range []store.AppStatus{store.StatusInitializing, store.StatusRunning} {
		ok(t, s.TransitionApp(ctx, a.ID, active, st, "", at(1)), "→ "+string(st))
		for _, d := range []string{"x.example", "y.example"} {
			h, err := s.AppByDomain(ctx, d)
			ok(t, err, "AppByDomain "+d)
			if h.ID != a.ID || h.Status != st {
				t.Errorf("AppByDomain(%s) = %s %s", d, h.ID, h.Status)
			}
		}
	}
	// A stopped app created with a domain is never returned.
	st := newApp(alice, nil, "s", "s.example")
	st.Status = store.StatusStopped
	ok(t, s.CreateApp(ctx, st), "CreateApp stopped")
	_, err = s.AppByDomain(ctx, "s.example")
	isErr(t, err, store.ErrNotFound, "AppByDomain of a stopped app")
}

// testConcurrentLoad drives every method from many goroutines at once: no
// driver may surface a busy/locked error or lose a write.
func testConcurrentLoad(t *testing.T, s store.Store) {
	alice := mkUser(t, s, "alice")
	p := mkProject(t, s, alice, "load")
	const workers, per = 16, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers*per)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				a := newApp(alice, p, fmt.Sprint("w", w), fmt.Sprintf("w%d-%d.example", w, i))
				if err := s.CreateApp(ctx, a); err != nil {
					errs <- fmt.Errorf("CreateApp: %w", err)
					continue
				}
				if err := s.SetAppNode(ctx, a.ID, []byte(`{}`), at(i)); err != nil {
					errs <- fmt.Errorf("SetAppNode: %w", err)
				}
				if err := s.TransitionApp(ctx, a.ID, spawning, store.StatusRunning, "", at(i)); err != nil {
					errs <- fmt.Errorf("TransitionApp: %w", err)
				}
				if _, err := s.ListApps(ctx, store.AppFilter{OwnerID: alice.ID, Name: a.Name}); err != nil {
					errs <- fmt.Errorf("ListApps: %w", err)
				}
				if _, err := s.AppByDomain(ctx, a.Domains[0]); err != nil {
					errs <- fmt.Errorf("AppByDomain: %w", err)
				}
				if i%3 == 0 {
					if err := s.TransitionApp(ctx, a.ID, active, store.StatusStopped, "", at(i)); err != nil {
						errs <- fmt.Errorf("TransitionApp stop: %w", err)
					}
				}
				if err := s.CreateToken(ctx, &store.Token{UserID: alice.ID, Hash: uuid.NewString()}); err != nil {
					errs <- fmt.Errorf("CreateToken: %w", err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 10 {
			t.Error(err)
		}
	}
	as, err := s.ListApps(ctx, store.AppFilter{ProjectID: p.ID})
	ok(t, err, "ListApps")
	if len(as) != workers*per {
		t.Errorf("%d apps, want %d", len(as), workers*per)
	}
	running, err := s.ListApps(ctx, store.AppFilter{Statuses: []store.AppStatus{store.StatusRunning}})
	ok(t, err, "ListApps running")
	if want := workers * (per - (per+2)/3); len(running) != want {
		t.Errorf("%d running apps, want %d", len(running), want)
	}
	ts, err := s.ListTokens(ctx, alice.ID)
	ok(t, err, "ListTokens")
	if len(ts) != workers*per {
		t.Errorf("%d tokens, want %d", len(ts), workers*per)
	}
}

func testCanceledContext(t *testing.T, s store.Store) {
	alice := mkUser(t, s, "alice")
	c, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.CreateApp(c, newApp(alice, nil, "canceled", "c.example")); err == nil {
		t.Errorf("CreateApp with a canceled context succeeded")
	}
	if _, err := s.ListApps(c, store.AppFilter{}); err == nil {
		t.Errorf("ListApps with a canceled context succeeded")
	}
	// The store is still usable and nothing was written.
	as, err := s.ListApps(ctx, store.AppFilter{})
	ok(t, err, "ListApps")
	if len(as) != 0 {
		t.Errorf("apps after a canceled CreateApp: %v", ids(as))
	}
	mkApp(t, s, alice, nil, "after", "c.example")
}

// testListAppsPages: Limit and After page through ListApps's order, ties of
// CreatedAt included, with the other filters applied on every page.
func testListAppsPages(t *testing.T, s store.Store) {
	alice := mkUser(t, s, "alice")
	bob := mkUser(t, s, "bob")
	for i, sec := range []int{5, 1, 9, 3, 3, 3, 7, 9, 2, 2, 8} {
		a := newApp(alice, nil, fmt.Sprintf("p%d", i))
		a.CreatedAt = at(sec)
		ok(t, s.CreateApp(ctx, a), "CreateApp")
		if i%3 == 0 {
			ok(t, s.TransitionApp(ctx, a.ID, []store.AppStatus{store.StatusSpawning}, store.StatusStopped, "", at(20)), "stop")
		}
		b := newApp(bob, nil, fmt.Sprintf("q%d", i))
		b.CreatedAt = at(sec)
		ok(t, s.CreateApp(ctx, b), "CreateApp bob")
	}
	for _, f := range []store.AppFilter{
		{OwnerID: alice.ID},
		{OwnerID: alice.ID, Statuses: []store.AppStatus{store.StatusSpawning}},
		{},
	} {
		all, err := s.ListApps(ctx, f)
		ok(t, err, "ListApps")
		for _, limit := range []int{1, 2, 3, 4, 100} {
			var got []string
			pf := f
			pf.Limit = limit
			for pages := 0; ; pages++ {
				if pages > len(all)+1 {
					t.Fatalf("limit %d: paging does not end", limit)
				}
				page, err := s.ListApps(ctx, pf)
				ok(t, err, "ListApps page")
				if len(page) > limit {
					t.Fatalf("limit %d: a page of %d", limit, len(page))
				}
				got = append(got, ids(page)...)
				if len(page) < limit {
					break
				}
				pf.After = page[len(page)-1].ID
			}
			if !slices.Equal(got, ids(all)) {
				t.Errorf("filter %+v, limit %d: pages give %v\nwant %v", f, limit, got, ids(all))
			}
		}
	}
	page, err := s.ListApps(ctx, store.AppFilter{OwnerID: alice.ID, After: "no-such-app"})
	ok(t, err, "ListApps after an unknown id")
	if len(page) != 0 {
		t.Errorf("after an unknown id: %v, want none", ids(page))
	}
}

// testQuotas: a user without a quota is unlimited; SetQuota sets and
// replaces it; a quota for no user is ErrNotFound.
func testQuotas(t *testing.T, s store.Store) {
	alice := mkUser(t, s, "alice")
	q, err := s.GetQuota(ctx, alice.ID)
	ok(t, err, "GetQuota")
	if *q != (store.Quota{UserID: alice.ID}) {
		t.Errorf("default quota = %+v, want unlimited", q)
	}
	want := store.Quota{UserID: alice.ID, ActiveApps: 3, MemoryMiB: 8192, Cores: 4, BundleBytes: 5 << 30, LogFollows: 2}
	ok(t, s.SetQuota(ctx, &want), "SetQuota")
	q, err = s.GetQuota(ctx, alice.ID)
	ok(t, err, "GetQuota")
	if *q != want {
		t.Errorf("quota = %+v, want %+v", q, want)
	}
	want = store.Quota{UserID: alice.ID, ActiveApps: 1}
	ok(t, s.SetQuota(ctx, &want), "SetQuota again")
	if q, _ = s.GetQuota(ctx, alice.ID); *q != want {
		t.Errorf("replaced quota = %+v, want %+v", q, want)
	}
	isErr(t, s.SetQuota(ctx, &store.Quota{UserID: "u-nobody", ActiveApps: 1}), store.ErrNotFound, "SetQuota for no user")
}

// testDomainReservations: a domain is reserved by one user; the same user
// reserving it again keeps the first reservation; another user gets
// ErrConflict that does not name the holder; release frees it.
func testDomainReservations(t *testing.T, s store.Store) {
	alice, bob := mkUser(t, s, "alice"), mkUser(t, s, "bob")
	none, err := s.ListDomainReservations(ctx)
	ok(t, err, "ListDomainReservations of none")
	if none == nil || len(none) != 0 {
		t.Errorf("reservations before any = %#v, want empty and non-nil", none)
	}
	_, err = s.DomainReservation(ctx, "shop.example.com")
	isErr(t, err, store.ErrNotFound, "DomainReservation of a free domain")

	r := &store.DomainReservation{Domain: "Shop.Example.COM.", UserID: alice.ID, Proof: store.ProofCertificate, CreatedAt: at(3)}
	ok(t, s.ReserveDomain(ctx, r), "ReserveDomain")
	if r.Domain != "shop.example.com" {
		t.Errorf("Domain written back = %q, want the key form", r.Domain)
	}
	eqTime(t, "CreatedAt written back", r.CreatedAt, at(3))
	for _, d := range []string{"shop.example.com", "SHOP.example.com."} {
		g, err := s.DomainReservation(ctx, d)
		ok(t, err, "DomainReservation "+d)
		if g.Domain != "shop.example.com" || g.UserID != alice.ID || g.Proof != store.ProofCertificate {
			t.Errorf("DomainReservation(%s) = %+v", d, g)
		}
		eqTime(t, "CreatedAt", g.CreatedAt, at(3))
	}

	// The holder again: success, the first reservation kept.
	again := &store.DomainReservation{Domain: "shop.example.com", UserID: alice.ID, Proof: store.ProofAdmin, CreatedAt: at(9)}
	ok(t, s.ReserveDomain(ctx, again), "ReserveDomain by the holder again")
	if again.Proof != store.ProofCertificate {
		t.Errorf("proof after a second reservation = %q, want the first (%q)", again.Proof, store.ProofCertificate)
	}
	eqTime(t, "CreatedAt after a second reservation", again.CreatedAt, at(3))

	// Another user: ErrConflict, and the error does not name the holder.
	err = s.ReserveDomain(ctx, &store.DomainReservation{Domain: "shop.EXAMPLE.com", UserID: bob.ID, Proof: store.ProofCertificate})
	isErr(t, err, store.ErrConflict, "ReserveDomain by another user")
	for _, leak := range []string{alice.ID, alice.Name} {
		if strings.Contains(err.Error(), leak) {
			t.Errorf("conflict error %q names the holder (%q)", err, leak)
		}
	}
	if g, _ := s.DomainReservation(ctx, "shop.example.com"); g == nil || g.UserID != alice.ID {
		t.Errorf("reservation after a refused one = %+v", g)
	}

	isErr(t, s.ReserveDomain(ctx, &store.DomainReservation{Domain: "x.example", UserID: "u-nobody", Proof: store.ProofAdmin}),
		store.ErrNotFound, "ReserveDomain for no user")
	for _, bad := range []store.DomainReservation{
		{Domain: "", UserID: alice.ID, Proof: store.ProofAdmin},
		{Domain: "x.example", UserID: "", Proof: store.ProofAdmin},
		{Domain: "x.example", UserID: alice.ID, Proof: "dns"},
	} {
		err := s.ReserveDomain(ctx, &bad)
		if err == nil || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			t.Errorf("ReserveDomain(%+v) = %v, want an invalid-input error", bad, err)
		}
	}

	ok(t, s.ReserveDomain(ctx, &store.DomainReservation{Domain: "b.example", UserID: bob.ID, Proof: store.ProofAdmin, CreatedAt: at(5)}), "ReserveDomain bob")
	ok(t, s.ReserveDomain(ctx, &store.DomainReservation{Domain: "a.example", UserID: alice.ID, Proof: store.ProofAdmin, CreatedAt: at(6)}), "ReserveDomain a")
	domains := func(rs []store.DomainReservation) []string {
		out := []string{}
		for _, r := range rs {
			out = append(out, r.Domain+"="+r.UserID)
		}
		return out
	}
	all, err := s.ListDomainReservations(ctx)
	ok(t, err, "ListDomainReservations all")
	if want := []string{"a.example=" + alice.ID, "b.example=" + bob.ID, "shop.example.com=" + alice.ID}; !slices.Equal(domains(all), want) {
		t.Errorf("all reservations = %v, want %v", domains(all), want)
	}

	// Release frees the domain for anyone.
	ok(t, s.ReleaseDomain(ctx, "SHOP.example.com."), "ReleaseDomain")
	_, err = s.DomainReservation(ctx, "shop.example.com")
	isErr(t, err, store.ErrNotFound, "DomainReservation after release")
	isErr(t, s.ReleaseDomain(ctx, "shop.example.com"), store.ErrNotFound, "ReleaseDomain twice")
	ok(t, s.ReserveDomain(ctx, &store.DomainReservation{Domain: "shop.example.com", UserID: bob.ID, Proof: store.ProofCertificate}), "ReserveDomain by bob after release")

	// Reservations and app domain claims are independent: an active app of
	// alice may hold a domain that bob has reserved (the service decides).
	mkApp(t, s, alice, nil, "legacy", "b.example")
}

// testDomainReservationsConcurrent: of many users reserving one domain at
// once, exactly one holds it.
func testDomainReservationsConcurrent(t *testing.T, s store.Store) {
	const workers = 16
	users := make([]*store.User, workers)
	for i := range users {
		users[i] = mkUser(t, s, fmt.Sprint("u", i))
	}
	race(t, "ReserveDomain", workers, func(i int) error {
		return s.ReserveDomain(ctx, &store.DomainReservation{Domain: "race.example", UserID: users[i].ID, Proof: store.ProofCertificate})
	})
	rs, err := s.ListDomainReservations(ctx)
	ok(t, err, "ListDomainReservations")
	if len(rs) != 1 {
		t.Fatalf("reservations = %+v, want 1", rs)
	}
}
