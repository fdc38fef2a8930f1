package testenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
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
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mse-in-go/mse/internal/runtimes/image"
	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

// KubeletNode is the name of the real node the kubelet registers. Pods
// reach it only with the node selector KubeletLabel=true and a toleration
// of the taint KubeletLabel:NoSchedule (the kwok nodes take the others).
const KubeletNode = "kubelet-0"

// KubeletLabel labels and taints KubeletNode.
const KubeletLabel = "mse.test/kubelet"

// KubeletLoopback is where the node's host-network pods listen for the
// test (and a backend on this machine) to reach them. The node's own
// address is this machine's (the kubelet refuses a loopback node IP).
const KubeletLoopback = "127.0.0.1"

// PodCIDR is the kubelet's pod network (a bridge) of the pods not on the
// host's network; PodGateway is the host's address on it (the bridge's):
// what a pod dials to reach this machine, and the source of what this
// machine sends to a pod.
const (
	PodCIDR    = "10.245.0.0/24"
	PodGateway = "10.245.0.1"
)

// PauseImage is the pods' sandbox image, built by the test (no registry).
const PauseImage = "localhost/mse/pause:test"

// Kubelet is a real kubelet on this machine, with its own containerd
// (Debian's, with runc and the CNI plugins), registered to the test
// cluster as KubeletNode.
type Kubelet struct {
	// Socket is containerd's.
	Socket string
	// APIAddr is where the kubelet API listens (the node's address): it
	// admits only the API server's client certificate.
	APIAddr string
	// NodeIP is the node's address (this machine's): pods on the pod
	// network reach the host there.
	NodeIP string
	dir    string
	// cgroupRoot is the pods' cgroup root (under each v1 hierarchy).
	cgroupRoot string
	k          *KubeCluster
	ctr        string
	mu         sync.Mutex
}

var (
	kubeletOnce sync.Once
	kubelet     *Kubelet
	kubeletErr  error
)

// errKubeletMissing: a component of the real node is not installed.
var errKubeletMissing = errors.New("the real-kubelet test components are missing")

// Kubelet returns the cluster's real node, started on first use (one per
// test binary; KubeMain stops it with the cluster). Without containerd,
// runc, the CNI plugins, the kubelet binary or root the test is skipped, or
// fails under CI=true.
func (k *KubeCluster) Kubelet(t testing.TB) *Kubelet {
	t.Helper()
	kubeletOnce.Do(func() { kubelet, kubeletErr = k.startKubelet() })
	if errors.Is(kubeletErr, errKubeletMissing) {
		msg := fmt.Sprintf("%v; apt-get install containerd runc containernetworking-plugins, run as root, and build the kubelet with scripts/k8s-tools.sh (into %s)", kubeletErr, KubeToolsDir())
		ciskip.Missing(t, "%s", msg)
	}
	if kubeletErr != nil {
		t.Fatalf("start the test kubelet: %v", kubeletErr)
	}
	return kubelet
}

// cniDir is where Debian's containernetworking-plugins installs them.
const cniDir = "/usr/lib/cni"

func (k *KubeCluster) startKubelet() (*Kubelet, error) {
	var missing []string
	need := map[string]string{}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc"} {
		p, err := exec.LookPath(b)
		if err != nil {
			missing = append(missing, b)
		}
		need[b] = p
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniDir, p)); err != nil {
			missing = append(missing, filepath.Join(cniDir, p))
		}
	}
	bin := KubeToolsDir()
	if fi, err := os.Stat(filepath.Join(bin, "kubelet")); err != nil || fi.Mode()&0o111 == 0 {
		missing = append(missing, filepath.Join(bin, "kubelet"))
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s", errKubeletMissing, strings.Join(missing, ", "))
	}
	sweepKubelet()
	dir, err := os.MkdirTemp("", "mse-kubelet-")
	if err != nil {
		return nil, err
	}
	kl := &Kubelet{Socket: filepath.Join(dir, "containerd.sock"), dir: dir, k: k, ctr: need["ctr"]}
	ok := false
	defer func() {
		if !ok {
			kl.stop()
		}
	}()
	k.kubelet = kl
	if err := kl.writeContainerdConfig(need["runc"]); err != nil {
		return nil, err
	}
	if _, err := k.run(filepath.Dir(need["containerd"]), "containerd", "--config", filepath.Join(dir, "containerd.toml"), "--log-level", "warn"); err != nil {
		return nil, err
	}
	if err := kl.waitContainerd(30 * time.Second); err != nil {
		return nil, err
	}
	if err := kl.importPause(); err != nil {
		return nil, err
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	nodeIP, err := hostIP()
	if err != nil {
		return nil, err
	}
	if err := k.grantKubeletAPI(); err != nil {
		return nil, err
	}
	// Pods' cgroups under a root of this kubelet's own: another test
	// binary's kubelet on this machine kills the pod cgroups it does not
	// know under its root.
	if err := kl.makeCgroupRoot(); err != nil {
		return nil, err
	}
	kl.APIAddr = net.JoinHostPort(nodeIP, strconv.Itoa(ports[0]))
	kl.NodeIP = nodeIP
	// Its serving certificate, for the node's address, from the CA the API
	// server verifies kubelets with.
	servingCert, servingKey, err := k.kubeletServingCA.issue(dir, "kubelet-serving", KubeletNode, nodeIP)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "kubelet.yaml")
	if err := os.WriteFile(cfg, kubeletConfig(kl.Socket, nodeIP, kl.cgroupRoot, k.kubeletClientCA.file, servingCert, servingKey, ports[0], ports[1]), 0o600); err != nil {
		return nil, err
	}
	if _, err := k.run(bin, "kubelet", "--config", cfg, "--kubeconfig", k.Kubeconfig,
		"--root-dir", filepath.Join(dir, "kubelet"), "--cert-dir", filepath.Join(dir, "kubelet-pki"),
		"--hostname-override", KubeletNode, "--node-ip", nodeIP,
		"--node-labels", KubeletLabel+"=true", "--v", "1"); err != nil {
		return nil, err
	}
	if err := kl.waitReady(120 * time.Second); err != nil {
		return nil, err
	}
	ok = true
	return kl, nil
}

// writeContainerdConfig: a containerd of the test's own (root, state,
// sockets under dir), CRI with runc and cgroupfs, and a bridge network for
// pods that are not on the host's network.
func (kl *Kubelet) writeContainerdConfig(runc string) error {
	cni := filepath.Join(kl.dir, "cni")
	if err := os.MkdirAll(cni, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cni, "10-mse-test.conflist"), []byte(`{
  "cniVersion": "1.0.0",
  "name": "mse-test",
  "plugins": [
    {"type": "bridge", "bridge": "msetest0", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "`+PodCIDR+`", "gateway": "`+PodGateway+`"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "loopback"}
  ]
}
`), 0o644); err != nil {
		return err
	}
	conf := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  # This machine is itself a container: a negative OOM score is refused.
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = %[6]q
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
`, filepath.Join(kl.dir, "root"), filepath.Join(kl.dir, "state"), kl.Socket, filepath.Join(kl.dir, "containerd.ttrpc.sock"),
		PauseImage, runc, cniDir, cni)
	return os.WriteFile(filepath.Join(kl.dir, "containerd.toml"), []byte(conf), 0o600)
}

func (kl *Kubelet) waitContainerd(within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if err := kl.k.exited(); err != nil {
			return err
		}
		if _, err := kl.runCtr(context.Background(), "version"); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("containerd did not answer on %s within %s:\n%s", kl.Socket, within, tailFile(filepath.Join(kl.k.dir, "containerd.log"), 3000))
}

// kubeletConfig: cgroupfs on this machine's cgroup v1, no swap check, no
// CPU manager, the kubelet API on the node's address (where the API server
// dials it for pod logs) with the serving certificate certFile, which the
// API server verifies, admitting only client certificates of caFile (the
// API server's, KubeletClientUser), each request authorized by the API
// server (Webhook), no image garbage collection (the images cannot be
// pulled again), eviction only when the disk is all but full, and the
// cluster DNS at ClusterDNSIP. That DNS answers only once the test binary
// asks for ClusterDNS: until then pods on the pod network resolve no names
// at all (not even through this machine's resolver), and nothing in the
// tests needs them to.
func kubeletConfig(socket, nodeIP, cgroupRoot, caFile, certFile, keyFile string, port, healthz int) []byte {
	return fmt.Appendf(nil, `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://%s
address: %s
port: %d
tlsCertFile: %q
tlsPrivateKeyFile: %q
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %q}
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
cgroupRoot: %q
failCgroupV1: false
failSwapOn: false
cpuManagerPolicy: none
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
registerWithTaints:
- {key: %s, value: "true", effect: NoSchedule}
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
clusterDNS: [%s]
clusterDomain: %s
`, socket, nodeIP, port, certFile, keyFile, healthz, caFile, cgroupRoot, KubeletLabel, ClusterDNSIP, ClusterDomain)
}

// hostIP is the address the kubelet registers for its node and serves its
// API on: this machine's source address towards the default route (found
// without sending anything), else its first non-loopback IPv4 address. The
// kubelet refuses a loopback node IP.
func hostIP() (string, error) {
	if c, err := net.Dial("udp4", "192.0.2.1:9"); err == nil { // TEST-NET-1: a route lookup, no packet
		ip := c.LocalAddr().(*net.UDPAddr).IP
		c.Close()
		if !ip.IsLoopback() && !ip.IsUnspecified() {
			return ip.String(), nil
		}
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 || strings.HasPrefix(i.Name, "msetest") {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
				return n.IP.String(), nil
			}
		}
	}
	return "", errors.New("no non-loopback IPv4 address on this machine for the kubelet's node")
}

// grantKubeletAPI lets the API server's client identity use the kubelet
// API (logs, exec, stats), as kubeadm binds it.
func (k *KubeCluster) grantKubeletAPI() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := k.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "mse-test-kubelet-api-admin"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: KubeletClientUser}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("grant the API server the kubelet API: %w", err)
	}
	return nil
}

// waitReady waits for the node to be Ready and lifts the not-ready taint
// admission put on it (no node lifecycle controller runs).
func (kl *Kubelet) waitReady(within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	n, err := kl.k.awaitNodeReady(ctx, KubeletNode, 200*time.Millisecond)
	if err == nil || ctx.Err() == nil {
		return err
	}
	why := "not registered"
	if n != nil {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				why = c.Reason + ": " + c.Message
			}
		}
	}
	return fmt.Errorf("the kubelet's node %s is not Ready within %s (%s):\n%s", KubeletNode, within, why, tailFile(filepath.Join(kl.k.dir, "kubelet.log"), 4000))
}

func (kl *Kubelet) runCtr(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, kl.ctr, append([]string{"--address", kl.Socket, "--namespace", "k8s.io"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Import imports an OCI image layout tar into the node's containerd (the
// images the kubelet's pods name; there is no registry), as
// `ctr -n k8s.io images import` does.
func (kl *Kubelet) Import(t testing.TB, tarPath string) {
	t.Helper()
	kl.mu.Lock()
	defer kl.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := kl.runCtr(ctx, "images", "import", "--snapshotter", "overlayfs", tarPath); err != nil {
		t.Fatalf("import %s into the kubelet's containerd: %v", tarPath, err)
	}
}

// ImportRuntime exports the runtime image digest from the image store at
// storeDir and imports it named ref ("localhost/mse/flask@sha256:…", what
// the pods name).
func (kl *Kubelet) ImportRuntime(t testing.TB, storeDir, digest, ref string) {
	t.Helper()
	st, err := image.Open(storeDir, image.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	err = st.ExportRef(context.Background(), digest, ref, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("export runtime %s: %v", digest, err)
	}
	kl.Import(t, p)
}

// importPause builds the sandbox image: a static pause (internal/testenv/pause)
// that waits for a signal and reaps children.
func (kl *Kubelet) importPause() error {
	bin := filepath.Join(kl.dir, "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./internal/testenv/pause")
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./internal/testenv/pause: %v\n%s", err, b)
	}
	return kl.importFiles(image.FilesSpec{Files: []image.File{{Path: "/pause", Mode: 0o555, Source: bin}}, Entrypoint: []string{"/pause"}, User: "65535"}, PauseImage)
}

// importFiles builds the one-layer image spec describes and imports it
// into the node's containerd named ref.
func (kl *Kubelet) importFiles(spec image.FilesSpec, ref string) error {
	st, err := image.Open(filepath.Join(kl.dir, "images"), image.DefaultLimits())
	if err != nil {
		return err
	}
	ctx := context.Background()
	d, err := st.AddFiles(ctx, spec)
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	f, err := os.CreateTemp(kl.dir, "image-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	err = st.ExportRef(ctx, d, ref, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	kl.mu.Lock()
	defer kl.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	_, err = kl.runCtr(cctx, "images", "import", "--snapshotter", "overlayfs", f.Name())
	return err
}

// stop kills what containerd runs (its shims outlive it otherwise), after
// the kubelet has stopped, and unmounts what is mounted under the
// directory before removing it.
func (kl *Kubelet) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Its pods' sandboxes, whose addresses the CNI plugin never gets to
	// release (their containers are killed, not torn down).
	var sandboxes []string
	if out, err := kl.runCtr(ctx, "containers", "list", "--quiet"); err == nil {
		sandboxes = strings.Fields(string(out))
	}
	defer releasePodIPs(sandboxes)
	if out, err := kl.runCtr(ctx, "tasks", "list", "--quiet"); err == nil {
		ids := strings.Fields(string(out))
		for _, id := range ids {
			_, _ = kl.runCtr(ctx, "tasks", "kill", "--all", "--signal", "SIGKILL", id)
		}
		for _, id := range ids {
			for range 50 {
				if _, err := kl.runCtr(ctx, "tasks", "delete", id); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	for _, m := range mountsUnder(kl.dir) {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
}

// cgroupMount is where this machine's cgroup (v1) hierarchies are.
const cgroupMount = "/sys/fs/cgroup"

// makeCgroupRoot makes the kubelet's cgroup root in every hierarchy (the
// kubelet wants it to exist).
func (kl *Kubelet) makeCgroupRoot() error {
	kl.cgroupRoot = "/" + filepath.Base(kl.dir)
	hs, err := os.ReadDir(cgroupMount)
	if err != nil {
		return err
	}
	for _, h := range hs {
		if h.IsDir() {
			if err := os.Mkdir(filepath.Join(cgroupMount, h.Name(), kl.cgroupRoot), 0o755); err != nil && !os.IsExist(err) {
				return fmt.Errorf("the kubelet's cgroup root: %w", err)
			}
		}
	}
	return nil
}

// removeCgroupRoot removes the cgroup root's directories, deepest first
// (what still holds a process stays).
func (kl *Kubelet) removeCgroupRoot() {
	if kl.cgroupRoot != "" {
		removeCgroupRoot(kl.cgroupRoot)
	}
}

// removeCgroupRoot removes cgroup root root (as "/mse-kubelet-…") from
// every hierarchy.
func removeCgroupRoot(root string) {
	hs, _ := os.ReadDir(cgroupMount)
	for _, h := range hs {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(cgroupMount, h.Name(), root), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = syscall.Rmdir(dirs[i])
		}
	}
}

// removeDir removes the kubelet's cgroup root, and its directory once
// nothing is mounted there.
func (kl *Kubelet) removeDir() {
	kl.removeCgroupRoot()
	for _, m := range mountsUnder(kl.dir) {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
	if len(mountsUnder(kl.dir)) > 0 {
		fmt.Fprintf(os.Stderr, "testenv: %s still has mounts; left in place\n", kl.dir)
		return
	}
	_ = os.RemoveAll(kl.dir)
}

// mountsUnder lists the mount points under dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// sweepKubelet removes directories of test kubelets whose test binary died
// more than an hour ago, unless something is still mounted there.
// podIPDir is where the pod network's host-local IPAM keeps its
// allocations: a file per address, naming the container that holds it.
// The test kubelets of concurrent test binaries share it (one pod network).
var podIPDir = "/var/lib/cni/networks/mse-test"

// releasePodIPs frees the pod network's addresses that containers ids hold
// (the files that name them), as the CNI plugin's DEL would have.
func releasePodIPs(ids []string) {
	mine := map[string]bool{}
	for _, id := range ids {
		mine[id] = true
	}
	sweepPodIPs(func(holder string, _ time.Time) bool { return mine[holder] })
}

// sweepPodIPs removes the allocations for which drop(holder, since) holds.
func sweepPodIPs(drop func(holder string, since time.Time) bool) {
	entries, err := os.ReadDir(podIPDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if net.ParseIP(e.Name()) == nil { // last_reserved_ip.0, lock
			continue
		}
		p := filepath.Join(podIPDir, e.Name())
		b, err := os.ReadFile(p)
		fi, serr := e.Info()
		if err != nil || serr != nil {
			continue
		}
		holder, _, _ := strings.Cut(string(b), "\n")
		if drop(strings.TrimSpace(holder), fi.ModTime()) {
			_ = os.Remove(p)
		}
	}
}

func sweepKubelet() {
	// A dead run's pods' addresses: no test pod lives an hour. Without this,
	// runs killed hard fill the /24 and pods stay in ContainerCreating.
	sweepPodIPs(func(_ string, since time.Time) bool { return time.Since(since) > time.Hour })
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "mse-kubelet-*"))
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && time.Since(fi.ModTime()) > time.Hour && len(mountsUnder(d)) == 0 {
			removeCgroupRoot("/" + filepath.Base(d)) // a dead run's pods' cgroups (makeCgroupRoot)
			_ = os.RemoveAll(d)
		}
	}
}
