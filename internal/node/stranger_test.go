package node

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/bundle"
	"github.com/mse-in-go/mse/internal/nodeapi"
)

// A stranger knows the app id (GET / says it) and can reach the node through
// the router. These tests are the reproductions of issue 7, item 1: each
// failed before stage 2 was split into free checks and a short locked one.

// dialRaw opens a TLS connection to the node that speaks HTTP/1.1 by hand.
func (tn *testNode) dialRaw(t testing.TB) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", tn.addr, &tls.Config{InsecureSkipVerify: true, ServerName: "app.example", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatalf("dial the node: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func rawPost(body string) string {
	return fmt.Sprintf("POST / HTTP/1.1\r\nHost: app.example\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// TestPipelinedBadPostsSpendNothing: many refused requests pipelined on one
// connection (malformed, wrong app id, wrong key) neither use up the owner's
// attempts nor end the node; the owner's request is then accepted.
func TestPipelinedBadPostsSpendNothing(t *testing.T) {
	needPython(t)
	b := pyBundle(t, nil)
	tn := startNode(t, b, baseSpec(), func(c *Config) { c.MaxAttempts = 3 })
	otherKey, _ := bundle.NewKey()
	bodies := []string{
		`{"uuid":`,
		`not json`,
		`{"uuid":"` + testAppID + `","extra":1}`,
		`{"uuid":"another-app","code_secret_key":"` + b.key.Hex() + `"}`,
		`{"uuid":"` + testAppID + `","code_secret_key":"` + strings.Repeat("0", 64) + `"}`,
		`{"uuid":"` + testAppID + `","code_secret_key":"` + otherKey.Hex() + `"}`,
	}
	const rounds = 10 // 60 requests, 20 times the budget
	var all strings.Builder
	for i := 0; i < rounds; i++ {
		for _, body := range bodies {
			all.WriteString(rawPost(body))
		}
	}
	c := tn.dialRaw(t)
	if _, err := io.WriteString(c, all.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := 0; i < rounds*len(bodies); i++ {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		var r nodeapi.Response
		_ = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 || r.Status != "refused" {
			t.Fatalf("answer %d: HTTP %d %+v, want a 4xx refusal", i, resp.StatusCode, r)
		}
		if r.AttemptsLeft == nil || *r.AttemptsLeft != 3 {
			t.Fatalf("answer %d (%s): attempts_left = %v, want 3 (nothing spent)", i, r.Error, r.AttemptsLeft)
		}
	}
	tn.assertWaiting(t)
	if code, r := tn.post(t, tn.request()); code != 200 || r.Status != "accepted" {
		t.Fatalf("the owner's request: HTTP %d %+v", code, r)
	}
	tn.waitApp(t, "/")
}

// TestSlowPostDoesNotStall: a POST whose body trickles in does not delay the
// owner's request, and is cut at RequestTimeout with 408.
func TestSlowPostDoesNotStall(t *testing.T) {
	needPython(t)
	b := pyBundle(t, nil)
	tn := startNode(t, b, baseSpec(), func(c *Config) { c.RequestTimeout = 3 * time.Second })
	slow := tn.dialRaw(t)
	// Declare a large body, send more than the free part of it, then stall:
	// the node holds the request in serveSecrets, reading.
	const declared = 1 << 20
	head := fmt.Sprintf("POST / HTTP/1.1\r\nHost: app.example\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", declared)
	if _, err := io.WriteString(slow, head+`{"uuid":"`+strings.Repeat("a", freeBody)); err != nil {
		t.Fatal(err)
	}
	// The handler reads past the free part: it drew on the shared budget.
	deadline := time.Now().Add(10 * time.Second)
	for tn.n.bodies.left.Load() == bodyBudget {
		if time.Now().After(deadline) {
			t.Fatal("the slow request never reached the stage-2 handler")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if code, r := tn.post(t, tn.request()); code != 200 || r.Status != "accepted" {
		t.Fatalf("the owner's request: HTTP %d %+v", code, r)
	}
	took := time.Since(start)
	// The slow request was still being read when the owner's was accepted,
	// and it is cut with 408, not left open.
	_ = slow.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(slow), nil)
	if err != nil {
		t.Fatalf("the slow request got no answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("slow request: HTTP %d, want 408", resp.StatusCode)
	}
	if cut := time.Since(start); took >= cut {
		t.Errorf("the owner's request took %s, as long as the slow one was held (%s)", took, cut)
	}
	if got := tn.n.bodies.left.Load(); got != bodyBudget {
		t.Errorf("body budget after the slow request: %d, want it all back (%d)", got, bodyBudget)
	}
	tn.waitApp(t, "/")
}

// TestConnectionCap: a stranger that opens more connections than the cap
// neither keeps the owner out nor raises the node's count past the cap.
func TestConnectionCap(t *testing.T) {
	needPython(t)
	b := pyBundle(t, nil)
	const max = 8
	tn := startNode(t, b, baseSpec(), func(c *Config) { c.MaxConns = max })
	tn.client.CloseIdleConnections()
	for i := 0; i < 3*max; i++ {
		c := tn.dialRaw(t) // the handshake is done: the node accepted it
		// Keep some of them busy with a request in flight.
		if i%2 == 0 {
			io.WriteString(c, "POST / HTTP/1.1\r\nHost: app.example\r\nContent-Length: 100\r\n\r\n{")
		}
	}
	if n := tn.n.conns.open(); n > max {
		t.Errorf("%d connections open, cap %d", n, max)
	}
	if code, r := tn.post(t, tn.request()); code != 200 || r.Status != "accepted" {
		t.Fatalf("the owner's request: HTTP %d %+v", code, r)
	}
	tn.waitApp(t, "/")
}

// TestReadBody: bodies are bounded, and bytes beyond the free part come from
// the shared budget and go back to it.
func TestReadBody(t *testing.T) {
	b := newBudget(2 * freeBody)
	body, done, err := readBody(bytes.NewReader(make([]byte, 2*freeBody)), 4*freeBody, b)
	if err != nil || len(body) != 2*freeBody {
		t.Fatalf("readBody = %d bytes, %v", len(body), err)
	}
	if b.left.Load() != freeBody {
		t.Errorf("budget while held: %d, want %d", b.left.Load(), freeBody)
	}
	// Another large body finds the budget short.
	_, done2, err := readBody(bytes.NewReader(make([]byte, 3*freeBody)), 4*freeBody, b)
	if !errors.Is(err, errBusy) {
		t.Errorf("second large body: %v, want errBusy", err)
	}
	done2()
	done()
	if b.left.Load() != 2*freeBody {
		t.Errorf("budget after done: %d, want %d", b.left.Load(), 2*freeBody)
	}
	_, done3, err := readBody(bytes.NewReader(make([]byte, freeBody+1)), freeBody, b)
	done3()
	if !errors.Is(err, errTooLarge) {
		t.Errorf("oversized body: %v, want errTooLarge", err)
	}
	body, done4, err := readBody(bytes.NewReader(make([]byte, freeBody)), freeBody, b)
	done4()
	if err != nil || len(body) != freeBody {
		t.Errorf("body of exactly the limit: %d bytes, %v", len(body), err)
	}
}

// TestEvictionSparesBusy: at the cap, the connection idle the longest goes,
// unless a key holder's request on it is being checked.
func TestEvictionSparesBusy(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newConnLimit(raw, 2)
	defer l.Close()
	accept := func() *limitedConn {
		t.Helper()
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		a, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return a.(*limitedConn)
	}
	first := accept()
	time.Sleep(2 * time.Millisecond)
	second := accept()
	first.busy.Add(1) // the oldest, but busy
	third := accept()
	l.mu.Lock()
	_, hasFirst := l.conns[first]
	_, hasSecond := l.conns[second]
	_, hasThird := l.conns[third]
	l.mu.Unlock()
	if !hasFirst || hasSecond || !hasThird {
		t.Errorf("after eviction: first %v second %v third %v; want the busy first kept, the second evicted", hasFirst, hasSecond, hasThird)
	}
	if _, err := second.Conn.Write([]byte("x")); err == nil {
		t.Error("the evicted connection is still open")
	}
}
