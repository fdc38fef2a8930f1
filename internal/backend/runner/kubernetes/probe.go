package kubernetes

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/ratls"
)

// NodeStatusFunc asks the node at addr (host:port) for its own status;
// serverName is the app's domain, for SNI. An error means no answer.
type NodeStatusFunc func(ctx context.Context, addr, serverName string) (runner.NodeState, error)

// ProbeNode reads a node's state from its TLS port, as its configuration
// endpoint answers GET / (internal/node intake): Mse-Status Waiting while it
// waits for its owner's secrets, Starting once they are in; the app itself
// answers once it runs. It verifies nothing: a state is a hint for the
// backend's bookkeeping, never trust (the owner verifies the node).
func ProbeNode(ctx context.Context, addr, serverName string) (runner.NodeState, error) {
	d := tls.Dialer{Config: &tls.Config{
		ServerName:         serverName,
		InsecureSkipVerify: true, // a status hint: see above
		NextProtos:         []string{"http/1.1"},
		MinVersion:         tls.VersionTLS12,
	}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return runner.NodeState{}, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	tc := c.(*tls.Conn)
	host := serverName
	if host == "" {
		host = addr
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/", nil)
	req.Header.Set("User-Agent", "mse-backend-probe")
	req.Close = true
	if err := req.Write(c); err != nil {
		return runner.NodeState{}, err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(io.LimitReader(c, 64<<10), 4096), req)
	if err != nil {
		return runner.NodeState{}, err
	}
	defer resp.Body.Close()
	fp := ""
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		fp = ratls.Fingerprint(certs[0])
	}
	return stateOf(resp, fp)
}

// stateOf maps the node's answer to GET / to its state.
func stateOf(resp *http.Response, fingerprint string) (runner.NodeState, error) {
	switch resp.Header.Get(nodeapi.HeaderStatus) {
	case nodeapi.StatusWaiting:
		return runner.NodeState{State: nodeapi.StateWaiting, Fingerprint: fingerprint}, nil
	case nodeapi.StatusStarting:
		return runner.NodeState{State: nodeapi.StateLaunching, Fingerprint: fingerprint}, nil
	case "":
	default:
		return runner.NodeState{}, fmt.Errorf("the node answered %s %q", nodeapi.HeaderStatus, resp.Header.Get(nodeapi.HeaderStatus))
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		// The node before its configuration endpoint is up answers 503
		// {"status":"starting"} without the header.
		var body nodeapi.Response
		if json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&body) == nil && body.Status == "starting" {
			return runner.NodeState{State: nodeapi.StateStarting}, nil
		}
	}
	if resp.StatusCode >= 100 && resp.StatusCode < 600 {
		return runner.NodeState{State: nodeapi.StateRunning}, nil
	}
	return runner.NodeState{}, errors.New("no HTTP answer")
}
