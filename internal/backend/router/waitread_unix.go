//go:build unix

package router

import (
	"net"
	"syscall"
)

// waitReadable blocks until c has bytes (or EOF, or an error) to read, or
// its read deadline passes, without a buffer: an idle relayed connection
// then holds no copy buffer, only its goroutine. It returns nil at once for
// a connection it cannot wait on this way (the caller's Read then waits,
// holding a buffer).
func waitReadable(c net.Conn) error {
	raw := rawConnOf(c)
	if raw == nil {
		return nil
	}
	var b [1]byte
	return raw.Read(func(fd uintptr) bool {
		for {
			_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch err {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // not ready: the runtime's poller waits
			default:
				return true // bytes, EOF or an error: Read says which
			}
		}
	})
}

// rawConnOf is c's socket (nil for a connection that is not one: a TLS
// connection, a test's pipe).
func rawConnOf(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}
