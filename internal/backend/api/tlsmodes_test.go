package api_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/mse-in-go/mse/internal/backend/service"
	"github.com/mse-in-go/mse/internal/backend/service/servicetest"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/spec"
)

// TestTLSModesOverHTTP: the platform says which TLS modes and ACME CAs the
// backend offers; a create with acme goes through the API's strict decoding
// into the spec unchanged; the domain rules answer with their status codes,
// and a reserved domain's 409 names no holder.
func TestTLSModesOverHTTP(t *testing.T) {
	ctx := context.Background()
	ca := servicetest.NewCA(t, "Public CA")
	const dir = "https://acme.example/directory"
	e := servicetest.New(t, servicetest.TrustCAs(ca), func(c *service.Config) {
		c.ACMEDirectories, c.ACMERootsPEM, c.OperatorTLS = []string{dir}, "ROOTS", true
	})
	srv := mustAPI(t, e)
	alice, aliceTok := e.User(t, "alice", false)
	_, bobTok := e.User(t, "bob", false)
	ac, bc := client.New(srv.URL, aliceTok), client.New(srv.URL, bobTok)
	f := &fixture{env: e, srv: srv}

	p, err := client.New(srv.URL, "").Platform(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(p.TLSModes, ",") != "self,owner,operator,acme" || p.ACME == nil || p.ACME.DirectoryURL != dir || p.ACME.RootsPEM != "ROOTS" ||
		len(p.ACMEDirectories) != 1 {
		t.Errorf("platform %+v", p)
	}

	req := f.createReq()
	req.TLSMode, req.ACME = spec.TLSACME, &spec.ACME{DirectoryURL: dir, RootsPEM: "", Email: "me@example.com"}
	a, err := ac.CreateApp(ctx, req, bytes.NewReader(bundleBytes), nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.TLSMode != spec.TLSACME || a.Spec.ACME == nil || *a.Spec.ACME != *req.ACME {
		t.Errorf("created acme app: mode %q, acme %+v", a.TLSMode, a.Spec.ACME)
	}

	req = f.createReq()
	req.Name, req.TLSMode = "op", spec.TLSOperator
	if a, err := ac.CreateApp(ctx, req, bytes.NewReader(bundleBytes), nil); err != nil || a.TLSMode != spec.TLSOperator {
		t.Errorf("operator app: %+v, %v", a, err)
	}

	owner := f.createReq()
	owner.Name, owner.TLSMode, owner.Domain, owner.OwnerCertificate = "shop", spec.TLSOwner, "shop.example.com", ca.Leaf(t, "shop.example.com")
	if _, err := ac.CreateApp(ctx, owner, bytes.NewReader(bundleBytes), nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cl   *client.Client
		mod  func(*client.CreateAppRequest)
		code int
		msg  string
	}{
		{"reserved by another", bc, func(r *client.CreateAppRequest) {}, 409, "domain shop.example.com is reserved by another account; if it is yours, ask the operator"},
		{"self-signed", bc, func(r *client.CreateAppRequest) {
			r.Domain, r.OwnerCertificate = "own.example.com", servicetest.SelfSigned(t, "own.example.com")
		}, 400, "does not chain to a root this operator trusts (test roots)"},
		{"acme dir not allowed", bc, func(r *client.CreateAppRequest) {
			r.TLSMode, r.Domain, r.OwnerCertificate, r.ACME = spec.TLSACME, "", "", &spec.ACME{DirectoryURL: "https://other.example/dir"}
		}, 400, "use one of " + dir},
		{"acme custom domain of another", bc, func(r *client.CreateAppRequest) {
			r.TLSMode, r.OwnerCertificate, r.ACME = spec.TLSACME, "", &spec.ACME{DirectoryURL: dir}
		}, 409, "is reserved by another account"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := owner
			r.Name = "squat"
			c.mod(&r)
			_, err := c.cl.CreateApp(ctx, r, bytes.NewReader(bundleBytes), nil)
			var ae *client.APIError
			if !errors.As(err, &ae) || ae.Status != c.code || !strings.Contains(ae.Msg, c.msg) {
				t.Fatalf("err = %v, want HTTP %d with %q", err, c.code, c.msg)
			}
			for _, leak := range []string{alice.ID, "alice"} {
				if strings.Contains(ae.Msg, leak) {
					t.Errorf("the answer names the holder: %q", ae.Msg)
				}
			}
		})
	}
}
