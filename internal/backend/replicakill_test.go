package backend_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/mse-in-go/mse/internal/backend/runner/kubernetes"
	"github.com/mse-in-go/mse/internal/backend/store/pgtest"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/runtimes"
	"github.com/mse-in-go/mse/internal/testenv"
)

// Two real `mse-backend serve` processes on one PostgreSQL database, both
// with the kubernetes runner on the kwok cluster: the leader is killed
// (SIGKILL) while it ends a batch of apps whose key never came, then the
// new leader is killed while creations are in flight on both replicas. The
// survivor leads within seconds, every app reaches its right end state, every
// pod of an ended app is deleted and none is left that no app claims, no app
// gets a second pod, no transition happens twice, and the survivor's API and
// router answer throughout.
//
// kwok runs no node: the test plays each pod's node on the port the runner
// gave it (host-network mode, 127.0.0.1), answering the runner's status probe
// as a node waiting for its key or as a running app, and the router's
// passthrough connections.
func TestReplicasKilledOnKubernetes(t *testing.T) {
	t.Run("postgres", func(t *testing.T) { testReplicasKilled(t, "postgres") })
	t.Run("lease", func(t *testing.T) { testReplicasKilled(t, "lease") })
}

const (
	killKeyTimeout = 3 * time.Second
	killPoll       = 100 * time.Millisecond
	// killLease is the lease election's --leader-lease-duration: shorter
	// than the 15 s default, and long enough for a loaded machine (the
	// leader renews within 4 s).
	killLease = 6 * time.Second
)

func testReplicasKilled(t *testing.T, election string) {
	k := testenv.Kube(t)
	bin := testenv.Build(t, "mse-backend")
	s3 := testenv.S3(t)
	e := &killEnv{t: t, ns: k.Namespace(t), election: election, nodes: newFakeNodes(t)}
	e.k = k
	e.args = []string{"serve", "--db", pgtest.URL(t), "--api-addr", "127.0.0.1:0", "--router-addr", "127.0.0.1:0",
		"--runner", "kubernetes", "--kubeconfig", k.Kubeconfig, "--namespace", e.ns, "--kube-host-network",
		"--leader-election", election,
		"--node-image", "mse/node@sha256:1111111111111111111111111111111111111111111111111111111111111111",
		"--bundle-url", "http://127.0.0.1:9/", "--catalog", e.catalog(), "--hardware", e.hardware(), "--node-measurement", testMeasurement,
		"--blobs", fmt.Sprintf("s3://%s/bundles?endpoint=%s&region=%s&tls=false", s3.Bucket, s3.Endpoint, s3.Region),
		"--poll-interval", killPoll.String(), "--key-timeout", killKeyTimeout.String(),
		"--max-conns-per-client", "4096", "--warm-pool", "0"}
	if election == "lease" {
		e.args = append(e.args, "--leader-lease-duration", killLease.String())
	}
	e.env = []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey}
	e.bin = bin
	e.watchPods()

	a := e.start("a")
	e.waitLog(a, 60*time.Second, "a leads", leadsRE)
	tok, err := os.ReadFile(filepath.Join(a.dataDir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	e.token = strings.TrimSpace(string(tok))
	b := e.start("b")
	e.waitLog(b, 60*time.Second, "b follows", followsRE)
	e.probe()

	// Phase 1: apps that run (routed through the router throughout), and a
	// batch whose node never gets its key, ended by the key-timeout loop.
	running := e.createMany("run", 3, time.Hour, modeRunning, a, b)
	e.waitStatus(running, "running", 20*time.Second)
	e.routed(running)
	nokey := e.createMany("nokey", 6, time.Hour, modeStarting, a, b)
	// Their pods ready: the runner probes their nodes.
	e.nodes.waitProbed(t, ids(nokey), 20*time.Second)
	// All at once: they become initializing in one pass of the leader's
	// loop, and their key timeouts end in one pass too.
	e.nodes.setMode(modeWaiting, ids(nokey)...)
	e.waitStatus(nokey, "initializing", 10*time.Second)
	first := e.nodes.nextDeleting(ids(nokey)...)
	var id string
	select {
	case id = <-first:
	case <-time.After(killKeyTimeout + 10*time.Second):
		t.Fatal("the leader did not end the apps whose key never came")
	}
	killed := e.kill(a)
	t.Logf("killed %s while it ended app %s (the first of %d without a key)", a.name, id, len(nokey))
	e.failover(a, b, killed, "ending a batch of apps whose key never came")
	e.waitEnded(nokey, "stopped", "no key received", 20*time.Second)
	e.waitObjectsGone(nokey, 10*time.Second)
	e.routed(running)
	if election == "lease" {
		// A lease failover costs a lease duration: one kill is enough.
		e.finish(running, b)
		return
	}

	// Phase 2: the leader (b) is killed while creations are in flight on
	// both replicas; the new leader (c) takes over while its own are too.
	c := e.start("c")
	e.waitLog(c, 60*time.Second, "c follows", followsRE)
	expiry := 8 * time.Second
	var mu sync.Mutex
	var burst []*client.App
	var failedOnB []string
	var wg sync.WaitGroup
	pods := e.nodes.countAdded()
	for i := range 8 {
		r := []*replicaProc{b, c}[i%2]
		name := fmt.Sprintf("burst%d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			app, err := e.create(r, name, expiry, modeRunning)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if r != b {
					t.Errorf("create %s through %s (the survivor): %v", name, r.name, err)
				}
				failedOnB = append(failedOnB, name)
				return
			}
			burst = append(burst, app)
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for e.nodes.countAdded() < pods+3 {
		if time.Now().After(deadline) {
			t.Fatal("no pods for the burst of creations")
		}
		time.Sleep(time.Millisecond)
	}
	killed = e.kill(b)
	e.failover(b, c, killed, "creations in flight")
	wg.Wait()
	// Creations b did not answer: the app may be recorded (with or without
	// its node) or not at all. Those recorded end too, by expiry.
	all, err := e.client(c).Apps(context.Background(), client.ListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range failedOnB {
		for i := range all {
			if all[i].Name == name {
				t.Logf("%s: its creation through %s got no answer, the app is recorded (%s)", name, b.name, all[i].Status)
				burst = append(burst, &all[i])
			}
		}
	}
	t.Logf("burst: %d apps recorded, %d creations unanswered by the killed replica", len(burst), len(failedOnB))
	e.nodes.setMode(modeRunning, ids(burst)...)
	d := e.start("d")
	e.waitLog(d, 60*time.Second, "d follows", followsRE)
	e.waitEnded(burst, "stopped", "expired", expiry+20*time.Second)
	e.waitObjectsGone(burst, 10*time.Second)
	e.routed(running)
	e.finish(running, c, d)
}

// finish stops the running apps through every live replica at once (the
// owner's stops racing each other), then checks the end: every app ended
// once, nothing of theirs left in the cluster, no app with a second pod.
func (e *killEnv) finish(running []*client.App, live ...*replicaProc) {
	t := e.t
	// Stopped apps are no longer routed: once the round in flight is over.
	e.probes.mu.Lock()
	e.probes.routes = nil
	e.probes.mu.Unlock()
	e.probes.round.Lock()
	e.probes.round.Unlock()
	var wg sync.WaitGroup
	for _, app := range running {
		for _, r := range live {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := e.client(r).Stop(context.Background(), app.ID); err != nil {
					t.Errorf("stop %s through %s: %v", app.Name, r.name, err)
				}
			}()
		}
	}
	wg.Wait()
	e.waitEnded(running, "stopped", "stopped by admin", 10*time.Second)
	e.stopProbe()

	all, err := e.client(live[0]).Apps(context.Background(), client.ListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range all {
		if a.Status != "stopped" {
			t.Errorf("app %s (%s) ended %s: %s", a.Name, a.ID, a.Status, a.Error)
		}
	}
	e.waitNoObjects(10 * time.Second)
	// No second pod: the test's own watch saw each app's pods created.
	for id, uids := range e.nodes.addedPods() {
		if len(uids) != 1 {
			t.Errorf("app %s: %d pods created (%v), want 1", id, len(uids), uids)
		}
	}
	// No transition twice, across every process that ever ran (the killed
	// ones' logs up to their end).
	seen := map[string]int{}
	for _, r := range e.procs {
		for _, m := range transitionRE.FindAllStringSubmatch(r.log(), -1) {
			seen[m[1]+" "+m[2]]++
		}
	}
	ended := 0
	for k, n := range seen {
		if n != 1 {
			t.Errorf("transition %s logged %d times", k, n)
		}
		if strings.HasSuffix(k, " stopped") {
			ended++
		}
	}
	// A killed replica may have won a transition and died before it
	// logged it: at most one per kill.
	if ended < len(all)-e.kills || ended > len(all) {
		t.Errorf("%d transitions to stopped logged, for %d apps (%d kills)", ended, len(all), e.kills)
	}
	var fails []string
	e.probes.mu.Lock()
	for _, f := range e.probes.failed {
		fails = append(fails, f)
	}
	n := e.probes.n
	e.probes.mu.Unlock()
	if len(fails) > 0 {
		t.Errorf("the survivors' API or router failed %d of %d probes:\n%s", len(fails), n, strings.Join(fails, "\n"))
	}
	t.Logf("%d apps, %d pods, %d probes of the live replicas' API and router answered; failovers: %s",
		len(all), len(e.nodes.addedPods()), n, strings.Join(e.failovers, "; "))
}

// Log lines the test reads (slog's text format).
var (
	leadsRE      = regexp.MustCompile(`time=(\S+) level=INFO msg="leader election: this replica leads`)
	followsRE    = regexp.MustCompile(`msg="leader election: another replica leads; this one follows`)
	transitionRE = regexp.MustCompile(`msg="app status" component=service app_id=(\S+) status=(\S+)`)
	stepRE       = regexp.MustCompile(`time=(\S+) level=\w+ msg="(app status|node pod adopted|deleting a node pod no app claims)"`)
)

// slogTime is the format of slog's text time attribute.
const slogTime = "2006-01-02T15:04:05.000Z07:00"

type killEnv struct {
	t        *testing.T
	k        *testenv.KubeCluster
	ns       string
	election string
	bin      string
	args     []string
	env      []string
	token    string
	nodes    *fakeNodes
	procs    []*replicaProc
	kills    int
	// failovers are the measured handovers, for the log.
	failovers []string

	probes struct {
		mu sync.Mutex
		// round is held for each round of probes.
		round   sync.Mutex
		live    []*replicaProc
		retired map[*replicaProc]bool
		routes  []*client.App
		failed  []string
		n       int
		stop    chan struct{}
		done    chan struct{}
	}
}

// catalog writes a runtime catalog both replicas read: the pods would pull
// the image; kwok pulls nothing.
func (e *killEnv) catalog() string {
	p := filepath.Join(e.t.TempDir(), "runtimes.json")
	testenv.WriteCatalog(e.t, p, []runtimes.Entry{{Name: "flask", Image: "mse/flask:bookworm",
		Digest: "sha256:2222222222222222222222222222222222222222222222222222222222222222", Kind: runtimes.KindWSGI}})
	return p
}

// hardware is a catalog of one small entry: many pods fit on the fake nodes.
func (e *killEnv) hardware() string {
	p := filepath.Join(e.t.TempDir(), "hardware.json")
	if err := os.WriteFile(p, []byte(`[{"name":"small","memory_mib":256,"cores":1,"tee":"sim"}]`), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// replicaProc is one mse-backend process.
type replicaProc struct {
	name, dataDir string
	api, router   string
	logPath       string
	cmd           *exec.Cmd
	done          chan struct{}
}

func (r *replicaProc) log() string {
	b, _ := os.ReadFile(r.logPath)
	return string(b)
}

// start runs a replica until the test ends (or kill).
func (e *killEnv) start(name string) *replicaProc {
	t := e.t
	t.Helper()
	dir := t.TempDir()
	r := &replicaProc{name: name, dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "backend.log"), done: make(chan struct{})}
	logf, err := os.Create(r.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	r.cmd = exec.Command(e.bin, append([]string{"--data-dir", r.dataDir}, e.args...)...)
	r.cmd.Env = append(os.Environ(), e.env...)
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stderr = logf
	// It dies with the test binary: the parent-death signal follows the
	// thread that started it, kept until it ends.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := r.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = r.cmd.Wait()
		close(r.done)
	}()
	if err := <-started; err != nil {
		t.Fatalf("start mse-backend %s: %v", name, err)
	}
	e.procs = append(e.procs, r)
	t.Cleanup(func() {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			_ = r.cmd.Process.Kill()
			<-r.done
		}
		if t.Failed() {
			t.Logf("mse-backend %s log:\n%s", name, r.log())
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(60 * time.Second)
	for r.api == "" || r.router == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("mse-backend %s exited before it was ready:\n%s", name, r.log())
			}
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "API:"); ok {
				r.api = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "router:"); ok {
				r.router = strings.TrimSpace(v)
			}
		case <-deadline:
			t.Fatalf("mse-backend %s not ready within 60s:\n%s", name, r.log())
		}
	}
	go func() {
		for range lines {
		}
	}()
	e.probes.mu.Lock()
	e.probes.live = append(e.probes.live, r)
	e.probes.mu.Unlock()
	return r
}

// kill ends r with SIGKILL and returns when.
func (e *killEnv) kill(r *replicaProc) time.Time {
	e.t.Helper()
	e.probes.mu.Lock()
	if e.probes.retired == nil {
		e.probes.retired = map[*replicaProc]bool{}
	}
	e.probes.retired[r] = true
	e.probes.mu.Unlock()
	at := time.Now()
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		e.t.Fatalf("kill %s: %v", r.name, err)
	}
	<-r.done
	e.kills++
	return at
}

// failover waits for survivor to lead after old was killed at killed, and
// records how long it took: to its "leads" log line, and to its first step
// (adopting a node, ending an orphan or a transition).
func (e *killEnv) failover(old, survivor *replicaProc, killed time.Time, during string) {
	t := e.t
	t.Helper()
	within := 5 * time.Second
	if e.election == "lease" {
		within = killLease + 10*time.Second // the lease duration and a few retries
	}
	var lead, step time.Time
	deadline := time.Now().Add(within)
	for lead.IsZero() || step.IsZero() {
		log := survivor.log()
		for _, m := range leadsRE.FindAllStringSubmatch(log, -1) {
			if at, err := time.Parse(slogTime, m[1]); err == nil && !at.Before(killed.Truncate(time.Millisecond)) {
				lead = at
				break
			}
		}
		if !lead.IsZero() {
			for _, m := range stepRE.FindAllStringSubmatch(log, -1) {
				if at, err := time.Parse(slogTime, m[1]); err == nil && !at.Before(lead) {
					step = at
					break
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not lead (and act) within %s of %s's SIGKILL (%s): lead %v, step %v", survivor.name, within, old.name, during, lead, step)
		}
		time.Sleep(10 * time.Millisecond)
	}
	f := fmt.Sprintf("%s killed during %s: %s leads after %s, first step after %s", old.name, during, survivor.name,
		lead.Sub(killed).Round(time.Millisecond), step.Sub(killed).Round(time.Millisecond))
	t.Log("failover: " + f)
	e.failovers = append(e.failovers, f)
}

func (e *killEnv) waitLog(r *replicaProc, within time.Duration, what string, re *regexp.Regexp) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for !re.MatchString(r.log()) {
		if time.Now().After(deadline) {
			e.t.Fatalf("not within %s: %s\n%s", within, what, r.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *killEnv) client(r *replicaProc) *client.Client { return client.New(r.api, e.token) }

// create deploys an app through r: a random bundle (kwok pods fetch
// nothing), its node played by the test in mode.
func (e *killEnv) create(r *replicaProc, name string, life time.Duration, mode string) (*client.App, error) {
	bundle := make([]byte, 2048)
	_, _ = rand.Read(bundle)
	sum := sha256.Sum256(bundle)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	app, err := e.client(r).CreateApp(ctx, client.CreateAppRequest{
		Name: name, PythonApplication: "app:app", TLSMode: "self", CodeDigest: hex.EncodeToString(sum[:]),
		ExpiresAt: time.Now().Add(life).Truncate(time.Second).Add(time.Second),
	}, bytes.NewReader(bundle), nil)
	if err != nil {
		return nil, err
	}
	e.nodes.setMode(mode, app.ID)
	return app, nil
}

// createMany creates n apps through the replicas in turn.
func (e *killEnv) createMany(prefix string, n int, life time.Duration, mode string, through ...*replicaProc) []*client.App {
	e.t.Helper()
	var apps []*client.App
	for i := range n {
		r := through[i%len(through)]
		app, err := e.create(r, fmt.Sprintf("%s%d", prefix, i), life, mode)
		if err != nil {
			e.t.Fatalf("create %s%d through %s: %v", prefix, i, r.name, err)
		}
		apps = append(apps, app)
	}
	return apps
}

func ids(apps []*client.App) []string {
	var out []string
	for _, a := range apps {
		out = append(out, a.ID)
	}
	return out
}

// live is a replica still running (for API calls).
func (e *killEnv) live() *replicaProc {
	e.probes.mu.Lock()
	defer e.probes.mu.Unlock()
	for _, r := range e.probes.live {
		if !e.probes.retired[r] {
			return r
		}
	}
	e.t.Fatal("no replica runs")
	return nil
}

// statuses lists every app through a live replica (the list does not
// reconcile: it changes nothing).
func (e *killEnv) statuses() map[string]client.App {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	all, err := e.client(e.live()).Apps(ctx, client.ListOptions{All: true})
	if err != nil {
		e.t.Fatalf("list apps: %v", err)
	}
	m := map[string]client.App{}
	for _, a := range all {
		m[a.ID] = a
	}
	return m
}

func (e *killEnv) waitStatus(apps []*client.App, status string, within time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		m := e.statuses()
		var not []string
		for _, a := range apps {
			if m[a.ID].Status != status {
				not = append(not, fmt.Sprintf("%s %s %s", a.Name, m[a.ID].Status, m[a.ID].Error))
			}
		}
		if len(not) == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("not %s within %s: %s", status, within, strings.Join(not, "; "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitEnded waits for apps to reach status, each for a reason containing
// reason; an app that reaches another inactive status fails at once.
func (e *killEnv) waitEnded(apps []*client.App, status, reason string, within time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		m := e.statuses()
		var not []string
		for _, a := range apps {
			got := m[a.ID]
			switch {
			case got.Status == status && strings.Contains(got.Error, reason):
			case got.Status == "stopped" || got.Status == "on_error":
				e.t.Fatalf("app %s ended %s (%q), want %s (%q)", a.Name, got.Status, got.Error, status, reason)
			default:
				not = append(not, a.Name+" "+got.Status)
			}
		}
		if len(not) == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("not %s within %s: %s", status, within, strings.Join(not, "; "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// objects are the names of the runner's objects in the namespace, by kind.
func (e *killEnv) objects() map[string][]string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	core := e.k.Client.CoreV1()
	out := map[string][]string{}
	opts := metav1.ListOptions{LabelSelector: kubernetes.LabelAppID}
	pods, err := core.Pods(e.ns).List(ctx, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, p := range pods.Items {
		out["pod"] = append(out["pod"], p.Labels[kubernetes.LabelAppID])
	}
	cms, err := core.ConfigMaps(e.ns).List(ctx, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, c := range cms.Items {
		out["configmap"] = append(out["configmap"], c.Labels[kubernetes.LabelAppID])
	}
	secrets, err := core.Secrets(e.ns).List(ctx, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, s := range secrets.Items {
		out["secret"] = append(out["secret"], s.Labels[kubernetes.LabelAppID])
	}
	nps, err := e.k.Client.NetworkingV1().NetworkPolicies(e.ns).List(ctx, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, n := range nps.Items {
		out["networkpolicy"] = append(out["networkpolicy"], n.Labels[kubernetes.LabelAppID])
	}
	return out
}

// waitObjectsGone waits until nothing of apps is left in the cluster, and
// checks that every object left belongs to an active app, one of each kind.
func (e *killEnv) waitObjectsGone(apps []*client.App, within time.Duration) {
	e.t.Helper()
	gone := map[string]bool{}
	for _, a := range apps {
		gone[a.ID] = true
	}
	deadline := time.Now().Add(within)
	for {
		var left []string
		for kind, owners := range e.objects() {
			for _, id := range owners {
				if gone[id] {
					left = append(left, kind+" of "+id)
				}
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("objects of ended apps left after %s: %s", within, strings.Join(left, ", "))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// What is left is claimed: one of each kind per active app.
	m := e.statuses()
	for kind, owners := range e.objects() {
		per := map[string]int{}
		for _, id := range owners {
			per[id]++
		}
		for id, n := range per {
			if a, ok := m[id]; !ok || (a.Status != "spawning" && a.Status != "initializing" && a.Status != "running") || n != 1 {
				e.t.Errorf("%d %s(s) of app %s, which is %q", n, kind, id, a.Status)
			}
		}
	}
}

// waitNoObjects waits until the namespace holds nothing of the runner's.
func (e *killEnv) waitNoObjects(within time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		o := e.objects()
		n := 0
		for _, v := range o {
			n += len(v)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("objects left when every app has ended: %v", o)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// routed adds apps to what the prober reaches through the routers, and
// checks each once through every live replica now.
func (e *killEnv) routed(apps []*client.App) {
	e.t.Helper()
	e.probes.mu.Lock()
	have := map[string]bool{}
	for _, a := range e.probes.routes {
		have[a.ID] = true
	}
	for _, a := range apps {
		if !have[a.ID] {
			e.probes.routes = append(e.probes.routes, a)
		}
	}
	var live []*replicaProc
	for _, r := range e.probes.live {
		if !e.probes.retired[r] {
			live = append(live, r)
		}
	}
	e.probes.mu.Unlock()
	for _, r := range live {
		for _, a := range apps {
			if err := routeOnce(r, a); err != nil {
				e.t.Fatalf("%s through %s's router: %v", a.Name, r.name, err)
			}
		}
	}
}

// routeOnce connects to app's domain through r's router and expects its
// node's answer.
func routeOnce(r *replicaProc, app *client.App) error {
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", r.router, &tls.Config{ServerName: app.Domains[0], InsecureSkipVerify: true}) // the test's own node
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	req, _ := http.NewRequest("GET", "https://"+app.Domains[0]+"/", nil)
	req.Close = true
	if err := req.Write(c); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if want := "node of " + app.ID; string(body) != want {
		return fmt.Errorf("answer %d %q, want %q", resp.StatusCode, body, want)
	}
	return nil
}

// probe asks every live replica's API (the app list, from the store) and
// router (the routed apps) every 100 ms until stopProbe; failures of a
// replica the test killed do not count.
func (e *killEnv) probe() {
	e.probes.stop, e.probes.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(e.probes.done)
		for {
			select {
			case <-e.probes.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			e.probes.round.Lock()
			e.probes.mu.Lock()
			live := append([]*replicaProc(nil), e.probes.live...)
			routes := append([]*client.App(nil), e.probes.routes...)
			e.probes.mu.Unlock()
			for _, r := range live {
				var errs []string
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				if _, err := e.client(r).Apps(ctx, client.ListOptions{All: true}); err != nil {
					errs = append(errs, "API: "+err.Error())
				}
				cancel()
				for _, a := range routes {
					if err := routeOnce(r, a); err != nil {
						errs = append(errs, "router, "+a.Name+": "+err.Error())
					}
				}
				e.probes.mu.Lock()
				if !e.probes.retired[r] {
					e.probes.n++
					for _, s := range errs {
						e.probes.failed = append(e.probes.failed, fmt.Sprintf("%s %s: %s", time.Now().Format("15:04:05.000"), r.name, s))
					}
				}
				e.probes.mu.Unlock()
			}
			e.probes.round.Unlock()
		}
	}()
	e.t.Cleanup(e.stopProbe)
}

func (e *killEnv) stopProbe() {
	if e.probes.stop == nil {
		return
	}
	select {
	case <-e.probes.stop:
	default:
		close(e.probes.stop)
	}
	<-e.probes.done
}

// watchPods follows the namespace's pods until the test ends: it plays
// each new pod's node on its host port and records who got a pod.
func (e *killEnv) watchPods() {
	t := e.t
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	w, err := e.k.Client.CoreV1().Pods(e.ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(done)
		rv := ""
		for {
			for ev := range w.ResultChan() {
				if ev.Type == watch.Error {
					if ctx.Err() == nil {
						e.nodes.fail(fmt.Sprintf("pod watch: %v", apierrors.FromObject(ev.Object)))
					}
					continue
				}
				p, ok := ev.Object.(*corev1.Pod)
				if !ok {
					continue
				}
				rv = p.ResourceVersion
				e.nodes.event(ev.Type, p)
			}
			if ctx.Err() != nil {
				return
			}
			// The watch ended: go on from the last event.
			if w, err = e.k.Client.CoreV1().Pods(e.ns).Watch(ctx, metav1.ListOptions{ResourceVersion: rv}); err != nil {
				if ctx.Err() == nil {
					e.nodes.fail(fmt.Sprintf("pod watch: %v", err))
				}
				return
			}
		}
	}()
}

// Modes of the test's nodes: what the runner's status probe hears.
const (
	modeStarting = "starting" // 503 {"status":"starting"}: a node not up yet
	modeWaiting  = "waiting"  // Mse-Status: Waiting: the node waits for its key
	modeRunning  = "running"  // the app answers
)

// fakeNodes plays the nodes of the pods kwok pretends to run.
type fakeNodes struct {
	t    *testing.T
	cert tls.Certificate

	mu       sync.Mutex
	mode     map[string]string       // app id -> mode (unknown: starting)
	uids     map[string][]string     // app id -> UIDs of its pods, as created
	ln       map[string]net.Listener // pod UID -> the node's listener
	deleting map[string]bool         // pod UIDs seen being deleted
	probed   map[string]int          // app id -> status probes its node answered
	waiters  []deleteWaiter
	errs     []string
}

type deleteWaiter struct {
	ids map[string]bool
	ch  chan string
}

func newFakeNodes(t *testing.T) *fakeNodes {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeNodes{t: t, cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		mode: map[string]string{}, uids: map[string][]string{}, ln: map[string]net.Listener{}, deleting: map[string]bool{}, probed: map[string]int{}}
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, l := range f.ln {
			l.Close()
		}
		for _, e := range f.errs {
			t.Error(e)
		}
	})
	return f
}

func (f *fakeNodes) fail(msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, msg)
}

func (f *fakeNodes) setMode(mode string, ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		f.mode[id] = mode
	}
}

func (f *fakeNodes) addedPods() map[string][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]string{}
	for id, u := range f.uids {
		out[id] = append([]string(nil), u...)
	}
	return out
}

func (f *fakeNodes) countAdded() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, u := range f.uids {
		n += len(u)
	}
	return n
}

// waitProbed waits until the runner has probed the node of each app (its
// pod is ready).
func (f *fakeNodes) waitProbed(t *testing.T, ids []string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		f.mu.Lock()
		var not []string
		for _, id := range ids {
			if f.probed[id] == 0 {
				not = append(not, id)
			}
		}
		f.mu.Unlock()
		if len(not) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the nodes of %d apps were not probed within %s (pods not ready): %v", len(not), within, not)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nextDeleting returns a channel that receives the first of ids whose pod
// is deleted from now on.
func (f *fakeNodes) nextDeleting(ids ...string) <-chan string {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := deleteWaiter{ids: map[string]bool{}, ch: make(chan string, 1)}
	for _, id := range ids {
		w.ids[id] = true
	}
	f.waiters = append(f.waiters, w)
	return w.ch
}

func (f *fakeNodes) event(typ watch.EventType, p *corev1.Pod) {
	id := p.Labels[kubernetes.LabelAppID]
	uid := string(p.UID)
	f.mu.Lock()
	defer f.mu.Unlock()
	if id == "" {
		f.errs = append(f.errs, fmt.Sprintf("pod %s without the app id label", p.Name))
		return
	}
	if typ == watch.Added && !slices.Contains(f.uids[id], uid) {
		f.uids[id] = append(f.uids[id], uid)
		if err := f.listen(id, uid, p); err != nil {
			f.errs = append(f.errs, fmt.Sprintf("play the node of pod %s: %v", p.Name, err))
		}
	}
	if (typ == watch.Deleted || p.DeletionTimestamp != nil) && !f.deleting[uid] {
		f.deleting[uid] = true
		keep := f.waiters[:0]
		for _, w := range f.waiters {
			if w.ids[id] {
				w.ch <- id
				continue
			}
			keep = append(keep, w)
		}
		f.waiters = keep
	}
	if typ == watch.Deleted {
		if l := f.ln[uid]; l != nil {
			l.Close()
			delete(f.ln, uid)
		}
	}
}

// listen plays the node of pod p (app id) on its host port.
func (f *fakeNodes) listen(id, uid string, p *corev1.Pod) error {
	if !p.Spec.HostNetwork || len(p.Spec.Containers) == 0 || len(p.Spec.Containers[0].Ports) == 0 {
		return errors.New("not a host-network node pod")
	}
	port := p.Spec.Containers[0].Ports[0].ContainerPort
	l, err := tls.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{Certificates: []tls.Certificate{f.cert}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return err
	}
	f.ln[uid] = l
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		mode := f.mode[id]
		if r.UserAgent() == "mse-backend-probe" {
			f.probed[id]++
		}
		f.mu.Unlock()
		switch mode {
		case modeWaiting:
			w.Header().Set(nodeapi.HeaderStatus, nodeapi.StatusWaiting)
			_, _ = io.WriteString(w, "waiting for the owner's key\n")
		case modeRunning:
			_, _ = io.WriteString(w, "node of "+id)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"status":"starting"}`)
		}
	})}
	go func() { _ = srv.Serve(l) }()
	return nil
}
