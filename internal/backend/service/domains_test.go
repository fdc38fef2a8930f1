package service_test

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/backend/service"
	"github.com/mse-in-go/mse/internal/backend/service/servicetest"
	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/config"
	"github.com/mse-in-go/mse/internal/spec"
)

func ownerReq(e *servicetest.Env, name, domain, chain string) client.CreateAppRequest {
	r := request(e, name)
	r.TLSMode, r.Domain, r.OwnerCertificate = spec.TLSOwner, domain, chain
	return r
}

// noTrace checks that a refused request left no app of that name and no blob.
func noTrace(t *testing.T, e *servicetest.Env, u *store.User, name string) {
	t.Helper()
	apps, err := e.Service.ListApps(ctx, u, name, "", "", true)
	if err != nil || len(apps) != 0 {
		t.Errorf("refused app %q left %d apps (%v)", name, len(apps), err)
	}
	if ents, _ := os.ReadDir(e.BlobDir); len(ents) > 0 {
		for _, en := range ents {
			if !en.IsDir() && !strings.HasPrefix(en.Name(), ".") {
				if _, err := e.Store.GetApp(ctx, strings.TrimSuffix(en.Name(), ".bundle")); err != nil {
					t.Errorf("a bundle without an app is left: %s", en.Name())
				}
			}
		}
	}
}

// TestOwnerChainVerified: tls_mode owner needs a certificate that chains to
// a root this operator trusts, for the domain, for TLS servers, valid now
// (the backend's clock); each refusal names its cause and its fix.
func TestOwnerChainVerified(t *testing.T) {
	trusted, foreign := servicetest.NewCA(t, "Trusted CA"), servicetest.NewCA(t, "Foreign CA")
	e := servicetest.New(t, servicetest.TrustCAs(trusted))
	u, _ := e.User(t, "alice", false)
	const d = "shop.example.com"
	cases := []struct {
		name, domain, chain, msg string
	}{
		{"self-signed", d, servicetest.SelfSigned(t, d),
			"the owner certificate for shop.example.com does not chain to a root this operator trusts (test roots); use a certificate from a public CA, or ask the operator to add your CA with --owner-ca-file"},
		{"foreign CA", d, foreign.Leaf(t, d), "does not chain to a root this operator trusts (test roots)"},
		{"other domain", d, trusted.Leaf(t, "other.example.com"), "the owner certificate is not for shop.example.com (it names other.example.com)"},
		{"expired", d, trusted.LeafWith(t, servicetest.LeafOptions{NotAfter: e.Now().Add(-time.Hour)}, d), "is not valid at 2030-01-01T00:00:00Z"},
		{"not yet valid", d, trusted.LeafWith(t, servicetest.LeafOptions{NotBefore: e.Now().Add(time.Hour)}, d), "is not valid at"},
		{"client certificate", d, trusted.LeafWith(t, servicetest.LeafOptions{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, d), "is not for TLS servers"},
		{"not PEM", d, "-----BEGIN CERTIFICATE-----\n", "not a PEM certificate chain"},
		{"wildcard domain", "*.example.com", trusted.Leaf(t, "*.example.com"), "is a wildcard"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := strings.ReplaceAll(c.name, " ", "-")
			_, err := e.Service.CreateApp(ctx, u, ownerReq(e, name, c.domain, c.chain), bytes.NewReader(bundleBytes))
			if !errors.Is(err, service.ErrInvalid) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err = %v\nwant ErrInvalid with %q", err, c.msg)
			}
			noTrace(t, e, u, name)
		})
	}
	if rs, _ := e.Store.ListDomainReservations(ctx); len(rs) != 0 {
		t.Errorf("refused requests reserved %+v", rs)
	}
	// A wildcard certificate covers the domain; the chain may come without its root.
	leafOnly, _, _ := strings.Cut(trusted.Leaf(t, "*.example.com"), "-----END CERTIFICATE-----")
	a := create(t, e, u, ownerReq(e, "wild", d, leafOnly+"-----END CERTIFICATE-----\n"))
	if a.Domains[0] != d {
		t.Errorf("domains %q", a.Domains)
	}
}

// TestOwnerDomainReserved: the first owner-mode app of a tenant for a
// domain reserves it; another tenant, even with a valid certificate, is
// refused with 409 and learns nothing of the holder; the holder may deploy
// it again once its app stopped, not while it runs.
func TestOwnerDomainReserved(t *testing.T) {
	ca := servicetest.NewCA(t, "Public CA")
	e := servicetest.New(t, servicetest.TrustCAs(ca))
	alice, _ := e.User(t, "alice", false)
	bob, _ := e.User(t, "bob", false)
	const d = "shop.example.com"
	chain := ca.Leaf(t, d)
	first := create(t, e, alice, ownerReq(e, "shop", "Shop.Example.com.", chain))
	r, err := e.Store.DomainReservation(ctx, d)
	if err != nil || r.UserID != alice.ID || r.Proof != store.ProofCertificate || !r.CreatedAt.Equal(e.Now()) {
		t.Fatalf("reservation after the first owner app: %+v, %v", r, err)
	}

	for _, dom := range []string{d, "SHOP.example.com."} {
		_, err := e.Service.CreateApp(ctx, bob, ownerReq(e, "squat", dom, chain), bytes.NewReader(bundleBytes))
		if !errors.Is(err, service.ErrConflict) {
			t.Fatalf("another tenant with a valid certificate: %v, want ErrConflict", err)
		}
		if want := "conflict: domain shop.example.com is reserved by another account; if it is yours, ask the operator"; err.Error() != want {
			t.Errorf("message %q\nwant %q", err, want)
		}
		for _, leak := range []string{alice.ID, alice.Name, first.ID} {
			if strings.Contains(err.Error(), leak) {
				t.Errorf("the refusal names the holder (%q): %v", leak, err)
			}
		}
		noTrace(t, e, bob, "squat")
	}

	// The holder: the existing rule, one active app per domain.
	if _, err := e.Service.CreateApp(ctx, alice, ownerReq(e, "shop2", d, chain), bytes.NewReader(bundleBytes)); !errors.Is(err, service.ErrConflict) ||
		!strings.Contains(err.Error(), "domain shop.example.com is already used by a running app") {
		t.Errorf("second active app of the holder: %v", err)
	}
	if _, err := e.Service.StopApp(ctx, alice, first.ID); err != nil {
		t.Fatal(err)
	}
	create(t, e, alice, ownerReq(e, "shop3", d, chain))
	// A stopped app does not free the domain for others: the reservation stays.
	_, err = e.Service.CreateApp(ctx, bob, ownerReq(e, "squat", d, chain), bytes.NewReader(bundleBytes))
	if !errors.Is(err, service.ErrConflict) || !strings.Contains(err.Error(), "reserved by another account") {
		t.Errorf("bob after alice's restart: %v", err)
	}
	if rs, _ := e.Store.ListDomainReservations(ctx); len(rs) != 1 {
		t.Errorf("reservations %+v, want alice's only", rs)
	}
	// Released by the operator, the domain goes to the next tenant that proves it.
	if err := e.Store.ReleaseDomain(ctx, d); err != nil {
		t.Fatal(err)
	}
	for _, a := range mustList(t, e, alice) {
		e.Service.StopApp(ctx, alice, a.ID)
	}
	create(t, e, bob, ownerReq(e, "bobs", d, chain))
	if r, _ := e.Store.DomainReservation(ctx, d); r == nil || r.UserID != bob.ID {
		t.Errorf("reservation after release = %+v, want bob's", r)
	}
}

func mustList(t *testing.T, e *servicetest.Env, u *store.User) []store.App {
	t.Helper()
	apps, err := e.Service.ListApps(ctx, u, "", "", "", false)
	if err != nil {
		t.Fatal(err)
	}
	return apps
}

// TestOwnerDomainRace: two tenants deploying the same unreserved domain at
// once: exactly one gets it, the other a 409 and no app.
func TestOwnerDomainRace(t *testing.T) {
	ca := servicetest.NewCA(t, "Public CA")
	e := servicetest.New(t, servicetest.TrustCAs(ca))
	chain := ca.Leaf(t, "race.example.com")
	var users []*store.User
	for _, n := range []string{"u1", "u2", "u3", "u4"} {
		u, _ := e.User(t, n, false)
		users = append(users, u)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(users))
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.Service.CreateApp(ctx, u, ownerReq(e, "race", "race.example.com", chain), bytes.NewReader(bundleBytes))
		}()
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, service.ErrConflict):
			t.Errorf("unexpected error %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d tenants got the domain, want 1 (%v)", wins, errs)
	}
}

func acmeEnv(t *testing.T, dirs ...string) *servicetest.Env {
	return servicetest.New(t, func(c *service.Config) {
		c.ACMEDirectories, c.ACMERootsPEM = dirs, "ROOTS"
	})
}

func acmeReq(e *servicetest.Env, name, dir, domain string) client.CreateAppRequest {
	r := request(e, name)
	r.TLSMode, r.Domain = spec.TLSACME, domain
	if dir != "" {
		r.ACME = &spec.ACME{DirectoryURL: dir, Email: "ops@example.com"}
	}
	return r
}

// TestACMEMode: tls_mode acme needs an allowed directory; the ACME settings
// go into the spec unchanged; the domain is the generated one, or a custom
// one the tenant holds.
func TestACMEMode(t *testing.T) {
	const pebble, le = "https://127.0.0.1:14000/dir", "https://acme.example/directory"
	t.Run("not offered", func(t *testing.T) {
		e := servicetest.New(t)
		u, _ := e.User(t, "alice", false)
		_, err := e.Service.CreateApp(ctx, u, acmeReq(e, "a", pebble, ""), bytes.NewReader(bundleBytes))
		if !errors.Is(err, service.ErrInvalid) || !strings.Contains(err.Error(), "tls_mode acme is not offered by this backend (no --acme-directory)") {
			t.Errorf("err = %v", err)
		}
		if p := e.Service.Platform(); p.ACME != nil || len(p.ACMEDirectories) != 0 || strings.Contains(strings.Join(p.TLSModes, ","), "acme") {
			t.Errorf("platform offers acme: %+v", p)
		}
	})
	e := acmeEnv(t, pebble, le)
	alice, _ := e.User(t, "alice", false)
	bob, _ := e.User(t, "bob", false)
	p := e.Service.Platform()
	if p.ACME == nil || p.ACME.DirectoryURL != pebble || p.ACME.RootsPEM != "ROOTS" || strings.Join(p.ACMEDirectories, " ") != pebble+" "+le ||
		strings.Join(p.TLSModes, ",") != "self,owner,acme" {
		t.Errorf("platform = %+v", p)
	}
	cases := []struct {
		name string
		req  client.CreateAppRequest
		kind error
		msg  string
	}{
		{"no acme", acmeReq(e, "a", "", ""), service.ErrInvalid, "tls_mode acme needs acme.directory_url, the CA the node gets its certificate from; this backend allows " + pebble + ", " + le},
		{"directory not allowed", acmeReq(e, "a", "https://evil.example/dir", ""), service.ErrInvalid,
			`acme directory "https://evil.example/dir" is not one this operator allows (nodes reach only those): use one of ` + pebble + ", " + le},
		{"directory differs by a slash", acmeReq(e, "a", pebble+"/", ""), service.ErrInvalid, "is not one this operator allows"},
		{"acme in self mode", func() client.CreateAppRequest {
			r := acmeReq(e, "a", pebble, "")
			r.TLSMode = spec.TLSSelf
			return r
		}(), service.ErrInvalid, `acme is only for tls_mode acme (tls_mode is "self")`},
		{"custom domain not reserved", acmeReq(e, "a", pebble, "www.example.org"), service.ErrInvalid,
			"domain www.example.org is not reserved by your account, and tls_mode acme serves a custom domain only to the account that holds it: " +
				"deploy it once with tls_mode owner and a certificate for it from a CA this operator trusts, or ask the operator to run `mse-backend domain reserve www.example.org --user alice`"},
		{"custom domain reserved by another", acmeReq(e, "a", pebble, "bob.example.org"), service.ErrConflict,
			"domain bob.example.org is reserved by another account; if it is yours, ask the operator"},
		{"bad custom domain", acmeReq(e, "a", pebble, "localhost"), service.ErrInvalid, "not a fully qualified domain name"},
		{"bad email", func() client.CreateAppRequest {
			r := acmeReq(e, "a", pebble, "")
			r.ACME.Email = "a@b, c@d"
			return r
		}(), service.ErrInvalid, "is not one address"},
	}
	if _, _, err := service.ReserveDomain(ctx, e.Store, "bob.example.org", "bob", e.Now()); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.Service.CreateApp(ctx, alice, c.req, bytes.NewReader(bundleBytes))
			if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err = %v\nwant %v with %q", err, c.kind, c.msg)
			}
			noTrace(t, e, alice, "a")
		})
	}

	// Generated domain; the ACME settings exactly as sent.
	req := acmeReq(e, "gen", le, "")
	req.ACME.RootsPEM = "" // the node then uses the system roots
	a := create(t, e, alice, req)
	var sp config.Spec
	if err := json.Unmarshal(a.Spec, &sp); err != nil {
		t.Fatal(err)
	}
	if sp.TLSMode != spec.TLSACME || sp.ACME == nil || *sp.ACME != *req.ACME {
		t.Errorf("spec acme = %+v, want %+v", sp.ACME, req.ACME)
	}
	if len(a.Domains) != 1 || !strings.HasPrefix(a.Domains[0], "gen-") || !strings.HasSuffix(a.Domains[0], ".mse.test") {
		t.Errorf("domains %q, want the generated one", a.Domains)
	}
	// A custom domain the tenant holds.
	if _, _, err := service.ReserveDomain(ctx, e.Store, "www.example.org", "alice", e.Now()); err != nil {
		t.Fatal(err)
	}
	a = create(t, e, alice, acmeReq(e, "custom", pebble, "WWW.example.org"))
	if len(a.Domains) != 1 || a.Domains[0] != "www.example.org" {
		t.Errorf("domains %q, want www.example.org", a.Domains)
	}
	_ = bob
}

// TestOperatorMode: tls_mode operator only with an operator certificate
// source; the platform's domain; Lookup gives the router what to verify.
func TestOperatorMode(t *testing.T) {
	off := servicetest.New(t)
	u, _ := off.User(t, "alice", false)
	r := request(off, "op")
	r.TLSMode = spec.TLSOperator
	_, err := off.Service.CreateApp(ctx, u, r, bytes.NewReader(bundleBytes))
	if !errors.Is(err, service.ErrInvalid) || !strings.Contains(err.Error(), "tls_mode operator is not offered by this backend") ||
		!strings.Contains(err.Error(), "--operator-cert FILE --operator-key FILE") || !strings.Contains(err.Error(), "--operator-acme-directory") {
		t.Errorf("operator mode without a certificate: %v", err)
	}

	e := servicetest.New(t, func(c *service.Config) { c.OperatorTLS = true })
	u, _ = e.User(t, "alice", false)
	if p := e.Service.Platform(); strings.Join(p.TLSModes, ",") != "self,owner,operator" {
		t.Errorf("tls modes %q", p.TLSModes)
	}
	r = request(e, "op")
	r.TLSMode, r.Domain = spec.TLSOperator, "shop.example.com"
	if _, err := e.Service.CreateApp(ctx, u, r, bytes.NewReader(bundleBytes)); !errors.Is(err, service.ErrInvalid) || !strings.Contains(err.Error(), "domain is not for tls_mode operator") {
		t.Errorf("operator mode with a domain: %v", err)
	}
	r.Domain = ""
	a := create(t, e, u, r)
	rt, err := e.Service.Lookup(ctx, strings.ToUpper(a.Domains[0]))
	if err != nil {
		t.Fatal(err)
	}
	var sp config.Spec
	if err := json.Unmarshal(a.Spec, &sp); err != nil {
		t.Fatal(err)
	}
	cd, _ := sp.Digest()
	if rt.TLSMode != spec.TLSOperator || rt.AppID != a.ID || rt.Domain != a.Domains[0] || hex.EncodeToString(rt.CodeDigest) != a.CodeDigest ||
		!bytes.Equal(rt.ConfigDigest, cd) || "sha256:"+hex.EncodeToString(rt.RuntimeDigest) != sp.Runtime.Digest || rt.Addr != "127.0.0.1:1" {
		t.Errorf("route %+v", rt)
	}
	// Other modes: the router needs no digests.
	s := create(t, e, u, request(e, "self"))
	rt, err = e.Service.Lookup(ctx, s.Domains[0])
	if err != nil || rt.TLSMode != spec.TLSSelf || rt.AppID != s.ID || rt.ConfigDigest != nil {
		t.Errorf("self route %+v, %v", rt, err)
	}
	if _, err := e.Service.Lookup(ctx, "none.mse.test"); !errors.Is(err, service.ErrNoRoute) {
		t.Errorf("unknown name: %v", err)
	}
}
