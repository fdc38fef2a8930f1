package service_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/mse-in-go/mse/internal/backend/service"
	"github.com/mse-in-go/mse/internal/backend/service/servicetest"
	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/nodeapi"
)

// TestQuotas: each limit refuses the request that would go over it, with
// ErrQuota and the numbers; stopping an app gives its share back; another
// tenant is not affected.
func TestQuotas(t *testing.T) {
	e := servicetest.New(t)
	alice, _ := e.User(t, "alice", false)
	bob, _ := e.User(t, "bob", false)
	set := func(q store.Quota) {
		t.Helper()
		q.UserID = alice.ID
		if err := e.Store.SetQuota(ctx, &q); err != nil {
			t.Fatal(err)
		}
	}
	over := func(what string, err error, msg string) {
		t.Helper()
		if !errors.Is(err, service.ErrQuota) || !strings.Contains(err.Error(), msg) {
			t.Errorf("%s: %v, want ErrQuota with %q", what, err, msg)
		}
	}

	set(store.Quota{ActiveApps: 2})
	a1 := create(t, e, alice, request(e, "a1"))
	create(t, e, alice, request(e, "a2"))
	_, err := e.Service.CreateApp(ctx, alice, request(e, "a3"), bytes.NewReader(bundleBytes))
	over("third app", err, "you have 2 active apps (deploys under way included) and your quota is 2")
	create(t, e, bob, request(e, "b1")) // bob has no quota
	if _, err := e.Service.StopApp(ctx, alice, a1.ID); err != nil {
		t.Fatal(err)
	}
	a3 := create(t, e, alice, request(e, "a3")) // a1's share is back
	_, _ = e.Service.StopApp(ctx, alice, a3.ID)

	// One active app (1g) is left: 1024 MiB, 1 core.
	set(store.Quota{MemoryMiB: 4096})
	big := request(e, "big")
	big.Hardware = "4g"
	_, err = e.Service.CreateApp(ctx, alice, big, bytes.NewReader(bundleBytes))
	over("memory", err, "hardware 4g needs 4096 MiB; your active apps hold 1024 MiB of your 4096 MiB memory quota")
	set(store.Quota{Cores: 2})
	_, err = e.Service.CreateApp(ctx, alice, big, bytes.NewReader(bundleBytes))
	over("cores", err, "hardware 4g needs 2 cores; your active apps hold 1 of your 2 cores quota")

	// Bundle bytes: the one active app holds len(bundleBytes).
	n := int64(len(bundleBytes))
	set(store.Quota{BundleBytes: 2*n - 1})
	_, err = e.Service.CreateApp(ctx, alice, request(e, "bytes"), bytes.NewReader(bundleBytes))
	over("bundle bytes", err, "the bundle is larger than the")
	set(store.Quota{BundleBytes: 2 * n})
	create(t, e, alice, request(e, "bytes"))
	_, err = e.Service.CreateApp(ctx, alice, request(e, "bytes2"), bytes.NewReader(bundleBytes))
	over("bundle bytes full", err, "bytes storage quota")

	// No blob was left by the refusals.
	if keys, _ := e.Blobs.List(ctx); len(keys) != 3 { // alice's 2 active apps, bob's 1
		t.Errorf("blobs: %v, want 3", keys)
	}
}

// TestLogFollowQuota: concurrent follows are bounded; closing one frees it.
func TestLogFollowQuota(t *testing.T) {
	e := servicetest.New(t)
	alice, _ := e.User(t, "alice", false)
	a := create(t, e, alice, request(e, "app"))
	e.Runner.SetState(a.ID, nodeapi.StateRunning, "")
	if err := e.Store.SetQuota(ctx, &store.Quota{UserID: alice.ID, LogFollows: 1}); err != nil {
		t.Fatal(err)
	}
	r1, err := e.Service.Logs(ctx, alice, a.ID, 100, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Service.Logs(ctx, alice, a.ID, 100, true); !errors.Is(err, service.ErrQuota) || !strings.Contains(err.Error(), "you follow 1 logs at once and your quota is 1") {
		t.Errorf("second follow: %v", err)
	}
	// Reading without follow is not counted.
	r, err := e.Service.Logs(ctx, alice, a.ID, 100, false)
	if err != nil {
		t.Fatalf("read without follow: %v", err)
	}
	b, _ := io.ReadAll(r)
	r.Close()
	if !strings.Contains(string(b), "log of "+a.ID) {
		t.Errorf("log: %q", b)
	}
	r1.Close()
	r1.Close() // twice gives back once
	r2, err := e.Service.Logs(ctx, alice, a.ID, 100, true)
	if err != nil {
		t.Fatalf("follow after close: %v", err)
	}
	r2.Close()
}
