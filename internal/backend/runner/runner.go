// Package runner spawns and watches nodes. Drivers: local (processes on this
// machine, sim TEE) and kubernetes (one pod per app).
package runner

import (
	"context"
	"errors"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"io"

	"github.com/mse-in-go/mse/internal/config"
)

// ErrNoCapacity is returned by Spawn when the hardware asked for does not fit.
var ErrNoCapacity = errors.New("not enough capacity")

// ErrRuntime is wrapped by Spawn when the runtime image cannot be used: not
// in the store, or its extracted tree is not what the image holds. The
// message is for the app's owner (no host path); the runner logs the rest.
var ErrRuntime = errors.New("the runtime cannot be used")

// Hardware is one entry of the operator's hardware catalog.
type Hardware struct {
	Name      string `json:"name"`
	MemoryMiB int64  `json:"memory_mib"`
	Cores     int    `json:"cores"`
	TEE       string `json:"tee"`
	// Kubernetes says where the kubernetes runner schedules this entry's
	// pods (docs/kubernetes.md); other runners ignore it.
	Kubernetes *KubeScheduling `json:"kubernetes,omitempty"`
}

// KubeScheduling maps a hardware entry to Kubernetes scheduling: the nodes
// that have the TEE and how a pod asks for it, through a device plugin's
// resources (SGX) or a Confidential Containers runtime class (TDX, SEV-SNP).
type KubeScheduling struct {
	// NodeSelector are node labels the pod requires.
	NodeSelector map[string]string `json:"node_selector,omitempty"`
	// Tolerations let the pod onto tainted TEE nodes.
	Tolerations []KubeToleration `json:"tolerations,omitempty"`
	// Resources are extended resources requested (and limited) beside CPU
	// and memory, as Kubernetes quantities: {"sgx.intel.com/epc": "512Mi",
	// "sgx.intel.com/enclave": "1", "sgx.intel.com/provision": "1"}.
	Resources map[string]string `json:"resources,omitempty"`
	// RuntimeClass is the pod's runtimeClassName (kata-qemu-tdx,
	// kata-qemu-snp, ...).
	RuntimeClass string `json:"runtime_class,omitempty"`
}

// KubeToleration is a pod toleration (core/v1 Toleration).
type KubeToleration struct {
	Key      string `json:"key,omitempty"`
	Operator string `json:"operator,omitempty"` // Equal (default) or Exists
	Value    string `json:"value,omitempty"`
	Effect   string `json:"effect,omitempty"` // NoSchedule, PreferNoSchedule, NoExecute or empty (all)
}

// SpawnSpec is what a node needs.
type SpawnSpec struct {
	App        config.Spec
	BundlePath string
	Hardware   Hardware
	// Tenant is the id of the app's owner (runners label nodes with it).
	Tenant string
	// CodeDigest is the bundle's SHA-256 (hex), for runners whose nodes
	// fetch it and check what they got.
	CodeDigest string
}

// Node states beyond nodeapi's: the node process is gone.
const (
	StateExited = "exited"
	StateLost   = "lost"
)

// NodeState is what the runner sees of a node.
type NodeState struct {
	State       string // nodeapi.State* or StateExited / StateLost
	Error       string
	Fingerprint string
	// TLS is what the node says it serves (its status file; informative:
	// owners and users verify the node itself).
	TLS *nodeapi.TLSStatus
}

// Resources are counted against capacity.
type Resources struct {
	MemoryMiB int64 `json:"memory_mib"`
	Cores     int   `json:"cores"`
}

// Runner runs nodes. Handles are the runner's own JSON, stored with the app.
type Runner interface {
	Spawn(ctx context.Context, appID string, s SpawnSpec) (handle []byte, err error)
	Status(ctx context.Context, appID string, handle []byte) (NodeState, error)
	// Addr is where the router reaches the node.
	Addr(appID string, handle []byte) (string, error)
	// Stop ends the node and releases its resources; it is idempotent.
	Stop(ctx context.Context, appID string, handle []byte) error
	// Logs returns the last tail bytes of the node's log, and, with follow,
	// what it writes next until ctx ends or the node stops.
	Logs(ctx context.Context, appID string, handle []byte, tail int64, follow bool) (io.ReadCloser, error)
	// Adopt takes over nodes spawned before a restart: it reattaches the live
	// ones and reports the rest as lost; it ends nodes that no app claims.
	Adopt(ctx context.Context, nodes map[string][]byte) (lost map[string]string, err error)
	Capacity() (used, total Resources)
	// Measurement is the runtime measurement the nodes report (hex), for display.
	Measurement() string
	// Close releases the runner; nodes keep running.
	Close() error
}
