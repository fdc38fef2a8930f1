//go:build !linux

package router

import "time"

// The parked relay needs epoll; elsewhere each direction has its goroutine.

var (
	parkDisabled bool
	armHook      func() error
)

type parked struct{}

func (*parked) abort(bool) {}

func (r *Router) relayParked(*conn, time.Duration, func()) bool { return false }
