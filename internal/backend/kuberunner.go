package backend

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/backend/blob"
	"github.com/mse-in-go/mse/internal/backend/blob/fs"
	"github.com/mse-in-go/mse/internal/backend/blob/s3"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/runner/kubernetes"
)

// Runner names (Config.Runner, --runner).
const (
	RunnerLocal      = "local"
	RunnerKubernetes = "kubernetes"
)

// KubeConfig configures the kubernetes runner (docs/kubernetes.md).
type KubeConfig struct {
	// Kubeconfig is a kubeconfig file; empty: the in-cluster service account.
	Kubeconfig string
	// Namespace holds the apps' pods.
	Namespace string
	// NodeImage is the image with /mse-node and /mse-fetch.
	NodeImage string
	// NodeMeasurement is the hex SHA-256 of that mse-node: what sim quotes
	// state and operator mode verifies.
	NodeMeasurement string
	// BundleURL is the backend's base URL as pods reach it.
	BundleURL string
	// ImagePrefix is prepended to runtime image references.
	ImagePrefix string
	// NodeSelector selects the cluster nodes counted as capacity.
	NodeSelector string
	// HostNetwork is the runner's single-node (test) mode: pods on the
	// host's network, each node on 127.0.0.1 and a port of its own
	// (kubernetes.Config.HostNetwork).
	HostNetwork bool
	// BackendCIDRs are where a backend outside the cluster is, as the
	// nodes' pods see it: the addresses its router connects to nodes from
	// and its API is reached at (--kube-backend-cidr). Each app's
	// NetworkPolicy admits the router from them and lets the node reach the
	// API there; empty: the backend's own pods (in the cluster).
	BackendCIDRs []string
	// BundleStoreCIDRs are the S3 server's addresses as the pods see them,
	// which nodes sent to presigned bundle URLs may reach on
	// BundleStorePort; BundleStoreHost is the endpoint's host (a name needs
	// DNS). Both are the S3 endpoint's, set by Run.
	BundleStoreCIDRs []string
	BundleStoreHost  string
	BundleStorePort  int32
}

// kubeClient is the Kubernetes API client of kc: its kubeconfig, or the
// in-cluster service account.
func kubeClient(kc KubeConfig) (clientset.Interface, error) {
	var rc *rest.Config
	var err error
	if kc.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kc.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("backend: kubernetes API: %w (pass --kubeconfig outside a cluster)", err)
	}
	rc.UserAgent = "mse-backend"
	cs, err := clientset.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("backend: kubernetes API: %w", err)
	}
	return cs, nil
}

func newKubeRunner(kc KubeConfig, cs clientset.Interface, hw []runner.Hardware, platform *sim.Platform, maxBundle int64, log *slog.Logger) (runner.Runner, error) {
	if err := kubernetes.ValidateHardware(hw); err != nil {
		return nil, fmt.Errorf("backend: the hardware catalog does not suit the kubernetes runner: %w", err)
	}
	peers, err := cidrPeers("--kube-backend-cidr", kc.BackendCIDRs)
	if err != nil {
		return nil, err
	}
	store, err := cidrPeers("--kube-bundle-store-cidr", kc.BundleStoreCIDRs)
	if err != nil {
		return nil, err
	}
	if store != nil && kc.BundleStorePort == 0 {
		return nil, errors.New("backend: --kube-bundle-store-cidr is for nodes sent to presigned URLs: pass --bundle-presign-ttl (and --blobs s3://…) too")
	}
	if kc.BundleStorePort != 0 && store == nil && !kc.HostNetwork {
		log.Warn("kubernetes runner: nodes fetch their bundles from presigned S3 URLs, but the apps' NetworkPolicies let them reach only the backend: " +
			"where the cluster enforces NetworkPolicies the fetch fails; pass --kube-bundle-store-cidr with the S3 server's addresses")
	}
	if err := checkNodeMeasurement(kc.NodeMeasurement, hw); err != nil {
		return nil, err
	}
	switch {
	case peers != nil:
	case kc.Kubeconfig == "":
		// In a pod: the router is this Deployment's pods, in their own
		// namespace (deploy/: mse), which the apps' policies must name.
		own, err := os.ReadFile(serviceAccountNamespace)
		if err != nil {
			return nil, fmt.Errorf("backend: kubernetes runner: this pod's namespace: %w", err)
		}
		peers = routerPeers(strings.TrimSpace(string(own)), kc.Namespace)
	case !kc.HostNetwork:
		log.Warn("kubernetes runner: the backend runs outside the cluster, but the apps' NetworkPolicies admit only the backend's pods in the cluster: " +
			"where the cluster enforces NetworkPolicies the router cannot reach the nodes and the nodes cannot fetch their bundles; pass --kube-backend-cidr with this backend's addresses as the pods see them")
	}
	return kubernetes.New(kubernetes.Config{
		Client: cs, Namespace: kc.Namespace, NodeImage: kc.NodeImage, Measurement: kc.NodeMeasurement,
		BundleURL: kc.BundleURL, ImagePrefix: kc.ImagePrefix, NodeSelector: kc.NodeSelector, HostNetwork: kc.HostNetwork, Logger: log,
		RouterPeers: peers, Platform: platform, BundleStorePeers: store, BundleStoreHost: kc.BundleStoreHost, BundleStorePort: kc.BundleStorePort, MaxBundleSize: maxBundle,
	})
}

// checkNodeMeasurement refuses no --node-measurement with sim entries in
// the catalog: their quotes, signed by the backend, state it, and without it
// every sim node would fail at its first quote. (kubernetes.New checks the
// value itself.)
func checkNodeMeasurement(m string, hw []runner.Hardware) error {
	if m != "" {
		return nil
	}
	var simEntries []string
	for _, h := range hw {
		if h.TEE == attest.TypeSim {
			simEntries = append(simEntries, h.Name)
		}
	}
	if len(simEntries) > 0 {
		return fmt.Errorf("backend: the hardware catalog has sim entries (%s), whose quotes state the node image's mse-node: pass --node-measurement with its SHA-256 (scripts/node-image.sh prints it)", strings.Join(simEntries, ", "))
	}
	return nil
}

// cidrPeers are NetworkPolicy peers for the CIDRs of flag (nil for
// none). A CIDR with host bits set is refused rather than widened to its
// network: 10.1.2.3/8 would admit all of 10.0.0.0/8.
func cidrPeers(flag string, cidrs []string) ([]networkingv1.NetworkPolicyPeer, error) {
	var peers []networkingv1.NetworkPolicyPeer
	for _, c := range cidrs {
		ip, n, err := net.ParseCIDR(c)
		if err != nil {
			return nil, fmt.Errorf("backend: %s %q is not a CIDR (like 192.0.2.10/32): %w", flag, c, err)
		}
		if !ip.Equal(n.IP) {
			return nil, fmt.Errorf("backend: %s %q has host bits set: it would admit all of %s; give the address as %s/32, or the network as %s", flag, c, n, ip, n)
		}
		peers = append(peers, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: n.String()}})
	}
	return peers, nil
}

// bundleStore is the host and port of the S3 server of blobs (an S3 store,
// or a cache of one), which nodes sent to presigned URLs reach.
func bundleStore(blobs blob.Store) (string, int32, error) {
	if c, ok := blobs.(*fs.Cache); ok {
		blobs = c.Remote
	}
	s, ok := blobs.(*s3.Store)
	if !ok {
		return "", 0, errors.New("backend: --bundle-presign-ttl needs an S3 bundle store (--blobs s3://…)")
	}
	host, port := s.Server()
	return host, port, nil
}

// serviceAccountNamespace is where a pod reads its namespace.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// routerPeers are the backend's pods (label app.kubernetes.io/name=mse-backend)
// in namespace own, as the network policies of the apps in namespace apps
// name them; nil (the runner's default: those pods in apps) when they are
// the same namespace.
func routerPeers(own, apps string) []networkingv1.NetworkPolicyPeer {
	if own == "" || own == apps {
		return nil
	}
	return []networkingv1.NetworkPolicyPeer{{
		PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "mse-backend"}},
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": own}},
	}}
}
