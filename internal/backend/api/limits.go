package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// Request bodies must keep coming: a body is cut (the connection's read
// deadline passes) once it is slower than BodyGrace plus one second per
// MinBodyRate bytes received. A JSON body of a few KiB has BodyGrace; a
// 2 GiB bundle at 1 MiB/s always has time left, and a client that trickles
// bytes to hold a connection open does not.
const (
	DefaultBodyGrace   = 30 * time.Second
	DefaultMinBodyRate = 64 << 10 // bytes per second
)

// bodyDeadline applies the rule above to requests that carry a body.
func (a *api) bodyDeadline(h http.Handler) http.Handler {
	grace, rate := a.BodyGrace, int64(a.MinBodyRate)
	if grace <= 0 {
		grace = DefaultBodyGrace
	}
	if rate <= 0 {
		rate = DefaultMinBodyRate
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		start := time.Now()
		if err := rc.SetReadDeadline(start.Add(grace)); err != nil {
			h.ServeHTTP(w, r) // a writer without deadlines (tests)
			return
		}
		r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc, start: start, grace: grace, rate: rate}
		h.ServeHTTP(w, r)
	})
}

type deadlineBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	start time.Time
	grace time.Duration
	rate  int64
	n     int64 // bytes read
	next  int64 // move the deadline again at this count
	done  bool
}

// errSlowBody is what a handler reads once the body is cut.
var errSlowBody = &httpError{code: http.StatusRequestTimeout,
	msg: "the request body came too slowly: the backend expects " + byteRate(DefaultMinBodyRate) + " after the first seconds; check the network and retry"}

func byteRate(n int) string { return fmt.Sprintf("%d KiB/s", n>>10) }

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return n, errSlowBody
	}
	if err == io.EOF && !b.done {
		// All read: what the handler does next (stream logs, answer) has
		// no read deadline.
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	} else if b.n >= b.next && !b.done {
		b.next = b.n + 64<<10
		credit := time.Duration(b.n * int64(time.Second) / b.rate)
		_ = b.rc.SetReadDeadline(b.start.Add(b.grace + credit))
	}
	return n, err
}
