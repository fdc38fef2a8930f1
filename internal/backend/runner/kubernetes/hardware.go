package kubernetes

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/backend/runner"
)

// Device-plugin resources of Intel's SGX device plugin.
const (
	ResourceSGXEPC       = "sgx.intel.com/epc"
	ResourceSGXEnclave   = "sgx.intel.com/enclave"
	ResourceSGXProvision = "sgx.intel.com/provision"
)

// RuntimeClassTEE is the TEE type each known Confidential Containers runtime
// class gives a pod.
var RuntimeClassTEE = map[string]string{
	"kata-qemu-tdx": attest.TypeTDX,
	"kata-qemu-snp": attest.TypeSEVSNP,
}

// Bounds on a catalog entry's scheduling (the catalog is the operator's,
// but a typo should be an error, not a giant object).
const (
	maxSelectors   = 32
	maxTolerations = 32
	maxResources   = 16
)

// teeOf is the TEE type a scheduling gives: SGX through the device plugin's
// resources, TDX or SEV-SNP through a runtime class, sim with neither.
func teeOf(k *runner.KubeScheduling) (string, error) {
	if k == nil {
		return attest.TypeSim, nil
	}
	sgx := false
	for name := range k.Resources {
		if strings.HasPrefix(name, "sgx.intel.com/") {
			sgx = true
		}
	}
	if k.RuntimeClass != "" {
		tee, ok := RuntimeClassTEE[k.RuntimeClass]
		if !ok {
			return "", fmt.Errorf("runtime class %q gives no TEE type this runner knows (known: kata-qemu-tdx, kata-qemu-snp)", k.RuntimeClass)
		}
		if sgx {
			return "", fmt.Errorf("runtime class %q (%s) and SGX device resources together: choose one", k.RuntimeClass, tee)
		}
		return tee, nil
	}
	if sgx {
		if _, ok := k.Resources[ResourceSGXEPC]; !ok {
			return "", fmt.Errorf("SGX resources without %s: an enclave needs EPC memory", ResourceSGXEPC)
		}
		return attest.TypeSGX, nil
	}
	return attest.TypeSim, nil
}

// ValidateHardware checks a hardware catalog for this runner: sizes, and
// that each entry's scheduling gives the TEE type the entry names.
func ValidateHardware(hw []runner.Hardware) error {
	var errs []error
	for _, h := range hw {
		if err := validateEntry(h); err != nil {
			errs = append(errs, fmt.Errorf("hardware %q: %w", h.Name, err))
		}
	}
	return errors.Join(errs...)
}

func validateEntry(h runner.Hardware) error {
	if h.MemoryMiB <= 0 || h.Cores <= 0 {
		return fmt.Errorf("memory_mib and cores must be positive (got %d MiB, %d cores)", h.MemoryMiB, h.Cores)
	}
	tee, err := teeOf(h.Kubernetes)
	if err != nil {
		return err
	}
	if h.TEE != tee {
		return fmt.Errorf("tee is %q but its kubernetes scheduling gives %q", h.TEE, tee)
	}
	k := h.Kubernetes
	if k == nil {
		return nil
	}
	if len(k.NodeSelector) > maxSelectors || len(k.Tolerations) > maxTolerations || len(k.Resources) > maxResources {
		return fmt.Errorf("at most %d node selectors, %d tolerations and %d resources", maxSelectors, maxTolerations, maxResources)
	}
	for key, v := range k.NodeSelector {
		if errs := validation.IsQualifiedName(key); len(errs) > 0 {
			return fmt.Errorf("node selector key %q: %s", key, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("node selector %s=%q: %s", key, v, strings.Join(errs, "; "))
		}
	}
	for _, t := range k.Tolerations {
		switch corev1.TolerationOperator(t.Operator) {
		case "", corev1.TolerationOpEqual:
		case corev1.TolerationOpExists:
			if t.Value != "" {
				return fmt.Errorf("toleration %q: operator Exists takes no value", t.Key)
			}
		default:
			return fmt.Errorf("toleration %q: operator %q is not Equal or Exists", t.Key, t.Operator)
		}
		switch corev1.TaintEffect(t.Effect) {
		case "", corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			return fmt.Errorf("toleration %q: effect %q is not NoSchedule, PreferNoSchedule or NoExecute", t.Key, t.Effect)
		}
	}
	for name, q := range k.Resources {
		if name == string(corev1.ResourceCPU) || name == string(corev1.ResourceMemory) {
			return fmt.Errorf("resource %s comes from cores and memory_mib, not from resources", name)
		}
		if errs := validation.IsQualifiedName(name); len(errs) > 0 || !strings.Contains(name, "/") {
			return fmt.Errorf("resource %q is not an extended resource name (domain/name)", name)
		}
		if _, err := resource.ParseQuantity(q); err != nil {
			return fmt.Errorf("resource %s: %q is not a quantity: %v", name, q, err)
		}
	}
	if k.RuntimeClass != "" {
		if errs := validation.IsDNS1123Subdomain(k.RuntimeClass); len(errs) > 0 {
			return fmt.Errorf("runtime class %q: %s", k.RuntimeClass, strings.Join(errs, "; "))
		}
	}
	return nil
}

// podResources are the node container's requests and limits (equal: the
// pod is Guaranteed, and a TEE's memory is fixed at its start).
func podResources(h runner.Hardware) (corev1.ResourceList, error) {
	rl := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(int64(h.Cores), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(h.MemoryMiB<<20, resource.BinarySI),
	}
	if h.Kubernetes != nil {
		for name, s := range h.Kubernetes.Resources {
			q, err := resource.ParseQuantity(s)
			if err != nil {
				return nil, fmt.Errorf("hardware %q: resource %s: %w", h.Name, name, err)
			}
			rl[corev1.ResourceName(name)] = q
		}
	}
	return rl, nil
}

func tolerations(k *runner.KubeScheduling) []corev1.Toleration {
	if k == nil {
		return nil
	}
	var out []corev1.Toleration
	for _, t := range k.Tolerations {
		out = append(out, corev1.Toleration{Key: t.Key, Operator: corev1.TolerationOperator(t.Operator), Value: t.Value, Effect: corev1.TaintEffect(t.Effect)})
	}
	return out
}
