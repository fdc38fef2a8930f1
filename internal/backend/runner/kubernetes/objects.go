package kubernetes

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/runtimes"
)

// Labels on every object the runner makes. LabelRole=RoleNode selects them
// all; LabelAppID says whose they are.
const (
	LabelRole      = "mse.role"
	LabelAppID     = "mse.app-id"
	LabelTenant    = "mse.tenant"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	RoleNode       = "node"
	ManagedBy      = "mse-backend"
)

// Names and paths of the pod (docs/kubernetes.md "The node's pod").
const (
	containerNode  = "node"
	containerFetch = "fetch"
	specKey        = "spec.json"
	tokenKey       = "token"
	urlKey         = "bundle-url"
	quoteURLKey    = "quote-url"
	sha256Key      = "bundle-sha256" // nodepod.SHA256File
	containerQE    = "qe"

	dirBin    = "/mse/bin"
	dirSpec   = "/run/mse/spec"
	dirFetch  = "/run/mse/fetch"
	dirBundle = "/run/mse/bundle"
	dirWork   = "/run/mse/work"
	dirQE     = "/run/mse/qe"

	// nodeUID is the unprivileged user the node runs as.
	nodeUID = 65532
)

// selector selects every node object of the runner.
var selector = LabelRole + "=" + RoleNode + "," + LabelAppID

func objectName(appID string) string { return "mse-" + appID }
func secretName(appID string) string { return "mse-" + appID + "-fetch" }

// checkAppID refuses an app id that cannot name the app's objects and
// label them (the backend's are UUIDs).
func checkAppID(appID string) error {
	if errs := validation.IsDNS1123Label(objectName(appID) + "-fetch"); len(errs) > 0 {
		return fmt.Errorf("kubernetes runner: app id %q cannot name a pod: %s", appID, strings.Join(errs, "; "))
	}
	return nil
}

func labels(appID, tenant string) map[string]string {
	l := map[string]string{LabelRole: RoleNode, LabelAppID: appID, LabelManagedBy: ManagedBy}
	if tenant != "" {
		l[LabelTenant] = tenant
	}
	return l
}

// imageRef is the runtime image the node's container runs, pinned by its
// digest: what the node's evidence states.
func (r *Runner) imageRef(rt runner.SpawnSpec) (string, error) {
	d := rt.App.Runtime.Digest
	if !runtimes.ValidDigest(d) {
		return "", fmt.Errorf("%w: runtime %s has no valid digest (%q)", runner.ErrRuntime, rt.App.Runtime.Name, d)
	}
	img := rt.App.Runtime.Image
	if i := strings.IndexByte(img, '@'); i >= 0 {
		img = img[:i]
	}
	if img == "" {
		return "", fmt.Errorf("%w: runtime %s names no image", runner.ErrRuntime, rt.App.Runtime.Name)
	}
	return r.cfg.ImagePrefix + img + "@" + d, nil
}

// anchor is the app's ConfigMap: it holds the spec the node reads, and
// owns the app's other objects, so that deleting it garbage-collects them.
func anchor(ns, appID, tenant string, specJSON []byte) *corev1.ConfigMap {
	immutable := true
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: objectName(appID), Namespace: ns, Labels: labels(appID, tenant)},
		Immutable:  &immutable,
		Data:       map[string]string{specKey: string(specJSON)},
	}
}

func ownedBy(cm *corev1.ConfigMap) []metav1.OwnerReference {
	return []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: cm.Name, UID: cm.UID}}
}

// fetchSecret is the node's credential for fetching its bundle.
// A sim node's also holds quote-url, where its qe sidecar asks for quotes.
func (r *Runner) fetchSecret(cm *corev1.ConfigMap, appID, tenant, token, codeDigest string, sim bool) *corev1.Secret {
	immutable := true
	data := map[string]string{tokenKey: token, urlKey: r.bundleURL(appID)}
	if codeDigest != "" {
		// mse-fetch refuses any other bundle, whatever the backend's header says.
		data[sha256Key] = codeDigest
	}
	if sim {
		data[quoteURLKey] = r.nodeURL(appID) + "/quote"
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secretName(appID), Namespace: cm.Namespace, Labels: labels(appID, tenant), OwnerReferences: ownedBy(cm)},
		Immutable:  &immutable,
		Type:       corev1.SecretTypeOpaque,
		StringData: data,
	}
}

func (r *Runner) nodeURL(appID string) string {
	return strings.TrimSuffix(r.cfg.BundleURL, "/") + "/v1/nodes/" + appID
}

// bundleURL is where appID's pod fetches its bundle.
func (r *Runner) bundleURL(appID string) string {
	return r.nodeURL(appID) + "/bundle"
}

// pod is the app's node.
func (r *Runner) pod(cm *corev1.ConfigMap, appID, tenant, image string, port int32, s runner.SpawnSpec) (*corev1.Pod, error) {
	res, err := podResources(s.Hardware)
	if err != nil {
		return nil, err
	}
	tee := s.Hardware.TEE // validated at start: never empty
	listenHost := ""      // all the pod's addresses
	if r.cfg.HostNetwork {
		listenHost = hostLoopback // the host's: only this machine reaches it
	}
	args := []string{
		"--app-id", appID,
		"--spec", dirSpec + "/" + specKey,
		"--bundle", dirBundle + "/bundle",
		"--listen", listenHost + ":" + strconv.Itoa(int(port)),
		"--workdir", dirWork,
		"--status-file", dirWork + "/status.json",
		"--tee", tee,
	}
	if tee == attest.TypeSim {
		args = append(args, "--sim-socket", dirQE+"/qe.sock")
	}
	no, yes := false, true
	uid := int64(nodeUID)
	sc := &corev1.SecurityContext{
		RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid,
		ReadOnlyRootFilesystem: &yes, AllowPrivilegeEscalation: &no,
		Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	mem := func(name string, limit int64) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: resource.NewQuantity(limit, resource.BinarySI)}}}
	}
	memory := s.Hardware.MemoryMiB << 20
	grace := int64(10)
	var k *runner.KubeScheduling = s.Hardware.Kubernetes
	fetch := []string{"/mse-fetch",
		"--credentials", dirFetch,
		"--bundle-out", dirBundle + "/bundle",
		"--node-out", dirBin + "/mse-node"}
	if r.cfg.MaxBundleSize > 0 {
		fetch = append(fetch, "--max-size", strconv.FormatInt(r.cfg.MaxBundleSize, 10))
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: objectName(appID), Namespace: cm.Namespace, Labels: labels(appID, tenant), OwnerReferences: ownedBy(cm),
			Annotations: map[string]string{"mse.hardware": s.Hardware.Name, "mse.runtime": s.App.Runtime.Name}},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever, // a node's key lives and dies with its process
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			TerminationGracePeriodSeconds: &grace,
			SecurityContext:               &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid, FSGroup: &uid},
			Tolerations:                   tolerations(k),
			InitContainers: []corev1.Container{{
				Name:                     containerFetch,
				Image:                    r.cfg.NodeImage,
				Command:                  fetch,
				Resources:                corev1.ResourceRequirements{Requests: res, Limits: res},
				SecurityContext:          sc,
				ImagePullPolicy:          r.cfg.PullPolicy,
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				VolumeMounts: []corev1.VolumeMount{
					{Name: "fetch", MountPath: dirFetch, ReadOnly: true},
					{Name: "bundle", MountPath: dirBundle},
					{Name: "bin", MountPath: dirBin},
				},
			}},
			Containers: []corev1.Container{{
				Name:    containerNode,
				Image:   image,
				Command: append([]string{dirBin + "/mse-node"}, args...),
				Env: []corev1.EnvVar{
					{Name: "HOME", Value: dirWork},
					{Name: "PATH", Value: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
				},
				Ports:                    []corev1.ContainerPort{{Name: "mse-node", ContainerPort: port, Protocol: corev1.ProtocolTCP}},
				Resources:                corev1.ResourceRequirements{Requests: res, Limits: res},
				SecurityContext:          sc,
				ImagePullPolicy:          r.cfg.PullPolicy,
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Host: listenHost, Port: intstr.FromInt32(port)}},
					PeriodSeconds: 2, FailureThreshold: 3,
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "spec", MountPath: dirSpec, ReadOnly: true},
					{Name: "bundle", MountPath: dirBundle, ReadOnly: true},
					{Name: "bin", MountPath: dirBin, ReadOnly: true},
					{Name: "work", MountPath: dirWork},
					{Name: "tmp", MountPath: "/tmp"},
					{Name: "qe", MountPath: dirQE},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "spec", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: cm.Name}, Items: []corev1.KeyToPath{{Key: specKey, Path: specKey}}}}},
				{Name: "fetch", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secretName(appID)}}},
				mem("bundle", memory),
				mem("bin", 256<<20),
				mem("work", memory),
				mem("tmp", memory),
				mem("qe", 1<<20),
			},
		},
	}
	if tee == attest.TypeSim {
		// The quoting service's socket, relayed to the backend with the
		// pod's credential (a native sidecar, started before the fetch; the
		// node's issuer waits for its socket). No startup probe: one holds
		// the pod back by seconds (the kubelet's probe period and sync),
		// where the relay listens within milliseconds.
		always := corev1.ContainerRestartPolicyAlways
		small := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")}
		qe := corev1.Container{
			Name:  containerQE,
			Image: r.cfg.NodeImage,
			Command: []string{"/mse-fetch", "qe-proxy",
				"--credentials", dirFetch,
				"--listen", dirQE + "/qe.sock"},
			RestartPolicy:            &always,
			Resources:                corev1.ResourceRequirements{Requests: small, Limits: small},
			SecurityContext:          sc,
			ImagePullPolicy:          r.cfg.PullPolicy,
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			VolumeMounts: []corev1.VolumeMount{
				{Name: "fetch", MountPath: dirFetch, ReadOnly: true},
				{Name: "qe", MountPath: dirQE},
			},
		}
		// A sidecar's resources add to the pod's: the others give them up,
		// so that the pod asks for exactly the hardware entry.
		rest := res.DeepCopy()
		for name, q := range small {
			left := rest[name]
			left.Sub(q)
			rest[name] = left
		}
		for _, c := range []*corev1.Container{&p.Spec.InitContainers[0], &p.Spec.Containers[0]} {
			c.Resources = corev1.ResourceRequirements{Requests: rest, Limits: rest.DeepCopy()}
		}
		p.Spec.InitContainers = append([]corev1.Container{qe}, p.Spec.InitContainers...)
	}
	p.Spec.HostNetwork = r.cfg.HostNetwork
	if k != nil {
		if len(k.NodeSelector) > 0 {
			p.Spec.NodeSelector = map[string]string{}
			for key, v := range k.NodeSelector {
				p.Spec.NodeSelector[key] = v
			}
		}
		if k.RuntimeClass != "" {
			rc := k.RuntimeClass
			p.Spec.RuntimeClassName = &rc
		}
	}
	return p, nil
}

// networkPolicy lets only the router's pods reach the node's port, and the
// node reach only what it needs: the backend (its bundle; the quoting
// service), the bundle store of presigned bundle URLs if any, and, in tls_mode acme, its CA outside the cluster.
func (r *Runner) networkPolicy(cm *corev1.ConfigMap, appID, tenant string, port int32, acme bool) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	udp := corev1.ProtocolUDP
	nodePort := intstr.FromInt32(port)
	var backendPorts []networkingv1.NetworkPolicyPort
	for _, p := range r.cfg.BackendPorts {
		port := intstr.FromInt32(p)
		backendPorts = append(backendPorts, networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &port})
	}
	egress := []networkingv1.NetworkPolicyEgressRule{{To: r.cfg.BackendPeers, Ports: backendPorts}}
	if len(r.cfg.BundleStorePeers) > 0 {
		port := intstr.FromInt32(r.cfg.BundleStorePort)
		egress = append(egress, networkingv1.NetworkPolicyEgressRule{To: r.cfg.BundleStorePeers, Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}})
	}
	// The presigned URLs' host may be a name too (the S3 endpoint's).
	needDNS := !isIP(r.cfg.BundleURL) || (len(r.cfg.BundleStorePeers) > 0 && net.ParseIP(r.cfg.BundleStoreHost) == nil)
	if acme {
		https := intstr.FromInt32(443)
		egress = append(egress, networkingv1.NetworkPolicyEgressRule{
			To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: r.cfg.ClusterCIDRs}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &https}},
		})
		needDNS = true
	}
	if needDNS {
		dns := intstr.FromInt32(53)
		egress = append(egress, networkingv1.NetworkPolicyEgressRule{
			To: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
			}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &dns}, {Protocol: &tcp, Port: &dns}},
		})
	}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: objectName(appID), Namespace: cm.Namespace, Labels: labels(appID, tenant), OwnerReferences: ownedBy(cm)},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{LabelRole: RoleNode, LabelAppID: appID}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  r.cfg.RouterPeers,
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &nodePort}},
			}},
			Egress: egress,
		},
	}
}

// isIP reports whether rawURL's host is an IP address (no DNS needed).
func isIP(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	return net.ParseIP(u.Hostname()) != nil
}

// urlPort is the TCP port of rawURL.
func urlPort(rawURL string) (int32, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return 0, err
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return 0, fmt.Errorf("%q is not an http(s) URL", rawURL)
	}
	if u.Hostname() == "" {
		return 0, fmt.Errorf("%q has no host", rawURL)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return 0, fmt.Errorf("%q: bad port", rawURL)
		}
		return int32(n), nil
	}
	if u.Scheme == "https" {
		return 443, nil
	}
	return 80, nil
}
