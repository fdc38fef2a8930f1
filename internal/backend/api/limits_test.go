package api_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/backend/api"
	"github.com/mse-in-go/mse/internal/backend/service/servicetest"
)

// TestSlowBodyCut: a body that trickles in is cut with 408 once it is slower
// than the grace plus the rate allows, while other requests are served.
func TestSlowBodyCut(t *testing.T) {
	e := servicetest.New(t)
	_, tok := e.User(t, "alice", false)
	h, err := api.New(api.Config{Service: e.Service, BodyGrace: time.Second, MinBodyRate: 64 << 10}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	fmt.Fprintf(c, "POST /v1/projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", tok)
	// Keep sending a byte every 100 ms: far below the rate.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				if _, err := io.WriteString(c, " "); err != nil {
					return
				}
			}
		}
	}()
	// Meanwhile a normal request is served.
	req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/v1/projects", strings.NewReader(`{"name":"p"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 201 {
		t.Fatalf("normal request: %v %v", resp, err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the slow request got no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "the request body came too slowly") {
		t.Errorf("slow request: HTTP %d %s", resp.StatusCode, b)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the slow request was held %s with a 1 s grace", took)
	}
}
