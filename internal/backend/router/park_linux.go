//go:build linux

package router

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Idle relayed connections without goroutines (issue 7, item 6).
//
// A goroutine blocked in the runtime's poller keeps its stack (2 KiB or more), so a relayed connection with
// one goroutine per direction costs two stacks while it is idle. Here a direction whose source has nothing to
// read has no goroutine: it is parked in one epoll set of the router's own (level-triggered, one-shot), and
// one goroutine, blocked in epoll_wait for the whole process, starts a copying goroutine for a direction when
// its source becomes readable (bytes, EOF or an error). That goroutine reads without blocking and writes
// (blocking, under the write deadline of IdleTimeout) until a read finds nothing, then parks the direction
// again and ends. The idle timeout is one timer per connection instead of the read deadlines.
//
// Each direction is in one of three states, and every transition that ends it is a compare-and-swap, so it
// ends exactly once: parked (no goroutine; the poller or abort may take it), running (its goroutine owns it),
// done. The epoll registration refers to a direction by a number looked up in a map, never by pointer, and
// it is re-armed only through RawConn.Control, so the descriptor cannot be closed and reused meanwhile;
// closing a descriptor removes it from the epoll set.

// parkDisabled turns the parked relay off (tests of the goroutine-per-direction relay).
var parkDisabled bool

// armHook, when set (tests), replaces epoll_ctl's result: an error makes arming fail.
var armHook func() error

const (
	dirParked int32 = iota
	dirRunning
	dirDone
)

type direction struct {
	p        *parked
	src, dst net.Conn
	raw      syscall.RawConn // src's
	in       bool            // client to backend
	id       uint64          // the poller's key
	state    atomic.Int32
	blocking bool // arming failed: the goroutine waits in the runtime's poller (owned by the running goroutine)
}

// parked is one relayed connection whose directions park.
type parked struct {
	r       *Router
	client  net.Conn
	backend net.Conn
	dirs    [2]direction
	left    atomic.Int32 // directions not done
	last    atomic.Int64 // unix nanos of the last byte read, for IdleTimeout
	idle    time.Duration
	timer   *time.Timer // IdleTimeout; nil without
	finish  func()
}

// poller is the process's epoll set of parked directions.
type poller struct {
	fd   int
	mu   sync.Mutex
	dirs map[uint64]*direction
	next uint64
}

var (
	pollerOnce sync.Once
	thePoller  *poller // nil if epoll is not available
)

func getPoller() *poller {
	pollerOnce.Do(func() {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return
		}
		thePoller = &poller{fd: fd, dirs: make(map[uint64]*direction)}
		go thePoller.loop()
	})
	return thePoller
}

func (ep *poller) loop() {
	events := make([]unix.EpollEvent, 256)
	wake := make([]*direction, 0, len(events))
	for {
		n, err := unix.EpollWait(ep.fd, events, -1)
		if err != nil {
			if err != unix.EINTR {
				time.Sleep(10 * time.Millisecond) // cannot happen (the set is never closed); no busy loop if it does
			}
			continue
		}
		ep.mu.Lock()
		for _, ev := range events[:n] {
			if d := ep.dirs[uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32]; d != nil {
				wake = append(wake, d)
			}
		}
		ep.mu.Unlock()
		for i, d := range wake {
			// Not parked: ended by abort meanwhile (one-shot: no second event per arming).
			if d.state.CompareAndSwap(dirParked, dirRunning) {
				go d.run()
			}
			wake[i] = nil
		}
		wake = wake[:0]
	}
}

// arm waits (once) for d's source to be readable.
func (ep *poller) arm(d *direction) error {
	var cerr error
	err := d.raw.Control(func(fd uintptr) {
		if armHook != nil {
			cerr = armHook()
			return
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(uint32(d.id)), Pad: int32(uint32(d.id >> 32))}
		cerr = unix.EpollCtl(ep.fd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		if cerr == unix.ENOENT {
			cerr = unix.EpollCtl(ep.fd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if err != nil {
		return err
	}
	return cerr
}

// relayParked starts relaying c (its ClientHello already forwarded) with parked directions, and reports
// whether it did (false: the sockets are not ones it can park, or there is no epoll; nothing was done).
func (r *Router) relayParked(c *conn, idle time.Duration, finish func()) bool {
	if parkDisabled {
		return false
	}
	ep := getPoller()
	if ep == nil {
		return false
	}
	craw, braw := rawConnOf(c.client), rawConnOf(c.backend)
	if craw == nil || braw == nil {
		return false
	}
	p := &parked{r: r, client: c.client, backend: c.backend, idle: idle, finish: finish}
	p.dirs[0] = direction{p: p, src: c.client, dst: c.backend, raw: craw, in: true}
	p.dirs[1] = direction{p: p, src: c.backend, dst: c.client, raw: braw}
	p.left.Store(2)
	p.last.Store(time.Now().UnixNano())
	ep.mu.Lock()
	for i := range p.dirs {
		ep.next++
		p.dirs[i].id = ep.next
		ep.dirs[ep.next] = &p.dirs[i]
	}
	ep.mu.Unlock()
	if idle > 0 {
		p.timer = time.AfterFunc(time.Duration(1<<63-1), p.checkIdle)
		p.timer.Reset(idle)
	}
	// From here on, Close and Shutdown end the relay through c.close, which calls abort.
	c.mu.Lock()
	c.parked = p
	c.mu.Unlock()
	for i := range p.dirs {
		if d := &p.dirs[i]; d.park() {
			d.blocking = true
			go d.run()
		}
	}
	return true
}

// park waits for d's source to be readable without a goroutine, and reports whether that failed and the
// caller still owns d (the connection was closed, or the epoll set is full): then d must run in a
// goroutine that waits in the runtime's poller instead. On false, the caller must not touch d again.
func (d *direction) park() (mustRun bool) {
	d.state.Store(dirParked)
	if thePoller.arm(d) == nil {
		return false // the poller or abort takes d from here
	}
	return d.state.CompareAndSwap(dirParked, dirRunning) // false: abort ended d
}

var errAgain = errors.New("router: nothing to read")

// run is d's goroutine: it copies from d.src to d.dst while d.src has bytes, then parks d and ends.
func (d *direction) run() {
	for {
		err := d.copyAvailable()
		switch {
		case err == nil: // EOF passed on
			d.end()
			return
		case err != errAgain:
			d.p.abort(false)
			d.end()
			return
		case d.blocking:
			// Arming failed once: stay, like the goroutine-per-direction relay. Closing the connection
			// (abort, Close) makes the wait fail.
			if err := waitReadable(d.src); err != nil {
				d.p.abort(false)
				d.end()
				return
			}
		case d.park():
			d.blocking = true
		default:
			return
		}
	}
}

// copyAvailable copies until a read finds nothing (errAgain) or EOF, which it passes on as a half-close
// (nil). Any other error is a read, write or half-close error. The buffer is held only meanwhile.
func (d *direction) copyAvailable() error {
	bp := bufPool.Get().(*[]byte)
	buffersOut.Add(1)
	defer func() {
		bufPool.Put(bp)
		buffersOut.Add(-1)
	}()
	p := d.p
	for {
		n, err := d.read(*bp)
		if n > 0 {
			p.last.Store(time.Now().UnixNano())
			if p.idle > 0 {
				d.dst.SetWriteDeadline(time.Now().Add(p.idle))
			}
			w, werr := d.dst.Write((*bp)[:n])
			p.r.Metrics.addBytes(d.in, w)
			if werr != nil {
				return werr
			}
			continue
		}
		if err == io.EOF {
			return halfClose(d.dst)
		}
		return err
	}
}

// read reads what d.src has without waiting: errAgain if nothing, io.EOF at its end.
func (d *direction) read(b []byte) (int, error) {
	var n int
	var serr error
	err := d.raw.Read(func(fd uintptr) bool {
		for {
			n, serr = syscall.Read(int(fd), b)
			if serr != syscall.EINTR {
				return true
			}
		}
	})
	switch {
	case err != nil: // closed
		return 0, err
	case serr == syscall.EAGAIN:
		return 0, errAgain
	case serr != nil:
		return 0, os.NewSyscallError("read", serr)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// end marks d done, and ends the relay if it was the last direction.
func (d *direction) end() {
	d.state.Store(dirDone)
	d.p.ended(false)
}

// abort closes both sides and ends the parked directions; a running direction ends in its goroutine, whose
// read or write fails. async: the caller holds locks that finish takes, so finish runs in a new goroutine.
func (p *parked) abort(async bool) {
	p.client.Close()
	p.backend.Close()
	for i := range p.dirs {
		if p.dirs[i].state.CompareAndSwap(dirParked, dirDone) {
			p.ended(async)
		}
	}
}

func (p *parked) ended(async bool) {
	if p.left.Add(-1) != 0 {
		return
	}
	if async {
		go p.end()
	} else {
		p.end()
	}
}

func (p *parked) end() {
	if p.timer != nil {
		p.timer.Stop()
	}
	ep := thePoller
	ep.mu.Lock()
	for i := range p.dirs {
		delete(ep.dirs, p.dirs[i].id)
	}
	if len(ep.dirs) == 0 {
		ep.dirs = make(map[uint64]*direction) // a map never shrinks: give a large one back
	}
	ep.mu.Unlock()
	p.finish()
}

// checkIdle is the IdleTimeout timer: it closes the connection when no byte was read either way for idle.
func (p *parked) checkIdle() {
	if p.left.Load() == 0 {
		return
	}
	if d := time.Until(time.Unix(0, p.last.Load()).Add(p.idle)); d > 0 {
		p.timer.Reset(d)
		return
	}
	p.abort(false)
}
