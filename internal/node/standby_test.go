package node

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// assignOver connects to a standby node's socket and sends msg with fds.
func assignOver(t *testing.T, sock, msg string, fds ...int) string {
	t.Helper()
	var c *net.UnixConn
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"}); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix([]byte(msg), oob, nil); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 512)
	n, _ := c.Read(b)
	return string(b[:n])
}

// TestStandbyAssignment: a standby node's Python host starts before any app
// is known; the assignment brings the app id and the bundle's descriptor;
// the node then attests and runs the app as a cold one does, on that same
// warm host (its process serves the app, with the assigned app id).
func TestStandbyAssignment(t *testing.T) {
	needPython(t)
	work := filepath.Join(t.TempDir(), "work")
	w, err := StartWarmHost("python3", work)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	hostPID := w.a.cmd.Process.Pid
	sock := filepath.Join(t.TempDir(), "assign.sock")
	type got struct {
		id  string
		f   *os.File
		err error
	}
	ch := make(chan got, 1)
	go func() {
		id, f, err := WaitAssignment(context.Background(), sock)
		ch <- got{id, f, err}
	}()
	b := pyBundle(t, nil)
	bf, err := os.Open(b.path)
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	if ans := assignOver(t, sock, "assign "+testAppID+"\n", int(bf.Fd())); ans != "ok\n" {
		t.Fatalf("assignment answered %q", ans)
	}
	g := <-ch
	if g.err != nil || g.id != testAppID {
		t.Fatalf("WaitAssignment = %q, %v", g.id, g.err)
	}
	defer g.f.Close()
	tn := startNode(t, b, baseSpec(), func(c *Config) { c.WorkDir, c.BundlePath, c.Bundle, c.Warm = work, "", g.f, w })
	if w.a != nil {
		t.Fatal("the node did not take the warm host")
	}
	if code, r := tn.post(t, tn.request()); code != 200 {
		t.Fatalf("HTTP %d %+v", code, r)
	}
	r := tn.waitApp(t, "/")
	if r["MSE_APP_ID"] != testAppID {
		t.Errorf("MSE_APP_ID = %q, want %q", r["MSE_APP_ID"], testAppID)
	}
	if pids := strings.Fields(r["pids"]); len(pids) != 2 || (pids[0] != strconv.Itoa(hostPID) && pids[1] != strconv.Itoa(hostPID)) {
		t.Errorf("the app runs in %v, not in the warm host %d", pids, hostPID)
	}
}

// TestStandbyRefusals: an assignment without the bundle's descriptor, or
// not of the form "assign APP_ID", is refused and said so.
func TestStandbyRefusals(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, c := range []struct {
		msg  string
		fds  []int
		want string
	}{
		{"assign " + testAppID + "\n", nil, "carries 0 descriptors"},
		{"assign " + testAppID + "\n", []int{int(f.Fd()), int(f.Fd())}, "carries 2 descriptors"},
		{"hello\n", []int{int(f.Fd())}, `not "assign APP_ID\n"`},
		{"assign ../x\n", []int{int(f.Fd())}, `not "assign APP_ID\n"`},
	} {
		sock := filepath.Join(t.TempDir(), "assign.sock")
		ch := make(chan error, 1)
		go func() { _, _, err := WaitAssignment(context.Background(), sock); ch <- err }()
		ans := assignOver(t, sock, c.msg, c.fds...)
		err := <-ch
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(ans, c.want) {
			t.Errorf("%q with %d fds: answer %q, err %v; want %q", c.msg, len(c.fds), ans, err, c.want)
		}
	}
}

// TestStandbyEntrypointEndsHost: an entrypoint app does not use the warm
// Python host: the node ends it.
func TestStandbyEntrypointEndsHost(t *testing.T) {
	needPython(t)
	work := filepath.Join(t.TempDir(), "work")
	w, err := StartWarmHost("python3", work)
	if err != nil {
		t.Fatal(err)
	}
	a := w.a
	spec := baseSpec()
	spec.PythonApplication = ""
	spec.Entrypoint = []string{"./run.sh"}
	b := makeBundle(t, map[string]string{"run.sh": "#!/bin/sh\nexec python3 -m http.server $PORT --bind 127.0.0.1\n"})
	tn := startNode(t, b, spec, func(c *Config) { c.WorkDir, c.Warm = work, w })
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the warm host still runs with an entrypoint app")
	}
	if code, r := tn.post(t, tn.request()); code != 200 {
		t.Fatalf("HTTP %d %+v", code, r)
	}
}
