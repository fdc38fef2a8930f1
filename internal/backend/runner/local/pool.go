package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/nodeapi"
)

// The warm pool (docs/runtimes.md "Warm pool"). A Python app's start is
// mostly the interpreter importing its server and framework (~220 ms for
// Flask and gunicorn here). Once a runtime and hardware entry was spawned,
// the runner keeps Config.Pool idle sandboxes of that pair running, each
// with a standby node (mse-node --standby) whose Python host has imported
// them already. Spawn writes the app's spec into an idle sandbox's run
// directory, then hands it the app id and the bundle's descriptor over
// run/assign.sock; the node then runs exactly as a cold one. A sandbox's
// cgroup limits and tmpfs sizes are the hardware entry's, set at creation,
// so the pool is per hardware entry (name, memory and cores).
//
// Idle sandboxes hold a UID, no capacity (it is reserved at assignment).
// They are ended at Close; after a crash, the next start's orphan sweep ends
// them (they are never adopted).

// assignSocket is the standby node's socket, in its run directory.
const assignSocket = "assign.sock"

type poolKey struct {
	runtime, hardware string
	res               runner.Resources
}

type pool struct {
	idle    map[poolKey][]*sandbox
	filling map[poolKey]int
	uids    map[int]bool // of idle and filling sandboxes
	closed  bool
	// ctx ends with Close; fills counts the sandboxes being made (Close
	// waits for them: none is left running behind a closed runner).
	ctx    context.Context
	cancel context.CancelFunc
	fills  sync.WaitGroup
}

func newPool() pool {
	ctx, cancel := context.WithCancel(context.Background())
	return pool{idle: map[poolKey][]*sandbox{}, filling: map[poolKey]int{}, uids: map[int]bool{}, ctx: ctx, cancel: cancel}
}

var errNoIdle = errors.New("no idle sandbox")

// assignPooled gives appID an idle sandbox of key: capacity is reserved,
// the spec written, then the bundle's descriptor and the app id passed to
// the standby node; with egress (tls_mode acme), its egress proxy is made
// first. On an error other than ErrNoCapacity the caller spawns cold (the
// sandbox is ended).
func (r *Runner) assignPooled(appID string, key poolKey, specJSON []byte, bundlePath, egress string) (*handle, error) {
	r.mu.Lock()
	list := r.pool.idle[key]
	if len(list) == 0 {
		r.mu.Unlock()
		return nil, errNoIdle
	}
	if _, ok := r.nodes[appID]; ok {
		r.mu.Unlock()
		return nil, fmt.Errorf("local runner: app %s already has a node", appID)
	}
	res := key.res
	free := runner.Resources{MemoryMiB: r.cfg.Capacity.MemoryMiB - r.used.MemoryMiB, Cores: r.cfg.Capacity.Cores - r.used.Cores}
	if res.MemoryMiB > free.MemoryMiB || res.Cores > free.Cores {
		r.mu.Unlock()
		return nil, fmt.Errorf("%w: the hardware needs %d MiB and %d cores, %d MiB and %d cores are free; stop an app or choose smaller hardware",
			runner.ErrNoCapacity, res.MemoryMiB, res.Cores, free.MemoryMiB, free.Cores)
	}
	sb := list[len(list)-1]
	r.pool.idle[key] = list[:len(list)-1]
	delete(r.pool.uids, sb.uid)
	r.used.MemoryMiB += res.MemoryMiB
	r.used.Cores += res.Cores
	r.nodes[appID] = &node{res: res, uid: sb.uid, qe: sb.qe}
	r.mu.Unlock()

	if egress != "" {
		ep, err := r.startEgress(sb.run, sb.uid, egress, appID)
		if err != nil {
			r.release(appID)
			r.destroy(sb)
			return nil, err
		}
		r.mu.Lock()
		r.nodes[appID].egress = ep
		r.mu.Unlock()
		sb.egressTarget = egress
	}
	if err := r.assign(sb, appID, specJSON, bundlePath); err != nil {
		r.release(appID) // closes its quoting service
		r.destroy(sb)
		return nil, err
	}
	h := sb.handle()
	r.log.Info("node spawned from the warm pool", "app_id", appID, "container", sb.cid, "pid", sb.pid, "uid", r.hostUID(sb.uid), "addr", h.Addr)
	return &h, nil
}

// assign writes the spec into sb's run directory and hands the standby
// node the app id and the bundle.
func (r *Runner) assign(sb *sandbox, appID string, specJSON []byte, bundlePath string) error {
	if !alive(sb.pid, sb.cid) {
		return fmt.Errorf("local runner: pooled sandbox %s ended while idle%s", sb.cid, lastLogLine(filepath.Join(sb.dir, "node.log")))
	}
	// The run directory is the node's: never follow what may be there.
	specPath := filepath.Join(sb.run, "spec.json")
	_ = os.Remove(specPath)
	f, err := os.OpenFile(specPath, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_NOFOLLOW, 0o444)
	if err != nil {
		return fmt.Errorf("local runner: write the spec of pooled sandbox %s: %w", sb.cid, err)
	}
	_, err = f.Write(specJSON)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("local runner: write the spec of pooled sandbox %s: %w", sb.cid, err)
	}
	bundle, err := os.Open(bundlePath)
	if err != nil {
		return fmt.Errorf("local runner: open the bundle: %w", err)
	}
	defer bundle.Close()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: filepath.Join(sb.run, assignSocket), Net: "unix"})
	if err != nil {
		return fmt.Errorf("local runner: reach pooled sandbox %s: %w", sb.cid, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.WriteMsgUnix([]byte("assign "+appID+"\n"), syscall.UnixRights(int(bundle.Fd())), nil); err != nil {
		return fmt.Errorf("local runner: assign pooled sandbox %s: %w", sb.cid, err)
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("local runner: pooled sandbox %s did not answer its assignment: %w", sb.cid, err)
	}
	if got := strings.TrimSpace(string(buf[:n])); got != "ok" {
		return fmt.Errorf("local runner: pooled sandbox %s refused its assignment: %s", sb.cid, got)
	}
	return nil
}

// refill makes idle sandboxes of key up to Config.Pool, in the background,
// once the node in run (just spawned) has started its app or failed, so as
// not to slow its start.
func (r *Runner) refill(key poolKey, run string) {
	r.mu.Lock()
	if r.pool.closed || len(r.pool.idle[key])+r.pool.filling[key] >= r.cfg.Pool {
		r.mu.Unlock()
		return
	}
	r.pool.filling[key]++
	r.pool.fills.Add(1)
	uid, err := r.allocUID()
	if err == nil {
		r.pool.uids[uid] = true
	}
	r.mu.Unlock()
	done := func(sb *sandbox) {
		r.mu.Lock()
		r.pool.filling[key]--
		if sb == nil || r.pool.closed {
			delete(r.pool.uids, uid)
		} else {
			r.pool.idle[key] = append(r.pool.idle[key], sb)
		}
		closed := r.pool.closed
		r.mu.Unlock()
		if sb != nil && closed {
			r.destroy(sb)
		}
		r.pool.fills.Done()
	}
	if err != nil {
		done(nil)
		return
	}
	go func() {
		ctx := r.pool.ctx
		waitSettled(ctx, run, 5*time.Second)
		if ctx.Err() != nil {
			done(nil)
			return
		}
		sb, err := r.warmSandbox(ctx, key, uid)
		if err != nil && ctx.Err() == nil {
			r.log.Warn("no pooled sandbox: the next app of this runtime and hardware starts cold", "runtime", key.runtime, "hardware", key.hardware, "err", err)
		}
		done(sb)
	}()
}

// warmSandbox starts one standby sandbox of key and waits until it listens
// for its assignment.
func (r *Runner) warmSandbox(ctx context.Context, key poolKey, uid int) (*sandbox, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	rootfs, err := r.cfg.Runtimes.Rootfs(ctx, key.runtime)
	if err != nil {
		return nil, fmt.Errorf("runtime %s: %w", key.runtime, err)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	cid := "pool-" + hex.EncodeToString(rnd[:])
	dir := filepath.Join(r.cfg.Dir, cid)
	sb, err := r.startSandbox(cid, dir, rootfs, uid, key.res, key.runtime, nil, nil, "")
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(sb.run, assignSocket)); err == nil {
			r.log.Info("pooled sandbox ready", "container", cid, "pid", sb.pid, "runtime", key.runtime, "hardware", key.hardware)
			return sb, nil
		}
		if !alive(sb.pid, cid) || time.Now().After(deadline) || ctx.Err() != nil {
			last := lastLogLine(filepath.Join(dir, "node.log"))
			r.destroy(sb)
			return nil, fmt.Errorf("standby node %s did not come up%s", cid, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitSettled waits until the node whose run directory is run has started
// its app or ended, for at most max.
func waitSettled(ctx context.Context, run string, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var st nodeapi.Status
		if b, err := os.ReadFile(filepath.Join(run, "status.json")); err == nil && json.Unmarshal(b, &st) == nil {
			switch st.State {
			case nodeapi.StateRunning, nodeapi.StateError, nodeapi.StateStopped:
				return
			}
		} else if _, err := os.Stat(run); err != nil {
			return // stopped and cleaned up
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// destroy ends an idle (or failed) pooled sandbox: it holds no app.
func (r *Runner) destroy(sb *sandbox) {
	_ = sb.qe.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = r.runcCmd(ctx, "delete", "--force", sb.cid).Run()
	if alive(sb.pid, sb.cid) {
		_ = syscall.Kill(-sb.pid, syscall.SIGKILL)
	}
	_ = os.RemoveAll(sb.run)
	_ = os.RemoveAll(sb.dir)
}

// closePool ends the idle sandboxes, and those being made.
func (r *Runner) closePool() {
	r.mu.Lock()
	r.pool.closed = true
	r.pool.cancel()
	r.mu.Unlock()
	r.pool.fills.Wait()
	r.mu.Lock()
	var all []*sandbox
	for k, list := range r.pool.idle {
		all = append(all, list...)
		delete(r.pool.idle, k)
	}
	for _, sb := range all {
		delete(r.pool.uids, sb.uid)
	}
	r.mu.Unlock()
	for _, sb := range all {
		r.destroy(sb)
	}
}

// idleCount is how many idle sandboxes key has (tests).
func (r *Runner) idleCount(key poolKey) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pool.idle[key])
}
