package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestUnreachableErr(t *testing.T) {
	pods := schema.GroupResource{Resource: "pods"}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, true},
		{"deadline", fmt.Errorf("get: %w", context.DeadlineExceeded), true},
		{"canceled by the caller", fmt.Errorf("get: %w", context.Canceled), false},
		{"not found", apierrors.NewNotFound(pods, "p"), false},
		{"forbidden", apierrors.NewForbidden(pods, "p", errors.New("no")), false},
		{"conflict", apierrors.NewConflict(pods, "p", errors.New("no")), false},
		{"unavailable", apierrors.NewServiceUnavailable("etcd down"), true},
		{"server timeout", apierrors.NewServerTimeout(pods, "get", 1), true},
		{"internal", apierrors.NewInternalError(errors.New("boom")), true},
	} {
		if got := unreachableErr(c.err); got != c.want {
			t.Errorf("%s: unreachableErr = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestHealthFailedNeedsTheWatcher(t *testing.T) {
	var h apiHealth
	if h.failed(errors.New("dial: refused")) {
		t.Fatal("a failure recorded with no health watcher to clear it")
	}
	h.on = true
	if !h.failed(errors.New("dial: refused")) || h.downSince.IsZero() {
		t.Fatal("a dial failure not recorded")
	}
	if h.failed(apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, "p")) {
		t.Fatal("an API answer recorded as unreachable")
	}
}
