package testenv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

// KubeRouterEnv names the directory holding the kube-router binary
// (scripts/kube-router.sh builds it there).
const KubeRouterEnv = "MSE_KUBE_ROUTER"

// KubeRouterVersion is the version tools/kube-router builds.
const KubeRouterVersion = "v2.1.0"

// KubeRouterDir is where kube-router is: $MSE_KUBE_ROUTER, or the cache
// directory scripts/kube-router.sh fills by default.
func KubeRouterDir() string { return cacheDir(KubeRouterEnv, "kube-router-"+KubeRouterVersion) }

var (
	netpolOnce sync.Once
	netpolErr  error
)

// errNetpolMissing: a component of the policy enforcement is not installed.
var errNetpolMissing = errors.New("the NetworkPolicy test components are missing")

// hostNetLock is the machine-wide lock a test binary holds from its first
// kube-router or kube-proxy to its end. kube-router owns the host's filter
// table chains KUBE-ROUTER-*, KUBE-POD-FW-*, KUBE-NWPLCY-* and the ipsets
// KUBE-SRC-*, KUBE-DST-*, and removes those it did not make; kube-proxy
// rewrites the nat table's KUBE-* chains whole; both act for their own
// cluster. So one test binary at a time has them, and one lock guards both:
// with a lock each, two binaries that need both could each hold one and
// wait for the other.
const hostNetLock = "/run/lock/mse-test-hostnet.lock"

// hostNetWait bounds the wait for another test binary's hold: one holds
// it for its whole run (a few minutes here), and under go test's 30 min
// timeout a waiter may wait for two others.
const hostNetWait = 20 * time.Minute

var (
	hostNetMu sync.Mutex
	hostNet   *os.File // the held lock, or nil
)

// takeHostNet takes hostNetLock for this test binary, if it does not hold
// it already; what is the component that needs it, for the messages.
func takeHostNet(what string) error {
	hostNetMu.Lock()
	defer hostNetMu.Unlock()
	if hostNet != nil {
		return nil
	}
	f, err := machineLock(hostNetLock, what, "the host's iptables chains and ipsets of kube-router and kube-proxy")
	if err != nil {
		return err
	}
	hostNet = f
	return nil
}

// releaseHostNet frees hostNetLock (the components it guards have
// stopped and their rules are gone).
func releaseHostNet() {
	hostNetMu.Lock()
	defer hostNetMu.Unlock()
	if hostNet != nil {
		hostNet.Close() // releases the flock
		hostNet = nil
	}
}

// netpol is the running policy controller.
type netpol struct{}

// NetworkPolicies makes the cluster's NetworkPolicies enforced on the real
// kubelet's pods (KubeCluster.Kubelet, started here if it is not):
// kube-router's network-policy controller (only that: no routing, no
// service proxy) runs on this machine against the test cluster, once per
// test binary, and writes the host's iptables and ipsets. It only acts on
// pods of the pod network (NetworkPolicies do not apply to host-network
// pods). As in any kube-router cluster, traffic from this machine itself to
// a pod is always admitted (the kubelet's probes): a policy's ingress rules
// decide what other pods and hosts reach. Without kube-router, ipset,
// iptables, bridge netfilter or root the test is skipped, or fails under
// CI=true.
func (k *KubeCluster) NetworkPolicies(t testing.TB) {
	t.Helper()
	k.Kubelet(t)
	netpolOnce.Do(func() { netpolErr = k.startNetworkPolicies() })
	if errors.Is(netpolErr, errNetpolMissing) {
		msg := fmt.Sprintf("%v; apt-get install ipset iptables, run as root, and build kube-router with scripts/kube-router.sh (into %s; %s overrides the directory)", netpolErr, KubeRouterDir(), KubeRouterEnv)
		ciskip.Missing(t, "%s", msg)
	}
	if netpolErr != nil {
		t.Fatalf("start the NetworkPolicy controller (kube-router): %v", netpolErr)
	}
}

// bridgeNF makes bridged traffic (pod to pod on msetest0) pass through
// iptables, where the policies are.
const bridgeNF = "/proc/sys/net/bridge/bridge-nf-call-iptables"

func (k *KubeCluster) startNetworkPolicies() error {
	var missing []string
	dir := KubeRouterDir()
	if fi, err := os.Stat(filepath.Join(dir, "kube-router")); err != nil || fi.Mode()&0o111 == 0 {
		missing = append(missing, filepath.Join(dir, "kube-router"))
	}
	for _, b := range []string{"ipset", "iptables", "iptables-save", "iptables-restore"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if _, err := os.Stat(bridgeNF); err != nil {
		missing = append(missing, "bridge netfilter ("+bridgeNF+")")
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", errNetpolMissing, strings.Join(missing, ", "))
	}
	if b, err := os.ReadFile(bridgeNF); err == nil && strings.TrimSpace(string(b)) != "1" {
		if err := os.WriteFile(bridgeNF, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("turn on %s: %w", bridgeNF, err)
		}
	}
	if err := takeHostNet("kube-router"); err != nil {
		return err
	}
	np := &netpol{}
	ok := false
	defer func() {
		if !ok {
			np.stop()
		}
	}()
	// No kube-router of this binary ran yet: what is left is a dead test
	// binary's.
	if err := cleanupKubeRouter(); err != nil {
		return fmt.Errorf("remove a previous kube-router's rules: %w", err)
	}
	k.netpol = np
	if _, err := k.run(dir, "kube-router",
		"--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
		"--kubeconfig", k.Kubeconfig, "--hostname-override", KubeletNode,
		"--service-cluster-ip-range", kubeServiceCIDR,
		"--enable-ipv4=true", "--enable-ipv6=false", "--enable-cni=false",
		"--health-port=0", "--metrics-port=0", "--v", "1"); err != nil {
		return err
	}
	if err := k.waitKubeRouter(60 * time.Second); err != nil {
		return err
	}
	ok = true
	return nil
}

// machineLock takes the flock at path, waiting (at most hostNetWait) for
// another test binary that holds it; what names the component it guards,
// owner says what it owns, for the messages.
func machineLock(path, what, owner string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	deadline := time.Now().Add(hostNetWait)
	said := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			// Who holds it, for the messages of those who wait.
			_ = f.Truncate(0)
			_, _ = f.WriteAt(fmt.Appendf(nil, "pid %d (%s)\n", os.Getpid(), filepath.Base(os.Args[0])), 0)
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another test binary (%s) has held %s for %s: one at a time runs %s on this machine (it owns %s); run these tests again when it is done", holder(path), path, hostNetWait, what, owner)
		}
		if !said {
			fmt.Fprintf(os.Stderr, "testenv: waiting for %s, which another test binary (%s) holds, to run %s\n", path, holder(path), what)
			said = true
		}
		time.Sleep(time.Second)
	}
}

// holder is what the holder of the lock at path wrote there.
func holder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return "unknown"
	}
	return string(bytes.TrimSpace(b))
}

// waitKubeRouter waits for kube-router's first sync: its chains hooked
// into the host's FORWARD chain and the default policy chain made.
func (k *KubeCluster) waitKubeRouter(within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if err := k.exited(); err != nil {
			return err
		}
		fwd, err := exec.Command("iptables", "-w", "-S", "FORWARD").Output()
		if err == nil && bytes.Contains(fwd, []byte("KUBE-ROUTER-FORWARD")) && exec.Command("iptables", "-w", "-S", "KUBE-NWPLCY-DEFAULT").Run() == nil &&
			bytes.Contains([]byte(tailFile(filepath.Join(k.dir, "kube-router.log"), 1<<20)), []byte("sync iptables took")) {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("kube-router did not set up its chains within %s:\n%s", within, tailFile(filepath.Join(k.dir, "kube-router.log"), 3000))
}

// stop removes kube-router's rules (it has been stopped).
func (n *netpol) stop() {
	if err := cleanupKubeRouter(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: removing kube-router's iptables rules and ipsets: %v\n", err)
	}
}

// kubeRouterChain reports whether chain is one kube-router's network-policy
// controller makes.
func kubeRouterChain(chain string) bool {
	for _, p := range []string{"KUBE-ROUTER-", "KUBE-POD-FW-", "KUBE-NWPLCY-"} {
		if strings.HasPrefix(chain, p) {
			return true
		}
	}
	return false
}

// cleanupKubeRouter removes what kube-router's network-policy controller
// writes: the jumps from the built-in filter chains to its chains, its
// chains, and its ipsets. (kube-router's own --cleanup-config does not: in
// v2.1.0 it runs on a controller with no iptables handlers, and also resets
// IPVS and routes, which are not its to touch here.)
func cleanupKubeRouter() error {
	var errs []error
	for _, builtin := range []string{"INPUT", "FORWARD", "OUTPUT"} {
		out, err := exec.Command("iptables", "-w", "-t", "filter", "-L", builtin, "-n", "--line-numbers").Output()
		if err != nil {
			errs = append(errs, fmt.Errorf("iptables -L %s: %w", builtin, err))
			continue
		}
		var nums []int
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && kubeRouterChain(f[1]) {
				if n, err := strconv.Atoi(f[0]); err == nil {
					nums = append(nums, n)
				}
			}
		}
		sort.Sort(sort.Reverse(sort.IntSlice(nums)))
		for _, n := range nums {
			if b, err := exec.Command("iptables", "-w", "-t", "filter", "-D", builtin, strconv.Itoa(n)).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("iptables -D %s %d: %v: %s", builtin, n, err, bytes.TrimSpace(b)))
			}
		}
	}
	out, err := exec.Command("iptables", "-w", "-t", "filter", "-S").Output()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("iptables -S: %w", err))...)
	}
	var chains []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "-N" && kubeRouterChain(f[1]) {
			chains = append(chains, f[1])
		}
	}
	for _, op := range []string{"-F", "-X"} { // flush all first: they jump to each other
		for _, c := range chains {
			if b, err := exec.Command("iptables", "-w", "-t", "filter", op, c).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("iptables %s %s: %v: %s", op, c, err, bytes.TrimSpace(b)))
			}
		}
	}
	sets, err := exec.Command("ipset", "list", "-n").Output()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("ipset list: %w", err))...)
	}
	for _, s := range strings.Fields(string(sets)) {
		if strings.HasPrefix(s, "KUBE-SRC-") || strings.HasPrefix(s, "KUBE-DST-") {
			if b, err := exec.Command("ipset", "destroy", s).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("ipset destroy %s: %v: %s", s, err, bytes.TrimSpace(b)))
			}
		}
	}
	return errors.Join(errs...)
}

// ProbePod is a pod on the kubelet's pod network that answers on each of
// its ports with one line naming itself ("mse-probe NAME PORT") and, asked
// by the test on its control port, dials an address from inside the pod:
// for the tests of NetworkPolicies.
type ProbePod struct {
	kl              *Kubelet
	Name, Namespace string
	// IP is the pod's address on the pod network.
	IP string
	// Ports are the ports it answers on.
	Ports []int
}

// ProbeControlPort is where a ProbePod takes the test's requests (this
// machine always reaches its pods, whatever their policies).
const ProbeControlPort = 9099

// probeScript is the ProbePod's program: argv NAME CONTROL_PORT PORT...
const probeScript = `
import http.server, json, socket, sys, threading, urllib.parse
name, ctl, ports = sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(("mse-probe %s %d\n" % (name, port)).encode())
        except OSError:
            pass
        c.close()
for p in ports:
    threading.Thread(target=serve, args=(p,), daemon=True).start()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        r = {"connected": False, "banner": "", "error": ""}
        try:
            c = socket.create_connection((q["host"][0], int(q["port"][0])), timeout=float(q["timeout"][0]))
            r["connected"] = True
            c.settimeout(1)
            try:
                r["banner"] = c.recv(200).decode("utf-8", "replace").strip()
            except OSError:
                pass
            c.close()
        except Exception as e:
            r["error"] = "%s: %s" % (type(e).__name__, e)
        b = json.dumps(r).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("", ctl), H).serve_forever()
`

var (
	probeImageMu  sync.Mutex
	probeImageRef string
)

// probeImage imports the flask runtime (it has python3) into the node's
// containerd, once per test binary, and returns its reference.
func (kl *Kubelet) probeImage(t testing.TB) string {
	t.Helper()
	probeImageMu.Lock()
	defer probeImageMu.Unlock()
	if probeImageRef != "" {
		return probeImageRef
	}
	var digest string
	for _, e := range Runtimes(t) {
		if e.Name == "flask" {
			digest = e.Digest
		}
	}
	if digest == "" {
		t.Fatal("no flask runtime among the test runtimes")
	}
	ref := "localhost/mse/flask@" + digest
	kl.ImportRuntime(t, RuntimeDir(), digest, ref)
	probeImageRef = ref
	return ref
}

// ProbePod starts a ProbePod named name in ns with labels on the pod network,
// answering on ports, and waits until it is Running and ready.
func (kl *Kubelet) ProbePod(t testing.TB, ns, name string, labels map[string]string, ports ...int) *ProbePod {
	t.Helper()
	img := kl.probeImage(t)
	no := false
	uid := int64(65532)
	args := []string{"python3", "-c", probeScript, name, strconv.Itoa(ProbeControlPort)}
	var cports []corev1.ContainerPort
	for _, p := range ports {
		args = append(args, strconv.Itoa(p))
		cports = append(cports, corev1.ContainerPort{ContainerPort: int32(p), Protocol: corev1.ProtocolTCP})
	}
	grace := int64(0)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{KubeletLabel: "true"},
			Tolerations:                   []corev1.Toleration{{Key: KubeletLabel, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			TerminationGracePeriodSeconds: &grace,
			SecurityContext:               &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &uid},
			Containers: []corev1.Container{{
				Name: "probe", Image: img, ImagePullPolicy: corev1.PullNever,
				Command: args, Ports: cports,
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(ProbeControlPort)}}, PeriodSeconds: 1},
			}},
		},
	}
	got := kl.runPod(t, pod)
	if got.Status.PodIP == got.Status.HostIP {
		t.Fatalf("probe pod %s/%s is on the host's network (IP %s), want the pod network", ns, name, got.Status.PodIP)
	}
	return &ProbePod{kl: kl, Name: name, Namespace: ns, IP: got.Status.PodIP, Ports: ports}
}

// runPod creates pod (one container) and waits, up to 3 minutes, until it
// is Running with an IP and its container ready; a pod that ends fails t.
func (kl *Kubelet) runPod(t testing.TB, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pods := kl.k.Client.CoreV1().Pods(pod.Namespace)
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
	for {
		got, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("pod %s/%s: %v", pod.Namespace, pod.Name, err)
		}
		if got.Status.Phase == corev1.PodRunning && got.Status.PodIP != "" && len(got.Status.ContainerStatuses) == 1 && got.Status.ContainerStatuses[0].Ready {
			return got
		}
		if got.Status.Phase == corev1.PodFailed || got.Status.Phase == corev1.PodSucceeded {
			t.Fatalf("pod %s/%s ended: %+v", pod.Namespace, pod.Name, got.Status)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s/%s not Running and ready within 3 min: %+v\nkubelet log:\n%s", pod.Namespace, pod.Name, got.Status, tailFile(filepath.Join(kl.k.dir, "kubelet.log"), 4000))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// log is the end of the pod's log, for failures.
func (p *ProbePod) log() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tail := int64(40)
	b, err := p.kl.k.Client.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{TailLines: &tail}).DoRaw(ctx)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// Addr is the pod's address on port.
func (p *ProbePod) Addr(port int) string { return net.JoinHostPort(p.IP, strconv.Itoa(port)) }

// Banner is what the pod answers on port.
func (p *ProbePod) Banner(port int) string { return fmt.Sprintf("mse-probe %s %d", p.Name, port) }

// DialResult is what a dial from inside a ProbePod gave.
type DialResult struct {
	// Connected: the TCP handshake completed.
	Connected bool `json:"connected"`
	// Banner is the first line the peer sent (a ProbePod's Banner), if any.
	Banner string `json:"banner"`
	// Error is why the connection failed.
	Error string `json:"error"`
}

func (r DialResult) String() string {
	if r.Connected {
		return fmt.Sprintf("connected (banner %q)", r.Banner)
	}
	return "not connected: " + r.Error
}

// Dial connects from inside the pod to addr (host:port), giving up after
// timeout.
func (p *ProbePod) Dial(t testing.TB, addr string, timeout time.Duration) DialResult {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{"host": {host}, "port": {port}, "timeout": {strconv.FormatFloat(timeout.Seconds(), 'f', 3, 64)}}
	hc := &http.Client{Timeout: timeout + 10*time.Second}
	u := "http://" + p.Addr(ProbeControlPort) + "/dial?" + q.Encode()
	resp, err := hc.Get(u)
	if err != nil {
		// The question is asked again once: it is this machine's own
		// channel to the pod (always admitted), not the path under test.
		t.Logf("ask probe pod %s to dial %s: %v; asking again", p.Name, addr, err)
		resp, err = hc.Get(u)
	}
	if err != nil {
		t.Fatalf("ask probe pod %s to dial %s: %v\npod log:\n%s", p.Name, addr, err, p.log())
	}
	defer resp.Body.Close()
	var r DialResult
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&r); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("probe pod %s dialing %s: HTTP %d, %v", p.Name, addr, resp.StatusCode, err)
	}
	return r
}

// DialHost connects from this machine to addr, as Dial does from a pod.
func DialHost(addr string, timeout time.Duration) DialResult {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return DialResult{Error: err.Error()}
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	line, _ := bufio.NewReader(io.LimitReader(c, 200)).ReadString('\n')
	return DialResult{Connected: true, Banner: strings.TrimSpace(line)}
}

// ServeBanner listens on addr (host:port, port 0 for any) and answers each
// connection with one line, "mse-probe NAME PORT", as a ProbePod does. It
// returns the address and the line, and closes when t ends.
func ServeBanner(t testing.TB, addr, name string) (string, string) {
	t.Helper()
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	banner := fmt.Sprintf("mse-probe %s %d", name, l.Addr().(*net.TCPAddr).Port)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(banner + "\n"))
			c.Close()
		}
	}()
	return l.Addr().String(), banner
}

// MustReach fails t unless the pod connects to addr and, when banner is
// not empty, reads that line there.
func (p *ProbePod) MustReach(t testing.TB, addr, banner string) {
	t.Helper()
	r := p.Dial(t, addr, 5*time.Second)
	if !r.Connected || (banner != "" && r.Banner != banner) {
		t.Errorf("%s -> %s: %v; want connected, banner %q", p.Name, addr, r, banner)
	}
}

// MustNotReach fails t if the pod connects to addr. kube-router rejects
// what a policy refuses, so a refusal is quick; a connection refused for
// want of a listener looks the same, so each use needs its control (the
// same dial succeeding where no policy stands in the way).
func (p *ProbePod) MustNotReach(t testing.TB, addr string) {
	t.Helper()
	if r := p.Dial(t, addr, 3*time.Second); r.Connected {
		t.Errorf("%s -> %s: %v; want it refused by the NetworkPolicy", p.Name, addr, r)
	}
}

// WaitDial polls a dial from inside the pod until it connects (want true)
// or does not (false): a policy is enforced a moment after the API server
// has it.
func (p *ProbePod) WaitDial(t testing.TB, addr string, want bool, within time.Duration) {
	t.Helper()
	var r DialResult
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if r = p.Dial(t, addr, 2*time.Second); r.Connected == want {
			return
		}
	}
	t.Fatalf("%s -> %s still %v after %s (want connected=%v)", p.Name, addr, r, within, want)
}
