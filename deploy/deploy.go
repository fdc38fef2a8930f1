// Package deploy holds the platform's manifests (kustomize, plain YAML) and
// reads them: the tests apply them to a real API server (deploy_test.go: a
// server-side dry run; internal/e2e/kubelet: an install on a real kubelet).
package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Objects are the resources of deploy/'s kustomization in dir, as
// `kubectl apply -k dir` applies them (Build), after checking that the base
// stays plain: every YAML file of dir is listed, and the kustomization only
// lists files (no generators or patches: an operator's overlay adds those).
func Objects(dir string) ([]*unstructured.Unstructured, error) {
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		return nil, fmt.Errorf("kustomization.yaml: %w (it may list only resources)", err)
	}
	if k.Kind != "Kustomization" || len(k.Resources) == 0 {
		return nil, fmt.Errorf("kustomization.yaml: kind %q with %d resources", k.Kind, len(k.Resources))
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if n := f.Name(); strings.HasSuffix(n, ".yaml") && n != "kustomization.yaml" && !slices.Contains(k.Resources, n) {
			return nil, fmt.Errorf("%s is not in kustomization.yaml's resources", n)
		}
	}
	return Build(dir)
}

// Build is what `kubectl apply -k dir` applies: the kustomization in dir
// (an overlay of deploy/, say) built with kustomize, as objects.
func Build(dir string) ([]*unstructured.Unstructured, error) {
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range rm.Resources() {
		m, err := r.Map()
		if err != nil {
			return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out, nil
}

// Applier applies objects to an API server (server-side apply), as
// `kubectl apply --server-side` does.
type Applier struct {
	mapper *restmapper.DeferredDiscoveryRESTMapper
	dyn    *dynamic.DynamicClient
}

// NewApplier is an Applier for the API server of cfg.
func NewApplier(cfg *rest.Config) (*Applier, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Applier{mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)), dyn: dyn}, nil
}

// Apply applies o (only checking it, with dryRun) as field manager
// mse-deploy.
func (a *Applier) Apply(ctx context.Context, o *unstructured.Unstructured, dryRun bool) error {
	gvk := o.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return err
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == "namespace" {
		if o.GetNamespace() == "" {
			return errors.New("namespaced object without a namespace")
		}
		ri = a.dyn.Resource(m.Resource).Namespace(o.GetNamespace())
	} else if o.GetNamespace() != "" {
		return errors.New("cluster-scoped object with a namespace")
	}
	opts := metav1.ApplyOptions{FieldManager: "mse-deploy", Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = ri.Apply(ctx, o.GetName(), o, opts)
	return err
}
