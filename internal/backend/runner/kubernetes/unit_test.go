package kubernetes

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/ratls"
)

func TestValidateHardware(t *testing.T) {
	k := func(k runner.KubeScheduling) *runner.KubeScheduling { return &k }
	sgx := k(runner.KubeScheduling{Resources: map[string]string{ResourceSGXEPC: "512Mi", ResourceSGXEnclave: "1", ResourceSGXProvision: "1"},
		NodeSelector: map[string]string{"mse.tee": "sgx"}, Tolerations: []runner.KubeToleration{{Key: "mse.tee", Value: "sgx", Effect: "NoSchedule"}}})
	tests := []struct {
		name string
		hw   runner.Hardware
		err  string // "" for valid
	}{
		{"sim without scheduling", runner.Hardware{Name: "1g", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeSim}, ""},
		{"sgx through the device plugin", runner.Hardware{Name: "sgx", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeSGX, Kubernetes: sgx}, ""},
		{"tdx through kata", runner.Hardware{Name: "tdx", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeTDX, Kubernetes: k(runner.KubeScheduling{RuntimeClass: "kata-qemu-tdx"})}, ""},
		{"snp through kata", runner.Hardware{Name: "snp", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeSEVSNP, Kubernetes: k(runner.KubeScheduling{RuntimeClass: "kata-qemu-snp"})}, ""},
		{"sgx resources but tee sim", runner.Hardware{Name: "x", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeSim, Kubernetes: sgx}, `tee is "sim" but its kubernetes scheduling gives "sgx"`},
		{"tdx class but tee sgx", runner.Hardware{Name: "x", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeSGX, Kubernetes: k(runner.KubeScheduling{RuntimeClass: "kata-qemu-tdx"})}, `gives "tdx"`},
		{"unknown runtime class", runner.Hardware{Name: "x", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeTDX, Kubernetes: k(runner.KubeScheduling{RuntimeClass: "runc"})}, "gives no TEE type"},
		{"class and sgx together", runner.Hardware{Name: "x", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeTDX,
			Kubernetes: k(runner.KubeScheduling{RuntimeClass: "kata-qemu-tdx", Resources: map[string]string{ResourceSGXEPC: "1Gi"}})}, "choose one"},
		{"sgx without epc", runner.Hardware{Name: "x", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeSGX,
			Kubernetes: k(runner.KubeScheduling{Resources: map[string]string{ResourceSGXEnclave: "1"}})}, "EPC"},
		{"cpu in resources", runner.Hardware{Name: "x", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeSim,
			Kubernetes: k(runner.KubeScheduling{Resources: map[string]string{"cpu": "2"}})}, "comes from cores"},
		{"bad quantity", runner.Hardware{Name: "x", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeSGX,
			Kubernetes: k(runner.KubeScheduling{Resources: map[string]string{ResourceSGXEPC: "lots"}})}, "not a quantity"},
		{"bad selector", runner.Hardware{Name: "x", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeSim,
			Kubernetes: k(runner.KubeScheduling{NodeSelector: map[string]string{"a b": "c"}})}, "node selector key"},
		{"bad toleration operator", runner.Hardware{Name: "x", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeSim,
			Kubernetes: k(runner.KubeScheduling{Tolerations: []runner.KubeToleration{{Key: "k", Operator: "Like"}}})}, "not Equal or Exists"},
		{"exists with value", runner.Hardware{Name: "x", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeSim,
			Kubernetes: k(runner.KubeScheduling{Tolerations: []runner.KubeToleration{{Key: "k", Operator: "Exists", Value: "v"}}})}, "takes no value"},
		{"bad effect", runner.Hardware{Name: "x", MemoryMiB: 1024, Cores: 1, TEE: attest.TypeSim,
			Kubernetes: k(runner.KubeScheduling{Tolerations: []runner.KubeToleration{{Key: "k", Effect: "Sometimes"}}})}, "effect"},
		{"no memory", runner.Hardware{Name: "x", Cores: 1, TEE: attest.TypeSim}, "must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateHardware([]runner.Hardware{tt.hw})
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.err != "" && err == nil:
				t.Fatalf("accepted; want an error with %q", tt.err)
			case tt.err != "" && !strings.Contains(err.Error(), tt.err):
				t.Fatalf("error %q; want it to contain %q", err, tt.err)
			}
		})
	}
}

func TestExceededQuota(t *testing.T) {
	err := apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "mse-x",
		errors.New("exceeded quota: compute, requested: requests.cpu=2, used: requests.cpu=0, limited: requests.cpu=1"))
	if got := exceededQuota(err); got != "compute" {
		t.Fatalf("quota %q, want compute", got)
	}
	if got := exceededQuota(apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "x", errors.New("RBAC says no"))); got != "" {
		t.Fatalf("quota %q from an RBAC refusal", got)
	}
}

func TestPodState(t *testing.T) {
	now := metav1.Now()
	pod := func(phase corev1.PodPhase, mut func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{Status: corev1.PodStatus{Phase: phase}}
		if mut != nil {
			mut(p)
		}
		return p
	}
	node := func(st corev1.ContainerState, ready bool) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: containerNode, State: st, Ready: ready}}
		}
	}
	tests := []struct {
		name  string
		pod   *corev1.Pod
		state string
		ready bool
		err   string
	}{
		{"pending", pod(corev1.PodPending, nil), nodeapi.StateStarting, false, ""},
		{"unschedulable", pod(corev1.PodPending, func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: "0/5 nodes are available"}}
		}), nodeapi.StateStarting, false, "not scheduled yet: 0/5 nodes"},
		{"pulling", pod(corev1.PodPending, node(corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}, false)), nodeapi.StateStarting, false, ""},
		{"running, not ready", pod(corev1.PodRunning, node(corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}, false)), nodeapi.StateStarting, false, ""},
		{"running, ready", pod(corev1.PodRunning, node(corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}, true)), nodeapi.StateStarting, true, ""},
		{"image pull", pod(corev1.PodPending, node(corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "not found"}}, false)),
			runner.StateExited, false, "cannot start in its runtime image: ErrImagePull: not found"},
		{"back-off", pod(corev1.PodPending, node(corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff"}}, false)), runner.StateExited, false, "ImagePullBackOff"},
		{"init failed", pod(corev1.PodPending, func(p *corev1.Pod) {
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: containerFetch, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: "bundle: 403"}}}}
		}), runner.StateExited, false, "fetch container failed (exit 1, Error): bundle: 403"},
		{"node ended", pod(corev1.PodFailed, node(corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: "node failed"}}, false)),
			runner.StateExited, false, "the node process ended (exit 1, Error): node failed"},
		{"evicted", pod(corev1.PodFailed, func(p *corev1.Pod) { p.Status.Reason, p.Status.Message = "Evicted", "The node was low on memory." }),
			runner.StateExited, false, "evicted: The node was low on memory."},
		{"succeeded", pod(corev1.PodSucceeded, nil), runner.StateExited, false, "the node stopped"},
		{"being deleted", pod(corev1.PodRunning, func(p *corev1.Pod) { p.DeletionTimestamp = &now }), runner.StateExited, false, "being deleted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, ready := podState(tt.pod)
			if st.State != tt.state || ready != tt.ready || !strings.Contains(st.Error, tt.err) || (tt.err == "" && st.Error != "") {
				t.Fatalf("state %q ready %v error %q; want %q %v %q", st.State, ready, st.Error, tt.state, tt.ready, tt.err)
			}
		})
	}
}

// A TLS server answering as the node's configuration endpoint does.
func TestProbeNode(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		state   string
		fp      bool
	}{
		{"waiting", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(nodeapi.HeaderStatus, nodeapi.StatusWaiting)
			w.Write([]byte(`{"status":"waiting"}`))
		}, nodeapi.StateWaiting, true},
		{"launching", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(nodeapi.HeaderStatus, nodeapi.StatusStarting)
			w.WriteHeader(503)
		}, nodeapi.StateLaunching, true},
		{"starting", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(503)
			json.NewEncoder(w).Encode(nodeapi.Response{Status: "starting"})
		}, nodeapi.StateStarting, false},
		{"the app answers", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello")) }, nodeapi.StateRunning, false},
		{"the app answers 503", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }, nodeapi.StateRunning, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(tt.handler)
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			st, err := ProbeNode(ctx, srv.Listener.Addr().String(), "app.example")
			if err != nil {
				t.Fatal(err)
			}
			if st.State != tt.state {
				t.Fatalf("state %q, want %q", st.State, tt.state)
			}
			want := ""
			if tt.fp {
				want = ratls.Fingerprint(srv.Certificate())
			}
			if st.Fingerprint != want {
				t.Fatalf("fingerprint %q, want %q", st.Fingerprint, want)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(nil)
		addr := srv.Listener.Addr().String()
		srv.Listener.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := ProbeNode(ctx, addr, ""); err == nil {
			t.Fatal("no error from a closed port")
		}
	})
	t.Run("not TLS", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		defer srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := ProbeNode(ctx, srv.Listener.Addr().String(), "")
		var re tls.RecordHeaderError
		if err == nil || (!errors.As(err, &re) && !strings.Contains(err.Error(), "tls")) {
			t.Fatalf("err %v; want a TLS error", err)
		}
	})
}

func TestLastBytes(t *testing.T) {
	long := strings.Repeat("0123456789", 10000) // 100 kB, more than one chunk
	tests := []struct {
		in   string
		n    int64
		want string
	}{
		{"", 10, ""},
		{"abc", 10, "abc"},
		{"abcdef", 3, "def"},
		{long, 5, "56789"},
		{long, 70000, long[len(long)-70000:]},
		{long, 0, long},
	}
	for _, tt := range tests {
		got, err := lastBytes(strings.NewReader(tt.in), tt.n)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Fatalf("lastBytes(%d bytes, %d) = %d bytes, want %d", len(tt.in), tt.n, len(got), len(tt.want))
		}
	}
	if _, err := lastBytes(io.MultiReader(strings.NewReader("x"), errReader{}), 10); err == nil {
		t.Fatal("a read error was swallowed")
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("broken") }

func TestHandle(t *testing.T) {
	good := handle{Namespace: "mse", Pod: "mse-0b6e", UID: "u1", Port: 7443, TokenSHA256: tokenHash("secret")}
	b, _ := json.Marshal(good)
	if _, err := parseHandle(b); err != nil {
		t.Fatal(err)
	}
	if !CheckFetchToken(b, "secret") || CheckFetchToken(b, "other") || CheckFetchToken(b, "") {
		t.Fatal("CheckFetchToken does not tell the token from others")
	}
	for _, bad := range []string{``, `{}`, `null`, `{"namespace":"mse","pod":"p","uid":"u"}`, `{"namespace":"Bad NS","pod":"p","uid":"u","port":1}`,
		`{"namespace":"mse","pod":"../x","uid":"u","port":1}`, `{"namespace":"mse","pod":"p","uid":"u","port":1,"x":"` + strings.Repeat("a", maxHandle) + `"}`} {
		if _, err := parseHandle([]byte(bad)); err == nil {
			t.Errorf("parseHandle(%.60q) accepted", bad)
		}
	}
}

func FuzzParseHandle(f *testing.F) {
	b, _ := json.Marshal(handle{Namespace: "mse", Pod: "mse-0b6e", UID: "u1", Port: 7443, TokenSHA256: tokenHash("secret")})
	f.Add(b)
	f.Add([]byte(`{"namespace":"mse","pod":"p","uid":"u","port":-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHandle(b)
		if err != nil {
			return
		}
		if h.Pod == "" || h.Namespace == "" || h.UID == "" || h.Port <= 0 {
			t.Fatalf("accepted an incomplete handle %+v", h)
		}
		_ = CheckFetchToken(b, "x")
	})
}

// Host-network mode: the node listens on the host's loopback on its own
// port, probed there, and Addr/Status dial 127.0.0.1; otherwise the pod IP
// and Config.Port on all the pod's addresses.
func TestHostNetworkPod(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "mse-a", Namespace: "ns"}}
	spec := runner.SpawnSpec{Hardware: runner.Hardware{Name: "1g", MemoryMiB: 1024, Cores: 1, TEE: "sim"}}
	for _, tc := range []struct {
		host     bool
		port     int32
		listen   string
		probe    string
		wantAddr string
	}{
		{false, 7443, ":7443", "", "10.1.2.3:7443"},
		{true, 40123, "127.0.0.1:40123", "127.0.0.1", "127.0.0.1:40123"},
	} {
		r := &Runner{cfg: Config{Port: 7443, HostNetwork: tc.host}}
		p, err := r.pod(cm, "a", "", "img@sha256:00", tc.port, spec)
		if err != nil {
			t.Fatal(err)
		}
		c := p.Spec.Containers[0]
		if p.Spec.HostNetwork != tc.host || !slices.Contains(c.Command, tc.listen) || c.Ports[0].ContainerPort != tc.port ||
			c.ReadinessProbe.TCPSocket.Host != tc.probe || c.ReadinessProbe.TCPSocket.Port.IntVal != tc.port {
			t.Errorf("host %v: hostNetwork %v, command %v, port %d, probe %+v", tc.host, p.Spec.HostNetwork, c.Command, c.Ports[0].ContainerPort, c.ReadinessProbe.TCPSocket)
		}
		p.Status.PodIP = "10.1.2.3"
		if got := nodeAddr(p, &handle{Port: tc.port}); got != tc.wantAddr {
			t.Errorf("host %v: addr %s, want %s", tc.host, got, tc.wantAddr)
		}
		np := r.networkPolicy(cm, "a", "", tc.port, false)
		if np.Spec.Ingress[0].Ports[0].Port.IntVal != tc.port {
			t.Errorf("host %v: policy port %v", tc.host, np.Spec.Ingress[0].Ports[0].Port)
		}
	}
}

// Nodes sent to presigned bundle URLs may reach the bundle store's
// addresses on its port (and DNS, for its name), and nothing more; without
// presigning the policy has no such rule.
func TestNetworkPolicyBundleStore(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "mse-a", Namespace: "ns"}}
	backend := []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.2/32"}}}
	store := []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "198.51.100.0/24"}}}
	for _, tc := range []struct {
		name      string
		store     []networkingv1.NetworkPolicyPeer
		host      string
		wantRules int
	}{
		{"streamed", nil, "", 1},
		{"presigned, S3 by name", store, "s3.example", 3}, // backend, store, DNS
		{"presigned, S3 by address", store, "198.51.100.7", 2},
	} {
		r := &Runner{cfg: Config{BundleURL: "http://192.0.2.2:8080", BackendPeers: backend, BackendPorts: []int32{8080},
			BundleStorePeers: tc.store, BundleStoreHost: tc.host, BundleStorePort: 9000}}
		np := r.networkPolicy(cm, "a", "", 7443, false)
		if len(np.Spec.Egress) != tc.wantRules {
			t.Fatalf("%s: %d egress rules %+v, want %d", tc.name, len(np.Spec.Egress), np.Spec.Egress, tc.wantRules)
		}
		if tc.store == nil {
			continue
		}
		e := np.Spec.Egress[1]
		if len(e.To) != 1 || e.To[0].IPBlock.CIDR != "198.51.100.0/24" || len(e.Ports) != 1 || e.Ports[0].Port.IntVal != 9000 {
			t.Errorf("%s: bundle store rule %+v", tc.name, e)
		}
		if tc.wantRules == 3 {
			if dns := np.Spec.Egress[2]; dns.Ports[0].Port.IntVal != 53 {
				t.Errorf("%s: third rule %+v, want DNS", tc.name, dns)
			}
		}
	}
}

// The pod's mse-fetch accepts the bundles the backend accepts
// (Config.MaxBundleSize), or its own default when none is given.
func TestFetchMaxSize(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "mse-a", Namespace: "ns"}}
	spec := runner.SpawnSpec{Hardware: runner.Hardware{Name: "1g", MemoryMiB: 1024, Cores: 1, TEE: "sim"}}
	for _, tc := range []struct {
		max  int64
		want string
	}{{3 << 30, "--max-size 3221225472"}, {0, ""}} {
		r := &Runner{cfg: Config{Port: 7443, MaxBundleSize: tc.max}}
		p, err := r.pod(cm, "a", "", "img@sha256:00", 7443, spec)
		if err != nil {
			t.Fatal(err)
		}
		var cmd string
		for _, c := range p.Spec.InitContainers {
			if c.Name == containerFetch {
				cmd = strings.Join(c.Command, " ")
			}
		}
		if !strings.HasPrefix(cmd, "/mse-fetch ") {
			t.Fatalf("MaxBundleSize %d: no fetch init container (command %q)", tc.max, cmd)
		}
		if got := strings.Contains(cmd, "--max-size"); got != (tc.want != "") || !strings.Contains(cmd, tc.want) {
			t.Errorf("MaxBundleSize %d: fetch command %q, want %q", tc.max, cmd, tc.want)
		}
	}
}

// New takes the node measurement once, and refuses one that is not a
// SHA-256 or is deploy/'s all-zeros placeholder.
func TestNewRefusesBadMeasurements(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	for _, c := range []struct {
		name, m, wantErr string
	}{
		{"a SHA-256", sum, ""},
		{"none", "", ""},
		{"too short", "ab12", `node measurement "ab12" is not a SHA-256 (64 hex digits)`},
		{"not hex", strings.Repeat("zz", 32), "is not a SHA-256"},
		{"too long", sum + "00", "is not a SHA-256"},
		{"deploy/'s placeholder", strings.Repeat("0", 64), "is all zeros, deploy/backend.yaml's placeholder"},
	} {
		r, err := New(Config{Client: fake.NewClientset(), Namespace: "ns", NodeImage: "mse/node@sha256:" + strings.Repeat("1", 64),
			BundleURL: "http://mse-backend-api.mse.svc:8080", Measurement: c.m, Logger: slog.New(slog.DiscardHandler)})
		if c.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
				continue
			}
			if (r.measurement == nil) != (c.m == "") || (r.measurement != nil && hex.EncodeToString(r.measurement[:]) != c.m) {
				t.Errorf("%s: measurement %x, want %s", c.name, r.measurement, c.m)
			}
			r.Close()
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.wantErr)
		}
	}
}
