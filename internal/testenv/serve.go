package testenv

import (
	"net"
	"testing"
)

// ServeConns accepts connections on ln until the test ends and handles each
// in its own goroutine, closing it afterwards; ln is closed at cleanup.
func ServeConns(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
}

// Listen listens on 127.0.0.1 and serves connections with handle (see
// ServeConns); it returns the address.
func Listen(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ServeConns(t, ln, handle)
	return ln.Addr().String()
}
