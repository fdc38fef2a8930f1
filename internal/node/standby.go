package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/mse-in-go/mse/internal/apphost"
)

// A standby node (mse-node --standby, docs/runtimes.md "Warm pool") runs in
// a sandbox made before its app is known: it starts the generic Python app
// host at once (the interpreter, gunicorn, uvicorn, Flask and FastAPI load
// while no app exists), then waits on a unix socket in its run directory
// for one assignment: the app id, and the encrypted bundle as a descriptor.
// The runner writes the app's spec first. From then on it runs exactly as a
// node started with --app-id and --bundle-fd: what it attests and checks
// does not depend on how it was started.

// WarmHost is a Python app host started before the node knew its app,
// waiting for its start line.
type WarmHost struct{ a *runningApp }

// StartWarmHost starts the generic waiting Python host in workDir with
// python (default: the runtime's).
func StartWarmHost(python, workDir string) (*WarmHost, error) {
	if python == "" {
		python = apphost.DefaultPython
	}
	a, err := startPythonHost(python, workDir, "", true, nil)
	if err != nil {
		return nil, err
	}
	return &WarmHost{a: a}, nil
}

// Stop ends the host (the app is an entrypoint, or the node ends before
// its assignment).
func (w *WarmHost) Stop() {
	if w != nil && w.a != nil {
		w.a.stop()
	}
}

// take hands the host to n, if it still runs.
func (w *WarmHost) take(n *Node) *runningApp {
	if w == nil || w.a == nil || !w.a.alive() {
		return nil
	}
	a := w.a
	w.a = nil
	a.n = n
	return a
}

// maxAssignment bounds an assignment message.
const maxAssignment = 512

// WaitAssignment listens on the unix socket path (mode 0600) until the
// runner connects and sends "assign APP_ID\n" with the bundle's descriptor
// (SCM_RIGHTS), answers "ok\n" and returns them. It ends with ctx.
func WaitAssignment(ctx context.Context, path string) (appID string, bundle *os.File, err error) {
	_ = os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return "", nil, fmt.Errorf("standby: listen for the assignment: %w", err)
	}
	defer ln.Close()
	_ = os.Chmod(path, 0o600)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return "", nil, ctx.Err()
			}
			return "", nil, fmt.Errorf("standby: accept the assignment: %w", err)
		}
		appID, bundle, err := readAssignment(c)
		if err != nil {
			_, _ = c.Write([]byte("error: " + err.Error() + "\n"))
			c.Close()
			return "", nil, err
		}
		if _, err := c.Write([]byte("ok\n")); err != nil {
			bundle.Close()
			c.Close()
			return "", nil, fmt.Errorf("standby: answer the assignment: %w", err)
		}
		c.Close()
		return appID, bundle, nil
	}
}

func readAssignment(c *net.UnixConn) (string, *os.File, error) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, maxAssignment)
	oob := make([]byte, syscall.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return "", nil, fmt.Errorf("standby: read the assignment: %w", err)
	}
	var fds []int
	if msgs, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			if r, err := syscall.ParseUnixRights(&m); err == nil {
				fds = append(fds, r...)
			}
		}
	}
	closeAll := func() {
		for _, fd := range fds {
			syscall.Close(fd)
		}
	}
	line, ok := strings.CutPrefix(string(buf[:n]), "assign ")
	appID, nl := strings.CutSuffix(line, "\n")
	if !ok || !nl || appID == "" || strings.ContainsAny(appID, " \n/") {
		closeAll()
		return "", nil, errors.New(`standby: the assignment is not "assign APP_ID\n"`)
	}
	if len(fds) != 1 {
		closeAll()
		return "", nil, fmt.Errorf("standby: the assignment carries %d descriptors, not the bundle's one", len(fds))
	}
	syscall.CloseOnExec(fds[0]) // not inherited by the app
	return appID, os.NewFile(uintptr(fds[0]), "bundle"), nil
}

// logStandby says what a standby node is doing.
func logStandby(log *slog.Logger, msg string, args ...any) { log.Info("standby: "+msg, args...) }
