//go:build linux

package router

import (
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// relayModes are the three ways a relayed direction can run: parked in the router's epoll set while idle
// (the default on Linux), one goroutine per direction (parkDisabled: sockets relayParked cannot park, or
// other systems), and parked relays whose arming fails (the epoll set full: each direction falls back to a
// goroutine waiting in the runtime's poller).
var relayModes = []struct {
	name string
	set  func(t *testing.T)
}{
	{"parked", func(*testing.T) {}},
	{"goroutines", func(t *testing.T) {
		parkDisabled = true
		t.Cleanup(func() { parkDisabled = false })
	}},
	{"arm-fails", func(t *testing.T) {
		armHook = func() error { return syscall.ENOSPC }
		t.Cleanup(func() { armHook = nil })
	}},
}

// TestRelayModes runs the relay's tests (half-close, idle timeout, large transfers, shutdown, concurrency)
// in every mode.
func TestRelayModes(t *testing.T) {
	tests := []struct {
		name string
		f    func(*testing.T)
	}{
		{"HalfCloseRaw", TestHalfCloseRaw},
		{"LargeTransferHalfClose", TestLargeTransferHalfClose},
		{"IdleTimeout", TestIdleTimeout},
		{"ShutdownDrains", TestShutdownDrains},
		{"ShutdownDeadline", TestShutdownDeadline},
		{"ConcurrentNoCrossRouting", TestConcurrentNoCrossRouting},
		{"IdleConnsHoldNoBuffer", TestIdleConnsHoldNoBuffer},
		{"PassthroughHTTP", TestPassthroughHTTP},
	}
	for _, m := range relayModes[1:] { // the parked mode is the default: the tests ran in it already
		t.Run(m.name, func(t *testing.T) {
			m.set(t)
			for _, tc := range tests {
				t.Run(tc.name, tc.f)
			}
		})
	}
}

// relayGoroutines counts the goroutines that relay a direction.
func relayGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "router.(*direction).run") || strings.Contains(g, "router.(*Router).copy") {
			n++
		}
	}
	return n
}

// TestIdleConnsNoGoroutines: parked, idle relayed connections have no goroutine (a goroutine keeps its
// stack); in the other modes each has two. Then they close, and every direction ends.
func TestIdleConnsNoGoroutines(t *testing.T) {
	const n = 40
	for _, m := range relayModes {
		t.Run(m.name, func(t *testing.T) {
			m.set(t)
			tr := startIdleRouter(t)
			conns := idleConns(t, tr.addr, n)
			want := 2 * n
			if m.name == "parked" {
				want = 0
			}
			var got int
			waitFor(t, "the relay goroutines of idle connections", func() bool { got = relayGoroutines(); return got == want })
			for _, c := range conns {
				c.Close()
			}
			waitFor(t, "closed connections to end", func() bool { return tr.metric(t, "mse_router_connections_active") == 0 })
			if g := relayGoroutines(); g != 0 {
				t.Errorf("%d relay goroutines after every connection closed", g)
			}
			if m.name != "goroutines" {
				thePoller.mu.Lock()
				left := len(thePoller.dirs)
				thePoller.mu.Unlock()
				if left != 0 {
					t.Errorf("the poller still knows %d directions", left)
				}
			}
		})
	}
}
