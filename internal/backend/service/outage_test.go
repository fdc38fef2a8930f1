package service_test

import (
	"errors"
	"testing"

	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/service/servicetest"
	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/nodeapi"
)

// TestRunnerCannotSee: while the runner's Status fails (a cluster's API
// server unreachable), the reconcile loop changes no app, and routes still
// resolve; once it sees again, a node lost meanwhile ends its app and a
// running one stays running.
func TestRunnerCannotSee(t *testing.T) {
	e := servicetest.New(t)
	u, _ := e.User(t, "alice", false)
	kept := create(t, e, u, request(e, "kept"))
	lost := create(t, e, u, request(e, "lost"))
	starting := create(t, e, u, request(e, "starting"))
	e.Runner.SetState(kept.ID, nodeapi.StateRunning, "")
	e.Runner.SetState(lost.ID, nodeapi.StateRunning, "")
	e.Service.Reconcile(ctx)
	status := func(id string) *store.App {
		t.Helper()
		a, err := e.Service.App(ctx, u, id)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for id, want := range map[string]store.AppStatus{kept.ID: store.StatusRunning, lost.ID: store.StatusRunning, starting.ID: store.StatusSpawning} {
		if got := status(id); got.Status != want {
			t.Fatalf("before the outage: app %s is %s, want %s", got.Name, got.Status, want)
		}
	}

	e.Runner.SetStatusErr(errors.New("kubernetes runner: the Kubernetes API server is unreachable since now (dial tcp: connection refused)"))
	e.Runner.SetState(lost.ID, runner.StateLost, "the node's pod was deleted (not by this backend)")
	for range 5 {
		e.Service.Reconcile(ctx)
	}
	for id, want := range map[string]store.AppStatus{kept.ID: store.StatusRunning, lost.ID: store.StatusRunning, starting.ID: store.StatusSpawning} {
		if got := status(id); got.Status != want || got.Error != "" {
			t.Fatalf("during the outage: app %s is %s (%q), want %s", got.Name, got.Status, got.Error, want)
		}
	}
	if e.Runner.StopCalls(kept.ID) != 0 || e.Runner.StopCalls(lost.ID) != 0 || e.Runner.SpawnCalls(kept.ID) != 1 {
		t.Fatalf("during the outage the service stopped or respawned nodes: stops %d %d, spawns %d",
			e.Runner.StopCalls(kept.ID), e.Runner.StopCalls(lost.ID), e.Runner.SpawnCalls(kept.ID))
	}
	if _, err := e.Service.Lookup(ctx, status(kept.ID).Domains[0]); err != nil {
		t.Fatalf("route during the outage: %v", err)
	}

	e.Runner.SetStatusErr(nil)
	e.Service.Reconcile(ctx)
	if got := status(kept.ID); got.Status != store.StatusRunning {
		t.Errorf("after the outage: kept app is %s (%q), want running", got.Status, got.Error)
	}
	if got := status(lost.ID); got.Status != store.StatusOnError || got.Error != "the node's pod was deleted (not by this backend)" {
		t.Errorf("after the outage: lost app is %s (%q), want on_error with the runner's reason", got.Status, got.Error)
	}
}
