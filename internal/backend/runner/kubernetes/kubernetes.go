// Package kubernetes runs nodes as Kubernetes pods, one per app
// (docs/kubernetes.md). Each app gets a ConfigMap holding its spec, which
// owns the app's other objects: a Secret with the node's bundle-fetch
// credential, a NetworkPolicy that lets only the router in and the node out
// only to the backend, and the Pod that runs the app's runtime image with
// mse-node. Scheduling (node selectors, tolerations, device-plugin resources,
// runtime classes) comes from the hardware catalog; capacity from the nodes'
// allocatable resources minus the requests of the runner's pods.
package kubernetes

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	clientset "k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/nodeapi"
)

// Config configures the runner. Zero values are defaults where one is given.
type Config struct {
	// Client talks to the API server (the backend's identity needs the RBAC
	// rules of Rules).
	Client clientset.Interface
	// Namespace holds the runner's objects.
	Namespace string
	// NodeImage is the image of the pods' init container: it holds
	// /mse-node (copied into the pod) and /mse-fetch (fetches the bundle).
	NodeImage string
	// ImagePrefix is prepended to runtime image references (a registry the
	// cluster pulls from, "registry.example/mse/"); default none.
	ImagePrefix string
	// PullPolicy of the pods' images (default IfNotPresent: images are
	// pinned by digest).
	PullPolicy corev1.PullPolicy
	// Measurement is the hex SHA-256 of the mse-node the node image holds:
	// what the sim quotes of SimQuote state ("" for none: no sim quotes).
	// New refuses one that is not 64 hex digits, or all zeros (deploy/'s
	// placeholder).
	Measurement string
	// BundleURL is the base URL nodes fetch their bundle from with their
	// credential: BundleURL/v1/nodes/APP_ID/bundle.
	BundleURL string
	// Port is the node's TLS port in its pod (default 7443).
	Port int32
	// HostNetwork is a single-node (test) mode, for a backend on the
	// kubelet's own machine: pods run on the host's network and each node
	// listens on 127.0.0.1 on a port of its own, picked free on this
	// machine at Spawn, which the router dials. It is refused by Pod
	// Security "baseline" and "restricted", and NetworkPolicies do not
	// apply to host-network pods.
	HostNetwork bool
	// RouterPeers may reach the nodes (default: pods labelled
	// app.kubernetes.io/name=mse-backend in the namespace).
	RouterPeers []networkingv1.NetworkPolicyPeer
	// BackendPeers and BackendPorts are what nodes may reach (default:
	// RouterPeers, on BundleURL's port).
	BackendPeers []networkingv1.NetworkPolicyPeer
	BackendPorts []int32
	// MaxBundleSize is the largest bundle the backend accepts, which the
	// pods' mse-fetch must accept too (--max-size; 0: its default, 2 GiB).
	MaxBundleSize int64
	// BundleStorePeers, when set, may be reached by the nodes on
	// BundleStorePort: the S3 server of presigned bundle URLs, whose host
	// is BundleStoreHost (a name: the nodes get DNS too).
	BundleStorePeers []networkingv1.NetworkPolicyPeer
	BundleStoreHost  string
	BundleStorePort  int32
	// ClusterCIDRs are excluded from the egress a node in tls_mode acme gets
	// towards its CA (default the private IPv4 ranges).
	ClusterCIDRs []string
	// NodeSelector is a label selector of the cluster nodes counted in
	// Capacity (default all).
	NodeSelector string
	// NodeStatus asks a node for its own status (default ProbeNode); it
	// may fail (the node not reachable from here): the pod's state stands.
	NodeStatus NodeStatusFunc
	// HealthInterval is how often the runner asks the API server whether it
	// is ready (/readyz; default 5 s). While it does not answer, Status,
	// Spawn and Addr fail saying so, and Capacity offers nothing.
	HealthInterval time.Duration
	// SyncTimeout bounds New's wait for its first view of pods and nodes
	// (default 30 s).
	SyncTimeout time.Duration
	// Platform signs the quotes of sim nodes (SimQuote); nil: sim nodes get
	// none.
	Platform *sim.Platform
	Logger   *slog.Logger
}

// Runner is the kubernetes runner.
type Runner struct {
	cfg         Config
	measurement *[32]byte // Config.Measurement, nil for none
	log         *slog.Logger
	pods        corelisters.PodLister
	nodes       corelisters.NodeLister // nil when the nodes cannot be listed
	podInf      cache.SharedIndexInformer
	health      apiHealth
	stop        chan struct{}
	stopped     sync.Once
}

// handle is the JSON the backend stores for a node.
type handle struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	UID       string `json:"uid"`
	Port      int32  `json:"port"`
	// ServerName is the app's first domain (SNI of the status probe).
	ServerName string `json:"server_name,omitempty"`
	// TokenSHA256 is the hash of the node's bundle-fetch credential.
	TokenSHA256 string           `json:"token_sha256"`
	Resources   runner.Resources `json:"resources"`
	// TEE and RuntimeDigest are what a sim quote of the node states.
	TEE           string `json:"tee,omitempty"`
	RuntimeDigest string `json:"runtime_digest,omitempty"`
}

// maxHandle bounds a stored handle.
const maxHandle = 4 << 10

func parseHandle(b []byte) (*handle, error) {
	var h handle
	if len(b) > maxHandle || json.Unmarshal(b, &h) != nil || h.Pod == "" || h.Namespace == "" || h.UID == "" ||
		len(validation.IsDNS1123Label(h.Namespace)) > 0 || len(validation.IsDNS1123Subdomain(h.Pod)) > 0 || h.Port <= 0 || h.Port > 65535 {
		return nil, errors.New("kubernetes runner: bad node handle")
	}
	return &h, nil
}

// New creates the runner and starts watching its pods and the cluster's
// nodes.
func New(cfg Config) (*Runner, error) {
	if cfg.Client == nil {
		return nil, errors.New("kubernetes runner: no API client")
	}
	if errs := validation.IsDNS1123Label(cfg.Namespace); len(errs) > 0 {
		return nil, fmt.Errorf("kubernetes runner: namespace %q: %s", cfg.Namespace, strings.Join(errs, "; "))
	}
	if cfg.NodeImage == "" {
		return nil, errors.New("kubernetes runner: no node image (the image with mse-node and mse-fetch; --node-image)")
	}
	if cfg.BundleURL == "" {
		return nil, errors.New("kubernetes runner: no bundle URL (where pods fetch their bundle from the backend; --bundle-url)")
	}
	bport, err := urlPort(cfg.BundleURL)
	if err != nil {
		return nil, fmt.Errorf("kubernetes runner: bundle URL: %w", err)
	}
	if cfg.Port == 0 {
		cfg.Port = 7443
	}
	if cfg.PullPolicy == "" {
		cfg.PullPolicy = corev1.PullIfNotPresent
	}
	if cfg.RouterPeers == nil {
		cfg.RouterPeers = []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "mse-backend"}}}}
	}
	if cfg.BackendPeers == nil {
		cfg.BackendPeers = cfg.RouterPeers
	}
	if cfg.BackendPorts == nil {
		cfg.BackendPorts = []int32{bport}
	}
	if cfg.ClusterCIDRs == nil {
		cfg.ClusterCIDRs = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}
	}
	if cfg.NodeStatus == nil {
		cfg.NodeStatus = ProbeNode
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = 5 * time.Second
	}
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	nodeSel, err := k8slabels.Parse(cfg.NodeSelector)
	if err != nil {
		return nil, fmt.Errorf("kubernetes runner: node selector %q: %w", cfg.NodeSelector, err)
	}
	r := &Runner{cfg: cfg, log: cfg.Logger, stop: make(chan struct{})}
	if cfg.Measurement != "" {
		m, err := hex.DecodeString(cfg.Measurement)
		if err != nil || len(m) != 32 {
			return nil, fmt.Errorf("kubernetes runner: node measurement %q is not a SHA-256 (64 hex digits): pass the one scripts/node-image.sh printed for the node image (--node-measurement)", cfg.Measurement)
		}
		r.measurement = (*[32]byte)(m)
		if *r.measurement == [32]byte{} {
			return nil, errors.New("kubernetes runner: node measurement is all zeros, deploy/backend.yaml's placeholder: set --node-measurement in your overlay to the one scripts/node-image.sh printed for the node image")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.SyncTimeout)
	defer cancel()
	// Fail early and clearly on the first call, rather than in an informer
	// that retries forever.
	if _, err := cfg.Client.CoreV1().Pods(cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: selector, Limit: 1}); err != nil {
		return nil, fmt.Errorf("kubernetes runner: list pods in namespace %s: %w (check the kubeconfig and that the backend's identity has the runner's RBAC rules, docs/kubernetes.md)", cfg.Namespace, err)
	}
	podFactory := informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0, informers.WithNamespace(cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	r.pods = podFactory.Core().V1().Pods().Lister()
	r.podInf = podFactory.Core().V1().Pods().Informer()
	podFactory.Start(r.stop)
	synced := []cache.InformerSynced{r.podInf.HasSynced}
	if _, err := cfg.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: nodeSel.String(), Limit: 1}); err != nil {
		r.log.Warn("the cluster's nodes cannot be listed: capacity is unknown (shown as 0); grant list and watch on nodes", "err", err)
	} else {
		nodeFactory := informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0,
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = nodeSel.String() }))
		r.nodes = nodeFactory.Core().V1().Nodes().Lister()
		nodeFactory.Start(r.stop)
		synced = append(synced, nodeFactory.Core().V1().Nodes().Informer().HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		r.Close()
		return nil, fmt.Errorf("kubernetes runner: no view of the pods and nodes within %s: is the API server reachable?", cfg.SyncTimeout)
	}
	if r.cfg.Client.Discovery().RESTClient() != nil {
		r.health.on = true
		go r.watchHealth()
	}
	return r, nil
}

// Close implements runner.Runner: the runner stops watching; pods keep
// running.
func (r *Runner) Close() error {
	r.stopped.Do(func() { close(r.stop) })
	return nil
}

// Measurement implements runner.Runner.
func (r *Runner) Measurement() string { return r.cfg.Measurement }

// Spawn implements runner.Runner: it creates the app's ConfigMap, then,
// owned by it, the fetch Secret, the NetworkPolicy and the Pod. On failure
// it deletes what it created.
func (r *Runner) Spawn(ctx context.Context, appID string, s runner.SpawnSpec) ([]byte, error) {
	if err := checkAppID(appID); err != nil {
		return nil, err
	}
	if s.Tenant != "" {
		if errs := validation.IsValidLabelValue(s.Tenant); len(errs) > 0 {
			return nil, fmt.Errorf("kubernetes runner: tenant %q cannot label a pod: %s", s.Tenant, strings.Join(errs, "; "))
		}
	}
	if err := validateEntry(s.Hardware); err != nil {
		return nil, fmt.Errorf("kubernetes runner: hardware %q: %w", s.Hardware.Name, err)
	}
	image, err := r.imageRef(s)
	if err != nil {
		return nil, err
	}
	if err := r.reachable(); err != nil {
		return nil, err
	}
	if err := r.fits(s.Hardware); err != nil {
		return nil, err
	}
	specJSON, err := json.Marshal(s.App)
	if err != nil {
		return nil, err
	}
	var tok [32]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return nil, err
	}
	token := hex.EncodeToString(tok[:])
	ns := r.cfg.Namespace
	core := r.cfg.Client.CoreV1()
	if err := r.awaitEarlierPod(ctx, appID); err != nil {
		return nil, err
	}

	cm, err := core.ConfigMaps(ns).Create(ctx, anchor(ns, appID, s.Tenant, specJSON), metav1.CreateOptions{})
	if err != nil {
		return nil, r.createError("the app's ConfigMap", appID, err)
	}
	ok := false
	defer func() {
		if !ok {
			dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = r.deleteAll(dctx, appID)
		}
	}()
	if _, err := core.Secrets(ns).Create(ctx, r.fetchSecret(cm, appID, s.Tenant, token, s.CodeDigest, s.Hardware.TEE == attest.TypeSim), metav1.CreateOptions{}); err != nil {
		return nil, r.createError("the node's credential Secret", appID, err)
	}
	port := r.cfg.Port
	if r.cfg.HostNetwork {
		if port, err = r.hostPort(); err != nil {
			return nil, err
		}
	}
	np := r.networkPolicy(cm, appID, s.Tenant, port, s.App.ACME != nil)
	if _, err := r.cfg.Client.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); err != nil {
		return nil, r.createError("the node's NetworkPolicy", appID, err)
	}
	p, err := r.pod(cm, appID, s.Tenant, image, port, s)
	if err != nil {
		return nil, err
	}
	created, err := core.Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		return nil, r.createError("the node's Pod", appID, err)
	}
	h := handle{Namespace: ns, Pod: created.Name, UID: string(created.UID), Port: port, TokenSHA256: tokenHash(token),
		Resources: runner.Resources{MemoryMiB: s.Hardware.MemoryMiB, Cores: s.Hardware.Cores},
		TEE:       s.Hardware.TEE, RuntimeDigest: s.App.Runtime.Digest}
	if len(s.App.Domains) > 0 {
		h.ServerName = s.App.Domains[0]
	}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	ok = true
	r.log.Info("node pod created", "app_id", appID, "namespace", ns, "pod", created.Name, "image", image, "hardware", s.Hardware.Name)
	return b, nil
}

// awaitEarlierPod waits, within ctx, until the pod of an earlier node of
// appID that is being deleted (a Stop before a respawn: its grace period) is
// gone, since the new pod takes its name. A pod of the app not being deleted
// is a node that runs: an error.
func (r *Runner) awaitEarlierPod(ctx context.Context, appID string) error {
	name := objectName(appID)
	if _, err := r.pods.Pods(r.cfg.Namespace).Get(name); apierrors.IsNotFound(err) {
		return nil // as far as the cache knows (most spawns); Create says if it lags
	} else if err != nil {
		return err
	}
	for {
		// The API server, not the cache, which may not have seen a Stop
		// just made.
		p, err := r.cfg.Client.CoreV1().Pods(r.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("kubernetes runner: the pod of an earlier node of app %s: %s", appID, apiMessage(err))
		}
		if p.DeletionTimestamp == nil {
			return fmt.Errorf("kubernetes runner: the pod of app %s exists already (a node of this app runs; stop it first)", appID)
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("kubernetes runner: the pod of an earlier node of app %s is still being deleted: %w", appID, ctx.Err())
		case <-t.C:
		}
	}
}

// createError explains a failed create: a namespace quota names itself.
func (r *Runner) createError(what, appID string, err error) error {
	if apierrors.IsForbidden(err) {
		if q := exceededQuota(err); q != "" {
			return fmt.Errorf("%w: creating %s for app %s exceeds resource quota %q of namespace %s (%s); stop an app, or ask the operator to raise the quota",
				runner.ErrNoCapacity, what, appID, q, r.cfg.Namespace, apiMessage(err))
		}
	}
	if r.health.failed(err) {
		return fmt.Errorf("kubernetes runner: create %s of app %s: %w", what, appID, r.reachable())
	}
	if apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kubernetes runner: %s of app %s exists already (a node of this app runs; stop it first): %s", what, appID, apiMessage(err))
	}
	return fmt.Errorf("kubernetes runner: create %s of app %s in namespace %s: %s", what, appID, r.cfg.Namespace, apiMessage(err))
}

// exceededQuota is the name of the quota an admission error cites.
func exceededQuota(err error) string {
	msg := apiMessage(err)
	_, rest, ok := strings.Cut(msg, "exceeded quota: ")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, ",")
	return strings.TrimSpace(name)
}

func apiMessage(err error) string {
	var se apierrors.APIStatus
	if errors.As(err, &se) && se.Status().Message != "" {
		return se.Status().Message
	}
	return err.Error()
}

func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// CheckFetchToken reports whether token is the bundle-fetch credential of
// the node of handle hb (the backend's bundle endpoint asks).
func CheckFetchToken(hb []byte, token string) bool {
	h, err := parseHandle(hb)
	if err != nil || token == "" {
		return false
	}
	want, err := hex.DecodeString(h.TokenSHA256)
	if err != nil || len(want) != sha256.Size {
		return false
	}
	got := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(got[:], want) == 1
}

// deleteAll deletes appID's objects; NotFound is success.
func (r *Runner) deleteAll(ctx context.Context, appID string) error {
	ns := r.cfg.Namespace
	core := r.cfg.Client.CoreV1()
	bg := metav1.DeletePropagationBackground
	opts := metav1.DeleteOptions{PropagationPolicy: &bg}
	var errs []error
	gone := func(what string, err error) {
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s: %s", what, apiMessage(err)))
		}
	}
	gone("pod", core.Pods(ns).Delete(ctx, objectName(appID), opts))
	gone("network policy", r.cfg.Client.NetworkingV1().NetworkPolicies(ns).Delete(ctx, objectName(appID), opts))
	gone("secret", core.Secrets(ns).Delete(ctx, secretName(appID), opts))
	gone("config map", core.ConfigMaps(ns).Delete(ctx, objectName(appID), opts))
	if len(errs) > 0 {
		return fmt.Errorf("kubernetes runner: app %s: %w", appID, errors.Join(errs...))
	}
	return nil
}

// Stop implements runner.Runner: the app's objects are deleted (the pod
// with its grace period); what is already gone is fine.
func (r *Runner) Stop(ctx context.Context, appID string, hb []byte) error {
	if err := checkAppID(appID); err != nil {
		return err
	}
	if len(hb) > 0 {
		if _, err := parseHandle(hb); err != nil {
			return err
		}
	}
	return r.deleteAll(ctx, appID)
}

// getPod is appID's pod from the watch cache, or from the API server when
// the cache has not seen it yet (just created). nil: there is none.
//
// Status asks for a current view (current): while the API server is
// unreachable that fails, and just after it returns the cache is passed by.
// Addr takes what the cache holds: routes keep working during an outage.
func (r *Runner) getPod(ctx context.Context, h *handle, current bool) (*corev1.Pod, error) {
	if current {
		if err := r.reachable(); err != nil {
			return nil, err
		}
	}
	if !current || !r.cacheStale() {
		p, err := r.pods.Pods(h.Namespace).Get(h.Pod)
		if err == nil && string(p.UID) == h.UID {
			return p, nil
		}
	}
	p, err := r.cfg.Client.CoreV1().Pods(h.Namespace).Get(ctx, h.Pod, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		if r.health.failed(err) {
			return nil, r.reachable()
		}
		return nil, fmt.Errorf("kubernetes runner: get pod %s/%s: %s", h.Namespace, h.Pod, apiMessage(err))
	}
	if string(p.UID) != h.UID {
		return nil, nil // another pod of that name: ours is gone
	}
	return p, nil
}

// Status implements runner.Runner: the pod's phase and the node
// container's state, then, once the container is ready, the node's own
// status if it answers.
func (r *Runner) Status(ctx context.Context, appID string, hb []byte) (runner.NodeState, error) {
	h, err := parseHandle(hb)
	if err != nil {
		return runner.NodeState{}, err
	}
	p, err := r.getPod(ctx, h, true)
	if err != nil {
		return runner.NodeState{}, err
	}
	if p == nil {
		return runner.NodeState{State: runner.StateLost, Error: "the node's pod was deleted (not by this backend)"}, nil
	}
	st, ready := podState(p)
	if st.State != nodeapi.StateStarting || !ready || p.Status.PodIP == "" {
		return st, nil
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	ns, err := r.cfg.NodeStatus(pctx, nodeAddr(p, h), h.ServerName)
	if err != nil {
		r.log.Debug("node status probe", "app_id", appID, "err", err)
		return st, nil
	}
	return ns, nil
}

// Container waiting reasons after which the node will not start by itself.
var fatalWaiting = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "InvalidImageName": true, "ErrImageNeverPull": true,
	"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
	"CrashLoopBackOff": true, "ContainerCannotRun": true,
}

// podState is what the pod says of the node: starting (and whether the
// node's container is ready), or exited with why.
func podState(p *corev1.Pod) (runner.NodeState, bool) {
	exited := func(format string, a ...any) (runner.NodeState, bool) {
		return runner.NodeState{State: runner.StateExited, Error: truncate(fmt.Sprintf(format, a...), 400)}, false
	}
	if p.DeletionTimestamp != nil {
		return exited("the node's pod is being deleted (not by this backend)")
	}
	for _, c := range p.Status.InitContainerStatuses {
		if w := c.State.Waiting; w != nil && fatalWaiting[w.Reason] {
			return exited("the node's %s container cannot start: %s: %s", c.Name, w.Reason, w.Message)
		}
		if t := c.State.Terminated; t != nil && t.ExitCode != 0 {
			return exited("the node's %s container failed (exit %d, %s): %s", c.Name, t.ExitCode, t.Reason, t.Message)
		}
	}
	for _, c := range p.Status.ContainerStatuses {
		if c.Name != containerNode {
			continue
		}
		if w := c.State.Waiting; w != nil && fatalWaiting[w.Reason] {
			return exited("the node cannot start in its runtime image: %s: %s", w.Reason, w.Message)
		}
		if t := c.State.Terminated; t != nil {
			return exited("the node process ended (exit %d, %s): %s", t.ExitCode, t.Reason, t.Message)
		}
	}
	switch p.Status.Phase {
	case corev1.PodFailed:
		if p.Status.Reason == "Evicted" {
			return exited("the node's pod was evicted: %s", p.Status.Message)
		}
		return exited("the node's pod failed: %s %s", p.Status.Reason, p.Status.Message)
	case corev1.PodSucceeded:
		return exited("the node stopped")
	}
	st := runner.NodeState{State: nodeapi.StateStarting}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			st.Error = truncate("not scheduled yet: "+c.Message, 400)
		}
	}
	ready := false
	if p.Status.Phase == corev1.PodRunning {
		for _, c := range p.Status.ContainerStatuses {
			if c.Name == containerNode && c.Ready {
				ready = true
			}
		}
	}
	return st, ready
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Addr implements runner.Runner: the pod's IP and the node's port.
func (r *Runner) Addr(appID string, hb []byte) (string, error) {
	h, err := parseHandle(hb)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := r.getPod(ctx, h, false)
	if err != nil {
		return "", err
	}
	if p == nil {
		return "", fmt.Errorf("kubernetes runner: app %s has no pod", appID)
	}
	if p.Status.PodIP == "" {
		return "", fmt.Errorf("kubernetes runner: the pod of app %s has no IP yet", appID)
	}
	return nodeAddr(p, h), nil
}

// hostLoopback is where host-network nodes listen (Config.HostNetwork).
const hostLoopback = "127.0.0.1"

// nodeAddr is where the node of pod p listens: the pod IP, or on a
// host-network pod the host's loopback.
func nodeAddr(p *corev1.Pod, h *handle) string {
	ip := p.Status.PodIP
	if p.Spec.HostNetwork {
		ip = hostLoopback
	}
	return net.JoinHostPort(ip, strconv.Itoa(int(h.Port)))
}

// hostPort picks the port of a host-network node: free on this machine's
// loopback now and named by none of the runner's pods.
func (r *Runner) hostPort() (int32, error) {
	used := map[int32]bool{}
	if pods, err := r.pods.List(k8slabels.Everything()); err == nil {
		for _, p := range pods {
			for _, c := range p.Spec.Containers {
				for _, cp := range c.Ports {
					used[cp.ContainerPort] = true
				}
			}
		}
	}
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(hostLoopback, "0"))
		if err != nil {
			return 0, fmt.Errorf("kubernetes runner: pick a host port for the node: %w", err)
		}
		port := int32(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		if !used[port] {
			return port, nil
		}
	}
	return 0, errors.New("kubernetes runner: no free host port for the node (host network mode)")
}

// maxTailLines bounds the lines asked for to serve a tail.
const maxTailLines = 100000

// Logs implements runner.Runner through the pod log API: the last tail
// bytes of the node container's log (whole lines when following), and with
// follow what it writes next.
func (r *Runner) Logs(ctx context.Context, appID string, hb []byte, tail int64, follow bool) (io.ReadCloser, error) {
	h, err := parseHandle(hb)
	if err != nil {
		return nil, err
	}
	pods := r.cfg.Client.CoreV1().Pods(h.Namespace)
	opts := &corev1.PodLogOptions{Container: containerNode}
	if tail > 0 {
		n := min(tail, maxTailLines)
		opts.TailLines = &n
	}
	rc, err := pods.GetLogs(h.Pod, opts).Stream(ctx)
	if err != nil {
		return nil, fmt.Errorf("no logs for app %s: %s", appID, apiMessage(err))
	}
	last, err := lastBytes(rc, tail)
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("logs of app %s: %w", appID, err)
	}
	if !follow {
		return io.NopCloser(strings.NewReader(string(last))), nil
	}
	// Follow from the lines of that tail on: ask for as many lines again.
	lines := int64(strings.Count(string(last), "\n"))
	if len(last) > 0 && last[len(last)-1] != '\n' {
		lines++
	}
	fopts := &corev1.PodLogOptions{Container: containerNode, Follow: true, TailLines: &lines}
	frc, err := pods.GetLogs(h.Pod, fopts).Stream(ctx)
	if err != nil {
		return nil, fmt.Errorf("follow the logs of app %s: %s", appID, apiMessage(err))
	}
	return frc, nil
}

// lastBytes reads rc to its end and returns its last n bytes (all if n <= 0,
// up to a bound), holding at most about 2n bytes.
func lastBytes(rc io.Reader, n int64) ([]byte, error) {
	const maxAll = 16 << 20
	if n <= 0 || n > maxAll {
		n = maxAll
	}
	buf := make([]byte, 0, min(n*2, 1<<20))
	chunk := make([]byte, 32<<10)
	for {
		k, err := rc.Read(chunk)
		buf = append(buf, chunk[:k]...)
		if int64(len(buf)) > 2*n {
			buf = append(buf[:0], buf[int64(len(buf))-n:]...)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if int64(len(buf)) > n {
		buf = buf[int64(len(buf))-n:]
	}
	return buf, nil
}

// Adopt implements runner.Runner: claimed pods that still exist are
// reattached (the watch serves them); a claimed pod that is gone or was
// replaced is lost; pods and objects that no app claims are deleted.
func (r *Runner) Adopt(ctx context.Context, nodes map[string][]byte) (map[string]string, error) {
	ns := r.cfg.Namespace
	core := r.cfg.Client.CoreV1()
	list := metav1.ListOptions{LabelSelector: selector}
	pods, err := core.Pods(ns).List(ctx, list)
	if err != nil {
		return nil, fmt.Errorf("kubernetes runner: list the node pods in namespace %s: %s", ns, apiMessage(err))
	}
	byName := map[string]*corev1.Pod{}
	for i := range pods.Items {
		byName[pods.Items[i].Name] = &pods.Items[i]
	}
	lost := map[string]string{}
	claimed := map[string]bool{}
	for appID, hb := range nodes {
		h, err := parseHandle(hb)
		if err != nil {
			lost[appID] = err.Error()
			continue
		}
		p := byName[h.Pod]
		if p == nil || string(p.UID) != h.UID || p.Namespace != h.Namespace {
			lost[appID] = "the node's pod was deleted while the backend was down"
			if err := r.deleteAll(ctx, appID); err != nil {
				r.log.Warn("cleaning up after a lost pod", "app_id", appID, "err", err)
			}
			continue
		}
		claimed[appID] = true
		r.log.Info("node pod adopted", "app_id", appID, "pod", p.Name, "phase", p.Status.Phase)
	}
	// Everything else of ours is an orphan: a pod of a stopped app, what a
	// crash between create and the store's update left, or what remains of
	// a lost node.
	orphans := map[string]bool{}
	for _, p := range pods.Items {
		orphans[p.Labels[LabelAppID]] = true
	}
	cms, err := core.ConfigMaps(ns).List(ctx, list)
	if err != nil {
		return nil, fmt.Errorf("kubernetes runner: list the app ConfigMaps in namespace %s: %s", ns, apiMessage(err))
	}
	for _, c := range cms.Items {
		orphans[c.Labels[LabelAppID]] = true
	}
	secrets, err := core.Secrets(ns).List(ctx, list)
	if err != nil {
		return nil, fmt.Errorf("kubernetes runner: list the node Secrets in namespace %s: %s", ns, apiMessage(err))
	}
	for _, s := range secrets.Items {
		orphans[s.Labels[LabelAppID]] = true
	}
	nps, err := r.cfg.Client.NetworkingV1().NetworkPolicies(ns).List(ctx, list)
	if err != nil {
		return nil, fmt.Errorf("kubernetes runner: list the node NetworkPolicies in namespace %s: %s", ns, apiMessage(err))
	}
	for _, n := range nps.Items {
		orphans[n.Labels[LabelAppID]] = true
	}
	for appID := range orphans {
		if claimed[appID] || checkAppID(appID) != nil {
			continue
		}
		r.log.Warn("deleting a node pod no app claims", "app_id", appID)
		if err := r.deleteAll(ctx, appID); err != nil {
			r.log.Warn("deleting an orphan", "app_id", appID, "err", err)
		}
	}
	return lost, nil
}

// Capacity implements runner.Runner: the allocatable CPU and memory of the
// schedulable, ready nodes (Config.NodeSelector), and the requests of this
// runner's pods that have not ended.
func (r *Runner) Capacity() (used, total runner.Resources) {
	if err := r.reachable(); err != nil {
		// The watch cache is stale: offer nothing until the API server
		// answers again (Spawn refuses meanwhile).
		r.log.Warn("capacity unknown", "err", err)
		return runner.Resources{}, runner.Resources{}
	}
	var milli, mem int64
	if r.nodes != nil {
		nodes, _ := r.nodes.List(k8slabels.Everything())
		for _, n := range nodes {
			if n.Spec.Unschedulable || !nodeReady(n) {
				continue
			}
			milli += n.Status.Allocatable.Cpu().MilliValue()
			mem += n.Status.Allocatable.Memory().Value()
		}
	}
	total = runner.Resources{MemoryMiB: mem >> 20, Cores: int(milli / 1000)}
	var umilli, umem int64
	pods, _ := r.pods.List(k8slabels.Everything())
	for _, p := range pods {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, c := range podContainers(p) {
			umilli += c.Resources.Requests.Cpu().MilliValue()
			umem += c.Resources.Requests.Memory().Value()
		}
	}
	used = runner.Resources{MemoryMiB: (umem + 1<<20 - 1) >> 20, Cores: int((umilli + 999) / 1000)}
	return used, total
}

// podContainers are the containers that run for the pod's life: its
// containers and native sidecars (whose requests add to the pod's).
func podContainers(p *corev1.Pod) []corev1.Container {
	out := slices.Clone(p.Spec.Containers)
	for _, c := range p.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			out = append(out, c)
		}
	}
	return out
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// fits refuses hardware that no node can take: none of the nodes its
// scheduling selects has that much allocatable left after this runner's
// pods on it. The scheduler has the last word; this spares an app a pod
// that would wait forever for an impossible fit.
func (r *Runner) fits(h runner.Hardware) error {
	if r.nodes == nil {
		return nil // unknown: let the scheduler decide
	}
	want, err := podResources(h)
	if err != nil {
		return err
	}
	nodes, _ := r.nodes.List(k8slabels.Everything())
	pods, _ := r.pods.List(k8slabels.Everything())
	usedOn := map[string]corev1.ResourceList{}
	for _, p := range pods {
		if p.Spec.NodeName == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		u := usedOn[p.Spec.NodeName]
		if u == nil {
			u = corev1.ResourceList{}
			usedOn[p.Spec.NodeName] = u
		}
		for _, c := range podContainers(p) {
			for name, q := range c.Resources.Requests {
				cur := u[name]
				cur.Add(q)
				u[name] = cur
			}
		}
	}
	var sel map[string]string
	if h.Kubernetes != nil {
		sel = h.Kubernetes.NodeSelector
	}
	candidates := 0
	selector := k8slabels.SelectorFromSet(sel)
	for _, n := range nodes {
		if n.Spec.Unschedulable || !nodeReady(n) || !selector.Matches(k8slabels.Set(n.Labels)) {
			continue
		}
		candidates++
		fit := true
		for name, q := range want {
			free := n.Status.Allocatable[name].DeepCopy()
			if u, ok := usedOn[n.Name][name]; ok {
				free.Sub(u)
			}
			if free.Cmp(q) < 0 {
				fit = false
				break
			}
		}
		if fit {
			return nil
		}
	}
	if candidates == 0 {
		return fmt.Errorf("%w: no ready node of the cluster matches hardware %q (node selector %v)", runner.ErrNoCapacity, h.Name, sel)
	}
	return fmt.Errorf("%w: no node has room for hardware %q (%d MiB, %d cores%s); stop an app or choose smaller hardware",
		runner.ErrNoCapacity, h.Name, h.MemoryMiB, h.Cores, extraResources(h))
}

func extraResources(h runner.Hardware) string {
	if h.Kubernetes == nil || len(h.Kubernetes.Resources) == 0 {
		return ""
	}
	var parts []string
	for k, v := range h.Kubernetes.Resources {
		parts = append(parts, k+"="+v)
	}
	return ", " + strings.Join(parts, ", ")
}

// CheckFetchToken implements runner.BundleServer.
func (r *Runner) CheckFetchToken(handle []byte, token string) bool {
	return CheckFetchToken(handle, token)
}

var (
	_ runner.BundleServer = (*Runner)(nil)
	_ runner.NodeQuoter   = (*Runner)(nil)
)

// SimQuote implements runner.NodeQuoter: the quote states the node image's
// mse-node (Config.Measurement), sim.DevSigner and the app's runtime image,
// as the local runner's quoting service does.
func (r *Runner) SimQuote(hb []byte, reportData [64]byte) ([]byte, error) {
	h, err := parseHandle(hb)
	if err != nil {
		return nil, err
	}
	if h.TEE != attest.TypeSim {
		return nil, fmt.Errorf("kubernetes runner: the node runs on %q hardware, which quotes for itself; only sim nodes get quotes from the backend", h.TEE)
	}
	if r.cfg.Platform == nil {
		return nil, errors.New("kubernetes runner: no simulated platform to sign quotes with")
	}
	if r.measurement == nil {
		return nil, errors.New("kubernetes runner: sim quotes need the node image's mse-node SHA-256 (--node-measurement, 64 hex digits)")
	}
	id := sim.Identity{Signer: sim.DevSigner, Measurement: *r.measurement}
	if d, ok := strings.CutPrefix(h.RuntimeDigest, "sha256:"); ok {
		b, err := hex.DecodeString(d)
		if err != nil || len(b) != len(id.RuntimeDigest) {
			return nil, errors.New("kubernetes runner: bad runtime digest in the node handle")
		}
		copy(id.RuntimeDigest[:], b)
	}
	return r.cfg.Platform.Quote(id, reportData, time.Now())
}
