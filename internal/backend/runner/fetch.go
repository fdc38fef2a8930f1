package runner

// BundleServer is implemented by runners whose nodes fetch their encrypted
// bundle from the backend (GET /v1/nodes/{app_id}/bundle) with a per-node
// credential, instead of reading SpawnSpec.BundlePath on this machine: the
// backend's bundle store need not be local to them.
type BundleServer interface {
	// CheckFetchToken reports whether token is the bundle-fetch credential
	// of the node of handle, comparing in constant time.
	CheckFetchToken(handle []byte, token string) bool
}
