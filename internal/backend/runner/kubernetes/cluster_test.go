package kubernetes_test

// Conformance of the runner against a real kube-apiserver, scheduler,
// controller manager and kwok (testenv.Kube): one cluster per test binary,
// a namespace per test, the runner acting as an identity that has exactly
// Rules and ClusterRules.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientset "k8s.io/client-go/kubernetes"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/backend/runner"
	. "github.com/mse-in-go/mse/internal/backend/runner/kubernetes"
	"github.com/mse-in-go/mse/internal/config"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/spec"
	"github.com/mse-in-go/mse/internal/testenv"
)

func TestMain(m *testing.M) { testenv.KubeMain(m) }

const (
	testNodeImage = "mse/node@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	testDigest    = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	testBundleURL = "https://mse-backend.mse.svc:8081"
)

var (
	hw2g  = runner.Hardware{Name: "2g", MemoryMiB: 2048, Cores: 1, TEE: attest.TypeSim}
	hwSGX = runner.Hardware{Name: "sgx-4g", MemoryMiB: 4096, Cores: 2, TEE: attest.TypeSGX, Kubernetes: &runner.KubeScheduling{
		NodeSelector: map[string]string{"mse.tee": "sgx"},
		Tolerations:  []runner.KubeToleration{{Key: "mse.tee", Operator: "Equal", Value: "sgx", Effect: "NoSchedule"}},
		Resources:    map[string]string{ResourceSGXEPC: "512Mi", ResourceSGXEnclave: "1", ResourceSGXProvision: "1"},
	}}
	hwTDX    = runner.Hardware{Name: "tdx-4g", MemoryMiB: 4096, Cores: 2, TEE: attest.TypeTDX, Kubernetes: &runner.KubeScheduling{RuntimeClass: "kata-qemu-tdx"}}
	hwManual = runner.Hardware{Name: "manual", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeSim, Kubernetes: &runner.KubeScheduling{
		NodeSelector: map[string]string{"mse.test/manual": "true"},
		Tolerations:  []runner.KubeToleration{{Key: "mse.test/manual", Operator: "Exists", Effect: "NoSchedule"}},
	}}
)

type env struct {
	k     *testenv.KubeCluster
	ns    string
	admin clientset.Interface
	user  clientset.Interface // the runner's identity: Rules and ClusterRules only
}

func newEnv(t testing.TB) *env {
	t.Helper()
	k := testenv.Kube(t)
	e := &env{k: k, ns: k.Namespace(t), admin: k.Client}
	ctx := context.Background()
	rbac := e.admin.RbacV1()
	if _, err := rbac.Roles(e.ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "mse-runner"}, Rules: Rules()}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	subj := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "mse-backend"}}
	if _, err := rbac.RoleBindings(e.ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "mse-runner"}, Subjects: subj,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "mse-runner"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "mse-runner-nodes"}, Rules: ClusterRules()}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "mse-runner-nodes"}, Subjects: subj,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "mse-runner-nodes"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	var err error
	if e.user, err = clientset.NewForConfig(k.UserConfig("mse-backend")); err != nil {
		t.Fatal(err)
	}
	return e
}

// unreachable is the node status probe of a kwok cluster: its pod IPs are
// fake.
func unreachable(context.Context, string, string) (runner.NodeState, error) {
	return runner.NodeState{}, errors.New("kwok pods do not answer")
}

func (e *env) runner(t testing.TB, mut func(*Config)) *Runner {
	t.Helper()
	cfg := Config{Client: e.user, Namespace: e.ns, NodeImage: testNodeImage, BundleURL: testBundleURL, NodeStatus: unreachable,
		Measurement: strings.Repeat("ab", 32), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if mut != nil {
		mut(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func spawnSpec(appID string, hw runner.Hardware) runner.SpawnSpec {
	return runner.SpawnSpec{
		App: config.Spec{AppID: appID, Name: "hello", Domains: []string{appID + ".mse.test"}, PythonApplication: "app:app",
			ExpiresAt: time.Now().Add(time.Hour).UTC(), TLSMode: config.TLSSelf,
			Runtime: config.Runtime{Name: "flask", Image: "mse/flask:bookworm", Digest: testDigest, Kind: "wsgi"}},
		BundlePath: "/nonexistent", Hardware: hw, Tenant: uuid.NewString(), CodeDigest: testCodeDigest,
	}
}

// testCodeDigest is the bundle digest spawnSpec states.
const testCodeDigest = "c0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0dec0de"

func (e *env) spawn(t *testing.T, r *Runner, hw runner.Hardware) (string, []byte) {
	t.Helper()
	id := uuid.NewString()
	h, err := r.Spawn(context.Background(), id, spawnSpec(id, hw))
	if err != nil {
		t.Fatalf("spawn: %v", err)
	}
	return id, h
}

// eventually polls f until it says done, failing with its last word.
func eventually(t testing.TB, within time.Duration, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, why := f()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) pod(t *testing.T, appID string) *corev1.Pod {
	t.Helper()
	p, err := e.admin.CoreV1().Pods(e.ns).Get(context.Background(), ObjectName(appID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *env) waitRunning(t *testing.T, appID string) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	eventually(t, 30*time.Second, func() (bool, string) {
		p = e.pod(t, appID)
		return p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "", fmt.Sprintf("pod phase %s, IP %q, conditions %v", p.Status.Phase, p.Status.PodIP, p.Status.Conditions)
	})
	return p
}

func (e *env) gone(t testing.TB, appID string) {
	t.Helper()
	ctx := context.Background()
	eventually(t, 30*time.Second, func() (bool, string) {
		var left []string
		if _, err := e.admin.CoreV1().Pods(e.ns).Get(ctx, ObjectName(appID), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			left = append(left, "pod")
		}
		if _, err := e.admin.CoreV1().ConfigMaps(e.ns).Get(ctx, ObjectName(appID), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			left = append(left, "configmap")
		}
		if _, err := e.admin.CoreV1().Secrets(e.ns).Get(ctx, SecretName(appID), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			left = append(left, "secret")
		}
		if _, err := e.admin.NetworkingV1().NetworkPolicies(e.ns).Get(ctx, ObjectName(appID), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			left = append(left, "networkpolicy")
		}
		return len(left) == 0, "left: " + strings.Join(left, ", ")
	})
}

func TestSpawnMakesThePodAndItsObjects(t *testing.T) {
	e := newEnv(t)
	r := e.runner(t, nil)
	id := uuid.NewString()
	s := spawnSpec(id, hw2g)
	hb, err := r.Spawn(context.Background(), id, s)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHandle(hb)
	if err != nil {
		t.Fatal(err)
	}
	p := e.pod(t, id)
	if h.Namespace != e.ns || h.Pod != p.Name || h.UID != string(p.UID) || h.Port != 7443 {
		t.Fatalf("handle %+v does not name pod %s/%s (%s)", h, p.Namespace, p.Name, p.UID)
	}
	if p.Labels[LabelAppID] != id || p.Labels[LabelTenant] != s.Tenant || p.Labels[LabelRole] != RoleNode {
		t.Fatalf("pod labels %v", p.Labels)
	}
	cm, err := e.admin.CoreV1().ConfigMaps(e.ns).Get(context.Background(), ObjectName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.OwnerReferences) != 1 || p.OwnerReferences[0].UID != cm.UID || p.OwnerReferences[0].Kind != "ConfigMap" {
		t.Fatalf("pod owner references %v; want the app's ConfigMap %s", p.OwnerReferences, cm.UID)
	}
	if !strings.Contains(cm.Data[SpecKey], `"app_id":"`+id+`"`) {
		t.Fatalf("the ConfigMap's spec is %q", cm.Data[SpecKey])
	}
	c := p.Spec.Containers[0]
	if c.Image != "mse/flask:bookworm@"+testDigest {
		t.Fatalf("image %q", c.Image)
	}
	// The pod asks for exactly the hardware: the node and the qe sidecar
	// (a sim node's quoting relay) share it, requests = limits.
	wantRes := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("2Gi")}
	if len(p.Spec.InitContainers) != 2 || p.Spec.InitContainers[0].Name != "qe" || p.Spec.InitContainers[0].RestartPolicy == nil ||
		*p.Spec.InitContainers[0].RestartPolicy != corev1.ContainerRestartPolicyAlways || p.Spec.InitContainers[1].Name != "fetch" {
		t.Fatalf("init containers %+v: want the qe sidecar then fetch", p.Spec.InitContainers)
	}
	qe := p.Spec.InitContainers[0]
	if got := strings.Join(qe.Command, " "); got != "/mse-fetch qe-proxy --credentials /run/mse/fetch --listen /run/mse/qe/qe.sock" {
		t.Fatalf("qe sidecar command %q", got)
	}
	for name, q := range wantRes {
		var req, lim resource.Quantity
		for _, cr := range []corev1.ResourceRequirements{c.Resources, qe.Resources} {
			req.Add(cr.Requests[name])
			lim.Add(cr.Limits[name])
		}
		if req.Cmp(q) != 0 || lim.Cmp(q) != 0 {
			t.Fatalf("%s: requests %s, limits %s in all, want %s", name, req.String(), lim.String(), q.String())
		}
		if f := p.Spec.InitContainers[1].Resources.Requests[name]; f.Cmp(c.Resources.Requests[name]) != 0 {
			t.Fatalf("fetch requests %s %s, not the node's", name, f.String())
		}
	}
	args := strings.Join(c.Command, " ")
	for _, want := range []string{"/mse/bin/mse-node", "--app-id " + id, "--tee sim", "--listen :7443", "--bundle /run/mse/bundle/bundle"} {
		if !strings.Contains(args, want) {
			t.Fatalf("command %q lacks %q", args, want)
		}
	}
	if p.Spec.InitContainers[0].Image != testNodeImage || p.Spec.RestartPolicy != corev1.RestartPolicyNever ||
		p.Spec.AutomountServiceAccountToken == nil || *p.Spec.AutomountServiceAccountToken {
		t.Fatalf("pod spec: init image %q, restart %q, automount %v", p.Spec.InitContainers[0].Image, p.Spec.RestartPolicy, p.Spec.AutomountServiceAccountToken)
	}
	sec, err := e.admin.CoreV1().Secrets(e.ns).Get(context.Background(), SecretName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(sec.Data["quote-url"]); got != testBundleURL+"/v1/nodes/"+id+"/quote" {
		t.Fatalf("the fetch Secret's quote-url is %q", got)
	}
	if got := string(sec.Data["bundle-sha256"]); got != testCodeDigest {
		t.Fatalf("the fetch Secret's bundle-sha256 is %q, want the app's code digest (mse-fetch checks it)", got)
	}
	if !CheckFetchToken(hb, string(sec.Data[TokenKey])) || string(sec.Data[URLKey]) != testBundleURL+"/v1/nodes/"+id+"/bundle" {
		t.Fatalf("the fetch Secret does not hold the handle's credential and the bundle URL (%q)", sec.Data[URLKey])
	}
	np, err := e.admin.NetworkingV1().NetworkPolicies(e.ns).Get(context.Background(), ObjectName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if np.Spec.PodSelector.MatchLabels[LabelAppID] != id || len(np.Spec.PolicyTypes) != 2 {
		t.Fatalf("network policy selects %v, types %v", np.Spec.PodSelector, np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) != 1 || np.Spec.Ingress[0].From[0].PodSelector.MatchLabels["app.kubernetes.io/name"] != "mse-backend" ||
		np.Spec.Ingress[0].Ports[0].Port.IntValue() != 7443 {
		t.Fatalf("ingress %+v; want only the router's pods, on 7443", np.Spec.Ingress)
	}
	// Egress: the backend on the bundle URL's port, and DNS (the URL names a host).
	if len(np.Spec.Egress) != 2 || np.Spec.Egress[0].Ports[0].Port.IntValue() != 8081 || np.Spec.Egress[1].Ports[0].Port.IntValue() != 53 {
		t.Fatalf("egress %+v", np.Spec.Egress)
	}

	// kwok runs it: Running with an IP; the node does not answer (fake IP),
	// so the state is the pod's: starting.
	p = e.waitRunning(t, id)
	eventually(t, 5*time.Second, func() (bool, string) { // the runner's watch cache follows
		addr, err := r.Addr(id, hb)
		return err == nil && addr == p.Status.PodIP+":7443", fmt.Sprintf("Addr = %q, %v; want %s:7443", addr, err, p.Status.PodIP)
	})
	st, err := r.Status(context.Background(), id, hb)
	if err != nil || st.State != nodeapi.StateStarting {
		t.Fatalf("status %+v, %v; want starting", st, err)
	}
	if _, err := r.Spawn(context.Background(), id, s); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Fatalf("a second spawn of the app: %v", err)
	}
}

// With a node that answers, its own state wins over the pod's.
func TestStatusAsksTheNode(t *testing.T) {
	e := newEnv(t)
	asked := make(chan string, 10)
	r := e.runner(t, func(c *Config) {
		c.NodeStatus = func(ctx context.Context, addr, sni string) (runner.NodeState, error) {
			asked <- addr + " " + sni
			return runner.NodeState{State: nodeapi.StateWaiting, Fingerprint: "fp"}, nil
		}
	})
	id, hb := e.spawn(t, r, hw2g)
	p := e.waitRunning(t, id)
	eventually(t, 10*time.Second, func() (bool, string) {
		st, err := r.Status(context.Background(), id, hb)
		return err == nil && st.State == nodeapi.StateWaiting && st.Fingerprint == "fp", fmt.Sprintf("%+v %v", st, err)
	})
	if got := <-asked; got != p.Status.PodIP+":7443 "+id+".mse.test" {
		t.Fatalf("probed %q", got)
	}
}

func TestScheduling(t *testing.T) {
	e := newEnv(t)
	r := e.runner(t, nil)
	for _, tt := range []struct {
		hw   runner.Hardware
		node string
		tee  string
	}{
		{hwSGX, testenv.KubeSGXNode, "sgx"},
		{hwTDX, testenv.KubeTDXNode, "tdx"},
	} {
		t.Run(tt.hw.Name, func(t *testing.T) {
			id, _ := e.spawn(t, r, tt.hw)
			p := e.waitRunning(t, id)
			if p.Spec.NodeName != tt.node {
				t.Fatalf("scheduled on %q, want %s", p.Spec.NodeName, tt.node)
			}
			if !strings.Contains(strings.Join(p.Spec.Containers[0].Command, " "), "--tee "+tt.tee) {
				t.Fatalf("command %v lacks --tee %s", p.Spec.Containers[0].Command, tt.tee)
			}
			if tt.hw.Kubernetes.RuntimeClass != "" && (p.Spec.RuntimeClassName == nil || *p.Spec.RuntimeClassName != tt.hw.Kubernetes.RuntimeClass) {
				t.Fatalf("runtime class %v", p.Spec.RuntimeClassName)
			}
			for name, want := range tt.hw.Kubernetes.Resources {
				if got := p.Spec.Containers[0].Resources.Limits[corev1.ResourceName(name)]; got.Cmp(resource.MustParse(want)) != 0 {
					t.Fatalf("limit %s = %s, want %s", name, got.String(), want)
				}
			}
		})
	}
}

func TestStopIsIdempotent(t *testing.T) {
	e := newEnv(t)
	r := e.runner(t, nil)
	id, hb := e.spawn(t, r, hw2g)
	e.waitRunning(t, id)
	for i := range 2 {
		if err := r.Stop(context.Background(), id, hb); err != nil {
			t.Fatalf("stop %d: %v", i+1, err)
		}
	}
	e.gone(t, id)
	if err := r.Stop(context.Background(), id, nil); err != nil {
		t.Fatalf("stop without a handle: %v", err)
	}
	st, err := r.Status(context.Background(), id, hb)
	if err != nil || st.State != runner.StateLost {
		t.Fatalf("status after stop %+v, %v; want lost", st, err)
	}
}

func TestAdoptAfterRestart(t *testing.T) {
	e := newEnv(t)
	r1 := e.runner(t, nil)
	kept, hKept := e.spawn(t, r1, hw2g)
	deleted, hDeleted := e.spawn(t, r1, hw2g)
	orphan, _ := e.spawn(t, r1, hw2g)
	corrupt, _ := e.spawn(t, r1, hw2g)
	e.waitRunning(t, kept)
	r1.Close()

	// Behind the backend's back, while it is down.
	if err := e.admin.CoreV1().Pods(e.ns).Delete(context.Background(), ObjectName(deleted), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		_, err := e.admin.CoreV1().Pods(e.ns).Get(context.Background(), ObjectName(deleted), metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprintf("pod still there (%v)", err)
	})

	r2 := e.runner(t, nil)
	lost, err := r2.Adopt(context.Background(), map[string][]byte{kept: hKept, deleted: hDeleted, corrupt: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	if len(lost) != 2 || !strings.Contains(lost[deleted], "deleted while the backend was down") || !strings.Contains(lost[corrupt], "bad node handle") {
		t.Fatalf("lost %v; want %s and %s", lost, deleted, corrupt)
	}
	e.gone(t, orphan)
	e.gone(t, corrupt)
	e.gone(t, deleted)
	e.pod(t, kept)
	st, err := r2.Status(context.Background(), kept, hKept)
	if err != nil || st.State != nodeapi.StateStarting {
		t.Fatalf("the adopted node: %+v, %v", st, err)
	}
}

func TestCapacityFromAllocatable(t *testing.T) {
	e := newEnv(t)
	r := e.runner(t, func(c *Config) { c.NodeSelector = "type=kwok" })
	used, total := r.Capacity()
	kwokNodes := len(testenv.KubeNodes) + 2 // and the SGX and TDX nodes
	want := runner.Resources{MemoryMiB: int64(kwokNodes) * testenv.KubeNodeMemory >> 20, Cores: kwokNodes * testenv.KubeNodeCPU}
	if total != want || used != (runner.Resources{}) {
		t.Fatalf("capacity used %+v total %+v; want nothing of %+v", used, total, want)
	}
	id, hb := e.spawn(t, r, hw2g)
	_, hb2 := e.spawn(t, r, hwSGX)
	eventually(t, 10*time.Second, func() (bool, string) {
		used, _ := r.Capacity()
		return used == runner.Resources{MemoryMiB: 2048 + 4096, Cores: 3}, fmt.Sprintf("used %+v", used)
	})
	_ = hb2
	if err := r.Stop(context.Background(), id, hb); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		used, _ := r.Capacity()
		return used == runner.Resources{MemoryMiB: 4096, Cores: 2}, fmt.Sprintf("used %+v after a stop", used)
	})

	// Hardware no node can hold is refused before anything is made.
	big := runner.Hardware{Name: "huge", MemoryMiB: 1 << 20, Cores: 64, TEE: attest.TypeSim}
	if _, err := r.Spawn(context.Background(), uuid.NewString(), spawnSpec(uuid.NewString(), big)); !errors.Is(err, runner.ErrNoCapacity) {
		t.Fatalf("spawn of %+v: %v; want ErrNoCapacity", big, err)
	}
	nowhere := runner.Hardware{Name: "nowhere", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeSim, Kubernetes: &runner.KubeScheduling{NodeSelector: map[string]string{"mse.tee": "none"}}}
	if _, err := r.Spawn(context.Background(), uuid.NewString(), spawnSpec(uuid.NewString(), nowhere)); !errors.Is(err, runner.ErrNoCapacity) || !strings.Contains(err.Error(), "no ready node") {
		t.Fatalf("spawn on no node: %v", err)
	}
}

func TestPodEvictedOrDeletedBehindTheBackend(t *testing.T) {
	e := newEnv(t)
	r := e.runner(t, nil)
	evicted, hEvicted := e.spawn(t, r, hw2g)
	deleted, hDeleted := e.spawn(t, r, hw2g)
	p := e.waitRunning(t, evicted)
	e.waitRunning(t, deleted)

	// The kubelet evicts: the pod fails with reason Evicted.
	p.Status.Phase, p.Status.Reason, p.Status.Message = corev1.PodFailed, "Evicted", "The node was low on resource: memory."
	if _, err := e.admin.CoreV1().Pods(e.ns).UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		st, err := r.Status(context.Background(), evicted, hEvicted)
		return err == nil && st.State == runner.StateExited && strings.Contains(st.Error, "evicted: The node was low"), fmt.Sprintf("%+v %v", st, err)
	})

	// Someone deletes the pod.
	if err := e.admin.CoreV1().Pods(e.ns).Delete(context.Background(), ObjectName(deleted), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		st, err := r.Status(context.Background(), deleted, hDeleted)
		return err == nil && st.State == runner.StateLost, fmt.Sprintf("%+v %v", st, err)
	})
	if err := r.Stop(context.Background(), deleted, hDeleted); err != nil {
		t.Fatalf("stop after the pod went: %v", err)
	}
	e.gone(t, deleted)
}

// The manual node is not kwok's: the test plays its kubelet, which cannot
// pull the runtime image.
func TestImageThatCannotStart(t *testing.T) {
	e := newEnv(t)
	r := e.runner(t, nil)
	id, hb := e.spawn(t, r, hwManual)
	var p *corev1.Pod
	eventually(t, 30*time.Second, func() (bool, string) {
		p = e.pod(t, id)
		return p.Spec.NodeName == testenv.KubeManualNode, "not bound to the manual node: " + p.Spec.NodeName
	})
	st, err := r.Status(context.Background(), id, hb)
	if err != nil || st.State != nodeapi.StateStarting {
		t.Fatalf("bound, not started: %+v, %v", st, err)
	}
	p.Status.Phase = corev1.PodPending
	p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: ContainerFetch, Image: testNodeImage, Ready: true,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}}}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ContainerNode, Image: p.Spec.Containers[0].Image,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: `Back-off pulling image "mse/flask:bookworm@` + testDigest + `"`}}}}
	if _, err := e.admin.CoreV1().Pods(e.ns).UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		st, err := r.Status(context.Background(), id, hb)
		return err == nil && st.State == runner.StateExited && strings.Contains(st.Error, "cannot start in its runtime image: ImagePullBackOff: Back-off pulling image"),
			fmt.Sprintf("%+v %v", st, err)
	})
}

func TestNamespaceQuotaExceeded(t *testing.T) {
	e := newEnv(t)
	q := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "apps-compute"}, Spec: corev1.ResourceQuotaSpec{
		Hard: corev1.ResourceList{corev1.ResourceRequestsCPU: resource.MustParse("1"), corev1.ResourceLimitsCPU: resource.MustParse("1")}}}
	if _, err := e.admin.CoreV1().ResourceQuotas(e.ns).Create(context.Background(), q, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The quota controller does not run here: the admission plugin needs
	// the quota's status to know what is used.
	q.Status = corev1.ResourceQuotaStatus{Hard: q.Spec.Hard, Used: corev1.ResourceList{corev1.ResourceRequestsCPU: resource.MustParse("0"), corev1.ResourceLimitsCPU: resource.MustParse("0")}}
	if _, err := e.admin.CoreV1().ResourceQuotas(e.ns).UpdateStatus(context.Background(), q, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r := e.runner(t, nil)
	id := uuid.NewString()
	_, err := r.Spawn(context.Background(), id, spawnSpec(id, hwSGX)) // 2 cores
	if !errors.Is(err, runner.ErrNoCapacity) || !strings.Contains(err.Error(), `resource quota "apps-compute" of namespace `+e.ns) {
		t.Fatalf("spawn over the quota: %v; want ErrNoCapacity naming the quota", err)
	}
	e.gone(t, id) // nothing left behind
	// Within the quota it works.
	id2, _ := e.spawn(t, r, hw2g)
	e.pod(t, id2)
}

// Deleting the app's ConfigMap garbage-collects everything it owns.
func TestOwnerReferenceGarbageCollects(t *testing.T) {
	e := newEnv(t)
	r := e.runner(t, nil)
	id, _ := e.spawn(t, r, hw2g)
	e.waitRunning(t, id)
	bg := metav1.DeletePropagationBackground
	if err := e.admin.CoreV1().ConfigMaps(e.ns).Delete(context.Background(), ObjectName(id), metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
		t.Fatal(err)
	}
	e.gone(t, id)
}

// A tls_mode acme node may reach its CA outside the cluster on 443.
func TestNetworkPolicyACME(t *testing.T) {
	e := newEnv(t)
	r := e.runner(t, func(c *Config) { c.BundleURL = "http://10.96.0.10:8080" })
	id := uuid.NewString()
	s := spawnSpec(id, hw2g)
	s.App.TLSMode = spec.TLSACME
	s.App.ACME = &spec.ACME{DirectoryURL: "https://acme.example/directory"}
	if _, err := r.Spawn(context.Background(), id, s); err != nil {
		t.Fatal(err)
	}
	np, err := e.admin.NetworkingV1().NetworkPolicies(e.ns).Get(context.Background(), ObjectName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(np.Spec.Egress) != 3 {
		t.Fatalf("egress %+v; want the backend, the CA and DNS", np.Spec.Egress)
	}
	ca := np.Spec.Egress[1]
	if ca.To[0].IPBlock == nil || ca.To[0].IPBlock.CIDR != "0.0.0.0/0" || len(ca.To[0].IPBlock.Except) != 3 || ca.Ports[0].Port.IntValue() != 443 {
		t.Fatalf("CA egress %+v", ca)
	}
	if np.Spec.Egress[0].Ports[0].Port.IntValue() != 8080 {
		t.Fatalf("backend egress %+v", np.Spec.Egress[0])
	}
}

// The pod log API, through the API server to kwok's kubelet endpoint,
// which serves testenv's PodLogFile for every container named "node".
func TestLogs(t *testing.T) {
	e := newEnv(t)
	r := e.runner(t, nil)
	id, hb := e.spawn(t, r, hw2g)
	e.waitRunning(t, id)
	cri := func(lines ...string) string {
		var b strings.Builder
		for _, l := range lines {
			fmt.Fprintf(&b, "%s stdout F %s\n", time.Now().UTC().Format(time.RFC3339Nano), l)
		}
		return b.String()
	}
	if err := os.WriteFile(e.k.PodLogFile, []byte(cri("node starting", "node waiting for the owner's key", "listening on :7443")), 0o644); err != nil {
		t.Fatal(err)
	}
	read := func(tail int64) string {
		t.Helper()
		rc, err := r.Logs(context.Background(), id, hb, tail, false)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(0); got != "node starting\nnode waiting for the owner's key\nlistening on :7443\n" {
		t.Fatalf("all the logs: %q", got)
	}
	if got := read(8); got != "n :7443\n" {
		t.Fatalf("the last 8 bytes: %q", got)
	}

	// Following: the tail's lines, then what the node writes next.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rc, err := r.Logs(ctx, id, hb, 18, true)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	f, err := os.OpenFile(e.k.PodLogFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		var all []byte
		buf := make([]byte, 4096)
		for {
			n, err := rc.Read(buf)
			all = append(all, buf[:n]...)
			if strings.Contains(string(all), "app serves") || err != nil {
				got <- string(all)
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	if _, err := f.WriteString(cri("app serves")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	select {
	case s := <-got:
		if s != "listening on :7443\napp serves\n" {
			t.Fatalf("followed %q", s)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the followed log did not bring the new line")
	}

	// A stopped app has no logs left (the pod is gone).
	if err := r.Stop(context.Background(), id, hb); err != nil {
		t.Fatal(err)
	}
	e.gone(t, id)
	if _, err := r.Logs(context.Background(), id, hb, 0, false); err == nil || !strings.Contains(err.Error(), "no logs for app") {
		t.Fatalf("logs of a stopped app: %v", err)
	}
}

// A respawn after a Stop (what a dead replica's spawn left): the new pod
// takes the old one's name, so Spawn waits while the old pod is being
// deleted (held here by a finalizer, as a grace period would), then
// creates the new node. A pod of the app that is not being deleted is
// refused.
func TestRespawnWaitsForTheEarlierPod(t *testing.T) {
	e := newEnv(t)
	r := e.runner(t, nil)
	id, _ := e.spawn(t, r, hw2g)
	old := e.waitRunning(t, id)
	ctx := context.Background()
	if _, err := r.Spawn(ctx, id, spawnSpec(id, hw2g)); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Fatalf("spawn beside a running node: %v", err)
	}
	release := func() error {
		_, err := e.admin.CoreV1().Pods(e.ns).Patch(ctx, old.Name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	if _, err := e.admin.CoreV1().Pods(e.ns).Patch(ctx, old.Name, types.MergePatchType, []byte(`{"metadata":{"finalizers":["mse.test/hold"]}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = release() }) // a failure below must not hold the pod for the other tests
	if err := r.Stop(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var h []byte
	go func() {
		var err error
		h, err = r.Spawn(ctx, id, spawnSpec(id, hw2g))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("spawn did not wait for the pod being deleted: %v", err)
	case <-time.After(time.Second):
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("respawn: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("respawn did not end 30 s after the old pod went")
	}
	if p := e.waitRunning(t, id); p.UID == old.UID {
		t.Fatalf("the pod is the old one")
	}
	if err := r.Stop(ctx, id, h); err != nil {
		t.Fatal(err)
	}
	e.gone(t, id)
}
