package backend

import (
	"fmt"
	"log/slog"

	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

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
	// NodeMeasurement is the hex SHA-256 of that mse-node, for display.
	NodeMeasurement string
	// BundleURL is the backend's base URL as pods reach it.
	BundleURL string
	// ImagePrefix is prepended to runtime image references.
	ImagePrefix string
	// NodeSelector selects the cluster nodes counted as capacity.
	NodeSelector string
}

func newKubeRunner(kc KubeConfig, hw []runner.Hardware, log *slog.Logger) (runner.Runner, error) {
	if err := kubernetes.ValidateHardware(hw); err != nil {
		return nil, fmt.Errorf("backend: the hardware catalog does not suit the kubernetes runner: %w", err)
	}
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
	return kubernetes.New(kubernetes.Config{
		Client: cs, Namespace: kc.Namespace, NodeImage: kc.NodeImage, Measurement: kc.NodeMeasurement,
		BundleURL: kc.BundleURL, ImagePrefix: kc.ImagePrefix, NodeSelector: kc.NodeSelector, Logger: log,
	})
}
