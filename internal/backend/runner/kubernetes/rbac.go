package kubernetes

import rbacv1 "k8s.io/api/rbac/v1"

// Rules are what the runner does in its namespace: the backend's identity
// needs a Role with them there (the tests run the runner with exactly
// these).
func Rules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "create", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps", "secrets"}, Verbs: []string{"list", "create", "delete"}},
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"list", "create", "delete"}},
	}
}

// ClusterRules are what the runner reads of the cluster (a ClusterRole):
// the nodes, for capacity. Without them it runs, with capacity unknown.
func ClusterRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
	}
}
