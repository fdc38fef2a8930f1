package netlimit

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// TestLimits: connections over the per-client or total limit are closed at
// once; closing one makes room again.
func TestLimits(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listener(raw, 5, 3, slog.New(slog.NewTextHandler(io.Discard, nil))).(*listener)
	defer ln.Close()
	accepted := make(chan net.Conn, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedByServer reports whether the server closed c.
	closedByServer := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		return err == io.EOF
	}
	var held []net.Conn
	for i := 0; i < 3; i++ {
		dial()
		held = append(held, <-accepted)
	}
	over := dial()
	if !closedByServer(over) {
		t.Error("a 4th connection from one client was not closed")
	}
	if n := ln.Open(); n != 3 {
		t.Errorf("open = %d, want 3", n)
	}
	held[0].Close()
	c := dial()
	select {
	case a := <-accepted:
		held[0] = a
	case <-time.After(5 * time.Second):
		t.Fatal("no room after a connection closed")
	}
	if closedByServer(c) {
		t.Error("the connection after a close was refused")
	}
	// Total: the per-client limit is 3, so use a second address (127.0.0.2
	// is loopback on Linux) to reach the total of 5.
	for i := 0; i < 2; i++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		c2, err := d.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatalf("dial from 127.0.0.2: %v", err)
		}
		defer c2.Close()
		<-accepted
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}
	c3, err := d.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if !closedByServer(c3) {
		t.Error("a connection over the total was not closed")
	}
	if n := ln.Open(); n != 5 {
		t.Errorf("open = %d, want 5", n)
	}
}
